"""No QEMU and no monitor socket survive a run that is interrupted or times out."""
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from nvme_hotswap import config
from nvme_hotswap.wait import wait_until

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "vm_left_running.py"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Hygiene(unittest.TestCase):
    """A child pytest starts a QEMU and hangs; we interrupt it in each way a run can end early.

    :avocado: tags=arch:x86_64,arch:aarch64,harness,hygiene
    """

    def run_child(self, extra_args: list[str], interrupt: signal.Signals | None) -> None:
        with tempfile.TemporaryDirectory(prefix="nvme-hotswap-hygiene-") as tmp:
            pid_file = Path(tmp, "pid")
            env = dict(os.environ, HYGIENE_PID_FILE=str(pid_file), QEMU=str(config.qemu_binary()),
                       RESULTS_DIR=str(Path(tmp, "results")))
            env.pop("NVME_HOTSWAP_RUN_DIR", None)
            child = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                      str(FIXTURE), *extra_args], env=env, cwd=config.ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                def started() -> bool:
                    if child.poll() is not None:
                        self.fail(f"the child run ended before starting QEMU:\n{child.stdout.read().decode()}")
                    return pid_file.exists() and bool(pid_file.read_text().strip())

                wait_until(started, 60, "the child run to start its QEMU")
                qemu_pid, sockdir = pid_file.read_text().split()
                self.assertTrue(pid_alive(int(qemu_pid)))
                if interrupt is not None:
                    time.sleep(0.5)
                    child.send_signal(interrupt)
                out, _ = child.communicate(timeout=60)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            self.assertFalse(pid_alive(int(qemu_pid)),
                             f"QEMU pid {qemu_pid} survived the child run:\n{out.decode(errors='replace')}")
            self.assertFalse(os.path.exists(sockdir), f"monitor socket folder {sockdir} was left behind")

    def test_sigterm(self) -> None:
        self.run_child([], signal.SIGTERM)

    def test_ctrl_c(self) -> None:
        self.run_child([], signal.SIGINT)

    def test_timeout(self) -> None:
        self.run_child(["--timeout", "3"], None)
