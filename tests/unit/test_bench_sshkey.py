"""Pure helpers: the bench's one-patch edit, its table, and the per-run SSH key."""
import contextlib
import io
import os
import stat
import tempfile
import unittest
from pathlib import Path

from nvme_hotswap import config
from nvme_hotswap.guest import sshkey
from nvme_hotswap.programs import bench


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


if __name__ == "__main__":
    unittest.main()


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
