"""DeviceTest: the base class of device-level acceptance tests (a SuiteTest: nvme_hotswap/basetest.py).

Like HotswapTest it gives each test its artifacts (test.log, QEMU's command line, stderr and monitor
transcript), cancels with a precise reason when the QEMU under test lacks a `needs:` capability,
checks the `needs:` tags against what the test used at the monitor, and requires QEMU to be alive
at the end of the test and to end cleanly on quit. Unlike it, nothing boots: the test itself is
the NVMe host (nvme_hotswap.device), over qtest, so no guest need exist.
"""
from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

from .. import config, preflight
from ..basetest import SuiteTest
from ..vm.machine import QemuExited, describe_status
from ..vm.topology import create_image
from .machine import QtestMachine
from .nvme import CSS_NVM, NvmeController


class DeviceTest(SuiteTest):
    """Start QEMU machines with `self.machine(devices)`; they are ended by PID at tear-down."""

    timeout = 120
    arch_role = "QEMU"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._machines: list[QtestMachine] = []
        self._exit_problems: list[str] = []
        super().__init__(*args, **kwargs)

    # --- setup / teardown ------------------------------------------------------------------------
    def check_environment(self) -> None:
        _check_qemu(self.cfg)

    def _set_up(self) -> None:
        self.log.info("QEMU %s %s (%s), qtest", self.caps.version, self.caps.package, self.caps.qemu)
        (self.artifacts / "qemu.json").write_text(json.dumps(self.caps.as_dict(), indent=2) + "\n")

    def tear_down_problems(self) -> list[str]:
        """QEMU must still run after the test and end cleanly on quit; the tags must match its use."""
        problems: list[str] = []
        try:
            for m in self._machines:
                if not m.vm.is_running() and not isinstance(self._test_failure, QemuExited):
                    problems.append(f"{m.vm.name}: QEMU exited during the test "
                                    f"({describe_status(m.vm.returncode)}): {m.vm.stderr_tail()}")
            problems += self.needs_problems([c for m in self._machines for c in m.vm.issued],
                                            passed=self._test_failure is None)
        finally:
            self._release()
        return problems + self._exit_problems

    def _release(self) -> None:
        """End every machine by PID, noting what was abnormal about their ends. Safe to call twice."""
        for m in self._machines:
            running = m.vm.is_running()
            m.shutdown()
            exit_problem = m.vm.exit_problem()
            if running and exit_problem:
                self._exit_problems.append(f"{m.vm.name}: {exit_problem}")
        self._machines = []
        if hasattr(self, "artifacts"):
            shutil.rmtree(self.artifacts / "disks", ignore_errors=True)

    # --- what a test uses ----------------------------------------------------------------------
    def machine(self, devices: list[str], name: str = "qtest") -> QtestMachine:
        """A launched q35 qtest machine with `devices`, ended at tear-down."""
        m = QtestMachine(self.cfg.qemu_binary, devices, self.artifacts, self.cfg.firmware_args(), name=name)
        self._machines.append(m)
        m.launch()
        return m

    def disk(self, name: str, size_mib: int) -> Path:
        """A sparse raw backing file of `size_mib` MiB in the test's disks folder (removed at the end)."""
        folder = self.artifacts / "disks"
        folder.mkdir(exist_ok=True)
        path = folder / f"{name}.img"
        create_image(path, size_mib << 20, b"")   # all zeros: the tests write what they read
        return path

    @staticmethod
    def host(ctrl: NvmeController, io_queues: bool = True, aec: int | None = None, aers: int = 1,
             css: int = CSS_NVM) -> NvmeController:
        """Bring `ctrl` up as a host driver would: enable (CC.CSS `css`), Identify Controller, optionally
        set the Asynchronous Event Configuration, create an I/O queue pair, leave `aers` AERs outstanding."""
        ctrl.enable(css=css)
        ctrl.identify_controller()
        if aec is not None:
            ctrl.set_async_event_config(aec)
        if io_queues:
            ctrl.create_io_queues()
        ctrl.submit_aer(aers)
        return ctrl


@functools.cache
def _check_qemu(cfg: config.RunConfig) -> None:
    """The preflight's QEMU check, once per process (no guest is needed here)."""
    preflight.check_qemu(cfg)

