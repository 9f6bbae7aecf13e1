"""Write EVIDENCE.md and EVIDENCE.html for a run: what was tested, on what, and what happened.

Reads results/latest (or the run folder given as argument): junit.xml, environment.json and
the per-test artifacts (vm-monitor.log, guest-dmesg.log, renaming.txt, observed.txt). The
Markdown is meant to be pasted into a reply on the list; the HTML adds a timeline per hot-swap.
Any artifact may be missing (a cancelled test boots nothing): the report says less, never fails.

Both reports come from one list of blocks: ("h2", text), ("p", text), ("ul", items),
("table", header, rows), ("pre", text), ("img", png bytes, caption).
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from .. import config
from ..guest import klog
from ..guest.facts import KernelLine, parse_dmesg
from . import junit

MARK = "nvme-hotswap: mark "     # written by Guest.klog_mark() right before each hot-swap
NOT_SCENARIOS = ("test_monitor_errors.",)  # wrong input on purpose: not evidence of a hot-swap
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
TIMELINE_NOTE = ("Two clocks, not aligned: the host lane is milliseconds after the sequence's first monitor "
                 "command (QEMU-relative monotonic time in vm-monitor.log); the guest lane is milliseconds "
                 "after the mark the test wrote to /dev/kmsg just before that command (guest printk time). "
                 "The mark precedes the command by about one SSH round trip, so compare across lanes only "
                 "to within a few tens of ms. 'I/O resumes' is the kernel's 'device recovery successful' "
                 "(queues restarted); the test's next read over SSH is not timestamped.")


# --- parsing -------------------------------------------------------------------------------
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

    QMP-only commands keep their name and show their arguments as key=value."""
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
    if not entry.text.startswith("{"):
        name, args = entry.text.strip(), {}
    else:
        cmd = json.loads(entry.text)
        name, args = cmd["execute"], dict(cmd.get("arguments") or {})
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
    text = operator_form(entry) or ""
    return text.split(" ", 1)[0]


def proof_lines(lines: list[KernelLine]) -> list[tuple[KernelLine, str]]:
    """The marks and the lines that prove the hot-swap, each with its timeline label."""
    out, io_errors = [], 0
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


@dataclasses.dataclass
class HotSwap:
    """One sequence: its monitor commands (host seconds) and its guest lines after the mark (guest seconds)."""
    commands: list[MonitorEntry]
    guest: list[tuple[KernelLine, str]]

    def host_ms(self) -> list[tuple[float, str]]:
        t0 = self.commands[0].seconds
        return [((c.seconds - t0) * 1000, command_name(c)) for c in self.commands]

    def guest_ms(self) -> list[tuple[float, str]]:
        t0 = self.guest[0][0].seconds or 0.0
        return [((line.seconds - t0) * 1000, label) for line, label in self.guest if line.seconds is not None]


def hot_swaps(monitor: list[MonitorEntry], proof: list[tuple[KernelLine, str]]) -> list[HotSwap]:
    """Pair each mark with the swap commands that followed it.

    The host-guest clock offset is estimated once (first mark = first swap command); each command
    goes to the last mark at or before it on that estimate (0.1 s slack). Within a hot-swap, times
    are only ever compared inside one clock."""
    commands = [e for e in monitor if e.kind in ("hmp>", "qmp>") and command_name(e) in SWAP_COMMANDS]
    starts = [i for i, (line, label) in enumerate(proof) if label == "mark" and line.seconds is not None]
    if not commands or not starts:
        return []
    offset = commands[0].seconds - proof[starts[0]][0].seconds
    groups: dict[int, list[MonitorEntry]] = {}
    for c in commands:
        owner = starts[0]
        for i in starts:
            if proof[i][0].seconds <= c.seconds - offset + 0.1:
                owner = i
        groups.setdefault(owner, []).append(c)
    swaps = []
    for n, i in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(proof)
        if i in groups:
            swaps.append(HotSwap(groups[i], proof[i:end]))
    return swaps


def outcomes(junit_xml: Path) -> list[dict[str, str]]:
    """One row per test case: name, outcome (passed/failed/error/skipped), seconds, message."""
    rows = [{"name": c.full_name, "outcome": c.outcome, "seconds": f"{c.seconds:.1f}", "message": c.message}
            for c in junit.read(junit_xml)]
    return sorted(rows, key=lambda r: r["name"])   # xdist workers finish in any order


# --- the report ----------------------------------------------------------------------------
def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def environment_items(env: dict) -> list[str]:
    build = env.get("qemu_build")
    if isinstance(build, dict):
        patches = [p.strip() for p in build.get("patch", "").split(";") if p.strip()]
        origin = (f"built from {build.get('source', '?')} with {len(patches)} patches:",
                  [f"`{p.replace(' sha256=', '` sha256 `')}`" for p in patches])
    else:
        origin = f"`{env.get('qemu', '?')}` ({build or 'origin unknown'})"
    guest = env.get("guest") or {}
    kernel_pkgs = [f"{k} {v}" for k, v in (guest.get("packages") or {}).items() if k.startswith("linux-image")]
    items: list = [f"QEMU {env.get('qemu_version', '?')}, {origin}" if isinstance(origin, str) else
                   (f"QEMU {env.get('qemu_version', '?')}, {origin[0]}", origin[1]),
             f"Accelerator: {env.get('accelerator', '?')} ({env.get('accelerator_reason', 'no reason recorded')})",
             f"Guest: Debian {guest.get('debian_suite', '?')}"
             + (f" ({env['guest_arch']} on {env['machine']})" if env.get("guest_arch") else "")
             + f", kernel {guest.get('kernel_release', '?')}"
             + (f" ({', '.join(kernel_pkgs)})" if kernel_pkgs else ""),
             f"Host: Linux {env.get('host_kernel', '?')}, Python {env.get('python', '?')}"]
    return items if env else ["environment.json missing: environment unknown"]


def _git_identity() -> str:
    """`Name <email>` from git config, or a placeholder to edit."""
    def get(key: str) -> str:
        try:
            return subprocess.run(["git", "config", key], capture_output=True, text=True, timeout=5).stdout.strip()
        except OSError:
            return ""
    name, email = get("user.name"), get("user.email")
    return f"{name} <{email}>" if name and email else "Your Name <you@example.org>"


def _test_dir(run: Path, name: str) -> Path | None:
    for d in sorted((run / "tests").glob("*")):
        if name == d.name or name.endswith("." + d.name):
            return d
    return None


def scenario_blocks(name: str, folder: Path, with_plots: bool) -> list[tuple]:
    monitor = parse_monitor(_read(folder / "vm-monitor.log"))
    commands = [shorten_paths(c) for c in map(operator_form, monitor) if c]
    if not any(c.split(" ", 1)[0] in SWAP_COMMANDS for c in commands):
        return []
    proof = proof_lines(parse_dmesg(_read(folder / "guest-dmesg.log")))
    text = "\n".join(c if c.startswith("#") else f"(qemu) {c}" for c in commands)
    if proof:
        text += "\n\n# guest kernel log\n" + "\n".join(str(line) for line, _ in proof)
    blocks: list[tuple] = [("h3", name), ("pre", text)]
    for artifact in ("renaming.txt", "observed.txt"):
        text = _read(folder / artifact).strip()
        if text:
            blocks.append(("p", f"Names: {text}" if artifact == "renaming.txt" else f"Observed: {text}"))
    if with_plots:
        for n, swap in enumerate(hot_swaps(monitor, proof), 1):
            blocks.append(("img", timeline_png(swap, f"{'.'.join(name.rsplit('.', 2)[-2:])} (hot-swap {n})"),
                           timeline_caption(swap)))
    return blocks


def report_blocks(run: Path, with_plots: bool = False) -> list[tuple]:
    env_path = run / "environment.json"
    try:
        env = json.loads(env_path.read_text()) if env_path.exists() else {}
    except ValueError:
        env = {}
    try:
        rows = outcomes(run / "junit.xml") if (run / "junit.xml").exists() else []
    except ET.ParseError:  # a run killed while pytest wrote it
        rows = []
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("passed", "failed", "error", "skipped")}
    short = lambda n: n.removeprefix("tests.acceptance.")  # noqa: E731
    blocks: list[tuple] = [
        ("h1", f"NVMe hot-swap acceptance: {run.name}"),
        ("p", f"{counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors, "
              f"{counts['skipped']} skipped/cancelled" if rows else "No junit.xml: the run ended before reporting."),
        ("h2", "Environment"), ("ul", environment_items(env)),
        ("h2", "Results"),
        ("table", ["test", "outcome", "s", "note"],
         [[short(r["name"]), r["outcome"], r["seconds"], r["message"][:160]] for r in rows]),
        ("h2", "Scenarios that passed: what was typed at the monitor, what the guest kernel logged")]
    if with_plots:
        blocks.append(("p", TIMELINE_NOTE))
    for r in rows:
        folder = _test_dir(run, r["name"])
        if r["outcome"] == "passed" and folder is not None and not any(s in r["name"] for s in NOT_SCENARIOS):
            try:
                blocks += scenario_blocks(short(r["name"]), folder, with_plots)
            except (ValueError, KeyError, TypeError) as exc:  # e.g. a transcript cut off mid-line
                blocks += [("h3", short(r["name"])), ("p", f"(artifacts in {folder.name} unreadable: {exc!r})")]
    if rows and counts["passed"] == len(rows):
        blocks += [("p", "All tests passed. Suggested trailer:"),
                   ("pre", f"Tested-by: {_git_identity()}")]
    return blocks


# --- timeline plot -------------------------------------------------------------------------
def timeline_caption(swap: HotSwap) -> str:
    host = ", ".join(f"{label} +{ms:.0f}" for ms, label in swap.host_ms())
    guest = ", ".join(f"{label} +{ms:.0f}" for ms, label in swap.guest_ms()[1:])
    return f"host (ms after first command): {host}. guest (ms after mark): {guest}."


def timeline_png(swap: HotSwap, title: str) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One row per event (host commands above, guest lines below) so events a millisecond apart stay legible.
    rows = [(ms, f"host: {label}", "tab:blue") for ms, label in swap.host_ms()]
    rows += [(ms, f"guest: {label}", "tab:red") for ms, label in swap.guest_ms()]
    fig, ax = plt.subplots(figsize=(10, 0.8 + 0.28 * len(rows)), dpi=100)
    for y, (ms, label, color) in enumerate(reversed(rows)):
        ax.hlines(y, 0, ms, color=color, alpha=0.35)
        ax.plot([ms], [y], "o", color=color, markersize=5)
        ax.annotate(f"{ms:.0f} ms", (ms, y), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [label for _, label, _ in reversed(rows)], fontsize=8)
    ax.axhline(len(rows) - len(swap.host_ms()) - 0.5, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlim(right=max(ms for ms, _, _ in rows) * 1.12 + 10)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("ms (host: after the first command; guest: after the mark; separate clocks)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# --- rendering -----------------------------------------------------------------------------
def to_markdown(blocks: list[tuple]) -> str:
    out: list[str] = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + rest[0], ""]
        elif kind == "p":
            out += [rest[0], ""]
        elif kind == "ul":  # an item is a text, or (text, [subitems])
            for item in rest[0]:
                text, sub = (item, []) if isinstance(item, str) else item
                out += [f"- {text}"] + [f"  - {x}" for x in sub]
            out.append("")
        elif kind == "table":
            header, rows = rest
            out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows] + [""]
        elif kind == "pre":
            out += ["```", rest[0], "```", ""]
    return "\n".join(out).rstrip() + "\n"


def _inline(text: str) -> str:
    """Markdown `code` spans to <code>, everything escaped."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def to_html(blocks: list[tuple], title: str) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
           "body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;font-size:14px}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
           "pre{background:#f4f4f4;padding:6px;white-space:pre-wrap;font-size:12px}img{max-width:100%}"
           ".passed{color:#070}.failed,.error{color:#b00}.skipped{color:#a60}"
           "figcaption{font-size:12px;color:#444}</style></head><body>"]
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{_inline(rest[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(rest[0])}</p>")
        elif kind == "ul":
            items = [(i, []) if isinstance(i, str) else i for i in rest[0]]
            out.append("<ul>" + "".join(f"<li>{_inline(t)}" + ("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in sub)
                                         + "</ul>" if sub else "") + "</li>" for t, sub in items) + "</ul>")
        elif kind == "table":
            header, rows = rest
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td class='{html.escape(str(c))}'>{html.escape(str(c))}</td>" for c in row)
                + "</tr>" for row in rows) + "</table>")
        elif kind == "pre":
            out.append(f"<pre>{html.escape(rest[0])}</pre>")
        elif kind == "img":
            png, caption = rest
            out.append(f"<figure><img alt='timeline' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return "\n".join(out) + "\n</body></html>\n"


def write_reports(run: Path) -> list[Path]:
    md, page = run / "EVIDENCE.md", run / "EVIDENCE.html"
    md.write_text(to_markdown(report_blocks(run)))
    try:
        blocks = report_blocks(run, with_plots=True)
    except ImportError as exc:  # matplotlib missing: the HTML still has everything but the plots
        blocks = report_blocks(run) + [("p", f"(no timelines: {exc})")]
    page.write_text(to_html(blocks, f"NVMe hot-swap acceptance: {run.name}"))
    return [md, page]


def main(argv: list[str]) -> int:
    run = Path(argv[1]) if len(argv) > 1 else config.current().results_root / "latest"
    if not run.exists():
        print(f"no results at {run}: run `make check-acceptance` first", file=sys.stderr)
        return 1
    for path in write_reports(run.resolve()):
        print(f"evidence: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
