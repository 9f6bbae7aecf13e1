"""The mutation check reuses a verdict only under a key of everything that decides it."""
import concurrent.futures
import shutil
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from nvme_hotswap.mutation import check as mutation
from nvme_hotswap.mutation import suite_key

KILLED: mutation.Row = {**mutation.new_row("m", "breaks it"), "tests_run": 1, "failed": 1,
                        "first_failure": "A.test_x: boom", "killed": True}


class KeptVerdicts(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="nvme-hotswap-kept-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.path = self.tmp / mutation.VERDICTS

    def test_a_killed_verdict_comes_back_under_its_key_only(self) -> None:
        mutation.KeptVerdicts(self.path).keep("k1", dict(KILLED), "tests/acceptance/a.py::A::test_x")
        row = mutation.new_row("m", "breaks it")
        self.assertTrue(mutation.KeptVerdicts(self.path).recall("k1", row))
        self.assertEqual((row["killed"], row["first_failure"], row["kept"], row.get("killer")),
                         (True, "A.test_x: boom", "k1", "tests/acceptance/a.py::A::test_x"))
        self.assertFalse(mutation.KeptVerdicts(self.path).recall("k2", mutation.new_row("m", "")))
        self.assertFalse(mutation.KeptVerdicts(self.path, fresh=True).recall("k1", mutation.new_row("m", "")))

    def test_a_survivor_is_never_kept(self) -> None:
        kept = mutation.KeptVerdicts(self.path)
        kept.keep("k1", {**KILLED, "killed": False, "failed": 0}, None)
        self.assertFalse(mutation.KeptVerdicts(self.path).recall("k1", mutation.new_row("m", "")))

    def test_a_damaged_file_only_costs_time(self) -> None:
        self.path.write_text("{not json")
        self.assertFalse(mutation.KeptVerdicts(self.path).recall("k1", mutation.new_row("m", "")))

    def test_verdicts_kept_from_threads_at_once_are_all_kept(self) -> None:
        """check-mutants keeps verdicts from JOBS threads: none may be lost or crash the write."""
        kept = mutation.KeptVerdicts(self.path)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: kept.keep(f"k{i}", dict(KILLED), f"t{i}"), range(400)))
        again = mutation.KeptVerdicts(self.path)
        self.assertEqual(sorted(again.data), sorted(f"k{i}" for i in range(400)))

    def test_check_runs_no_test_for_a_kept_verdict(self) -> None:
        binary = self.tmp / "qemu" / "entrykey" / "build" / "qemu-system-x86_64"
        kept = mutation.KeptVerdicts(self.path)
        with mock.patch.object(mutation, "build", return_value=str(binary)), \
                mock.patch.object(mutation, "suite_key", return_value="k1"), \
                mock.patch.object(mutation, "run_tests") as run_tests:
            kept.keep("k1", dict(KILLED), "tests/acceptance/a.py::A::test_x")
            row, killer = mutation.check("m", mutation.MUTANTS_DIR / "no-aen-on-plug.diff", self.tmp, "guest",
                                         None, kept)
        run_tests.assert_not_called()
        self.assertTrue(row["killed"])
        self.assertEqual(killer, "tests/acceptance/a.py::A::test_x")
        self.assertIn("(kept verdict)", mutation.table([row]))


class SuiteKey(unittest.TestCase):
    def test_the_key_follows_the_build_the_guest_and_every_suite_file(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for rel in ("tests/acceptance/test_a.py", "nvme_hotswap/rig.py", "scripts/check-series.sh",
                        "conftest.py", "setup.cfg", "pyproject.toml"):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text("v1\n")
            with mock.patch.object(suite_key, "ROOT", root):
                base = suite_key.suite_key("build1", "/c/guest/g1")
                # the guest is named by its key (the folder name), not by where it lies
                self.assertEqual(base, suite_key.suite_key("build1", "/other/guest/g1"))
                self.assertNotEqual(base, suite_key.suite_key("build2", "/c/guest/g1"))
                self.assertNotEqual(base, suite_key.suite_key("build1", "/c/guest/g2"))
                for rel in ("tests/acceptance/test_a.py", "nvme_hotswap/rig.py", "setup.cfg"):
                    (root / rel).write_text("v2\n")
                    self.assertNotEqual(base, suite_key.suite_key("build1", "/c/guest/g1"), rel)
                    (root / rel).write_text("v1\n")
                self.assertEqual(base, suite_key.suite_key("build1", "/c/guest/g1"))
                with mock.patch.object(suite_key, "firmware_versions", return_value="qemu-system-data\t9"):
                    self.assertNotEqual(base, suite_key.suite_key("build1", "/c/guest/g1"))


if __name__ == "__main__":
    unittest.main()
