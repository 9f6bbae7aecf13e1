"""Soak: many hot-swap cycles of each sequence on ONE guest (make soak, SOAK_CYCLES, default 100).

A regression suite boots a fresh guest per test; a storage stack lives for months. This runs the
two sequences of the series back to back on one VM, on controller 2 (nvme2 at 0000:03:00.0),
through the same Rig verbs as the tests:

  namespace: guest writes and fsyncs a random block; device_del nvme-ns, drive_del; the block is
             in the backing file (host sha256); a new file with a fresh label is drive_add'ed and
             device_add'ed with the same NSID; the guest reads the new label (O_DIRECT).
  reconnect: guest writes and fsyncs a random block; drive_del; drive_insert the same file;
             pcie_aer_inject_error rp2 SDN; the guest logs "device recovery successful" for the port;
             the block reads back (O_DIRECT) with the same sha256.

After every cycle: the guest's names (PCI address -> controller, disks) equal those at boot, no
kernel trouble (BUG/WARNING/Oops) since boot, and QEMU's RSS (split into guest RAM, TCG code and
QEMU's own), open fds and block nodes are sampled. Bounds, checked at the end: after a warm-up of
WARMUP cycles, open fds and block nodes never exceed the warm-up level, and QEMU's own RSS grows by
at most RSS_BOUND_MIB over the remaining cycles. Exit 0 when every cycle passed and the
bounds hold; 1 otherwise, naming the cycle and what broke; 2 if QEMU lacks the series.
Figures: printed, and written to results/<run>/soak.json.

SOAK_GUEST=0: the same two sequences with no guest, on the same machine paused (-S), through the
same monitor steps (MonitorSteps): drive_del/drive_insert/AER and device_del/drive_del/drive_add/
device_add, then query-block must show the new file. A cycle costs milliseconds instead of seconds,
so SOAK_CYCLES=1000 runs in minutes; it is what settles whether QEMU's RSS growth per cycle is a leak
(on the ASan build, QEMU_FLAVOUR=asan, LeakSanitizer names its allocation at quit) or allocator
growth (RSS levels off: `rss_growth_last_half_mib` near zero). The guest's side (its rescans, the AER
reset, the data) is what the default mode is for.
"""
from __future__ import annotations

import json
import os
import secrets
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import preflight
from ..config import RunConfig
from ..guest import klog
from ..hotswap.boot import GUEST_RAM_MIB, guest_qemu_args
from ..hotswap.rig import MonitorSteps, Rig
from ..report import results
from ..vm import accel, capabilities
from ..vm.machine import QemuMachine
from ..vm.topology import Topology, image_sha256

WARMUP = 10             # cycles before the resource baseline is taken
RSS_BOUND_MIB = 16.0    # RSS growth allowed from the end of warm-up to the last cycle
BLOCK_OFFSET = 256      # 1 MiB into the namespace: away from the label in block 0
INDEX = 2               # the controller the cycles act on


@dataclass
class Sample:
    sequence: str
    cycle: int
    seconds: float
    rss_kib: int
    fds: int
    nodes: int = 0     # named block nodes (query-named-block-nodes)
    guest_ram_kib: int = 0   # of rss_kib: the guest's RAM QEMU has touched (grows with the guest's page cache)
    tcg_code_kib: int = 0    # of rss_kib: TCG's translated code (grows as the guest runs new code)

    @property
    def own_kib(self) -> int:
        """QEMU's own memory: what a leak of QEMU's grows (guest RAM and TCG's code cache are bounded
        by their sizes, and fill as the guest runs)."""
        return self.rss_kib - self.guest_ram_kib - self.tcg_code_kib


class SoakFailure(AssertionError):
    pass


def rss_kib(pid: int) -> int:
    """VmRSS of a running process, in KiB (its fds and block nodes: QemuMachine.resources)."""
    return next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:"))


def rss_split(smaps: str, ram_mib: int = GUEST_RAM_MIB) -> tuple[int, int]:
    """(guest RAM, TCG code) resident KiB from /proc/<pid>/smaps text: the anonymous mapping of the
    guest's RAM size, and anonymous executable mappings (TCG's code_gen_buffer)."""
    guest = tcg = 0
    size, kind = 0, ""
    for line in smaps.splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            start, end = (int(x, 16) for x in head[0].split("-"))
            size, anon = end - start, len(head) == 5
            kind = ("guest" if anon and size == ram_mib << 20 else
                    "tcg" if anon and "x" in head[1] and size >= 64 << 20 else "")
        elif head and head[0] == "Rss:" and kind:
            if kind == "guest":
                guest += int(head[1])
            else:
                tcg += int(head[1])
    return guest, tcg


def check_bounds(samples: list[Sample], warmup: int = WARMUP, rss_bound_mib: float | None = RSS_BOUND_MIB) -> list[str]:
    """Per sequence: fds and block nodes after warm-up never above the warm-up level; RSS growth
    within the bound (None: RSS not bounded)."""
    problems = []
    for seq in sorted({s.sequence for s in samples}):
        runs = [s for s in samples if s.sequence == seq]
        if len(runs) <= warmup:
            continue
        base = runs[warmup - 1]
        worst_fd = max(runs[warmup:], key=lambda s: s.fds)
        if worst_fd.fds > base.fds:
            problems.append(f"{seq}: open fds grew from {base.fds} (cycle {base.cycle}) to {worst_fd.fds} "
                            f"(cycle {worst_fd.cycle})")
        worst_nodes = max(runs[warmup:], key=lambda s: s.nodes)
        if worst_nodes.nodes > base.nodes:
            problems.append(f"{seq}: block nodes grew from {base.nodes} (cycle {base.cycle}) to {worst_nodes.nodes} "
                            f"(cycle {worst_nodes.cycle})")
        growth = (runs[-1].own_kib - base.own_kib) / 1024
        if rss_bound_mib is not None and growth > rss_bound_mib:
            problems.append(f"{seq}: QEMU's own RSS (without guest RAM and TCG code) grew {growth:.1f} MiB from "
                            f"cycle {base.cycle} to {runs[-1].cycle} (bound {rss_bound_mib:g} MiB)")
    return problems


def summary(samples: list[Sample], warmup: int = WARMUP) -> dict[str, dict[str, float]]:
    out = {}
    for seq in sorted({s.sequence for s in samples}):
        runs = [s for s in samples if s.sequence == seq]
        base = runs[min(warmup, len(runs)) - 1]
        out[seq] = {"cycles": len(runs), "cycle_median_s": statistics.median(s.seconds for s in runs),
                    "cycle_max_s": max(s.seconds for s in runs),
                    "rss_first_mib": runs[0].rss_kib / 1024, "rss_baseline_mib": base.rss_kib / 1024,
                    "rss_last_mib": runs[-1].rss_kib / 1024,
                    "rss_growth_after_warmup_mib": (runs[-1].rss_kib - base.rss_kib) / 1024,
                    "own_rss_growth_after_warmup_mib": (runs[-1].own_kib - base.own_kib) / 1024,
                    "guest_ram_growth_after_warmup_mib": (runs[-1].guest_ram_kib - base.guest_ram_kib) / 1024,
                    "tcg_code_growth_after_warmup_mib": (runs[-1].tcg_code_kib - base.tcg_code_kib) / 1024,
                    "rss_growth_last_half_mib": (runs[-1].own_kib - runs[len(runs) // 2].own_kib) / 1024,
                    "fds_first": runs[0].fds, "fds_baseline": base.fds,
                    "fds_max_after_warmup": max(s.fds for s in runs[warmup:]) if len(runs) > warmup else base.fds,
                    "fds_last": runs[-1].fds}
    return out


class Soak:
    """One guest, three controllers; both sequences act on controller INDEX."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.ns = rig.ctrl(INDEX).namespaces[0]
        self.image = self.ns.image   # the file currently behind the namespace
        self.lost_blocks = 0

    def check_after(self, cycle: str) -> None:
        names = self.rig.guest.nvme_names()
        if names != self.rig.boot_names:
            raise SoakFailure(f"{cycle}: guest names changed: {self.rig.boot_names} -> {names}")
        trouble = klog.trouble(self.rig.guest.klog())
        if trouble:
            raise SoakFailure(f"{cycle}: guest kernel log reports trouble:\n{trouble[0]}")

    def namespace_cycle(self, i: int) -> None:
        guest = self.rig.guest
        digest = guest.write_random(self.rig.current_disk(INDEX), BLOCK_OFFSET, 1)
        old = self.image
        label = f"nvme-hotswap soak {i} {secrets.token_hex(4)}\n".encode()
        new = self.rig.new_disk(f"ns-{i % 2}", label=label)
        self.rig.namespace_swap(INDEX, new)
        if image_sha256(old, BLOCK_OFFSET, 1) != digest:
            self.lost_blocks += 1
            raise SoakFailure(f"namespace cycle {i}: the fsync'd block is not in {old.name}")
        head = guest.read_head(self.rig.current_disk(INDEX), len(label))
        if head != label:
            raise SoakFailure(f"namespace cycle {i}: the guest reads {head!r}, not the new file's label {label!r}")
        self.image = new
        self.check_after(f"namespace cycle {i}")

    def reconnect_cycle(self, i: int) -> None:
        guest = self.rig.guest
        digest = guest.write_random(self.rig.current_disk(INDEX), BLOCK_OFFSET, 1)
        self.rig.reconnect(INDEX, self.image)
        if guest.read_sha256(self.rig.current_disk(INDEX), BLOCK_OFFSET, 1) != digest:
            self.lost_blocks += 1
            raise SoakFailure(f"reconnect cycle {i}: the fsync'd block did not survive the pull")
        self.check_after(f"reconnect cycle {i}")


class MonitorSoak:
    """SOAK_GUEST=0: both sequences on a paused machine, monitor steps only (see the module's text)."""

    def __init__(self, steps: MonitorSteps) -> None:
        self.steps = steps
        self.ns = steps.ctrl(INDEX).namespaces[0]
        self.image = self.ns.image
        self.lost_blocks = 0   # no guest writes here

    def check_after(self, cycle: str, image: Path) -> None:
        _, file, _ = self.steps.drive_state(INDEX)
        if file != str(image):
            raise SoakFailure(f"{cycle}: query-block shows {file!r} behind {self.ns.dev_id}, not {image}")

    def namespace_cycle(self, i: int) -> None:
        new = self.steps.new_disk(f"ns-{i % 2}")
        self.steps.unplug_namespace(self.ns)
        self.steps.vm.drive_del(self.ns.drive_id)
        self.steps.plug_namespace(self.ns, new)
        self.image = new
        self.check_after(f"namespace cycle {i}", new)

    def reconnect_cycle(self, i: int) -> None:
        self.steps.drop_drive(INDEX)
        self.steps.reinsert(INDEX, self.image)
        self.steps.inject_aer(INDEX)
        self.check_after(f"reconnect cycle {i}", self.image)


def start_paused(cfg: RunConfig, choice: accel.AccelChoice, topology: Topology, workdir: Path) -> MonitorSteps:
    """The soak's machine, paused before the firmware runs (-S): QEMU and its monitor only."""
    vm = QemuMachine(cfg.qemu_binary, [*guest_qemu_args(cfg, choice, topology), "-S"], workdir, name="vm")
    vm.launch()
    return MonitorSteps(vm=vm, topology=topology, workdir=workdir / "disks")


def main() -> int:
    cycles = int(os.environ.get("SOAK_CYCLES", "100"))
    cfg = preflight.exit_unless_ready(who="soak")
    run = results.run_dir()
    workdir = run / "soak"
    reason = capabilities.first_missing(cfg, workdir / "capability-probe", ("nvme_ns_hotplug", "drive_insert"))
    if reason:
        print(f"soak: cannot run: {reason}", file=sys.stderr)
        return 2
    with_guest = os.environ.get("SOAK_GUEST", "1") != "0"
    choice = accel.choose(cfg)
    topology = Topology.create(workdir / "disks", controllers=3)
    rig = Rig.boot(cfg, choice, topology, workdir) if with_guest else start_paused(cfg, choice, topology, workdir)
    vm = rig.vm
    samples: list[Sample] = []
    failure = None
    soak: Soak | MonitorSoak | None = None
    start = time.monotonic()
    try:
        if isinstance(rig, Rig):
            soak = Soak(rig)
            where = f"{rig.ctrl_name(INDEX)} ({rig.ctrl(INDEX).pci_address}); guest up in {rig.boot_seconds:.1f} s"
        else:
            soak = MonitorSoak(rig)
            where = f"{rig.ctrl(INDEX).dev_id} of a paused machine, no guest (SOAK_GUEST=0)"
        print(f"soak: {cycles} cycles of each sequence on {where}, QEMU pid {vm.pid}, accel {choice.accel}",
              flush=True)
        for seq, step in (("namespace", soak.namespace_cycle), ("reconnect", soak.reconnect_cycle)):
            for i in range(1, cycles + 1):
                t0 = time.monotonic()
                try:
                    step(i)
                except SoakFailure:
                    raise
                except Exception as exc:  # name the cycle whatever broke in it
                    raise SoakFailure(f"{seq} cycle {i}: {type(exc).__name__}: {exc}") from exc
                held = vm.resources()
                rss = rss_kib(vm.pid)
                guest_ram, tcg = rss_split(Path(f"/proc/{vm.pid}/smaps").read_text())
                s = Sample(seq, i, time.monotonic() - t0, rss, held.fds, len(held.nodes), guest_ram, tcg)
                samples.append(s)
                if i % (10 if with_guest else 100) == 0 or i == cycles:
                    print(f"soak: {seq} {i}/{cycles}: RSS {rss / 1024:.1f} MiB (QEMU's own {s.own_kib / 1024:.1f}, "
                          f"guest RAM {guest_ram / 1024:.1f}, TCG code {tcg / 1024:.1f}), {held.fds} fds, "
                          f"{len(held.nodes)} block nodes", flush=True)
    except Exception as exc:  # any failure ends the soak, with its cycle named
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        if isinstance(rig, Rig):
            rig.close()
        else:
            vm.shutdown()
    # ASan's quarantine keeps freed memory (up to 256 MiB) out of reuse: its RSS says nothing of leaks;
    # LeakSanitizer's report at quit (exit_problem) is the verdict there.
    rss_bound = None if os.environ.get("QEMU_FLAVOUR") == "asan" else RSS_BOUND_MIB
    exit_problem = rig.vm.exit_problem()   # an assertion or a LeakSanitizer report at quit (QEMU_FLAVOUR=asan)
    problems = (([failure] if failure else []) + ([exit_problem] if exit_problem else [])
                + check_bounds(samples, rss_bound_mib=rss_bound))
    sequences = summary(samples) if samples else {}
    figures = {"cycles_per_sequence": cycles, "cycles_done": len(samples), "seconds": time.monotonic() - start,
               "lost_blocks": soak.lost_blocks if soak else None, "warmup": WARMUP, "rss_bound_mib": rss_bound,
               "guest": with_guest, "flavour": os.environ.get("QEMU_FLAVOUR") or "default",
               "sequences": sequences, "problems": problems,
               "samples": [asdict(s) for s in samples]}
    (run / "soak.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{'sequence':10} {'cycles':>6} {'median s':>8} {'max s':>6} {'RSS MiB first/base/last':>24} "
          f"{'fds first/base/max/last':>24}")
    for seq, f in sequences.items():
        print(f"{seq:10} {f['cycles']:6d} {f['cycle_median_s']:8.2f} {f['cycle_max_s']:6.2f} "
              f"{f['rss_first_mib']:8.1f}/{f['rss_baseline_mib']:.1f}/{f['rss_last_mib']:.1f} "
              f"{f['fds_first']:10d}/{f['fds_baseline']}/{f['fds_max_after_warmup']}/{f['fds_last']}")
    for seq, f in sequences.items():
        print(f"{seq}: after warm-up RSS {f['rss_growth_after_warmup_mib']:+.2f} MiB = QEMU's own "
              f"{f['own_rss_growth_after_warmup_mib']:+.2f} + guest RAM {f['guest_ram_growth_after_warmup_mib']:+.2f} "
              f"+ TCG code {f['tcg_code_growth_after_warmup_mib']:+.2f}; QEMU's own over the last half of the "
              f"cycles {f['rss_growth_last_half_mib']:+.2f} MiB")
    print(f"lost blocks: {figures['lost_blocks']}; bounds: fds and block nodes no growth after {WARMUP} cycles, "
          f"RSS {f'+{rss_bound:g} MiB' if rss_bound is not None else 'not bounded (ASan)'}")
    print(f"written: {run / 'soak.json'}")
    if problems:
        print("SOAK FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"soak passed: {len(samples)} cycles in {figures['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
