"""Child processes of the programs: bounded, logged, and ended by PID on Ctrl-C, SIGTERM or the bound."""
from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType

from ..config import ROOT

CHILD_BOUND_S = 1800.0   # one build or one pytest run; a QEMU build is ~6 min cold, a run ~3 min

#: The children run_logged() is waiting on, from any thread: end_children() stops them by PID when the
#: main thread is interrupted while worker threads wait (make check-mutants runs mutants side by side).
_CHILDREN: set[subprocess.Popen[str]] = set()
_CHILDREN_LOCK = threading.Lock()


def end_children() -> None:
    """SIGTERM every child a run_logged() still waits on (pytest then ends its QEMUs by PID)."""
    with _CHILDREN_LOCK:
        children = list(_CHILDREN)
    for proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def sigterm_as_interrupt(*signums: signal.Signals) -> None:
    """SIGTERM (and `signums`) end the program as Ctrl-C does, so every `finally` ends its QEMU by PID."""
    for signum in (signal.SIGTERM, *signums):
        signal.signal(signum, _interrupt)


def run_logged(cmd: list[str], env: dict[str, str], log: Path, bound: float = CHILD_BOUND_S) -> tuple[int, str]:
    """Run `cmd` with stdout+stderr into `log`; return its exit status and last stdout line.

    Bounded by `bound` seconds (then exit status -1 and a line in the log). On Ctrl-C/SIGTERM or
    the bound, the child is ended by its PID (pytest then ends its QEMUs by PID)."""
    stdout, timed_out = "", False
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=out, text=True)
        with _CHILDREN_LOCK:
            _CHILDREN.add(proc)
        try:
            stdout, _ = proc.communicate(timeout=bound)
        except subprocess.TimeoutExpired:
            timed_out = True
            out.write(f"\n{' '.join(cmd)}: still running after {bound:g} s, ended by PID {proc.pid}\n")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=120)
            with _CHILDREN_LOCK:
                _CHILDREN.discard(proc)
        out.write(stdout or "")
    if timed_out:
        return -1, ""
    lines = stdout.strip().splitlines()
    return proc.returncode, lines[-1] if lines else ""
