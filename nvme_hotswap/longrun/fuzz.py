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
  FUZZ_ONLY=<index> (one sequence), FUZZ_REPLAY=<file> (the sequence in a file of monitor lines,
  as shrunk.txt or sequence.txt hold them, instead of a generated one),
  FUZZ_SHRINK (300: the most fresh-guest runs a shrink may spend, about 30 min at 6 s a run; 0: no
  shrinking; the blk_mq_unfreeze_queue WARNING's 30 commands took 250 runs to shrink to 4 and
  needed 2 candidates more),
  FUZZ_REPEAT (5: runs per shrink candidate before "does not reproduce"),
  FUZZ_SHRINK_WARNING=<regex> (with FUZZ_ONLY or FUZZ_REPLAY: shrink a guest kernel WARNING),
  FUZZ_REPLAYS (20: replays of the shrunk sequence to measure how often it warns).

Shrinking is Zeller's delta debugging (`ddmin`) over the sequence: every candidate runs on a fresh
guest, up to FUZZ_REPEAT times, and counts as reproducing at the first run that shows the problem,
so a race that shows in most runs is not taken for chance. At a rate of 0.65 a run (the
blk_mq_unfreeze_queue WARNING on 6.1, docs/findings/) five runs all miss with probability
0.35^5 = 0.5%; a miss only keeps a command that was not needed, the result still reproduces.
The predicate does not keep the rate: a candidate that shows once in 10 runs passes it 41% of the
time, so the result can reproduce far less often than the sequence did (that WARNING: 15/20 for the
30 commands, 2/40 for the 4 the shrink ended at). The replays measure it, and shrink.txt lists every
candidate, to pick a longer one that reproduces more often.
'wait' pauses are candidates like the commands (they may matter for timing).

A failure prints the seed, the sequence index, the failing command, a replay shrunk with ddmin over
the commands before the failing one (kept last) and the command to rerun it.
FUZZ_SHRINK_WARNING='<regex>' runs the sequence (up to FUZZ_REPEAT times) until a guest kernel
WARNING line matches, shrinks the sequence with that as the predicate, then replays the shrunk
sequence FUZZ_REPLAYS times and reports "warned k/N" (FUZZ_SHRINK=0 only replays: the way to
measure a shrunk sequence on another GUEST_KERNEL). In that mode the guest is given
WARNING_SETTLE_S after the last command before its kernel log is read, so a short sequence is not
judged before the reset work it started has finished. Figures go to results/<run>/fuzz.json; the
shrink's candidates to fuzz/<sequence>/shrink.txt, the shrunk sequence to fuzz/<sequence>/shrunk.txt
(<sequence>: seqNNN, or replay for FUZZ_REPLAY), each replay's logs to fuzz/<sequence>/replays/.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict, TypeVar

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
#: In FUZZ_SHRINK_WARNING mode, the pause after the last command before the guest's kernel log is read:
#: the WARNING comes at the end of the reset work an AER starts (0.2 s after the error on 6.1 under
#: TCG), and a shrunk sequence can end milliseconds after its last command.
WARNING_SETTLE_S = 2.0


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

    @classmethod
    def parse(cls, line: str) -> Op:
        """The op `monitor_line` printed (FUZZ_REPLAY reads a file of them); ValueError if it is none."""
        for pattern, kind in _MONITOR_LINES:
            m = pattern.fullmatch(line.strip())
            if m:
                args = m.groups()
                return cls(kind, (args[0] or "", *args[1:]) if kind == "aer" else args)
        raise ValueError(f"not a fuzz monitor line: {line!r}")


_MONITOR_LINES = (
    (re.compile(r"device_add nvme-ns,id=(\S+?),drive=(\S+?),bus=(\S+?),nsid=(\d+)"), "device_add"),
    (re.compile(r"device_del (\S+)"), "device_del"),
    (re.compile(r"drive_add 0 if=none,id=(\S+?),file=(\S+?),format=raw"), "drive_add"),
    (re.compile(r"drive_del (\S+)"), "drive_del"),
    (re.compile(r"drive_insert (\S+) (\S+)"), "drive_insert"),
    (re.compile(r"pcie_aer_inject_error (-a )?(\S+) (\S+)"), "aer"),
    (re.compile(r"# wait (\d+) ms"), "wait"),
)


def parse_sequence(text: str) -> list[Op]:
    """A file of monitor lines (sequence.txt, shrunk.txt), blank lines skipped."""
    return [Op.parse(line) for line in text.splitlines() if line.strip()]


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
    warnings: list[str] = dataclasses.field(default_factory=list)   # the guest's `WARNING:` lines
    kernel: str | None = None       # the guest's kernel release, from its log


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


def run_sequence(cfg: RunConfig, ops: list[Op], folder: Path, choice: accel.AccelChoice,
                 settle_s: float = 0.0) -> Outcome:
    """Boot a guest with the standard topology, start guest I/O, run `ops`, wait `settle_s`, check everything."""
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
            time.sleep(settle_s)
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
                out.warnings = [line.text for line in lines if "WARNING:" in line.text]
                out.guest_warnings = len(out.warnings)
                out.kernel = next((line.text.split()[2] for line in lines
                                   if line.text.startswith("Linux version ")), None)
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


T = TypeVar("T")


def ddmin(items: Sequence[T], reproduces: Callable[[list[T]], bool]) -> list[T]:
    """Zeller's delta debugging: a 1-minimal subsequence of `items` that still `reproduces`.

    `items` itself is taken to reproduce (the caller has seen it). Split the current subsequence
    into n chunks; keep a chunk that reproduces alone (n back to 2), else a complement (all chunks
    but one: n - 1), else split finer (2n), until single items cannot be dropped. Order is kept
    and no candidate is asked twice. A last single item is also tried without (the empty
    candidate), so a problem that needs none of the items shrinks to [].
    """
    answers: dict[tuple[int, ...], bool] = {}

    def test(positions: list[int]) -> bool:
        key = tuple(positions)
        if key not in answers:
            answers[key] = reproduces([items[i] for i in positions])
        return answers[key]

    current = list(range(len(items)))
    n = 2
    while current:
        n = min(n, len(current))
        size, extra = divmod(len(current), n)
        bounds = [i * size + min(i, extra) for i in range(n + 1)]
        chunks = [current[bounds[i]:bounds[i + 1]] for i in range(n)]
        subset = next((c for c in chunks if len(c) < len(current) and test(c)), None)
        if subset is not None:
            current, n = subset, 2
            continue
        complements = ([p for j, c in enumerate(chunks) if j != i for p in c] for i in range(n))
        complement = next((c for c in complements if test(c)), None)
        if complement is not None:
            current, n = complement, max(n - 1, 2)
        elif n >= len(current):
            break
        else:
            n = min(2 * n, len(current))
    return [items[i] for i in current]


#: Runs a sequence on a fresh guest, its logs in the folder.
Runner = Callable[[list[Op], Path], Outcome]


def spans(positions: Sequence[int]) -> str:
    """Sequence positions (0-based) as the 1-based line numbers of sequence.txt: '1-3, 7'."""
    out: list[str] = []
    for p in positions:
        if out and out[-1].split("-")[-1] == str(p):
            out[-1] = f"{out[-1].split('-')[0]}-{p + 1}"
        else:
            out.append(str(p + 1))
    return ", ".join(out) or "none"


class Trial(TypedDict):
    """One shrink candidate as shrink.txt and fuzz.json record it."""
    candidate: int
    lines: str                  # which lines of the sequence, 1-based
    commands: int
    runs: list[str]             # per run: "shows", "no" or what failed instead
    reproduced: bool
    seconds: float


class Reproducer:
    """The predicate ddmin asks: does the sequence restricted to these positions still show it?

    Runs the candidate (plus `suffix`, e.g. the failing command) on a fresh guest up to `repeat`
    times and answers yes at the first run that `shows` it. Every run counts against `budget`;
    once it is spent every answer is no without a run, so ddmin ends with what it has.
    """

    def __init__(self, ops: Sequence[Op], run: Runner, shows: Callable[[Outcome], bool], repeat: int,
                 budget: int, folder: Path, suffix: Sequence[Op] = (),
                 report: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
        self.ops, self.run, self.shows, self.suffix = list(ops), run, shows, list(suffix)
        self.repeat, self.budget, self.folder, self.report = max(repeat, 1), budget, folder, report
        self.runs = 0
        self.unrun = 0              # candidates answered no because the budget was spent
        self.trials: list[Trial] = []

    def __call__(self, positions: list[int]) -> bool:
        if self.runs >= self.budget:
            self.unrun += 1
            return False
        ops = [self.ops[i] for i in positions] + self.suffix
        number = len(self.trials)
        start = time.monotonic()
        verdicts: list[str] = []
        while len(verdicts) < self.repeat and self.runs < self.budget:
            self.runs += 1
            out = self.run(ops, self.folder / f"c{number:03d}-{len(verdicts) + 1}")
            verdicts.append("shows" if self.shows(out) else f"failed: {out.failure}" if out.failure else "no")
            if verdicts[-1] == "shows":
                break
        trial: Trial = {"candidate": number, "lines": spans(positions), "commands": len(ops),
                        "runs": verdicts, "reproduced": verdicts[-1] == "shows",
                        "seconds": round(time.monotonic() - start, 1)}
        self.trials.append(trial)
        self.report(f"fuzz: candidate {number}: {len(ops)} commands (lines {trial['lines']}): "
                    + (f"reproduced at run {len(verdicts)}" if trial["reproduced"]
                       else f"not in {len(verdicts)} runs" + (f" ({', '.join(set(verdicts) - {'no'})})"
                                                               if set(verdicts) - {"no"} else ""))
                    + f"; {self.runs} of {self.budget} runs spent")
        return trial["reproduced"]

    def log(self) -> str:
        """shrink.txt: every candidate with its runs."""
        return "".join(f"candidate {t['candidate']:3d}: {t['commands']:2d} commands (lines {t['lines']}): "
                       f"{'REPRODUCED' if t['reproduced'] else 'no'} [{', '.join(t['runs'])}] {t['seconds']} s\n"
                       for t in self.trials) + (f"{self.unrun} candidates left unrun: budget spent\n"
                                                if self.unrun else "")


def shrink_failure(run: Runner, ops: list[Op], failed_at: int, folder: Path, repeat: int,
                   budget: int) -> tuple[list[Op], Reproducer]:
    """ddmin over the commands before the failing one, which stays last; any failure counts."""
    prefix = ops[:failed_at]
    reproducer = Reproducer(prefix, run, lambda out: out.failure is not None, repeat, budget,
                            folder / "shrink", suffix=ops[failed_at:failed_at + 1])
    kept = ddmin(list(range(len(prefix))), reproducer)
    return [prefix[i] for i in kept] + ops[failed_at:failed_at + 1], reproducer


def warned(pattern: re.Pattern[str]) -> Callable[[Outcome], bool]:
    """The WARNING predicate: a guest `WARNING:` line matches `pattern`."""
    return lambda out: any(pattern.search(line) for line in out.warnings)


class WarningShrink(TypedDict):
    """FUZZ_SHRINK_WARNING's result as fuzz.json records it."""
    pattern: str
    original: list[str]
    reproduced: bool            # the original sequence showed the WARNING within `repeat` runs
    shrunk: list[str]
    runs: int                   # fresh-guest runs the shrink spent (the first check included)
    budget: int
    repeat: int
    replays: int
    warned: int                 # replays of the shrunk sequence with the WARNING
    replay_kernels: list[str]
    replay_failures: list[str]
    candidates: list[Trial]


def shrink_warning(run: Runner, ops: list[Op], pattern: re.Pattern[str], folder: Path, repeat: int,
                   budget: int, replays: int,
                   report: Callable[[str], None] = lambda line: print(line, flush=True)) -> WarningShrink:
    """Check that `ops` shows the WARNING, ddmin it, replay the result `replays` times.

    With budget 0 `ops` is replayed as it is (how a shrunk sequence is measured on another kernel).
    """
    shows = warned(pattern)
    reproducer = Reproducer(ops, run, shows, repeat, budget, folder / "shrink", report=report)
    everything = list(range(len(ops)))
    reproduced = budget == 0 or reproducer(everything)
    kept = ddmin(everything, reproducer) if reproduced and budget else everything
    shrunk = [ops[i] for i in kept]
    result: WarningShrink = {
        "pattern": pattern.pattern, "original": [op.monitor_line() for op in ops], "reproduced": reproduced,
        "shrunk": [op.monitor_line() for op in shrunk], "runs": reproducer.runs, "budget": budget,
        "repeat": repeat, "replays": 0, "warned": 0, "replay_kernels": [], "replay_failures": [],
        "candidates": reproducer.trials}
    if budget:
        (folder / "shrink.txt").write_text(f"ddmin over {len(ops)} commands, predicate: a guest WARNING line "
                                           f"matches {pattern.pattern!r}, up to {repeat} runs a candidate\n"
                                           + reproducer.log())
    if not reproduced:
        report(f"fuzz: the sequence showed no WARNING matching {pattern.pattern!r} in {reproducer.runs} runs; "
               "nothing to shrink")
        return result
    (folder / "shrunk.txt").write_text("".join(f"{line}\n" for line in result["shrunk"]))
    report(f"fuzz: shrunk to {len(shrunk)} of {len(ops)} commands in {reproducer.runs} runs; replaying it "
           f"{replays} times" if budget else f"fuzz: replaying the sequence {replays} times")
    kernels = set()
    for i in range(replays):
        out = run(shrunk, folder / "replays" / f"r{i + 1:02d}")
        result["replays"] += 1
        result["warned"] += shows(out)
        if out.kernel:
            kernels.add(out.kernel)
        if out.failure:
            result["replay_failures"].append(out.failure)
        report(f"fuzz: replay {i + 1}: " + ("warned" if shows(out) else "no WARNING")
               + (f"; FAILED: {out.failure}" if out.failure else ""))
    result["replay_kernels"] = sorted(kernels)
    return result


class Failure(TypedDict):
    """One failed sequence as fuzz.json records it."""
    seed: int
    index: int | None           # None: the sequence came from FUZZ_REPLAY
    failure: str
    replay: list[str]


def main() -> int:
    seed = int(os.environ.get("FUZZ_SEED") or time.time())
    sequences = int(os.environ.get("FUZZ_SEQUENCES", "20"))
    length = int(os.environ.get("FUZZ_LENGTH", "30"))
    only = os.environ.get("FUZZ_ONLY")
    replay_file = os.environ.get("FUZZ_REPLAY")
    budget = int(os.environ.get("FUZZ_SHRINK", "300"))
    repeat = int(os.environ.get("FUZZ_REPEAT", "5"))
    replays = int(os.environ.get("FUZZ_REPLAYS", "20"))
    warning = os.environ.get("FUZZ_SHRINK_WARNING")
    try:
        pattern = re.compile(warning) if warning else None
        given = parse_sequence(Path(replay_file).read_text()) if replay_file else None
    except (re.error, ValueError, OSError) as exc:
        print(f"fuzz: {exc}", file=sys.stderr)
        return 2
    if given == []:
        print(f"fuzz: {replay_file} holds no monitor lines", file=sys.stderr)
        return 2
    if pattern and not only and given is None:
        print("fuzz: FUZZ_SHRINK_WARNING needs one sequence: FUZZ_ONLY=<index> or FUZZ_REPLAY=<file>",
              file=sys.stderr)
        return 2
    cfg = preflight.exit_unless_ready(who="fuzz")
    run = results.run_dir()
    reason = capabilities.first_missing(cfg, run / "fuzz" / "capability-probe", ("nvme_ns_hotplug", "drive_insert"))
    if reason:
        print(f"fuzz: cannot run: {reason}", file=sys.stderr)
        return 2
    choice = accel.choose(cfg)
    # (label, index, ops): FUZZ_REPLAY's sequence, or the generated ones
    indexes = [int(only)] if only else list(range(sequences))
    todo: list[tuple[str, int | None, list[Op]]] = (
        [("replay", None, given)] if given is not None else
        [(f"seq{i:03d}", i, generate(sequence_seed(seed, i), length)) for i in indexes])

    def rerun(index: int | None) -> str:
        return (f"FUZZ_REPLAY={replay_file} make fuzz" if index is None else
                f"FUZZ_SEED={seed} FUZZ_ONLY={index} FUZZ_LENGTH={length} make fuzz")

    print(f"fuzz: {f'replaying {replay_file}' if given is not None else f'seed {seed}'}, {len(todo)} sequences of "
          f"{len(todo[0][2])} commands, accel {choice.accel} (rerun: "
          f"{rerun(None) if given is not None else f'FUZZ_SEED={seed} make fuzz'})", flush=True)
    start = time.monotonic()
    if pattern:
        label, index, ops = todo[0]
        folder = run / "fuzz" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sequence.txt").write_text("\n".join(op.monitor_line() for op in ops) + "\n")
        result = shrink_warning(lambda o, f: run_sequence(cfg, o, f, choice, settle_s=WARNING_SETTLE_S),
                                ops, pattern, folder, repeat, budget, replays)
        seconds = round(time.monotonic() - start, 1)
        (run / "fuzz.json").write_text(json.dumps({"seed": seed, "index": index, "replay_file": replay_file,
                                                   "guest_kernel": cfg.guest_kernel, "seconds": seconds,
                                                   "warning": result}, indent=2) + "\n")
        if not result["reproduced"]:
            return 1
        head = (f"{len(result['shrunk'])} of {len(ops)} commands still warn ({pattern.pattern!r}), shrink: "
                f"{result['runs']} runs" if budget else f"{len(ops)} commands, {pattern.pattern!r}")
        print(f"\nfuzz: {head}; warned {result['warned']}/{result['replays']} replays"
              f" on {', '.join(result['replay_kernels']) or 'the guest'}"
              + (f", {len(result['replay_failures'])} replays FAILED" if result["replay_failures"] else "")
              + f"; {seconds:.0f} s:")
        for line in result["shrunk"]:
            print(f"    {line}")
        print(f"  replay: FUZZ_REPLAY={folder / 'shrunk.txt'} FUZZ_SHRINK_WARNING='{pattern.pattern}' "
              f"FUZZ_SHRINK=0 FUZZ_REPLAYS={replays} make fuzz\n  written {run / 'fuzz.json'}, "
              f"{folder / 'shrink.txt'}" if budget else f"  written {run / 'fuzz.json'}")
        return 0
    counts = {"sequences": 0, "commands": 0, "ok": 0, "errors": 0, "guest_warnings": 0}
    failures: list[Failure] = []
    for label, index, ops in todo:
        folder = run / "fuzz" / label
        out = run_sequence(cfg, ops, folder, choice)
        (folder / "sequence.txt").write_text("\n".join(op.monitor_line() for op in ops) + "\n")
        counts["sequences"] += 1
        for key in ("commands", "ok", "errors", "guest_warnings"):
            counts[key] += getattr(out, key)
        print(f"fuzz: sequence {label}: {out.commands} commands, {out.ok} accepted, {out.errors} refused"
              + (f", {out.guest_warnings} guest kernel WARNINGs" if out.guest_warnings else "")
              + (f"; FAILED: {out.failure}" if out.failure else ""), flush=True)
        if out.failure:
            assert out.failed_at is not None   # run_sequence sets both together
            replay, reproducer = shrink_failure(lambda o, f: run_sequence(cfg, o, f, choice), ops, out.failed_at,
                                                folder, repeat, budget)
            (folder / "shrink.txt").write_text(f"ddmin over the {out.failed_at} commands before the failing one, "
                                               f"predicate: any failure, up to {repeat} runs a candidate\n"
                                               + reproducer.log())
            (folder / "shrunk.txt").write_text("".join(f"{op.monitor_line()}\n" for op in replay))
            failures.append({"seed": seed, "index": index, "failure": out.failure,
                             "replay": [op.monitor_line() for op in replay]})
            print(f"  {label}; replay ({len(replay)} of {out.failed_at + 1} commands, "
                  f"shrunk in {reproducer.runs} runs):")
            for op in replay:
                print(f"    {op.monitor_line()}")
            print(f"  rerun: {rerun(index)}"
                  f"; the shrunk one: FUZZ_REPLAY={folder / 'shrunk.txt'} make fuzz")
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
