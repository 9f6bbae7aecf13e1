"""Pure helpers: the bench's one-patch edit, its table, virtme-ng's errors, and the per-run SSH key."""
import contextlib
import io
import json
import os
import stat
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from nvme_hotswap import config
from nvme_hotswap.guest import sshkey
from nvme_hotswap.longrun import bench, vng


class EditedSeries(unittest.TestCase):
    def test_one_comment_line_of_patch_0001_changes_and_nothing_else(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            series = bench.edited_series(Path(tmp))
            for original in sorted((config.ROOT / "patches").glob("*.patch")):
                before = original.read_text().splitlines()
                after = (series / original.name).read_text().splitlines()
                self.assertEqual(len(before), len(after), "hunk line counts must not change")
                changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
                if original.name.startswith("0001-"):
                    self.assertEqual(len(changed), 1, changed)
                    a, b = changed[0]
                    self.assertTrue(a.startswith("+ * ") and b.startswith(a) and "(bench " in b, changed)
                else:
                    self.assertEqual(changed, [])
            self.assertEqual((series / "series").read_text(), (config.ROOT / "patches" / "series").read_text())


class RunKey(unittest.TestCase):
    def test_key_is_private_and_handed_over_as_base64_only(self) -> None:
        key = sshkey.private_key_file()
        self.assertEqual(stat.S_IMODE(os.stat(key.parent).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        self.assertNotIn(config.current().results_root.resolve(), key.resolve().parents)
        kind, b64, comment = sshkey.public_key_line().split()
        self.assertEqual((kind, comment), ("ssh-ed25519", sshkey.COMMENT))
        self.assertEqual(sshkey.kernel_arg(), f"nvmehs.authorized_key={b64}")
        self.assertNotIn(" ", sshkey.kernel_arg())



class Table(unittest.TestCase):
    def test_a_missed_target_says_by_how_much(self) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            bench.print_table({"check_s": 412.5, "rebuild_mutant_s": 2.27, "rebuild_mutant_all_s": [2.2, 2.27, 2.4]})
        lines = {ln.split()[0]: ln for ln in out.getvalue().splitlines()}
        self.assertIn("NO", lines["check_s"])
        self.assertIn("misses by 112.50", lines["check_s"])
        self.assertIn("yes", lines["rebuild_mutant_s"])
        self.assertIn("min 2.20 max 2.40 over 3", lines["rebuild_mutant_s"])

    def test_vng_ratio_row_says_why_and_the_guest_uptime_beside_the_wall_time(self) -> None:
        out = io.StringIO()
        figures = {
            "boot_to_ssh_s": {"median": 2.3, "min": 2.2, "max": 2.9, "runs": 5, "accel": "tcg",
                              "guest_uptime_at_sshd_ready": {"median": 1.9, "min": 1.8, "max": 2.4, "runs": 5}},
            "vng_vs_suite_boot_ratio": 5.2, "vng_note": "kernel abc (bookworm), vng /usr/bin/qemu-system-x86_64, tcg"}
        with contextlib.redirect_stdout(out):
            bench.print_table(figures)
        lines = {ln.split()[0]: ln for ln in out.getvalue().splitlines()}
        self.assertIn("misses by 0.70", lines["boot_to_ssh_s"])
        self.assertIn("guest uptime at sshd ready 1.90", lines["boot_to_ssh_s"])
        self.assertIn("NO", lines["vng_vs_suite_boot_ratio"])
        self.assertIn("misses by 2.80", lines["vng_vs_suite_boot_ratio"])
        self.assertIn("kernel abc (bookworm)", lines["vng_vs_suite_boot_ratio"])


class Vng(unittest.TestCase):
    def test_a_missing_host_tool_is_named_with_its_package(self) -> None:
        with mock.patch.object(vng, "QEMU", Path("/nonexistent/qemu-system-x86_64")), \
                mock.patch.object(Path, "exists", lambda p: str(p) != "/nonexistent/qemu-system-x86_64"):
            why = vng.problem()
        self.assertEqual(why, "/nonexistent/qemu-system-x86_64 is missing (Debian package qemu-system-x86: "
                              "scripts/install-host-deps.sh bench)")

    def test_its_own_error_is_carried_with_its_last_lines(self) -> None:
        """vng's exit status and last lines reach the bench table (here a stand-in vng that fails)."""
        with tempfile.TemporaryDirectory() as tmp:
            fake = Path(tmp) / "bin"
            fake.mkdir()
            (fake / "vng").write_text("#!/bin/sh\necho 'mount: mounting /dev/root failed'\n"
                                      "echo 'Failed to mount real root.  We are stuck.'\nexit 255\n")
            (fake / "vng").chmod(0o755)
            with mock.patch.object(vng.sys, "executable", str(fake / "python")), \
                    self.assertRaisesRegex(vng.VngError, r"vng exited 255: mount: mounting /dev/root failed / "
                                                         r"Failed to mount real root\.  We are stuck\."):
                vng.boot_seconds(Path(tmp) / "vmlinuz", Path(tmp) / "vng.log")

    def test_a_guest_whose_kernel_package_is_gone_is_named(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            guest = Path(tmp) / "guest"
            guest.mkdir()
            (guest / "manifest.json").write_text(json.dumps({
                "kernel_release": "6.1.0-50-amd64", "packages": {"linux-image-6.1.0-50-amd64": "6.1.176-1"}}))
            cfg = config.RunConfig.from_env({"NVME_HOTSWAP_CACHE": str(Path(tmp) / "cache"), "PATH": "/usr/bin"})
            missing = (r"linux-image-6\.1\.0-50-amd64_6\.1\.176-1_amd64\.deb is missing: "
                       r"run images/build-guest\.sh with GUEST_KERNEL=bookworm")
            with self.assertRaisesRegex(vng.VngError, missing):
                vng.kernel_package(cfg, guest)


if __name__ == "__main__":
    unittest.main()
