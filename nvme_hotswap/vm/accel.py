"""Choose the accelerator by a real probe: KVM only if it actually runs guest code at speed.

On nested machines /dev/kvm opens but the guest is instruction-emulated and crawls, so
"/dev/kvm exists" is not evidence. The probe boots a 64 KiB firmware image that runs a tight
loop of 2^26 iterations and then writes a marker to the serial port. Real KVM finishes in
milliseconds, TCG in well under a second; a crawling KVM does not finish within the bound.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from ..config import RunConfig

PROBE_MARKER = b"KVMOK"
PROBE_TIMEOUT_S = 5.0


def probe_rom() -> bytes:
    """A BIOS image: at the reset vector, jump to a loop, then print PROBE_MARKER on COM1 and halt."""
    code = bytes.fromhex(
        "66b900000004"      # mov ecx, 0x04000000
        "6649"              # loop: dec ecx
        "75fc"              # jnz loop
        "baf803"            # mov dx, 0x3f8
    )
    for ch in PROBE_MARKER + b"\n":
        code += bytes([0xB0, ch, 0xEE])  # mov al, ch ; out dx, al
    code += bytes.fromhex("f4ebfd")      # hlt ; jmp hlt
    rom = bytearray(b"\xf4" * 0x10000)
    rom[: len(code)] = code
    rom[0xFFF0:0xFFF5] = bytes.fromhex("ea0000" "00f0")  # jmp far f000:0000
    return bytes(rom)


@dataclasses.dataclass(frozen=True)
class AccelChoice:
    accel: str       # "kvm" or "tcg"
    reason: str      # why, in words for the log and the results

    def __str__(self) -> str:
        return f"{self.accel} ({self.reason})"


def probe_kvm(qemu: Path, firmware_args: list[str]) -> tuple[bool, str]:
    """Run the probe ROM under KVM; return (works, what was observed)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is absent or not accessible"
    with tempfile.TemporaryDirectory(prefix="nvme-hotswap-kvmprobe-") as tmp:
        rom = Path(tmp, "probe.rom")
        rom.write_bytes(probe_rom())
        serial = Path(tmp, "serial.out")
        args = [str(qemu), "-machine", "q35,accel=kvm", "-cpu", "max", "-m", "64", "-nodefaults",
                "-display", "none", "-no-user-config", "-bios", str(rom),
                *firmware_args,
                "-serial", f"file:{serial}", "-no-reboot"]
        start = time.monotonic()
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        stderr = proc.stderr
        assert stderr is not None   # stderr=PIPE
        try:
            while time.monotonic() - start < PROBE_TIMEOUT_S:
                if proc.poll() is not None:
                    err = stderr.read().decode(errors="replace").strip().splitlines()
                    return False, f"QEMU exited with {proc.returncode} under KVM: {err[-1] if err else 'no message'}"
                if serial.exists() and PROBE_MARKER in serial.read_bytes():
                    return True, f"probe loop ran in {time.monotonic() - start:.2f} s under KVM"
                time.sleep(0.05)
            return False, f"probe loop did not finish within {PROBE_TIMEOUT_S:g} s under KVM (nested or emulated KVM)"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            stderr.close()


@functools.cache
def choose(cfg: RunConfig) -> AccelChoice:
    """Honour ACCEL=kvm|tcg; for ACCEL=auto pick KVM only when the probe shows it works."""
    if cfg.accel != "auto":
        return AccelChoice(cfg.accel, f"ACCEL={cfg.accel} requested")
    guest = cfg.arch
    if not guest.host_can_run_natively:
        return AccelChoice("tcg", f"auto: an {guest.name} guest on an {platform.machine()} host "
                                  "(KVM runs only the host's architecture)")
    works, observed = probe_kvm(cfg.qemu_binary, cfg.firmware_args())
    return AccelChoice("kvm" if works else "tcg", f"auto: {observed}")
