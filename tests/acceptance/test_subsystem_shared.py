"""A dual-ported drive: nvme1 and nvme2 in one nvme-subsys. A namespace plugged into the subsystem
reaches every controller and every path, and leaves all of them on unplug; what is private or
detached stays so. Multipath on: one disk with a path per controller; off: a disk per controller."""
import json

from nvme_hotswap.guest import klog
from nvme_hotswap.guest.facts import NamespaceInfo
from nvme_hotswap.hotswap.rig import NAMESPACE_TIMEOUT_S, UNPLUG_TIMEOUT_S
from nvme_hotswap.known_defects import known_defect
from nvme_hotswap.testcase import HotswapTest
from nvme_hotswap.vm.topology import label_of
from nvme_hotswap.wait import wait_until

A, B = 1, 2                # the two controllers of the shared subsystem; controller 0 stands alone


class SharedSubsystem(HotswapTest):
    """Hotplug and both swaps on a subsystem with two controllers; subclasses choose multipath.
    Not a test itself (pytest: __test__; avocado: no `enable`)."""

    __test__ = False
    shared_subsys = (A, B)
    multipath = "Y"

    def on_both(self, nsid: int) -> tuple[NamespaceInfo, NamespaceInfo]:
        """Wait until NSID `nsid` is under both controllers; check the kernel's naming of it."""
        a, b = self.rig.ctrl_name(A), self.rig.ctrl_name(B)

        def both() -> tuple[NamespaceInfo, NamespaceInfo] | None:
            x, y = self.guest.namespace(a, nsid), self.guest.namespace(b, nsid)
            return (x, y) if x and y else None

        x, y = wait_until(both, 20, f"NSID {nsid} under both {a} and {b}")
        if self.multipath == "Y":
            self.assertEqual(x.block, y.block, "multipath: both controllers should be paths of one disk")
            self.assertNotEqual(x.entry, y.entry, "multipath: each controller has its own path node")
        else:
            self.assertEqual((x.block, y.block), (x.entry, y.entry), "without multipath the disk is the entry")
            self.assertTrue(x.block.startswith(f"{a}n") and y.block.startswith(f"{b}n"),
                            f"without multipath each controller carries its own disk: {x.block}, {y.block}")
        return x, y

    def gone_from_both(self, nsid: int) -> None:
        for index in (A, B):
            self.rig.wait_for_namespace_gone(index, nsid)

    def assert_rescans(self, mark: str, expected: set[int]) -> None:
        """Exactly the controllers `expected` got the AEN (they rescanned); wait for each."""
        for index in expected:
            self.rig.wait_for_klog(mark, klog.NS_RESCAN, ctrl=self.rig.ctrl_name(index))
        lines = self.guest.klog_since(mark)
        for c in self.topology.controllers:
            if c.index not in expected:
                name = self.rig.ctrl_name(c.index)
                self.assertFalse(klog.find(lines, klog.NS_RESCAN, ctrl=name),
                                 f"{name} rescanned: it was told of a namespace it does not have")

    def wait_for_private(self, index: int, nsid: int, mark: str) -> NamespaceInfo:
        """Wait for private NSID `nsid` under controller `index`. A private namespace that reached
        another controller of the subsystem too is refused by the guest ("Duplicate unshared
        namespace"), on whichever controller came second: that is named at once, as it is."""
        controller = self.rig.ctrl_name(index)

        def seen() -> NamespaceInfo | None:
            refused = klog.find(self.guest.klog_since(mark), klog.DUPLICATE_UNSHARED, nsid=str(nsid))
            if refused:
                raise AssertionError(f"private NSID {nsid} (shared=off) reached two controllers of the subsystem; "
                                     f"the guest refused it: {refused[0].text!r} (NVMe: a private namespace is "
                                     "attached to one controller at a time)")
            return self.guest.namespace(controller, nsid)

        return wait_until(seen, NAMESPACE_TIMEOUT_S, f"private NSID {nsid} to appear under {controller}")

    def test_boot_namespace_on_both(self) -> None:
        x, y = self.on_both(1)
        self.assertEqual(self.guest.read_head(x.block, len(self.rig.ctrl(A).namespaces[0].label)),
                         self.rig.ctrl(A).namespaces[0].label)

    def test_plug_and_unplug_reach_every_controller(self) -> None:
        """:avocado: tags=needs:nvme_ns_hotplug"""
        before = self.guest.nvme_names()
        image = self.rig.new_disk("shared-hot", size_mib=32)
        hot = self.rig.ctrl(A).hot_namespace(nsid=2, image=image)
        mark = self.guest.klog_mark()
        self.rig.plug_namespace(hot, image)
        for info in self.on_both(2):
            self.assertEqual(info.size_bytes, 32 << 20)
            self.assertEqual(self.guest.read_head(info.block, len(label_of("shared-hot"))), label_of("shared-hot"))
        self.assert_rescans(mark, {A, B})

        mark = self.guest.klog_mark()
        self.rig.unplug_namespace(hot)
        self.gone_from_both(2)
        self.assert_rescans(mark, {A, B})
        self.vm.drive_del(hot.drive_id)
        self.assert_names_unchanged(before)

    @known_defect("docs/findings/nvme-private-namespace-hotplug-reaches-every-controller.md",
                  r"Duplicate unshared namespace 3")
    def test_private_namespace_stays_on_its_controller(self) -> None:
        """shared=off: only the controller it is plugged into gets it, and only it hears of it.

        :avocado: tags=needs:nvme_ns_hotplug
        """
        image = self.rig.new_disk("private", size_mib=16)
        hot = self.rig.ctrl(B).hot_namespace(nsid=3, image=image)
        mark = self.guest.klog_mark()
        self.rig.plug_namespace(hot, image, shared=False)
        self.wait_for_private(B, 3, mark)
        self.guest.check("sleep 1")   # the other controller's AEN, had one been sent, is handled well within this
        self.wait_for_private(B, 3, mark)
        self.assert_rescans(mark, {B})
        self.assertIsNone(self.guest.namespace(self.rig.ctrl_name(A), 3),
                          f"{self.rig.ctrl_name(A)} got a namespace private to {self.rig.ctrl_name(B)}")
        mark = self.guest.klog_mark()
        self.rig.unplug_namespace(hot)
        self.rig.wait_for_namespace_gone(B, 3)
        self.assert_rescans(mark, {B})
        self.vm.drive_del(hot.drive_id)

    def test_detached_namespace_waits_for_attach(self) -> None:
        """detached=on: no controller gets it or hears of it until the host attaches it (Namespace
        Attachment), and then only the controller named.

        :avocado: tags=needs:nvme_ns_hotplug
        """
        image = self.rig.new_disk("detached", size_mib=16)
        hot = self.rig.ctrl(A).hot_namespace(nsid=2, image=image)
        mark = self.guest.klog_mark()
        self.rig.plug_namespace(hot, image, detached=True)
        self.guest.check("sleep 2")   # an AEN, had one been sent, is handled well within this
        self.assert_rescans(mark, set())
        for index in (A, B):
            self.assertIsNone(self.guest.namespace(self.rig.ctrl_name(index), 2), "a detached namespace was attached")
        ctrl_b = self.rig.ctrl_name(B)
        cntlid = json.loads(self.guest.check(f"nvme id-ctrl /dev/{ctrl_b} -o json"))["cntlid"]
        mark = self.guest.klog_mark()
        self.guest.check(f"nvme attach-ns /dev/{ctrl_b} --namespace-id=2 --controllers={cntlid}")
        self.rig.wait_for_namespace(B, 2)
        self.assert_rescans(mark, {B})
        self.assertIsNone(self.guest.namespace(self.rig.ctrl_name(A), 2))
        self.rig.unplug_namespace(hot)
        self.rig.wait_for_namespace_gone(B, 2)
        self.vm.drive_del(hot.drive_id)

    def test_plug_after_a_port_is_gone(self) -> None:
        """A dual-ported drive that lost a port: with the subsystem's first controller unplugged, a
        namespace plugged into the subsystem reaches the controller that remains (the empty slot
        before it in the subsystem must not end the attach).

        :avocado: tags=needs:nvme_ns_hotplug
        """
        cntlid = {i: json.loads(self.guest.check(f"nvme id-ctrl /dev/{self.rig.ctrl_name(i)} -o json"))["cntlid"]
                  for i in (A, B)}
        gone, kept = sorted((A, B), key=cntlid.__getitem__)
        port = self.rig.ctrl(gone)
        self.vm.device_del(port.dev_id, UNPLUG_TIMEOUT_S)
        wait_until(lambda: True if port.pci_address not in self.guest.nvme_names() else None, 30,
                   f"the guest to drop the controller at {port.pci_address}")
        image = self.rig.new_disk("after-port-loss", size_mib=16)
        hot = self.rig.ctrl(kept).hot_namespace(nsid=2, image=image)
        mark = self.guest.klog_mark()
        self.rig.plug_namespace(hot, image)
        info = self.rig.wait_for_namespace(kept, 2)
        self.assertEqual(self.guest.read_head(info.block, len(label_of("after-port-loss"))),
                         label_of("after-port-loss"))
        self.rig.wait_for_klog(mark, klog.NS_RESCAN, ctrl=self.rig.ctrl_name(kept))
        self.rig.unplug_namespace(hot)
        self.rig.wait_for_namespace_gone(kept, 2)
        self.vm.drive_del(hot.drive_id)

    def test_namespace_swap(self) -> None:
        """:avocado: tags=needs:nvme_ns_hotplug"""
        before = self.guest.nvme_names()
        self.rig.namespace_swap(A, self.rig.new_disk("swapped-in"))
        for info in self.on_both(1):
            self.assertEqual(self.guest.read_head(info.block, len(label_of("swapped-in"))), label_of("swapped-in"))
        self.assert_names_unchanged(before)

    def test_drive_reconnect(self) -> None:
        """:avocado: tags=needs:drive_insert"""
        before = self.guest.nvme_names()
        x, y = self.on_both(1)
        digest = self.guest.write_random(x.block, 256, 4)
        self.swap_drive(A, self.rig.ctrl(A).namespaces[0].image)
        self.assert_names_unchanged(before)
        for info in self.on_both(1):
            self.assertEqual(self.guest.read_sha256(info.block, 256, 4), digest, f"{info.block} lost the data")


class SharedSubsystemMultipathOn(SharedSubsystem):
    """Debian's default: one disk, a path through each controller.

    :avocado: recursive
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,subsys,multipath,shared
    """

    __test__ = True


class SharedSubsystemMultipathOff(SharedSubsystem):
    """nvme_core.multipath=N: a disk per controller.

    :avocado: recursive
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,subsys,shared
    """

    __test__ = True
    multipath = "N"
    extra_kernel_args = "nvme_core.multipath=N"
