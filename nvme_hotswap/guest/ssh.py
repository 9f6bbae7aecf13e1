"""The booted Linux guest, over SSH (paramiko): commands with a transcript, and parsed facts.

Connecting follows what the guest's /init promises: it prints SSHD_READY_MARKER on the serial
console once dropbear listens. We wait for that marker first (slirp accepts TCP before sshd
listens, which shows up as "Error reading SSH protocol banner"), then connect with bounded
retries and a short banner timeout.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import select
import shlex
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paramiko

from ..wait import WaitTimeout, wait_until
from . import facts as guestfacts
from .facts import ControllerInfo, KernelLine, NamespaceInfo

LOG = logging.getLogger("nvme_hotswap.guest")
SSHD_READY_MARKER = "nvme-hotswap: sshd ready"


@dataclasses.dataclass(frozen=True)
class Result:
    command: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclasses.dataclass(frozen=True)
class ReadAttempt:
    status: str            # "ok", "error" or "hung"
    rc: int | None         # dd's exit code, None if it hung


class GuestCommandError(AssertionError):
    """A guest command that had to succeed did not; the message carries its output."""


#: Raises (naming QEMU's exit status or why the VM stopped) when the machine under the guest can no
#: longer run it; called while any guest wait is pending (QemuMachine.check_health).
HealthCheck = Callable[[], None]
HEALTH_INTERVAL_S = 0.5


def _no_check() -> None:
    return None


class Guest:
    def __init__(self, port: int, key_file: Path, transcript: Path, host: str = "127.0.0.1",
                 user: str = "root", health: HealthCheck = _no_check) -> None:
        self.host = host
        self.port = port
        self.user = user   # not root (a cloud image's default user): commands run through sudo
        self.key = paramiko.Ed25519Key.from_private_key_file(str(key_file))
        self.transcript = transcript
        self.health = health
        self._client: paramiko.SSHClient | None = None

    # --- connection ------------------------------------------------------------------------
    @staticmethod
    def wait_for_console(console_text: Callable[[], str], timeout: float, health: HealthCheck) -> float:
        """Wait until the console shows the sshd marker; return the seconds waited. `health`
        raises at once if QEMU exits or stops meanwhile (a KVM that cannot run the guest pauses
        it with an internal error: that must not read as a 180 s console timeout)."""
        start = time.monotonic()

        def ready() -> bool:
            health()
            return SSHD_READY_MARKER in console_text()

        wait_until(ready, timeout, f"the guest console to print {SSHD_READY_MARKER!r}", interval=0.05)
        return time.monotonic() - start

    def connect(self, timeout: float = 30.0) -> None:
        """Connect, retrying within `timeout` while the machine is healthy (a guest without a
        console marker is waited for here, until its sshd answers and accepts the key)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self.health()
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # per-build guest, in memory only
            try:
                client.connect(self.host, port=self.port, username=self.user, pkey=self.key,
                               timeout=5, banner_timeout=5, auth_timeout=5,
                               look_for_keys=False, allow_agent=False)
                self._client = client
                return
            except (TimeoutError, paramiko.SSHException, OSError) as exc:
                last = exc
                client.close()
                time.sleep(0.3)
        raise WaitTimeout(f"could not open SSH to {self.user}@{self.host}:{self.port} within {timeout:g} s: {last!r}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- commands --------------------------------------------------------------------------
    def run(self, command: str, timeout: float = 60.0) -> Result:
        """Run `command` with /bin/sh in the guest; never raises for a non-zero exit."""
        assert self._client is not None, "connect() first"
        start = time.monotonic()
        remote = command if self.user == "root" else f"sudo -n bash -c {shlex.quote(command)}"
        try:
            rc, stdout, stderr = self._exec(remote, timeout)
        except TimeoutError as exc:
            self._log(command, None, "", f"timed out after {timeout:g} s", time.monotonic() - start)
            raise WaitTimeout(f"guest command did not finish within {timeout:g} s: {command}") from exc
        except AssertionError as exc:   # the machine died or stopped under the command
            self._log(command, None, "", f"abandoned: {exc}", time.monotonic() - start)
            raise
        self._log(command, rc, stdout, stderr, time.monotonic() - start)
        return Result(command, rc, stdout, stderr)

    def _exec(self, remote: str, timeout: float) -> tuple[int, str, str]:
        """Run `remote` on a new channel; read its output while checking the machine's health
        every HEALTH_INTERVAL_S, so a command on a dead or paused VM fails now, not at `timeout`."""
        assert self._client is not None
        transport = self._client.get_transport()
        assert transport is not None, "SSH transport closed"
        deadline = time.monotonic() + timeout
        self.health()   # a paused VM would not even answer the channel's opening
        try:
            chan = transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError):
            self._health_settled()   # a dead QEMU is the cause to name, not the SSH error
            raise
        try:
            chan.exec_command(remote)
            out, err = bytearray(), bytearray()
            while True:
                if chan.eof_received:   # the output is over; the exit status follows (select would spin)
                    chan.status_event.wait(HEALTH_INTERVAL_S)
                else:
                    select.select([chan], [], [], HEALTH_INTERVAL_S)   # wakes on stdout, stderr or EOF
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    rc = chan.recv_exit_status()
                    if rc == -1:     # no exit status: the connection went, perhaps with QEMU
                        self._health_settled()
                    return rc, out.decode(errors="replace"), err.decode(errors="replace")
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no exit status within {timeout:g} s")
                self.health()
        except (paramiko.SSHException, OSError, EOFError):
            self._health_settled()
            raise
        finally:
            chan.close()

    def _health_settled(self, seconds: float = 1.0) -> None:
        """health(), for `seconds`: a killed QEMU's sockets close a moment before the process can be
        reaped, so the connection can drop before check_health() could tell why."""
        end = time.monotonic() + seconds
        while True:
            self.health()
            if time.monotonic() >= end:
                return
            time.sleep(0.05)

    def check(self, command: str, timeout: float = 60.0) -> str:
        """Run `command`; return its stdout, or fail naming the command and its output."""
        r = self.run(command, timeout)
        if not r.ok:
            raise GuestCommandError(f"guest command failed (exit {r.rc}): {command}\n"
                                    f"stdout: {r.stdout.strip()}\nstderr: {r.stderr.strip()}")
        return r.stdout

    def spawn(self, command: str) -> int:
        """Start `command` in the background (all three streams redirected); return its PID."""
        out = self.check(f"{command} </dev/null >/dev/null 2>&1 & echo $!")
        return int(out.strip().splitlines()[-1])

    def hold_open(self, device: str) -> int:
        """Keep `device` open in a background process, as storage software does; return its PID."""
        return self.spawn(f"sh -c 'exec 3<{shlex.quote(device)}; exec sleep 100000'")

    def _log(self, command: str, rc: int | None, out: str, err: str, seconds: float) -> None:
        with open(self.transcript, "a") as f:
            f.write(f"$ {command}\n# exit {rc} in {seconds:.3f} s\n")
            if out:
                f.write(out if out.endswith("\n") else out + "\n")
            if err:
                f.write("# stderr:\n" + (err if err.endswith("\n") else err + "\n"))

    # --- facts -----------------------------------------------------------------------------
    def controllers(self) -> list[ControllerInfo]:
        return guestfacts.parse_controllers(self.check(guestfacts.CONTROLLERS_SH))

    def namespaces(self) -> list[NamespaceInfo]:
        return guestfacts.parse_namespaces(self.check(guestfacts.NAMESPACES_SH))

    def controller_at(self, pci_address: str) -> ControllerInfo | None:
        return next((c for c in self.controllers() if c.address == pci_address), None)

    def nvme_names(self) -> dict[str, tuple[str, list[str]]]:
        """PCI address -> (controller name, its block devices): what storage software tracks."""
        nss = self.namespaces()
        return {c.address: (c.name, sorted(n.block for n in nss if n.controller == c.name))
                for c in self.controllers()}

    def identify_namespace(self, disk: str) -> dict[str, object]:
        """nvme-cli's Identify Namespace of /dev/`disk` (JSON: nsze, ncap, nuse, flbas, lbafs...)."""
        identify: dict[str, object] = json.loads(self.check(f"nvme id-ns {dev_path(disk)} -o json"))
        return identify

    def has_namespace(self, controller: str, nsid: int) -> bool:
        """Whether `controller` lists NSID `nsid`: one cheap command, for timing how soon it shows."""
        return self.run(f"for n in /sys/class/nvme/{controller}/nvme*n*; do "
                        f"[ \"$(cat $n/nsid 2>/dev/null)\" = {nsid} ] && exit 0; done; exit 1").ok

    def namespace(self, controller: str, nsid: int) -> NamespaceInfo | None:
        return next((n for n in self.namespaces() if n.controller == controller and n.nsid == nsid), None)

    # --- block I/O -------------------------------------------------------------------------
    # O_DIRECT both ways, so a read after a swap sees the device, not the guest's page cache.
    BLOCK = 4096

    def write_random(self, disk: str, offset_blocks: int, blocks: int) -> str:
        """Write random 4 KiB blocks to /dev/`disk` and fsync; return their sha256."""
        return self.check(
            "set -o pipefail; f=$(mktemp) && "
            f"dd if=/dev/urandom of=$f bs={self.BLOCK} count={blocks} 2>/dev/null && "
            f"dd if=$f of={dev_path(disk)} bs={self.BLOCK} seek={offset_blocks} oflag=direct conv=fsync 2>/dev/null && "
            "sha256sum < $f | cut -d' ' -f1; rc=$?; rm -f $f; exit $rc").strip()

    def read_sha256(self, disk: str, offset_blocks: int, blocks: int, timeout: float = 60.0) -> str:
        """sha256 of `blocks` 4 KiB blocks of /dev/`disk` read with O_DIRECT; fails if the read fails."""
        return self.check(
            f"set -o pipefail; dd if={dev_path(disk)} bs={self.BLOCK} skip={offset_blocks} count={blocks} "
            "iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1", timeout).strip()

    def read_head(self, disk: str, length: int) -> bytes:
        """The first `length` bytes of /dev/`disk`, read with O_DIRECT (never the page cache)."""
        out = self.check(f"dd if={dev_path(disk)} bs={self.BLOCK} count=1 iflag=direct 2>/dev/null | head -c {length}")
        return out.encode()

    def try_read(self, disk: str, seconds: float = 10.0) -> ReadAttempt:
        """One O_DIRECT block read, in the background so a read stuck in D state cannot wedge SSH.

        Returns how it ended within `seconds`: "ok", "error" (with dd's exit code) or "hung"
        (the reader is left behind; it cannot be killed while the I/O is stuck).
        """
        polls = max(1, int(seconds / 0.2))
        out = self.check(
            f"dd if={dev_path(disk)} of=/dev/null bs={self.BLOCK} count=1 iflag=direct 2>/dev/null & p=$!; "
            f"for i in $(seq {polls}); do kill -0 $p 2>/dev/null || {{ wait $p; echo rc=$?; exit 0; }}; "
            "sleep 0.2; done; echo hung", timeout=seconds + 30).strip()
        if out == "hung":
            return ReadAttempt("hung", None)
        rc = int(out.removeprefix("rc="))
        return ReadAttempt("ok" if rc == 0 else "error", rc)

    # --- kernel log ------------------------------------------------------------------------
    def klog_mark(self) -> str:
        """Write a unique mark into the guest kernel log; return it for klog_since()."""
        mark = f"nvme-hotswap: mark {uuid.uuid4().hex[:12]}"
        self.check(f"echo {shlex.quote(mark)} > /dev/kmsg")
        return mark

    def klog(self) -> list[KernelLine]:
        return guestfacts.parse_dmesg(self.check("dmesg"))

    def klog_since(self, mark: str) -> list[KernelLine]:
        return guestfacts.lines_after_mark(self.klog(), mark)


def dev_path(disk: str) -> str:
    """/dev/<disk> for a block device the guest named (`nvme2n1`, `vda`); a path is refused, so a
    wrong argument fails here and not as a read error a test might expect anyway."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", disk):
        raise ValueError(f"expected a guest block device name such as 'nvme2n1' or 'vda', got {disk!r}")
    return f"/dev/{disk}"
