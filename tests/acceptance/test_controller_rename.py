"""The problem the series exists for: replacing a controller renames the guest's disk.

This documents today's behaviour and passes on QEMU with or without the series.
"""
from nvme_hotswap.testcase import HotswapTest
from nvme_hotswap.wait import wait_until


class ControllerRename(HotswapTest):
    """device_del/device_add of nvme2 while its disk is held open: the guest picks new names.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,pcie-hotplug,baseline
    """

    def test_replaced_controller_gets_new_name(self) -> None:
        ctrl = self.rig.ctrl(2)
        before = self.guest.nvme_names()
        old_name, old_disks = before[ctrl.pci_address]
        self.assertEqual((old_name, old_disks), (self.rig.ctrl_name(2), [self.rig.disk(2)]))
        self.guest.hold_open(f"/dev/{old_disks[0]}")

        self.rig.unplug_controller(2)
        wait_until(lambda: self.guest.controller_at(ctrl.pci_address) is None, 30,
                   f"the guest to drop the controller at {ctrl.pci_address}")
        self.rig.plug_replacement_controller(2)

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
