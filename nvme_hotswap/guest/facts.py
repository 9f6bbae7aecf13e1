"""Parse what the guest prints into facts. Pure functions, unit tested on recorded text.

The shell snippets that produce the text live next to their parsers, so the format each
parser expects is written down once.
"""
from __future__ import annotations

import dataclasses
import re

# One line per controller: "ctrl<TAB>name<TAB>address<TAB>state<TAB>serial<TAB>subsysnqn".
CONTROLLERS_SH = r"""
for c in /sys/class/nvme/nvme*; do
  [ -e "$c" ] || continue
  printf 'ctrl\t%s\t%s\t%s\t%s\t%s\n' "${c##*/}" "$(cat $c/address 2>/dev/null)" "$(cat $c/state)" \
    "$(cat $c/serial)" "$(cat $c/subsysnqn 2>/dev/null)"
done
"""

# One line per namespace path: "ns<TAB>controller<TAB>path entry<TAB>nsid<TAB>512-byte sectors".
NAMESPACES_SH = r"""
for c in /sys/class/nvme/nvme*; do
  for n in "$c"/nvme*n*; do
    [ -e "$n/size" ] || continue
    printf 'ns\t%s\t%s\t%s\t%s\n' "${c##*/}" "${n##*/}" "$(cat $n/nsid 2>/dev/null)" "$(cat $n/size)"
  done
done
"""


@dataclasses.dataclass(frozen=True, order=True)
class ControllerInfo:
    name: str          # nvme2
    address: str       # 0000:03:00.0
    state: str         # live, resetting, ...
    serial: str        # trimmed
    subsysnqn: str = ""


@dataclasses.dataclass(frozen=True, order=True)
class NamespaceInfo:
    block: str         # the block device the guest uses: nvme2n1
    controller: str    # nvme2
    nsid: int
    size_bytes: int
    entry: str = ""    # the name under the controller: nvme2c2n1 (a multipath path node) or nvme2n1


def parse_controllers(text: str) -> list[ControllerInfo]:
    out = []
    for line in text.splitlines():
        f = line.split("\t")
        if f[0] != "ctrl" or len(f) < 5:
            continue
        out.append(ControllerInfo(name=f[1], address=f[2].strip(), state=f[3].strip(),
                                  serial=f[4].strip(), subsysnqn=f[5].strip() if len(f) > 5 else ""))
    return sorted(out, key=lambda c: _natural(c.name))


_PATH_NODE = re.compile(r"^nvme(\d+)c\d+n(\d+)$")


def block_device_of(path_entry: str) -> str:
    """The disk name behind a controller's namespace entry.

    With native multipath the controller lists a hidden path node `nvme0c1n1` and the guest
    uses the head `nvme0n1`; without multipath the entry is the disk itself.
    """
    m = _PATH_NODE.match(path_entry)
    return f"nvme{m.group(1)}n{m.group(2)}" if m else path_entry


def parse_namespaces(text: str) -> list[NamespaceInfo]:
    out = []
    for line in text.splitlines():
        f = line.split("\t")
        if f[0] != "ns" or len(f) < 5:
            continue
        out.append(NamespaceInfo(block=block_device_of(f[2]), controller=f[1],
                                 nsid=int(f[3]) if f[3].strip() else 0, size_bytes=int(f[4]) * 512,
                                 entry=f[2]))
    return sorted(out, key=lambda n: _natural(n.block))


@dataclasses.dataclass(frozen=True)
class KernelLine:
    seconds: float | None   # the printk timestamp, if the line has one
    text: str

    def __str__(self) -> str:
        return f"[{self.seconds:12.6f}] {self.text}" if self.seconds is not None else self.text


_DMESG = re.compile(r"^\[\s*(\d+\.\d+)\]\s?(.*)$")


def parse_dmesg(text: str) -> list[KernelLine]:
    out = []
    for line in text.splitlines():
        m = _DMESG.match(line)
        out.append(KernelLine(float(m.group(1)), m.group(2)) if m else KernelLine(None, line))
    return out


def lines_after_mark(lines: list[KernelLine], mark: str) -> list[KernelLine]:
    """The kernel-log lines after the last line containing `mark` (all lines if it is absent)."""
    for i in range(len(lines) - 1, -1, -1):
        if mark in lines[i].text:
            return lines[i + 1:]
    return lines


def _natural(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
