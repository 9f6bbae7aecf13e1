"""Build and boot figures, printed as a table and written to results/<run>/bench.json.

Figures (seconds):
  qemu_build_cold_s     configure + ninja of the cached build, as recorded when it was built
                        (BENCH_COLD=1 rebuilds into a scratch cache to measure it now)
  qemu_build_cached_s   scripts/build-qemu.sh answering from the cache
  guest_build_cold_s    images/build-guest.sh, as recorded in the guest's manifest
  guest_build_cached_s  images/build-guest.sh answering from the cache
  boot_to_ssh_s         QEMU start to a working SSH session, BENCH_BOOTS (default 5) boots of the
                        three-controller topology; median, min, max and the accelerator used
  aer_recovery_s        after drive_del + drive_insert: pcie_aer_inject_error rp2 SDN to the first
                        successful O_DIRECT read of nvme2n1 in the guest (median of BENCH_SWAPS, 5)
  ns_hotadd_visible_s   device_add nvme-ns (NSID 2 on nvme2) to its block device existing in the
                        guest (median of BENCH_SWAPS); both need the series and are skipped without it
Speed targets live here, never in timed tests.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nvme_hotswap import accel, capabilities, config, results  # noqa: E402
from nvme_hotswap.boot import boot_guest, guest_qemu_args  # noqa: E402
from nvme_hotswap.topology import Topology, create_image, drive_option, namespace_props  # noqa: E402


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


def hotswap_latencies(choice: accel.AccelChoice, artifacts: Path, swaps: int) -> dict[str, float]:
    """On one guest: AER injection -> first good read, and device_add nvme-ns -> block device."""
    topo = Topology.create(artifacts / "disks", controllers=3)
    ns = topo.controller(2).namespaces[0]
    spare = artifacts / "disks" / "spare.img"
    create_image(spare, 32 << 20, b"spare")
    vm, g, _ = boot_guest(guest_qemu_args(choice, topo), artifacts)
    aer, hotadd = [], []
    try:
        vm.drive_add(drive_option("spare", spare))
        for _ in range(swaps):
            vm.drive_del(ns.drive_id)
            vm.drive_insert(ns.dev_id, ns.image)
            start = time.monotonic()
            vm.aer_inject("rp2", "SDN")
            aer.append(poll_seconds(start, lambda: g.run(
                "dd if=/dev/nvme2n1 of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null").ok, 30, "a good read"))
            start = time.monotonic()
            vm.qmp("device_add", **namespace_props("hot", "spare", "nvme2", 2))
            hotadd.append(poll_seconds(start, lambda: g.run("test -b /dev/nvme2n2").ok, 30, "nvme2n2"))
            vm.device_del("hot")
            poll_seconds(time.monotonic(), lambda: not g.run("test -b /dev/nvme2n2").ok, 30, "nvme2n2 gone")
    finally:
        g.close()
        vm.shutdown()
        shutil.rmtree(artifacts / "disks", ignore_errors=True)
    return {"aer_recovery_s": statistics.median(aer), "aer_recovery_all_s": aer,
            "ns_hotadd_visible_s": statistics.median(hotadd), "ns_hotadd_visible_all_s": hotadd}


def main() -> int:
    figures: dict[str, object] = {}
    if os.environ.get("BENCH_COLD") == "1":
        scratch = tempfile.mkdtemp(prefix="nvme-hotswap-bench-cache-")
        try:
            env = dict(os.environ, NVME_HOTSWAP_CACHE=scratch)
            figures["qemu_build_cold_s"], _ = timed(["bash", "scripts/build-qemu.sh"], env)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    figures["qemu_build_cached_s"], qemu = timed(["bash", "scripts/build-qemu.sh"])
    figures.setdefault("qemu_build_cold_s", recorded_seconds(Path(qemu).parent.parent / "DONE", "build_seconds"))
    figures["guest_build_cached_s"], guest = timed(["bash", "images/build-guest.sh"])
    figures["guest_build_cold_s"] = recorded_seconds(Path(guest) / "manifest.json", "build_seconds")

    choice = accel.choose()
    boots = []
    run = results.run_dir()
    for i in range(int(os.environ.get("BENCH_BOOTS", "5"))):
        artifacts = run / "bench" / f"boot{i}"
        topo = Topology.create(artifacts / "disks", controllers=3)
        vm, g, seconds = boot_guest(guest_qemu_args(choice, topo), artifacts)
        g.check("true")
        g.close()
        vm.shutdown()
        shutil.rmtree(artifacts / "disks", ignore_errors=True)
        boots.append(seconds)
    figures["boot_to_ssh_s"] = {"median": statistics.median(boots), "min": min(boots), "max": max(boots),
                                "runs": len(boots), "accel": choice.accel, "accel_reason": choice.reason}
    caps = capabilities.probe(config.qemu_binary(), run / "bench" / "capability-probe")
    if caps.drive_insert_hmp and caps.nvme_ns_hotplug:
        figures.update(hotswap_latencies(choice, run / "bench" / "hotswap",
                                         int(os.environ.get("BENCH_SWAPS", "5"))))
    else:
        figures["aer_recovery_s"] = figures["ns_hotadd_visible_s"] = None
    figures["qemu"] = str(config.qemu_binary())
    figures["guest"] = str(config.guest_dir())

    def fmt(v: object) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    b = figures["boot_to_ssh_s"]
    print(f"{'figure':28} {'seconds':>10}")
    for key in ("qemu_build_cold_s", "qemu_build_cached_s", "guest_build_cold_s", "guest_build_cached_s"):
        print(f"{key:28} {fmt(figures[key]):>10}")
    print(f"{'boot_to_ssh_s (median)':28} {fmt(b['median']):>10}  min {fmt(b['min'])} max {fmt(b['max'])} "
          f"over {b['runs']} boots, accel {b['accel']} ({b['accel_reason']})")
    (run / "bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    for key in ("aer_recovery_s", "ns_hotadd_visible_s"):
        extra = figures.get(key.replace("_s", "_all_s"))
        print(f"{key + ' (median)':28} {fmt(figures[key]):>10}"
              + (f"  all: {' '.join(f'{v:.2f}' for v in extra)}" if extra else "  (QEMU lacks the series)"))
    print(f"written: {run / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
