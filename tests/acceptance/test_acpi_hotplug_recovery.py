"""The cover letter's sequence on q35 with its default ACPI PCI hotplug: AER recovery fails.

This records which configuration the series needs: with ACPI hotplug the root port's link does
not come back after the Surprise Down error, the guest reports `device recovery failed`, and
I/O to the disk errors or hangs. The test passes when that documented behaviour is observed.
"""
from nvme_hotswap.guest import klog
from nvme_hotswap.hotswap.rig import RECOVERY_TIMEOUT_S
from nvme_hotswap.testcase import HotswapTest


class AcpiHotplugRecovery(HotswapTest):
    """drive_del / drive_insert / SDN with ACPI hotplug on the root ports: recovery fails.

    :avocado: enable
    :avocado: tags=arch:x86_64,machine:q35,nvme,aer,acpi-hotplug,needs:drive_insert
    """

    native_pcie_hotplug = False

    def test_recovery_fails(self) -> None:
        c = self.rig.ctrl(2)
        ns = c.namespaces[0]
        self.assertFalse(klog.find(self.guest.klog(), klog.PCIEHP_SLOT, port=c.port_pci_address),
                         "pciehp drives the slot: this is not the ACPI hotplug configuration")
        mark = self.rig.pull(2)
        self.rig.reinsert(2, ns.image)
        self.rig.inject_aer(2, "SDN")

        self.rig.wait_for_klog(mark, klog.RECOVERY_FAILED, RECOVERY_TIMEOUT_S, port=c.port_pci_address)
        lines = self.guest.klog_since(mark)
        self.assertFalse(klog.find(lines, klog.RECOVERY_OK, port=c.port_pci_address))
        self.assertFalse(klog.find(lines, klog.LINK_RESET_OK, port=c.port_pci_address))
        disk = self.rig.disk(2)
        read = self.guest.try_read(disk, seconds=10)
        self.assertIn(read.status, ("error", "hung"), f"{disk} still reads after a failed recovery")
        self.log.info("read of %s after the failed recovery: %s", disk, read)
        self.observe(f"ACPI hotplug: device recovery failed; a read of {disk} then {read.status}"
                     + (f" (exit {read.rc})" if read.rc is not None else " (still blocked after 10 s)"))
