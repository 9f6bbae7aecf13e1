"""No QEMU, no monitor socket and no temporary file survive a run that is interrupted or times out;
two runs at once, and one run on two xdist workers, do not collide on ports, sockets or files; a QEMU
that dies or a VM that stops under a guest command fails the test at once, naming the cause."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from nvme_hotswap import config
from nvme_hotswap.wait import wait_until

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE = FIXTURES / "vm_left_running.py"
BRIEF_FIXTURE = FIXTURES / "vm_briefly.py"
WRONG_FIXTURE = FIXTURES / "vm_goes_wrong.py"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def as_from_a_terminal() -> None:
    """Popen preexec_fn: SIGINT back to its default in the child, as a shell in a terminal starts a
    foreground command. A runner started in the background by a non-interactive shell (nohup, a CI
    agent, `cmd &` in a script) inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt: the Ctrl-C case would test nothing (seen: 2 of 2 such runs timed out)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def child_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A child pytest's environment: this QEMU, results under `tmp`, and a private TMPDIR, so any
    temporary file the child leaves behind is seen."""
    (tmp / "tmpdir").mkdir(exist_ok=True)
    env = dict(os.environ, QEMU=str(config.current().qemu_binary), RESULTS_DIR=str(tmp / "results"),
               TMPDIR=str(tmp / "tmpdir"), **extra)
    for var in ("NVME_HOTSWAP_RUN_DIR", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT",
                "PYTEST_XDIST_TESTRUNUID"):
        env.pop(var, None)
    return env


class Hygiene(unittest.TestCase):
    """Child pytest runs: one starts a QEMU and hangs, and we interrupt it in each way a run can end
    early; others start QEMUs at the same time as each other.

    :avocado: tags=arch:x86_64,arch:aarch64,harness,hygiene
    """

    def run_child(self, extra_args: list[str], interrupt: signal.Signals | None) -> None:
        with tempfile.TemporaryDirectory(prefix="nvme-hotswap-hygiene-") as tmp:
            pid_file = Path(tmp, "pid")
            env = child_env(Path(tmp), HYGIENE_PID_FILE=str(pid_file))
            qemu_pid = sockdir = None
            child = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                      str(FIXTURE), *extra_args], env=env, cwd=config.ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     preexec_fn=as_from_a_terminal)
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
                try:
                    out, _ = child.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
                    out, _ = child.communicate()
                    self.fail(f"the child run did not end within 60 s of {interrupt or 'its timeout'}:\n"
                              f"{out.decode(errors='replace')[-3000:]}")
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
                survivor = qemu_pid is not None and pid_alive(int(qemu_pid))
                if survivor:   # this test fails below; its own VM must not outlive it
                    os.kill(int(qemu_pid), signal.SIGKILL)
                    shutil.rmtree(sockdir, ignore_errors=True)
            self.assertFalse(survivor,
                             f"QEMU pid {qemu_pid} survived the child run:\n{out.decode(errors='replace')}")
            self.assertFalse(os.path.exists(sockdir), f"monitor socket folder {sockdir} was left behind")
            self.assertEqual(os.listdir(Path(tmp, "tmpdir")), [], "temporary files left outside the results")

    def run_brief(self, tmp: Path, extra_args: list[str]) -> subprocess.Popen:
        (tmp / "reports").mkdir(exist_ok=True)
        return subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(BRIEF_FIXTURE),
                                 *extra_args], env=child_env(tmp, HYGIENE_REPORT_DIR=str(tmp / "reports")),
                                cwd=config.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def assert_no_collisions(self, tmp: Path, children: list[subprocess.Popen], vms: int, runs: int) -> None:
        """Every child passed; its `vms` VMs held distinct ports and socket folders; `runs` distinct
        run folders, each with its own junit.xml; nothing left in TMPDIR."""
        for child in children:
            out, _ = child.communicate(timeout=120)
            self.assertEqual(child.returncode, 0, out.decode(errors="replace"))
        held = [f.read_text().split() for f in (tmp / "reports").iterdir()]
        self.assertEqual(len(held), vms, held)
        ports, sockdirs, rundirs = zip(*held, strict=True)
        self.assertEqual(len(set(ports)), vms, f"two VMs got the same forwarded port: {ports}")
        self.assertEqual(len(set(sockdirs)), vms, f"two VMs shared a monitor socket folder: {sockdirs}")
        self.assertEqual(len(set(rundirs)), runs, f"run folders: {sorted(set(rundirs))}")
        for d in set(rundirs):
            self.assertTrue(Path(d, "junit.xml").is_file(), f"{d} has no junit.xml of its own")
        self.assertEqual(os.listdir(tmp / "tmpdir"), [], "temporary files left outside the results")

    def test_two_runs_at_once(self) -> None:
        with tempfile.TemporaryDirectory(prefix="nvme-hotswap-hygiene-") as tmp:
            children = [self.run_brief(Path(tmp), []) for _ in range(2)]
            self.assert_no_collisions(Path(tmp), children, vms=4, runs=2)

    def test_xdist_two_workers(self) -> None:
        """One run on two workers: both VMs at once, one run folder, one junit.xml."""
        with tempfile.TemporaryDirectory(prefix="nvme-hotswap-hygiene-") as tmp:
            self.assert_no_collisions(Path(tmp), [self.run_brief(Path(tmp), ["-n", "2"])], vms=2, runs=1)

    def run_gone_wrong(self, test: str) -> tuple[str, float, str]:
        """Run vm_goes_wrong.py's `test` in a child; return (exception type, seconds from the trouble
        to the failure, message) as the child reported them."""
        with tempfile.TemporaryDirectory(prefix="nvme-hotswap-hygiene-") as tmp:
            report = Path(tmp, "report")
            child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                    f"{WRONG_FIXTURE}::VmGoesWrong::{test}"],
                                   env=child_env(Path(tmp), HYGIENE_REPORT=str(report)), cwd=config.ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
            out = child.stdout.decode(errors="replace")
            self.assertEqual(child.returncode, 1, f"the child test should fail:\n{out[-3000:]}")
            self.assertTrue(report.is_file(), f"the guest command did not fail:\n{out[-3000:]}")
            head, _, message = report.read_text().partition("\n")
            kind, seconds = head.split()
            return kind, float(seconds), message

    def test_qemu_killed_under_a_guest_command(self) -> None:
        """SSH sees the connection drop; the failure names QEMU's death, not "exit -1"."""
        kind, seconds, message = self.run_gone_wrong("test_killed")
        self.assertEqual(kind, "QemuExited", message)
        self.assertRegex(message, r"QEMU pid \d+ is gone \(killed by SIGKILL")
        self.assertLess(seconds, 10, "the command should fail as QEMU dies, not at its timeout")

    def test_vm_stopped_under_a_guest_command(self) -> None:
        """A paused VM keeps the TCP connection open: only the health check ends the wait."""
        kind, seconds, message = self.run_gone_wrong("test_stopped")
        self.assertEqual(kind, "QemuStopped", message)
        self.assertRegex(message, r"the VM stopped on its own \(QMP event STOP, query-status: shutdown\)")
        self.assertLess(seconds, 10, "the command should fail as the VM stops, not at its 120 s timeout")

    def test_sigterm(self) -> None:
        self.run_child([], signal.SIGTERM)

    def test_ctrl_c(self) -> None:
        self.run_child([], signal.SIGINT)

    def test_timeout(self) -> None:
        self.run_child(["--timeout", "3"], None)
