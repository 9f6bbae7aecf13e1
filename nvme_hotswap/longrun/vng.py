"""virtme-ng beside the suite's guest: what a kernel developer would boot instead, on the same kernel.

bench's `vng_vs_suite_boot_ratio` boots one Debian kernel both ways, in alternating pairs so host
drift cancels: virtme-ng (`vng --run <vmlinuz> --exec true`, on Debian's own qemu-system-x86_64, TCG)
as a whole process, and our guest from QEMU's start to its first SSH command. The kernel is Debian
12's generic 6.1 (GUEST_KERNEL=bookworm): vng mounts the host's root into the guest over 9p or
virtio-fs, and the cloud flavour the suite boots by default has no 9p while virtio-fs needs the
Rust virtiofsd, which bookworm does not ship.

vng loads the kernel's modules from the host's /lib/modules/<release>; they are copied there from
the pinned kernel package for the run and removed afterwards (unless they were there before).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..config import RunConfig

KERNEL = "bookworm"
QEMU = Path("/usr/bin/qemu-system-x86_64")   # Debian's package (scripts/install-host-deps.sh bench)
BOOT_BOUND_S = 180


class VngError(RuntimeError):
    """virtme-ng could not boot; the message carries its own last lines."""


def kernel_package(cfg: RunConfig, guest: Path) -> tuple[str, Path]:
    """(kernel release, the pinned linux-image .deb the guest was built from)."""
    manifest = json.loads((guest / "manifest.json").read_text())
    release = manifest["kernel_release"]
    name = f"linux-image-{release}"
    version = manifest["packages"][name].replace(":", "%3a")
    deb = cfg.cache_root / "guest" / "debs" / f"{name}_{version}_amd64.deb"
    if not deb.is_file():
        raise VngError(f"{deb} is missing: run images/build-guest.sh with GUEST_KERNEL={KERNEL}")
    return release, deb


@contextlib.contextmanager
def kernel_on_host(cfg: RunConfig, guest: Path) -> Iterator[Path]:
    """The kernel image to give vng, with its modules in /lib/modules for as long as it runs."""
    release, deb = kernel_package(cfg, guest)
    scratch = Path(tempfile.mkdtemp(prefix="nvme-hotswap-vng-"))
    modules = Path("/lib/modules") / release
    made_parent = not modules.parent.exists()
    placed = False
    try:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(scratch)], check=True)
        if not modules.exists():
            modules.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(scratch / "lib" / "modules" / release, modules, symlinks=True)
            placed = True
        yield scratch / "boot" / f"vmlinuz-{release}"
    finally:
        if placed:   # the host as it was: only what this run put there goes
            shutil.rmtree(modules, ignore_errors=True)
            if made_parent:
                modules.parent.rmdir()
        shutil.rmtree(scratch, ignore_errors=True)


def problem() -> str | None:
    """Why vng cannot run here, or None."""
    if not (Path(sys.executable).parent / "vng").exists():
        return "vng is not in the venv (pip install -e '.[bench]')"
    for tool, package in ((QEMU, "qemu-system-x86"), (Path("/usr/sbin/depmod"), "kmod"),
                          (Path("/bin/busybox"), "busybox-static")):
        if not tool.exists():
            return f"{tool} is missing (Debian package {package}: scripts/install-host-deps.sh bench)"
    return None


def run_vng(vmlinuz: Path, log: Path, verbose: bool = False) -> tuple[int, float]:
    """`vng --exec true` as a whole process, TCG: (exit status, seconds). Bounded; on the bound its
    process group (vng, virtme-run, their QEMU) is ended by its PID."""
    venv_bin = Path(sys.executable).parent
    cmd = [str(venv_bin / "vng"), *(["--verbose"] if verbose else []), "--run", str(vmlinuz), "--disable-kvm",
           "--force-9p", "--qemu", str(QEMU), "--exec", "true"]
    env = dict(os.environ, PATH=f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=BOOT_BOUND_S)
        except subprocess.TimeoutExpired as e:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise VngError(f"vng did not finish within {BOOT_BOUND_S} s (log: {log})") from e
    return rc, time.monotonic() - start


def boot_seconds(vmlinuz: Path, log: Path) -> float:
    """One timed boot; a failure raises VngError with vng's own last lines (quiet vng says nothing
    when it fails, so it is run once more with --verbose for them)."""
    rc, seconds = run_vng(vmlinuz, log)
    if rc != 0:
        verbose_log = log.with_suffix(".verbose.log")
        run_vng(vmlinuz, verbose_log, verbose=True)
        tail = [ln.strip() for ln in verbose_log.read_text(errors="replace").splitlines() if ln.strip()][-3:]
        raise VngError(f"vng exited {rc}: {' / '.join(tail) or 'no output'} (log: {verbose_log})")
    return seconds
