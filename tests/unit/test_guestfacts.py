"""Parsers of guest output, on text recorded from a Debian 12 guest."""
import unittest

from nvme_hotswap.guest import facts as guestfacts

CONTROLLERS = (
    "ctrl\tnvme0\t0000:01:00.0\tlive\tNVMEHS0000          \tnqn.2019-08.org.qemu:NVMEHS0000\n"
    "ctrl\tnvme10\t0000:0b:00.0\tresetting\tNVMEHS0010\t\n"
    "ctrl\tnvme2\t0000:03:00.0\tlive\tNVMEHS0002\tnqn.2019-08.org.qemu:NVMEHS0002\n"
)
NAMESPACES = (
    "ns\tnvme0\tnvme0c0n1\t1\t131072\n"     # multipath: hidden path node
    "ns\tnvme2\tnvme2n1\t1\t131072\n"       # nvme_core.multipath=N: the disk itself
    "ns\tnvme3\tnvme2c3n2\t2\t2048\n"
)
DMESG = """[    0.000000] Linux version 6.1.0-44-amd64
[    1.234567] pcieport 0000:00:10.0: AER: enabled with IRQ 24
[    5.000001] nvme-hotswap: mark abc
[    5.100000] nvme nvme2: rescanning namespaces.
not a kernel line
"""


class ParseControllers(unittest.TestCase):
    def test_fields_trimmed_and_sorted_naturally(self) -> None:
        ctrls = guestfacts.parse_controllers(CONTROLLERS)
        self.assertEqual([c.name for c in ctrls], ["nvme0", "nvme2", "nvme10"])
        self.assertEqual(ctrls[0].serial, "NVMEHS0000")
        self.assertEqual(ctrls[2].state, "resetting")
        self.assertEqual(ctrls[1].address, "0000:03:00.0")

    def test_ignores_other_lines(self) -> None:
        self.assertEqual(guestfacts.parse_controllers("garbage\nctrl\tshort\n"), [])


# Recorded on Debian 13's 6.12 cloud kernel (nvme built in): the asynchronous probe numbered the
# controller behind rp2 before the one behind rp1.
SCRAMBLED_6_12 = (
    "ctrl\tnvme0\t0000:01:00.0\tlive\tNVMEHS0000          \tnqn.2019-08.org.qemu:NVMEHS0000\n"
    "ctrl\tnvme1\t0000:03:00.0\tlive\tNVMEHS0002          \tnqn.2019-08.org.qemu:NVMEHS0002\n"
    "ctrl\tnvme2\t0000:02:00.0\tlive\tNVMEHS0001          \tnqn.2019-08.org.qemu:NVMEHS0001\n")


class ProbeOrder(unittest.TestCase):
    def test_names_follow_probe_order_not_addresses(self) -> None:
        """Why tests look controllers up by PCI address (HotswapTest.ctrl_name)."""
        by_address = {c.address: c.name for c in guestfacts.parse_controllers(SCRAMBLED_6_12)}
        self.assertEqual(by_address, {"0000:01:00.0": "nvme0", "0000:02:00.0": "nvme2", "0000:03:00.0": "nvme1"})


class ParseNamespaces(unittest.TestCase):
    def test_multipath_path_nodes_map_to_the_head_disk(self) -> None:
        nss = guestfacts.parse_namespaces(NAMESPACES)
        self.assertEqual([(n.block, n.controller, n.nsid, n.size_bytes) for n in nss],
                         [("nvme0n1", "nvme0", 1, 64 << 20), ("nvme2n1", "nvme2", 1, 64 << 20),
                          ("nvme2n2", "nvme3", 2, 1 << 20)])

    def test_block_device_of(self) -> None:
        self.assertEqual(guestfacts.block_device_of("nvme12c3n4"), "nvme12n4")
        self.assertEqual(guestfacts.block_device_of("nvme1n1"), "nvme1n1")

    def test_entry_keeps_the_path_node_name(self) -> None:
        self.assertEqual([n.entry for n in guestfacts.parse_namespaces(NAMESPACES)],
                         ["nvme0c0n1", "nvme2n1", "nvme2c3n2"])


class ParseDmesg(unittest.TestCase):
    def test_timestamps_and_untimed_lines(self) -> None:
        lines = guestfacts.parse_dmesg(DMESG)
        self.assertEqual(lines[1].seconds, 1.234567)
        self.assertEqual(lines[1].text, "pcieport 0000:00:10.0: AER: enabled with IRQ 24")
        self.assertIsNone(lines[-1].seconds)

    def test_lines_after_mark(self) -> None:
        lines = guestfacts.parse_dmesg(DMESG)
        after = guestfacts.lines_after_mark(lines, "nvme-hotswap: mark abc")
        self.assertEqual([line.text for line in after], ["nvme nvme2: rescanning namespaces.", "not a kernel line"])

    def test_missing_mark_keeps_everything(self) -> None:
        lines = guestfacts.parse_dmesg(DMESG)
        self.assertEqual(guestfacts.lines_after_mark(lines, "nope"), lines)


class DevPath(unittest.TestCase):
    def test_a_device_name_becomes_its_path_and_a_path_is_refused(self) -> None:
        from nvme_hotswap.guest.ssh import dev_path
        self.assertEqual(dev_path("nvme2n1"), "/dev/nvme2n1")
        for wrong in ("/dev/vda", "vda; reboot", ""):
            with self.subTest(wrong=wrong), self.assertRaisesRegex(ValueError, "guest block device name"):
                dev_path(wrong)
