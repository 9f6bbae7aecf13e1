"""The PCIe/NVMe devices a test boots with, and what the guest should see of them.

N controllers, each behind its own pcie-root-port (rpN at 00:1N.0 on pcie.0, so the guest
enumerates nvmeN's controller at bus N+1), each with namespaces backed by raw files whose
first sector carries a label. Optionally one nvme-subsys per controller (the series author's
configuration), and optionally controllers that share one nvme-subsys (a dual-ported drive: the
first of them carries the namespaces, shared with the others). Ids follow one scheme so tests and
transcripts read alike: rpN, nvmeN, nsN (first namespace) / nsN_M, drvN / drvN_M, subsysN.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import subprocess
from pathlib import Path

ROOT_PORT_SLOT_BASE = 0x10
NIC_SLOT = 0x03          # the guest's virtio-net on pcie.0 (hotswap/boot.py)
SECTOR = 512


@dataclasses.dataclass(frozen=True)
class NamespaceSpec:
    controller: int
    index: int          # 0-based position under its controller
    nsid: int
    image: Path
    size_bytes: int

    @property
    def suffix(self) -> str:
        return f"{self.controller}" if self.index == 0 else f"{self.controller}_{self.index}"

    @property
    def dev_id(self) -> str:
        return f"ns{self.suffix}"

    @property
    def drive_id(self) -> str:
        return f"drv{self.suffix}"

    @property
    def label(self) -> bytes:
        return label_of(self.dev_id)


@dataclasses.dataclass(frozen=True)
class ControllerSpec:
    index: int
    namespaces: tuple[NamespaceSpec, ...]
    subsys_index: int | None = None   # the nvme-subsys it is in (subsysN), None: none

    @property
    def subsys(self) -> bool:
        return self.subsys_index is not None

    @property
    def dev_id(self) -> str:
        return f"nvme{self.index}"

    @property
    def port_id(self) -> str:
        return f"rp{self.index}"

    @property
    def subsys_id(self) -> str:
        return f"subsys{self.subsys_index}"

    @property
    def serial(self) -> str:
        """NVMEHS000N; the controllers of one subsystem share its serial (QEMU requires it)."""
        return f"NVMEHS{self.index if self.subsys_index is None else self.subsys_index:04d}"

    @property
    def port_pci_address(self) -> str:
        return f"0000:00:{ROOT_PORT_SLOT_BASE + self.index:02x}.0"

    @property
    def pci_address(self) -> str:
        """Where the guest finds this controller: the root ports are the only bridges."""
        return f"0000:{self.index + 1:02x}:00.0"

    def hot_namespace(self, nsid: int, image: Path, size_bytes: int = 0) -> NamespaceSpec:
        """A namespace to plug at run time, named in the same scheme (NSID 2 -> ns2_1, drv2_1)."""
        return NamespaceSpec(controller=self.index, index=nsid - 1, nsid=nsid, image=image, size_bytes=size_bytes)


@dataclasses.dataclass(frozen=True)
class Topology:
    controllers: tuple[ControllerSpec, ...]
    discard: bool = False   # the drives pass the guest's discards to their files (discard=unmap)

    @classmethod
    def plan(cls, workdir: Path, controllers: int = 3, namespaces_per_controller: int = 1,
             size_mib: int = 64, subsys: bool = False, shared_subsys: tuple[int, ...] = (),
             discard: bool = False) -> Topology:
        """Lay out the devices (ids, addresses, backing file paths) without creating anything.

        `subsys`: each controller in an nvme-subsys of its own. `shared_subsys`: these controllers
        share one nvme-subsys (named after the first); only the first has namespaces of its own,
        the others reach them through the subsystem (an NSID is unique in a subsystem)."""
        ctrls = []
        for c in range(controllers):
            shared = c in shared_subsys
            own = namespaces_per_controller if not shared or c == shared_subsys[0] else 0
            ctrls.append(ControllerSpec(
                index=c, subsys_index=shared_subsys[0] if shared else (c if subsys else None),
                namespaces=tuple(NamespaceSpec(controller=c, index=n, nsid=n + 1,
                                               image=workdir / f"disk-nvme{c}n{n + 1}.img", size_bytes=size_mib << 20)
                                 for n in range(own))))
        return cls(tuple(ctrls), discard)

    @classmethod
    def create(cls, workdir: Path, controllers: int = 3, namespaces_per_controller: int = 1,
               size_mib: int = 64, subsys: bool = False, shared_subsys: tuple[int, ...] = (),
               discard: bool = False) -> Topology:
        """Lay out the devices and create their labelled, sparse backing files in `workdir`."""
        topo = cls.plan(workdir, controllers, namespaces_per_controller, size_mib, subsys, shared_subsys, discard)
        workdir.mkdir(parents=True, exist_ok=True)
        for c in topo.controllers:
            for ns in c.namespaces:
                create_image(ns.image, ns.size_bytes, ns.label)
        return topo

    def controller(self, index: int) -> ControllerSpec:
        return self.controllers[index]

    def as_dict(self, native_pcie_hotplug: bool) -> dict[str, object]:
        """The devices as booted, for topology.json next to a test's other artifacts."""
        return {"native_pcie_hotplug": native_pcie_hotplug, "controllers": [
            {"id": c.dev_id, "serial": c.serial, "port": c.port_id, "port_pci_address": c.port_pci_address,
             "pci_address": c.pci_address, "subsys": c.subsys_id if c.subsys else None,
             "namespaces": [{"id": ns.dev_id, "drive": ns.drive_id, "nsid": ns.nsid, "image": str(ns.image),
                             "size_bytes": ns.size_bytes} for ns in c.namespaces]}
            for c in self.controllers]}

    def qemu_args(self) -> list[str]:
        args: list[str] = []
        made: set[str] = set()
        for c in self.controllers:
            args += ["-device", f"pcie-root-port,id={c.port_id},bus=pcie.0,"
                                f"addr=0x{ROOT_PORT_SLOT_BASE + c.index:x},chassis={c.index + 1},slot={c.index + 1}"]
            if c.subsys and c.subsys_id not in made:
                made.add(c.subsys_id)
                args += ["-device", f"nvme-subsys,id={c.subsys_id},nqn=nqn.2026-04.org.qemu:{c.subsys_id}"]
            ctrl = f"nvme,id={c.dev_id},serial={c.serial},bus={c.port_id}"
            args += ["-device", ctrl + (f",subsys={c.subsys_id}" if c.subsys else "")]
            for ns in c.namespaces:
                args += ["-drive", drive_option(ns.drive_id, ns.image, self.discard)]
                args += ["-device", namespace_device(ns.dev_id, ns.drive_id, c.dev_id, ns.nsid)]
        return args


def drive_option(drive_id: str, image: Path, discard: bool = False) -> str:
    """A -drive / drive_add value for a raw, non-removable backing file (no format probing);
    `discard`: thin provisioning, the guest's discards and zero writes deallocate the file's range
    (discard=unmap, detect-zeroes=unmap; QEMU ignores discards by default)."""
    return f"if=none,id={drive_id},file={image},format=raw" + (",discard=unmap,detect-zeroes=unmap" if discard else "")


def namespace_props(dev_id: str, drive_id: str, bus: str, nsid: int, **extra: object) -> dict[str, object]:
    """An nvme-ns device as QMP device_add arguments (`extra`: more nvme-ns properties)."""
    return {"driver": "nvme-ns", "id": dev_id, "drive": drive_id, "bus": bus, "nsid": nsid, **extra}


def namespace_device(dev_id: str, drive_id: str, bus: str, nsid: int) -> str:
    """The same nvme-ns device as a -device value."""
    props = namespace_props(dev_id, drive_id, bus, nsid)
    return ",".join([str(props.pop("driver"))] + [f"{k}={v}" for k, v in props.items()])


def label_of(name: str) -> bytes:
    """What the first bytes of a fresh image hold, so the guest can tell disks apart."""
    return f"nvme-hotswap disk {name}\n".encode()


def create_image(path: Path, size_bytes: int, label: bytes) -> None:
    """A sparse raw image whose first sector starts with `label` (the rest is zeros)."""
    with open(path, "wb") as f:
        f.truncate(size_bytes)
        f.write(label.ljust(SECTOR, b"\0")[:SECTOR])


def format_ext4(path: Path, uuid: str) -> None:
    """An ext4 file system with UUID `uuid` over the whole image, made on the host (e2fsprogs is a
    host dependency): a replacement disk that carries a file system of its own."""
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-U", uuid, str(path)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"mkfs.ext4 -U {uuid} {path} failed ({r.returncode}): {r.stderr.strip()}; "
                           "install e2fsprogs (scripts/install-host-deps.sh)")


def image_sha256(path: Path, offset_blocks: int, blocks: int, block: int = 4096) -> str:
    """sha256 of a range of a backing file, read on the host: what the guest wrote really landed."""
    with open(path, "rb") as f:
        f.seek(offset_blocks * block)
        return hashlib.sha256(f.read(blocks * block)).hexdigest()


def allocated_bytes(path: Path) -> int:
    """The space a backing file takes on the host (st_blocks): a range deallocated by a discard
    or a zero write with unmap frees it; one zeroed in place (unwritten extents, which SEEK_DATA
    also skips) does not."""
    return os.stat(path).st_blocks * 512


def is_hole(path: Path, offset_blocks: int, blocks: int, block: int = 4096) -> bool:
    """Whether a range of a backing file holds no data on the host (SEEK_DATA finds none in it):
    a discard that reached the file deallocated it."""
    start, end = offset_blocks * block, (offset_blocks + blocks) * block
    with open(path, "rb") as f:
        try:
            return os.lseek(f.fileno(), start, os.SEEK_DATA) >= end
        except OSError as exc:   # ENXIO: no data from `start` to the end of the file
            if exc.errno == errno.ENXIO:
                return True
            raise
