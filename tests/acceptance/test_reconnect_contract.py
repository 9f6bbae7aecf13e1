"""Drive reconnection (drive_insert, or its QMP form) checked at the device and the monitor, no guest.

The cover letter's drive_insert is "the counterpart to drive_del for non-removable devices where
blockdev-change-medium cannot be used". What it must keep, whatever the implementation: a
refused reconnection changes nothing (QEMU's monitor commands either do what they say or report an
error and leave the machine as it was); removable devices keep their own way of changing media;
the reconnected drive is the drive drive_del removed (its open flags, the device's identity) with
the new file's data. The NVMe host here (nvme_hotswap.device over qtest) plays the guest's part of
the cover letter's sequence: its controller reset is what pcie_aer_inject_error SDN makes Linux do.
docs/device-contract.md lists the reconnection dimensions covered and those left out.
"""
from pathlib import Path
from typing import Any

from nvme_hotswap.device.machine import QtestMachine
from nvme_hotswap.device.nvme import CommandFailed
from nvme_hotswap.device.testcase import DeviceTest
from nvme_hotswap.vm.machine import MonitorError
from nvme_hotswap.vm.topology import create_image

SLOT = 0x04
LBA = 512
VBLK = "/machine/peripheral/vblk/virtio-backend"   # virtio-blk's BlockBackend belongs to its virtio device
OTHER = "/machine/peripheral/other/virtio-backend"


class ReconnectContract(DeviceTest):
    """drive_del, then reconnection through whichever interface the series offers (drive_insert or
    x-blockdev-reconnect), on an nvme-ns, a virtio-blk disk and a removable CD-ROM.

    :avocado: enable
    :avocado: tags=arch:x86_64,machine:q35,device,reconnect,needs:reconnect
    """

    # --- verbs -------------------------------------------------------------------------------------
    def image(self, name: str, label: bytes, size_mib: int = 8) -> Path:
        """A raw image whose first bytes are `label` (which file a device reads is then visible)."""
        path = self.disk(name, size_mib)
        create_image(path, size_mib << 20, label)
        return path

    def reconnect(self, m: QtestMachine, device: str, image: Path) -> None:
        m.vm.reconnect(device, image, via_hmp=self.caps.drive_insert_hmp)

    @staticmethod
    def block_entry(m: QtestMachine, qdev: str) -> dict[str, Any]:
        """query-block's entry of the BlockBackend of device `qdev` (its id or QOM path)."""
        for b in m.vm.qmp("query-block"):
            if b.get("qdev") in (qdev, f"/machine/peripheral/{qdev}"):
                return dict(b)
        raise AssertionError(f"query-block lists no BlockBackend of device {qdev}")

    def assert_refused_without_change(self, m: QtestMachine, device: str, image: Path, why: str) -> None:
        """Reconnecting `image` to `device` is refused, and the refusal leaves the device's backend
        (query-block: drive id, medium, tray, I/O status) and QEMU's named block nodes as they were."""
        entry, nodes = self.block_entry(m, device), m.vm.resources().nodes
        with self.assertRaises(MonitorError, msg=f"reconnecting {image.name} to {device} was accepted: {why}") as r:
            self.reconnect(m, device, image)
        self.log.info("refused as expected (%s): %s", why, r.exception)
        self.assertEqual(self.block_entry(m, device), entry,
                         f"a refused reconnection ({why}) changed {device}'s backend (query-block); a monitor "
                         f"command that reports an error must leave the machine as it was: {r.exception}")
        self.assertEqual(m.vm.resources().nodes, nodes, f"a refused reconnection ({why}) changed the block graph")

    # --- an NVMe namespace: the cover letter's sequence, seen by the host --------------------------
    def test_nvme_namespace_serves_the_new_file_after_the_reset(self) -> None:
        """drive_del, reconnection of another file, Controller Reset (what AER recovery does):
        the namespace keeps its identity (Identify Namespace: size, NGUID, EUI-64; the controller's
        serial) and reads the new file; a write reaches it. While pulled, I/O fails (no data made up)."""
        old, new = self.image("old", b"OLD-FILE"), self.image("new", b"NEW-FILE")
        m = self.machine(["-drive", f"if=none,id=drv1,file={old},format=raw",
                          "-device", f"nvme,id=nvme0,serial=reconnect0,addr={SLOT:02x}.0",
                          "-device", "nvme-ns,id=ns1,drive=drv1,bus=nvme0,nsid=1,"
                                     "eui64=0x5254000000000001,nguid=11111111-2222-3333-4444-555555555555"])
        c = self.host(m.controller(SLOT, "nvme0"))
        ident, serial = c.identify_namespace(1), c.identify_controller().sn
        self.assertEqual(c.read(1, 0, 1, LBA)[:8], b"OLD-FILE")

        m.vm.drive_del("drv1")
        with self.assertRaises(CommandFailed, msg="a Read of the pulled namespace completed successfully"):
            c.read(1, 0, 1, LBA)
        self.reconnect(m, "ns1", new)
        c.disable()   # the Controller Reset that the guest's AER recovery performs
        self.host(c)
        self.assertEqual(c.identify_controller().sn, serial, "the controller's serial changed across the swap")
        after = c.identify_namespace(1)
        self.assertEqual((after.nsze, after.nguid, after.eui64, after.flbas), (ident.nsze, ident.nguid, ident.eui64,
                                                                               ident.flbas),
                         "Identify Namespace (size, NGUID, EUI-64, format) changed across drive_del and "
                         "reconnection of a file of the same size: the host would see another namespace")
        self.assertEqual(c.read(1, 0, 1, LBA)[:8], b"NEW-FILE", "the namespace does not read the reconnected file")
        c.write(1, 1, b"W" * LBA, LBA)
        with open(new, "rb") as f:
            f.seek(LBA)
            self.assertEqual(f.read(LBA), b"W" * LBA, "a Write after the reconnection did not reach the new file")
        self.assertEqual(old.read_bytes()[LBA:2 * LBA], bytes(LBA), "a Write after the swap reached the old file")

    def test_replacement_of_another_size(self) -> None:
        """A file of another size (smaller, then larger) for a pulled namespace: refused without any
        change, or taken, the host then seeing the new size after the Controller Reset (Identify
        Namespace NSZE) and reading the new file. Never a namespace that reports the old size over a
        file of another: a smaller file would fail the host's I/O at LBAs its file system owns."""
        old = self.image("old", b"OLD-FILE", 8)
        m = self.machine(["-drive", f"if=none,id=drv1,file={old},format=raw",
                          "-device", f"nvme,id=nvme0,serial=reconnect0,addr={SLOT:02x}.0",
                          "-device", "nvme-ns,id=ns1,drive=drv1,bus=nvme0,nsid=1"])
        c = self.host(m.controller(SLOT, "nvme0"))
        self.assertEqual(c.identify_namespace(1).nsze, (8 << 20) // LBA)
        m.vm.drive_del("drv1")
        for name, mib in (("smaller", 4), ("larger", 16)):
            image = self.image(name, name.upper().encode(), mib)
            entry, nodes = self.block_entry(m, "ns1"), m.vm.resources().nodes
            try:
                self.reconnect(m, "ns1", image)
            except MonitorError as refused:
                self.observe(f"a {mib} MiB replacement for an 8 MiB drive is refused: {refused}")
                self.assertEqual((self.block_entry(m, "ns1"), m.vm.resources().nodes), (entry, nodes),
                                 f"the refused {name} replacement changed the device or the block graph")
                continue
            c.disable()
            self.host(c)
            self.assertEqual(c.identify_namespace(1).nsze, (mib << 20) // LBA,
                             f"a {mib} MiB replacement was taken, but after the Controller Reset Identify "
                             "Namespace reports another size (NSZE, in 512-byte blocks)")
            self.assertEqual(c.read(1, 0, 1, LBA)[:len(name)], name.upper().encode())
            self.observe(f"a {mib} MiB replacement for an 8 MiB drive is taken; NSZE follows it")
            m.vm.drive_del(self.block_entry(m, "ns1")["device"] or "drv1")

    # --- refusals change nothing -------------------------------------------------------------------
    def test_refused_reconnection_changes_nothing(self) -> None:
        """A file that another device holds for writing cannot be reconnected (QEMU's image locking:
        two writers would corrupt it): the refusal leaves the pulled device empty, anonymous and
        with the error actions drive_del gave it; then the right file is accepted."""
        mine, theirs = self.image("mine", b"MINE"), self.image("theirs", b"THEIRS")
        m = self.machine(["-drive", f"if=none,id=vdrv,file={mine},format=raw,werror=stop,rerror=stop",
                          "-device", "virtio-blk-pci,id=vblk,drive=vdrv,addr=04.0",
                          "-drive", f"if=none,id=odrv,file={theirs},format=raw",
                          "-device", "virtio-blk-pci,id=other,drive=odrv,addr=05.0"])
        m.vm.drive_del("vdrv")
        self.assert_refused_without_change(m, VBLK, theirs, "the file is another device's")
        self.assertIn("inserted", self.block_entry(m, OTHER), "the refused reconnection took the other device's file")
        self.reconnect(m, VBLK, mine)
        entry = self.block_entry(m, VBLK)
        self.assertEqual(entry.get("inserted", {}).get("file"), str(mine), "the right file was not reconnected")

    def test_removable_device_keeps_its_own_way(self) -> None:
        """drive_insert is for devices without removable media. On a CD-ROM after drive_del it is
        either refused without any change, or it inserts the medium the way a removable device
        shows one (query-block: the file, tray closed); either way blockdev-change-medium, the
        documented way, works afterwards."""
        disc, other = self.image("disc", b"DISC"), self.image("other", b"OTHER")
        m = self.machine(["-drive", f"if=none,id=cd0,media=cdrom,file={disc},format=raw,readonly=on",
                          "-device", "ide-cd,id=cd,drive=cd0,bus=ide.0"])
        m.vm.drive_del("cd0")
        entry, nodes = self.block_entry(m, "cd"), m.vm.resources().nodes
        try:
            self.reconnect(m, "cd", disc)
        except MonitorError as refused:
            self.log.info("refused on a removable device: %s", refused)
            self.assertEqual(self.block_entry(m, "cd"), entry,
                             f"a refused reconnection of a CD-ROM changed its backend (query-block): {refused}")
            self.assertEqual(m.vm.resources().nodes, nodes, "a refused reconnection changed the block graph")
        else:
            self.observe("the series accepts reconnection on a removable device")
            shown = self.block_entry(m, "cd")
            self.assertEqual((shown.get("inserted", {}).get("file"), shown.get("tray_open")), (str(disc), False),
                             "a CD-ROM reconnection was accepted but query-block does not show the medium in a "
                             "closed tray")
        m.vm.qmp("blockdev-change-medium", id="cd", filename=str(other), format="raw",
                 **{"read-only-mode": "read-only"})
        self.assertEqual(self.block_entry(m, "cd").get("inserted", {}).get("file"), str(other),
                         "blockdev-change-medium no longer works on the CD-ROM")

    # --- what the reconnected drive keeps of the drive that was removed -----------------------------
    def test_read_only_drive_stays_read_only(self) -> None:
        """drive_insert opens the file like the drive drive_del removed: a read-only drive comes back
        read-only (query-block), and the device's writes keep failing. (The QMP form takes a node
        the caller opened, read-only or not: there the caller decides.)

        :avocado: tags=needs:drive_insert
        """
        ro = self.image("ro", b"READONLY")
        m = self.machine(["-drive", f"if=none,id=drv1,file={ro},format=raw,readonly=on",
                          "-device", f"nvme,id=nvme0,serial=reconnect0,addr={SLOT:02x}.0",
                          "-device", "nvme-ns,id=ns1,drive=drv1,bus=nvme0,nsid=1"])
        c = self.host(m.controller(SLOT, "nvme0"))
        self.assertTrue(self.block_entry(m, "ns1")["inserted"]["ro"])
        m.vm.drive_del("drv1")
        m.vm.drive_insert("ns1", ro)
        inserted = self.block_entry(m, "ns1").get("inserted")
        self.assertIsNotNone(inserted, "drive_insert reported success, but the namespace's drive has no medium")
        self.assertTrue(inserted["ro"], "a read-only drive came back read-write")
        c.disable()
        self.host(c)
        self.assertFalse(c.write(1, 0, b"X" * LBA, LBA, check=False).status.ok,
                         "a Write to the reconnected read-only namespace succeeded")
        self.assertEqual(ro.read_bytes()[:8], b"READONLY", "a read-only drive's file was written")
