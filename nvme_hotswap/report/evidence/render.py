"""A Report (model.py) as Markdown and as HTML, through the Jinja2 templates in templates/.

write_reports(run) writes <run>/EVIDENCE.md, meant to be pasted into a reply on the list, and
<run>/EVIDENCE.html, which adds a timeline plot per hot-swap (plot.py) as an inline PNG.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import re
from pathlib import Path

import jinja2
from markupsafe import Markup

from . import model, plot


@dataclasses.dataclass(frozen=True)
class Figure:
    """A timeline as the page embeds it: an inline PNG (no file beside the page to lose) and its caption."""
    png_base64: str
    caption: str


def transcript(scenario: model.Scenario) -> str:
    """The monitor commands at an HMP prompt, then the kernel lines: one console text, the same in both reports."""
    text = "\n".join(c if c.startswith("#") else f"(qemu) {c}" for c in scenario.commands)
    if scenario.kernel_log:
        text += "\n\n# guest kernel log\n" + "\n".join(str(line) for line in scenario.kernel_log)
    return text


def _html_escape(value: object) -> object:
    """Every {{ value }} of the HTML template, escaped as html.escape does (&#x27;, not markupsafe's &#39;).

    Jinja2 calls this before its autoescape, which leaves the Markup returned here alone: the page stays
    byte-identical to the one written before the templates, and values already Markup are not escaped twice."""
    return value if hasattr(value, "__html__") else Markup(html.escape(str(value)))


def _inline(text: str) -> Markup:
    """Markdown `code` spans to <code>, everything escaped."""
    return Markup(re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text)))


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader(__package__ or __name__, "templates"),
                             autoescape=autoescape, finalize=_html_escape if autoescape else None,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["transcript"] = transcript
    env.filters["inline"] = _inline
    return env


_MARKDOWN = _environment(autoescape=False)
_HTML = _environment(autoescape=True)


def to_markdown(report: model.Report) -> str:
    """The text for the list: no plots, nothing escaped (Markdown readers show it as typed)."""
    return _MARKDOWN.get_template("evidence.md.j2").render(report=report)


def _figures(report: model.Report) -> dict[model.Timeline, Figure]:
    """Raises ImportError without matplotlib (only if there is a timeline to draw)."""
    return {t: Figure(base64.b64encode(plot.timeline_png(t)).decode(), plot.timeline_caption(t))
            for s in report.scenarios for t in s.timelines}


def to_html(report: model.Report, plots: bool = True) -> str:
    """The page, with a plot per hot-swap if `plots` and matplotlib is there; else it says why there is none."""
    figures: dict[model.Timeline, Figure] | None = None
    no_plots = ""
    if plots:
        try:
            figures = _figures(report)
        except ImportError as exc:
            no_plots = f"(no timelines: {exc})"
    return _HTML.get_template("evidence.html.j2").render(report=report, figures=figures, no_plots=no_plots,
                                                         timeline_note=plot.TIMELINE_NOTE)


def write_reports(run: Path) -> list[Path]:
    """EVIDENCE.md and EVIDENCE.html in the run folder, from one reading of it."""
    report = model.build(run)
    md, page = run / "EVIDENCE.md", run / "EVIDENCE.html"
    md.write_text(to_markdown(report))
    page.write_text(to_html(report))
    return [md, page]
