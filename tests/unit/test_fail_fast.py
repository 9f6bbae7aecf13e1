"""A wrong environment stops the run at once with one message naming the cause (issue 14's table).

Each row is a real process: /bin/true, python, a truncated executable, a stand-in that answers
`-version` and QMP like a QEMU of another target; the Makefile and pytest run as a user runs them.
No QEMU and no guest are needed.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from pathlib import Path
from unittest import mock

from nvme_hotswap import preflight
from nvme_hotswap.config import ROOT, ConfigError, RunConfig
from nvme_hotswap.vm import machine

FAKE_QEMU = """#!/bin/sh
# A stand-in that says it is QEMU {version!r} and answers QMP for target {arch!r}.
case "$*" in *-version*) echo "QEMU emulator version {version}"; exit 0 ;; esac
[ -n "{arch}" ] || {{ echo "qemu: no QMP today" >&2; exit 1; }}
echo '{{"QMP": {{"version": {{}}, "capabilities": []}}}}'
while read -r line; do
  case "$line" in
    *query-target*) echo '{{"return": {{"arch": "{arch}", "static": false}}}}' ;;
    *quit*) echo '{{"return": {{}}}}'; exit 0 ;;
    *) echo '{{"return": {{}}}}' ;;
  esac
done
"""


def sealed_guest(folder: Path) -> Path:
    """A guest folder as images/build-guest.sh leaves it: the files and their SHA256SUMS."""
    folder.mkdir(parents=True)
    for name, data in (("vmlinux", b"kernel"), ("initramfs.img", b"initramfs" * 1000)):
        (folder / name).write_bytes(data)
    (folder / preflight.MANIFEST).write_text("".join(
        f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in ("initramfs.img", "vmlinux")))
    (folder / "DONE").write_text("now\n")
    return folder


class FailFast(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="nvme-hotswap-failfast-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.guest = sealed_guest(self.tmp / "guest")
        self.env = {"PATH": os.environ["PATH"], "HOME": str(self.tmp), "GUEST_DIR": str(self.guest),
                    "RESULTS_DIR": str(self.tmp / "results"), "NVME_HOTSWAP_CACHE": str(self.tmp / "cache")}

    def cfg(self, **env: str) -> RunConfig:
        return RunConfig.from_env({**self.env, **env})

    def fake_qemu(self, version: str = "10.2.2", arch: str = "x86_64") -> str:
        path = self.tmp / "fake-qemu"
        path.write_text(FAKE_QEMU.format(version=version, arch=arch))
        path.chmod(0o755)
        return str(path)

    def assert_stops(self, pattern: str, **env: str) -> None:
        with self.assertRaisesRegex(ConfigError, pattern):
            preflight.run(self.cfg(**env))

    # --- QEMU ------------------------------------------------------------------------------
    def test_bin_true_is_not_qemu(self) -> None:
        self.assert_stops(r"QEMU=/bin/true .*is not QEMU: `-version` exited 0 and printed nothing; point QEMU at "
                          r"a qemu-system-x86_64", QEMU="/bin/true")

    def test_python_is_not_qemu(self) -> None:
        self.assert_stops(r"is not QEMU: `-version` exited 2", QEMU=sys.executable)

    def test_missing_qemu(self) -> None:
        self.assert_stops(r"QEMU=/nonexistent/qemu is not an executable file", QEMU="/nonexistent/qemu")

    def test_truncated_qemu(self) -> None:
        """A build cut short: the file is there and executable, the kernel cannot run it."""
        broken = self.tmp / "qemu-system-x86_64"
        broken.write_bytes(Path("/bin/true").read_bytes()[:4096])
        broken.chmod(0o755)
        self.assert_stops(r"QEMU=.*qemu-system-x86_64.*(cannot be run|is not QEMU)", QEMU=str(broken))

    def test_wrong_target(self) -> None:
        self.assert_stops(r"is built for aarch64, the guest is x86_64 \(GUEST_ARCH=x86_64\)",
                          QEMU=self.fake_qemu(arch="aarch64"))

    def test_no_qmp(self) -> None:
        self.assert_stops(r"does not answer QMP \(it exited 1: qemu: no QMP today\)", QEMU=self.fake_qemu(arch=""))

    def test_good_qemu_passes(self) -> None:
        found = preflight.run(self.cfg(QEMU=self.fake_qemu()))
        self.assertIn("QEMU: QEMU emulator version 10.2.2 (x86_64, answers QMP)", found)

    # --- the guest, the results, the accelerator -------------------------------------------
    def test_damaged_guest(self) -> None:
        with open(self.guest / "initramfs.img", "r+b") as f:
            f.truncate(100)
        self.assert_stops(r"the guest in .* is damaged: initramfs.img has changed; run "
                          r"`make guest`", QEMU=self.fake_qemu())

    def test_guest_file_missing(self) -> None:
        (self.guest / "initramfs.img").unlink()
        self.assert_stops(r"guest directory .* lacks initramfs.img", QEMU=self.fake_qemu())

    def test_results_not_writable(self) -> None:
        (self.tmp / "a-file").write_text("")
        self.assert_stops(r"results folder .*a-file/results is not writable \(Not a directory\)",
                          QEMU=self.fake_qemu(), RESULTS_DIR=str(self.tmp / "a-file" / "results"))

    def test_forced_kvm_that_cannot_run_guests(self) -> None:
        observed = "probe loop did not finish within 5 s under KVM (nested or emulated KVM)"
        with mock.patch.object(preflight.accel, "probe_kvm", return_value=(False, observed)):
            self.assert_stops(r"ACCEL=kvm, but KVM cannot run a guest here: probe loop did not finish .*use "
                              r"ACCEL=auto", QEMU=self.fake_qemu(), ACCEL="kvm")

    # --- as a user runs it ------------------------------------------------------------------
    def run_cmd(self, cmd: list[str], **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **self.env, **env}, capture_output=True, text=True,
                              timeout=120)
        return proc, time.monotonic() - start

    def assert_nothing_written(self) -> None:
        results = self.tmp / "results"
        self.assertEqual(sorted(p.name for p in results.iterdir()) if results.exists() else [], [],
                         "a failed preflight must leave no results folder of a run")

    def test_module_exits_2_with_one_line(self) -> None:
        proc, seconds = self.run_cmd([sys.executable, "-m", "nvme_hotswap.preflight"], QEMU="/bin/true")
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)
        self.assertRegex(proc.stderr, r"^preflight: QEMU=/bin/true .*is not QEMU")
        self.assertLess(seconds, 10)
        self.assert_nothing_written()

    def test_make_stops_before_pytest(self) -> None:
        """The check-acceptance recipe: a failed preflight is the last step and its line the last
        but make's own; pytest never starts and no evidence is written."""
        proc, seconds = self.run_cmd(["make", "--no-print-directory", "check-acceptance"], QEMU="/bin/true")
        self.assertNotEqual(proc.returncode, 0)
        last = proc.stderr.strip().splitlines()
        self.assertRegex(last[-2], r"^preflight: QEMU=/bin/true .*is not QEMU")
        self.assertIn("Error 2", last[-1])
        self.assertNotIn("test session starts", proc.stdout)
        self.assertNotIn("EVIDENCE", proc.stdout + proc.stderr)
        self.assertLess(seconds, 10)
        self.assert_nothing_written()

    def test_make_stops_at_a_failed_build_step(self) -> None:
        proc, _ = self.run_cmd(["make", "--no-print-directory", "check-acceptance"], GUEST_ARCH="riscv64",
                               GUEST_DIR="")
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(proc.stderr.strip().splitlines()[-2], r"GUEST_ARCH must be x86_64 or aarch64 \(got riscv64\)")
        self.assertNotIn("test session starts", proc.stdout)
        self.assert_nothing_written()

    def test_marker_typo_on_xdist(self) -> None:
        """pytest's own message, not xdist's INTERNALERROR traceback."""
        proc, _ = self.run_cmd([sys.executable, "-m", "pytest", "-n", "2", "-m", "nosuchmarker", "-p",
                                "no:cacheprovider", "tests/unit/test_arch.py"])
        self.assertEqual(proc.returncode, 4, proc.stdout + proc.stderr)
        self.assertIn("Unknown marker(s) in '-m' expression: nosuchmarker", proc.stderr)
        self.assertNotIn("INTERNALERROR", proc.stdout + proc.stderr)

    def test_qemu_that_exits_is_reported_at_once(self) -> None:
        """The bound is the property: launch() waits up to 30 s for QMP; a QEMU that is already gone
        must be named now, with its exit status."""
        vm = machine.QemuMachine(Path("/bin/true"), [], self.tmp / "vm")
        start = time.monotonic()
        with self.assertRaisesRegex(machine.QemuExited, r"QEMU exited before answering QMP \(exit 0\)"):
            vm.launch(timeout=30)
        self.assertLess(time.monotonic() - start, 5)
        self.assertNotIn(vm.proc.pid if vm.proc else -1, machine.LIVE)


class CacheEntries(unittest.TestCase):
    """scripts/lib.sh: an entry records the sha256 of its products; damage is named and undone."""

    def bash(self, script: str, folder: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", f". {ROOT}/scripts/lib.sh\n" + textwrap.dedent(script), "build-x",
                               str(folder)], capture_output=True, text=True, timeout=30)

    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="nvme-hotswap-cache-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.entry = self.tmp / "entry"
        (self.entry / "build").mkdir(parents=True)
        (self.entry / "build" / "qemu").write_bytes(b"\x7fELF" + b"x" * 4096)
        (self.entry / "manifest.json").write_text("{}")
        sealed = self.bash('cache_seal "$1"; date > "$1/DONE"', self.entry)
        self.assertEqual(sealed.returncode, 0, sealed.stderr)

    def intact(self) -> subprocess.CompletedProcess[str]:
        return self.bash('cache_intact "$1" && echo intact', self.entry)

    def test_a_sealed_entry_is_intact(self) -> None:
        self.assertEqual(self.intact().stdout.strip(), "intact")
        self.assertIn("build/qemu", (self.entry / "SHA256SUMS").read_text())

    def test_a_truncated_product_is_named_and_the_entry_undone(self) -> None:
        os.truncate(self.entry / "build" / "qemu", 10)
        out = self.intact()
        self.assertEqual(out.stdout, "")
        self.assertRegex(out.stderr, r"cache entry .*entry is damaged: build/qemu has changed; rebuilding")
        self.assertFalse((self.entry / "DONE").exists(), "a damaged entry must not look done")

    def test_a_missing_product_is_named(self) -> None:
        (self.entry / "manifest.json").unlink()
        self.assertRegex(self.intact().stderr, r"is damaged: manifest.json is missing; rebuilding")

    def test_an_entry_without_hashes_is_rebuilt(self) -> None:
        (self.entry / "SHA256SUMS").unlink()
        self.assertRegex(self.intact().stderr, r"is damaged: it records no sha256 of its products; rebuilding")

    def test_an_interrupted_build_says_so_and_leaves_nothing(self) -> None:
        (self.entry / "DONE").unlink()
        out = self.bash('cache_on_interrupt "$1"; kill -TERM $$; sleep 10', self.entry)
        self.assertEqual(out.returncode, 130)
        self.assertRegex(out.stderr, r"interrupted: the build of .*entry was stopped by a signal")
        self.assertNotIn("failed", out.stderr)
        self.assertFalse(self.entry.exists())


if __name__ == "__main__":
    unittest.main()
