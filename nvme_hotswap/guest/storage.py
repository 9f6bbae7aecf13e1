"""The storage stacks in the guest (file systems, md RAID1, LVM): their commands and what they report.

Tests say what a storage engineer checks after a pull and reinsert; this module types it. The
parsers take the tools' own text (unit-tested on recorded output in tests/unit/test_storage.py).
"""
from __future__ import annotations

import dataclasses
import re
import shlex

from ..wait import wait_until
from .ssh import Guest

MODPROBE = "/usr/lib/nvme-hotswap/kmod/modprobe"   # kmod's, by full path (images/build-guest.sh)
#: a module each file system needs where the kernel does not build it in (modprobe of a built-in one is a no-op)
FS_MODULES = {"ext4": ("ext4",), "xfs": ("xfs",)}
MKFS = {"ext4": "mkfs.ext4 -q -F", "xfs": "mkfs.xfs -q -f"}
#: read-only consistency checks; exit status 0 means clean (e2fsck -n: 4 "errors left uncorrected")
FSCK = {"ext4": "e2fsck -fn", "xfs": "xfs_repair -n"}


def modprobe(guest: Guest, *modules: str) -> None:
    if modules:
        guest.check(f"{MODPROBE} -a {' '.join(modules)}")


# --- file systems ----------------------------------------------------------------------------------
def make_filesystem(guest: Guest, fs: str, device: str, mountpoint: str) -> None:
    """mkfs `fs` on /dev/`device` and mount it at `mountpoint` (noatime: reading the files back
    must not make the file system write)."""
    modprobe(guest, *FS_MODULES[fs])
    guest.check(f"{MKFS[fs]} /dev/{device} && mkdir -p {mountpoint} && mount -o noatime /dev/{device} {mountpoint}",
                timeout=120)


@dataclasses.dataclass(frozen=True)
class Mount:
    device: str
    fstype: str
    options: tuple[str, ...]

    @property
    def writable(self) -> bool:
        return "rw" in self.options


def parse_mounts(text: str, mountpoint: str) -> Mount | None:
    """The entry of /proc/mounts for `mountpoint` (the last one: a mount on top hides the others)."""
    found = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == mountpoint:
            found = Mount(parts[0], parts[2], tuple(parts[3].split(",")))
    return found


def mount_of(guest: Guest, mountpoint: str) -> Mount | None:
    return parse_mounts(guest.check("cat /proc/mounts"), mountpoint)


def write_files(guest: Guest, directory: str, prefix: str, count: int, kib: int = 256) -> dict[str, str]:
    """`count` files of random data, each written and fsync'd; name -> sha256."""
    guest.check(f"for i in $(seq 1 {count}); do dd if=/dev/urandom of={directory}/{prefix}$i bs=1024 count={kib} "
                "conv=fsync 2>/dev/null || exit 1; done", timeout=120)
    return file_hashes(guest, directory, [f"{prefix}{i}" for i in range(1, count + 1)])


def file_hashes(guest: Guest, directory: str, names: list[str], drop_caches: bool = True) -> dict[str, str]:
    """sha256 of each file (read from the device: the page cache is dropped first); a file that
    cannot be read maps to "unreadable"."""
    if drop_caches:
        guest.check("sync; echo 3 > /proc/sys/vm/drop_caches")
    out = guest.run(f"cd {directory} && sha256sum {' '.join(shlex.quote(n) for n in names)}", timeout=120).stdout
    got = {name: digest for digest, name in (line.split(None, 1) for line in out.splitlines() if "  " in line)}
    return {n: got.get(n, "unreadable") for n in names}


def fsck(guest: Guest, fs: str, device: str) -> tuple[bool, str]:
    """The file system's read-only check of the unmounted /dev/`device`: (clean, its output)."""
    r = guest.run(f"{FSCK[fs]} /dev/{device} 2>&1", timeout=300)
    return r.rc == 0, r.stdout


class FileWriter:
    """A loop in the guest creating files one by one (write + fsync, as a database or an object
    store does), logging "<n> ok|err <uptime>" per file: what the application was told."""

    def __init__(self, guest: Guest, directory: str, name: str = "w") -> None:
        self.guest, self.directory, self.name = guest, directory, name
        self.log = f"/tmp/{name}.log"

    def start(self) -> None:
        # each file holds its own number: what an acknowledged file must still say afterwards
        loop = (f"i=0; while [ ! -e /tmp/{self.name}.stop ]; do "
                f"if printf 'file %08d\\n' $i | dd of={self.directory}/{self.name}$i bs=4096 conv=sync,fsync "
                "2>/dev/null; then s=ok; else s=err; fi; "
                "echo \"$i $s $(cut -d' ' -f1 /proc/uptime)\"; i=$((i+1)); done > "
                f"{self.log}; touch /tmp/{self.name}.done")
        self.guest.spawn(f"sh -c {shlex.quote(loop)}")

    def entries(self) -> list[tuple[int, str, float]]:
        out = self.guest.check(f"cat {self.log}")
        return [(int(i), s, float(t)) for i, s, t in (ln.split() for ln in out.splitlines() if ln.count(" ") == 2)]

    def stop(self) -> list[tuple[int, str, float]]:
        self.guest.check(f"touch /tmp/{self.name}.stop")
        wait_until(lambda: self.guest.run(f"test -e /tmp/{self.name}.done").ok, 60, f"the writer {self.name} to stop")
        return self.entries()

    def acknowledged(self) -> list[int]:
        return [i for i, s, _ in self.entries() if s == "ok"]

    def lost(self, numbers: list[int]) -> list[str]:
        """Of the acknowledged files `numbers`, those that do not hold their number (missing, short,
        or another content): "w17: <what it holds>"."""
        script = (f"for i in {' '.join(map(str, numbers))}; do "
                  f"h=$(head -c 14 {self.directory}/{self.name}$i 2>/dev/null); "
                  "[ \"$h\" = \"$(printf 'file %08d' $i)\" ] || echo \"$i: ${h:-missing}\"; done")
        out = self.guest.run(f"sh -c {shlex.quote(script)}", timeout=300).stdout
        return [f"{self.name}{line}" for line in out.splitlines() if line.strip()]


# --- md RAID ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MdArray:
    name: str
    level: str
    members: dict[str, str]   # device -> "" (in sync), "F" (faulty), "S" (spare)...
    status: str               # "[UU]", "[U_]"
    syncing: bool             # a resync, recovery or check is running or pending


_MD_HEAD = re.compile(r"^(md\d+) : (\w+)(?: \(\w+-?\w*\))? (raid\d+) (.*)$")


def parse_mdstat(text: str) -> dict[str, MdArray]:
    """/proc/mdstat: array name -> MdArray."""
    arrays: dict[str, MdArray] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _MD_HEAD.match(line)
        if not m:
            continue
        members = {}
        for part in m.group(4).split():
            pm = re.match(r"(\S+)\[\d+\](?:\((\w)\))?", part)
            if pm:
                members[pm.group(1)] = pm.group(2) or ""
        block = []
        for following in lines[i + 1:]:
            if not following.strip() or _MD_HEAD.match(following):
                break
            block.append(following)
        status = next((s for ln in block for s in re.findall(r"\[[U_]+\]", ln)), "")
        syncing = any(re.search(r"(resync|recovery|check|repair)\s*=|=(DELAYED|PENDING)", ln) for ln in block)
        arrays[m.group(1)] = MdArray(m.group(1), m.group(3), members, status, syncing)
    return arrays


def md_array(guest: Guest, name: str) -> MdArray:
    arrays = parse_mdstat(guest.check("cat /proc/mdstat"))
    if name not in arrays:
        raise AssertionError(f"/proc/mdstat has no {name}: {sorted(arrays)}")
    return arrays[name]


def parse_bitmap(text: str) -> tuple[int, int]:
    """`mdadm -X <member>`: (chunks, dirty chunks) of the write-intent bitmap."""
    m = re.search(r"Bitmap : (\d+) bits \(chunks\), (\d+) dirty", text)
    if not m:
        raise ValueError(f"no 'Bitmap : N bits (chunks), M dirty' in mdadm -X output:\n{text}")
    return int(m.group(1)), int(m.group(2))


def bitmap(guest: Guest, member: str) -> tuple[int, int]:
    return parse_bitmap(guest.check(f"mdadm -X /dev/{member}"))


# --- udev: the persistent names ----------------------------------------------------------------------
UDEVD = "/lib/systemd/systemd-udevd"
LINK_DIRS = ("by-id", "by-path", "by-uuid")
#: every /dev/disk/by-{id,path,uuid} link as "<dir>/<name>\t<target>", once udev has handled all events
#: (fails if udevd is not running or does not settle: stale links must not pass for unchanged ones)
_LINKS_SH = ("udevadm control --ping && udevadm settle --timeout=60 || exit 1; "
             "for d in " + " ".join(LINK_DIRS) + "; do "
             "for l in /dev/disk/$d/*; do [ -L \"$l\" ] && printf '%s/%s\\t%s\\n' $d \"${l##*/}\" "
             "\"$(readlink -f \"$l\")\"; done; done; true")


def start_udev(guest: Guest) -> None:
    """Start udevd and replay the block devices' add events. The fast guest boots without udev (its
    disks need none); storage software that tracks drives by name reads the links udev makes."""
    guest.check(f"{UDEVD} --daemon && udevadm trigger --subsystem-match=block --action=add "
                "&& udevadm settle --timeout=60", timeout=90)


def parse_links(text: str) -> dict[str, str]:
    """`_LINKS_SH`'s output: "by-id/nvme-..." -> "/dev/nvme2n1"."""
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)


def disk_links(guest: Guest, disk: str) -> dict[str, str]:
    """The by-id, by-path and by-uuid links that resolve to /dev/`disk` (link -> target)."""
    return {k: v for k, v in parse_links(guest.check(_LINKS_SH, timeout=90)).items() if v == f"/dev/{disk}"}


def reprobe(guest: Guest, disk: str) -> None:
    """What an administrator types after a medium change the kernel did not announce: a change
    event, so that udev reads the disk again (blkid: the file system's UUID)."""
    guest.check(f"udevadm trigger --action=change /dev/{disk} && udevadm settle --timeout=60", timeout=90)


def fs_uuid(guest: Guest, disk: str) -> str:
    """The file system UUID on /dev/`disk`, read from the disk itself (udev's blkid, not its
    database), "" if there is none."""
    out = guest.run(f"udevadm test-builtin blkid /sys/class/block/{disk} 2>/dev/null").stdout
    m = re.search(r"^ID_FS_UUID=(\S+)$", out, re.M)
    return m.group(1) if m else ""
