"""The cloud-style guest (GUEST=cloud): how it boots and the NoCloud seed the harness makes for it.

Our image (images/build-cloud-image.sh) boots directly from the kernel and initrd copied out of its
/boot, with its ext4 root on a virtio-blk disk found by label. A user's image (IMAGE=) boots from its
own bootloader under SeaBIOS. Either root disk is opened with snapshot=on: the file is never written,
so every boot is a cloud instance's first boot. cloud-init finds the seed (a small FAT volume labelled
CIDATA with user-data and meta-data) and puts a per-run SSH key into root's and the default user's
authorized_keys.

Both disks sit at high slots of pcie.0 (00:1d.0, 00:1e.0) so a test's own virtio-blk disk, placed at
the first free slot, is still /dev/vda as on the fast guest; the root is found by LABEL, not by name.
"""
from __future__ import annotations

import atexit
import functools
import json
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from ..config import ConfigError, RunConfig
from . import sshkey

ROOT_LABEL = "cloudroot"
ROOT_SLOT, SEED_SLOT = "0x1e", "0x1d"
KERNEL_ARGS = f"root=LABEL={ROOT_LABEL} rw console=ttyS0 panic=-1 quiet cryptomgr.notests=1"


@functools.cache
def _seed_dir() -> Path:
    """A private folder for this process's seed, removed at exit (not a results artifact)."""
    d = Path(tempfile.mkdtemp(prefix="nvme-hotswap-cloud-"))
    atexit.register(shutil.rmtree, d, True)
    return d


def user_data(public_key: str) -> str:
    """cloud-config: the key for the default user and root; keep the image's host keys if it has them."""
    return ("#cloud-config\n"
            "disable_root: false\n"        # root gets the key without the 'login as ...' command prefix
            "ssh_deletekeys: false\n"      # no host key regeneration on every (first) boot;
                                           # missing types are still made
            "ssh_pwauth: false\n"          # keys only, as cloud images are (IMAGE=: once cloud-init
                                           # has run; our image has it from the start)
            f"ssh_authorized_keys:\n  - {public_key}\n")


def meta_data() -> str:
    return f"instance-id: nvme-hotswap-{uuid.uuid4().hex[:12]}\nlocal-hostname: nvme-cloud-guest\n"


@functools.cache
def seed_image() -> Path:
    """The NoCloud seed for this run: a 2 MiB FAT volume labelled CIDATA (dosfstools + mtools)."""
    for tool in ("mkfs.vfat", "mcopy"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            raise ConfigError(f"{tool} is needed for the NoCloud seed (Debian's dosfstools and mtools: "
                                     "scripts/install-host-deps.sh)")
    d = _seed_dir()
    (d / "user-data").write_text(user_data(sshkey.public_key_line()))
    (d / "meta-data").write_text(meta_data())
    seed = d / "seed.img"
    mkfs = shutil.which("mkfs.vfat") or "/usr/sbin/mkfs.vfat"
    subprocess.run([mkfs, "-n", "CIDATA", "-C", str(seed), "2048"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["mcopy", "-o", "-i", str(seed), str(d / "user-data"), str(d / "meta-data"), "::"], check=True)
    return seed


def _format_of(image: Path) -> str:
    with open(image, "rb") as f:
        return "qcow2" if f.read(4) == b"QFI\xfb" else "raw"


def qemu_boot_args(cfg: RunConfig, extra_kernel_args: str = "") -> list[str]:
    """The root disk, the seed and (for our image) the direct kernel boot."""
    image = cfg.image
    if image is None:
        d = cfg.cloud_dir
        root, fmt = d / "rootfs.img", "raw"
        boot = ["-kernel", str(d / "vmlinuz"), "-initrd", str(d / "initrd.img"),
                "-append", f"{KERNEL_ARGS} {extra_kernel_args}".strip()]
        bootindex = ""
    else:
        if extra_kernel_args:
            raise ConfigError(f"IMAGE={image} boots by its own bootloader: kernel arguments "
                                     f"({extra_kernel_args!r}) cannot be passed; this test needs our image")
        root, fmt, boot, bootindex = image, _format_of(image), [], ",bootindex=0"
    return boot + [
        "-drive", f"file={root},format={fmt},if=none,id=cloudroot,snapshot=on",
        "-device", f"virtio-blk-pci,drive=cloudroot,bus=pcie.0,addr={ROOT_SLOT}{bootindex}",
        "-drive", f"file={seed_image()},format=raw,if=none,id=cloudseed,readonly=on",
        "-device", f"virtio-blk-pci,drive=cloudseed,bus=pcie.0,addr={SEED_SLOT}",
    ]


def manifest(cfg: RunConfig) -> dict[str, object]:
    """What environment.json records about the cloud guest."""
    if cfg.image is not None:
        return {"flavour": "cloud", "image": str(cfg.image), "user": cfg.cloud_user, "boot": "own bootloader (SeaBIOS)"}
    m = cfg.cloud_dir / "manifest.json"
    return dict(json.loads(m.read_text())) if m.exists() else {"flavour": "cloud", "dir": str(cfg.cloud_dir)}
