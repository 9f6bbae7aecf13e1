"""SuiteTest: what every acceptance test has, whatever it drives (a guest, or the device over qtest).

An avocado.Test that runs under pytest too: its artifacts folder and test.log, the cancel when the
run cannot serve it (its `arch:` tags, then its `needs:` capabilities, probed once), the check that
its `needs:` tags are what it used at the monitor, and the rule that a test reads once: tear-down
fails a test that passed on what it finds, and only logs it beside a failure the test already
reported. HotswapTest (testcase.py) boots a guest on it; DeviceTest (device/testcase.py) is the
NVMe host itself.
"""
from __future__ import annotations

import functools
import logging
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any

import avocado
from avocado.core.exceptions import TestCancel

from . import arch, config, tags
from .report import results
from .vm import capabilities

LOGGERS = ("avocado.test", "nvme_hotswap")


class SuiteTest(avocado.Test):  # type: ignore[misc]  # avocado ships no type information
    """Subclasses implement _set_up() (after the artifacts and the cancel check) and _release()."""

    #: what the run must be for the test's `arch:` tags to match, in the cancel's words
    arch_role = "guest"

    def __init__(self, methodName: str = "test", name: Any = None, params: Any = None,
                 base_logdir: str | None = None, config: Any = None, tags: Any = None) -> None:
        # Under avocado the runner gives each test its log folder; under pytest (base_logdir None)
        # the artifacts go to this run's results folder, made in setUp: pytest also instantiates
        # test classes while collecting, which must not create folders.
        self._under_avocado_runner = base_logdir is not None
        self._log_handler: logging.Handler | None = None
        self._test_failure: BaseException | None = None   # what the test method raised (not a cancel)
        super().__init__(methodName, name=name, params=params, base_logdir=base_logdir,
                         config=config, tags=tags)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every test method records its own failure (tear-down reports each test once), under
        pytest and avocado alike: neither runner tells tearDown how the method ended."""
        super().__init_subclass__(**kwargs)
        for name, func in list(vars(cls).items()):
            if name.startswith("test") and callable(func) and not hasattr(func, "__wrapped__"):
                setattr(cls, name, _recording_failure(func))

    # --- setup / teardown ------------------------------------------------------------------
    def setUp(self) -> None:
        try:
            self.cfg = config.current()
            self.check_environment()
            self._open_artifacts()
            reason = self.cancel_reason()
            if reason:
                self.cancel(reason)
            self._set_up()
        except BaseException:
            # unittest (pytest) skips tearDown when setUp fails or cancels; avocado calls it anyway.
            if not self._under_avocado_runner:
                self._release()
                self._detach_log()
            raise

    def check_environment(self) -> None:
        """The preflight checks this test needs (once per process); stops the run if they fail."""

    def _set_up(self) -> None:
        """What the test starts (QEMU, a guest); the artifacts folder and self.caps exist."""

    def _release(self) -> None:
        """End what _set_up started, by PID; safe to call twice and after a partial set-up."""

    def tear_down_problems(self) -> list[str]:
        """End what the test started (by PID, through _release) and say what was wrong with it."""
        self._release()
        return []

    def _open_artifacts(self) -> None:
        self.artifacts = (Path(self.logdir) if self._under_avocado_runner else
                          results.test_dir(f"{type(self).__module__}.{type(self).__name__}.{self._testMethodName}"))
        self._log_handler = logging.FileHandler(self.artifacts / "test.log")
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        for name in LOGGERS:
            logging.getLogger(name).addHandler(self._log_handler)
            logging.getLogger(name).setLevel(logging.DEBUG)

    def _detach_log(self) -> None:
        if self._log_handler is not None:
            for name in LOGGERS:
                logging.getLogger(name).removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def cancel_reason(self) -> str | None:
        """Why this run cannot serve the test, checked before anything starts: its `arch:` tags,
        then its `needs:` capabilities (so a QEMU without the series reads "QEMU lacks ..."),
        then the test's own precondition()."""
        test_tags = tags.of_test(type(self), self._testMethodName)
        arches = arch.tagged_arches(test_tags)
        if arches and self.cfg.arch.name not in arches:
            return (f"test runs on {', '.join(arches)} (arch: tags); this run's {self.arch_role} is "
                    f"{self.cfg.arch.name} (GUEST_ARCH)")
        self.caps = capabilities.of_qemu_under_test(self.cfg, results.worker_folder("capability-probe"))
        for need in tags.needs(test_tags):
            reason = self.caps.missing(need)
            if reason:
                return reason
        return self.precondition()

    def precondition(self) -> str | None:
        """Why this test cannot run here beyond its tags, or None. Nothing has started yet."""
        return None

    def needs_problems(self, issued: list[tuple[str, str, str]], passed: bool) -> list[str]:
        """A test's `needs:` tags must be exactly what it used at the monitor (`issued`): one lacking
        a tag fails instead of cancelling on a QEMU without that part of the series; one with a tag
        it did not use cancels for nothing (upstream 11.1 has namespace hotplug only). The second
        is judged only when the test itself `passed` (a failed one may not have got to use it)."""
        declared = set(tags.needs(tags.of_test(type(self), self._testMethodName)))
        undeclared, unused = capabilities.tag_mismatch(declared, capabilities.used(issued))
        out = [f"the test used {need} without a needs:{need} tag: on a QEMU without it, it would fail instead of "
               f"cancelling; add the tag" for need in sorted(undeclared)]
        out += [f"the test is tagged needs:{need} but never used it at the monitor: on a QEMU without it, it "
                f"cancels for nothing; drop the tag" for need in sorted(unused) if passed]
        return out

    def tearDown(self) -> None:
        """Fail a test that passed on what tear_down_problems() finds; beside a failure the test
        reported already, only log it (one report per test). The test's log is detached last."""
        try:
            problems = self.tear_down_problems()
            if problems and self._test_failure is not None:
                for problem in problems:
                    self.log.error("after the test's failure, tear-down also found: %s", problem)
            elif problems:
                self.fail("\n".join(problems))
        finally:
            self._detach_log()

    # --- what every test may use -------------------------------------------------------------
    def observe(self, text: str) -> None:
        """Record a measured fact for the evidence (observed.txt) and the log."""
        self.log.info("observed: %s", text)
        with (self.artifacts / "observed.txt").open("a") as f:
            f.write(text.rstrip("\n") + "\n")


def _recording_failure(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` (a test method) noting what it raised on the test, a cancel or skip aside."""
    @functools.wraps(func)   # keeps the docstring (tags) and attributes (known-defect markers)
    def run(self: SuiteTest, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(self, *args, **kwargs)
        except (TestCancel, unittest.SkipTest):
            raise
        except BaseException as exc:
            self._test_failure = exc
            raise
    return run
