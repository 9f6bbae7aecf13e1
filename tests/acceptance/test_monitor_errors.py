"""Bad monitor input gets a clear error naming what was wrong; QEMU runs on, the guest is untouched."""
from collections.abc import Callable
from pathlib import Path

from nvme_hotswap.testcase import HotswapTest
from nvme_hotswap.vm.machine import MonitorError
from nvme_hotswap.vm.topology import drive_option, namespace_props


class MonitorErrors(HotswapTest):
    """Each wrong command is refused with a message naming the culprit; nothing else changes.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,monitor
    """

    def setUp(self) -> None:
        super().setUp()
        self.before = self.guest.nvme_names()
        self.digest = self.guest.write_random(self.rig.disk(1), 32, 4)

    def assert_refused(self, call: Callable[[], object], *names: str) -> None:
        """`call` fails with an error naming each of `names` (the culprits: never the wording, which
        is the series' own) and QEMU keeps running."""
        with self.assertRaises(MonitorError) as refused:
            call()
        message = str(refused.exception)
        self.log.info("refused as expected: %s", message)
        for name in names:
            self.assertIn(name, message, f"the error does not name {name!r}: {message}")
        self.assertEqual(self.vm.qmp("query-status")["status"], "running")

    def assert_guest_untouched(self) -> None:
        self.assert_names_unchanged(self.before)
        self.assertEqual(self.guest.read_sha256(self.rig.disk(1), 32, 4), self.digest)

    def test_stock_commands(self) -> None:
        """device_del of an unknown id, AER injection at an unknown port (no series needed)."""
        self.assert_refused(lambda: self.vm.qmp("device_del", id="nosuchdev"), "nosuchdev")
        self.assert_refused(lambda: self.vm.aer_inject("nosuchport", "SDN"), "nosuchport")
        self.assert_guest_untouched()

    def test_drive_insert(self) -> None:
        """Unknown device, a device that still has its medium, a missing file.

        :avocado: tags=needs:drive_insert
        """
        ns1, ns2 = self.rig.ctrl(1).namespaces[0], self.rig.ctrl(2).namespaces[0]
        self.assert_refused(lambda: self.vm.drive_insert("nosuchdev", ns1.image), "nosuchdev")
        self.assert_refused(lambda: self.vm.drive_insert(ns1.dev_id, ns1.image), ns1.dev_id)
        self.vm.drive_del(ns2.drive_id)
        missing = Path("/nonexistent/nvme-hotswap.img")
        self.assert_refused(lambda: self.vm.drive_insert(ns2.dev_id, missing), str(missing))
        self.vm.drive_insert(ns2.dev_id, ns2.image)  # the right call still works afterwards
        self.assertEqual(self.guest.nvme_names(), self.before)
        self.assert_guest_untouched()

    def test_namespace_device_add(self) -> None:
        """A duplicate NSID, an unknown bus.

        :avocado: tags=needs:nvme_ns_hotplug
        """
        self.vm.drive_add(drive_option("spare", self.rig.new_disk("spare")))
        bus = self.rig.ctrl(1).dev_id
        self.assert_refused(lambda: self.vm.qmp("device_add", **namespace_props("dup", "spare", bus, 1)),
                            "namespace id '1'")  # QEMU's existing wording for a taken NSID (hw/nvme/ns.c)
        self.assert_refused(lambda: self.vm.qmp("device_add", **namespace_props("lost", "spare", "nosuchbus", 2)),
                            "nosuchbus")
        self.assert_guest_untouched()
        self.vm.drive_del("spare")   # refused devices took nothing: the drive goes, QEMU is as it was

    def test_reconnect_refusals(self) -> None:
        """x-blockdev-reconnect, the QMP command under drive_insert, refuses an unknown device, a
        device that has its medium, an unknown node, a node another device uses and a read-only
        node for a writable device; each refusal names the culprit and leaves the block graph as it
        was; then the right call works and the guest reads its disk again.

        :avocado: tags=needs:reconnect_qmp
        """
        ns1, ns2 = self.rig.ctrl(1).namespaces[0], self.rig.ctrl(2).namespaces[0]
        node1 = next(b["inserted"]["node-name"] for b in self.vm.qmp("query-block") if b.get("device") == ns1.drive_id)

        def reconnect(dev: str, node: str) -> Callable[[], None]:
            return lambda: self.vm.blockdev_reconnect(dev, node)

        self.assert_refused(reconnect("nosuchdev", node1), "nosuchdev")
        self.assert_refused(reconnect(ns1.dev_id, node1), ns1.dev_id)   # it still has its medium
        mark = self.rig.pull(2)
        graph = self.vm.resources().nodes
        self.assert_refused(reconnect(ns2.dev_id, "nosuchnode"), "nosuchnode")
        self.assert_refused(reconnect(ns2.dev_id, node1), node1)    # ns1 uses it
        self.vm.qmp("blockdev-add", driver="raw", **{"node-name": "ro2", "read-only": True},
                    file={"driver": "file", "filename": str(ns2.image), "read-only": True})
        self.assert_refused(reconnect(ns2.dev_id, "ro2"))
        self.vm.qmp("blockdev-del", **{"node-name": "ro2"})
        self.assertEqual(self.vm.resources().nodes, graph, "a refused reconnect changed the block graph")

        self.vm.qmp("blockdev-add", driver="raw", **{"node-name": "back2"},
                    file={"driver": "file", "filename": str(ns2.image)})
        self.vm.blockdev_reconnect(ns2.dev_id, "back2")
        self.rig.inject_aer(2)
        self.rig.wait_for_recovery(2, mark)
        self.assertEqual(self.guest.read_head(self.rig.disk(2), len(ns2.label)), ns2.label)
        self.assert_guest_untouched()

    def test_reconnect_after_the_id_was_taken(self) -> None:
        """drive_del frees the drive's name; when a block node takes it before the reinsertion, QEMU
        neither aborts nor takes the name from its holder. Refusing the reinsertion with an error
        and reconnecting under another name (or none) both keep that; then the disk must read back.

        :avocado: tags=needs:drive_insert
        """
        ns2 = self.rig.ctrl(2).namespaces[0]
        mark = self.rig.pull(2)
        self.vm.qmp("blockdev-add", driver="raw", **{"node-name": ns2.drive_id},
                    file={"driver": "file", "filename": str(self.rig.new_disk("squatter"))})
        try:
            self.rig.reinsert(2, ns2.image)
        except MonitorError as refused:
            self.observe(f"reinsertion refused while the id is taken: {refused}")
            self.assert_guest_untouched()
            self.vm.qmp("blockdev-del", **{"node-name": ns2.drive_id})
            return
        self.rig.inject_aer(2)
        self.rig.wait_for_recovery(2, mark)
        self.assertNotEqual(self.rig.drive_state(2)[0], ns2.drive_id,
                            "the reconnected drive took the id another block node holds")
        self.assertIn(ns2.drive_id, [n.split(" ")[0] for n in self.vm.resources().nodes],
                      "the block node that took the freed id lost it to the reconnected drive")
        self.assertEqual(self.guest.read_head(self.rig.disk(2), len(ns2.label)), ns2.label)
        self.vm.qmp("blockdev-del", **{"node-name": ns2.drive_id})   # the squatter goes: QEMU as at boot
        self.assert_guest_untouched()
