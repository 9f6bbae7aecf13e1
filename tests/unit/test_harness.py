"""Pure helpers of the harness: tags, topology arguments, usernet parsing, the KVM probe image."""
import tempfile
import unittest
from pathlib import Path

from nvme_hotswap import tags
from nvme_hotswap.vm import accel, machine, topology
from nvme_hotswap.wait import WaitTimeout, wait_until

INFO_USERNET = """Hub -1 (net0):
  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
  TCP[HOST_FORWARD]  13       127.0.0.1 41237       10.0.2.15    22     0     0
  TCP[HOST_FORWARD]  14       127.0.0.1 41999       10.0.2.15  8080     0     0
"""


class Example:
    """Class doc.

    :avocado: enable
    :avocado: tags=arch:x86_64,nvme
    """

    def test_x(self) -> None:
        """:avocado: tags=needs:drive_insert,nvme"""


class Tags(unittest.TestCase):
    def test_class_and_method_tags_merge(self) -> None:
        self.assertEqual(tags.of_test(Example, "test_x"), ["arch:x86_64", "nvme", "needs:drive_insert"])

    def test_marker_names_and_needs(self) -> None:
        self.assertEqual(tags.marker_name("needs:drive_insert"), "needs_drive_insert")
        self.assertEqual(tags.marker_name("machine:q35"), "machine_q35")
        self.assertEqual(tags.needs(["nvme", "needs:drive_insert", "needs:nvme_ns_hotplug"]),
                         ["drive_insert", "nvme_ns_hotplug"])


class TopologyArgs(unittest.TestCase):
    def test_three_controllers(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            topo = topology.Topology.create(Path(tmp), controllers=3, size_mib=1)
            args = topo.qemu_args()
            c2 = topo.controller(2)
            self.assertIn("pcie-root-port,id=rp2,bus=pcie.0,addr=0x12,chassis=3,slot=3", args)
            self.assertIn("nvme,id=nvme2,serial=NVMEHS0002,bus=rp2", args)
            self.assertIn("nvme-ns,id=ns2,drive=drv2,bus=nvme2,nsid=1", args)
            self.assertEqual((c2.port_pci_address, c2.pci_address), ("0000:00:12.0", "0000:03:00.0"))
            image = c2.namespaces[0].image
            self.assertEqual(image.stat().st_size, 1 << 20)
            self.assertTrue(image.read_bytes().startswith(b"nvme-hotswap disk ns2\n"))

    def test_subsystem_per_controller(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            args = topology.Topology.create(Path(tmp), controllers=1, size_mib=1, subsys=True).qemu_args()
            self.assertIn("nvme,id=nvme0,serial=NVMEHS0000,bus=rp0,subsys=subsys0", args)
            self.assertTrue(any(a.startswith("nvme-subsys,id=subsys0,") for a in args))


class Usernet(unittest.TestCase):
    def test_finds_the_ssh_forward(self) -> None:
        self.assertEqual(machine.parse_usernet_hostfwd(INFO_USERNET, 22), 41237)
        self.assertEqual(machine.parse_usernet_hostfwd(INFO_USERNET, 8080), 41999)

    def test_missing_forward_names_the_port(self) -> None:
        with self.assertRaisesRegex(ValueError, "guest port 2222"):
            machine.parse_usernet_hostfwd(INFO_USERNET, 2222)


class KvmProbeImage(unittest.TestCase):
    def test_reset_vector_jumps_to_the_loop(self) -> None:
        rom = accel.probe_rom()
        self.assertEqual(len(rom), 0x10000)
        self.assertEqual(rom[0xFFF0:0xFFF5], bytes.fromhex("ea000000f0"))
        self.assertIn(b"\xb0K\xee", rom)  # mov al,'K'; out dx,al


class Wait(unittest.TestCase):
    def test_returns_the_truthy_value(self) -> None:
        values = iter([0, [], "ok"])
        self.assertEqual(wait_until(lambda: next(values), 5, "a value", interval=0), "ok")

    def test_timeout_names_what_was_awaited(self) -> None:
        with self.assertRaisesRegex(WaitTimeout, "waited 0.05 s for the disk; last seen: None"):
            wait_until(lambda: None, 0.05, "the disk", interval=0.01)


class QemuStatus(unittest.TestCase):
    def test_a_signal_is_named(self) -> None:
        self.assertEqual(machine.describe_status(-6), "killed by SIGABRT (exit -6)")
        self.assertEqual(machine.describe_status(1), "exit 1")
        self.assertEqual(machine.describe_status(None), "still running")


class SharedSubsystem(unittest.TestCase):
    def test_two_controllers_one_subsystem_one_set_of_namespaces(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            topo = topology.Topology.create(Path(tmp), controllers=3, size_mib=1, shared_subsys=(1, 2))
            args = topo.qemu_args()
        self.assertEqual(sum(a.startswith("nvme-subsys,") for a in args), 1)
        self.assertIn("nvme,id=nvme1,serial=NVMEHS0001,bus=rp1,subsys=subsys1", args)
        self.assertIn("nvme,id=nvme2,serial=NVMEHS0001,bus=rp2,subsys=subsys1", args)   # one serial per subsystem
        self.assertIn("nvme,id=nvme0,serial=NVMEHS0000,bus=rp0", args)
        self.assertEqual([len(c.namespaces) for c in topo.controllers], [1, 1, 0])
        self.assertEqual(topo.controller(1).hot_namespace(2, Path("x.img")).dev_id, "ns1_1")


class NeedsUsed(unittest.TestCase):
    """What a test used at the monitor, as its needs: tags must name it."""

    def test_each_capability_is_seen_in_the_command_that_relies_on_it(self) -> None:
        from nvme_hotswap.vm.capabilities import used
        self.assertEqual(used([("qmp", "device_add", '{"driver": "nvme-ns", "id": "ns2"}')]), {"nvme_ns_hotplug"})
        self.assertEqual(used([("hmp", "device_add", "device_add nvme-ns,id=x,drive=d,bus=nvme0")]),
                         {"nvme_ns_hotplug"})
        self.assertEqual(used([("hmp", "drive_insert", "drive_insert ns2 /x.img")]), {"drive_insert"})
        self.assertEqual(used([("qmp", "x-blockdev-reconnect", "{}")]), {"reconnect_qmp"})
        self.assertEqual(used([("hmp", "drive_insert", "drive_insert ns2 /x.qcow2 qcow2")]),
                         {"drive_insert", "drive_insert_format"})

    def test_needs_reconnect_is_either_interface(self) -> None:
        from nvme_hotswap.vm.capabilities import tag_mismatch
        for used_caps in ({"drive_insert"}, {"reconnect_qmp"}):
            self.assertEqual(tag_mismatch({"reconnect"}, used_caps), (set(), set()))
        self.assertEqual(tag_mismatch({"reconnect"}, set()), (set(), {"reconnect"}))
        self.assertEqual(tag_mismatch({"reconnect", "drive_insert"}, {"drive_insert"}), (set(), set()),
                         "a member declared beside its alias stays its own")
        self.assertEqual(tag_mismatch(set(), {"drive_insert"}), ({"drive_insert"}, set()))
        self.assertEqual(tag_mismatch({"drive_insert"}, {"drive_insert"}), (set(), set()))

    def test_what_stock_qemu_has_needs_nothing(self) -> None:
        from nvme_hotswap.vm.capabilities import used
        self.assertEqual(used([("qmp", "device_add", '{"driver": "nvme", "id": "c"}'),
                               ("hmp", "drive_del", "drive_del d"),
                               ("hmp", "pcie_aer_inject_error", "pcie_aer_inject_error rp2 SDN"),
                               ("qmp", "device_del", '{"id": "ns2"}')]), set())
