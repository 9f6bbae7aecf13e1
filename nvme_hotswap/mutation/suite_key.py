"""What decides a mutant's verdict besides the mutant: one key, so a verdict is reused only when
nothing it depends on changed.

The QEMU build is named by its cache key (source, series, mutant, configure flags, device list), the
guest by its own (pinned packages, modules, /init); the rest is the suite's own files (tests, the
harness, the qtest runner, conftest.py), the pinned Python dependencies and interpreter, and the
firmware packages the harness boots with. `make check-mutants` and `make mutation-score` key their
kept verdicts with it, and keep them in a KeptStore.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

from ..config import ROOT

FIRMWARE_PACKAGES = ("qemu-system-data", "seabios", "ipxe-qemu")


def firmware_versions() -> str:
    """The installed versions of the firmware packages (a dpkg upgrade changes the key)."""
    out = subprocess.run(["dpkg-query", "-W", *FIRMWARE_PACKAGES], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, check=False).stdout
    return out.strip()


def suite_key(build_key: str, guest: str) -> str:
    """A key of everything a verdict on the build `build_key` with the guest folder `guest` depends on."""
    h = hashlib.sha256(f"{build_key}\0{Path(guest).name}\0{sys.version}\0{firmware_versions()}\0".encode())
    files = sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "nvme_hotswap").rglob("*.py"),
                    ROOT / "scripts" / "check-series.sh", ROOT / "conftest.py", ROOT / "setup.cfg",
                    ROOT / "pyproject.toml"])
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


class KeptStore:
    """Verdicts kept in a JSON file under their keys. A missing or damaged file is an empty store (it
    only costs time); `fresh` ignores what is there. Each verdict is written at once, atomically and
    under a lock (check-mutants keeps verdicts from JOBS threads), so an interrupted run loses at most
    the verdict in hand."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self.data: dict[str, dict] = {} if fresh else json.loads(path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def put(self, key: str, value: dict) -> None:
        with self._lock:
            self.data[key] = value
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
            tmp.replace(self.path)
