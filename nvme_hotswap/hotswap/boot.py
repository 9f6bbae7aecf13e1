"""Boot the test guest: the QEMU command line and the wait until SSH answers.

Used by the tests (through Rig), soak, fuzz and bench alike, so all of them measure and test the
same machine.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..config import ConfigError, RunConfig
from ..guest import cloud, sshkey
from ..guest.ssh import Guest
from ..vm.accel import AccelChoice
from ..vm.machine import QemuMachine
from ..vm.topology import NIC_SLOT, Topology

BOOT_TIMEOUT_S = 180.0     # serial marker; TCG on a loaded 2-core machine
SSH_TIMEOUT_S = 60.0
# `quiet` only quiets the console (dmesg keeps info lines); the crypto self-tests cost ~0.8 s under TCG.
KERNEL_ARGS = "panic=-1 quiet cryptomgr.notests=1"   # console= comes from the architecture
GUEST_RAM_MIB = 1024


def accel_args(accel: AccelChoice) -> list[str]:
    """-accel for the chosen accelerator.

    TCG runs its vCPUs in one thread: multi-threaded TCG in QEMU 10.2.2 aborts now and then while
    the guest programs PCI BARs at boot (`iotlb_to_section: Assertion section_index <
    d->map.sections_nb failed`, seen in about 1 boot in 40 here), and one thread costs nothing on
    a 2-core host.
    """
    return ["-accel", "tcg,thread=single"] if accel.accel == "tcg" else ["-accel", accel.accel]


def vcpus(accel: AccelChoice) -> str:
    """Two vCPUs under KVM; one under TCG, whose single thread gains nothing from a second vCPU
    and whose SMP bring-up costs the boot about 0.5 s (median boot to SSH 4.04 s -> 3.50 s here)."""
    return "1" if accel.accel == "tcg" else "2"


def guest_qemu_args(cfg: RunConfig, accel: AccelChoice, topology: Topology, native_pcie_hotplug: bool = True,
                    extra_kernel_args: str = "") -> list[str]:
    """The machine (q35, or virt for GUEST_ARCH=aarch64), the guest kernel and initramfs, slirp with
    SSH forwarded to a free loopback port.

    Guest flavour (cfg.flavour): `fast` boots the initramfs guest; `cloud` boots a rootfs
    disk with a NoCloud seed instead (nvme_hotswap/guest/cloud.py). The rest of the machine is the same.
    """
    platform = cfg.arch
    if cfg.flavour == "cloud":
        boot = cloud.qemu_boot_args(cfg, extra_kernel_args)
    else:
        guest_dir = cfg.guest_dir
        boot = [*platform.firmware,
                "-kernel", str(guest_dir / platform.kernel_file), "-initrd", str(guest_dir / "initramfs.img"),
                "-append", " ".join(a for a in (f"console={platform.console}", KERNEL_ARGS, sshkey.kernel_arg(),
                                          platform.firmware_kernel_args, extra_kernel_args) if a)]
    args = ["-machine", platform.machine, *accel_args(accel), "-cpu", platform.cpu, "-smp", vcpus(accel),
            "-m", str(GUEST_RAM_MIB),
            "-nodefaults", "-display", "none", "-no-user-config", "-no-reboot",
            *cfg.firmware_args(), *boot,
            "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:0-:22",
            "-device", f"virtio-net-pci,netdev=net0,romfile=,bus=pcie.0,addr=0x{NIC_SLOT:x}"]
    if native_pcie_hotplug:
        # q35's default ACPI PCI hotplug breaks AER recovery (test_acpi_hotplug_recovery); native PCIe hotplug is
        # what the series' author had on aarch64 virt (where it is the only kind).
        args += platform.native_hotplug_args
    elif not platform.acpi_pci_hotplug:
        raise ConfigError(f"{platform.machine} has no ACPI PCI hotplug; only native PCIe hotplug")
    return args + topology.qemu_args()


def boot_guest(cfg: RunConfig, args: list[str], artifacts: Path, name: str = "vm") -> tuple[QemuMachine, Guest, float]:
    """Launch QEMU, wait for the guest's sshd, connect; return (vm, guest, seconds).

    If anything fails the VM is ended before the error propagates.
    """
    start = time.monotonic()
    vm = QemuMachine(cfg.qemu_binary, args, artifacts, name=name)
    vm.launch()
    try:
        if cfg.flavour == "cloud":
            # No console marker (a cloud image prints a login prompt): retry SSH within the
            # boot bound until sshd answers and cloud-init has installed the key.
            guest = Guest(vm.usernet_ssh_port(), sshkey.private_key_file(), artifacts / f"{name}-ssh.log",
                          user=cfg.cloud_user, health=vm.check_health)
            guest.connect(BOOT_TIMEOUT_S)
        else:
            Guest.wait_for_console(vm.console_text, BOOT_TIMEOUT_S, vm.check_health)
            guest = Guest(vm.usernet_ssh_port(), sshkey.private_key_file(), artifacts / f"{name}-ssh.log",
                          health=vm.check_health)
            guest.connect(SSH_TIMEOUT_S)
    except BaseException:
        vm.shutdown()
        raise
    return vm, guest, time.monotonic() - start
