"""HotswapTest: the base class of the acceptance tests (avocado.Test, runs under pytest too).

It carries the mechanics so a test carries only its intent: cancel when the QEMU under test
lacks a `needs:` capability, boot the topology on the probed accelerator, connect over SSH,
and after every test save the guest kernel log and fail on kernel bug reports (blktests'
habit) or on a QEMU that died. The VM is always ended by PID, whatever happened.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import avocado

from . import accel, capabilities, config, klog, results, tags
from .guest import Guest
from .guestfacts import KernelLine
from .machine import QemuMachine
from .topology import ControllerSpec, Topology
from .wait import wait_until

BOOT_TIMEOUT_S = 180.0     # serial marker; TCG on a loaded 2-core machine
SSH_TIMEOUT_S = 60.0
KERNEL_ARGS = "console=ttyS0 panic=-1 quiet"


class HotswapTest(avocado.Test):
    """Boots `controllers` NVMe controllers behind root ports; subclasses state the intent.

    Class attributes a test may override: controllers, namespaces_per_controller, subsys,
    native_pcie_hotplug, extra_kernel_args.
    """

    timeout = 600
    controllers = 3
    namespaces_per_controller = 1
    subsys = False
    native_pcie_hotplug = True
    extra_kernel_args = ""

    def __init__(self, methodName: str = "test", name: Any = None, params: Any = None,
                 base_logdir: str | None = None, config: Any = None, tags: Any = None) -> None:
        if base_logdir is None:  # under pytest: the test's folder in this run's results
            base_logdir = str(results.test_dir(f"{type(self).__module__}.{type(self).__name__}.{methodName}"))
        super().__init__(methodName, name=name, params=params, base_logdir=base_logdir,
                         config=config, tags=tags)

    # --- setup / teardown ------------------------------------------------------------------
    def setUp(self) -> None:
        self.artifacts = Path(self.logdir)
        self.vm: QemuMachine | None = None
        self.guest: Guest | None = None
        self._log_handler = logging.FileHandler(self.artifacts / "test.log")
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        for name in ("avocado.test", "nvme_hotswap"):
            logging.getLogger(name).addHandler(self._log_handler)
            logging.getLogger(name).setLevel(logging.DEBUG)
        self.caps = capabilities.of_qemu_under_test(results.run_dir() / "capability-probe")
        for need in tags.needs(tags.of_test(type(self), self._testMethodName)):
            reason = self.caps.missing(need)
            if reason:
                self.cancel(reason)
        self.accel = accel.choose()
        self.log.info("QEMU %s (%s); accelerator: %s", self.caps.version, self.caps.qemu, self.accel)
        (self.artifacts / "accelerator.txt").write_text(f"{self.accel}\n")
        self.topology = Topology.create(self.artifacts / "disks", controllers=self.controllers,
                                        namespaces_per_controller=self.namespaces_per_controller,
                                        subsys=self.subsys)
        self.boot()

    def tearDown(self) -> None:
        problems: list[str] = []
        try:
            if self.guest is not None:
                try:
                    lines = self.guest.klog()
                    (self.artifacts / "guest-dmesg.log").write_text("\n".join(map(str, lines)) + "\n")
                    problems += [f"guest kernel log reports trouble:\n{e}" for e in klog.trouble(lines)]
                except Exception as exc:  # an unreachable guest is itself worth reporting
                    problems.append(f"could not read the guest kernel log after the test: {exc!r}")
                self.guest.close()
            if self.vm is not None and not self.vm.is_running():
                problems.append(f"QEMU exited during the test with code {self.vm.proc.returncode}: "
                                f"{self.vm.stderr_tail()}")
        finally:
            if self.vm is not None:
                self.vm.shutdown()
            shutil.rmtree(self.artifacts / "disks", ignore_errors=True)
            for name in ("avocado.test", "nvme_hotswap"):
                logging.getLogger(name).removeHandler(self._log_handler)
            self._log_handler.close()
        if problems:
            self.fail("\n".join(problems))

    # --- booting ---------------------------------------------------------------------------
    def qemu_args(self) -> list[str]:
        guest_dir = config.guest_dir()
        args = ["-machine", f"q35,accel={self.accel.accel}", "-cpu", "max", "-smp", "2", "-m", "1024",
                "-nodefaults", "-display", "none", "-no-user-config", "-no-reboot",
                *[a for d in config.firmware_dirs() for a in ("-L", str(d))],
                "-kernel", str(guest_dir / "vmlinuz"), "-initrd", str(guest_dir / "initramfs.img"),
                "-append", f"{KERNEL_ARGS} {self.extra_kernel_args}".strip(),
                "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:0-:22",
                "-device", "virtio-net-pci,netdev=net0,romfile=,bus=pcie.0,addr=0x3"]
        if self.native_pcie_hotplug:
            # q35's default ACPI PCI hotplug breaks AER recovery (FACTS.md); native PCIe hotplug is
            # what the series' author had on aarch64 virt.
            args += ["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"]
        return args + self.topology.qemu_args()

    def boot(self) -> None:
        start = time.monotonic()
        self.vm = QemuMachine(config.qemu_binary(), self.qemu_args(), self.artifacts)
        self.vm.launch()
        Guest.wait_for_console(self.vm.console_text, BOOT_TIMEOUT_S, self.vm.is_running)
        self.guest = Guest(self.vm.usernet_ssh_port(), config.guest_dir() / "id_ed25519",
                           self.artifacts / "ssh.log")
        self.guest.connect(SSH_TIMEOUT_S)
        self.boot_seconds = time.monotonic() - start
        self.log.info("guest up over SSH %.2f s after QEMU started (%s)", self.boot_seconds, self.accel.accel)

    # --- verbs shared by the tests ---------------------------------------------------------
    def ctrl(self, index: int) -> ControllerSpec:
        return self.topology.controller(index)

    def wait_for_klog(self, mark: str, template: str, timeout: float = 30.0, **names: str) -> list[KernelLine]:
        """Wait until the guest kernel log after `mark` has a line matching `template`."""
        assert self.guest is not None
        rx = klog.pattern(template, **names)
        return wait_until(lambda: [l for l in self.guest.klog_since(mark) if rx.search(l.text)],
                          timeout, f"guest kernel log line /{rx.pattern}/")

    def assert_names_unchanged(self, before: dict[str, tuple[str, list[str]]]) -> None:
        """The guest names every controller and disk as it did before (what storage software tracks)."""
        assert self.guest is not None
        self.assertEqual(self.guest.nvme_names(), before,
                         "guest NVMe names changed (PCI address -> (controller, disks))")
