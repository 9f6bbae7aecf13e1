"""The NVMe data structures a host reads, decoded from their bytes (pure: unit-tested from recordings).

References: NVM Express Base Specification 2.0 ("Base") and NVM Command Set Specification 1.0
("NVM"); fields are named as the specifications name them. Decoding is little-endian throughout.
"""
from __future__ import annotations

import dataclasses
import struct

IDENTIFY_SIZE = 4096
CHANGED_NS_LIST_OVERFLOW = 0xFFFF_FFFF

# Asynchronous Event Type (Base, "Asynchronous Event Request command", completion dword 0).
AER_TYPE_ERROR = 0x0
AER_TYPE_SMART = 0x1
AER_TYPE_NOTICE = 0x2
AER_TYPE_IO_COMMAND_SET = 0x6
AER_TYPE_VENDOR = 0x7
# Asynchronous Event Information - Notice.
AER_INFO_NS_ATTR_CHANGED = 0x00
# Log page identifiers (Base, "Get Log Page command").
LOG_ERROR = 0x01
LOG_SMART = 0x02
LOG_CHANGED_NS_LIST = 0x04
# Asynchronous Event Configuration (Base, feature 0Bh): bit 8, Namespace Attribute Notices.
AEC_NS_ATTR_NOTICES = 1 << 8
# Identify Controller OAES bit 8: the controller supports sending Namespace Attribute Notices.
OAES_NS_ATTR = 1 << 8


def _u(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset:offset + size], "little")


def _text(data: bytes, offset: int, size: int) -> str:
    return data[offset:offset + size].decode("ascii", errors="replace").rstrip(" \0")


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise ValueError(f"{what}: {len(data)} bytes, the structure has {size}")


@dataclasses.dataclass(frozen=True)
class Status:
    """A completion's Status Field (Base, "Completion Queue Entry", dword 3 bits 31:17)."""

    sc: int       # Status Code
    sct: int      # Status Code Type (0 generic, 1 command specific, 2 media and data integrity)
    more: bool
    dnr: bool     # Do Not Retry

    @classmethod
    def from_dword3(cls, dw3: int) -> Status:
        field = dw3 >> 17
        return cls(sc=field & 0xFF, sct=(field >> 8) & 0x7, more=bool(field >> 13 & 1), dnr=bool(field >> 14 & 1))

    @property
    def ok(self) -> bool:
        return self.sc == 0 and self.sct == 0

    def __str__(self) -> str:
        return "success" if self.ok else f"SCT {self.sct:#x} SC {self.sc:#04x}{' DNR' if self.dnr else ''}"


@dataclasses.dataclass(frozen=True)
class Completion:
    """One Completion Queue Entry (Base, "Completion Queue Entry": 16 bytes)."""

    dw0: int
    dw1: int
    sqhd: int
    sqid: int
    cid: int
    phase: int
    status: Status

    @classmethod
    def from_bytes(cls, data: bytes) -> Completion:
        _need(data, 16, "completion queue entry")
        dw0, dw1, dw2, dw3 = struct.unpack_from("<4I", data)
        return cls(dw0=dw0, dw1=dw1, sqhd=dw2 & 0xFFFF, sqid=dw2 >> 16, cid=dw3 & 0xFFFF,
                   phase=dw3 >> 16 & 1, status=Status.from_dword3(dw3))


@dataclasses.dataclass(frozen=True)
class AsyncEvent:
    """An Asynchronous Event Request completion's dword 0 (Base, "Asynchronous Event Request command":
    bits 2:0 Asynchronous Event Type, 15:8 Asynchronous Event Information, 23:16 Log Page Identifier)."""

    type: int
    info: int
    log_page: int

    @classmethod
    def from_dword0(cls, dw0: int) -> AsyncEvent:
        return cls(type=dw0 & 0x7, info=dw0 >> 8 & 0xFF, log_page=dw0 >> 16 & 0xFF)

    @property
    def is_ns_attr_changed(self) -> bool:
        """Notice / Namespace Attribute Changed, cleared by reading the Changed Namespace List."""
        return (self.type, self.info, self.log_page) == (AER_TYPE_NOTICE, AER_INFO_NS_ATTR_CHANGED,
                                                         LOG_CHANGED_NS_LIST)

    def __str__(self) -> str:
        return f"type {self.type:#x} info {self.info:#04x} log page {self.log_page:#04x}"


NS_ATTR_CHANGED = AsyncEvent(AER_TYPE_NOTICE, AER_INFO_NS_ATTR_CHANGED, LOG_CHANGED_NS_LIST)


def parse_nsid_list(data: bytes) -> list[int]:
    """A list of NSIDs: the Active Namespace ID list (Identify CNS 02h) or the Changed Namespace List
    (log page 04h). Both are up to 1024 dword entries in increasing order, the unused ones zero
    (Base, "Namespace List" data structure); the list ends at the first zero."""
    out = []
    for (nsid,) in struct.iter_unpack("<I", data[:len(data) - len(data) % 4]):
        if nsid == 0:
            break
        out.append(nsid)
    return out


def changed_list_overflowed(nsids: list[int]) -> bool:
    """Base, "Changed Namespace List": more than 1024 changed namespaces reads as one FFFFFFFFh entry."""
    return nsids[:1] == [CHANGED_NS_LIST_OVERFLOW]


@dataclasses.dataclass(frozen=True)
class IdentifyController:
    """Identify Controller data structure (Base, "Identify Controller Data Structure", CNS 01h)."""

    vid: int
    ssvid: int
    sn: str
    mn: str
    fr: str
    cmic: int       # byte 76: bit 1 two or more controllers (ports), bit 3 ANA reporting
    mdts: int       # byte 77: maximum data transfer size, 2^n pages (0: no limit)
    cntlid: int     # bytes 79:78: the controller's ID in its NVM subsystem
    ver: int        # bytes 83:80
    oaes: int       # bytes 95:92: optional asynchronous events; bit 8 Namespace Attribute Notices
    ctratt: int     # bytes 99:96
    oacs: int       # bytes 257:256: bit 3 Namespace Management, Namespace Attachment
    aerl: int       # byte 259: outstanding Asynchronous Event Requests, 0's based
    lpa: int        # byte 261
    sqes: int       # byte 512
    cqes: int       # byte 513
    nn: int         # bytes 519:516: maximum NSID
    oncs: int       # bytes 521:520: bit 2 Dataset Management
    subnqn: str     # bytes 1023:768

    @classmethod
    def from_bytes(cls, d: bytes) -> IdentifyController:
        _need(d, 1024, "Identify Controller")
        return cls(vid=_u(d, 0, 2), ssvid=_u(d, 2, 2), sn=_text(d, 4, 20), mn=_text(d, 24, 40), fr=_text(d, 64, 8),
                   cmic=d[76], mdts=d[77], cntlid=_u(d, 78, 2), ver=_u(d, 80, 4), oaes=_u(d, 92, 4),
                   ctratt=_u(d, 96, 4), oacs=_u(d, 256, 2), aerl=d[259], lpa=d[261], sqes=d[512], cqes=d[513],
                   nn=_u(d, 516, 4), oncs=_u(d, 520, 2), subnqn=_text(d, 768, 256))


@dataclasses.dataclass(frozen=True)
class NvmIdentifyController:
    """I/O Command Set specific Identify Controller for the NVM command set (NVM, "I/O Command Set
    Specific Identify Controller Data Structure", CNS 06h CSI 00h)."""

    vsl: int      # byte 0: Verify Size Limit
    wzsl: int     # byte 1: Write Zeroes Size Limit
    wusl: int     # byte 2: Write Uncorrectable Size Limit
    dmrl: int     # byte 3: Dataset Management Ranges Limit (0: no limit reported)
    dmrsl: int    # bytes 7:4: Dataset Management Range Size Limit, in logical blocks
    dmsl: int     # bytes 15:8: Dataset Management Size Limit, in logical blocks

    @classmethod
    def from_bytes(cls, d: bytes) -> NvmIdentifyController:
        _need(d, 16, "NVM Identify Controller")
        return cls(vsl=d[0], wzsl=d[1], wusl=d[2], dmrl=d[3], dmrsl=_u(d, 4, 4), dmsl=_u(d, 8, 8))


@dataclasses.dataclass(frozen=True)
class LbaFormat:
    """LBA Format Data Structure (NVM, Identify Namespace bytes 128 + 4n)."""

    ms: int       # bits 15:0: metadata bytes per LBA
    lbads: int    # bits 23:16: LBA data size, 2^n bytes (0: format not supported)
    rp: int       # bits 25:24: relative performance

    @property
    def data_size(self) -> int:
        return 1 << self.lbads if self.lbads else 0


@dataclasses.dataclass(frozen=True)
class IdentifyNamespace:
    """Identify Namespace data structure for the NVM command set (NVM, "Identify Namespace Data
    Structure", CNS 00h). For an inactive NSID the controller returns it zero-filled (Base,
    "Identify command": "If the specified NSID is an inactive NSID, then the controller returns a
    zero filled data structure")."""

    nsze: int       # bytes 7:0: size in logical blocks
    ncap: int       # bytes 15:8: capacity in logical blocks
    nuse: int       # bytes 23:16: utilization in logical blocks
    nsfeat: int     # byte 24
    nlbaf: int      # byte 25: number of LBA formats, 0's based
    flbas: int      # byte 26: bits 3:0 (and 6:5 above 16 formats) the format in use, bit 4 extended LBA
    nmic: int       # byte 30: bit 0 the namespace may be attached to two or more controllers (shared)
    dlfeat: int     # byte 33: bits 2:0 what a deallocated block reads as (1h: zeroes)
    nguid: bytes    # bytes 119:104
    eui64: bytes    # bytes 127:120
    lbaf: tuple[LbaFormat, ...]
    zero: bool      # the whole structure is zero (an inactive NSID)

    @classmethod
    def from_bytes(cls, d: bytes) -> IdentifyNamespace:
        _need(d, 384, "Identify Namespace")
        nlbaf = d[25]
        formats = tuple(LbaFormat(ms=_u(d, o, 2), lbads=d[o + 2], rp=d[o + 3] & 3)
                        for o in (128 + 4 * i for i in range(min(nlbaf + 1, 64))))
        return cls(nsze=_u(d, 0, 8), ncap=_u(d, 8, 8), nuse=_u(d, 16, 8), nsfeat=d[24], nlbaf=nlbaf, flbas=d[26],
                   nmic=d[30], dlfeat=d[33], nguid=bytes(d[104:120]), eui64=bytes(d[120:128]), lbaf=formats,
                   zero=not any(d))

    @property
    def format_index(self) -> int:
        """FLBAS bits 3:0 plus bits 6:5 as the upper bits (NVM, FLBAS)."""
        return (self.flbas & 0xF) | (((self.flbas >> 5) & 3) << 4 if self.nlbaf >= 16 else 0)

    @property
    def lba_size(self) -> int:
        """Data bytes per logical block of the format in use."""
        return self.lbaf[self.format_index].data_size if self.lbaf else 0

    @property
    def shared(self) -> bool:
        return bool(self.nmic & 1)


def controller_list(cntlids: list[int]) -> bytes:
    """A Controller List (Base, "Controller List" data structure): the count, then 2-byte IDs; 4 KiB."""
    if len(cntlids) > 2047:
        raise ValueError("a controller list holds at most 2047 identifiers")
    data = struct.pack(f"<H{len(cntlids)}H", len(cntlids), *cntlids)
    return data + bytes(IDENTIFY_SIZE - len(data))


def dsm_ranges(ranges: list[tuple[int, int]]) -> bytes:
    """Dataset Management ranges (NVM, "Dataset Management command": 16 bytes each: context
    attributes, length in logical blocks, starting LBA) from (slba, nlb) pairs."""
    return b"".join(struct.pack("<IIQ", 0, nlb, slba) for slba, nlb in ranges)
