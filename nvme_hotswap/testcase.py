"""HotswapTest: the base class of the acceptance tests (avocado.Test, runs under pytest too).

It carries the test's lifecycle so a test carries only its intent: cancel when this run cannot
serve the test (architecture, a `needs:` capability, the guest flavour), boot the topology on the
probed accelerator through a Rig (the hot-swap layer: `self.rig`), and after every test fail it on
what a reviewer would not accept even if the test's own assertions passed: a kernel bug report in
the guest log (blktests' habit), block nodes or open fds that QEMU did not give back once what the
test plugged and left is unplugged (each plug registers its unplug: a failure reads once), and a QEMU
that died or did not end cleanly at quit (an assertion in bdrv_close_all, say). The VM is always
ended by PID, whatever happened. The `assert_*` verbs are what tests conclude.
"""
from __future__ import annotations

import functools
import json
import logging
import shutil
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any

import avocado
from avocado.core.exceptions import TestCancel

from . import arch, config, preflight, tags
from .guest import klog
from .guest.ssh import Guest
from .hotswap.rig import Names, Rig
from .report import environment, results
from .vm import accel, capabilities
from .vm.machine import QemuExited, QemuMachine, Resources, describe_status
from .vm.topology import Topology
from .wait import WaitTimeout, wait_until

LOGGERS = ("avocado.test", "nvme_hotswap")
SETTLE_S = 3.0   # how long block nodes and fds may take to come back after a test (bottom halves, unrefs)


class HotswapTest(avocado.Test):  # type: ignore[misc]  # avocado ships no type information
    """Boots `controllers` NVMe controllers behind root ports; subclasses state the intent.

    Class attributes a test may override: controllers, namespaces_per_controller, subsys (an
    nvme-subsys per controller), shared_subsys (controllers sharing one), native_pcie_hotplug,
    extra_kernel_args.
    """

    timeout = 600
    controllers = 3
    namespaces_per_controller = 1
    subsys = False
    shared_subsys: tuple[int, ...] = ()
    native_pcie_hotplug = True
    extra_kernel_args = ""

    def __init__(self, methodName: str = "test", name: Any = None, params: Any = None,
                 base_logdir: str | None = None, config: Any = None, tags: Any = None) -> None:
        # Under avocado the runner gives each test its log folder; under pytest (base_logdir None)
        # the artifacts go to this run's results folder, made in setUp: pytest also instantiates
        # test classes while collecting, which must not create folders.
        self._under_avocado_runner = base_logdir is not None
        self._rig: Rig | None = None
        self._log_handler: logging.Handler | None = None
        self._baseline: Resources | None = None
        self._growth = (0, 0, "")      # block nodes and fds a test may keep, and why
        self._exit_problem: str | None = None
        self._test_failure: BaseException | None = None   # what the test method raised (not a cancel)
        super().__init__(methodName, name=name, params=params, base_logdir=base_logdir,
                         config=config, tags=tags)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every test method records its own failure (tearDown reports each cause once), under
        pytest and avocado alike: neither runner tells tearDown how the method ended."""
        super().__init_subclass__(**kwargs)
        for name, func in list(vars(cls).items()):
            if name.startswith("test") and callable(func) and not hasattr(func, "__wrapped__"):
                setattr(cls, name, _recording_failure(func))

    # --- what a test uses ------------------------------------------------------------------
    @property
    def rig(self) -> Rig:
        """The booted guest on its topology, with the hot-swap verbs."""
        if self._rig is None:
            raise RuntimeError("no guest booted: the test is in set-up or was cancelled")
        return self._rig

    @property
    def vm(self) -> QemuMachine:
        return self.rig.vm

    @property
    def guest(self) -> Guest:
        return self.rig.guest

    @property
    def topology(self) -> Topology:
        return self.rig.topology

    # --- setup / teardown ------------------------------------------------------------------
    def setUp(self) -> None:
        try:
            self._set_up()
        except BaseException:
            # unittest (pytest) skips tearDown when setUp fails or cancels; avocado calls it anyway.
            if not self._under_avocado_runner:
                self._release()
            raise

    def _set_up(self) -> None:
        self.cfg = config.current()
        preflight.require(self.cfg)   # once per process; under pytest conftest.py has run it already
        self.artifacts = (Path(self.logdir) if self._under_avocado_runner else
                          results.test_dir(f"{type(self).__module__}.{type(self).__name__}.{self._testMethodName}"))
        self._log_handler = logging.FileHandler(self.artifacts / "test.log")
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        for name in LOGGERS:
            logging.getLogger(name).addHandler(self._log_handler)
            logging.getLogger(name).setLevel(logging.DEBUG)
        reason = self.cancel_reason()
        if reason:
            self.cancel(reason)
        self.accel = accel.choose(self.cfg)
        self.log.info("QEMU %s (%s); accelerator: %s", self.caps.version, self.caps.qemu, self.accel)
        environment.record(self.cfg, self.caps, self.accel)
        (self.artifacts / "accelerator.txt").write_text(f"{self.accel}\n")
        topology = Topology.create(self.artifacts / "disks", controllers=self.controllers,
                                   namespaces_per_controller=self.namespaces_per_controller, subsys=self.subsys,
                                   shared_subsys=self.shared_subsys)
        (self.artifacts / "topology.json").write_text(
            json.dumps(topology.as_dict(self.native_pcie_hotplug), indent=2) + "\n")
        self._rig = Rig.boot(self.cfg, self.accel, topology, self.artifacts, self.native_pcie_hotplug,
                             self.extra_kernel_args, self.extra_qemu_args())
        self.log.info("guest up over SSH %.2f s after QEMU started (%s)", self._rig.boot_seconds, self.accel.accel)
        (self.artifacts / "guest-names.json").write_text(json.dumps(self._rig.boot_names, indent=2) + "\n")
        self._baseline = self.vm.resources()

    def cancel_reason(self) -> str | None:
        """Why this run cannot serve the test, checked before anything boots: its `arch:` tags,
        then its `needs:` capabilities (so a QEMU without the series reads "QEMU lacks ..."),
        then the test's own guest_precondition()."""
        test_tags = tags.of_test(type(self), self._testMethodName)
        arches = arch.tagged_arches(test_tags)
        if arches and self.cfg.arch.name not in arches:
            return (f"test runs on {', '.join(arches)} (arch: tags); this run's guest is {self.cfg.arch.name} "
                    "(GUEST_ARCH)")
        self.caps = capabilities.of_qemu_under_test(self.cfg, results.worker_folder("capability-probe"))
        for need in tags.needs(test_tags):
            reason = self.caps.missing(need)
            if reason:
                return reason
        return self.guest_precondition()

    def tearDown(self) -> None:
        """What the test left: a kernel bug report, resources QEMU kept once the test's plugs are
        undone, a QEMU that died or did not quit cleanly. It fails a test that passed; a test that
        failed reads once (its own failure), what tear-down found beside it goes to its log."""
        problems: list[str] = []
        failure = self._test_failure
        try:
            if self._rig is not None:
                if not self.vm.is_running():
                    if not isinstance(failure, QemuExited):   # else the test's own failure named it
                        problems.append(f"QEMU exited during the test ({describe_status(self.vm.returncode)}): "
                                        f"{self.vm.stderr_tail()}")
                else:
                    try:
                        problems += self.guest_kernel_problems()
                    except Exception as exc:  # an unreachable guest is itself worth reporting
                        if failure is None:
                            problems.append(f"could not read the guest kernel log after the test: {exc!r}")
                        else:
                            self.log.warning("could not read the guest kernel log after the failed test: %r", exc)
                    self.undo_plugs()
                    problems += self.resource_problems()
                problems += self.needs_problems(passed=failure is None)
        finally:
            running = self._rig is not None and self.vm.is_running()
            self._release(keep_log=True)
        try:
            if running and self._exit_problem:
                problems.append(self._exit_problem)
            if problems and failure is not None:
                # the test has failed already: one report per test; what tear-down found goes in its log
                for problem in problems:
                    self.log.error("after the test's failure, tear-down also found: %s", problem)
            elif problems:
                self.fail("\n".join(problems))
        finally:
            self._detach_log()

    def needs_problems(self, passed: bool) -> list[str]:
        """A test's `needs:` tags must be exactly what it used at the monitor: one lacking a tag fails
        instead of cancelling on a QEMU without that part of the series; one with a tag it did not
        use cancels for nothing (upstream 11.1 has namespace hotplug only). The second is judged
        only when the test itself `passed` (a failed one may not have got to use it)."""
        declared = set(tags.needs(tags.of_test(type(self), self._testMethodName)))
        used = capabilities.used(self.vm.issued)
        out = [f"the test used {need} without a needs:{need} tag: on a QEMU without it, it would fail instead of "
               f"cancelling; add the tag" for need in sorted(used - declared)]
        out += [f"the test is tagged needs:{need} but never used it at the monitor: on a QEMU without it, it "
                f"cancels for nothing; drop the tag" for need in sorted(declared - used) if passed]
        return out

    def undo_plugs(self) -> None:
        """Unplug what the test plugged and left (a test that failed half-way): every plug registered
        its unplug when it succeeded (QemuMachine), so the failure reads once and the leak check
        that follows judges only what QEMU kept after a proper unplug. What could not be undone is
        logged; the leak check names what it left."""
        left = self.vm.plugged()
        if left:
            self.log.info("undoing what the test plugged and left: %s", "; ".join(left))
        for failure in self.vm.undo_plugs():
            self.log.warning("could not undo %s", failure)

    def allow_growth(self, nodes: int = 0, fds: int = 0, why: str = "") -> None:
        """Let this test end with `nodes` block nodes and `fds` open fds more than at boot (`why`:
        what the test leaves plugged on purpose)."""
        self._growth = (nodes, fds, why)

    def resource_problems(self) -> list[str]:
        """Block nodes or open fds above the boot baseline (plus allow_growth) once things settle."""
        base = self._baseline
        if base is None:
            return []
        nodes, fds, why = self._growth

        def settled() -> Resources | None:
            now = self.vm.resources()
            return now if len(now.nodes) <= len(base.nodes) + nodes and now.fds <= base.fds + fds else None

        try:
            wait_until(settled, SETTLE_S, "QEMU to give back its block nodes and fds")
            return []
        except WaitTimeout:
            now = self.vm.resources()
        allowed = f" (allowed: +{nodes} nodes, +{fds} fds: {why})" if nodes or fds else ""
        return [f"QEMU kept resources after the test{allowed}: block nodes {len(base.nodes)} -> {len(now.nodes)} "
                f"(not there at boot: {sorted(set(now.nodes) - set(base.nodes))}), open fds {base.fds} -> {now.fds}"]

    def _release(self, keep_log: bool = False) -> None:
        """End the VM by PID, drop the backing files, detach the log file (unless `keep_log`: the
        caller still writes to it and detaches it itself); safe to call twice."""
        if self._rig is not None:
            self._rig.close()
            self._exit_problem = self._rig.vm.exit_problem()
        if hasattr(self, "artifacts"):
            shutil.rmtree(self.artifacts / "disks", ignore_errors=True)
        if not keep_log:
            self._detach_log()

    def _detach_log(self) -> None:
        if self._log_handler is not None:
            for name in LOGGERS:
                logging.getLogger(name).removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def guest_kernel_problems(self) -> list[str]:
        """Save the guest kernel log as an artifact; return excerpts of any kernel bug reports."""
        lines = self.guest.klog()
        (self.artifacts / "guest-dmesg.log").write_text("\n".join(map(str, lines)) + "\n")
        return [f"guest kernel log reports trouble:\n{e}" for e in klog.trouble(lines)]

    def guest_precondition(self) -> str | None:
        """Why this test cannot run on the configured guest, or None. Nothing is booted yet."""
        return None

    def extra_qemu_args(self) -> list[str]:
        """Devices a test class adds to the topology (none by default)."""
        return []

    # --- what tests conclude ---------------------------------------------------------------
    def observe(self, text: str) -> None:
        """One line of what the test saw (observed.txt): the evidence report and make review's
        before/after list quote it."""
        with (self.artifacts / "observed.txt").open("a") as f:
            f.write(text.rstrip("\n") + "\n")

    def swap_drive(self, index: int, image: Path, fmt: str | None = None) -> str:
        """The cover letter's sequence (Rig.reconnect), asserting that guest I/O fails while the
        drive is pulled and that the guest's AER recovery went as it should. Returns the mark."""
        mark = self.rig.reconnect(index, image, while_pulled=self.assert_io_fails, fmt=fmt)
        self.assert_aer_recovery(mark, index)
        return mark

    def assert_io_fails(self, disk: str) -> None:
        """With the drive pulled, guest I/O fails promptly with an error; it does not hang."""
        self.assertEqual(self.guest.try_read(disk, seconds=10).status, "error",
                         f"a read of {disk} with its drive pulled did not fail promptly")

    def assert_aer_recovery(self, mark: str, index: int) -> None:
        """The guest logged the fatal error on the port, reset the controller and recovered."""
        c = self.rig.ctrl(index)
        self.rig.wait_for_recovery(index, mark)
        lines = self.guest.klog_since(mark)
        ctrl = self.rig.ctrl_name(index)
        for template, names in [(klog.AER_FATAL_RECEIVED, {"port": c.port_pci_address}), (klog.AER_SDES, {}),
                                (klog.NVME_FROZEN, {"ctrl": ctrl}), (klog.NVME_SLOT_RESET, {"ctrl": ctrl})]:
            self.assertTrue(klog.find(lines, template, **names),
                            f"no /{klog.pattern(template, **names).pattern}/ in the guest log after the injection")
        self.assertFalse(klog.find(lines, klog.RECOVERY_FAILED, port=c.port_pci_address))
        fatal = klog.find(lines, klog.AER_FATAL_RECEIVED, port=c.port_pci_address)
        done = klog.find(lines, klog.RECOVERY_OK, port=c.port_pci_address)
        if fatal and done and fatal[0].seconds is not None and done[-1].seconds is not None:
            self.observe(f"{ctrl} AER recovery {done[-1].seconds - fatal[0].seconds:.2f} s (guest clock)")

    def assert_names_unchanged(self, before: Names) -> None:
        """The guest names every controller and disk as it did before (what storage software tracks)."""
        self.assertEqual(self.guest.nvme_names(), before,
                         "guest NVMe names changed (PCI address -> (controller, disks))")
        self.observe("names kept: " + " ".join(d for _, disks in sorted(before.values()) for d in disks))


def _recording_failure(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` (a test method) noting what it raised on the test, a cancel or skip aside."""
    @functools.wraps(func)   # keeps the docstring (tags) and attributes (known-defect markers)
    def run(self: HotswapTest, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(self, *args, **kwargs)
        except (TestCancel, unittest.SkipTest):
            raise
        except BaseException as exc:
            self._test_failure = exc
            raise
    return run
