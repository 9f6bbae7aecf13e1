"""The reply a reviewer sends to the list: plain text, bottom-posted, lines of at most 72 columns.

REVIEW.md is the body (what to paste under the quoted cover); REVIEW.eml the whole draft, with
`Re:` subject and In-Reply-To/References, for `git send-email` or a mail client to open. The
draft is the reviewer's to send: the trailer names them (git config), never the tool.
"""
from __future__ import annotations

import dataclasses
import email.policy
import email.utils
import textwrap
from email.message import EmailMessage

from .series import Patch, Series

WIDTH = 72


@dataclasses.dataclass(frozen=True)
class PatchStep:
    patch: Patch
    status: str          # applied, skipped (already in the base), does not apply, does not build
    detail: str          # git's reason, the build error, "already in the base"
    checkpatch: str      # "total: 0 errors, 1 warnings, 80 lines checked" or ""
    enables: str         # what the probe found new after this patch ("nvme-ns hotplug"), or ""
    device: str = ""     # the device-level tests on this prefix ("8 passed", "6 passed, 2 FAILED: ..."), or ""


@dataclasses.dataclass(frozen=True)
class Row:
    test: str            # Class.test
    base: str            # what happened on the base, one phrase
    series: str          # and with the series


@dataclasses.dataclass(frozen=True)
class Failure:
    test: str
    message: str
    first_bad: Patch | None       # from the bisection over the prefixes; None: not bisected
    log_excerpt: tuple[str, ...]  # the guest kernel log lines around the failure


@dataclasses.dataclass(frozen=True)
class Review:
    series: Series
    base: str                     # what the base was, and why ("Debian qemu 1:10.2.2+ds-1 (the suite's default)")
    environment: tuple[str, ...]
    steps: tuple[PatchStep, ...]
    rows: tuple[Row, ...]
    kernel_log: tuple[str, ...]   # proof lines of one passing hot-swap scenario
    cancels: tuple[str, ...]      # "Class.test: reason" of the series run
    failures: tuple[Failure, ...]
    tested_by: str | None         # "Tested-by: Name <email>" when the trailer is earned
    reproduce: tuple[str, ...]
    seconds: float
    functional: tuple[str, ...] = ()   # the series' own functional tests: check-series' lines ("func-... ok ...")


def wrap(text: str, indent: str = "", later: str | None = None) -> list[str]:
    """`text` wrapped at WIDTH; long tokens (paths, log lines) are broken rather than overflowing."""
    out = textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=later if later is not None else indent,
                        break_long_words=True, break_on_hyphens=False)
    return out or [indent.rstrip()]


def command(text: str, indent: str = "  ") -> list[str]:
    """A shell command in lines of at most WIDTH, continued with backslashes; a word longer than a
    line (a path) stays whole, so the command still pastes."""
    lines: list[str] = []
    current = indent
    for word in text.split(" "):
        if current.strip() and len(current) + 1 + len(word) + 2 > WIDTH:
            lines.append(current + " \\")
            current = indent + "    " + word
        else:
            current = (current + " " + word) if current.strip() else current + word
    return lines + [current]


def functional_untested(line: str) -> bool:
    """A check-series line that says the test could not be run here (a skip for a missing asset or
    capability, QEMU's test venv, the work tree), which is no verdict on the series."""
    return line.startswith("not run") or "skipped:" in line or "check-venv" in line


def functional_failed(r: Review) -> bool:
    """A functional test of the series ran and failed (check-series' FAIL)."""
    return any(" FAIL " in f" {line} " and not functional_untested(line) for line in r.functional)


def body(r: Review) -> str:
    s = r.series
    lines: list[str] = []
    problem = (bool(r.failures) or any(st.status not in ("applied", "skipped") for st in r.steps)
               or functional_failed(r))
    lines += wrap("I ran the nvme-hotswap-acceptance suite (a Linux guest in the patched QEMU, checked over SSH) "
                  "on this series, on its base and after every patch.")
    lines.append("")
    lines += wrap(f"Base: {r.base}; tested with "
                  f"{sum(st.status == 'applied' for st in r.steps)} of {s.total} patches applied on it.")
    for e in r.environment:
        lines += wrap(e, "  ", "    ")
    lines += ["", "Patch by patch:"]
    for st in r.steps:
        lines += wrap(f"{s.label(st.patch)} {st.patch.subject}", "  ", "      ")
        what = [st.status if st.status != "applied" else "builds"]
        what += [st.detail] if st.detail else []
        what += [f"checkpatch {st.checkpatch.removeprefix('total: ')}"] if st.checkpatch else []
        what += [f"enables {st.enables}"] if st.enables else []
        what += [f"device-level tests: {st.device}"] if st.device else []
        lines += wrap("; ".join(what), "      ")
    if problem:
        lines += [""]
        for f in r.failures:
            where = f"from {s.label(f.first_bad)} on" if f.first_bad else "(not bisected)"
            lines += wrap(f"Found a problem: {f.test} fails {where}:", "", "  ")
            lines += wrap(f.message[:400], "  ", "  ")
            for line in f.log_excerpt:
                lines += wrap(line, "    ", "      ")
        for st in r.steps:
            if st.status not in ("applied", "skipped"):
                lines += wrap(f"Found a problem: {s.label(st.patch)} {st.status}: {st.detail}", "", "  ")
    lines += ["", "Before (base) and after (series), per scenario:"]
    for row in r.rows:
        lines += wrap(row.test, "  ")
        lines += wrap(f"base:   {row.base}", "    ", "            ")
        lines += wrap(f"series: {row.series}", "    ", "            ")
    if r.functional:
        lines += ["", "The series' own functional tests (tests/functional, QEMU's meson test, offline):"]
        for line in r.functional:
            lines += wrap(line, "  ", "    ")
    if r.kernel_log:
        lines += ["", "Guest kernel log of one hot-swap with the series:"]
        for line in r.kernel_log:
            lines += wrap(line, "  ", "                  ")
    if r.cancels:
        lines += ["", "Not run with the series (cancelled, with the reason):"]
        for c in r.cancels:
            lines += wrap(c, "  ", "    ")
    if problem:
        lines += ["", "To reproduce:"]
        for c in r.reproduce:
            lines += command(c) if c.startswith(("make ", "QEMU=")) else wrap(c, "  ", "    ")
    lines += ["", f"(review took {r.seconds / 60:.1f} minutes)"]
    if r.tested_by and not problem:
        lines += ["", r.tested_by]
    return "\n".join(lines) + "\n"


def quote(text: str, limit: int = 8) -> list[str]:
    """The first lines of what we answer, quoted (bottom-posting: our text goes below)."""
    kept = [ln for ln in text.strip().splitlines()[:limit]]
    return [f"> {ln}".rstrip() for ln in kept] + ([">", "> [...]"] if len(text.strip().splitlines()) > limit else [])


def message(r: Review, sender: str, quoted: str) -> EmailMessage:
    """The whole draft: to the thread of the cover letter, or of the first bad patch on a failure."""
    s = r.series
    bad = next((f.first_bad for f in r.failures if f.first_bad is not None), None)
    if bad is not None:
        subject, parent = f"[PATCH v{s.version} {s.label(bad)}] {bad.subject}", bad.message_id
    else:
        subject, parent = s.subject, s.cover_message_id or s.patches[0].message_id
    msg = EmailMessage(policy=email.policy.default.clone(max_line_length=998))
    msg["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    msg["From"] = sender
    msg["Date"] = email.utils.formatdate(localtime=False)
    if parent:
        msg["In-Reply-To"] = parent
        msg["References"] = " ".join(dict.fromkeys(x for x in (s.cover_message_id, parent) if x))
    text = "\n".join(quote(quoted)) + "\n\n" + body(r)
    msg.set_content(text, cte="8bit")
    return msg
