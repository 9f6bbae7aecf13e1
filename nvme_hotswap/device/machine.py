"""QEMU with qtest and QMP for device-level tests: no guest, no firmware running, no vCPU.

QemuMachine (nvme_hotswap.vm.machine) starts it: the process is recorded in LIVE and ended by PID
(quit, then SIGTERM, then SIGKILL), its monitor transcript and stderr land in the test's artifacts.
Here we add the qtest socket (listened on before QEMU starts: `-qtest unix:<path>` connects to it)
and map each controller, placed on pcie.0 at a fixed slot, at its own MMIO address.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from types import TracebackType
from typing import Any

from ..vm.machine import MonitorError, QemuMachine
from ..vm.topology import namespace_props
from ..wait import wait_until
from . import pci
from .nvme import GuestRam, NvmeController
from .qtest import Qtest, QtestListener

LOG = logging.getLogger("nvme_hotswap.device.machine")

BAR_WINDOW = 0x10_0000   # MMIO address space per slot (QEMU's nvme BAR0 is 16 KiB without a CMB)


class QtestMachine:
    """A q35 machine under `-accel qtest`; `devices` are -device/-drive arguments (controllers on
    pcie.0 with `addr=`). Use as a context manager: QEMU is ended by PID whatever happens."""

    def __init__(self, binary: Path, devices: list[str], artifacts: Path, firmware: list[str],
                 memory_mib: int = 256, name: str = "qtest") -> None:
        self._listener = QtestListener()
        args = ["-machine", "q35", "-accel", "qtest", "-qtest", f"unix:{self._listener.path}",
                "-display", "none", "-nodefaults", "-no-user-config", "-m", f"{memory_mib}M", *firmware, *devices]
        self.vm = QemuMachine(binary, args, artifacts, name=name)
        self.artifacts = artifacts
        self._qt: Qtest | None = None
        self.ram: GuestRam | None = None
        self.controllers: dict[str, NvmeController] = {}

    # --- lifecycle -----------------------------------------------------------------------------
    def launch(self) -> None:
        try:
            self.vm.launch()
            self._qt = self._listener.accept(timeout=10.0)
        except BaseException:
            self.shutdown()
            raise
        self.ram = GuestRam(self._qt)

    def shutdown(self) -> int | None:
        """End QEMU by PID (QemuMachine.shutdown) and drop the sockets; safe to call twice."""
        if self._qt is not None:
            self._qt.close()
            self._qt = None
        with contextlib.suppress(OSError):
            self._listener.close()
        return self.vm.shutdown()

    def __enter__(self) -> QtestMachine:
        self.launch()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()

    @property
    def qt(self) -> Qtest:
        if self._qt is None:
            raise RuntimeError("QtestMachine not launched (or already shut down)")
        return self._qt

    # --- devices -------------------------------------------------------------------------------
    def controller(self, slot: int, name: str) -> NvmeController:
        """The NVMe controller at pcie.0 slot `slot`: BAR0 mapped, memory and bus mastering on, not
        enabled (CC.EN=0: a host enables it with NvmeController.enable())."""
        if name in self.controllers:
            return self.controllers[name]
        dev = pci.device_at(self.qt, slot)
        address = pci.MMIO_BASE + slot * BAR_WINDOW
        size = dev.map_bar64(0, address)
        if size > BAR_WINDOW:
            raise pci.PciError(f"{name}: BAR0 is 0x{size:x} bytes, more than the 0x{BAR_WINDOW:x} window per slot")
        dev.enable()
        assert self.ram is not None
        ctrl = NvmeController(self.qt, dev, address, self.ram, name=name)
        self.controllers[name] = ctrl
        return ctrl

    def add_blockdev(self, node: str, image: Path, unmap: bool = False) -> None:
        """A raw block node on `image` (QMP blockdev-add), for a namespace to plug; `unmap`: discard
        requests reach the file (discard=unmap; QEMU's default ignores them)."""
        self.vm.qmp("blockdev-add", **{"node-name": node, "driver": "raw", **({"discard": "unmap"} if unmap else {}),
                                       "file": {"driver": "file", "filename": str(image),
                                                **({"discard": "unmap"} if unmap else {})}})

    def del_blockdev(self, node: str, timeout: float = 5.0) -> None:
        """blockdev-del, retried while a just-unplugged device still holds the node (QEMU may release
        it only when the device is finalized, after an RCU grace period)."""
        def deleted() -> bool:
            try:
                self.vm.qmp("blockdev-del", **{"node-name": node})
                return True
            except MonitorError as refused:
                LOG.debug("blockdev-del %s: %s; retrying", node, refused)
                return False
        wait_until(deleted, timeout, f"blockdev-del {node} to be accepted", interval=0.05)

    def plug_namespace(self, dev_id: str, node: str, bus: str, nsid: int, **props: Any) -> None:
        """device_add nvme-ns at run time onto controller `bus` (QMP)."""
        self.vm.qmp("device_add", **namespace_props(dev_id, node, bus, nsid, **props))

    def unplug(self, dev_id: str, timeout: float = 10.0) -> None:
        """device_del and its DEVICE_DELETED (matched on data.device)."""
        self.vm.device_del(dev_id, timeout)
