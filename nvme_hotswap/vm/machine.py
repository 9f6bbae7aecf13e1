"""One QEMU process: launch, QMP and HMP with a transcript, events, and teardown by PID.

Every process started here is recorded in LIVE until it is reaped, so the test session can
end stragglers by PID (never by name) and fail the run if any had to be ended that way.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from qemu.qmp import ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

from ..wait import WaitTimeout

LOG = logging.getLogger("nvme_hotswap.machine")

#: PID -> machine, for every QEMU this process started and has not reaped yet.
LIVE: dict[int, QemuMachine] = {}

#: A folder where each running QEMU leaves a file named by its PID (scripts/ci-job.sh sets it).
PID_DIR_ENV = "NVME_HOTSWAP_PID_DIR"


class MonitorError(RuntimeError):
    """QEMU answered a monitor command with an error (QMP `error`, or HMP error text)."""


class QemuExited(AssertionError):
    """QEMU is gone while the harness still talks to it; the message has its status and stderr."""


class QemuStopped(AssertionError):
    """The VM stopped on its own (an internal or I/O error, a guest panic) while a test waited on
    it: nothing the test asked for, and nothing that would end by waiting longer."""


def describe_status(returncode: int | None) -> str:
    """`exit 1`, or `killed by SIGABRT (exit -6)` for a process a signal ended."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name} (exit {returncode})"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode}"


@dataclasses.dataclass(frozen=True)
class Resources:
    """What a QEMU holds that a hot-swap must give back: named block nodes and open fds."""
    nodes: tuple[str, ...]     # "node-name (file)" of each node query-named-block-nodes lists
    fds: int                   # entries of /proc/<pid>/fd


class QemuMachine:
    """A QEMU started with a QMP socket in a private 0700 directory and a serial console file.

    `artifacts` receives console.log, qemu-stderr.log and monitor.log (timestamped QMP/HMP
    transcript, events included).
    """

    def __init__(self, binary: Path, args: Iterable[str], artifacts: Path, name: str = "vm") -> None:
        self.binary = binary
        self.args = list(args)
        self.artifacts = artifacts
        self.name = name
        self.console_log = artifacts / f"{name}-console.log"
        self.stderr_log = artifacts / f"{name}-qemu-stderr.log"
        self.monitor_log = artifacts / f"{name}-monitor.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._sockdir: str | None = None
        self._pid_note: Path | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self._events: list[dict[str, Any]] = []
        self._t0 = time.monotonic()
        self.issued: list[tuple[str, str, str]] = []   # (qmp|hmp, command, arguments): what the test used
        self.ended_by: str | None = None   # how shutdown() ended it: quit, SIGTERM, SIGKILL, or on its own
        self._paused_by: str | None = None  # the STOP not followed by RESUME: None while it runs
        self._stop_allowed: str | None = None  # why the test provokes stops itself (allow_stop)
        # What this QEMU was told to plug at run time and not yet to unplug: key -> the undo, in order.
        self._plugged: dict[str, tuple[str, Callable[[], object]]] = {}
        self._reconnects = 0   # QMP reconnections so far: each blockdev-add gets a node name of its own

    # --- lifecycle -------------------------------------------------------------------------
    def launch(self, timeout: float = 30.0) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._sockdir = tempfile.mkdtemp(prefix="nvme-hotswap-qmp-")  # mode 0700
        sock = os.path.join(self._sockdir, "qmp.sock")
        self._qmp = QEMUMonitorProtocol(sock, server=True, nickname=self.name)
        cmdline = [str(self.binary), *self.args,
                   "-chardev", f"socket,id=qmp0,path={sock}",
                   "-mon", "chardev=qmp0,mode=control",
                   "-chardev", f"file,id=serial0,path={self.console_log}",
                   "-serial", "chardev:serial0"]
        (self.artifacts / f"{self.name}-cmdline.txt").write_text(" ".join(cmdline) + "\n")
        self._record("launch", " ".join(cmdline))
        with open(self.stderr_log, "wb") as err:
            self.proc = subprocess.Popen(cmdline, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        LIVE[self.proc.pid] = self
        self._note_pid(sock)
        LOG.info("%s: QEMU pid %d started", self.name, self.proc.pid)
        accepted = threading.Event()
        threading.Thread(target=self._unblock_accept_on_exit, args=(sock, accepted), daemon=True).start()
        try:
            self._qmp.accept(timeout=timeout)
        except Exception as exc:
            exited = self.proc.poll()
            self.shutdown()
            if exited is not None:
                raise QemuExited(f"{self.name}: QEMU exited before answering QMP ({describe_status(exited)}): "
                                 f"{self.stderr_tail()}") from exc
            raise RuntimeError(f"{self.name}: QEMU did not connect to QMP within {timeout:g} s "
                               f"({exc}); see {self.stderr_log}: {self.stderr_tail()}") from exc
        finally:
            accepted.set()

    def _note_pid(self, token: str) -> None:
        """Under scripts/ci-job.sh ($NVME_HOTSWAP_PID_DIR set): leave a file named by QEMU's PID that
        holds a string of its command line (the QMP socket's path), so the wrapper can still end this
        QEMU by its PID if this process is killed before its teardown (a job cancelled or over time),
        and tell it from an unrelated process that got the PID later."""
        folder = os.environ.get(PID_DIR_ENV)
        if folder and self.proc is not None:
            self._pid_note = Path(folder) / str(self.proc.pid)
            self._pid_note.write_text(token + "\n")

    def _unblock_accept_on_exit(self, sock: str, accepted: threading.Event) -> None:
        """While launch() waits for QEMU's QMP connection: if QEMU exits first, connect to the
        socket ourselves and hang up, so the accept fails now instead of after its timeout and
        launch() reports the exit status (`QEMU=/bin/true` must not cost 30 s a test)."""
        proc = self.proc
        assert proc is not None
        while not accepted.wait(0.05):
            if proc.poll() is not None:
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(sock)
                return

    @property
    def pid(self) -> int:
        assert self.proc is not None, "launch() first"
        return self.proc.pid

    @property
    def socket_dir(self) -> str | None:
        """The private (0700) folder of the QMP socket, None before launch()."""
        return self._sockdir

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once it ended (negative: the signal that ended it), else None."""
        return None if self.proc is None else self.proc.poll()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def shutdown(self, timeout: float = 10.0) -> int | None:
        """Quit through QMP, then SIGTERM, then SIGKILL, always by PID; returns the exit code."""
        if self.proc is None:
            return None
        if self.ended_by is None:
            self.ended_by = "on its own, before quit" if self.proc.poll() is not None else "quit"
        if self.proc.poll() is None and self._qmp is not None:
            try:
                self._qmp.settimeout(3.0)
                self._qmp.cmd_raw("quit")
            except Exception:  # a dead or wedged monitor must not stop the teardown
                pass
        for sig, grace in ((None, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if sig is not None and self.proc.poll() is None:
                LOG.warning("%s: QEMU pid %d did not exit, sending %s", self.name, self.proc.pid, sig.name)
                self.ended_by = sig.name
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        LIVE.pop(self.proc.pid, None)
        if self._pid_note is not None:
            self._pid_note.unlink(missing_ok=True)
            self._pid_note = None
        if self._qmp is not None:
            try:
                self._qmp.close()
            except Exception:
                pass
            self._qmp = None
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None
        self._record("exit", f"exit code {self.proc.returncode}")
        return self.proc.returncode

    def exit_problem(self) -> str | None:
        """After shutdown(): why QEMU's end was abnormal (it died on its own, did not obey quit, or
        quit with a non-zero status or a signal, e.g. an assertion at quit), or None."""
        if self.proc is None or self.proc.poll() is None:
            return None
        status = describe_status(self.proc.returncode)
        if self.ended_by == "quit" and self.proc.returncode == 0:
            return None
        if self.ended_by == "quit":
            what = f"QEMU ended abnormally at quit: {status}"
        elif self.ended_by in ("SIGTERM", "SIGKILL"):
            what = f"QEMU did not exit on quit and had to be sent {self.ended_by} ({status})"
        else:
            what = f"QEMU exited {self.ended_by}: {status}"
        return f"{what}; QEMU stderr ({self.stderr_log}): {self.stderr_tail()}"

    def check_alive(self) -> None:
        """Raise QemuExited with its status and stderr tail if QEMU is no longer running."""
        if self.proc is not None and self.proc.poll() is not None:
            status = describe_status(self.proc.returncode)
            raise QemuExited(f"{self.name}: QEMU pid {self.proc.pid} is gone ({status}); stderr: {self.stderr_tail()}")

    def allow_stop(self, why: str) -> None:
        """The test stops the VM itself (an error policy of `stop`): check_health() lets it be."""
        self._stop_allowed = why

    def check_health(self) -> None:
        """Raise at once if QEMU has exited (QemuExited) or its VM stopped on its own (QemuStopped:
        a STOP event the test did not ask for, with query-status and QEMU's stderr tail).

        Every wait on the guest calls this (boot, SSH commands, QMP event waits), so a dead or
        paused VM fails the test the moment it happens, never after the wait's bound."""
        self.check_alive()
        if self._qmp is None:
            return
        for _ in range(100):   # every event that has arrived, so a STOP is not left behind others
            if not self._pull_event(wait=False):
                break
        if self._paused_by in (None, *_ASKED_STOPS) or self._stop_allowed is not None:
            return
        try:
            status = self.qmp("query-status").get("status")
        except Exception as exc:   # an exited QEMU is named by check_alive
            self.check_alive()
            status = f"unknown ({exc})"
        if status == "running":    # a RESUME we have not read yet
            self._paused_by = None
            return
        raise QemuStopped(f"{self.name}: the VM stopped on its own ({self._paused_by}, query-status: {status}); "
                          f"QEMU stderr ({self.stderr_log}): {self.stderr_tail()}")

    def resources(self) -> Resources:
        """The named block nodes and the open fd count, now."""
        nodes = tuple(sorted(f"{n.get('node-name')} ({n.get('file')})" for n in self.qmp("query-named-block-nodes")))
        return Resources(nodes, len(os.listdir(f"/proc/{self.pid}/fd")))

    # --- monitor ---------------------------------------------------------------------------
    def qmp(self, command: str, **args: Any) -> Any:
        """Run a QMP command; return its `return` value or raise MonitorError with QEMU's text."""
        assert self._qmp is not None, f"{self.name}: not launched"
        self._record("qmp>", json.dumps({"execute": command, "arguments": args}) if args else command)
        if command == "stop":
            self._paused_by = "QMP stop"   # asked for: never "on its own"
        self.issued.append(("qmp", command, json.dumps(args, sort_keys=True, default=str)))
        self._qmp.settimeout(60.0)
        try:
            ret = self._qmp.cmd(command, **args)
        except ExecuteError as exc:
            self._record("qmp<", f"error: {exc}")
            raise MonitorError(f"QMP {command} failed: {exc}") from exc
        except Exception:
            self._record("qmp<", "no answer")
            self.check_alive()   # a dead QEMU is named as such, not as a socket error
            raise
        self._record("qmp<", json.dumps(ret))
        self._note_plug("qmp", command, args)
        return ret

    def hmp(self, command_line: str) -> str:
        """Run an HMP command through QMP `human-monitor-command`; return its text output."""
        self._record("hmp>", command_line)
        self.issued.append(("hmp", command_line.split(" ", 1)[0], command_line))
        if command_line.split(" ", 1)[0] in ("stop", "s"):
            self._paused_by = "HMP stop"
        assert self._qmp is not None, f"{self.name}: not launched"
        self._qmp.settimeout(60.0)
        try:
            out = self._qmp.cmd("human-monitor-command", **{"command-line": command_line})
        except ExecuteError as exc:
            self._record("hmp<", f"error: {exc}")
            raise MonitorError(f"HMP {command_line!r} failed: {exc}") from exc
        except Exception:
            self._record("hmp<", "no answer")
            self.check_alive()
            raise
        self._record("hmp<", str(out).rstrip())
        self._note_plug("hmp", command_line.split(" ", 1)[0], {"line": command_line, "out": str(out).strip()})
        return str(out)

    def hmp_ok(self, command_line: str) -> str:
        """Run an HMP command that prints nothing on success; raise MonitorError with its text otherwise.

        HMP reports most errors as output text rather than a QMP error, so silence is success.
        """
        out = self.hmp(command_line)
        if out.strip():
            raise MonitorError(f"HMP {command_line!r}: {out.strip()}")
        return out

    def event_wait(self, name: str, timeout: float, match: dict[str, Any] | None = None) -> dict[str, Any]:
        """Wait for QMP event `name` whose `data` contains `match`; consume and return it."""
        assert self._qmp is not None, f"{self.name}: not launched"
        deadline = time.monotonic() + timeout
        while True:
            for i, seen in enumerate(self._events):
                if seen.get("event") == name and _matches(seen.get("data", {}), match or {}):
                    return self._events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"{self.name}: waited {timeout:g} s for QMP event {name} "
                                  f"matching {match}; events seen: {[e.get('event') for e in self._events]}")
            self.check_health()
            self._pull_event(wait=min(remaining, 1.0))

    def _pull_event(self, wait: bool | float) -> bool:
        """Read one QMP event (if any within `wait`) into the queue event_wait() reads; note
        STOP and RESUME for check_health(). Whether there was one."""
        assert self._qmp is not None
        try:
            ev = self._qmp.pull_event(wait=wait)
        except TimeoutError:
            ev = None
        if ev is None:
            return False
        self._record("event", json.dumps(ev))
        self._events.append(ev)
        if ev.get("event") == "STOP" and self._paused_by not in _ASKED_STOPS:
            self._paused_by = "QMP event STOP"
        elif ev.get("event") == "RESUME":
            self._paused_by = None
        return True

    # --- what was plugged, and its undo -----------------------------------------------------
    def _note_plug(self, kind: str, command: str, args: dict[str, Any]) -> None:
        """Each plug registers its unplug as it succeeds, each unplug (or a reconnect that hands a
        node to a device) takes it back: a test that fails half-way leaves a list of what to undo,
        so its tear-down reads one failure, not the same one again as leaked resources."""
        if kind == "qmp" and command == "device_add" and args.get("id"):
            dev, slow = str(args["id"]), args.get("driver") != "nvme-ns"   # a PCI device: pciehp's ~6 s
            self._plugged[f"device:{dev}"] = (f"device_del {dev}", lambda: self.device_del(dev, 60.0 if slow else 10.0))
        elif kind == "qmp" and command == "device_del":
            self._plugged.pop(f"device:{args.get('id')}", None)
        elif kind == "qmp" and command == "blockdev-add" and args.get("node-name"):
            node = str(args["node-name"])
            self._plugged[f"node:{node}"] = (f"blockdev-del {node}",
                                             lambda: self.qmp("blockdev-del", **{"node-name": node}))
        elif kind == "qmp" and command in ("blockdev-del", "x-blockdev-reconnect"):
            self._plugged.pop(f"node:{args.get('node-name')}", None)
        elif kind == "hmp" and command == "drive_add" and args["out"] == "OK":
            m = re.search(r"(?:^|,)id=([^,\s]+)", args["line"].split(" ", 2)[-1])
            if m:
                drive = m.group(1)
                self._plugged[f"drive:{drive}"] = (f"drive_del {drive}", lambda: self.drive_del(drive))
        elif kind == "hmp" and command == "drive_del" and not args["out"]:
            self._plugged.pop(f"drive:{args['line'].split()[-1]}", None)

    def plugged(self) -> list[str]:
        """The undo of every run-time plug not unplugged yet, last plug first (monitor commands)."""
        return [what for what, _ in reversed(self._plugged.values())]

    def undo_plugs(self) -> list[str]:
        """Unplug, last first, what the test plugged and did not unplug; what could not be undone
        (QEMU's words). The leak check then judges what QEMU still holds."""
        failed = []
        for key, (what, undo) in reversed(list(self._plugged.items())):
            try:
                undo()
            except (MonitorError, AssertionError) as exc:
                failed.append(f"{what}: {exc}")
            self._plugged.pop(key, None)
        return failed

    # --- verbs of the hot-swap sequences -----------------------------------------------------
    def device_del(self, dev_id: str, timeout: float = 60.0, wait: bool = True) -> dict[str, Any] | None:
        """device_del and (unless not `wait`) wait for its DEVICE_DELETED, matched on data.device:
        a namespace child's event comes first and has no `device` key."""
        self.qmp("device_del", id=dev_id)
        return self.event_wait("DEVICE_DELETED", timeout, match={"device": dev_id}) if wait else None

    def drive_del(self, drive_id: str) -> None:
        self.hmp_ok(f"drive_del {drive_id}")

    def drive_add(self, drive_option: str) -> None:
        """HMP drive_add; `drive_option` is a -drive value (see topology.drive_option)."""
        out = self.hmp(f"drive_add 0 {drive_option}")
        if out.strip() != "OK":
            raise MonitorError(f"HMP drive_add 0 {drive_option}: {out.strip()}")

    def drive_insert(self, device: str, image: Path | str, fmt: str | None = None) -> None:
        """The series' HMP drive_insert: reconnect `image` to `device` after drive_del."""
        self.hmp_ok(f"drive_insert {device} {image}" + (f" {fmt}" if fmt else ""))

    def blockdev_reconnect(self, qom_path: str, node_name: str) -> None:
        """The QMP command under drive_insert: attach block node `node_name` to the device's empty backend."""
        self.qmp("x-blockdev-reconnect", id=qom_path, **{"node-name": node_name})

    def reconnect(self, device: str, image: Path | str, via_hmp: bool) -> None:
        """Reconnect raw `image` to `device`'s empty backend through the interface the series offers:
        the cover letter's drive_insert (`via_hmp`), else its QMP form (blockdev-add as a node named
        for this call, then x-blockdev-reconnect; a refused reconnect deletes that node again).
        Either way a refusal raises MonitorError and, if the series is right, leaves QEMU as it was."""
        if via_hmp:
            self.drive_insert(device, image)
            return
        self._reconnects += 1
        node = f"reconnected{self._reconnects}"
        self.qmp("blockdev-add", driver="raw", **{"node-name": node}, file={"driver": "file", "filename": str(image)})
        try:
            self.blockdev_reconnect(device, node)
        except MonitorError:
            self.qmp("blockdev-del", **{"node-name": node})
            raise

    def aer_inject(self, port: str, error: str) -> None:
        """Inject an AER error at a root port (HMP only; e.g. SDN = Surprise Down)."""
        out = self.hmp(f"pcie_aer_inject_error {port} {error}")
        if not out.startswith("OK "):  # success prints "OK id: rp2 root bus: ..."
            raise MonitorError(f"HMP pcie_aer_inject_error {port} {error}: {out.strip()}")

    def usernet_ssh_port(self) -> int:
        """The host port slirp picked for the guest's port 22 (we ask for port 0: no collisions)."""
        return parse_usernet_hostfwd(self.hmp("info usernet"), guest_port=22)

    # --- diagnostics -----------------------------------------------------------------------
    def console_text(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.stderr_log.read_text(errors="replace").strip().splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _record(self, kind: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.gmtime()) + f" +{time.monotonic() - self._t0:8.3f}s"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        with open(self.monitor_log, "a") as f:
            f.write(f"{stamp} {kind:6} {text}\n")
        LOG.debug("%s %s %s", self.name, kind, text if len(text) < 400 else text[:400] + " ...")


_ASKED_STOPS = ("QMP stop", "HMP stop")   # how the harness itself pauses a VM


def _matches(data: dict[str, Any], match: dict[str, Any]) -> bool:
    return all(data.get(k) == v for k, v in match.items())


_HOSTFWD = re.compile(r"TCP\[HOST_FORWARD\]\s+\d+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)")


def parse_usernet_hostfwd(info_usernet: str, guest_port: int) -> int:
    """Host port of the TCP forward to `guest_port` in HMP `info usernet` output."""
    for m in _HOSTFWD.finditer(info_usernet):
        if int(m.group(4)) == guest_port:
            return int(m.group(2))
    raise ValueError(f"no TCP host forward to guest port {guest_port} in `info usernet`:\n{info_usernet}")


def end_strays() -> list[str]:
    """End every QEMU this process started and did not reap, by PID; return what was ended.

    Runs at the end of a test session (a test interrupted by Ctrl-C or SIGTERM skips its
    tearDown) and at interpreter exit.
    """
    ended = []
    for pid, vm in list(LIVE.items()):
        ended.append(f"pid {pid} ({vm.name}, artifacts {vm.artifacts})")
        vm.shutdown(timeout=2.0)
        LIVE.pop(pid, None)
    return ended


atexit.register(end_strays)
