"""PCI configuration access on q35's root bus (pcie.0) through ports 0xcf8/0xcfc, and BAR mapping.

Tests put each controller directly on pcie.0 with a fixed `addr=` (no root ports, no firmware
to assign BARs under qtest), so bus 0 is all this needs to walk. Register offsets: PCI Local Bus
Specification 3.0, section 6.1 (configuration header) and 6.2.5 (base address registers).
"""
from __future__ import annotations

import dataclasses

from .qtest import Qtest

CONFIG_ADDRESS = 0xCF8
CONFIG_DATA = 0xCFC

VENDOR_ID = 0x00
COMMAND = 0x04
BAR0 = 0x10

CMD_MEMORY = 1 << 1       # Memory Space Enable
CMD_BUS_MASTER = 1 << 2   # Bus Master Enable: the controller may DMA into guest RAM (queues, PRPs)

QEMU_NVME = (0x1B36, 0x0010)   # Red Hat, Inc. / QEMU NVM Express Controller (docs/specs/pci-ids.rst)

#: Where tests map BARs: above q35's RAM and PCIe MMCONFIG window, below the IOAPIC (libqos uses it too).
MMIO_BASE = 0xE000_0000


class PciError(RuntimeError):
    """A device is missing or its BAR cannot be mapped; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class PciDevice:
    """A function on bus 0, addressed by slot and function (the `addr=SLOT.FN` of -device)."""

    qt: Qtest
    slot: int
    function: int = 0

    def _address(self, offset: int) -> int:
        return 0x8000_0000 | (self.slot << 11) | (self.function << 8) | (offset & 0xFC)

    def read32(self, offset: int) -> int:
        self.qt.outl(CONFIG_ADDRESS, self._address(offset))
        return self.qt.inl(CONFIG_DATA)

    def write32(self, offset: int, value: int) -> None:
        self.qt.outl(CONFIG_ADDRESS, self._address(offset))
        self.qt.outl(CONFIG_DATA, value & 0xFFFF_FFFF)

    def read16(self, offset: int) -> int:
        return (self.read32(offset) >> (8 * (offset & 2))) & 0xFFFF

    def write16(self, offset: int, value: int) -> None:
        shift = 8 * (offset & 2)
        word = self.read32(offset) & ~(0xFFFF << shift)
        self.write32(offset, word | ((value & 0xFFFF) << shift))

    @property
    def ids(self) -> tuple[int, int]:
        """(vendor, device); (0xffff, 0xffff) where nothing answers."""
        word = self.read32(VENDOR_ID)
        return word & 0xFFFF, word >> 16

    def enable(self) -> None:
        """Memory space and bus mastering on (section 6.2.2), as a driver does before touching BAR0."""
        self.write16(COMMAND, self.read16(COMMAND) | CMD_MEMORY | CMD_BUS_MASTER)

    def map_bar64(self, index: int, address: int) -> int:
        """Place 64-bit memory BAR `index` at `address` (aligned to its size); return its size."""
        offset = BAR0 + 4 * index
        low = self.read32(offset)
        if low & 1 or (low >> 1) & 3 != 2:
            raise PciError(f"BAR{index} of {self.slot:02x}.{self.function} is not a 64-bit memory BAR (0x{low:08x})")
        self.write32(offset, 0xFFFF_FFFF)
        self.write32(offset + 4, 0xFFFF_FFFF)
        size_mask = (self.read32(offset + 4) << 32) | (self.read32(offset) & ~0xF)
        size = (~size_mask + 1) & 0xFFFF_FFFF_FFFF_FFFF
        if size == 0 or address % size:
            raise PciError(f"BAR{index} of {self.slot:02x}.{self.function}: size 0x{size:x}, "
                           f"address 0x{address:x} is not aligned to it")
        self.write32(offset, address & 0xFFFF_FFFF)
        self.write32(offset + 4, address >> 32)
        return size


def device_at(qt: Qtest, slot: int, expect: tuple[int, int] = QEMU_NVME) -> PciDevice:
    """The function at `slot`.0 of pcie.0, checked to be `expect` (vendor, device)."""
    dev = PciDevice(qt, slot)
    found = dev.ids
    if found != expect:
        raise PciError(f"slot 0x{slot:02x} of pcie.0 holds {found[0]:04x}:{found[1]:04x}, not "
                       f"{expect[0]:04x}:{expect[1]:04x}: is the device on the command line with addr=0x{slot:02x}.0?")
    return dev


def find(qt: Qtest, vendor: int, device: int) -> list[PciDevice]:
    """Every function 0 on pcie.0 with these ids, by slot."""
    return [d for d in (PciDevice(qt, s) for s in range(32)) if d.ids == (vendor, device)]
