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


@functools.cache
def qemu_binary() -> Path:
    """The qemu-system-x86_64 under test: $QEMU, else our patched build (built on first use)."""
    env = os.environ.get("QEMU")
    path = Path(env) if env else _last_line_of(ROOT / "scripts" / "build-qemu.sh", "a QEMU binary")
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ConfigError(f"QEMU={path} is not an executable file; point QEMU at a qemu-system-x86_64")
    return path.resolve()


@functools.cache
def guest_dir() -> Path:
    """The built guest (vmlinux, initramfs.img, SSH key): $GUEST_DIR, else images/build-guest.sh."""
    env = os.environ.get("GUEST_DIR")
    path = Path(env) if env else _last_line_of(ROOT / "images" / "build-guest.sh", "a guest image")
    for name in ("vmlinux", "initramfs.img", "id_ed25519"):
        if not (path / name).is_file():
            raise ConfigError(f"guest directory {path} lacks {name}; rebuild it with `make guest`")
    return path.resolve()


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


def results_root() -> Path:
    return Path(os.environ.get("RESULTS_DIR", ROOT / "results"))
