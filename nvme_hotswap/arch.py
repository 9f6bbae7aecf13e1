"""The guest architectures the suite boots: x86_64 on q35 and aarch64 on virt (GUEST_ARCH).

What differs between them is only the machine around the same topology: the machine type, the
CPU model, the console device, the kernel file and how PCIe hotplug is made native. Tests say
which they run on with `arch:` tags (avocado's convention); HotswapTest cancels the others.
"""
from __future__ import annotations

import dataclasses
import platform


@dataclasses.dataclass(frozen=True)
class Arch:
    name: str                 # GUEST_ARCH value, the avocado `arch:` tag, QEMU's target name
    machine: str              # -machine
    cpu: str                  # -cpu
    console: str              # the kernel's console= device
    kernel_file: str          # the kernel in the guest folder (images/build-guest.sh)
    firmware: tuple[str, ...]  # firmware for the directly booted fast guest
    firmware_kernel_args: str  # what the fast guest's kernel needs with that firmware
    native_hotplug_args: tuple[str, ...]  # what makes hotplug on the root ports native PCIe
    acpi_pci_hotplug: bool    # whether the machine offers ACPI PCI hotplug (q35's default)

    @property
    def qemu_binary_name(self) -> str:
        return f"qemu-system-{self.name}"

    @property
    def host_can_run_natively(self) -> bool:
        """KVM can only run a guest of the host's own architecture."""
        return platform.machine() == self.name


X86_64 = Arch(
    name="x86_64", machine="q35", cpu="max", console="ttyS0",
    # The uncompressed ELF kernel boots through PVH, ~4 s faster under TCG than the bzImage.
    kernel_file="vmlinux",
    # qboot (Debian's qemu-system-data) instead of SeaBIOS: it boots the PVH kernel and hands over
    # QEMU's ACPI tables (MCFG included, so AER's extended config space is there) ~0.3 s sooner under TCG.
    firmware=("-bios", "qboot.rom"),
    # qboot numbers the root ports' secondary buses in reverse slot order (rp2 -> bus 1); Linux then
    # renumbers them depth-first, as SeaBIOS and real firmware do, so nvmeN sits at 0000:0(N+1):00.0.
    firmware_kernel_args="pci=assign-busses",
    # q35's default ACPI PCI hotplug breaks AER recovery (native PCIe hotplug is what AER recovery
    # needs: docs/guests.md): turn it off for native pciehp.
    native_hotplug_args=("-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"),
    acpi_pci_hotplug=True,
)

AARCH64 = Arch(
    # GICv3 with its ITS gives the root ports and NVMe MSI/MSI-X. Booted with -kernel and no firmware,
    # the guest gets a device tree and no ACPI, so PCIe hotplug and AER are native: the series'
    # author's own platform. pauth-impdef: QEMU's cheap pointer authentication, much faster under TCG.
    name="aarch64", machine="virt,gic-version=3", cpu="max,pauth-impdef=on", console="ttyAMA0",
    kernel_file="Image",
    firmware=(),   # virt boots -kernel without firmware
    firmware_kernel_args="",
    native_hotplug_args=(),
    acpi_pci_hotplug=False,
)

ARCHES = {a.name: a for a in (X86_64, AARCH64)}


def tagged_arches(test_tags: list[str]) -> list[str]:
    """The architectures a test's `arch:` tags name (empty: any)."""
    return [t.split(":", 1)[1] for t in test_tags if t.startswith("arch:")]
