"""Preflight: check the environment once, before anything boots, and stop with one message.

A wrong QEMU (`/bin/true`, a python, a truncated build, the wrong target), a damaged guest, a
results folder that cannot be written or a forced KVM that cannot run a guest would otherwise show
up as a timeout in every test. Each check here takes well under a second (the KVM probe: its own
bound), names what is wrong and what to do, and writes nothing: no results folder, no evidence.

`python -m nvme_hotswap.preflight` is the Makefile's step (exit 2 on a problem); the test session
(conftest.py), HotswapTest and the programs call `require()`.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .config import ROOT, ConfigError, RunConfig, current
from .vm import accel

CHECK_TIMEOUT_S = 5.0
MANIFEST = "SHA256SUMS"   # written by the build scripts into every cache entry (scripts/lib.sh: cache_seal)


class PreflightError(ConfigError):
    """The environment cannot run the suite; the message names the cause and what to do."""


def _run(args: list[str], what: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise PreflightError(f"{what}: `{' '.join(args)}` did not finish within {CHECK_TIMEOUT_S:g} s") from exc
    except OSError as exc:
        raise PreflightError(f"{what}: `{args[0]}` cannot be run: {exc.strerror}") from exc


def _status(rc: int) -> str:
    """`exited 1`, `was killed by SIGSEGV`."""
    if rc >= 0:
        return f"exited {rc}"
    try:
        return f"was killed by {signal.Signals(-rc).name}"
    except ValueError:
        return f"was killed by signal {-rc}"


def check_qemu(cfg: RunConfig) -> str:
    """QEMU exists, says it is QEMU, is built for the guest's architecture and answers QMP."""
    want = cfg.arch.qemu_binary_name
    binary = cfg.qemu_binary      # ConfigError if missing or not executable
    qemu = f"{cfg.qemu} ({binary})" if cfg.qemu is not None and cfg.qemu != binary else str(binary)
    hint = (f"point QEMU at a {want}, or unset QEMU to build ours (`make qemu` checks a cached build "
            "and rebuilds it if damaged)")
    proc = _run([str(binary), "-version"], f"QEMU={qemu}")
    first = (proc.stdout.strip().splitlines() or [""])[0]
    if proc.returncode != 0 or not first.startswith("QEMU emulator version"):
        said = first or (proc.stderr.strip().splitlines() or [""])[-1]
        raise PreflightError(f"QEMU={qemu} is not QEMU: `-version` {_status(proc.returncode)} and "
                             f"printed {repr(said) if said else 'nothing'}; {hint}")
    qmp = "".join(json.dumps({"execute": c}) + "\n" for c in ("qmp_capabilities", "query-target", "quit"))
    proc = _run([str(binary), "-machine", "none", "-nodefaults", "-display", "none", "-no-user-config",
                 "-qmp", "stdio"], f"QEMU={qemu}", stdin=qmp)
    target = None
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg.get("return"), dict) and "arch" in msg["return"]:
            target = msg["return"]["arch"]
    if target is None:
        err = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise PreflightError(f"QEMU={qemu} does not answer QMP (it {_status(proc.returncode)}: {err}); {hint}")
    if target != cfg.arch.name:
        raise PreflightError(f"QEMU={qemu} is built for {target}, the guest is {cfg.arch.name} "
                             f"(GUEST_ARCH={cfg.arch.name}); {hint}")
    return f"{first} ({target}, answers QMP)"


def damage(folder: Path) -> str:
    """What is missing or changed in a built folder against its SHA256SUMS ("" if it matches or has
    none: a guest folder of the user's own), read by scripts/lib.sh's cache_damage, the one reader
    of the build scripts' record."""
    if not (folder / MANIFEST).is_file():
        return ""
    proc = subprocess.run(["bash", "-c", f'. "{ROOT}/scripts/lib.sh" && cache_damage "$1"', "preflight", str(folder)],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() if proc.returncode else ""


def check_guest(cfg: RunConfig) -> str:
    """The guest files exist and match the hashes their build recorded."""
    folder, target = (cfg.cloud_dir, "cloud-image") if cfg.flavour == "cloud" else (cfg.guest_dir, "guest")
    damaged = damage(folder)
    if damaged:
        raise PreflightError(f"the guest in {folder} is damaged: {damaged}; run `make {target}` "
                             "(it rebuilds a damaged cache entry), or point GUEST_DIR at a good build")
    recorded = "hashes match" if (folder / MANIFEST).is_file() else "no recorded hashes"
    return f"{folder} ({recorded})"


def check_results(cfg: RunConfig) -> str:
    """The results folder can be created and written (nothing is left in it)."""
    root = cfg.results_root
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".preflight-"):
            pass
    except OSError as exc:
        raise PreflightError(f"results folder {root} is not writable ({exc.strerror}); fix its permissions "
                             "or set RESULTS_DIR to a writable folder") from exc
    return str(root)


def check_accel(cfg: RunConfig) -> str:
    """ACCEL=kvm: the KVM probe must run (ACCEL's value itself is checked by RunConfig)."""
    if cfg.accel != "kvm":
        return f"ACCEL={cfg.accel}"
    works, observed = accel.probe_kvm(cfg.qemu_binary, cfg.firmware_args())
    if not works:
        raise PreflightError(f"ACCEL=kvm, but KVM cannot run a guest here: {observed}; use ACCEL=auto "
                             "(it picks KVM only when this probe passes) or ACCEL=tcg")
    return f"ACCEL=kvm ({observed})"


def run(cfg: RunConfig, qemu: bool = True) -> list[str]:
    """Every check, in order (cheapest first); raise PreflightError at the first failure, else
    return what was found. `qemu=False` (review, nightly: they build their own) skips the QEMU
    checks unless QEMU is given."""
    found = [f"results: {check_results(cfg)}"]
    if qemu or cfg.qemu is not None:
        found += [f"QEMU: {check_qemu(cfg)}", check_accel(cfg)]
    found.append(f"guest: {check_guest(cfg)}")
    return found


@functools.cache
def _verdict(cfg: RunConfig, qemu: bool) -> str | None:
    try:
        run(cfg, qemu)
    except ConfigError as exc:
        return str(exc)
    return None


def require(cfg: RunConfig | None = None, qemu: bool = True) -> None:
    """Raise PreflightError unless the environment passed (checked once per process)."""
    problem = _verdict(cfg or current(), qemu)
    if problem:
        raise PreflightError(problem)


def exit_unless_ready(cfg: RunConfig | None = None, qemu: bool = True, who: str = "preflight") -> RunConfig:
    """For the programs (soak, fuzz, bench, review, nightly): the configuration, or the problem
    on one line and exit status 2, before any results folder is made."""
    try:
        cfg = cfg or RunConfig.from_env()
        run(cfg, qemu)
    except ConfigError as exc:
        print(f"{who}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return cfg


def main() -> int:
    try:
        for line in run(current()):
            print(f"preflight: {line}")
    except ConfigError as exc:
        print(f"preflight: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
