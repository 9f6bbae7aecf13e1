"""The problem the series exists for: replacing a controller renames the guest's disk.

This documents today's behaviour and passes on QEMU with or without the series.
"""
from nvme_hotswap.testcase import HotswapTest
from nvme_hotswap.wait import wait_until

UNPLUG_TIMEOUT_S = 60.0   # native PCIe hotplug runs the attention-button sequence (~6 s)


class ControllerRename(HotswapTest):
    """device_del/device_add of nvme2 while its disk is held open: the guest picks new names.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,pcie-hotplug,baseline
    """

    def unplug_controller(self, index: int) -> None:
        """device_del the controller, then drop its old drive, which still holds the file's lock."""
        ctrl = self.ctrl(index)
        self.vm.qmp("device_del", id=ctrl.dev_id)
        self.vm.event_wait("DEVICE_DELETED", UNPLUG_TIMEOUT_S, match={"device": ctrl.dev_id})
        for ns in ctrl.namespaces:
            self.vm.hmp_ok(f"drive_del {ns.drive_id}")

    def plug_replacement_controller(self, index: int) -> str:
        """A new controller with the same serial in the same root port; returns its id.

        The replacement's drive gets a new node name (the old id may linger); the legacy drive= form is the only way to give a hotplugged controller a namespace
        without the series.
        """
        ctrl = self.ctrl(index)
        new_id, node = f"{ctrl.dev_id}b", f"{ctrl.namespaces[0].drive_id}b"
        self.vm.qmp("blockdev-add", driver="raw", **{"node-name": node},
                    file={"driver": "file", "filename": str(ctrl.namespaces[0].image)})
        self.vm.qmp("device_add", driver="nvme", id=new_id, serial=ctrl.serial, bus=ctrl.port_id, drive=node)
        return new_id

    def test_replaced_controller_gets_new_name(self) -> None:
        ctrl = self.ctrl(2)
        before = self.guest.nvme_names()
        old_name, old_disks = before[ctrl.pci_address]
        self.assertEqual((old_name, old_disks), (self.ctrl_name(2), [self.disk(2)]))
        self.guest.hold_open(f"/dev/{old_disks[0]}")

        self.unplug_controller(2)
        wait_until(lambda: self.guest.controller_at(ctrl.pci_address) is None, 30,
                   f"the guest to drop the controller at {ctrl.pci_address}")
        self.plug_replacement_controller(2)

        def slot_with_disk() -> tuple[str, list[str]] | None:
            entry = self.guest.nvme_names().get(ctrl.pci_address)
            return entry if entry and entry[1] else None

        new_name, new_disks = wait_until(slot_with_disk, 60, f"a controller with a disk at {ctrl.pci_address}")
        self.log.info("slot %s: before %s %s, after %s %s", ctrl.port_id, old_name, old_disks, new_name, new_disks)
        (self.artifacts / "renaming.txt").write_text(
            f"{ctrl.port_id} {ctrl.pci_address}: {old_name} {old_disks} -> {new_name} {new_disks}\n")

        self.assertEqual(self.guest.controller_at(ctrl.pci_address).serial, ctrl.serial)
        self.assertNotEqual(new_name, old_name, "the replaced controller kept its name: the bug did not reproduce")
        self.assertNotIn(old_disks[0], new_disks)
        others = {a: v for a, v in before.items() if a != ctrl.pci_address}
        self.assertEqual({a: v for a, v in self.guest.nvme_names().items() if a != ctrl.pci_address}, others,
                         "the neighbours nvme0 and nvme1 were touched")
