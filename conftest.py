"""pytest glue for the Avocado-style suite.

- `:avocado: tags=` docstring tags become markers (select with `-m nvme`, `-m needs_drive_insert`),
  registered before collection, so a typo in `-m` gets pytest's own message on xdist too.
- A run that includes tests/acceptance starts with the preflight (nvme_hotswap/preflight.py): a wrong
  QEMU, guest, results folder or ACCEL stops it at once with one message and exit status 2.
- avocado's `self.cancel(reason)` becomes a pytest skip with that reason.
- A test marked `@known_defect(...)` (nvme_hotswap/known_defects.py) that fails as its finding says on
  the release the marker names reads as "known upstream defect (docs/findings/...)" (xfail); one that
  passes there fails the run until the marker goes.
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

from nvme_hotswap import config as run_config
from nvme_hotswap import known_defects, preflight, tags
from nvme_hotswap.config import ROOT, ConfigError
from nvme_hotswap.programs.proc import sigterm_as_interrupt
from nvme_hotswap.report import results, tap
from nvme_hotswap.vm import capabilities, machine

ACCEPTANCE = ROOT / "tests" / "acceptance"


def pytest_configure(config: pytest.Config) -> None:
    sigterm_as_interrupt(signal.SIGHUP)
    for path in sorted((ROOT / "tests").rglob("*.py")):   # every test file's tags, before collection
        for tag in tags.from_docstring(path.read_text()):
            config.addinivalue_line("markers", f"{tags.marker_name(tag)}: avocado tag {tag}")
    if getattr(config, "workerinput", None) is None and not config.option.collectonly:
        if _runs_acceptance(config):
            try:
                preflight.require()
            except ConfigError as exc:
                pytest.exit(f"preflight: {exc}", returncode=2)
        run = results.run_dir()
        if not config.option.xmlpath:
            config.option.xmlpath = str(run / "junit.xml")
        if not config.option.basetemp:
            # pytest's (and xdist's) own temporary folders go into the results, not /tmp.
            config.option.basetemp = str(run / "pytest-tmp")
        config.pluginmanager.register(tap.TapWriter(run / "results.tap"), "nvme_hotswap_tap")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Check `-m` here, before xdist starts its workers: they check it during their collection, where
    pytest's UsageError becomes an INTERNALERROR traceback. The check is pytest's own (pinned 9.2.0)."""
    config = session.config
    if config.option.markexpr and getattr(config, "workerinput", None) is None:
        from _pytest.mark import _parse_expression, _validate_marker_names
        _validate_marker_names(_parse_expression(config.option.markexpr, "Wrong expression passed to '-m'"), config)


def _runs_acceptance(config: pytest.Config) -> bool:
    """Whether the paths asked for (or testpaths) include tests/acceptance or a test in it."""
    asked = config.args or config.getini("testpaths")
    for arg in asked:
        path = (config.invocation_params.dir / str(arg).split("::", 1)[0]).resolve()
        if path == ACCEPTANCE or ACCEPTANCE in path.parents or path in ACCEPTANCE.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is None:
            continue
        for tag in tags.of_test(cls, item.name):
            name = tags.marker_name(tag)
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
    defects = known_defects.of(getattr(item, "obj", None))
    if defects and call.when == "call" and report.outcome in ("passed", "failed"):
        # the exception's own words, not pytest's listing (which quotes the source, the marker's regex too)
        failure = call.excinfo.exconly() if call.excinfo is not None else ""
        verdict = known_defects.judge(defects, _package_under_test(), report.outcome, failure)
        if verdict is not None and verdict.outcome == "known":
            report.outcome = "skipped"          # pytest's xfail: junit <skipped type="pytest.xfail">
            report.wasxfail = verdict.message
        elif verdict is not None:
            report.outcome = "failed"
            report.longrepr = f"{report.longrepr}\n\n{verdict.message}" if report.longrepr else verdict.message


def _package_under_test() -> str:
    """What the QEMU under test says it is (query-version's package): known-defect markers name it.
    The probe is cached per process: a test that ran has made it already."""
    cfg = run_config.current()
    return capabilities.of_qemu_under_test(cfg, results.worker_folder("capability-probe")).package


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
