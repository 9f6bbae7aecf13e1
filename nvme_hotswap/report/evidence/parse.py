"""Reading a run's artifacts for the evidence report: functions of their text, without side effects.

vm-monitor.log becomes MonitorEntry lines and then the commands an operator would type; the guest
kernel log (parsed by guest.facts) becomes the lines that prove a hot-swap; the two are paired per
hot-swap for the timelines; junit.xml (the one file read here) becomes the test outcomes.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from ...guest import klog
from ...guest.facts import KernelLine
from .. import junit

MARK = "nvme-hotswap: mark "     # written by Guest.klog_mark() right before each hot-swap
SWAP_COMMANDS = {"drive_del", "drive_insert", "drive_add", "device_add", "device_del", "pcie_aer_inject_error",
                 "blockdev-add", "x-blockdev-reconnect", "cont"}
EVENTS_SHOWN = {"DEVICE_DELETED", "BLOCK_IO_ERROR"}

# The kernel-log lines that prove a hot-swap (klog.py's patterns, any controller/port/disk),
# with the short label the timeline uses. At most MAX_IO_ERRORS I/O-error lines are quoted.
ANY = {"ctrl": r"nvme\d+", "port": r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.\d", "disk": r"nvme\S+"}
PROOF = [(name, re.compile(getattr(klog, name).format(**ANY)), label) for name, label in [
    ("NS_RESCAN", "AEN rescan"), ("IO_ERROR", "I/O fails"), ("AER_FATAL_RECEIVED", "fatal error received"),
    ("AER_SDES", "SDES"), ("NVME_FROZEN", "frozen, reset"), ("LINK_RESET_OK", "link reset"),
    ("NVME_SLOT_RESET", "restart after slot reset"), ("RECOVERY_OK", "recovery successful (I/O resumes)"),
    ("RECOVERY_FAILED", "recovery failed")]]
MAX_IO_ERRORS = 2

Proof = tuple[KernelLine, str]   # a kernel-log line and its timeline label ("mark" for a mark)


@dataclasses.dataclass(frozen=True)
class MonitorEntry:
    seconds: float      # since QEMU was launched (host monotonic)
    kind: str           # launch, hmp>, hmp<, qmp>, qmp<, event, exit
    text: str


_MONITOR = re.compile(r"^\d\d:\d\d:\d\d \+\s*(\d+\.\d+)s (\S+)\s+(.*)$")


def parse_monitor(text: str) -> list[MonitorEntry]:
    """vm-monitor.log ("HH:MM:SS +  5.444s hmp>   drive_del drv2"); untimed lines continue the previous entry."""
    entries: list[MonitorEntry] = []
    for line in text.splitlines():
        m = _MONITOR.match(line)
        if m:
            entries.append(MonitorEntry(float(m.group(1)), m.group(2), m.group(3)))
        elif entries:
            last = entries[-1]
            entries[-1] = dataclasses.replace(last, text=f"{last.text}\n{line}")
    return entries


def _value(v: object) -> str:
    return json.dumps(v, separators=(",", ":")) if isinstance(v, (dict, list)) else str(v)


def operator_form(entry: MonitorEntry) -> str | None:
    """The command as an operator would type it at the HMP prompt; None for noise and replies.

    QMP-only commands keep their name and show their arguments as key=value. Raises ValueError on
    a QMP line cut off mid-JSON (a transcript of a killed run)."""
    if entry.kind == "hmp>":
        return None if entry.text.startswith("info usernet") else entry.text
    if entry.kind == "event":
        ev = json.loads(entry.text)
        if ev.get("event") not in EVENTS_SHOWN:
            return None
        data = ev.get("data", {})
        return f"# event {ev['event']} {data.get('device') or data.get('node-name') or ''}".rstrip()
    if entry.kind != "qmp>":
        return None
    args: dict[str, object]
    if not entry.text.startswith("{"):
        name, args = entry.text.strip(), {}
    else:
        cmd = json.loads(entry.text)
        name, args = str(cmd["execute"]), dict(cmd.get("arguments") or {})
    if name.startswith("query-") or name in ("human-monitor-command", "qmp_capabilities"):
        return None
    if name == "device_add":
        return "device_add " + ",".join([str(args.pop("driver", "?"))] + [f"{k}={_value(v)}" for k, v in args.items()])
    if name == "device_del":
        return f"device_del {args.get('id')}"
    return " ".join([name] + [f"{k}={_value(v)}" for k, v in args.items()])


def shorten_paths(command: str) -> str:
    """Paths into a run's test folder are shown relative to it (disks/replacement.img)."""
    return re.sub(r"/\S*?/tests/[^/\s]+/", "", command)


def command_name(entry: MonitorEntry) -> str:
    """The command's name in operator form ("" for noise): what tells a swap command from the rest."""
    text = operator_form(entry) or ""
    return text.split(" ", 1)[0]


def proof_lines(lines: list[KernelLine]) -> list[Proof]:
    """The marks and the lines that prove the hot-swap, each with its timeline label."""
    out: list[Proof] = []
    io_errors = 0
    for line in lines:
        if line.text.startswith(MARK):
            out.append((line, "mark"))
            continue
        for name, rx, label in PROOF:
            if rx.search(line.text):
                io_errors += name == "IO_ERROR"
                if name != "IO_ERROR" or io_errors <= MAX_IO_ERRORS:
                    out.append((line, label))
                break
    return out


@dataclasses.dataclass(frozen=True)
class HotSwap:
    """One sequence: its monitor commands (host seconds) and its guest lines from the mark on (guest seconds)."""
    commands: list[MonitorEntry]
    guest: list[Proof]

    def host_ms(self) -> list[tuple[float, str]]:
        """(ms after the sequence's first command, command name) per command."""
        t0 = self.commands[0].seconds
        return [((c.seconds - t0) * 1000, command_name(c)) for c in self.commands]

    def guest_ms(self) -> list[tuple[float, str]]:
        """(ms after the mark, label) per timed guest line, the mark first."""
        t0 = self.guest[0][0].seconds or 0.0
        return [((line.seconds - t0) * 1000, label) for line, label in self.guest if line.seconds is not None]


def hot_swaps(monitor: list[MonitorEntry], proof: list[Proof]) -> list[HotSwap]:
    """Pair each mark with the swap commands that followed it.

    The host-guest clock offset is estimated once (first mark = first swap command); each command
    goes to the last mark at or before it on that estimate (0.1 s slack). Within a hot-swap, times
    are only ever compared inside one clock."""
    commands = [e for e in monitor if e.kind in ("hmp>", "qmp>") and command_name(e) in SWAP_COMMANDS]
    marks = [(i, line.seconds) for i, (line, label) in enumerate(proof) if label == "mark" and line.seconds is not None]
    if not commands or not marks:
        return []
    offset = commands[0].seconds - marks[0][1]
    groups: dict[int, list[MonitorEntry]] = {}
    for c in commands:
        owner = marks[0][0]
        for i, seconds in marks:
            if seconds <= c.seconds - offset + 0.1:
                owner = i
        groups.setdefault(owner, []).append(c)
    swaps = []
    for n, (i, _) in enumerate(marks):
        end = marks[n + 1][0] if n + 1 < len(marks) else len(proof)
        if i in groups:
            swaps.append(HotSwap(groups[i], proof[i:end]))
    return swaps


def outcomes(junit_xml: Path) -> list[junit.Case]:
    """The test cases of junit.xml by full name (xdist workers finish in any order).

    Raises xml.etree.ElementTree.ParseError on a file cut off while pytest wrote it."""
    return sorted(junit.read(junit_xml), key=lambda c: c.full_name)
