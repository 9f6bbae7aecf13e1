"""pytest glue for the Avocado-style suite.

- `:avocado: tags=` docstring tags become markers (select with `-m nvme`, `-m needs_drive_insert`).
- avocado's `self.cancel(reason)` becomes a pytest skip with that reason.
- Every run writes results/<UTC timestamp>/ (JUnit XML and TAP there by default) and results/latest.
- SIGTERM ends the run like Ctrl-C, so every test's teardown ends its QEMU by PID; any QEMU
  still alive at the end is killed by PID and fails the run.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Generator

import pluggy
import pytest
from avocado.core.exceptions import TestCancel

from nvme_hotswap import tags
from nvme_hotswap.programs.proc import sigterm_as_interrupt
from nvme_hotswap.report import results, tap
from nvme_hotswap.vm import machine


def pytest_configure(config: pytest.Config) -> None:
    sigterm_as_interrupt(signal.SIGHUP)
    if getattr(config, "workerinput", None) is None and not config.option.collectonly:
        run = results.run_dir()
        if not config.option.xmlpath:
            config.option.xmlpath = str(run / "junit.xml")
        if not config.option.basetemp:
            # pytest's (and xdist's) own temporary folders go into the results, not /tmp.
            config.option.basetemp = str(run / "pytest-tmp")
        config.pluginmanager.register(tap.TapWriter(run / "results.tap"), "nvme_hotswap_tap")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is None:
            continue
        for tag in tags.of_test(cls, item.name):
            name = tags.marker_name(tag)
            config.addinivalue_line("markers", f"{name}: avocado tag {tag}")
            item.add_marker(getattr(pytest.mark, name))
            item.add_marker(pytest.mark.avocado_tag(tag))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(TestCancel):
        reason = str(call.excinfo.value) or "cancelled without a reason"
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"CANCEL: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    strays = machine.end_strays()
    if strays and exitstatus != pytest.ExitCode.INTERRUPTED:
        # Only an interrupted test may skip its teardown; otherwise a survivor is a harness bug.
        session.config.stash[_strays_key] = strays
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_strays_key = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    strays = config.stash.get(_strays_key, [])
    if strays:
        terminalreporter.write_line("QEMU processes outlived their test and were killed by PID "
                                    "(a harness bug):", red=True)
        for s in strays:
            terminalreporter.write_line(f"  {s}", red=True)
    if results.RUN_DIR_ENV in os.environ:
        terminalreporter.write_line(f"results: {results.run_dir()} (also results/latest)")
