"""The hot-swap layer: a booted guest on its topology, and every hot-swap step with its wait.

Tests, soak, fuzz and bench all act through a Rig, so a step (plug, unplug, namespace swap, pull,
reinsert, AER reset, controller replacement) exists once; MonitorSteps is its monitor half alone
(what QEMU is told), which the guestless soak drives. Devices are named by the topology
(QEMU ids) and by what the guest called them at boot (looked up by PCI address: the guest
numbers controllers in probe order, which is not always PCI order). Steps raise WaitTimeout
(an AssertionError) naming what they waited for; what a test concludes stays in the test.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import RunConfig
from ..guest import klog
from ..guest.facts import KernelLine, NamespaceInfo
from ..guest.ssh import Guest
from ..vm.accel import AccelChoice
from ..vm.machine import QemuMachine
from ..vm.topology import ControllerSpec, NamespaceSpec, Topology, create_image, drive_option, label_of, namespace_props
from ..wait import wait_until
from .boot import boot_guest, guest_qemu_args

RECOVERY_TIMEOUT_S = 30.0    # AER injection to "device recovery successful" (0.2-0.7 s seen here)
NAMESPACE_TIMEOUT_S = 10.0   # device_add/device_del nvme-ns to the guest's rescan result: ~0.1 s quiet, under
                             # 1 s with two guests on 2 cores; a mutant that never shows it pays the whole bound
UNPLUG_TIMEOUT_S = 60.0      # device_del of a controller: native pciehp's attention-button sequence (~6 s)

#: PCI address -> (controller name, its block devices): what storage software tracks.
Names = dict[str, tuple[str, list[str]]]


class BootError(AssertionError):
    """The guest came up without a controller the topology put there."""


@dataclasses.dataclass
class MonitorSteps:
    """The monitor's half of every hot-swap step, on a topology: what QEMU is told, with no wait on
    a guest. Rig adds the guest; the guestless soak (SOAK_GUEST=0) uses these alone, so a step's
    monitor commands exist once."""

    vm: QemuMachine
    topology: Topology
    workdir: Path                 # where new backing files go (removed with the test's disks)

    def ctrl(self, index: int) -> ControllerSpec:
        return self.topology.controller(index)

    def new_disk(self, name: str, size_mib: int = 64, label: bytes | None = None) -> Path:
        """A fresh sparse backing file whose first bytes are `label` (default `label_of(name)`)."""
        path = self.workdir / f"{name}.img"
        path.parent.mkdir(parents=True, exist_ok=True)
        create_image(path, size_mib << 20, label if label is not None else label_of(name))
        return path

    def plug_namespace(self, ns: NamespaceSpec, image: Path | None = None, **props: object) -> None:
        """drive_add `image` as the namespace's drive (None: the drive exists), then device_add
        nvme-ns on its controller; `props`: further nvme-ns properties (detached, shared, ...)."""
        if image is not None:
            self.vm.drive_add(drive_option(ns.drive_id, image, self.topology.discard))
        self.vm.qmp("device_add", **namespace_props(ns.dev_id, ns.drive_id, self.ctrl(ns.controller).dev_id,
                                                    ns.nsid, **props))

    def unplug_namespace(self, ns: NamespaceSpec) -> None:
        """device_del the namespace and wait for its DEVICE_DELETED."""
        self.vm.device_del(ns.dev_id)

    def drop_drive(self, index: int) -> None:
        """drive_del controller `index`'s first drive: the backing file is gone for the guest."""
        self.vm.drive_del(self.ctrl(index).namespaces[0].drive_id)

    def reinsert(self, index: int, image: Path, fmt: str | None = None) -> None:
        """drive_insert `image` into controller `index`'s first namespace."""
        self.vm.drive_insert(self.ctrl(index).namespaces[0].dev_id, image, fmt)

    def inject_aer(self, index: int, error: str = "SDN") -> None:
        """pcie_aer_inject_error at controller `index`'s root port (SDN: Surprise Down)."""
        self.vm.aer_inject(self.ctrl(index).port_id, error)

    def drive_state(self, index: int) -> tuple[str, str | None, bool | None]:
        """What the monitor shows of controller `index`'s first namespace's drive (query-block):
        (drive id, file, read-only); ("", None, None) while it is pulled."""
        dev = self.ctrl(index).namespaces[0].dev_id
        for b in self.vm.qmp("query-block"):
            if b.get("qdev") in (dev, f"/machine/peripheral/{dev}"):
                inserted = b.get("inserted")
                return (b.get("device", ""), inserted["file"] if inserted else None,
                        inserted["ro"] if inserted else None)
        raise AssertionError(f"query-block lists no drive attached to {dev}")


@dataclasses.dataclass
class Rig(MonitorSteps):
    guest: Guest
    boot_names: Names
    boot_seconds: float = 0.0

    @classmethod
    def boot(cls, cfg: RunConfig, accel: AccelChoice, topology: Topology, artifacts: Path,
             native_pcie_hotplug: bool = True, extra_kernel_args: str = "",
             extra_qemu_args: Sequence[str] = ()) -> Rig:
        """Boot the topology to SSH and record the guest's names; the VM is ended if that fails."""
        args = guest_qemu_args(cfg, accel, topology, native_pcie_hotplug, extra_kernel_args) + list(extra_qemu_args)
        vm, guest, seconds = boot_guest(cfg, args, artifacts)
        try:
            names = guest.nvme_names()
            missing = [c.pci_address for c in topology.controllers if c.pci_address not in names]
            if missing:
                raise BootError(f"the guest has no NVMe controller at {missing}; it has {names}")
        except BaseException:
            guest.close()
            vm.shutdown()
            raise
        return cls(vm=vm, topology=topology, guest=guest, workdir=artifacts / "disks", boot_names=names,
                   boot_seconds=seconds)

    def close(self) -> int | None:
        """Close SSH and end QEMU by its PID; QEMU's exit code."""
        self.guest.close()
        return self.vm.shutdown()

    # --- names ---------------------------------------------------------------------------------
    def ctrl_name(self, index: int) -> str:
        """The guest's name (nvmeX) of controller `index` at boot, found by its PCI address."""
        return self.boot_names[self.ctrl(index).pci_address][0]

    def disk(self, index: int) -> str:
        """The guest's block device (nvmeXnY) of controller `index`'s first namespace at boot."""
        return self.boot_names[self.ctrl(index).pci_address][1][0]

    def current_disk(self, index: int, nsid: int = 1) -> str:
        """The block device the guest has now for NSID `nsid` of controller `index`."""
        info = self.guest.namespace(self.ctrl_name(index), nsid)
        if info is None:
            raise AssertionError(f"NSID {nsid} is not under {self.ctrl_name(index)} in the guest")
        return info.block

    # --- kernel log ----------------------------------------------------------------------------
    def wait_for_klog(self, mark: str, template: str, timeout: float = 30.0, **names: str) -> list[KernelLine]:
        """Wait until the guest kernel log after `mark` has a line matching `template`."""
        rx = klog.pattern(template, **names)
        return wait_until(lambda: [line for line in self.guest.klog_since(mark) if rx.search(line.text)],
                          timeout, f"guest kernel log line /{rx.pattern}/")

    # --- namespace hotplug (series patch 1) ------------------------------------------------------
    def wait_for_namespace(self, index: int, nsid: int, timeout: float = NAMESPACE_TIMEOUT_S) -> NamespaceInfo:
        controller = self.ctrl_name(index)
        return wait_until(lambda: self.guest.namespace(controller, nsid), timeout,
                          f"NSID {nsid} to appear under {controller} in the guest")

    def wait_for_namespace_gone(self, index: int, nsid: int, timeout: float = NAMESPACE_TIMEOUT_S) -> None:
        controller = self.ctrl_name(index)
        wait_until(lambda: self.guest.namespace(controller, nsid) is None, timeout,
                   f"NSID {nsid} to disappear from {controller} in the guest")

    def namespace_swap(self, index: int, image: Path) -> str:
        """The namespace-level sequence merged upstream on controller `index`'s first namespace:
        device_del, drive_del, drive_add `image`, device_add with the same NSID; returns the mark."""
        ns = self.ctrl(index).namespaces[0]
        mark = self.guest.klog_mark()  # where the evidence report's timeline of this swap starts
        self.unplug_namespace(ns)
        self.wait_for_namespace_gone(index, ns.nsid)
        self.vm.drive_del(ns.drive_id)
        self.plug_namespace(ns, image)
        self.wait_for_namespace(index, ns.nsid)
        return mark

    # --- drive reconnection (series patches 2-3) -------------------------------------------------
    def pull(self, index: int) -> str:
        """drive_del controller `index`'s first drive (the backing file is gone for the guest);
        returns the kernel-log mark written just before."""
        mark = self.guest.klog_mark()
        self.drop_drive(index)
        return mark

    def wait_for_recovery(self, index: int, mark: str, timeout: float = RECOVERY_TIMEOUT_S) -> list[KernelLine]:
        """Wait for the guest's `device recovery successful` on controller `index`'s root port."""
        return self.wait_for_klog(mark, klog.RECOVERY_OK, timeout, port=self.ctrl(index).port_pci_address)

    def reconnect(self, index: int, image: Path, while_pulled: Callable[[str], None] | None = None,
                  fmt: str | None = None) -> str:
        """The cover letter's sequence on controller `index`: drive_del, (`while_pulled(disk)`),
        drive_insert `image` (as `fmt`), pcie_aer_inject_error SDN, the guest's AER recovery.
        Returns the mark."""
        disk = self.current_disk(index, self.ctrl(index).namespaces[0].nsid)
        mark = self.pull(index)
        if while_pulled is not None:
            while_pulled(disk)
        self.reinsert(index, image, fmt)
        self.inject_aer(index)
        self.wait_for_recovery(index, mark)
        return mark

    # --- the old way: replacing the whole controller ---------------------------------------------
    def unplug_controller(self, index: int) -> None:
        """device_del the controller (native pciehp: ~6 s), then drop its drives, which still hold
        their files' locks."""
        c = self.ctrl(index)
        self.vm.device_del(c.dev_id, UNPLUG_TIMEOUT_S)
        for ns in c.namespaces:
            self.vm.drive_del(ns.drive_id)

    def plug_replacement_controller(self, index: int) -> str:
        """A new controller with the same serial and backing file in the same root port; its id.

        Its drive gets a new node name (the old id may linger); the legacy drive= form is the only
        way to give a hot-plugged controller a namespace without the series."""
        c = self.ctrl(index)
        new_id, node = f"{c.dev_id}b", f"{c.namespaces[0].drive_id}b"
        self.vm.qmp("blockdev-add", driver="raw", **{"node-name": node},
                    file={"driver": "file", "filename": str(c.namespaces[0].image)})
        self.vm.qmp("device_add", driver="nvme", id=new_id, serial=c.serial, bus=c.port_id, drive=node)
        return new_id
