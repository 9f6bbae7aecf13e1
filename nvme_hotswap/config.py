"""The run's configuration: one frozen value, read from the environment once and passed down.

Only `RunConfig.from_env` reads the variables (QEMU, GUEST_DIR, GUEST_ARCH, ACCEL, ...), so `make`,
`pytest` and `avocado run` test the same things, and a wrong value stops the run before anything
boots. Programs that compare variants (bench, boot variants) build several configurations with
`dataclasses.replace`; nothing edits `os.environ` to switch. What has to be built (our QEMU, the
guest) is asked of the build scripts on first use, with this configuration's environment; they
answer at once from the cache when nothing changed.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from . import arch
from .arch import Arch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIRMWARE = "/usr/share/seabios:/usr/share/qemu:/usr/lib/ipxe/qemu"
ACCELS = ("auto", "kvm", "tcg")
FLAVOURS = ("fast", "cloud")


class ConfigError(RuntimeError):
    """The suite cannot find or build something it needs; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What a run tests on: the QEMU, the guest, the accelerator request, where results go.

    `qemu`, `guest_dir_given` and `cloud_dir_given` are what the user gave (None: build it);
    `qemu_binary`, `guest_dir` and `cloud_dir` are the resolved paths.
    """

    arch: Arch
    flavour: str                     # fast (initramfs guest) or cloud (rootfs disk, cloud-init)
    accel: str                       # auto, kvm or tcg, as requested
    qemu: Path | None
    guest_dir_given: Path | None
    guest_kernel: str | None         # GUEST_KERNEL for images/build-guest.sh (None: its default)
    cloud_dir_given: Path | None
    image: Path | None               # IMAGE: the user's own cloud image, booted by its bootloader
    cloud_user: str
    firmware: tuple[Path, ...]
    results_root: Path
    cache_root: Path
    env: tuple[tuple[str, str], ...] = dataclasses.field(repr=False)  # for build scripts and children

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RunConfig:
        """Read and check every variable the harness knows; raise ConfigError naming a bad one."""
        env = dict(os.environ if environ is None else environ)
        name = env.get("GUEST_ARCH") or "x86_64"
        if name not in arch.ARCHES:
            raise ConfigError(f"GUEST_ARCH={name!r}: use one of {', '.join(arch.ARCHES)}")
        platform = arch.ARCHES[name]
        flavour = env.get("GUEST") or ("cloud" if env.get("IMAGE") else "fast")
        if flavour not in FLAVOURS:
            raise ConfigError(f"GUEST={flavour!r}: use fast or cloud")
        if flavour == "cloud" and platform.name != "x86_64":
            raise ConfigError(f"GUEST=cloud is built for x86_64 only; unset GUEST or GUEST_ARCH={platform.name}")
        accel = env.get("ACCEL") or "auto"
        if accel not in ACCELS:
            raise ConfigError(f"ACCEL={accel!r}: use auto, kvm or tcg")
        image = Path(env["IMAGE"]) if env.get("IMAGE") else None
        if image is not None and not image.is_file():
            raise ConfigError(f"IMAGE={image} is not a file; point IMAGE at a Debian or Ubuntu cloud image "
                              "(qcow2 or raw)")
        cache = (Path(env["NVME_HOTSWAP_CACHE"]) if env.get("NVME_HOTSWAP_CACHE") else
                 Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nvme-hotswap")
        return cls(
            arch=platform, flavour=flavour, accel=accel,
            qemu=_path(env.get("QEMU")), guest_dir_given=_path(env.get("GUEST_DIR")),
            guest_kernel=env.get("GUEST_KERNEL") or None, cloud_dir_given=_path(env.get("CLOUD_DIR")),
            image=image.resolve() if image else None, cloud_user=env.get("CLOUD_USER") or "root",
            firmware=tuple(Path(p) for p in (env.get("QEMU_FIRMWARE") or DEFAULT_FIRMWARE).split(":") if p),
            results_root=Path(env.get("RESULTS_DIR") or ROOT / "results"), cache_root=cache,
            env=tuple(sorted(env.items())))

    # --- what is built on first use ---------------------------------------------------------
    def build_env(self) -> dict[str, str]:
        """The environment of a build script or child run under this configuration."""
        env = dict(self.env)
        env["GUEST_ARCH"] = self.arch.name
        env["GUEST"] = self.flavour
        if self.guest_kernel:
            env["GUEST_KERNEL"] = self.guest_kernel
        return env

    @functools.cached_property
    def qemu_binary(self) -> Path:
        """The qemu-system-<arch> under test: QEMU=, else our patched build (built on first use)."""
        path = self.qemu or _last_line_of(ROOT / "scripts" / "build-qemu.sh", "a QEMU binary", self.build_env())
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"QEMU={path} is not an executable file; point QEMU at a {self.arch.qemu_binary_name}")
        return path.resolve()

    @functools.cached_property
    def guest_dir(self) -> Path:
        """The built fast guest (kernel, initramfs.img): GUEST_DIR=, else images/build-guest.sh."""
        return _built_dir(self.guest_dir_given, "images/build-guest.sh", "guest",
                          (self.arch.kernel_file, "initramfs.img"), "guest", self.build_env())

    @functools.cached_property
    def cloud_dir(self) -> Path:
        """The built cloud-style guest (rootfs.img, vmlinuz, initrd.img): CLOUD_DIR=, else
        images/build-cloud-image.sh."""
        return _built_dir(self.cloud_dir_given, "images/build-cloud-image.sh", "cloud image",
                          ("rootfs.img", "vmlinuz", "initrd.img"), "cloud-image", self.build_env())

    def firmware_args(self) -> list[str]:
        """`-L DIR` for each present firmware folder (Debian's SeaBIOS, qemu-system-data, ipxe-qemu:
        the source build ships no blobs), for every QEMU command line the suite builds."""
        present = [d for d in self.firmware if d.is_dir()]
        if not present:
            raise ConfigError("no firmware directory found (install Debian's seabios, qemu-system-data and "
                              "ipxe-qemu: scripts/install-host-deps.sh)")
        return [arg for d in present for arg in ("-L", str(d))]


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _last_line_of(script: Path, what: str, env: dict[str, str]) -> Path:
    proc = subprocess.run(["bash", str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ConfigError(f"{script.relative_to(ROOT)} failed to produce {what} (exit {proc.returncode}); "
                          f"run it by hand to see why")
    return Path(lines[-1])


def _built_dir(given: Path | None, script: str, what: str, required: tuple[str, ...], make_target: str,
               env: dict[str, str]) -> Path:
    """`given`, else the last line of `script` (it builds or finds the thing in the cache); the
    folder must hold every file in `required`."""
    path = given or _last_line_of(ROOT / script, what, env)
    for name in required:
        if not (path / name).is_file():
            raise ConfigError(f"{what} directory {path} lacks {name}; rebuild it with `make {make_target}`")
    return path.resolve()


@functools.cache
def current() -> RunConfig:
    """This process's configuration, read from its environment once (the test session's)."""
    return RunConfig.from_env()
