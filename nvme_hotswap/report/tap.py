"""TAP (version 13) of a pytest run, for CI systems that read TAP rather than JUnit.

pytest-tap 3.5 (its latest release) cannot load under pytest 9.2 (two of its options share a
`dest`, which pytest now rejects), so this small plugin writes the same thing: one line per
test, `ok`/`not ok`, cancels as `# SKIP <reason>`, known upstream defects as `# TODO <finding>`,
the failure's first line as a YAML block.
"""
from __future__ import annotations

from pathlib import Path

import pytest


class TapWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    @pytest.hookimpl(trylast=True)  # after conftest turned a cancel into a skip
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not (report.when == "call" or (report.when == "setup" and not report.passed)
                or (report.when == "teardown" and report.failed)):
            return
        n = len(self.lines) + 1
        name = report.nodeid.replace("#", "\\#")
        if report.skipped and hasattr(report, "wasxfail"):   # a known upstream defect: TAP's TODO
            self.lines.append(f"not ok {n} {name} # TODO {report.wasxfail}")
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else "skipped"
            self.lines.append(f"ok {n} {name} # SKIP {reason.removeprefix('Skipped: ')}")
        elif report.passed:
            self.lines.append(f"ok {n} {name}")
        else:
            crash = getattr(report.longrepr, "reprcrash", None)
            text = crash.message if crash is not None else report.longreprtext.strip()
            first = (text.splitlines() or [""])[0][:300].replace("'", "''")
            self.lines.append(f"not ok {n} {name}\n  ---\n  message: '{first}'\n  when: {report.when}\n  ...")

    def pytest_sessionfinish(self) -> None:
        self.path.write_text("TAP version 13\n" + "".join(line + "\n" for line in self.lines)
                             + f"1..{len(self.lines)}\n")
