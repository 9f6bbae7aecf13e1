"""NVMe-level namespace hotplug on a live controller (series patch 1), as merged upstream in 11.1."""
from nvme_hotswap.guest import klog
from nvme_hotswap.testcase import HotswapTest
from nvme_hotswap.vm.topology import label_of


class NamespaceHotplug(HotswapTest):
    """device_add / device_del nvme-ns on nvme2: AEN, rescan, the block device comes and goes.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,aen,needs:nvme_ns_hotplug
    """

    def assert_rescanned_only(self, mark: str, index: int) -> None:
        """The AEN reached controller `index` (it rescanned) and no other controller rescanned."""
        self.rig.wait_for_klog(mark, klog.NS_RESCAN, ctrl=self.rig.ctrl_name(index))
        lines = self.guest.klog_since(mark)
        for other in (self.rig.ctrl_name(c.index) for c in self.topology.controllers if c.index != index):
            self.assertFalse(klog.find(lines, klog.NS_RESCAN, ctrl=other), f"{other} rescanned too")

    def test_hot_add(self) -> None:
        before = self.guest.nvme_names()
        image = self.rig.new_disk("hotadd", size_mib=32)
        mark = self.guest.klog_mark()

        hot = self.rig.ctrl(2).hot_namespace(nsid=2, image=image)
        self.rig.plug_namespace(hot, image)
        ns = self.rig.wait_for_namespace(2, 2)
        self.assert_rescanned_only(mark, 2)

        self.assertEqual(ns.size_bytes, 32 << 20)
        ident = self.guest.identify_namespace(ns.block)
        self.assertEqual(int(ident["nsze"]) * 512, 32 << 20, f"Identify Namespace of {ns.block}: {ident}")
        self.assertEqual(self.guest.read_head(ns.block, len(label_of("hotadd"))),
                         label_of("hotadd"))
        after = self.guest.nvme_names()
        self.assertEqual({a: n for a, (n, _) in after.items()}, {a: n for a, (n, _) in before.items()},
                         "a controller was renamed")
        self.assertEqual(after[self.rig.ctrl(2).pci_address][1], sorted([self.rig.disk(2), ns.block]))

        # Unplugged again, the namespace gives its drive back (the harness checks QEMU's block nodes).
        self.rig.unplug_namespace(hot)
        self.rig.wait_for_namespace_gone(2, 2)
        self.vm.drive_del(hot.drive_id)
        self.assert_names_unchanged(before)

    def test_hot_remove_and_replug(self) -> None:
        c = self.rig.ctrl(2)
        ns = c.namespaces[0]
        before = self.guest.nvme_names()
        mark = self.guest.klog_mark()

        self.rig.unplug_namespace(ns)
        self.rig.wait_for_namespace_gone(2, ns.nsid)
        self.assert_rescanned_only(mark, 2)
        self.assertEqual(self.guest.controller_at(c.pci_address).name, self.rig.ctrl_name(2))
        for other in (self.rig.disk(0), self.rig.disk(1)):
            digest = self.guest.write_random(other, 64, 4)
            self.assertEqual(self.guest.read_sha256(other, 64, 4), digest, f"I/O on {other} was disturbed")

        mark = self.guest.klog_mark()
        self.rig.plug_namespace(ns)  # the drive stays after device_del
        back = self.rig.wait_for_namespace(2, ns.nsid)
        self.assert_rescanned_only(mark, 2)
        self.assertEqual(back.block, self.rig.disk(2))
        self.assert_names_unchanged(before)
        self.assertEqual(self.guest.read_head(self.rig.disk(2), len(ns.label)), ns.label)

    def test_namespace_level_swap(self) -> None:
        """The sequence merged upstream: device_del, drive_del, drive_add a new file, device_add."""
        before = self.guest.nvme_names()
        fresh = self.rig.new_disk("swapped-in")

        self.rig.namespace_swap(2, fresh)

        self.assert_names_unchanged(before)
        self.assertEqual(self.guest.read_head(self.rig.disk(2), len(label_of("swapped-in"))),
                         label_of("swapped-in"), "the guest does not read the new disk's content")

