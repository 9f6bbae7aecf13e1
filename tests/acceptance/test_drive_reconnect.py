"""The cover letter's sequence: drive_del, drive_insert, pcie_aer_inject_error SDN; names stay."""
from nvme_hotswap.testcase import HotswapTest
from nvme_hotswap.vm.topology import create_image, drive_option, image_sha256, label_of

PATTERN_AT, PATTERN_BLOCKS = 256, 16      # 4 KiB blocks: 1 MiB into the disk, 64 KiB long


class DriveReconnect(HotswapTest):
    """Pull nvme2's backing file, reinsert it, let AER reset the controller: /dev/nvme2n1 stays.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,aer,needs:drive_insert
    """

    def write_pattern(self, disk: str) -> str:
        """Write and fsync a random pattern from the guest; check it landed in the backing file."""
        digest = self.guest.write_random(disk, PATTERN_AT, PATTERN_BLOCKS)
        image = self.rig.ctrl(2).namespaces[0].image
        self.assertEqual(image_sha256(image, PATTERN_AT, PATTERN_BLOCKS), digest,
                         f"the pattern written to {disk} is not in {image}")
        return digest

    def test_same_file(self) -> None:
        c = self.rig.ctrl(2)
        ns = c.namespaces[0]
        before = self.guest.nvme_names()
        digest = self.write_pattern(self.rig.disk(2))

        self.swap_drive(2, ns.image)

        self.assert_names_unchanged(before)
        self.assertEqual(self.guest.controller_at(c.pci_address).serial, c.serial)
        self.assertEqual(self.guest.read_sha256(self.rig.disk(2), PATTERN_AT, PATTERN_BLOCKS), digest,
                         "the pattern written before the pull does not read back")
        new = self.guest.write_random(self.rig.disk(2), PATTERN_AT * 2, 4)
        self.assertEqual(image_sha256(ns.image, PATTERN_AT * 2, 4), new, "a write after recovery did not land")

    def test_replacement_disk(self) -> None:
        """drive_insert a different, fresh file: same names, and the guest reads the new disk."""
        c = self.rig.ctrl(2)
        before = self.guest.nvme_names()
        digest = self.write_pattern(self.rig.disk(2))
        fresh = self.rig.new_disk("replacement")

        self.swap_drive(2, fresh)

        self.assert_names_unchanged(before)
        self.assertEqual(self.guest.controller_at(c.pci_address).serial, c.serial)
        self.assertEqual(self.guest.read_head(self.rig.disk(2), len(label_of("replacement"))), label_of("replacement"),
                         "the guest does not read the replacement disk")
        self.assertNotEqual(self.guest.read_sha256(self.rig.disk(2), PATTERN_AT, PATTERN_BLOCKS), digest,
                            "the old disk's pattern still reads back from the replacement")
        new = self.guest.write_random(self.rig.disk(2), PATTERN_AT, 4)
        self.assertEqual(image_sha256(fresh, PATTERN_AT, 4), new, "a write after recovery did not reach the new file")

    def extra_qemu_args(self) -> list[str]:
        """A virtio-blk disk next to the NVMe ones: hw/nvme ignores rerror/werror, virtio-blk honours
        them, so the error policy that reconnection must restore is observable there."""
        self.vdisk = self.artifacts / "disks" / "virtio.img"   # made before boot: no rig yet
        create_image(self.vdisk, 64 << 20, label_of("virtio"))
        return ["-drive", drive_option("vdrv", self.vdisk), "-device", "virtio-blk-pci,id=vblk,drive=vdrv"]

    def test_error_policy_restored(self) -> None:
        """drive_del sets the error policy to "report"; reconnecting must restore the drive's own.

        -drive's default werror is "enospc": an ENOSPC on write stops the VM. The reconnected node
        fails the first write with ENOSPC (blkdebug), so BLOCK_IO_ERROR says which policy is in force.

        :avocado: tags=needs:reconnect_qmp
        """
        self.allow_growth(nodes=1, why="the reconnected node sits on blkdebug, one node more than the raw file")
        self.vm.drive_del("vdrv")
        self.vm.qmp("blockdev-add", driver="raw", **{"node-name": "faulty"},
                    file={"driver": "blkdebug", "image": {"driver": "file", "filename": str(self.vdisk)},
                          "inject-error": [{"event": "write_aio", "errno": 28, "once": True}]})
        self.vm.blockdev_reconnect("/machine/peripheral/vblk/virtio-backend", "faulty")
        # The write pauses the VM: let spawn() get its answer over SSH before it happens.
        self.guest.spawn("sh -c 'sleep 1; exec dd if=/dev/zero of=/dev/vda bs=4096 count=1 oflag=direct'")
        event = self.vm.event_wait("BLOCK_IO_ERROR", 30)
        self.assertEqual((event["data"]["operation"], event["data"]["action"]), ("write", "stop"),
                         f"the drive's werror=enospc was not restored: {event['data']}")
        self.assertEqual(self.vm.qmp("query-status")["status"], "io-error")
        self.vm.qmp("cont")  # the error fired once: the retried write goes through
        self.assertEqual(self.vm.qmp("query-status")["status"], "running")
