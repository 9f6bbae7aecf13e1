"""EVIDENCE.md and EVIDENCE.html for a run: what was tested, on what, and what happened.

Reads a run folder (results/latest by default): junit.xml, environment.json and the per-test
artifacts (vm-monitor.log, guest-dmesg.log, renaming.txt, observed.txt). The Markdown is meant
to be pasted into a reply on the list; the HTML adds a timeline per hot-swap.

parse.py reads the artifacts, model.py builds the Report from them, plot.py draws the timelines,
render.py renders the Report through templates/*.j2 and writes both files; `python -m
nvme_hotswap.report.evidence [run_folder]` (__main__.py) is what the Makefile calls.
"""
from .render import write_reports

__all__ = ["write_reports"]
