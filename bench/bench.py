"""Build and boot figures, printed as a table and written to results/<run>/bench.json.

Figures (seconds):
  qemu_build_cold_s     configure + ninja of the cached build, as recorded when it was built
                        (BENCH_COLD=1 rebuilds into a scratch cache to measure it now)
  qemu_build_cached_s   scripts/build-qemu.sh answering from the cache
  guest_build_cold_s    images/build-guest.sh, as recorded in the guest's manifest
  guest_build_cached_s  images/build-guest.sh answering from the cache
  boot_to_ssh_s         QEMU start to a working SSH session, BENCH_BOOTS (default 5) boots of the
                        three-controller topology; median, min, max and the accelerator used
Speed targets live here, never in timed tests.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nvme_hotswap import accel, config, results  # noqa: E402
from nvme_hotswap.boot import boot_guest, guest_qemu_args  # noqa: E402
from nvme_hotswap.topology import Topology  # noqa: E402


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return time.monotonic() - start, out.strip().splitlines()[-1]


def recorded_seconds(done_file: Path, key: str) -> float | None:
    if not done_file.exists():
        return None
    text = done_file.read_text()
    if done_file.suffix == ".json":
        value = json.loads(text).get(key)
        return float(value) if value is not None else None
    for line in text.splitlines():
        if line.startswith(key + "="):
            return float(line.split("=", 1)[1])
    return None


def main() -> int:
    figures: dict[str, object] = {}
    if os.environ.get("BENCH_COLD") == "1":
        scratch = tempfile.mkdtemp(prefix="nvme-hotswap-bench-cache-")
        try:
            env = dict(os.environ, NVME_HOTSWAP_CACHE=scratch)
            figures["qemu_build_cold_s"], _ = timed(["bash", "scripts/build-qemu.sh"], env)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    figures["qemu_build_cached_s"], qemu = timed(["bash", "scripts/build-qemu.sh"])
    figures.setdefault("qemu_build_cold_s", recorded_seconds(Path(qemu).parent.parent / "DONE", "build_seconds"))
    figures["guest_build_cached_s"], guest = timed(["bash", "images/build-guest.sh"])
    figures["guest_build_cold_s"] = recorded_seconds(Path(guest) / "manifest.json", "build_seconds")

    choice = accel.choose()
    boots = []
    run = results.run_dir()
    for i in range(int(os.environ.get("BENCH_BOOTS", "5"))):
        artifacts = run / "bench" / f"boot{i}"
        topo = Topology.create(artifacts / "disks", controllers=3)
        vm, g, seconds = boot_guest(guest_qemu_args(choice, topo), artifacts)
        g.check("true")
        g.close()
        vm.shutdown()
        shutil.rmtree(artifacts / "disks", ignore_errors=True)
        boots.append(seconds)
    figures["boot_to_ssh_s"] = {"median": statistics.median(boots), "min": min(boots), "max": max(boots),
                                "runs": len(boots), "accel": choice.accel, "accel_reason": choice.reason}
    figures["qemu"] = str(config.qemu_binary())
    figures["guest"] = str(config.guest_dir())

    def fmt(v: object) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    b = figures["boot_to_ssh_s"]
    print(f"{'figure':28} {'seconds':>10}")
    for key in ("qemu_build_cold_s", "qemu_build_cached_s", "guest_build_cold_s", "guest_build_cached_s"):
        print(f"{key:28} {fmt(figures[key]):>10}")
    print(f"{'boot_to_ssh_s (median)':28} {fmt(b['median']):>10}  min {fmt(b['min'])} max {fmt(b['max'])} "
          f"over {b['runs']} boots, accel {b['accel']} ({b['accel_reason']})")
    (run / "bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written: {run / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
