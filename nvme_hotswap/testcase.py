"""HotswapTest: the base class of the acceptance tests (avocado.Test, runs under pytest too).

It carries the mechanics so a test carries only its intent: cancel when the QEMU under test
lacks a `needs:` capability, boot the topology on the probed accelerator, connect over SSH,
and after every test save the guest kernel log and fail on kernel bug reports (blktests'
habit) or on a QEMU that died. The VM is always ended by PID, whatever happened.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import platform
import shutil
from pathlib import Path
from typing import Any

import avocado

from . import accel, arch, capabilities, cloud, config, klog, results, tags
from .boot import boot_guest, guest_qemu_args
from .guest import Guest
from .guestfacts import KernelLine, NamespaceInfo
from .machine import QemuMachine
from .topology import ControllerSpec, Topology, create_image, drive_option, label_of, namespace_props
from .wait import wait_until



RECOVERY_TIMEOUT_S = 30.0   # AER injection to "device recovery successful" (0.2-0.7 s seen here)


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
        # Under avocado the runner gives each test its log folder; under pytest (base_logdir None)
        # the artifacts go to this run's results folder, made in setUp: pytest also instantiates
        # test classes while collecting, which must not create folders.
        self._under_avocado_runner = base_logdir is not None
        super().__init__(methodName, name=name, params=params, base_logdir=base_logdir,
                         config=config, tags=tags)

    # --- setup / teardown ------------------------------------------------------------------
    def setUp(self) -> None:
        self.vm: QemuMachine | None = None
        self.guest: Guest | None = None
        self._log_handler: logging.Handler | None = None
        try:
            self._set_up()
        except BaseException:
            # unittest (pytest) skips tearDown when setUp fails or cancels; avocado calls it anyway.
            if not self._under_avocado_runner:
                self._release()
            raise

    def _set_up(self) -> None:
        self.artifacts = (Path(self.logdir) if self._under_avocado_runner else
                          results.test_dir(f"{type(self).__module__}.{type(self).__name__}.{self._testMethodName}"))
        self._log_handler = logging.FileHandler(self.artifacts / "test.log")
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        for name in ("avocado.test", "nvme_hotswap"):
            logging.getLogger(name).addHandler(self._log_handler)
            logging.getLogger(name).setLevel(logging.DEBUG)
        test_tags = tags.of_test(type(self), self._testMethodName)
        platform_ = config.guest_arch()
        arches = arch.tagged_arches(test_tags)
        if arches and platform_.name not in arches:
            self.cancel(f"test runs on {', '.join(arches)} (arch: tags); this run's guest is {platform_.name} (GUEST_ARCH)")
        self.caps = capabilities.of_qemu_under_test(results.worker_folder("capability-probe"))
        for need in tags.needs(test_tags):
            reason = self.caps.missing(need)
            if reason:
                self.cancel(reason)
        reason = self.guest_precondition()
        if reason:
            self.cancel(reason)
        self.accel = accel.choose()
        self.log.info("QEMU %s (%s); accelerator: %s", self.caps.version, self.caps.qemu, self.accel)
        _record_environment(self.caps, self.accel)
        (self.artifacts / "accelerator.txt").write_text(f"{self.accel}\n")
        self.topology = Topology.create(self.artifacts / "disks", controllers=self.controllers,
                                        namespaces_per_controller=self.namespaces_per_controller,
                                        subsys=self.subsys)
        (self.artifacts / "topology.json").write_text(
            json.dumps(self.topology.as_dict(self.native_pcie_hotplug), indent=2) + "\n")
        self.boot()

    def tearDown(self) -> None:
        problems: list[str] = []
        try:
            if self.guest is not None:
                try:
                    problems += self.guest_kernel_problems()
                except Exception as exc:  # an unreachable guest is itself worth reporting
                    problems.append(f"could not read the guest kernel log after the test: {exc!r}")
            if self.vm is not None and not self.vm.is_running():
                problems.append(f"QEMU exited during the test with code {self.vm.proc.returncode}: "
                                f"{self.vm.stderr_tail()}")
        finally:
            self._release()
        if problems:
            self.fail("\n".join(problems))

    def _release(self) -> None:
        """End the VM by PID, drop the backing files, detach the log file; safe to call twice."""
        if self.guest is not None:
            self.guest.close()
        if self.vm is not None:
            self.vm.shutdown()
        if hasattr(self, "artifacts"):
            shutil.rmtree(self.artifacts / "disks", ignore_errors=True)
        if self._log_handler is not None:
            for name in ("avocado.test", "nvme_hotswap"):
                logging.getLogger(name).removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def guest_kernel_problems(self) -> list[str]:
        """Save the guest kernel log as an artifact; return excerpts of any kernel bug reports."""
        assert self.guest is not None
        lines = self.guest.klog()
        (self.artifacts / "guest-dmesg.log").write_text("\n".join(map(str, lines)) + "\n")
        return [f"guest kernel log reports trouble:\n{e}" for e in klog.trouble(lines)]

    def guest_precondition(self) -> str | None:
        """Why this test cannot run on the configured guest (checked after the `needs:` tags, so
        a QEMU without the series still cancels with "QEMU lacks ..."), or None. Nothing is booted yet."""
        return None

    # --- booting ---------------------------------------------------------------------------
    def extra_qemu_args(self) -> list[str]:
        """Devices a test class adds to the topology (none by default)."""
        return []

    def boot(self) -> None:
        args = guest_qemu_args(self.accel, self.topology, self.native_pcie_hotplug, self.extra_kernel_args)
        args += self.extra_qemu_args()
        self.vm, self.guest, self.boot_seconds = boot_guest(args, self.artifacts)
        self.log.info("guest up over SSH %.2f s after QEMU started (%s)", self.boot_seconds, self.accel.accel)
        # The guest numbers controllers in probe order, which is not always PCI order (6.12 probes
        # asynchronously): tests name them by what the guest called the controller at each address.
        self.boot_names = self.guest.nvme_names()
        (self.artifacts / "guest-names.json").write_text(json.dumps(self.boot_names, indent=2) + "\n")
        missing = [c.pci_address for c in self.topology.controllers if c.pci_address not in self.boot_names]
        if missing:
            self.fail(f"the guest has no NVMe controller at {missing}; it has {self.boot_names}")

    # --- verbs shared by the tests ---------------------------------------------------------
    def ctrl(self, index: int) -> ControllerSpec:
        return self.topology.controller(index)

    def ctrl_name(self, index: int) -> str:
        """The guest's name (nvmeX) of controller `index` at boot, found by its PCI address."""
        return self.boot_names[self.ctrl(index).pci_address][0]

    def disk(self, index: int) -> str:
        """The guest's block device (nvmeXnY) of controller `index`'s first namespace at boot."""
        return self.boot_names[self.ctrl(index).pci_address][1][0]

    def new_disk(self, name: str, size_mib: int = 64) -> Path:
        """A fresh labelled backing file (first bytes: `label_of(name)`), removed after the test."""
        path = self.artifacts / "disks" / f"{name}.img"
        create_image(path, size_mib << 20, label_of(name))
        return path

    def plug_namespace(self, dev_id: str, drive_id: str, nsid: int, bus: str,
                       image: Path | None = None) -> None:
        """drive_add `image` as `drive_id` (unless image is None: the drive exists), then device_add nvme-ns."""
        if image is not None:
            self.vm.drive_add(drive_option(drive_id, image))
        self.vm.qmp("device_add", **namespace_props(dev_id, drive_id, bus, nsid))

    def wait_for_namespace(self, controller: str, nsid: int, timeout: float = 20.0) -> NamespaceInfo:
        return wait_until(lambda: self.guest.namespace(controller, nsid), timeout,
                          f"NSID {nsid} to appear under {controller} in the guest")

    def wait_for_namespace_gone(self, controller: str, nsid: int, timeout: float = 20.0) -> None:
        wait_until(lambda: self.guest.namespace(controller, nsid) is None, timeout,
                   f"NSID {nsid} to disappear from {controller} in the guest")

    def swap_drive(self, index: int, image: Path) -> str:
        """The cover letter's sequence on controller `index`: drive_del (guest I/O now fails),
        drive_insert `image`, pcie_aer_inject_error SDN, then the guest's AER recovery. Returns the
        kernel-log mark taken before the pull."""
        c = self.ctrl(index)
        ns = c.namespaces[0]
        disk = self.guest.namespace(self.ctrl_name(index), ns.nsid).block
        mark = self.guest.klog_mark()
        self.vm.drive_del(ns.drive_id)
        self.assert_io_fails(disk)
        self.vm.drive_insert(ns.dev_id, image)
        self.vm.aer_inject(c.port_id, "SDN")
        self.assert_aer_recovery(mark, index)
        return mark

    def namespace_swap(self, index: int, image: Path) -> None:
        """The namespace-level sequence merged upstream: device_del, drive_del, drive_add, device_add."""
        c = self.ctrl(index)
        ns = c.namespaces[0]
        self.guest.klog_mark()  # where the evidence report's timeline of this swap starts
        self.vm.device_del(ns.dev_id)
        self.wait_for_namespace_gone(self.ctrl_name(index), ns.nsid)
        self.vm.drive_del(ns.drive_id)
        self.plug_namespace(ns.dev_id, ns.drive_id, ns.nsid, bus=c.dev_id, image=image)
        self.wait_for_namespace(self.ctrl_name(index), ns.nsid)

    def assert_io_fails(self, disk: str) -> None:
        """With the drive pulled, guest I/O fails promptly with an error; it does not hang."""
        self.assertEqual(self.guest.try_read(disk, seconds=10).status, "error",
                         f"a read of {disk} with its drive pulled did not fail promptly")

    def assert_aer_recovery(self, mark: str, index: int) -> None:
        """The guest logged the fatal error on the port, reset the controller and recovered."""
        c = self.ctrl(index)
        self.wait_for_klog(mark, klog.RECOVERY_OK, RECOVERY_TIMEOUT_S, port=c.port_pci_address)
        lines = self.guest.klog_since(mark)
        for template, names in [(klog.AER_FATAL_RECEIVED, {"port": c.port_pci_address}), (klog.AER_SDES, {}),
                                (klog.NVME_FROZEN, {"ctrl": self.ctrl_name(index)}),
                                (klog.NVME_SLOT_RESET, {"ctrl": self.ctrl_name(index)})]:
            self.assertTrue(klog.find(lines, template, **names),
                            f"no /{klog.pattern(template, **names).pattern}/ in the guest log after the injection")
        self.assertFalse(klog.find(lines, klog.RECOVERY_FAILED, port=c.port_pci_address))

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


@functools.cache
def _record_environment(caps: capabilities.Capabilities, choice: accel.AccelChoice) -> None:
    """Once per run: what was tested on what, for environment.json and the evidence report."""
    if config.guest_flavour() == "cloud":
        guest_dir, guest = config.cloud_image() or config.cloud_dir(), cloud.manifest()
    else:
        guest_dir = config.guest_dir()
        manifest = guest_dir / "manifest.json"
        guest = json.loads(manifest.read_text()) if manifest.exists() else None
    results.record_environment({
        "qemu": caps.qemu, "qemu_version": caps.version, "capabilities": caps.as_dict(),
        "qemu_build": _build_record(Path(caps.qemu)),
        "accelerator": choice.accel, "accelerator_reason": choice.reason,
        "guest_dir": str(guest_dir),
        "guest_flavour": config.guest_flavour(), "guest": guest,
        "guest_arch": config.guest_arch().name, "machine": config.guest_arch().machine,
        "host_kernel": platform.release(), "python": platform.python_version(),
        "packages": {p: importlib.metadata.version(p)
                     for p in ("avocado-framework", "qemu.qmp", "paramiko", "pytest")},
    })


def _build_record(binary: Path) -> dict[str, str] | str:
    """Where our build came from (source, patches with their hashes), from its cache entry's DONE."""
    done = binary.parent.parent / "DONE"
    if not done.is_file():
        return "not built by scripts/build-qemu.sh (QEMU= given)"
    record: dict[str, str] = {}
    for line in done.read_text().splitlines():
        key, _, value = line.partition("=")
        record[key] = value if key not in record else f"{record[key]}; {value}"
    return record
