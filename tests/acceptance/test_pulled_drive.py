"""A device whose drive was pulled (drive_del) stays safe for the guest to use: errors, not a dead QEMU."""
from nvme_hotswap.known_defects import known_defect
from nvme_hotswap.testcase import HotswapTest
from nvme_hotswap.vm.topology import create_image, drive_option, label_of


class PulledDrive(HotswapTest):
    """drive_del leaves the device in place with an empty BlockBackend; the guest may still touch it.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,virtio

    That state is as old as drive_del, and a drive reconnection series makes it a normal step of
    every swap (from drive_del to drive_insert). The guest keeps the device and may read its
    configuration and send it commands meanwhile: QEMU must answer, with errors where there is no
    medium, and never die (docs/findings/virtio-blk-config-after-drive-del.md).
    """

    def extra_qemu_args(self) -> list[str]:
        """A virtio-blk disk next to the NVMe ones (its configuration space is read from the drive)."""
        self.vdisk = self.artifacts / "disks" / "virtio.img"   # made before boot: no rig yet
        create_image(self.vdisk, 64 << 20, label_of("virtio"))
        return ["-drive", drive_option("vdrv", self.vdisk), "-device", "virtio-blk-pci,id=vblk,drive=vdrv"]

    def assert_qemu_answers(self, after: str) -> None:
        self.assertEqual(self.vm.qmp("query-status")["status"], "running", f"the VM does not run after {after}")

    def read_virtio_config(self) -> str:
        """A read of the virtio-blk configuration space (the write-cache field: Linux reads it for
        cache_type, VIRTIO_BLK_F_CONFIG_WCE); QEMU fills the whole structure from the drive."""
        return self.guest.check("cat /sys/block/vda/cache_type").strip()

    @known_defect("docs/findings/virtio-blk-config-after-drive-del.md", r"killed by SIGSEGV")
    def test_virtio_config_read(self) -> None:
        """With virtio-blk's drive pulled, the guest reads the configuration space and QEMU answers."""
        self.assertIn(self.read_virtio_config(), ("write back", "write through"))
        self.vm.drive_del("vdrv")
        cache_type = self.read_virtio_config()
        self.observe(f"virtio-blk with its drive pulled: the guest read cache_type {cache_type!r}")
        self.assertIn(cache_type, ("write back", "write through"))
        self.assert_qemu_answers("a configuration read with the drive pulled")
        self.assertEqual(self.guest.try_read("vda", seconds=10).status, "error",
                         "a read of /dev/vda with its drive pulled did not fail promptly")

    def test_virtio_reinserted_after_config_read(self) -> None:
        """drive_insert after a configuration read of the pulled device: the disk is back, data and all.

        :avocado: tags=needs:drive_insert
        """
        self.vm.drive_del("vdrv")
        self.read_virtio_config()
        self.vm.drive_insert("/machine/peripheral/vblk/virtio-backend", self.vdisk)
        self.assertIn(self.read_virtio_config(), ("write back", "write through"))
        self.assertEqual(self.guest.read_head("vda", len(label_of("virtio"))), label_of("virtio"),
                         "the reinserted virtio disk does not read back")

    def test_nvme_admin_commands(self) -> None:
        """With nvme2's drive pulled, the guest's admin commands that read the namespace (Identify
        Controller and Namespace, the SMART log, which sums the namespaces' statistics) and a Flush
        are answered; I/O fails with an error."""
        disk, ctrl = self.rig.disk(2), self.rig.ctrl_name(2)
        self.rig.pull(2)
        for command in (f"nvme id-ctrl /dev/{ctrl}", f"nvme id-ns /dev/{disk}", f"nvme smart-log /dev/{ctrl}"):
            self.guest.check(command)
            self.assert_qemu_answers(command)
        self.guest.run(f"nvme flush /dev/{disk}")   # an error is the honest answer without a medium
        self.assert_qemu_answers("a flush with the drive pulled")
        self.assertEqual(self.guest.try_read(disk, seconds=10).status, "error",
                         f"a read of {disk} with its drive pulled did not fail promptly")
