"""A client of QEMU's qtest protocol (system/qtest.c) over a unix socket.

QEMU started with `-accel qtest -qtest unix:<path>` connects to a socket we listen on first; each
command is one text line answered by `OK [values]` or `FAIL <why>`. Lines `IRQ raise|lower N`
arrive whenever an interrupt line of the machine changes, interleaved with the answers: they are
skipped (this host polls completion queues; it needs no interrupts). Under qtest QEMU's virtual
clock stands still until `clock_step` moves it; bottom halves (how hw/nvme processes queues) run
in QEMU's main loop in real time.
"""
from __future__ import annotations

import base64
import logging
import os
import socket
import tempfile
import time
from pathlib import Path

LOG = logging.getLogger("nvme_hotswap.device.qtest")

DEFAULT_TIMEOUT = 10.0   # seconds for one answer: QEMU answers qtest at once unless it hangs


class QtestError(RuntimeError):
    """QEMU answered FAIL, hung up, or did not answer in time; the message names the command."""


class QtestListener:
    """The listening socket QEMU's `-qtest unix:<path>` connects to, in a private 0700 folder."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="nvme-hotswap-qtest-")
        self.path = os.path.join(self.folder, "qtest.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(1)

    def accept(self, timeout: float) -> Qtest:
        """The connection of the QEMU started with `-qtest unix:<path>`."""
        self._sock.settimeout(timeout)
        try:
            conn, _ = self._sock.accept()
        except TimeoutError as exc:
            raise QtestError(f"QEMU did not connect to the qtest socket {self.path} within {timeout:g} s: "
                             "was it started with -accel qtest -qtest unix:<path>?") from exc
        return Qtest(conn)

    def close(self) -> None:
        self._sock.close()
        Path(self.path).unlink(missing_ok=True)
        os.rmdir(self.folder)


class Qtest:
    """One qtest connection: memory, port I/O and the virtual clock of the machine."""

    def __init__(self, conn: socket.socket, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._conn = conn
        self._buf = b""
        self.timeout = timeout
        self.irqs: list[str] = []   # the IRQ lines seen, most recent last (kept short)

    def close(self) -> None:
        self._conn.close()

    # --- the wire ----------------------------------------------------------------------------
    def command(self, line: str) -> list[str]:
        """Send one command line; return the words after OK, or raise QtestError naming it."""
        try:
            self._conn.sendall(line.encode() + b"\n")
        except OSError as exc:
            raise QtestError(f"qtest {line.split()[0]}: QEMU's qtest socket is gone ({exc}); did QEMU exit?") from exc
        while True:
            answer = self._read_line(line)
            if answer.startswith("IRQ "):
                self.irqs = [*self.irqs[-63:], answer]
                continue
            words = answer.split(" ")
            if words[0] == "OK":
                return words[1:]
            raise QtestError(f"qtest {line[:80]!r}: QEMU answered {answer!r}")

    def _read_line(self, sent: str) -> str:
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QtestError(f"qtest {sent[:80]!r}: no answer within {self.timeout:g} s (QEMU hung?)")
            self._conn.settimeout(remaining)
            try:
                chunk = self._conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise QtestError(f"qtest {sent[:80]!r}: QEMU closed the qtest socket (did it exit?)")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def _value(self, line: str) -> int:
        words = self.command(line)
        if not words:
            raise QtestError(f"qtest {line!r}: OK without a value")
        return int(words[0], 0)

    # --- memory --------------------------------------------------------------------------------
    def readl(self, addr: int) -> int:
        return self._value(f"readl 0x{addr:x}")

    def readq(self, addr: int) -> int:
        return self._value(f"readq 0x{addr:x}")

    def writel(self, addr: int, value: int) -> None:
        self.command(f"writel 0x{addr:x} 0x{value:x}")

    def writeq(self, addr: int, value: int) -> None:
        self.command(f"writeq 0x{addr:x} 0x{value:x}")

    def memread(self, addr: int, size: int) -> bytes:
        """`size` bytes of guest memory at `addr` (b64read: one line whatever the size)."""
        words = self.command(f"b64read 0x{addr:x} 0x{size:x}")
        data = base64.b64decode(words[0]) if words else b""
        if len(data) != size:
            raise QtestError(f"qtest b64read 0x{addr:x} 0x{size:x}: got {len(data)} bytes")
        return data

    def memwrite(self, addr: int, data: bytes) -> None:
        if data:
            self.command(f"b64write 0x{addr:x} 0x{len(data):x} {base64.b64encode(data).decode()}")

    def memset(self, addr: int, size: int, pattern: int = 0) -> None:
        if size:
            self.command(f"memset 0x{addr:x} 0x{size:x} 0x{pattern:02x}")

    # --- port I/O ----------------------------------------------------------------------------
    def outl(self, port: int, value: int) -> None:
        self.command(f"outl 0x{port:x} 0x{value:x}")

    def inl(self, port: int) -> int:
        return self._value(f"inl 0x{port:x}")

    # --- the virtual clock -------------------------------------------------------------------
    def clock_step(self, ns: int | None = None) -> int:
        """Advance QEMU_CLOCK_VIRTUAL by `ns` (None: to its next deadline); the new time in ns."""
        return self._value("clock_step" if ns is None else f"clock_step {ns}")
