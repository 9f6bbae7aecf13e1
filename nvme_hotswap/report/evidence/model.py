"""What the evidence report says, as frozen dataclasses, built from a run folder; no rendering here.

build(run) reads junit.xml, environment.json and, per passed test, tests/<test>/vm-monitor.log,
guest-dmesg.log, renaming.txt and observed.txt. Any of them may be missing or cut off (a cancelled
test boots nothing, a killed run leaves half a file): the report then says less, it never fails.
Both the Markdown and the HTML are rendered from the same Report (render.py).
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...guest.facts import KernelLine, parse_dmesg
from ..junit import Case
from .parse import SWAP_COMMANDS, hot_swaps, operator_form, outcomes, parse_monitor, proof_lines, shorten_paths

NOT_SCENARIOS = ("test_monitor_errors.",)  # wrong input on purpose: not evidence of a hot-swap
NOTES = (("renaming.txt", "Names"), ("observed.txt", "Observed"))   # artifact, label in the report
NOTE_CHARS = 160   # a failure message is cut to this in the results table


@dataclasses.dataclass(frozen=True)
class Counts:
    passed: int
    failed: int
    error: int
    skipped: int    # a cancel is a skip
    known: int = 0  # known upstream defects (docs/findings/), reproduced as documented


@dataclasses.dataclass(frozen=True)
class EnvItem:
    text: str                       # may hold Markdown `code` spans
    sub: tuple[str, ...] = ()       # sub-items (the QEMU patches)


@dataclasses.dataclass(frozen=True)
class ResultRow:
    test: str       # without the tests.acceptance. prefix
    outcome: str    # passed, failed, error or skipped
    seconds: float
    message: str    # first line of the failure, error or skip message

    @property
    def note(self) -> str:
        """The message as the results table shows it: one table row should stay one screen line or two."""
        return self.message[:NOTE_CHARS]


@dataclasses.dataclass(frozen=True)
class Note:
    label: str      # Names (renaming.txt) or Observed (observed.txt)
    text: str


@dataclasses.dataclass(frozen=True)
class Timeline:
    """One hot-swap on two clocks that are not aligned, host monotonic and guest printk (see plot.TIMELINE_NOTE)."""
    title: str
    host: tuple[tuple[float, str], ...]     # (ms after the first command, command name)
    guest: tuple[tuple[float, str], ...]    # (ms after the mark, label), the mark first


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A passed test that hot-swapped: what was typed at the monitor and what the guest kernel logged."""
    name: str
    commands: tuple[str, ...] = ()          # operator form, paths shortened; "# event ..." for QMP events
    kernel_log: tuple[KernelLine, ...] = ()  # the marks and the proof lines
    notes: tuple[Note, ...] = ()
    timelines: tuple[Timeline, ...] = ()
    unreadable: str = ""    # why the artifacts could not be read; then the fields above are empty


@dataclasses.dataclass(frozen=True)
class Report:
    title: str
    counts: Counts
    environment: tuple[EnvItem, ...]
    results: tuple[ResultRow, ...]          # empty: no (readable) junit.xml
    scenarios: tuple[Scenario, ...]
    trailer: str | None                     # "Tested-by: ..." when the run tested the series (trailer_allowed)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def environment_items(env: dict[str, Any]) -> tuple[EnvItem, ...]:
    """environment.json as the list a reviewer reads: QEMU and its patches, accelerator, guest, host."""
    if not env:
        return (EnvItem("environment.json missing: environment unknown"),)
    qemu = f"QEMU {env.get('qemu_version', '?')}"
    build = env.get("qemu_build")
    if isinstance(build, dict) and build.get("origin"):   # not built here: upstream's own binary
        origin = EnvItem(f"{qemu}: {build['origin']}", tuple(f"{k}: `{build[k]}`" for k in
                                                              ("package", "version", "started_through") if k in build))
    elif isinstance(build, dict):
        patches = [p.strip() for p in build.get("patch", "").split(";") if p.strip()]
        origin = EnvItem(f"{qemu}, built from {build.get('source', '?')} with {len(patches)} patches:",
                         tuple(f"`{p.replace(' sha256=', '` sha256 `')}`" for p in patches))
    else:
        origin = EnvItem(f"{qemu}, `{env.get('qemu', '?')}` ({build or 'origin unknown'})")
    guest = env.get("guest") or {}
    kernel_pkgs = [f"{k} {v}" for k, v in (guest.get("packages") or {}).items() if k.startswith("linux-image")]
    return (origin,
            EnvItem(f"Accelerator: {env.get('accelerator', '?')} "
                    f"({env.get('accelerator_reason', 'no reason recorded')})"),
            EnvItem(f"Guest: Debian {guest.get('debian_suite', '?')}"
                    + (f" ({env['guest_arch']} on {env['machine']})" if env.get("guest_arch") else "")
                    + f", kernel {guest.get('kernel_release', '?')}"
                    + (f" ({', '.join(kernel_pkgs)})" if kernel_pkgs else "")),
            EnvItem(f"Host: Linux {env.get('host_kernel', '?')}, Python {env.get('python', '?')}"))


def git_identity() -> str:
    """`Name <email>` from git config, or a placeholder to edit."""
    def get(key: str) -> str:
        try:
            return subprocess.run(["git", "config", key], capture_output=True, text=True, timeout=5).stdout.strip()
        except OSError:
            return ""
    name, email = get("user.name"), get("user.email")
    return f"{name} <{email}>" if name and email else "Your Name <you@example.org>"


def _short(name: str) -> str:
    """The name the report shows: without the package every acceptance test is in."""
    return name.removeprefix("tests.acceptance.")


def test_dir(run: Path, name: str) -> Path | None:
    for d in sorted((run / "tests").glob("*")):
        if name == d.name or name.endswith("." + d.name):
            return d
    return None


def scenario(name: str, folder: Path) -> Scenario | None:
    """The scenario of one passed test; None if it typed no hot-swap command (a boot or hygiene test).

    Raises ValueError, KeyError or TypeError on a monitor transcript cut off mid-line."""
    monitor = parse_monitor(_read(folder / "vm-monitor.log"))
    commands = tuple(shorten_paths(c) for c in map(operator_form, monitor) if c)
    if not any(c.split(" ", 1)[0] in SWAP_COMMANDS for c in commands):
        return None
    proof = proof_lines(parse_dmesg(_read(folder / "guest-dmesg.log")))
    notes = tuple(Note(label, text) for artifact, label in NOTES if (text := _read(folder / artifact).strip()))
    short = ".".join(name.rsplit(".", 2)[-2:])   # Class.test: what fits in a plot title
    timelines = tuple(Timeline(f"{short} (hot-swap {n})", tuple(swap.host_ms()), tuple(swap.guest_ms()))
                      for n, swap in enumerate(hot_swaps(monitor, proof), 1))
    return Scenario(name, commands, tuple(line for line, _ in proof), notes, timelines)


def build(run: Path) -> Report:
    """The report of the run folder `run` (results/<timestamp>)."""
    env_path = run / "environment.json"
    try:
        env = json.loads(env_path.read_text()) if env_path.exists() else {}
    except ValueError:
        env = {}
    try:
        cases = outcomes(run / "junit.xml") if (run / "junit.xml").exists() else []
    except ET.ParseError:  # a run killed while pytest wrote it
        cases = []
    counts = Counts(*(sum(c.outcome == k for c in cases) for k in ("passed", "failed", "error", "skipped", "known")))
    scenarios: list[Scenario] = []
    for case in cases:
        folder = test_dir(run, case.full_name)
        if case.outcome != "passed" or folder is None or any(s in case.full_name for s in NOT_SCENARIOS):
            continue
        try:
            found = scenario(_short(case.full_name), folder)
        except (ValueError, KeyError, TypeError) as exc:  # e.g. a transcript cut off mid-line
            found = Scenario(_short(case.full_name), unreadable=f"artifacts in {folder.name} unreadable: {exc!r}")
        if found is not None:
            scenarios.append(found)
    return Report(
        title=f"NVMe hot-swap acceptance: {run.name}",
        counts=counts,
        environment=environment_items(env),
        results=tuple(ResultRow(_short(c.full_name), c.outcome, c.seconds, c.message) for c in cases),
        scenarios=tuple(scenarios),
        trailer=f"Tested-by: {git_identity()}" if trailer_allowed(cases) else None)


SERIES_MISSING = "QEMU lacks"   # how a cancel for a capability of the series begins (vm/capabilities.py)


def trailer_allowed(cases: Sequence[Case]) -> bool:
    """Tested-by is offered when nothing failed, something passed and no test was cancelled for
    lack of the series: a cancel for a reason outside it (the guest flavour, the architecture)
    says nothing against the series, a failure does (a known upstream defect too: it is known, not
    absent), and an absent series was not tested."""
    return (any(c.outcome == "passed" for c in cases)
            and not any(c.outcome in ("failed", "error", "known") for c in cases)
            and not any(c.outcome == "skipped" and SERIES_MISSING in c.message for c in cases))
