"""Fuzzed monitor sequences (make fuzz): QEMU must answer everything and never abort.

Seeded, reproducible random sequences of device_add/device_del nvme-ns, drive_add/drive_del/
drive_insert and pcie_aer_inject_error (every error name QEMU knows, on every root port, now and
then -a or an unknown name), in wrong orders and repeated, while the guest reads and writes every
NVMe disk in a loop. Each sequence runs on a fresh guest, so a sequence is reproduced by its seed
and index alone. After every command: QEMU is alive and its stderr has no assertion or abort; every
command got an answer (success or an error text; a monitor timeout is a failure). After every
sequence: query-status answers, the guest answers SSH, and its kernel log has no panic, Oops or
BUG (kernel WARNINGs are counted and reported, not failed: they may be the guest's own).

  FUZZ_SEED (default: the time, printed), FUZZ_SEQUENCES (20), FUZZ_LENGTH (30 commands),
  FUZZ_ONLY=<index> (one sequence), FUZZ_SHRINK (8 replays at most to shrink a failure).

A failure prints the seed, the sequence index, the failing command, a shrunk replay (commands
dropped while the failure still reproduces on a fresh guest) and the command to rerun it.
Figures go to results/<run>/fuzz.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import TypedDict

from .. import preflight
from ..config import RunConfig
from ..guest import facts as guestfacts
from ..hotswap.rig import Rig
from ..report import results
from ..vm import accel, capabilities
from ..vm.machine import MonitorError, QemuMachine
from ..vm.topology import Topology, create_image, drive_option, namespace_props

CONTROLLERS = 3
#: The topology every sequence boots; the ids the fuzz aims at come from it (plus ids of its own).
TOPOLOGY = Topology.plan(Path("disks"), controllers=CONTROLLERS)
PORTS = tuple(c.port_id for c in TOPOLOGY.controllers)
BUSES = tuple(c.dev_id for c in TOPOLOGY.controllers)
# hw/pci/pcie_aer.c's pcie_aer_error_list, QEMU 10.2.2
UNCORRECTABLE = ("DLP", "SDN", "POISON_TLP", "FCP", "COMP_TIME", "COMP_ABORT", "UNX_COMP", "RX_OVER",
                 "MALF_TLP", "ECRC", "UNSUP", "ACSV", "INTN", "MCBTLP", "ATOP_EBLOCKED", "TLP_PRF_BLOCKED")
CORRECTABLE = ("RCVR", "BAD_TLP", "BAD_DLLP", "REP_ROLL", "REP_TIMER", "ADV_NONFATAL", "INTERNAL", "HL_OVERFLOW")
AER_ERRORS = UNCORRECTABLE + CORRECTABLE
FILES = ("f0", "f1", "f2", "missing")          # per-sequence images; "missing" is never created
DRIVES = tuple(ns.drive_id for c in TOPOLOGY.controllers for ns in c.namespaces) + ("fz0", "fz1")
DEVICES = tuple(ns.dev_id for c in TOPOLOGY.controllers for ns in c.namespaces) + ("fzns0", "fzns1")
# "wait" lets the guest react (AER recovery, a namespace rescan) before the next command lands.
KINDS = ("device_add", "device_del", "drive_add", "drive_del", "drive_insert", "aer", "wait")
KERNEL_FATAL = re.compile(r"Kernel panic|Oops|BUG:|general protection fault")


@dataclasses.dataclass(frozen=True)
class Op:
    kind: str
    args: tuple[str, ...]

    def monitor_line(self) -> str:
        """What a person would type at the HMP monitor (device_add goes through QMP; same effect)."""
        a = self.args
        return {
            "device_add": lambda: f"device_add nvme-ns,id={a[0]},drive={a[1]},bus={a[2]},nsid={a[3]}",
            "device_del": lambda: f"device_del {a[0]}",
            "drive_add": lambda: f"drive_add 0 if=none,id={a[0]},file={a[1]},format=raw",
            "drive_del": lambda: f"drive_del {a[0]}",
            "drive_insert": lambda: f"drive_insert {a[0]} {a[1]}",
            "aer": lambda: f"pcie_aer_inject_error {a[0]}{a[1]} {a[2]}",
            "wait": lambda: f"# wait {a[0]} ms",
        }[self.kind]()


def generate(seed: str, length: int) -> list[Op]:
    """The sequence for `seed`: deterministic, mostly valid-but-unusual, sometimes plainly wrong."""
    rng = random.Random(seed)
    ops = []
    for _ in range(length):
        kind = rng.choices(KINDS, weights=(3, 3, 2, 3, 3, 4, 2))[0]
        if kind == "device_add":
            ops.append(Op(kind, (rng.choice(DEVICES), rng.choice(DRIVES), rng.choice(BUSES),
                                 str(rng.choice((1, 1, 2, 3, 4))))))
        elif kind == "device_del":
            ops.append(Op(kind, (rng.choice(DEVICES),)))
        elif kind == "drive_add":
            ops.append(Op(kind, (rng.choice(DRIVES), rng.choice(FILES))))
        elif kind == "drive_del":
            ops.append(Op(kind, (rng.choice(DRIVES),)))
        elif kind == "drive_insert":
            ops.append(Op(kind, (rng.choice(DEVICES), rng.choice(FILES))))
        elif kind == "wait":
            ops.append(Op(kind, (str(rng.choice((100, 300, 1000, 2000))),)))
        else:
            error = rng.choice(AER_ERRORS + ("NO_SUCH_ERROR",)) if rng.random() < 0.97 else "NO_SUCH_ERROR"
            flag = "-a " if rng.random() < 0.1 else ""
            ops.append(Op(kind, (flag, rng.choice(PORTS + ("rp9",)) if rng.random() < 0.95 else "rp9", error)))
    return ops


def sequence_seed(seed: int, index: int) -> str:
    return f"{seed}:{index}"


@dataclasses.dataclass
class Outcome:
    commands: int = 0
    ok: int = 0
    errors: int = 0
    failure: str | None = None      # what broke, None if the sequence passed
    failed_at: int | None = None    # index of the command after which it broke
    guest_warnings: int = 0


GUEST_IO = ("while :; do for d in /dev/nvme*n*; do [ -b $d ] || continue; "
            "dd if=$d of=/dev/null bs=4096 count=8 iflag=direct 2>/dev/null; "
            "dd if=/dev/urandom of=$d bs=4096 seek=1024 count=1 oflag=direct 2>/dev/null; done; sleep 0.1; done")


def qemu_broke(vm: QemuMachine) -> str | None:
    if not vm.is_running():
        return f"QEMU exited with {vm.returncode}: {vm.stderr_tail()}"
    text = vm.stderr_log.read_text(errors="replace") if vm.stderr_log.exists() else ""
    m = re.search(r".*(Assertion|assertion|abort|Aborted|core dumped).*", text)
    return f"QEMU stderr: {m.group(0)}" if m else None


def execute(vm: QemuMachine, workdir: Path, op: Op) -> bool:
    """Run one op; True if QEMU accepted it, False if it answered with an error."""
    a = op.args
    def path(name: str) -> Path:
        return workdir / f"{name}.img"

    try:
        if op.kind == "device_add":
            vm.qmp("device_add", **namespace_props(a[0], a[1], a[2], int(a[3])))
        elif op.kind == "device_del":
            vm.device_del(a[0], wait=False)
        elif op.kind == "drive_add":
            vm.drive_add(drive_option(a[0], path(a[1])))
        elif op.kind == "drive_del":
            vm.drive_del(a[0])
        elif op.kind == "drive_insert":
            vm.drive_insert(a[0], path(a[1]))
        elif op.kind == "wait":
            time.sleep(int(a[0]) / 1000)
        else:
            vm.aer_inject(f"{a[0]}{a[1]}", a[2])
        return True
    except MonitorError:
        return False


def run_sequence(cfg: RunConfig, ops: list[Op], folder: Path, choice: accel.AccelChoice) -> Outcome:
    """Boot a guest with the standard topology, start guest I/O, run `ops`, check everything."""
    out = Outcome()
    topo = Topology.create(folder / "disks", controllers=CONTROLLERS)
    for name in FILES[:-1]:
        create_image(folder / "disks" / f"{name}.img", 16 << 20, f"fuzz {name}\n".encode())
    rig = Rig.boot(cfg, choice, topo, folder)
    vm, guest = rig.vm, rig.guest
    try:
        guest.spawn(GUEST_IO)
        for i, op in enumerate(ops):
            try:
                accepted = execute(vm, folder / "disks", op)
            except Exception as exc:  # no answer (timeout, broken socket): a failure in itself
                out.failure, out.failed_at = f"no answer to `{op.monitor_line()}`: {exc!r}", i
                break
            if op.kind != "wait":   # a pause is not a monitor command
                out.commands += 1
                out.ok += accepted
                out.errors += not accepted
            broke = qemu_broke(vm)
            if broke:
                out.failure, out.failed_at = f"after `{op.monitor_line()}`: {broke}", i
                break
        if out.failure is None:
            try:
                vm.qmp("query-status")
                guest.check("echo alive", timeout=60)
                dmesg = guest.check("dmesg", timeout=60)
                (folder / "guest-dmesg.log").write_text(dmesg)
                lines = guestfacts.parse_dmesg(dmesg)
            except Exception as exc:
                out.failure = f"after the sequence: no answer from QEMU or the guest: {exc!r}"
                out.failed_at = len(ops) - 1
            else:
                fatal = [line.text for line in lines if KERNEL_FATAL.search(line.text)]
                out.guest_warnings = sum("WARNING:" in line.text for line in lines)
                if fatal:
                    out.failure, out.failed_at = f"guest kernel: {fatal[0]}", len(ops) - 1
    finally:
        running = rig.vm.is_running()
        rig.close()
        for img in (folder / "disks").glob("*.img"):
            img.unlink()
    exit_problem = rig.vm.exit_problem()
    if out.failure is None and running and exit_problem:   # QEMU ended badly at quit (assertion, sanitizer)
        out.failure, out.failed_at = f"at quit: {exit_problem}", len(ops) - 1
    return out


def shrink(cfg: RunConfig, ops: list[Op], failed_at: int, folder: Path, choice: accel.AccelChoice,
           budget: int) -> list[Op]:
    """Drop commands from the failing prefix while the failure still reproduces (fresh guest each)."""
    current = ops[:failed_at + 1]
    attempt = 0
    i = len(current) - 2          # never drop the failing command itself
    while i >= 0 and attempt < budget:
        candidate = current[:i] + current[i + 1:]
        attempt += 1
        if run_sequence(cfg, candidate, folder / f"shrink{attempt}", choice).failure:
            current = candidate
        i -= 1
    return current


class Failure(TypedDict):
    """One failed sequence as fuzz.json records it."""
    seed: int
    index: int
    failure: str
    replay: list[str]


def main() -> int:
    seed = int(os.environ.get("FUZZ_SEED") or time.time())
    sequences = int(os.environ.get("FUZZ_SEQUENCES", "20"))
    length = int(os.environ.get("FUZZ_LENGTH", "30"))
    only = os.environ.get("FUZZ_ONLY")
    indexes = [int(only)] if only else list(range(sequences))
    cfg = preflight.exit_unless_ready(who="fuzz")
    run = results.run_dir()
    reason = capabilities.first_missing(cfg, run / "fuzz" / "capability-probe", ("nvme_ns_hotplug", "drive_insert"))
    if reason:
        print(f"fuzz: cannot run: {reason}", file=sys.stderr)
        return 2
    choice = accel.choose(cfg)
    print(f"fuzz: seed {seed}, {len(indexes)} sequences of {length} commands, accel {choice.accel} "
          f"(rerun: FUZZ_SEED={seed} make fuzz)", flush=True)
    start = time.monotonic()
    counts = {"sequences": 0, "commands": 0, "ok": 0, "errors": 0, "guest_warnings": 0}
    failures: list[Failure] = []
    for index in indexes:
        ops = generate(sequence_seed(seed, index), length)
        folder = run / "fuzz" / f"seq{index:03d}"
        out = run_sequence(cfg, ops, folder, choice)
        (folder / "sequence.txt").write_text("\n".join(op.monitor_line() for op in ops) + "\n")
        counts["sequences"] += 1
        for key in ("commands", "ok", "errors", "guest_warnings"):
            counts[key] += getattr(out, key)
        print(f"fuzz: sequence {index}: {out.commands} commands, {out.ok} accepted, {out.errors} refused"
              + (f", {out.guest_warnings} guest kernel WARNINGs" if out.guest_warnings else "")
              + (f"; FAILED: {out.failure}" if out.failure else ""), flush=True)
        if out.failure:
            assert out.failed_at is not None   # run_sequence sets both together
            replay = shrink(cfg, ops, out.failed_at, folder, choice, int(os.environ.get("FUZZ_SHRINK", "8")))
            failures.append({"seed": seed, "index": index, "failure": out.failure,
                             "replay": [op.monitor_line() for op in replay]})
            print(f"  seed {seed}, sequence {index}; replay ({len(replay)} of {out.failed_at + 1} commands):")
            for op in replay:
                print(f"    {op.monitor_line()}")
            print(f"  rerun: FUZZ_SEED={seed} FUZZ_ONLY={index} FUZZ_LENGTH={length} make fuzz")
    seconds = round(time.monotonic() - start, 1)
    aborts = sum("QEMU" in f["failure"] for f in failures)
    guest_panics = sum(f["failure"].startswith("guest kernel") for f in failures)
    totals = {**counts, "failures": failures, "seed": seed, "length": length, "seconds": seconds,
              "aborts": aborts, "guest_panics": guest_panics}
    (run / "fuzz.json").write_text(json.dumps(totals, indent=2) + "\n")
    print(f"\nfuzz: {counts['sequences']} sequences, {counts['commands']} commands ({counts['ok']} accepted, "
          f"{counts['errors']} refused with an error), QEMU aborts {aborts}, guest panics "
          f"{guest_panics}, failures {len(failures)}, guest kernel WARNINGs "
          f"{counts['guest_warnings']}, {seconds:.0f} s; written {run / 'fuzz.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
