"""Decoding of NVMe structures (nvme_hotswap.device.nvme_data) from bytes QEMU 10.2.2 returned.

Recorded over qtest from our build (nvme_hotswap.device): a controller `serial=contract` in
nvme-subsys `nqn.2026-12.org.qemu:contract`, namespace 1 shared=off on a 4 MiB file, then NSID 2
plugged. The structures are 4 KiB of mostly zeroes: kept as {offset: byte} of the non-zero bytes.
"""
import struct
import unittest

from nvme_hotswap.device import nvme_data as d


def _text(offset: int, text: str) -> dict[int, int]:
    return {offset + i: b for i, b in enumerate(text.encode())}


def _bytes(nonzero: dict[int, int], size: int = d.IDENTIFY_SIZE) -> bytes:
    data = bytearray(size)
    for offset, value in nonzero.items():
        data[offset] = value
    return bytes(data)


ID_CTRL = _bytes({
    0: 54, 1: 27, 2: 244, 3: 26, **_text(4, "contract".ljust(20)), **_text(24, "QEMU NVMe Ctrl".ljust(40)),
    **_text(64, "10.2.2  "), 72: 6, 74: 84, 75: 82, 76: 2, 77: 7, 81: 4, 82: 1, 93: 1, 96: 16, 97: 128, 111: 1,
    256: 43, 257: 1, 258: 3, 259: 3, 260: 3, 261: 7, 266: 87, 267: 1, 268: 117, 269: 1, 340: 1, 512: 102, 513: 68,
    517: 1, 520: 93, 521: 7, 525: 7, 534: 15, 536: 1, 538: 8,
    **_text(768, "nqn.2019-08.org.qemu:nqn.2026-12.org.qemu:contract"),
    2048: 196, 2049: 9, 2052: 16, 2056: 4})
ID_CTRL_NVM = _bytes({0: 7, 3: 255, 4: 255, 5: 255, 6: 63, 8: 1, 9: 255, 10: 191, 11: 63})
ID_NS = _bytes({1: 32, 9: 32, 17: 32, 24: 52, 25: 7, 27: 3, 28: 31, 33: 1, 68: 7, 70: 7, 74: 128, 76: 128, 80: 127,
                102: 1, 130: 9, 132: 8, 134: 9, 136: 16, 138: 9, 140: 64, 142: 9, 146: 12, 148: 8, 150: 12, 152: 16,
                154: 12, 156: 64, 158: 12})
CHANGED_LOG = _bytes({0: 2})
ACTIVE_LIST = _bytes({0: 1, 4: 2})
AER_DW0 = 0x0004_0002          # the plug's AER completion, dword 0


class IdentifyStructures(unittest.TestCase):
    def test_controller(self) -> None:
        c = d.IdentifyController.from_bytes(ID_CTRL)
        self.assertEqual((c.vid, c.ssvid), (0x1B36, 0x1AF4))
        self.assertEqual((c.sn, c.mn, c.fr), ("contract", "QEMU NVMe Ctrl", "10.2.2"))
        self.assertEqual(c.cmic, 2, "CMIC bit 1: a controller of an nvme-subsys may have siblings")
        self.assertEqual((c.mdts, c.cntlid, c.ver), (7, 0, 0x10400))
        self.assertTrue(c.oaes & d.OAES_NS_ATTR)
        self.assertTrue(c.oacs & (1 << 3), "OACS bit 3: Namespace Management and Attachment")
        self.assertEqual((c.aerl, c.sqes, c.cqes, c.nn), (3, 0x66, 0x44, 256))
        self.assertTrue(c.oncs & (1 << 2), "ONCS bit 2: Dataset Management")
        self.assertEqual(c.subnqn, "nqn.2019-08.org.qemu:nqn.2026-12.org.qemu:contract")

    def test_nvm_controller(self) -> None:
        n = d.NvmIdentifyController.from_bytes(ID_CTRL_NVM)
        self.assertEqual((n.vsl, n.wzsl, n.wusl, n.dmrl), (7, 0, 0, 255))
        self.assertEqual((n.dmrsl, n.dmsl), (0x3FFFFF, 0x3FBFFF01))

    def test_namespace(self) -> None:
        ns = d.IdentifyNamespace.from_bytes(ID_NS)
        self.assertEqual((ns.nsze, ns.ncap, ns.nuse), (8192, 8192, 8192), "4 MiB in 512-byte blocks")
        self.assertEqual((ns.nlbaf, ns.flbas, ns.format_index, ns.lba_size), (7, 0, 0, 512))
        self.assertEqual([(f.ms, f.data_size) for f in ns.lbaf],
                         [(0, 512), (8, 512), (16, 512), (64, 512), (0, 4096), (8, 4096), (16, 4096), (64, 4096)])
        self.assertFalse(ns.shared, "shared=off: NMIC bit 0 clear")
        self.assertEqual(ns.dlfeat, 1, "DLFEAT 1h: deallocated blocks read as zeroes")
        self.assertFalse(ns.zero)

    def test_inactive_namespace_is_zero_filled(self) -> None:
        ns = d.IdentifyNamespace.from_bytes(bytes(d.IDENTIFY_SIZE))
        self.assertTrue(ns.zero)
        self.assertEqual((ns.nsze, ns.lba_size, ns.shared), (0, 0, False), "LBADS 0: no format")

    def test_format_index_uses_upper_bits_above_16_formats(self) -> None:
        data = bytearray(d.IDENTIFY_SIZE)
        data[25], data[26] = 31, 0b0100_0011      # 32 formats; FLBAS bits 3:0 = 3, bits 6:5 = 2
        self.assertEqual(d.IdentifyNamespace.from_bytes(bytes(data)).format_index, 0x23)
        data[25] = 7                             # with 16 formats or fewer bits 6:5 are reserved
        self.assertEqual(d.IdentifyNamespace.from_bytes(bytes(data)).format_index, 3)

    def test_short_structure_is_refused(self) -> None:
        with self.assertRaisesRegex(ValueError, "Identify Namespace: 100 bytes"):
            d.IdentifyNamespace.from_bytes(bytes(100))


class EventsAndLists(unittest.TestCase):
    def test_aer_dword0(self) -> None:
        e = d.AsyncEvent.from_dword0(AER_DW0)
        self.assertEqual((e.type, e.info, e.log_page), (d.AER_TYPE_NOTICE, d.AER_INFO_NS_ATTR_CHANGED, 0x04))
        self.assertTrue(e.is_ns_attr_changed)
        self.assertEqual(str(e), "type 0x2 info 0x00 log page 0x04")
        smart = d.AsyncEvent.from_dword0(0x0002_0101)   # SMART / temperature threshold, log 02h
        self.assertEqual((smart.type, smart.info, smart.log_page), (1, 1, 2))
        self.assertFalse(smart.is_ns_attr_changed)

    def test_nsid_lists(self) -> None:
        self.assertEqual(d.parse_nsid_list(CHANGED_LOG), [2])
        self.assertEqual(d.parse_nsid_list(ACTIVE_LIST), [1, 2])
        self.assertEqual(d.parse_nsid_list(bytes(d.IDENTIFY_SIZE)), [])
        overflow = d.parse_nsid_list(struct.pack("<I", 0xFFFF_FFFF) + bytes(4092))
        self.assertTrue(d.changed_list_overflowed(overflow))
        self.assertFalse(d.changed_list_overflowed([2]))

    def test_completion_and_status(self) -> None:
        # dword 3: CID 5, phase 1, status SCT 0 SC 02h (Invalid Field in Command) with DNR
        dw3 = 5 | 1 << 16 | (0x02 | 1 << 14) << 17
        c = d.Completion.from_bytes(struct.pack("<4I", 0, 0, 3 | 1 << 16, dw3))
        self.assertEqual((c.cid, c.phase, c.sqhd, c.sqid), (5, 1, 3, 1))
        self.assertEqual((c.status.sct, c.status.sc, c.status.dnr, c.status.ok), (0, 2, True, False))
        self.assertEqual(str(c.status), "SCT 0x0 SC 0x02 DNR")

    def test_controller_list_and_dsm_ranges(self) -> None:
        self.assertEqual(d.controller_list([0, 1])[:6], bytes([2, 0, 0, 0, 1, 0]))
        self.assertEqual(len(d.controller_list([])), d.IDENTIFY_SIZE)
        self.assertEqual(d.dsm_ranges([(10, 4)]), struct.pack("<IIQ", 0, 4, 10))
