"""The timeline of one hot-swap as a PNG (matplotlib), and its caption; only the HTML report has them.

matplotlib is imported on the first plot, not with this module: without it the Markdown, and the
HTML without its plots, are still written (render.to_html catches the ImportError).
"""
from __future__ import annotations

import io

from .model import Timeline

TIMELINE_NOTE = ("Two clocks, not aligned: the host lane is milliseconds after the sequence's first monitor "
                 "command (QEMU-relative monotonic time in vm-monitor.log); the guest lane is milliseconds "
                 "after the mark the test wrote to /dev/kmsg just before that command (guest printk time). "
                 "The mark precedes the command by about one SSH round trip, so compare across lanes only "
                 "to within a few tens of ms. 'I/O resumes' is the kernel's 'device recovery successful' "
                 "(queues restarted); the test's next read over SSH is not timestamped.")


def timeline_caption(timeline: Timeline) -> str:
    """The plot's numbers as text, for a reader without images and for copying."""
    host = ", ".join(f"{label} +{ms:.0f}" for ms, label in timeline.host)
    guest = ", ".join(f"{label} +{ms:.0f}" for ms, label in timeline.guest[1:])
    return f"host (ms after first command): {host}. guest (ms after mark): {guest}."


def timeline_png(timeline: Timeline) -> bytes:
    """Raises ImportError without matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One row per event (host commands above, guest lines below) so events a millisecond apart stay legible.
    rows = [(ms, f"host: {label}", "tab:blue") for ms, label in timeline.host]
    rows += [(ms, f"guest: {label}", "tab:red") for ms, label in timeline.guest]
    fig, ax = plt.subplots(figsize=(10, 0.8 + 0.28 * len(rows)), dpi=100)
    for y, (ms, _, color) in enumerate(reversed(rows)):
        ax.hlines(y, 0, ms, color=color, alpha=0.35)
        ax.plot([ms], [y], "o", color=color, markersize=5)
        ax.annotate(f"{ms:.0f} ms", (ms, y), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [label for _, label, _ in reversed(rows)], fontsize=8)
    ax.axhline(len(rows) - len(timeline.host) - 0.5, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlim(right=max(ms for ms, _, _ in rows) * 1.12 + 10)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("ms (host: after the first command; guest: after the mark; separate clocks)", fontsize=8)
    ax.set_title(timeline.title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
