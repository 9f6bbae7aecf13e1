"""environment.json of a run: what was tested, on what (recorded once per process)."""
from __future__ import annotations

import functools
import importlib.metadata
import json
import platform
from pathlib import Path

from ..config import RunConfig
from ..guest import cloud
from ..vm.accel import AccelChoice
from ..vm.capabilities import Capabilities
from . import results


@functools.cache
def record(cfg: RunConfig, caps: Capabilities, choice: AccelChoice) -> None:
    """The QEMU and its origin, the accelerator and why, the guest's manifest, the host, the packages."""
    guest: object
    if cfg.flavour == "cloud":
        guest_dir, guest = cfg.image or cfg.cloud_dir, cloud.manifest(cfg)
    else:
        guest_dir = cfg.guest_dir
        manifest = guest_dir / "manifest.json"
        guest = json.loads(manifest.read_text()) if manifest.exists() else None
    results.record_environment({
        "qemu": caps.qemu, "qemu_version": caps.version, "capabilities": caps.as_dict(),
        "qemu_build": build_record(Path(caps.qemu)),
        "accelerator": choice.accel, "accelerator_reason": choice.reason,
        "guest_dir": str(guest_dir),
        "guest_flavour": cfg.flavour, "guest": guest,
        "guest_arch": cfg.arch.name, "machine": cfg.arch.machine,
        "host_kernel": platform.release(), "python": platform.python_version(),
        "packages": {p: importlib.metadata.version(p)
                     for p in ("avocado-framework", "qemu.qmp", "paramiko", "pytest")},
    })


def build_record(binary: Path) -> dict[str, str] | str:
    """Where our build came from (source, patches with their hashes), from its cache entry's DONE."""
    done = binary.parent.parent / "DONE"
    if not done.is_file():
        return "not built by scripts/build-qemu.sh (QEMU= given)"
    record: dict[str, str] = {}
    for line in done.read_text().splitlines():
        key, _, value = line.partition("=")
        record[key] = value if key not in record else f"{record[key]}; {value}"
    return record
