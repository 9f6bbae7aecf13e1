"""Boot with three NVMe controllers behind PCIe root ports and check what the guest sees."""
from nvme_hotswap import klog
from nvme_hotswap.testcase import HotswapTest


class BootTopology(HotswapTest):
    """nvme0..nvme2 behind rp0..rp2 with native PCIe hotplug: the baseline every scenario starts from.

    :avocado: enable
    :avocado: tags=arch:x86_64,machine:q35,nvme,boot
    """

    def test_three_controllers(self) -> None:
        """Names, PCI addresses and serials are as laid out; one namespace each, of the right size."""
        ctrls = self.guest.controllers()
        self.assertEqual([(c.name, c.address, c.serial, c.state) for c in ctrls],
                         [(c.dev_id, c.pci_address, c.serial, "live") for c in self.topology.controllers])
        nss = self.guest.namespaces()
        self.assertEqual([(n.block, n.controller, n.nsid, n.size_bytes) for n in nss],
                         [(f"nvme{c.index}n1", c.dev_id, ns.nsid, ns.size_bytes)
                          for c in self.topology.controllers for ns in c.namespaces])

    def test_disks_hold_their_labels(self) -> None:
        """Each disk reads back the label written into its backing file: the wiring is right."""
        for c in self.topology.controllers:
            label = c.namespaces[0].label
            self.assertEqual(self.guest.read_head(f"nvme{c.index}n1", len(label)), label)

    def test_root_ports_have_aer_and_native_hotplug(self) -> None:
        """AER recovery and surprise removal need the AER service and pciehp on every root port."""
        log = self.guest.klog()
        for c in self.topology.controllers:
            self.assertTrue(klog.find(log, klog.AER_ENABLED, port=c.port_pci_address),
                            f"no 'AER: enabled' for {c.port_id} ({c.port_pci_address})")
            self.assertTrue(klog.find(log, klog.PCIEHP_SLOT, port=c.port_pci_address),
                            f"no native hotplug slot (pciehp HotPlug+) for {c.port_id} ({c.port_pci_address})")
