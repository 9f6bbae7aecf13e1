"""Where the QEMU binary, the guest image and the results come from.

One place resolves them, so `make`, `pytest` and `avocado run` all test the same things:
an environment variable wins (QEMU, GUEST_DIR, RESULTS_DIR, ACCEL); otherwise the project's
build scripts are asked, and they answer at once from the cache when nothing changed.
"""
from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from . import arch

ROOT = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """The suite cannot find or build something it needs; the message says what to do."""


def _last_line_of(script: Path, what: str) -> Path:
    proc = subprocess.run(["bash", str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ConfigError(f"{script.relative_to(ROOT)} failed to produce {what} (exit {proc.returncode}); "
                          f"run it by hand to see why")
    return Path(lines[-1])


def guest_arch() -> arch.Arch:
    """GUEST_ARCH=x86_64|aarch64 (default x86_64): the guest's architecture and QEMU's target."""
    try:
        return arch.current()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@functools.cache
def qemu_binary() -> Path:
    """The qemu-system-<GUEST_ARCH> under test: $QEMU, else our patched build (built on first use;
    build-qemu.sh reads GUEST_ARCH too)."""
    env = os.environ.get("QEMU")
    path = Path(env) if env else _last_line_of(ROOT / "scripts" / "build-qemu.sh", "a QEMU binary")
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ConfigError(f"QEMU={path} is not an executable file; point QEMU at a {guest_arch().qemu_binary_name}")
    return path.resolve()


def _built_dir(env_var: str, script: str, what: str, required: tuple[str, ...], make_target: str) -> Path:
    """$env_var, else the last line of `script` (it builds or finds the thing in the cache);
    the folder must hold every file in `required`."""
    env = os.environ.get(env_var)
    path = Path(env) if env else _last_line_of(ROOT / script, what)
    for name in required:
        if not (path / name).is_file():
            raise ConfigError(f"{what} directory {path} lacks {name}; rebuild it with `make {make_target}`")
    return path.resolve()


@functools.cache
def guest_dir() -> Path:
    """The built guest (kernel, initramfs.img): $GUEST_DIR, else images/build-guest.sh (which reads
    GUEST_ARCH and GUEST_KERNEL)."""
    return _built_dir("GUEST_DIR", "images/build-guest.sh", "guest",
                      (guest_arch().kernel_file, "initramfs.img"), "guest")


def guest_flavour() -> str:
    """GUEST=fast|cloud (default fast; IMAGE= implies cloud): which guest the suite boots.

    fast: the busybox initramfs guest (images/build-guest.sh). cloud: a Debian rootfs disk booting
    like a cloud image (systemd, udev, cloud-init with a NoCloud seed; images/build-cloud-image.sh),
    or the user's own cloud image given as IMAGE=.
    """
    flavour = os.environ.get("GUEST") or ("cloud" if os.environ.get("IMAGE") else "fast")
    if flavour not in ("fast", "cloud"):
        raise ConfigError(f"GUEST={flavour!r}: use fast or cloud")
    if flavour == "cloud" and guest_arch().name != "x86_64":
        raise ConfigError(f"GUEST=cloud is built for x86_64 only; unset GUEST or GUEST_ARCH={guest_arch().name}")
    return flavour


@functools.cache
def cloud_dir() -> Path:
    """The built cloud-style guest (rootfs.img, vmlinuz, initrd.img): $CLOUD_DIR, else images/build-cloud-image.sh."""
    return _built_dir("CLOUD_DIR", "images/build-cloud-image.sh", "cloud image",
                      ("rootfs.img", "vmlinuz", "initrd.img"), "cloud-image")


def cloud_image() -> Path | None:
    """IMAGE=/path/to/a/cloud.qcow2: the user's own cloud image (booted by its bootloader), else None."""
    env = os.environ.get("IMAGE")
    if not env:
        return None
    if not Path(env).is_file():
        raise ConfigError(f"IMAGE={env} is not a file; point IMAGE at a Debian or Ubuntu cloud image (qcow2 or raw)")
    return Path(env).resolve()


def cloud_user() -> str:
    """CLOUD_USER: who the harness logs in as on the cloud guest (default root; `debian` or `ubuntu`
    for those images' default users, with sudo for root commands)."""
    return os.environ.get("CLOUD_USER") or "root"


def firmware_dirs() -> list[Path]:
    """Debian's SeaBIOS, qemu-system-data and ipxe-qemu files (the source build ships no blobs)."""
    dirs = [Path(p) for p in os.environ.get("QEMU_FIRMWARE", "/usr/share/seabios:/usr/share/qemu:/usr/lib/ipxe/qemu").split(":")]
    present = [d for d in dirs if d.is_dir()]
    if not present:
        raise ConfigError("no firmware directory found (install Debian's seabios, qemu-system-data and ipxe-qemu: "
                          "scripts/install-host-deps.sh)")
    return present


def firmware_args() -> list[str]:
    """`-L DIR` for each firmware directory, for every QEMU command line the suite builds."""
    return [arg for d in firmware_dirs() for arg in ("-L", str(d))]


def requested_accel() -> str:
    """ACCEL=auto|kvm|tcg (default auto)."""
    accel = os.environ.get("ACCEL", "auto")
    if accel not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"ACCEL={accel!r}: use auto, kvm or tcg")
    return accel


def cache_root() -> Path:
    """Where builds are cached, as scripts/lib.sh computes it: $NVME_HOTSWAP_CACHE, else
    $XDG_CACHE_HOME/nvme-hotswap, else ~/.cache/nvme-hotswap."""
    env = os.environ.get("NVME_HOTSWAP_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nvme-hotswap"


def results_root() -> Path:
    return Path(os.environ.get("RESULTS_DIR", ROOT / "results"))
