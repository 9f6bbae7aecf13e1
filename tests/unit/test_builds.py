"""The build scripts' contracts that need no build: products side by side, the lean device list.

Each case is a real process of the script as the Makefile calls it; the builds it would start either
answer from the given variables or fail at their first check, so nothing is compiled or fetched.
"""
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from nvme_hotswap import arch
from nvme_hotswap.config import ROOT

DEVICES = ROOT / "scripts" / "qemu-devices"


class BuildProducts(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="nvme-hotswap-products-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.env = {"PATH": os.environ["PATH"], "HOME": str(self.tmp), "NVME_HOTSWAP_CACHE": str(self.tmp / "cache")}

    def run_script(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "scripts/build-products.sh"], cwd=ROOT, env={**self.env, **env},
                              capture_output=True, text=True, timeout=60)

    def test_given_products_are_printed_as_shell_assignments(self) -> None:
        """A path with a blank and a quote survives `eval` in the Makefile's recipe."""
        odd = str(self.tmp / "a guest's dir")
        proc = self.run_script(QEMU="/bin/true", GUEST_DIR=odd)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        out = subprocess.run(["bash", "-c", 'eval "$1"; printf "%s\\n" "$qemu" "$guest"', "-", proc.stdout],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        self.assertEqual(out.splitlines(), ["/bin/true", odd])

    def test_first_failing_build_ends_the_other_and_the_script(self) -> None:
        """GUEST_ARCH=riscv64: both builds refuse it; the script fails with status 1 and the builds'
        own message, within seconds, and leaves no build running."""
        start = time.monotonic()
        proc = self.run_script(GUEST_ARCH="riscv64")
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        self.assertLess(time.monotonic() - start, 20)
        self.assertEqual(proc.stdout, "")
        self.assertRegex(proc.stderr.strip().splitlines()[-1], r"GUEST_ARCH must be x86_64 or aarch64 \(got riscv64\)")
        self.assertEqual(self.processes_of_this_case(), [])

    def test_a_build_in_progress_is_ended_with_its_children(self) -> None:
        """The QEMU build fails (a stand-in python3 refuses to make its meson venv, after a second)
        while the guest build waits in `flock` for a lock this test holds: the guest build and its
        flock child must end with the script, not be left waiting for ever."""
        fake = self.tmp / "bin"
        fake.mkdir()
        (fake / "python3").write_text("#!/bin/sh\nsleep 1\necho 'python3: refused by the test' >&2\nexit 1\n")
        (fake / "python3").chmod(0o755)
        lock = self.tmp / "cache" / "guest" / ".lock"
        lock.parent.mkdir(parents=True)
        with open(lock, "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            proc = self.run_script(PATH=f"{fake}:{os.environ['PATH']}")
            self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
            time.sleep(0.5)   # a killed process is gone from /proc once reaped
            self.assertEqual(self.processes_of_this_case(), [])

    def processes_of_this_case(self) -> list[str]:
        """Processes whose environment names this case's cache: what the script would have left."""
        mark = f"NVME_HOTSWAP_CACHE={self.env['NVME_HOTSWAP_CACHE']}".encode()
        found = []
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and mark in (d / "environ").read_bytes().split(b"\0"):
                    found.append((d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
        return found


class LeanDevices(unittest.TestCase):
    def test_every_architecture_has_a_device_list_with_its_board(self) -> None:
        boards = {"x86_64": "CONFIG_Q35=y", "aarch64": "CONFIG_ARM_VIRT=y"}
        for name in arch.ARCHES:
            text = (DEVICES / f"{name}.mak").read_text()
            lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
            self.assertTrue(lines, name)
            for ln in lines:
                self.assertRegex(ln, r"^CONFIG_[A-Z0-9_]+=[yn]$", f"{name}.mak")
            # what the suite's topology needs, whatever else changes
            for needed in (boards[name], "CONFIG_PCIE_PORT=y", "CONFIG_NVME_PCI=y", "CONFIG_VIRTIO_NET=y"):
                self.assertIn(needed, lines, f"{name}.mak")

    def test_unknown_device_set_is_refused_by_name(self) -> None:
        proc = subprocess.run(["bash", "scripts/build-qemu.sh"], cwd=ROOT, capture_output=True,
                              text=True, timeout=30,
                              env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", "QEMU_DEVICES": "tiny"})
        self.assertEqual(proc.returncode, 1)
        self.assertIn("QEMU_DEVICES must be lean or default (got tiny)", proc.stderr)

    def test_device_list_is_part_of_the_cache_key(self) -> None:
        """The list's content goes into the key and the work tree's key (a changed list rebuilds)."""
        script = (ROOT / "scripts" / "build-qemu.sh").read_text()
        keys = re.findall(r"(?:base_key|key)=\$\( \{(.*?)\| sha256_of_stdin\)", script, re.S)
        self.assertEqual(len(keys), 2)
        for k in keys:
            self.assertIn('cat "$devices_file"', k)


class HostDeps(unittest.TestCase):
    def test_unknown_package_group_is_refused_before_apt(self) -> None:
        proc = subprocess.run(["bash", "scripts/install-host-deps.sh", "benhc"], cwd=ROOT, capture_output=True,
                              text=True, timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("unknown package group 'benhc' (there are: bench, ci-local)", proc.stderr)


if __name__ == "__main__":
    unittest.main()
