"""Boot-time A/B of guest variants: which change buys how much of the boot (issue: boot <= 3 s).

Boots each variant in turn (interleaved, so a busy host slows all alike), BENCH_BOOTS rounds
(default 5), and prints per variant the median, min and max of QEMU start -> working SSH session,
plus the guest's own uptime when /init printed its "sshd ready" line. A variant is
NAME=GUEST_KERNEL[/GUEST_COMPRESS][+kernel args][@firmware file], e.g.

    .venv/bin/python bench/boot_variants.py generic=bookworm cloud=bookworm-cloud \\
        'cloud-norodata=bookworm-cloud+rodata=off' cloud-seabios=bookworm-cloud@bios-256k.bin

QEMU comes from $QEMU (else the cached build); each variant's guest from images/build-guest.sh.
"""
from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nvme_hotswap import accel, config, results  # noqa: E402
from nvme_hotswap.boot import boot_guest, guest_qemu_args  # noqa: E402
from nvme_hotswap.topology import Topology  # noqa: E402

UPTIME = re.compile(r"nvme-hotswap: uptime ([\d.]+) s")


def guest_for(kernel: str) -> str:
    kernel, _, compress = kernel.partition("/")
    env = dict(os.environ, GUEST_KERNEL=kernel, **({"GUEST_COMPRESS": compress} if compress else {}))
    out = subprocess.run(["bash", "images/build-guest.sh"], cwd=ROOT, env=env,
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def main(argv: list[str]) -> int:
    variants = []
    for spec in argv[1:] or ["bookworm=bookworm"]:
        name, _, rest = spec.partition("=")
        rest, _, bios = rest.partition("@")
        kernel, _, kargs = rest.partition("+")
        variants.append((name, guest_for(kernel), kargs.replace("+", " "), ["-bios", bios] if bios else []))
    choice = accel.choose()
    run = results.run_dir()
    seconds: dict[str, list[float]] = {n: [] for n, *_ in variants}
    guest_uptime: dict[str, list[float]] = {n: [] for n, *_ in variants}
    for i in range(int(os.environ.get("BENCH_BOOTS", "5"))):
        for name, guest, kargs, qemu_extra in variants:
            os.environ["GUEST_DIR"] = guest
            config.guest_dir.cache_clear()
            artifacts = run / "boot-variants" / f"{name}-{i}"
            topo = Topology.create(artifacts / "disks", controllers=3)
            args = guest_qemu_args(choice, topo, extra_kernel_args=kargs)
            if qemu_extra:   # the variant's firmware replaces the default one
                i = args.index("-bios") if "-bios" in args else None
                args = (args[:i] + args[i + 2:] if i is not None else args) + qemu_extra
            vm, g, s = boot_guest(args, artifacts)
            try:
                g.check("true")
                m = UPTIME.search(vm.console_text())
            finally:
                g.close()
                vm.shutdown()
                shutil.rmtree(artifacts / "disks", ignore_errors=True)
            seconds[name].append(s)
            if m:
                guest_uptime[name].append(float(m.group(1)))
    print(f"{'variant':24} {'median':>7} {'min':>6} {'max':>6}  guest uptime at sshd ready (median)  [{choice.accel}]")
    for name, guest, kargs, qemu_extra in variants:
        v, u = seconds[name], guest_uptime[name]
        print(f"{name:24} {statistics.median(v):7.2f} {min(v):6.2f} {max(v):6.2f}  "
              f"{statistics.median(u) if u else float('nan'):.2f}   ({Path(guest).name}{' + ' + kargs if kargs else ''}{' ' + ' '.join(qemu_extra) if qemu_extra else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
