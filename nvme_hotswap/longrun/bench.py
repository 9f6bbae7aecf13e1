"""Build and boot figures, printed as a table and written to results/<run>/bench.json.

Figures (seconds):
  qemu_build_cold_s     fetch + unpack + configure + ninja with an empty cache and no ccache, from the
                        BENCH_COLD=1 measurement below; until there is one, what the cached build
                        recorded (ccache may have helped it)
  qemu_build_cached_s   scripts/build-qemu.sh answering from the cache
  guest_build_cold_s    images/build-guest.sh, as recorded in the guest's manifest
  guest_build_cached_s  images/build-guest.sh answering from the cache
  boot_to_ssh_s         QEMU start to the first SSH command done, BENCH_BOOTS (default 5) boots of the
                        three-controller topology; median, min, max, the accelerator used, and the
                        guest's own uptime at "sshd ready" (a noisy host stretches both)
  vng_vs_suite_boot_ratio  the same Debian kernel booted by virtme-ng to its first command (whole
                        process, Debian's qemu-system-x86_64, TCG) over the suite's boot, BENCH_VNG
                        (default 5) pairs alternating; 0 skips it (longrun/vng.py)
  aer_recovery_s        after drive_del + drive_insert on controller 2: pcie_aer_inject_error SDN at its
                        root port to the first successful O_DIRECT read of its disk in the guest
                        (median of BENCH_SWAPS, 5)
  ns_hotadd_visible_s   device_add nvme-ns (NSID 2 on controller 2) to the guest listing the namespace
                        (median of BENCH_SWAPS); both need the series and are skipped without it
  suite_warm_s          the whole acceptance suite with warm caches, as `make check-acceptance` runs
                        it (pytest -n <CPUs, at most 4>; BENCH_SUITE=0 skips it)
  rebuild_incremental_s scripts/build-qemu.sh after editing one patch (a comment in patch 0001's
                        hw/nvme code, so one C file changes): new cache key, fresh tree, ccache
                        (BENCH_REBUILD=0 skips it; the scratch build is removed afterwards)
  rebuild_mutant_s      median of BENCH_MUTANT_REBUILDS (10) uncached builds of two hand-written mutants in
                        turn: the incremental work tree (docs/builds.md); 0 skips it
  check_s               the whole `make check` with warm caches (BENCH_CHECK=1: it takes minutes)
  cold_to_first_result_s  empty cache (scratch), no ccache: QEMU build + guest build + the first
                        acceptance test's result; measured with BENCH_COLD=1 (about 7 minutes) and
                        recorded in the cache, otherwise the recorded value is reported with its date
  cloud_vs_fast_boot_ratio  median boot to SSH of the cloud-style guest (GUEST=cloud, BENCH_CLOUD_BOOTS,
                        default 5) over the fast guest's median (BENCH_CLOUD=0 skips it)
Each figure with repeats is reported as median, min and max. Targets are printed beside
the figures. Speed targets live here, never in timed tests. `python -m nvme_hotswap.longrun.bench
results/<run>/bench.json` prints the table of an earlier run again.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .. import preflight
from ..config import ROOT, RunConfig
from ..hotswap.rig import Rig
from ..report import results
from ..vm import accel, capabilities
from ..vm.topology import Topology, drive_option
from . import vng

INDEX = 2   # the controller the hot-swap figures are taken on


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return time.monotonic() - start, out.strip().splitlines()[-1]


def recorded_seconds(done_file: Path, key: str) -> float | None:
    if not done_file.exists():
        return None
    text = done_file.read_text()
    if done_file.suffix == ".json":
        value = json.loads(text).get(key)
        return float(value) if value is not None else None
    for line in text.splitlines():
        if line.startswith(key + "="):
            return float(line.split("=", 1)[1])
    return None


def poll_seconds(start: float, check: Callable[[], bool], bound: float, what: str) -> float:
    """Seconds from `start` until `check()` is true (checked back to back, each an SSH round trip)."""
    while not check():
        if time.monotonic() - start > bound:
            raise TimeoutError(f"{what} not within {bound} s")
    return time.monotonic() - start


def hotswap_latencies(cfg: RunConfig, choice: accel.AccelChoice, artifacts: Path, swaps: int) -> dict[str, object]:
    """On one guest: AER injection -> first good read, and device_add nvme-ns -> the guest lists it."""
    rig = Rig.boot(cfg, choice, Topology.create(artifacts / "disks", controllers=3), artifacts)
    c, g = rig.ctrl(INDEX), rig.guest
    hot = c.hot_namespace(nsid=2, image=rig.new_disk("spare", size_mib=32))
    aer, hotadd = [], []
    try:
        rig.vm.drive_add(drive_option(hot.drive_id, hot.image))
        for _ in range(swaps):
            disk = rig.current_disk(INDEX)
            rig.pull(INDEX)
            rig.reinsert(INDEX, c.namespaces[0].image)

            def good_read(disk: str = disk) -> bool:
                return g.run(f"dd if=/dev/{disk} of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null").ok

            start = time.monotonic()
            rig.inject_aer(INDEX)
            aer.append(poll_seconds(start, good_read, 30, "a good read"))
            start = time.monotonic()
            rig.plug_namespace(hot)
            hotadd.append(poll_seconds(start, lambda: g.has_namespace(rig.ctrl_name(INDEX), hot.nsid), 30,
                                       f"NSID {hot.nsid} under {rig.ctrl_name(INDEX)}"))
            rig.unplug_namespace(hot)
            rig.wait_for_namespace_gone(INDEX, hot.nsid)
    finally:
        rig.close()
        shutil.rmtree(artifacts / "disks", ignore_errors=True)
    return {"aer_recovery_s": statistics.median(aer), "aer_recovery_all_s": aer,
            "ns_hotadd_visible_s": statistics.median(hotadd), "ns_hotadd_visible_all_s": hotadd}


def spread(values: list[float]) -> dict[str, float | int]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


UPTIME = re.compile(r"nvme-hotswap: uptime ([\d.]+) s")


@dataclasses.dataclass(frozen=True)
class Boot:
    seconds: float                 # QEMU start -> the first SSH command done (wall, host)
    guest_uptime: float | None     # the guest's own uptime when /init printed "sshd ready"


def boot_once(cfg: RunConfig, choice: accel.AccelChoice, artifacts: Path, extra_kernel_args: str = "") -> Boot:
    """One boot of the three-controller topology to its first SSH command. The guest's uptime at
    "sshd ready" beside the wall time tells a slow host (both grow) from a slow guest."""
    rig = Rig.boot(cfg, choice, Topology.create(artifacts / "disks", controllers=3), artifacts,
                   extra_kernel_args=extra_kernel_args)
    try:
        start = time.monotonic()
        rig.guest.check("true")
        first_command = time.monotonic() - start
        m = UPTIME.search(rig.vm.console_text())
    finally:
        rig.close()
        shutil.rmtree(artifacts / "disks", ignore_errors=True)
    return Boot(rig.boot_seconds + first_command, float(m.group(1)) if m else None)


def boot_times(cfg: RunConfig, choice: accel.AccelChoice, folder: Path, boots: int) -> list[Boot]:
    """`boots` boots of the configuration's guest."""
    return [boot_once(cfg, choice, folder / f"boot{i}") for i in range(boots)]


def boot_figure(boots: list[Boot]) -> dict[str, object]:
    uptimes = [b.guest_uptime for b in boots if b.guest_uptime is not None]
    return {**spread([b.seconds for b in boots]),
            "guest_uptime_at_sshd_ready": spread(uptimes) if uptimes else None}


def vng_comparison(cfg: RunConfig, choice: accel.AccelChoice, folder: Path, pairs: int) -> dict[str, object]:
    """The same kernel booted by virtme-ng and by the suite, `pairs` alternating pairs (longrun/vng.py)."""
    why = vng.problem()
    if why:
        return {"vng_vs_suite_boot_ratio": None, "vng_note": f"virtme-ng not run: {why}"}
    same_kernel = dataclasses.replace(cfg, guest_dir_given=None, guest_kernel=vng.KERNEL)
    guest = same_kernel.guest_dir   # built or found by images/build-guest.sh
    folder.mkdir(parents=True, exist_ok=True)
    ours: list[Boot] = []
    theirs: list[float] = []
    try:
        with vng.kernel_on_host(cfg, guest) as vmlinuz:
            for i in range(pairs):
                ours.append(boot_once(same_kernel, choice, folder / f"suite{i}"))
                theirs.append(vng.boot_seconds(vmlinuz, folder / f"vng{i}.log"))
    except vng.VngError as e:
        return {"vng_vs_suite_boot_ratio": None, "vng_note": f"virtme-ng could not boot: {e}"}
    return {"vng_boot_s": spread(theirs), "suite_same_kernel_boot_s": boot_figure(ours),
            "vng_vs_suite_boot_ratio": statistics.median(theirs) / statistics.median([b.seconds for b in ours]),
            "vng_note": f"kernel {Path(guest).name} ({vng.KERNEL}), vng {vng.QEMU}, {choice.accel}"}


def suite_seconds(cfg: RunConfig, folder: Path) -> tuple[float, str]:
    """The acceptance suite once, as check-acceptance runs it; (seconds, pytest's summary line)."""
    env = dict(cfg.build_env(), QEMU=str(cfg.qemu_binary), GUEST_DIR=str(cfg.guest_dir), RESULTS_DIR=str(folder))
    env.pop(results.RUN_DIR_ENV, None)
    start = time.monotonic()
    jobs = min(os.cpu_count() or 1, 4)   # as the Makefile's JOBS default
    xdist = ["-n", str(jobs)] if jobs > 1 else []
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *xdist, "tests/acceptance"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.monotonic() - start
    (folder / "suite.log").write_text(proc.stdout)
    summary = [ln for ln in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    return seconds, (summary[-1].strip("= ") if summary else f"pytest exit {proc.returncode}")


def edited_series(folder: Path) -> Path:
    """A copy of patches/ whose patch 0001 has one comment line in hw/nvme code changed (same line
    count, so the hunks still apply): what a developer's one-patch edit costs to rebuild."""
    series = folder / "patches"
    shutil.copytree(ROOT / "patches", series, ignore=shutil.ignore_patterns("mutants"))
    first = sorted(series.glob("0001-*.patch"))[0]
    text = first.read_text().splitlines(keepends=True)
    in_c = False
    for i, line in enumerate(text):
        if line.startswith("+++ "):
            in_c = line.rstrip().endswith(".c") and "hw/nvme/" in line
        elif in_c and line.startswith("+ * ") and len(line) < 90:
            text[i] = line.rstrip("\n") + f" (bench {time.time():.0f})\n"
            first.write_text("".join(text))
            return series
    raise RuntimeError(f"no comment line in a hw/nvme .c file of {first.name} to edit")


def incremental_rebuild_seconds(folder: Path) -> float:
    series = edited_series(folder)
    seconds, binary = timed(["bash", "scripts/build-qemu.sh"], dict(os.environ, PATCHES=str(series)))
    entry = Path(binary).parent.parent           # $CACHE_ROOT/qemu/<key>: unique to this edit
    if entry.parent.name == "qemu":
        shutil.rmtree(entry, ignore_errors=True)
        Path(f"{entry}.lock").unlink(missing_ok=True)
    return seconds


def mutant_rebuild_seconds(runs: int) -> list[float]:
    """`runs` builds of two hand-written mutants in turn, each entry removed before it is built again:
    what check-mutants pays for a mutant whose build is not cached (the incremental work tree then
    goes from one mutant to the other: two files recompiled and a link)."""
    names = sorted(p.stem for p in (ROOT / "patches" / "mutants").glob("*.diff"))[:2]
    entries = [Path(timed(["bash", "scripts/build-qemu.sh"], dict(os.environ, MUTANT=n))[1]).parent.parent
               for n in names]
    seconds = []
    for i in range(runs):
        entry = entries[i % len(entries)]
        if entry.parent.name == "qemu":
            shutil.rmtree(entry, ignore_errors=True)
        seconds.append(timed(["bash", "scripts/build-qemu.sh"], dict(os.environ, MUTANT=names[i % len(names)]))[0])
    return seconds


COLD_RECORD = "bench-cold-to-first-result.json"


def cold_to_first_result(folder: Path) -> dict[str, object]:
    """Empty scratch cache, ccache off: build QEMU and the guest side by side as check-acceptance does
    (scripts/build-products.sh), run the suite's first test. Host packages and the venv are already
    there (they are not removable from a running machine)."""
    scratch = Path(tempfile.mkdtemp(prefix="nvme-hotswap-bench-cache-"))
    env = dict(os.environ, NVME_HOTSWAP_CACHE=str(scratch), CCACHE_DISABLE="1", RESULTS_DIR=str(folder))
    for var in ("QEMU", "GUEST_DIR", results.RUN_DIR_ENV):
        env.pop(var, None)
    try:
        start = time.monotonic()
        products = subprocess.run(["bash", "scripts/build-products.sh"], cwd=ROOT, env=env, check=True,
                                  stdout=subprocess.PIPE, text=True).stdout
        built = dict(line.split("=", 1) for line in shlex.split(products.replace("\n", " ")))
        qemu, guest = built["qemu"], built["guest"]
        qemu_done = recorded_seconds(Path(qemu).parent.parent / "DONE", "build_seconds")
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "tests/acceptance/test_boot_topology.py", "-k",
                        "test_three_controllers"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env=dict(env, QEMU=qemu, GUEST_DIR=guest))
        total = time.monotonic() - start
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"seconds": total, "qemu_build_s": qemu_done,
            "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def main() -> int:
    cfg = preflight.exit_unless_ready(who="bench")
    figures: dict[str, object] = {}
    figures["qemu_build_cached_s"], qemu = timed(["bash", "scripts/build-qemu.sh"])
    figures.setdefault("qemu_build_cold_s", recorded_seconds(Path(qemu).parent.parent / "DONE", "build_seconds"))
    figures["guest_build_cached_s"], guest = timed(["bash", "images/build-guest.sh"])
    figures["guest_build_cold_s"] = recorded_seconds(Path(guest) / "manifest.json", "build_seconds")

    choice = accel.choose(cfg)
    run = results.run_dir()
    boots = boot_times(cfg, choice, run / "bench" / "boot", int(os.environ.get("BENCH_BOOTS", "5")))
    figures["boot_to_ssh_s"] = {**boot_figure(boots), "accel": choice.accel, "accel_reason": choice.reason}
    if os.environ.get("BENCH_VNG", "5") != "0" and cfg.arch.name == "x86_64":
        figures.update(vng_comparison(cfg, choice, run / "bench" / "vng", int(os.environ.get("BENCH_VNG", "5"))))
    else:
        figures["vng_vs_suite_boot_ratio"] = None
    caps = capabilities.probe(cfg, run / "bench" / "capability-probe")
    if caps.drive_insert_hmp and caps.nvme_ns_hotplug:
        figures.update(hotswap_latencies(cfg, choice, run / "bench" / "hotswap",
                                         int(os.environ.get("BENCH_SWAPS", "5"))))
    else:
        figures["aer_recovery_s"] = figures["ns_hotadd_visible_s"] = None
    if os.environ.get("BENCH_CLOUD", "1") != "0":
        cloud = dataclasses.replace(cfg, flavour="cloud")   # the same run, booting the cloud-style guest
        cloud_boots = boot_times(cloud, choice, run / "bench" / "cloud-boot",
                                 int(os.environ.get("BENCH_CLOUD_BOOTS", "5")))
        figures["cloud_boot_to_ssh_s"] = boot_figure(cloud_boots)
        figures["cloud_vs_fast_boot_ratio"] = (statistics.median([b.seconds for b in cloud_boots])
                                               / statistics.median([b.seconds for b in boots]))
    else:
        figures["cloud_vs_fast_boot_ratio"] = None
    if os.environ.get("BENCH_SUITE", "1") != "0":
        figures["suite_warm_s"], figures["suite_summary"] = suite_seconds(cfg, run / "bench" / "suite")
    else:
        figures["suite_warm_s"] = None
    if os.environ.get("BENCH_REBUILD", "1") != "0":
        figures["rebuild_incremental_s"] = incremental_rebuild_seconds(run / "bench" / "rebuild")
    else:
        figures["rebuild_incremental_s"] = None
    if os.environ.get("BENCH_MUTANT_REBUILDS", "10") != "0":
        rebuilds = mutant_rebuild_seconds(int(os.environ.get("BENCH_MUTANT_REBUILDS", "10")))
        figures["rebuild_mutant_all_s"], figures["rebuild_mutant_s"] = rebuilds, statistics.median(rebuilds)
    else:
        figures["rebuild_mutant_s"] = None
    figures["check_s"] = None
    if os.environ.get("BENCH_CHECK") == "1":   # the whole `make check`, warm: minutes
        start = time.monotonic()
        proc = subprocess.run(["make", "--no-print-directory", "check"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        (run / "bench" / "check.log").write_text(proc.stdout)
        if proc.returncode == 0:
            figures["check_s"] = time.monotonic() - start
        else:   # a figure of a failed check would mean nothing; the other figures still count
            figures["check_note"] = f"make check failed (exit {proc.returncode}; {run / 'bench' / 'check.log'})"
    record = cfg.cache_root / COLD_RECORD
    cold: dict[str, object] | None
    if os.environ.get("BENCH_COLD") == "1":
        cold = cold_to_first_result(run / "bench" / "cold")
        record.write_text(json.dumps(cold, indent=2) + "\n")
    else:
        cold = json.loads(record.read_text()) if record.is_file() else None
    figures["cold_to_first_result_s"] = cold["seconds"] if cold else None
    figures["cold_to_first_result"] = cold
    if cold:
        figures["qemu_build_cold_s"] = cold["qemu_build_s"]
    figures["qemu"] = str(cfg.qemu_binary)
    figures["guest"] = str(cfg.guest_dir)
    (run / "bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    print_table(figures)
    print(f"written: {run / 'bench.json'}")
    return 0


TARGETS = {  # figure -> (comparison, target); a figure without one is reported for context
    "boot_to_ssh_s": ("<=", 1.6), "suite_warm_s": ("<=", 45.0), "cold_to_first_result_s": ("<=", 480.0),
    "rebuild_incremental_s": ("<=", 60.0), "aer_recovery_s": ("<=", 1.0), "ns_hotadd_visible_s": ("<=", 1.0),
    "cloud_vs_fast_boot_ratio": (">=", 7.0), "rebuild_mutant_s": ("<=", 20.0), "check_s": ("<=", 300.0),
    "vng_vs_suite_boot_ratio": (">=", 8.0),
}


def print_table(figures: dict[str, object]) -> None:
    """One line per figure: value (median for repeated ones), spread, target and whether it is met."""
    def fmt(v: object) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    def spread_of(key: str) -> str:
        v = figures.get(key)
        if isinstance(v, dict) and "min" in v:
            return f"min {fmt(v['min'])} max {fmt(v['max'])} over {v['runs']}"
        runs = figures.get(key[:-2] + "_all_s") if key.endswith("_s") else None
        if not isinstance(runs, list) or not runs:
            return ""
        return f"min {fmt(min(runs))} max {fmt(max(runs))} over {len(runs)}"

    print(f"{'figure':28} {'value':>9}  {'target':>8}  {'met':4} spread / note")
    for key in ("qemu_build_cold_s", "qemu_build_cached_s", "guest_build_cold_s", "guest_build_cached_s",
                "boot_to_ssh_s", "cloud_boot_to_ssh_s", "cloud_vs_fast_boot_ratio", "suite_same_kernel_boot_s",
                "vng_boot_s", "vng_vs_suite_boot_ratio", "aer_recovery_s",
                "ns_hotadd_visible_s", "suite_warm_s", "rebuild_incremental_s", "rebuild_mutant_s", "check_s",
                "cold_to_first_result_s"):
        v = figures.get(key)
        value = v["median"] if isinstance(v, dict) else v
        op, target = TARGETS.get(key, (None, None))
        met = "" if target is None or not isinstance(value, int | float) else (
            "yes" if (value <= target if op == "<=" else value >= target) else "NO")
        note = spread_of(key)
        if met == "NO" and isinstance(value, int | float) and target is not None:
            note = f"misses by {abs(value - target):.2f}" + (f"; {note}" if note else "")
        if isinstance(v, dict) and isinstance(v.get("guest_uptime_at_sshd_ready"), dict):
            note += f"; guest uptime at sshd ready {fmt(v['guest_uptime_at_sshd_ready']['median'])}"
        if key == "boot_to_ssh_s" and isinstance(v, dict):
            note += f", accel {v['accel']}"
        if key == "check_s" and figures.get("check_note"):
            note = str(figures["check_note"])
        if key == "vng_vs_suite_boot_ratio" and figures.get("vng_note"):
            note = (note + "; " if note else "") + str(figures["vng_note"])
        if key == "suite_warm_s" and figures.get("suite_summary"):
            note = str(figures["suite_summary"])
        if key == "cold_to_first_result_s":
            cold = figures.get("cold_to_first_result")
            note = (f"measured {cold['measured']} (QEMU build {cold['qemu_build_s']:.0f} s)"
                    if isinstance(cold, dict) and cold else "not measured yet: make bench BENCH_COLD=1")
        print(f"{key:28} {fmt(value):>9}  {(op or '') + ' ' + (fmt(target) if target else ''):>8}  {met:4} {note}")


if __name__ == "__main__":
    if len(sys.argv) == 2:   # bench.py results/<run>/bench.json: print the table of an earlier run
        print_table(json.loads(Path(sys.argv[1]).read_text()))
        sys.exit(0)
    sys.exit(main())
