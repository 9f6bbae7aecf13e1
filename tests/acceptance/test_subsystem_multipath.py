"""The series author's configuration: an nvme-subsys per controller, with and without multipath.

Both hot-swap sequences keep the names in both modes. What the kernel names differs: with native
multipath the controller carries a hidden path node (nvme2c2n1) under the subsystem's disk
(nvme2n1); with nvme_core.multipath=N the controller carries the disk itself.
"""
import re

from nvme_hotswap.testcase import HotswapTest
from nvme_hotswap.vm.topology import label_of


class SubsystemSwap(HotswapTest):
    """Both sequences on nvme2 in its own nvme-subsys; subclasses choose the multipath mode.
    Not a test itself (pytest: __test__; avocado: no `enable`)."""

    __test__ = False
    subsys = True
    multipath = "Y"

    def assert_kernel_naming(self) -> None:
        """Multipath: the controller (nvmeC) carries the path node nvmeScCn1 of the subsystem's disk
        nvmeSn1. Without: it carries its disk nvmeCn1 itself."""
        self.assertEqual(self.guest.check("cat /sys/module/nvme_core/parameters/multipath").strip(), self.multipath)
        ctrl = self.rig.ctrl_name(2)
        ns = self.guest.namespace(ctrl, 1)
        self.assertEqual(ns.block, self.rig.disk(2))
        if self.multipath == "Y":
            subsys_disk = re.fullmatch(r"nvme(\d+)n1", ns.block)
            self.assertIsNotNone(subsys_disk, ns.block)
            self.assertEqual(ns.entry, f"nvme{subsys_disk.group(1)}c{ctrl.removeprefix('nvme')}n1")
        else:
            self.assertEqual((ns.entry, ns.block), (f"{ctrl}n1", f"{ctrl}n1"))

    def test_drive_reconnect(self) -> None:
        """:avocado: tags=needs:drive_insert"""
        self.assert_kernel_naming()
        before = self.guest.nvme_names()
        digest = self.guest.write_random(self.rig.disk(2), 256, 4)
        self.swap_drive(2, self.rig.ctrl(2).namespaces[0].image)
        self.assert_names_unchanged(before)
        self.assert_kernel_naming()
        self.assertEqual(self.guest.read_sha256(self.rig.disk(2), 256, 4), digest)

    def test_namespace_swap(self) -> None:
        """:avocado: tags=needs:nvme_ns_hotplug"""
        self.assert_kernel_naming()
        before = self.guest.nvme_names()
        self.rig.namespace_swap(2, self.rig.new_disk("swapped-in"))
        self.assert_names_unchanged(before)
        self.assert_kernel_naming()
        self.assertEqual(self.guest.read_head(self.rig.disk(2), len(label_of("swapped-in"))), label_of("swapped-in"))


class SubsystemMultipathOn(SubsystemSwap):
    """Debian's default: native NVMe multipath.

    :avocado: recursive
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,aer,subsys,multipath
    """

    __test__ = True


class SubsystemMultipathOff(SubsystemSwap):
    """As the cover letter was tested: nvme_core.multipath=N.

    :avocado: recursive
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,aer,subsys
    """

    __test__ = True
    multipath = "N"
    extra_kernel_args = "nvme_core.multipath=N"
