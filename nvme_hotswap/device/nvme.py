"""A minimal NVMe host over qtest: registers, polled queues, the admin and I/O commands tests need.

No interrupts: completions are found by polling the phase bit of the completion queue (Base,
"Completion Queue Entry": the Phase Tag inverts on each pass through the queue). Asynchronous
Event Request completions arrive on the admin completion queue between other completions; they
are kept aside (`NvmeController.events`) so a test can read them in order. Register layout: NVMe
Base Specification 2.0, "Controller Registers" (CAP 00h, VS 08h, CC 14h, CSTS 1Ch, AQA 24h,
ASQ 28h, ACQ 30h, doorbells from 1000h with a stride of 4 << CAP.DSTRD bytes).
"""
from __future__ import annotations

import dataclasses
import logging
import struct
import time
from collections.abc import Callable

from . import nvme_data as d
from .pci import PciDevice
from .qtest import Qtest

LOG = logging.getLogger("nvme_hotswap.device.nvme")

REG_CAP, REG_VS, REG_CC, REG_CSTS, REG_AQA, REG_ASQ, REG_ACQ = 0x00, 0x08, 0x14, 0x1C, 0x24, 0x28, 0x30
CC_EN = 1
CC_IOSQES_64, CC_IOCQES_16 = 6 << 16, 4 << 20
CSS_NVM, CSS_ALL = 0b000, 0b110   # CC.CSS (bits 6:4): the NVM command set only; all supported I/O command sets
CSTS_RDY, CSTS_CFS = 1, 2
PAGE = 4096

# Admin opcodes (Base, "Admin Command Set").
ADM_DELETE_SQ, ADM_CREATE_SQ, ADM_GET_LOG_PAGE, ADM_DELETE_CQ, ADM_CREATE_CQ = 0x00, 0x01, 0x02, 0x04, 0x05
ADM_IDENTIFY, ADM_SET_FEATURES, ADM_GET_FEATURES, ADM_AER, ADM_NS_ATTACHMENT = 0x06, 0x09, 0x0A, 0x0C, 0x15
# NVM command set opcodes (NVM, "I/O Commands for the NVM Command Set").
IO_WRITE, IO_READ, IO_DSM = 0x01, 0x02, 0x09
# Identify CNS values (Base, "Identify command").
CNS_NS, CNS_CTRL, CNS_ACTIVE_NSIDS, CNS_CSI_NS, CNS_CSI_CTRL = 0x00, 0x01, 0x02, 0x05, 0x06
FEAT_ASYNC_EVENT_CONFIG = 0x0B
CSI_NVM = 0x00

POLL_S = 0.001
CLOCK_STEP_NS = 1_000_000   # virtual time each poll advances: timers of the device model get to run


class NvmeError(RuntimeError):
    """A command completed with an error status, or the controller did not answer in time."""


class CommandFailed(NvmeError):
    def __init__(self, what: str, completion: d.Completion) -> None:
        super().__init__(f"{what} failed: {completion.status}")
        self.completion = completion


class GuestRam:
    """A bump allocator of page-aligned guest RAM for queues and PRP buffers (q35 RAM starts at 0;
    the firmware never runs under qtest, so everything from `start` to `end` is ours)."""

    def __init__(self, qt: Qtest, start: int = 16 << 20, end: int = 120 << 20) -> None:
        self.qt, self.next, self.end = qt, start, end

    def alloc(self, size: int) -> int:
        size = -(-size // PAGE) * PAGE
        if self.next + size > self.end:
            raise NvmeError(f"guest RAM for queues and buffers exhausted (0x{self.end:x}); start QEMU with more -m")
        addr, self.next = self.next, self.next + size
        self.qt.memset(addr, size)
        return addr


@dataclasses.dataclass
class QueuePair:
    """A submission queue and its completion queue, both `size` entries, polled."""

    qid: int
    size: int
    sq: int
    cq: int
    tail: int = 0
    head: int = 0
    phase: int = 1
    next_cid: int = 0
    inflight: int = 0   # submitted, not completed (AERs included): the SQ is full at size - 1


class NvmeController:
    """One controller behind a mapped BAR0; `ram` gives the memory its queues and buffers live in."""

    def __init__(self, qt: Qtest, pci: PciDevice, bar: int, ram: GuestRam, name: str = "nvme",
                 timeout: float = 10.0) -> None:
        self.qt, self.pci, self.bar, self.ram, self.name, self.timeout = qt, pci, bar, ram, name, timeout
        self.cap = self.readq(REG_CAP)
        self.stride = 4 << ((self.cap >> 32) & 0xF)    # CAP.DSTRD
        self.mqes = (self.cap & 0xFFFF) + 1             # CAP.MQES, 0's based
        self.admin: QueuePair | None = None
        self.io: dict[int, QueuePair] = {}
        self.events: list[d.AsyncEvent] = []           # AER completions, oldest first, not yet taken
        self._aer_cids: set[int] = set()
        self._done: dict[tuple[int, int], d.Completion] = {}
        self.buf = ram.alloc(2 * PAGE)                  # the data buffer of admin commands (and 2-page I/O)

    # --- registers ---------------------------------------------------------------------------
    def readl(self, reg: int) -> int:
        return self.qt.readl(self.bar + reg)

    def readq(self, reg: int) -> int:
        return self.qt.readl(self.bar + reg) | self.qt.readl(self.bar + reg + 4) << 32

    def writel(self, reg: int, value: int) -> None:
        self.qt.writel(self.bar + reg, value)

    def writeq(self, reg: int, value: int) -> None:
        self.qt.writel(self.bar + reg, value & 0xFFFF_FFFF)
        self.qt.writel(self.bar + reg + 4, value >> 32)

    @property
    def version(self) -> tuple[int, int, int]:
        vs = self.readl(REG_VS)
        return vs >> 16, vs >> 8 & 0xFF, vs & 0xFF

    @property
    def ready(self) -> bool:
        return bool(self.readl(REG_CSTS) & CSTS_RDY)

    def _doorbell(self, qid: int, completion: bool) -> int:
        return 0x1000 + (2 * qid + int(completion)) * self.stride

    # --- enable / disable --------------------------------------------------------------------
    def enable(self, queue_size: int = 64, css: int = CSS_NVM) -> None:
        """Set up the admin queues and set CC.EN with CC.CSS `css` (000b: the NVM command set; 110b:
        all the I/O command sets CAP.CSS allows) and 4 KiB pages; wait for CSTS.RDY (Base,
        "Initialization": bounded by CAP.TO, in 500 ms units)."""
        size = min(queue_size, self.mqes)
        sq, cq = self.ram.alloc(size * 64), self.ram.alloc(size * 16)
        self.admin = QueuePair(0, size, sq, cq)
        self.writel(REG_AQA, (size - 1) << 16 | (size - 1))
        self.writeq(REG_ASQ, sq)
        self.writeq(REG_ACQ, cq)
        self.writel(REG_CC, CC_EN | css << 4 | CC_IOSQES_64 | CC_IOCQES_16)
        self._wait_ready(True)

    def disable(self) -> None:
        """Clear CC.EN (a Controller Reset: queues deleted, outstanding commands aborted) and wait for
        CSTS.RDY to clear."""
        self.writel(REG_CC, self.readl(REG_CC) & ~CC_EN)
        self._wait_ready(False)
        self.admin, self.io, self._aer_cids, self._done = None, {}, set(), {}

    def _wait_ready(self, want: bool) -> None:
        bound = max(((self.cap >> 24) & 0xFF) * 0.5, 1.0)   # CAP.TO
        deadline = time.monotonic() + min(bound, self.timeout)
        while self.ready != want:
            if self.readl(REG_CSTS) & CSTS_CFS:
                raise NvmeError(f"{self.name}: CSTS.CFS (Controller Fatal Status) set, waiting for RDY={int(want)}")
            if time.monotonic() > deadline:
                raise NvmeError(f"{self.name}: CSTS.RDY did not become {int(want)} within CAP.TO "
                                f"({bound:g} s) after CC.EN={int(want)}")
            self.qt.clock_step(CLOCK_STEP_NS)
            time.sleep(POLL_S)

    # --- queues and commands -----------------------------------------------------------------
    def _queue(self, qid: int) -> QueuePair:
        q = self.admin if qid == 0 else self.io.get(qid)
        if q is None:
            raise NvmeError(f"{self.name}: queue {qid} does not exist (enable the controller / create it first)")
        return q

    def submit(self, qid: int, opcode: int, nsid: int = 0, prp1: int = 0, prp2: int = 0,
               cdw: tuple[int, ...] = ()) -> int:
        """Place a command in submission queue `qid` and ring its doorbell; return its CID."""
        q = self._queue(qid)
        if q.inflight >= q.size - 1:
            raise NvmeError(f"{self.name}: submission queue {qid} is full ({q.inflight} commands outstanding)")
        q.inflight += 1
        cid = q.next_cid
        q.next_cid = (q.next_cid + 1) & 0xFFFF
        dwords = [0] * 16
        dwords[0] = opcode | cid << 16
        dwords[1] = nsid
        dwords[6], dwords[7] = prp1 & 0xFFFF_FFFF, prp1 >> 32
        dwords[8], dwords[9] = prp2 & 0xFFFF_FFFF, prp2 >> 32
        for i, value in enumerate(cdw):
            dwords[10 + i] = value & 0xFFFF_FFFF
        self.qt.memwrite(q.sq + q.tail * 64, struct.pack("<16I", *dwords))
        q.tail = (q.tail + 1) % q.size
        self.qt.writel(self.bar + self._doorbell(qid, False), q.tail)
        return cid

    def _reap(self, q: QueuePair) -> bool:
        """Take one completion off `q` if there is one; whether there was."""
        entry = d.Completion.from_bytes(self.qt.memread(q.cq + q.head * 16, 16))
        if entry.phase != q.phase:
            return False
        q.head = (q.head + 1) % q.size
        q.inflight -= 1
        if q.head == 0:
            q.phase ^= 1
        self.qt.writel(self.bar + self._doorbell(q.qid, True), q.head)
        if q.qid == 0 and entry.cid in self._aer_cids:
            self._aer_cids.discard(entry.cid)
            if entry.status.ok:
                self.events.append(d.AsyncEvent.from_dword0(entry.dw0))
                LOG.debug("%s: asynchronous event %s", self.name, self.events[-1])
            else:   # aborted by a reset, or over the limit: not an event
                LOG.debug("%s: AER cid %d completed with %s", self.name, entry.cid, entry.status)
        else:
            self._done[(q.qid, entry.cid)] = entry
        return True

    def poll(self, until: Callable[[], bool], seconds: float, what: str) -> bool:
        """Reap completions until `until()` or `seconds` pass (moving the virtual clock a little each
        round); whether `until()` became true. Raises nothing: the caller words the failure."""
        deadline = time.monotonic() + seconds
        while True:
            for q in [q for q in (self.admin, *self.io.values()) if q is not None]:
                while self._reap(q):
                    pass
            if until():
                return True
            if time.monotonic() > deadline:
                LOG.debug("%s: %s: nothing within %g s", self.name, what, seconds)
                return False
            self.qt.clock_step(CLOCK_STEP_NS)
            time.sleep(POLL_S)

    def wait(self, qid: int, cid: int, what: str) -> d.Completion:
        """The completion of command `cid` on queue `qid`, within the controller's timeout."""
        if not self.poll(lambda: (qid, cid) in self._done, self.timeout, what):
            raise NvmeError(f"{self.name}: {what} (queue {qid}, cid {cid}) not completed within {self.timeout:g} s")
        return self._done.pop((qid, cid))

    def command(self, what: str, opcode: int, qid: int = 0, nsid: int = 0, prp1: int = 0, prp2: int = 0,
                cdw: tuple[int, ...] = (), check: bool = True) -> d.Completion:
        """Submit, wait, and (if `check`) raise CommandFailed on an error status."""
        c = self.wait(qid, self.submit(qid, opcode, nsid, prp1, prp2, cdw), what)
        if check and not c.status.ok:
            raise CommandFailed(f"{self.name}: {what}", c)
        return c

    def _read_buf(self, what: str, opcode: int, nsid: int, cdw: tuple[int, ...], size: int = PAGE,
                  check: bool = True) -> tuple[d.Completion, bytes]:
        self.qt.memset(self.buf, size, 0xA5)   # a pattern, so "returned zeroes" means the controller wrote them
        c = self.command(what, opcode, nsid=nsid, prp1=self.buf, cdw=cdw, check=check)
        return c, self.qt.memread(self.buf, size)

    # --- admin commands ----------------------------------------------------------------------
    def identify_raw(self, cns: int, nsid: int = 0, csi: int = 0, cntid: int = 0,
                     check: bool = True) -> tuple[d.Completion, bytes]:
        return self._read_buf(f"Identify CNS {cns:#04x} NSID {nsid}", ADM_IDENTIFY, nsid,
                              (cns | cntid << 16, csi << 24), check=check)

    def identify_controller(self) -> d.IdentifyController:
        return d.IdentifyController.from_bytes(self.identify_raw(CNS_CTRL)[1])

    def identify_nvm_controller(self) -> d.NvmIdentifyController:
        return d.NvmIdentifyController.from_bytes(self.identify_raw(CNS_CSI_CTRL, csi=CSI_NVM)[1])

    def identify_namespace(self, nsid: int) -> d.IdentifyNamespace:
        return d.IdentifyNamespace.from_bytes(self.identify_raw(CNS_NS, nsid)[1])

    def active_nsids(self, after: int = 0) -> list[int]:
        """Identify CNS 02h: the active NSIDs greater than `after`, in increasing order."""
        return d.parse_nsid_list(self.identify_raw(CNS_ACTIVE_NSIDS, after)[1])

    def get_log_page(self, lid: int, size: int = PAGE, rae: bool = False, nsid: int = 0xFFFF_FFFF) -> bytes:
        """Get Log Page (at most one page here); RAE clear: reading it clears the event (Base)."""
        numd = size // 4 - 1
        cdw10 = lid | int(rae) << 15 | (numd & 0xFFFF) << 16
        return self._read_buf(f"Get Log Page {lid:#04x}", ADM_GET_LOG_PAGE, nsid, (cdw10, numd >> 16), size)[1]

    def changed_namespaces(self, rae: bool = False) -> list[int]:
        """Log page 04h, the Changed Namespace List (1024 dwords)."""
        return d.parse_nsid_list(self.get_log_page(d.LOG_CHANGED_NS_LIST, rae=rae))

    def smart_log(self) -> bytes:
        return self.get_log_page(d.LOG_SMART, size=512)

    def get_feature(self, fid: int, sel: int = 0) -> int:
        return self.command(f"Get Features {fid:#04x}", ADM_GET_FEATURES, cdw=(fid | sel << 8,)).dw0

    def set_feature(self, fid: int, value: int) -> d.Completion:
        return self.command(f"Set Features {fid:#04x} = {value:#x}", ADM_SET_FEATURES, cdw=(fid, value))

    def set_async_event_config(self, value: int) -> None:
        self.set_feature(FEAT_ASYNC_EVENT_CONFIG, value)

    def submit_aer(self, count: int = 1) -> None:
        """Leave `count` more Asynchronous Event Requests outstanding (their completions are events)."""
        for _ in range(count):
            self._aer_cids.add(self.submit(0, ADM_AER))

    @property
    def outstanding_aers(self) -> int:
        return len(self._aer_cids)

    def wait_event(self, seconds: float = 5.0) -> d.AsyncEvent | None:
        """The oldest asynchronous event not taken yet, waiting up to `seconds`; None if none came."""
        self.poll(lambda: bool(self.events), seconds, "an asynchronous event")
        return self.events.pop(0) if self.events else None

    def take_events(self, seconds: float = 0.3) -> list[d.AsyncEvent]:
        """Every asynchronous event that arrives within `seconds` (for "exactly one" / "none")."""
        self.poll(lambda: False, seconds, "more asynchronous events")
        out, self.events = self.events, []
        return out

    def namespace_attachment(self, nsid: int, cntlids: list[int], attach: bool, check: bool = True,
                             sel: int | None = None) -> d.Completion:
        """Namespace Attachment (Base): SEL 0h attach, 1h detach (`sel`: any other value, reserved),
        to the controllers in the list."""
        sel = (0 if attach else 1) if sel is None else sel
        self.qt.memwrite(self.buf, d.controller_list(cntlids))
        return self.command(f"Namespace Attachment (SEL {sel:x}h) NSID {nsid}",
                            ADM_NS_ATTACHMENT, nsid=nsid, prp1=self.buf, cdw=(sel,), check=check)

    def create_io_queues(self, qid: int = 1, size: int = 64) -> QueuePair:
        """Create I/O Completion Queue then I/O Submission Queue `qid` (physically contiguous,
        interrupts off: polled)."""
        size = min(size, self.mqes)
        q = QueuePair(qid, size, self.ram.alloc(size * 64), self.ram.alloc(size * 16))
        self.command(f"Create I/O CQ {qid}", ADM_CREATE_CQ, prp1=q.cq, cdw=(qid | (size - 1) << 16, 1))
        self.command(f"Create I/O SQ {qid}", ADM_CREATE_SQ, prp1=q.sq, cdw=(qid | (size - 1) << 16, 1 | qid << 16))
        self.io[qid] = q
        return q

    def delete_io_queues(self, qid: int = 1) -> None:
        self.command(f"Delete I/O SQ {qid}", ADM_DELETE_SQ, cdw=(qid,))
        self.command(f"Delete I/O CQ {qid}", ADM_DELETE_CQ, cdw=(qid,))
        self.io.pop(qid, None)

    # --- I/O -----------------------------------------------------------------------------------
    def _io(self, what: str, opcode: int, nsid: int, slba: int, nlb: int, nbytes: int, qid: int,
            check: bool) -> d.Completion:
        if nbytes > 2 * PAGE:
            raise ValueError(f"{what}: {nbytes} bytes; this host transfers at most two pages (PRP1 + PRP2)")
        prp2 = self.buf + PAGE if nbytes > PAGE else 0
        return self.command(what, opcode, qid=qid, nsid=nsid, prp1=self.buf, prp2=prp2,
                            cdw=(slba & 0xFFFF_FFFF, slba >> 32, nlb - 1), check=check)

    def write(self, nsid: int, slba: int, data: bytes, lba_size: int, qid: int = 1, check: bool = True) -> d.Completion:
        if len(data) % lba_size:
            raise ValueError(f"write of {len(data)} bytes is not a whole number of {lba_size}-byte blocks")
        self.qt.memwrite(self.buf, data)
        return self._io(f"Write NSID {nsid} LBA {slba}", IO_WRITE, nsid, slba, len(data) // lba_size, len(data),
                        qid, check)

    def read(self, nsid: int, slba: int, nlb: int, lba_size: int, qid: int = 1) -> bytes:
        self.qt.memset(self.buf, nlb * lba_size, 0xA5)
        self._io(f"Read NSID {nsid} LBA {slba}", IO_READ, nsid, slba, nlb, nlb * lba_size, qid, True)
        return self.qt.memread(self.buf, nlb * lba_size)

    def deallocate(self, nsid: int, ranges: list[tuple[int, int]], qid: int = 1) -> d.Completion:
        """Dataset Management with the Attribute - Deallocate bit (CDW11 bit 2) over (slba, nlb) ranges."""
        self.qt.memwrite(self.buf, d.dsm_ranges(ranges))
        return self.command(f"Dataset Management (deallocate) NSID {nsid}", IO_DSM, qid=qid, nsid=nsid,
                            prp1=self.buf, cdw=(len(ranges) - 1, 1 << 2))
