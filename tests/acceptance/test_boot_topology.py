"""Boot with three NVMe controllers behind PCIe root ports and check what the guest sees."""
from nvme_hotswap.guest import klog
from nvme_hotswap.testcase import HotswapTest


class BootTopology(HotswapTest):
    """Three controllers behind rp0..rp2 with native PCIe hotplug: the baseline of every scenario.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,boot
    """

    def test_three_controllers(self) -> None:
        """Each PCI address has its controller, live, with its serial and one namespace of the right
        size and NSID; the guest names them nvme0..nvme2 and nvme0n1..nvme2n1 (in probe order,
        which need not be PCI order: the scenarios look names up by address)."""
        ctrls = {c.address: c for c in self.guest.controllers()}
        self.assertEqual({a: (c.serial, c.state) for a, c in ctrls.items()},
                         {c.pci_address: (c.serial, "live") for c in self.topology.controllers})
        self.assertEqual(sorted(c.name for c in ctrls.values()), [c.dev_id for c in self.topology.controllers])
        nss = self.guest.namespaces()
        self.assertEqual(sorted((ctrls[c.pci_address].name, ns.nsid, ns.size_bytes)
                                for c in self.topology.controllers for ns in c.namespaces),
                         sorted((n.controller, n.nsid, n.size_bytes) for n in nss))
        self.assertEqual(sorted(n.block for n in nss), [f"nvme{c.index}n1" for c in self.topology.controllers])

    def test_disks_hold_their_labels(self) -> None:
        """Each disk reads back the label written into its backing file: the wiring is right."""
        for c in self.topology.controllers:
            label = c.namespaces[0].label
            self.assertEqual(self.guest.read_head(self.rig.disk(c.index), len(label)), label)

    def test_root_ports_have_aer_and_native_hotplug(self) -> None:
        """AER recovery and surprise removal need the AER service and pciehp on every root port."""
        log = self.guest.klog()
        for c in self.topology.controllers:
            self.assertTrue(klog.find(log, klog.AER_ENABLED, port=c.port_pci_address),
                            f"no 'AER: enabled' for {c.port_id} ({c.port_pci_address})")
            self.assertTrue(klog.find(log, klog.PCIEHP_SLOT, port=c.port_pci_address),
                            f"no native hotplug slot (pciehp HotPlug+) for {c.port_id} ({c.port_pci_address})")
