"""What the QEMU under test can do, probed once per session on a paused machine (no guest).

Tests that need the series cancel with a reason naming the missing capability and the patch
that provides it, so a run against stock QEMU reads as "not applicable", never as a failure.
"""
from __future__ import annotations

import dataclasses
import functools
import tempfile
from pathlib import Path

from ..config import RunConfig
from .machine import MonitorError, QemuMachine

#: The QMP command our series puts under HMP drive_insert (patches/, QEMU policy: HMP on QMP).
RECONNECT_QMP_COMMAND = "x-blockdev-reconnect"


@dataclasses.dataclass(frozen=True)
class Capabilities:
    qemu: str
    version: str
    nvme_ns_hotplug: bool
    nvme_ns_hotplug_detail: str
    drive_insert_hmp: bool
    drive_insert_detail: str
    reconnect_qmp: bool
    package: str = ""       # query-version's package ("Debian 1:11.1.3+ds-1"; "" for a plain build)
    drive_insert_format: bool = False   # drive_insert takes a format after the file (our extension)

    def missing(self, need: str) -> str | None:
        """None if `need` is present, else the reason a test needing it must cancel."""
        reasons = {
            "nvme_ns_hotplug": None if self.nvme_ns_hotplug else
            f"QEMU lacks nvme-ns hotplug ({self.nvme_ns_hotplug_detail}): "
            "series patch 'hw/nvme: add namespace hotplug support' not applied",
            "drive_insert": None if self.drive_insert_hmp else
            f"QEMU lacks drive_insert ({self.drive_insert_detail}): "
            "series patch 'block/monitor: add drive_insert HMP command' not applied",
            "reconnect_qmp": None if self.reconnect_qmp else
            f"QEMU lacks QMP {RECONNECT_QMP_COMMAND}: "
            "series patch adding the QMP command under drive_insert not applied",
            "reconnect": None if self.reconnect_qmp or self.drive_insert_hmp else
            f"QEMU lacks drive reconnection (neither HMP drive_insert: {self.drive_insert_detail}; nor QMP "
            f"{RECONNECT_QMP_COMMAND}): series patch 'block/monitor: add drive_insert HMP command' not applied",
            "drive_insert_format": None if self.drive_insert_format else
            "QEMU's drive_insert takes no format argument (help: "
            f"{self.drive_insert_detail}): the series does not offer it",
        }
        if need not in reasons:
            raise KeyError(f"unknown capability {need!r}; known: {sorted(reasons)}")
        return reasons[need]

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def probe(cfg: RunConfig, artifacts: Path) -> Capabilities:
    """Start QEMU paused (-S) with one controller and try each capability for real."""
    qemu = cfg.qemu_binary
    with tempfile.TemporaryDirectory(prefix="nvme-hotswap-probe-") as tmp:
        disk = Path(tmp, "probe.img")
        disk.write_bytes(b"\0" * (1 << 20))
        vm = QemuMachine(qemu, [
            "-machine", f"{cfg.arch.machine},accel=tcg", "-S", "-nodefaults", "-display", "none", "-no-user-config",
            *cfg.firmware_args(),
            "-device", "pcie-root-port,id=rp0,chassis=1",
            "-device", "nvme,id=nvme0,serial=PROBE0,bus=rp0",
            "-drive", f"if=none,id=drv0,file={disk},format=raw",
        ], artifacts, name="capability-probe")
        vm.launch()
        try:
            version = vm.qmp("query-version")["qemu"]
            version_text = f"{version['major']}.{version['minor']}.{version['micro']}"
            package = str(vm.qmp("query-version").get("package", "")).strip()
            try:
                vm.qmp("device_add", driver="nvme-ns", id="ns0", drive="drv0", bus="nvme0", nsid=1)
                ns_ok, ns_detail = True, ("device_add nvme-ns accepted at run time on a controller of a paused machine "
                                       "(-S: no guest has enabled it)")
            except MonitorError as exc:
                ns_ok, ns_detail = False, str(exc).removeprefix("QMP device_add failed: ")
            help_text = vm.hmp("help drive_insert").strip()
            di_ok = help_text.startswith("drive_insert")
            di_detail = help_text.splitlines()[0] if di_ok else (help_text or "unknown command: 'drive_insert'")
            # "drive_insert device file [format] -- ...": a third parameter before the description
            di_format = di_ok and len(help_text.split("--", 1)[0].split()) > 3
            commands = {c["name"] for c in vm.qmp("query-commands")}
            return Capabilities(qemu=str(qemu), version=version_text, package=package,
                                nvme_ns_hotplug=ns_ok, nvme_ns_hotplug_detail=ns_detail,
                                drive_insert_hmp=di_ok, drive_insert_detail=di_detail,
                                reconnect_qmp=RECONNECT_QMP_COMMAND in commands, drive_insert_format=di_format)
        finally:
            vm.shutdown()


def used(issued: list[tuple[str, str, str]]) -> set[str]:
    """The capabilities of the series that these monitor commands (QemuMachine.issued) relied on:
    what a test's `needs:` tags must name, no more and no less."""
    out = set()
    for kind, command, args in issued:
        if command == "device_add" and ('"driver": "nvme-ns"' in args if kind == "qmp" else "nvme-ns" in args):
            out.add("nvme_ns_hotplug")
        elif kind == "qmp" and command == RECONNECT_QMP_COMMAND:
            out.add("reconnect_qmp")
        elif kind == "hmp" and command == "drive_insert":
            out.add("drive_insert")
            if len(args.split()) > 3:   # "drive_insert <device> <file> <format>"
                out.add("drive_insert_format")
    return out


#: needs: tags that one of several capabilities satisfies (whichever interface the series offers)
ANY_OF = {"reconnect": frozenset({"drive_insert", "reconnect_qmp"})}


def tag_mismatch(declared: set[str], used_caps: set[str]) -> tuple[set[str], set[str]]:
    """(used but not declared, declared but not used), a `needs:reconnect` tag standing for
    whichever of drive_insert and the QMP command the test used (a member the test also declares,
    `needs:drive_insert` beside a class's `needs:reconnect`, stays its own)."""
    covered = set(used_caps)
    for alias, members in ANY_OF.items():
        if alias in declared and covered & members:
            covered = (covered - (members - declared)) | {alias}
    return covered - declared, declared - covered


@functools.cache
def of_qemu_under_test(cfg: RunConfig, artifacts: Path) -> Capabilities:
    """The probe of the run's QEMU, once per process."""
    return probe(cfg, artifacts)


def first_missing(cfg: RunConfig, artifacts: Path, needs: tuple[str, ...]) -> str | None:
    """Probe the QEMU; why it cannot serve `needs` (the first capability it lacks), or None.
    For the programs outside the test suite (soak, fuzz) that need the series as a whole."""
    caps = probe(cfg, artifacts)
    return next((reason for reason in map(caps.missing, needs) if reason), None)
