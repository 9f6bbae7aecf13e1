"""The cover letter's sequence: drive_del, drive_insert, pcie_aer_inject_error SDN; names stay."""
import os
import shutil
import subprocess
from pathlib import Path

from nvme_hotswap.testcase import HotswapTest
from nvme_hotswap.vm.machine import MonitorError
from nvme_hotswap.vm.topology import create_image, drive_option, image_sha256, label_of

PATTERN_AT, PATTERN_BLOCKS = 256, 16      # 4 KiB blocks: 1 MiB into the disk, 64 KiB long
VBLK = "/machine/peripheral/vblk/virtio-backend"   # the virtio disk's BlockBackend (QOM path)


class DriveReconnect(HotswapTest):
    """Pull nvme2's backing file, reinsert it, let AER reset the controller: /dev/nvme2n1 stays.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,aer

    Each test names what of the series it uses (needs:); the error policy tests reconnect through
    whichever interface the series offers (needs:reconnect: the cover letter's drive_insert, else
    the QMP command).
    """

    def write_pattern(self, disk: str) -> str:
        """Write and fsync a random pattern from the guest; check it landed in the backing file."""
        digest = self.guest.write_random(disk, PATTERN_AT, PATTERN_BLOCKS)
        image = self.rig.ctrl(2).namespaces[0].image
        self.assertEqual(image_sha256(image, PATTERN_AT, PATTERN_BLOCKS), digest,
                         f"the pattern written to {disk} is not in {image}")
        return digest

    def test_same_file(self) -> None:
        """The cover letter's sequence with the same file: names, serial and data are kept.

        :avocado: tags=needs:drive_insert
        """
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
        """drive_insert a different, fresh file: same names, and the guest reads the new disk.

        :avocado: tags=needs:drive_insert
        """
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

    def test_replacement_of_another_size(self) -> None:
        """A smaller replacement file: drive_insert refuses it and the guest keeps seeing the drive
        as pulled (then the right size goes in), or takes it and the guest sees the new size after
        the reset. Never the old size over a smaller file: the guest's file systems would write
        past its end.

        :avocado: tags=needs:drive_insert
        """
        disk, ns = self.rig.disk(2), self.rig.ctrl(2).namespaces[0]
        size = int(self.guest.check(f"blockdev --getsize64 /dev/{disk}"))
        smaller = self.rig.new_disk("smaller", (size >> 20) // 2)
        mark = self.rig.pull(2)
        try:
            self.rig.reinsert(2, smaller)
        except MonitorError as refused:
            self.observe(f"a replacement of half the size is refused: {refused}")
            self.assertEqual(self.rig.drive_state(2), ("", None, None), "the refused replacement left a medium")
            self.assert_io_fails(disk)
            self.rig.reinsert(2, ns.image)
            expected = size
        else:
            expected = smaller.stat().st_size
        self.rig.inject_aer(2)
        self.assert_aer_recovery(mark, 2)
        seen = int(self.guest.check(f"blockdev --getsize64 /dev/{disk}"))
        self.observe(f"the guest's {disk} after the swap: {seen} bytes (was {size})")
        self.assertEqual(seen, expected, f"the guest's size of {disk} after the swap is not the size of its file")

    def test_second_swap_and_monitor_state(self) -> None:
        """Two swaps of the same drive: while pulled the monitor shows an empty, anonymous drive;
        after each reinsertion the drive as booted (its id, the file, writable), so the second
        drive_del by id works; the names stay and the second file is what the guest reads.

        :avocado: tags=needs:drive_insert
        """
        ns = self.rig.ctrl(2).namespaces[0]
        before = self.guest.nvme_names()
        self.assertEqual(self.rig.drive_state(2), (ns.drive_id, str(ns.image), False))

        def pulled(disk: str) -> None:
            self.assert_io_fails(disk)
            self.assertEqual(self.rig.drive_state(2), ("", None, None), "drive_del left something in the drive")

        second = self.rig.new_disk("second")
        for round_, image in enumerate((ns.image, second), 1):
            mark = self.rig.reconnect(2, image, while_pulled=pulled)
            self.assert_aer_recovery(mark, 2)
            self.assertEqual(self.rig.drive_state(2), (ns.drive_id, str(image), False),
                             f"query-block after swap {round_}: (drive id, file, read-only)")
            self.assert_names_unchanged(before)
        self.assertEqual(self.guest.read_head(self.rig.disk(2), len(label_of("second"))), label_of("second"))

    def qcow2_of(self, name: str) -> Path:
        """A qcow2 image whose guest-visible contents start with label_of(name); its file is as
        long as its virtual size (a reconnection keeps the drive's size, read as qcow2 or raw)."""
        qemu_img = shutil.which("qemu-img")
        if qemu_img is None:
            self.cancel("needs qemu-img on the host (Debian's qemu-utils: scripts/install-host-deps.sh)")
        raw = self.rig.new_disk(name)
        qcow2 = raw.with_suffix(".qcow2")
        subprocess.run([str(qemu_img), "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True)
        os.truncate(qcow2, raw.stat().st_size)   # zeroes after the last cluster: still the same qcow2
        return qcow2

    def test_format_argument(self) -> None:
        """drive_insert <device> <file> qcow2 reads the image's contents (where the series' drive_insert
        takes a format: ours does, the cover letter's does not, and then the test cancels).

        :avocado: tags=needs:drive_insert,needs:drive_insert_format
        """
        qcow2 = self.qcow2_of("qcow2-content")
        before = self.guest.nvme_names()
        self.swap_drive(2, qcow2, fmt="qcow2")
        self.assertEqual(self.guest.read_head(self.rig.disk(2), len(label_of("qcow2-content"))),
                         label_of("qcow2-content"), "inserted as qcow2, the guest does not read the image's contents")
        self.assert_names_unchanged(before)

    def test_raw_drive_is_not_probed(self) -> None:
        """A file inserted without a format into a drive configured format=raw is not probed: the
        guest reads the qcow2 header itself. A raw disk's contents are the guest's to write; were a
        reinsertion to probe them, a guest that wrote a qcow2 header (with a backing file naming a
        host file) would read that host file: the reason QEMU warns against probing raw images.

        :avocado: tags=needs:drive_insert
        """
        qcow2 = self.qcow2_of("qcow2-content")
        before = self.guest.nvme_names()
        self.swap_drive(2, qcow2)
        self.assertEqual(self.guest.read_head(self.rig.disk(2), 3), b"QFI",   # qcow2's magic, QFI\xfb
                         "a file inserted without a format into a raw drive was probed, not opened raw")
        self.assert_names_unchanged(before)

    def extra_qemu_args(self) -> list[str]:
        """A virtio-blk disk next to the NVMe ones: hw/nvme ignores rerror/werror, virtio-blk honours
        them, so the error policies that reconnection must restore are observable there. rerror=stop
        and werror=enospc (the default) differ, so each error shows which policy is in force."""
        self.vdisk = self.artifacts / "disks" / "virtio.img"   # made before boot: no rig yet
        create_image(self.vdisk, 64 << 20, label_of("virtio"))
        return ["-drive", drive_option("vdrv", self.vdisk) + ",rerror=stop,cache=unsafe",
                "-device", "virtio-blk-pci,id=vblk,drive=vdrv"]

    def reconnect_virtio_with_errors(self, *errors: tuple[str, int]) -> None:
        """drive_del the virtio disk, then reconnect its image behind blkdebug, which fails each
        (event, errno) once: through the cover letter's drive_insert when the series has it (a
        `blkdebug:<config>:<image>` file name), else through the QMP command (a blkdebug node)."""
        self.allow_growth(nodes=1, why="the reconnected image sits on blkdebug, one node more than the raw file")
        config = self.artifacts / "disks" / "blkdebug.conf"
        config.write_text("".join(f'[inject-error]\nevent = "{e}"\nerrno = "{n}"\nonce = "on"\n\n'
                                  for e, n in errors))
        self.vm.drive_del("vdrv")
        if self.caps.drive_insert_hmp:
            self.vm.drive_insert(VBLK, f"blkdebug:{config}:{self.vdisk}")
        else:
            self.vm.qmp("blockdev-add", driver="raw", **{"node-name": "faulty"},
                        file={"driver": "blkdebug", "config": str(config),
                              "image": {"driver": "file", "filename": str(self.vdisk)}})
            self.vm.blockdev_reconnect(VBLK, "faulty")

    def guest_io_error(self, dd: str) -> dict[str, object]:
        """Start `dd` on /dev/vda in the guest (after a second, so spawn() gets its answer before a
        stop); the BLOCK_IO_ERROR QEMU reports."""
        self.vm.allow_stop("the test provokes I/O errors under rerror=stop / werror=enospc")
        self.guest.spawn(f"sh -c 'sleep 1; exec dd {dd} bs=4096 count=1'")
        data: dict[str, object] = self.vm.event_wait("BLOCK_IO_ERROR", 30)["data"]
        return data

    def virtio_cache(self) -> dict[str, bool]:
        """query-block's cache mode of the virtio disk's drive."""
        inserted = next(b for b in self.vm.qmp("query-block")
                        if b.get("qdev") == VBLK).get("inserted")
        self.assertIsNotNone(inserted, "the virtio disk has no medium")
        return dict(inserted["cache"])

    def test_cache_mode_kept(self) -> None:
        """drive_insert opens the file with the open flags drive_del left behind: the virtio disk's
        cache=unsafe (no-flush) is back after the reinsertion, not the default cache mode.

        :avocado: tags=needs:drive_insert
        """
        booted = self.virtio_cache()
        self.assertEqual(booted, {"writeback": True, "direct": False, "no-flush": True})
        self.vm.drive_del("vdrv")
        self.vm.drive_insert(VBLK, self.vdisk)
        self.assertEqual(self.virtio_cache(), booted, "the reinserted image lost the drive's cache mode")

    def test_read_and_write_policies_restored(self) -> None:
        """A read error stops the VM (rerror=stop), a write error is reported (werror=enospc, the
        error is EIO): only the restored policy of each direction decides.

        :avocado: tags=needs:reconnect
        """
        self.reconnect_virtio_with_errors(("read_aio", 5), ("write_aio", 5))
        event = self.guest_io_error("if=/dev/vda of=/dev/null iflag=direct")
        self.assertEqual((event["operation"], event["action"]), ("read", "stop"),
                         f"the drive's rerror=stop was not restored: {event}")
        self.assertEqual(self.vm.qmp("query-status")["status"], "io-error")
        self.vm.qmp("cont")
        event = self.guest_io_error("if=/dev/zero of=/dev/vda oflag=direct")
        self.assertEqual((event["operation"], event["action"]), ("write", "report"),
                         f"an EIO write must be reported under werror=enospc: {event}")
        self.assertEqual(self.vm.qmp("query-status")["status"], "running")

    def test_error_policy_restored(self) -> None:
        """drive_del sets the error policy to "report"; reconnecting must restore the drive's own.

        -drive's default werror is "enospc": an ENOSPC on write stops the VM. The reconnected node
        fails the first write with ENOSPC (blkdebug), so BLOCK_IO_ERROR says which policy is in force.

        :avocado: tags=needs:reconnect
        """
        self.reconnect_virtio_with_errors(("write_aio", 28))
        event = self.guest_io_error("if=/dev/zero of=/dev/vda oflag=direct")
        self.assertEqual((event["operation"], event["action"]), ("write", "stop"),
                         f"the drive's werror=enospc was not restored: {event}")
        self.assertEqual(self.vm.qmp("query-status")["status"], "io-error")
        self.vm.qmp("cont")  # the error fired once: the retried write goes through
        self.assertEqual(self.vm.qmp("query-status")["status"], "running")
