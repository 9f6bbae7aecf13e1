"""Parsers of the storage stacks' own text (nvme_hotswap/guest/storage.py), on output recorded in the guest."""
import unittest

from nvme_hotswap.guest import storage

MDSTAT_DEGRADED = """Personalities : [raid1]
md0 : active raid1 nvme2n1[1](F) nvme1n1[0]
      523264 blocks super 1.2 [2/1] [U_]
      bitmap: 1/1 pages [4KB], 65536KB chunk

unused devices: <none>
"""
MDSTAT_RECOVERING = """Personalities : [raid1]
md0 : active raid1 nvme2n1[2] nvme1n1[0]
      523264 blocks super 1.2 [2/1] [U_]
      [=>...................]  recovery =  8.2% (43008/523264) finish=0.1min speed=43008K/sec
      bitmap: 1/1 pages [4KB], 4096KB chunk

unused devices: <none>
"""
BITMAP = """        Filename : /dev/nvme1n1
           Magic : 6d746962
     Sync Size : 523264 (511.00 MiB 535.82 MB)
          Bitmap : 128 bits (chunks), 1 dirty (0.8%)
"""


class Mdstat(unittest.TestCase):
    def test_degraded(self) -> None:
        md = storage.parse_mdstat(MDSTAT_DEGRADED)["md0"]
        self.assertEqual((md.level, md.members, md.status, md.syncing),
                         ("raid1", {"nvme2n1": "F", "nvme1n1": ""}, "[U_]", False))

    def test_recovering(self) -> None:
        md = storage.parse_mdstat(MDSTAT_RECOVERING)["md0"]
        self.assertTrue(md.syncing)
        self.assertEqual(md.members, {"nvme2n1": "", "nvme1n1": ""})

    def test_bitmap(self) -> None:
        self.assertEqual(storage.parse_bitmap(BITMAP), (128, 1))
        with self.assertRaises(ValueError):
            storage.parse_bitmap("mdadm: no bitmap found")


class Mounts(unittest.TestCase):
    def test_last_entry_wins(self) -> None:
        text = ("/dev/nvme2n1 /mnt/swap xfs rw,noatime,attr2 0 0\n"
                "/dev/nvme2n1 /mnt/swap ext4 ro,relatime 0 0\n")
        m = storage.parse_mounts(text, "/mnt/swap")
        assert m is not None
        self.assertEqual((m.fstype, m.writable), ("ext4", False))
        self.assertIsNone(storage.parse_mounts(text, "/mnt"))


LINKS = """by-id/nvme-QEMU_NVMe_Ctrl_nvme2-serial_1\t/dev/nvme2n1
by-id/nvme-uuid.0b5c1f3e-5d7a-4d8e-9a4b-3c2f1e0d9a8b\t/dev/nvme2n1
by-id/nvme-QEMU_NVMe_Ctrl_nvme1-serial_1\t/dev/nvme1n1
by-path/pci-0000:03:00.0-nvme-1\t/dev/nvme2n1
by-uuid/6f1c0d2e-1a2b-4c3d-8e9f-0a1b2c3d4e5f\t/dev/nvme2n1
"""


class Links(unittest.TestCase):
    def test_parse(self) -> None:
        links = storage.parse_links(LINKS + "udevadm: some warning without a tab\n")
        self.assertEqual(len(links), 5)
        self.assertEqual(links["by-path/pci-0000:03:00.0-nvme-1"], "/dev/nvme2n1")
        self.assertEqual(links["by-id/nvme-QEMU_NVMe_Ctrl_nvme1-serial_1"], "/dev/nvme1n1")
