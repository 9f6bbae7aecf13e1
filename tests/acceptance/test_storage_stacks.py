"""What storage software sees after the cover letter's swap: a mounted file system, an md RAID1
member, an LVM volume on the swapped drive.

The cover letter's users track drives by name and run file systems, arrays and volume groups on
them. After drive_del, drive_insert and the AER reset, the questions are theirs: is the file system
still mounted and consistent, does the array take its member back under the same name and resync
only what changed, does the volume group still find its PV. docs/storage-stacks.md has what each
stack did here, with the guest's own lines.
"""
import hashlib
import uuid
from pathlib import Path

from nvme_hotswap.guest import klog, storage
from nvme_hotswap.guest.storage import FileWriter
from nvme_hotswap.testcase import HotswapTest
from nvme_hotswap.vm.topology import allocated_bytes, format_ext4, is_hole
from nvme_hotswap.wait import wait_until

MNT = "/mnt/swap"
DISK_MIB = 512          # XFS wants 300 MiB at least; the files are sparse


class StorageTest(HotswapTest):
    """The swapped drive is nvme2's; nvme1 is the second disk where a stack needs two.

    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,aer,storage,needs:drive_insert
    """

    disk_mib = DISK_MIB

    def swap_same_file(self) -> str:
        """The cover letter's sequence with the drive's own file; the names stay (asserted)."""
        before = self.guest.nvme_names()
        mark = self.swap_drive(2, self.rig.ctrl(2).namespaces[0].image)
        self.assert_names_unchanged(before)
        return mark

    def fs_complaints(self, mark: str, disk: str) -> list[str]:
        return [str(line) for line in klog.find(self.guest.klog_since(mark), klog.FS_ERROR, disk=disk)]

    def assert_fsck_clean(self, fs: str, disk: str, when: str) -> None:
        clean, out = storage.fsck(self.guest, fs, disk)
        self.assertTrue(clean, f"{storage.FSCK[fs]} /dev/{disk} {when} found problems:\n{out[-1500:]}")


class MountedFilesystem(StorageTest):
    """ext4 and XFS on nvme2n1, mounted across the swap.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,aer,storage,needs:drive_insert
    """

    def idle(self, fs: str) -> None:
        """Files written and synced, nothing written during the swap: the mount is still there and
        writable, no complaint in the kernel log, the files read back from the disk, a new write
        and fsync succeed, and the unmounted file system checks clean."""
        disk = self.rig.disk(2)
        storage.make_filesystem(self.guest, fs, disk, MNT)
        files = storage.write_files(self.guest, MNT, "f", 8)
        mark = self.swap_same_file()

        mount = storage.mount_of(self.guest, MNT)
        self.assertIsNotNone(mount, f"{MNT} is no longer mounted after the swap")
        assert mount is not None
        self.assertEqual((mount.device, mount.fstype, mount.writable), (f"/dev/{disk}", fs, True),
                         f"{MNT} after the swap: {mount}")
        self.assertEqual(self.fs_complaints(mark, disk), [], f"{fs} complained about {disk} during the swap")
        self.assertEqual(storage.file_hashes(self.guest, MNT, list(files)), files,
                         "files written before the swap do not read back")
        more = storage.write_files(self.guest, MNT, "g", 2)
        self.assertEqual(storage.file_hashes(self.guest, MNT, list(more)), more, "files written after the swap")
        self.guest.check(f"umount {MNT}")
        self.assert_fsck_clean(fs, disk, "after the swap")
        self.observe(f"{fs} idle across the swap: mounted rw, {len(files)} files intact, no complaint, fsck clean")

    def test_ext4_idle(self) -> None:
        self.idle("ext4")

    def test_xfs_idle(self) -> None:
        self.idle("xfs")

    def under_writes(self, fs: str) -> None:
        """A writer creates files (write + fsync) through the swap. The file system may ride it
        out, or stop writing (ext4 aborts its journal and goes read-only, XFS shuts down) when a
        journal or log write hits the pulled drive; whichever it does, it must say so, and nothing
        it acknowledged may be lost: after a remount every acknowledged file holds its data and
        the file system checks clean."""
        disk = self.rig.disk(2)
        storage.make_filesystem(self.guest, fs, disk, MNT)
        writer = FileWriter(self.guest, MNT)
        writer.start()
        wait_until(lambda: len(writer.acknowledged()) >= 20, 60, "20 files acknowledged before the pull")
        mark = self.swap_same_file()
        recovered = klog.find(self.guest.klog_since(mark), klog.RECOVERY_OK,
                              port=self.rig.ctrl(2).port_pci_address)[-1].seconds or 0.0
        wait_until(lambda: any(t > recovered + 2 for _, _, t in writer.entries()), 60,
                   "the writer to try again after the recovery")
        entries = writer.stop()
        failed = [i for i, s, _ in entries if s == "err"]
        after = [i for i, s, t in entries if s == "ok" and t > recovered]
        lines = self.guest.klog_since(mark)
        stopped = [line for t in (klog.EXT4_JOURNAL_ABORTED, klog.EXT4_READ_ONLY, klog.XFS_SHUTDOWN)
                   for line in klog.find(lines, t, disk=disk)]
        self.assertTrue(failed, "no write failed although the drive was pulled while the writer ran")
        if stopped:
            self.observe(f"{fs} under writes: stopped writing, as it said: {stopped[0].text}; "
                         f"{len(failed)} writes failed, {len(after)} acknowledged after the recovery")
            self.assertEqual(after, [], f"{fs} said it stopped writing ({stopped[0].text}) but acknowledged files "
                                        f"after the recovery: {after[:5]}")
        else:
            self.observe(f"{fs} under writes: rode the swap out; {len(failed)} writes failed while pulled, "
                         f"{len(after)} acknowledged after the recovery")
            self.assertTrue(after, f"{fs} reported nothing, yet no write succeeded after the recovery")
        acknowledged = [i for i, s, _ in entries if s == "ok"]
        self.guest.check(f"umount {MNT} && mount -o noatime /dev/{disk} {MNT}", timeout=120)   # replays the journal
        self.assertEqual(writer.lost(acknowledged), [],
                         f"files {fs} acknowledged (write + fsync returned 0) are lost or damaged after a remount")
        more = storage.write_files(self.guest, MNT, "g", 2)
        self.assertEqual(storage.file_hashes(self.guest, MNT, list(more)), more, "files written after the remount")
        self.guest.check(f"umount {MNT}")
        self.assert_fsck_clean(fs, disk, "after the swap under writes and a remount")

    def test_ext4_under_writes(self) -> None:
        self.under_writes("ext4")

    def test_xfs_under_writes(self) -> None:
        self.under_writes("xfs")


class Raid1Member(StorageTest):
    """md RAID1 (metadata 1.2, internal write-intent bitmap) over nvme1n1 and nvme2n1.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,aer,storage,md
    """

    MD = "md0"
    BITMAP_CHUNK = "4M"

    def create_array(self) -> str:
        """The array, in sync from the start (--assume-clean over two zeroed disks), 16 MiB of data
        written to it; waits until the bitmap has no dirty chunk left. Returns the data's sha256."""
        a, b = self.rig.disk(1), self.rig.disk(2)
        self.guest.check(f"mdadm --create /dev/{self.MD} --run --level=1 --raid-devices=2 --metadata=1.2 "
                         f"--bitmap=internal --bitmap-chunk={self.BITMAP_CHUNK} --assume-clean /dev/{a} /dev/{b}")
        digest = self.guest.write_random(self.MD, 0, 4096)
        wait_until(lambda: storage.bitmap(self.guest, a)[1] == 0, 60, "the bitmap's dirty chunks to be cleared")
        return digest

    def pull_and_write(self) -> tuple[str, str]:
        """drive_del nvme2's drive, write to the array: md marks nvme2n1 faulty and goes on with
        nvme1n1. Returns (mark, sha256 of what was written while degraded)."""
        mark = self.rig.pull(2)
        digest = self.guest.write_random(self.MD, 16384, 256)   # 64 MiB in, 1 MiB: one or two bitmap chunks
        array = storage.md_array(self.guest, self.MD)
        self.assertEqual((array.members.get(self.rig.disk(2)), array.status), ("F", "[U_]"),
                         f"md after a write with nvme2n1's drive pulled: {array}")
        self.assertTrue(klog.find(self.guest.klog_since(mark), klog.MD_MEMBER_FAILED, md=self.MD,
                                  disk=self.rig.disk(2)), "md did not log the member's failure")
        return mark, digest

    def wait_clean(self) -> storage.MdArray:
        self.guest.check(f"mdadm --wait /dev/{self.MD} || true", timeout=300)
        wait_until(lambda: not storage.md_array(self.guest, self.MD).syncing, 300, f"{self.MD}'s resync to end")
        return storage.md_array(self.guest, self.MD)

    def assert_mirrors_identical(self) -> None:
        """md's own check reads both members and counts the sectors that differ."""
        self.guest.check(f"echo check > /sys/block/{self.MD}/md/sync_action")
        self.wait_clean()
        self.assertEqual(self.guest.check(f"cat /sys/block/{self.MD}/md/mismatch_cnt").strip(), "0",
                         "the two members differ after the resync (md check: mismatch_cnt)")

    def assert_clean_with_data(self, first: str, second: str, after: str) -> None:
        """Both members in sync ([UU]), md's check finds them identical, and the array holds the data
        written before (`first`) and while degraded (`second`)."""
        a, b = self.rig.disk(1), self.rig.disk(2)
        array = self.wait_clean()
        self.assertEqual((array.members, array.status), ({a: "", b: ""}, "[UU]"), f"after {after}: {array}")
        self.assert_mirrors_identical()
        self.assertEqual((self.guest.read_sha256(self.MD, 0, 4096), self.guest.read_sha256(self.MD, 16384, 256)),
                         (first, second), f"the array's data after {after}")

    def test_member_readded(self) -> None:
        """The same file comes back: the member returns under its name, `mdadm --re-add` takes it,
        only the chunks the bitmap marked dirty while it was out are resynced, the array ends clean
        with identical members and all data.

        :avocado: tags=needs:drive_insert
        """
        a, b = self.rig.disk(1), self.rig.disk(2)
        first = self.create_array()
        mark, second = self.pull_and_write()
        self.rig.reinsert(2, self.rig.ctrl(2).namespaces[0].image)
        self.rig.inject_aer(2)
        self.assert_aer_recovery(mark, 2)
        self.assertEqual(self.rig.disk(2), b, "nvme2's disk came back under another name")
        chunks, dirty = storage.bitmap(self.guest, a)
        self.assertTrue(0 < dirty < chunks, f"the bitmap marks {dirty} of {chunks} chunks dirty: want only those "
                                            "written while the member was out")
        self.guest.check(f"mdadm /dev/{self.MD} --remove /dev/{b}")
        self.guest.check(f"mdadm /dev/{self.MD} --re-add /dev/{b}")
        self.assert_clean_with_data(first, second, "--re-add")
        self.assertTrue(klog.find(self.guest.klog_since(mark), klog.MD_RECOVERY_DONE, md=self.MD),
                        "md logged no finished recovery after --re-add")
        self.observe(f"md re-add after the swap: {dirty} of {chunks} bitmap chunks dirty, resynced, clean, "
                     "mismatch_cnt 0")

    def test_member_namespace_swap(self) -> None:
        """The namespace-level swap (device_del and device_add of nvme-ns, the same file) of a
        member md let go first (`--fail`, `--remove`: md holds a disk it uses, and a namespace that
        leaves while held keeps its name taken): the namespace comes back under the same name,
        `--re-add` resyncs only the chunks written meanwhile, and the array ends clean.

        :avocado: tags=needs:nvme_ns_hotplug
        """
        a, b = self.rig.disk(1), self.rig.disk(2)
        first = self.create_array()
        self.guest.check(f"mdadm /dev/{self.MD} --fail /dev/{b} --remove /dev/{b}")
        second = self.guest.write_random(self.MD, 16384, 256)
        self.rig.namespace_swap(2, self.rig.ctrl(2).namespaces[0].image)
        self.assertEqual(self.guest.namespace(self.rig.ctrl_name(2), 1).block, b,
                         "the namespace came back under another name")
        chunks, dirty = storage.bitmap(self.guest, a)
        self.assertTrue(0 < dirty < chunks, f"the bitmap marks {dirty} of {chunks} chunks dirty")
        self.guest.check(f"mdadm /dev/{self.MD} --re-add /dev/{b}")
        self.assert_clean_with_data(first, second, "--re-add after the namespace-level swap")
        self.observe(f"md re-add after the namespace-level swap: {dirty} of {chunks} chunks dirty, clean")

    def test_replacement_disk_added(self) -> None:
        """An empty replacement file: `--re-add` is refused (no md superblock on it), `--add`
        takes it, a full recovery runs, the array ends clean with identical members.

        :avocado: tags=needs:drive_insert
        """
        b = self.rig.disk(2)
        first = self.create_array()
        mark, second = self.pull_and_write()
        fresh = self.rig.new_disk("replacement", DISK_MIB)
        self.rig.reinsert(2, fresh)
        self.rig.inject_aer(2)
        self.assert_aer_recovery(mark, 2)
        self.guest.check(f"mdadm /dev/{self.MD} --remove /dev/{b}")
        self.assertFalse(self.guest.run(f"mdadm /dev/{self.MD} --re-add /dev/{b}").ok,
                         "--re-add accepted an empty replacement disk as the old member")
        self.guest.check(f"mdadm /dev/{self.MD} --add /dev/{b}")
        self.assert_clean_with_data(first, second, "--add and the full recovery")


class LvmVolume(StorageTest):
    """A volume group on nvme2n1, a logical volume with ext4 mounted across the swap.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,aer,storage,lvm,needs:drive_insert
    """

    def test_volume_stays_active(self) -> None:
        """The PV is found under the same name, the LV stays active and mounted, data intact."""
        disk = self.rig.disk(2)
        storage.modprobe(self.guest, "dm_mod", *storage.FS_MODULES["ext4"])
        self.guest.check(f"pvcreate -q /dev/{disk} && vgcreate -q vg0 /dev/{disk} && lvcreate -q -L 128M -n lv0 vg0")
        self.guest.check(f"mkfs.ext4 -q /dev/vg0/lv0 && mkdir -p {MNT} && mount -o noatime /dev/vg0/lv0 {MNT}")
        files = storage.write_files(self.guest, MNT, "f", 4)
        mark = self.swap_same_file()

        pvs = self.guest.check("pvs --noheadings -o pv_name,vg_name").split()
        self.assertEqual(pvs, [f"/dev/{disk}", "vg0"], "pvs after the swap")
        attr = self.guest.check("lvs --noheadings -o lv_attr vg0/lv0").strip()
        self.assertEqual(attr[4:5], "a", f"vg0/lv0 is not active after the swap (lv_attr {attr})")
        mount = storage.mount_of(self.guest, MNT)
        self.assertTrue(mount is not None and mount.writable, f"{MNT} after the swap: {mount}")
        self.assertEqual(self.fs_complaints(mark, "dm-0"), [], "ext4 on the LV complained during the swap")
        self.assertEqual(storage.file_hashes(self.guest, MNT, list(files)), files, "files on the LV after the swap")
        more = storage.write_files(self.guest, MNT, "g", 2)
        self.assertEqual(storage.file_hashes(self.guest, MNT, list(more)), more, "files written after the swap")
        self.guest.check(f"umount {MNT}")
        self.assert_fsck_clean("ext4", "vg0/lv0", "after the swap")
        self.guest.check("vgchange -q -an vg0")


class PersistentNames(StorageTest):
    """The /dev/disk/by-id, by-path and by-uuid links of nvme2n1, as udev makes them (started for
    these tests: the fast guest boots without it). by-id comes from what the device reports (the
    controller's model and serial, the NSID: Linux ignores the namespace identifiers of QEMU's
    controller, NVME_QUIRK_BOGUS_NID), by-path from the PCI topology: a swap keeps them; by-uuid
    comes from the file system on the disk: it follows the medium.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,aer,storage,udev
    """

    def links_of(self, disk: str, serial: str) -> dict[str, str]:
        """The disk's links, each kind present: by-id (one naming the controller's serial), by-path
        and by-uuid (the UUID blkid reads from the disk)."""
        links = storage.disk_links(self.guest, disk)
        self.log.info("links of /dev/%s: %s", disk, links)
        for kind in storage.LINK_DIRS:
            self.assertTrue(any(k.startswith(kind + "/") for k in links), f"udev made no /dev/disk/{kind} link "
                            f"for /dev/{disk}: {sorted(links)}")
        self.assertTrue(any(k.startswith("by-id/") and serial in k for k in links),
                        f"no by-id link of /dev/{disk} names its serial {serial}: {sorted(links)}")
        return links

    def make_ext4(self, disk: str) -> str:
        """ext4 on /dev/`disk` (udev sees the write and reads it again); returns its UUID."""
        storage.make_filesystem(self.guest, "ext4", disk, MNT)
        self.guest.check(f"umount {MNT}")
        fs_uuid = storage.fs_uuid(self.guest, disk)
        self.assertTrue(fs_uuid, f"blkid finds no file system UUID on /dev/{disk} after mkfs.ext4")
        return fs_uuid

    @staticmethod
    def kinds(links: dict[str, str], *kinds: str) -> dict[str, str]:
        return {k: v for k, v in links.items() if k.split("/", 1)[0] in kinds}

    def test_links_survive_swap(self) -> None:
        """The same file comes back: every link of the disk is there again, unchanged, also after
        udev reads the disk again.

        :avocado: tags=needs:drive_insert
        """
        disk = self.rig.disk(2)
        storage.start_udev(self.guest)
        fs_uuid = self.make_ext4(disk)
        self.guest.check(f"mount -o noatime /dev/{disk} {MNT}")   # held across the swap, as in production
        before = self.links_of(disk, self.rig.ctrl(2).serial)
        self.assertEqual(before.get(f"by-uuid/{fs_uuid}"), f"/dev/{disk}", f"by-uuid of {fs_uuid}: {before}")
        self.swap_same_file()
        self.assertEqual(storage.disk_links(self.guest, disk), before, "the links of the swapped drive changed")
        storage.reprobe(self.guest, disk)
        self.assertEqual(storage.disk_links(self.guest, disk), before,
                         "the links of the swapped drive changed when udev read it again")
        self.observe(f"persistent names of {disk} kept across the swap: {', '.join(sorted(before))}")

    def test_replacement_disk(self) -> None:
        """A replacement file carrying another file system: by-id and by-path (the device's) stay,
        by-uuid names the new file system once udev reads the disk again, and no link keeps the
        old file system's UUID on the disk.

        :avocado: tags=needs:drive_insert
        """
        disk = self.rig.disk(2)
        storage.start_udev(self.guest)
        old_uuid = self.make_ext4(disk)
        before = self.links_of(disk, self.rig.ctrl(2).serial)
        new_uuid = str(uuid.uuid4())
        fresh = self.rig.new_disk("replacement", DISK_MIB)
        format_ext4(fresh, new_uuid)
        self.swap_drive(2, fresh)
        unannounced = storage.disk_links(self.guest, disk)
        storage.reprobe(self.guest, disk)
        after = storage.disk_links(self.guest, disk)
        self.assertEqual(storage.fs_uuid(self.guest, disk), new_uuid,
                         f"/dev/{disk} does not show the replacement's file system after the swap")
        self.assertEqual(self.kinds(after, "by-id", "by-path"), self.kinds(before, "by-id", "by-path"),
                         "the device's links (by-id, by-path) changed with the medium")
        self.assertEqual(self.kinds(after, "by-uuid"), {f"by-uuid/{new_uuid}": f"/dev/{disk}"},
                         f"by-uuid after the replacement (old file system {old_uuid}, new {new_uuid})")
        self.observe(f"replacement: by-uuid {old_uuid} -> {new_uuid} after a change event; before it, udev "
                     f"{'had already' if f'by-uuid/{new_uuid}' in unannounced else 'had not'} read the new medium "
                     f"({sorted(self.kinds(unannounced, 'by-uuid'))})")

    def test_links_survive_namespace_swap(self) -> None:
        """A namespace plugged at run time, unplugged and plugged again with its NSID and file: its
        links go with it and the same ones come back (Linux ignores the namespace identifiers of
        QEMU's controller, NVME_QUIRK_BOGUS_NID: its by-id links name the controller's model and
        serial and the NSID, which the plug keeps).

        :avocado: tags=needs:nvme_ns_hotplug
        """
        storage.start_udev(self.guest)
        image = self.rig.new_disk("hot", DISK_MIB)
        hot = self.rig.ctrl(1).hot_namespace(nsid=2, image=image)
        self.rig.plug_namespace(hot, image)
        disk = self.rig.wait_for_namespace(1, 2).block
        self.make_ext4(disk)
        before = self.links_of(disk, self.rig.ctrl(1).serial)
        self.rig.unplug_namespace(hot)
        self.rig.wait_for_namespace_gone(1, 2)
        self.assertEqual(storage.disk_links(self.guest, disk), {}, f"links of /dev/{disk} left after the unplug")
        self.rig.plug_namespace(hot)
        again = self.rig.wait_for_namespace(1, 2).block   # the kernel's name may differ: the links may not
        self.assertEqual(storage.disk_links(self.guest, again), {k: f"/dev/{again}" for k in before},
                         f"the links of the namespace plugged again with its NSID and file (now /dev/{again})")
        self.observe(f"namespace-level swap: the links of {disk} gone while unplugged, then the same again "
                     f"(on /dev/{again})")


class DiscardReachesTheFile(StorageTest):
    """Thin-provisioned drives (discard=unmap, detect-zeroes=unmap): a discard, or zeroes written,
    in the guest deallocate the range of the backing file.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,aer,storage,discard
    :avocado: tags=needs:drive_insert,needs:nvme_ns_hotplug
    """

    discard = True
    AT, BLOCKS = 4096, 1024   # 16 MiB in, 4 MiB long (4 KiB blocks)

    def assert_discard_reaches(self, disk: str, image: Path, where: str) -> None:
        """Data written there is in the file; after blkdiscard the guest reads zeroes (what the
        namespace reports for deallocated blocks) and the file has a hole there; data written
        again, then zeroes over it: a hole again."""
        self.guest.write_random(disk, self.AT, self.BLOCKS)
        self.assertFalse(is_hole(image, self.AT, self.BLOCKS), f"{where}: the data written is not in {image.name}")
        self.guest.check(f"blkdiscard -o {self.AT * 4096} -l {self.BLOCKS * 4096} /dev/{disk}")
        self.assertEqual(self.guest.read_sha256(disk, self.AT, self.BLOCKS),
                         hashlib.sha256(bytes(self.BLOCKS * 4096)).hexdigest(),
                         f"{where}: the discarded range of {disk} does not read as zeroes")
        self.assertTrue(is_hole(image, self.AT, self.BLOCKS),
                        f"{where}: blkdiscard of {disk} did not reach {image.name}: the range is still allocated")
        self.guest.write_random(disk, self.AT, self.BLOCKS)
        written = allocated_bytes(image)
        self.guest.check(f"dd if=/dev/zero of=/dev/{disk} bs=4096 seek={self.AT} count={self.BLOCKS} "
                         "oflag=direct conv=fsync 2>/dev/null")
        freed = written - allocated_bytes(image)
        self.assertGreaterEqual(freed, self.BLOCKS * 4096,
                                f"{where}: zeroes written over {self.BLOCKS * 4} KiB of {disk} freed {freed} bytes of "
                                f"{image.name} (detect-zeroes=unmap deallocates them): the drive lost its thin "
                                "provisioning")

    def test_discard_after_hotplug_and_reconnect(self) -> None:
        """On a namespace plugged at run time, and on nvme2's disk after the cover letter's swap."""
        image = self.rig.new_disk("hot", DISK_MIB)
        hot = self.rig.ctrl(1).hot_namespace(nsid=2, image=image)
        self.rig.plug_namespace(hot, image)
        disk = self.rig.wait_for_namespace(1, 2).block
        self.assert_discard_reaches(disk, image, "a hot-plugged namespace")
        self.swap_same_file()
        self.assert_discard_reaches(self.rig.disk(2), self.rig.ctrl(2).namespaces[0].image,
                                    "nvme2n1 after drive_del, drive_insert and the reset")
