"""Boot-time A/B of guest variants: which change buys how much of the boot.

Boots each variant in turn (interleaved, so a busy host slows all alike), BENCH_BOOTS rounds
(default 5), and prints per variant the median, min and max of QEMU start -> working SSH session,
plus the guest's own uptime when /init printed its "sshd ready" line (bench.boot_once: one way to
time a boot). A variant is
NAME=GUEST_KERNEL[/GUEST_COMPRESS][+kernel args][@firmware file], e.g.

    .venv/bin/python -m nvme_hotswap.longrun.boot_variants generic=bookworm cloud=bookworm-cloud \\
        'cloud-norodata=bookworm-cloud+rodata=off' cloud-seabios=bookworm-cloud@bios-256k.bin

QEMU comes from $QEMU (else the cached build); each variant's guest from images/build-guest.sh, and
each variant is a configuration of its own (dataclasses.replace), never an edit of os.environ.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
from pathlib import Path

from ..config import ROOT, RunConfig
from ..report import results
from ..vm import accel
from . import bench


def guest_for(cfg: RunConfig, kernel: str) -> str:
    kernel, _, compress = kernel.partition("/")
    env = dict(cfg.build_env(), GUEST_KERNEL=kernel, **({"GUEST_COMPRESS": compress} if compress else {}))
    out = subprocess.run(["bash", "images/build-guest.sh"], cwd=ROOT, env=env,
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def main(argv: list[str]) -> int:
    cfg = RunConfig.from_env()
    variants = []
    for spec in argv[1:] or ["bookworm=bookworm"]:
        name, _, rest = spec.partition("=")
        rest, _, bios = rest.partition("@")
        kernel, _, kargs = rest.partition("+")
        variants.append((name, guest_for(cfg, kernel), kargs.replace("+", " "), ["-bios", bios] if bios else []))
    choice = accel.choose(cfg)
    run = results.run_dir()
    seconds: dict[str, list[float]] = {n: [] for n, *_ in variants}
    guest_uptime: dict[str, list[float]] = {n: [] for n, *_ in variants}
    for round_ in range(int(os.environ.get("BENCH_BOOTS", "5"))):
        for name, guest, kargs, qemu_extra in variants:
            variant = dataclasses.replace(cfg, guest_dir_given=Path(guest))
            if qemu_extra:   # the variant's firmware replaces the default one
                arch = dataclasses.replace(variant.arch, firmware=tuple(qemu_extra))
                variant = dataclasses.replace(variant, arch=arch)
            boot = bench.boot_once(variant, choice, run / "boot-variants" / f"{name}-{round_}", kargs)
            seconds[name].append(boot.seconds)
            if boot.guest_uptime is not None:
                guest_uptime[name].append(boot.guest_uptime)
    print(f"{'variant':24} {'median':>7} {'min':>6} {'max':>6}  guest uptime at sshd ready (median)  [{choice.accel}]")
    for name, guest, kargs, qemu_extra in variants:
        v, u = seconds[name], guest_uptime[name]
        what = Path(guest).name + (" + " + kargs if kargs else "") + (" " + " ".join(qemu_extra) if qemu_extra else "")
        print(f"{name:24} {statistics.median(v):7.2f} {min(v):6.2f} {max(v):6.2f}  "
              f"{statistics.median(u) if u else float('nan'):.2f}   ({what})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
