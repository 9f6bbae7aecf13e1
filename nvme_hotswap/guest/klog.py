"""Guest kernel-log patterns, named after what they prove; accepted on Debian 12 (6.1) and 13 (6.12).

Tests match these, never ad-hoc strings, so a wording change in a kernel is fixed here once.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from .facts import KernelLine

# Boot-time sanity of a PCIe root port: AER service bound, native hotplug (pciehp) on the slot.
AER_ENABLED = r"pcieport {port}: AER: enabled with IRQ \d+"
PCIEHP_SLOT = r"pcieport {port}: pciehp: Slot #\d+ .*HotPlug\+"

# The guest saw the Namespace Attribute Changed AEN and rescanned (nvme_scan_work).
NS_RESCAN = r"nvme {ctrl}: rescanning namespaces\."

# The guest refused a namespace that a second controller reported while it is not shared (Identify
# Namespace NMIC.SHRNS clear): a private namespace must be attached to one controller at a time
# (nvme core.c, nvme_init_ns_head). 6.1 and 6.12 print the same.
DUPLICATE_UNSHARED = r"nvme (nvme\d+): Duplicate unshared namespace {nsid}\b"

# AER recovery of a controller after a Surprise Down error injected at its root port.
AER_FATAL_RECEIVED = r"pcieport {port}: AER: (Multiple )?Uncorrect(ed|able) \(Fatal\) error (message )?received"
AER_SDES = r"\[ ?5\] SDES\s+\(First\)"
NVME_FROZEN = r"nvme {ctrl}: frozen state error detected, reset controller"
NVME_SLOT_RESET = r"nvme {ctrl}: restart after slot reset"
LINK_RESET_OK = r"pcieport {port}: AER: Root Port link has been reset \(0\)"
RECOVERY_OK = r"pcieport {port}: AER: device recovery successful"
RECOVERY_FAILED = r"pcieport {port}: AER: device recovery failed"

# I/O to a namespace whose backing file was pulled (drive_del).
IO_ERROR = r"(critical medium error|I/O error|I/O Error).*dev {disk}|{disk}.*(I/O|medium) error"

# File systems and block stacks over a swapped disk (test_storage_stacks.py); 6.1 and 6.12 print the same.
EXT4_JOURNAL_ABORTED = r"EXT4-fs error \(device {disk}\).*(Detected aborted journal|Journal has aborted)"
EXT4_READ_ONLY = r"EXT4-fs \({disk}\): Remounting filesystem read-only"
XFS_SHUTDOWN = r"XFS \({disk}\): .*([Ss]hutting down filesystem|has been shut down|Corruption of in-memory data)"
# any complaint of a file system about the disk (a swap the file system rode out has none)
FS_ERROR = (r"EXT4-fs error \(device {disk}\)|EXT4-fs \({disk}\): .*(error|read-only)|"
            r"XFS \({disk}\): .*([Ee]rror|[Ss]hut|[Cc]orrupt)|Buffer I/O error on dev {disk}")
MD_MEMBER_FAILED = r"md/raid1:{md}: Disk failure on {disk}, disabling device"
MD_RECOVERY_DONE = r"md: {md}: recovery? done"   # 7.2 (unstable) says "recover done"

# Anything here after a test is a kernel bug report: the test fails with the excerpt.
KERNEL_TROUBLE = re.compile(r"BUG:|WARNING:|Call Trace|Oops|Kernel panic|general protection fault")


def pattern(template: str, **names: str) -> re.Pattern[str]:
    """Fill a template's {placeholders} with escaped names and compile it."""
    return re.compile(template.format(**{k: re.escape(v) for k, v in names.items()}))


def find(lines: Iterable[KernelLine], template: str, **names: str) -> list[KernelLine]:
    rx = pattern(template, **names)
    return [line for line in lines if rx.search(line.text)]


def trouble(lines: Iterable[KernelLine], context: int = 8) -> list[str]:
    """Excerpts (the matching line and what follows) of kernel bug reports in `lines`."""
    lines = list(lines)
    excerpts = []
    i = 0
    while i < len(lines):
        if KERNEL_TROUBLE.search(lines[i].text):
            excerpts.append("\n".join(str(line) for line in lines[i:i + context]))
            i += context
        else:
            i += 1
    return excerpts
