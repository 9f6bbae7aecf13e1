"""The nightly's comparison and report, on hand-made history lines (no guest)."""
import json
import tempfile
import unittest
from pathlib import Path

from nvme_hotswap.programs import nightly


def line(time: str, **cells: dict[str, tuple[str, float]]) -> dict:
    """A history line: cell -> {test: (outcome, seconds)}."""
    out = {"time": time, "qemu": {"source": "pinned Debian version", "version": "10.2.2"},
           "cells": {c: {"exit": 0, "tests": {n: {"outcome": o, "seconds": s} for n, (o, s) in tests.items()}}
                     for c, tests in cells.items()}}
    out["totals"] = nightly.totals(out)
    return out


BEFORE = line("t1", bookworm={"A.test_pass": ("passed", 5.0), "A.test_fail": ("failed", 3.0),
                              "A.test_skip": ("skipped", 0.0), "A.test_short": ("passed", 1.0),
                              "A.test_long": ("passed", 20.0)},
              trixie={"A.test_pass": ("passed", 5.0)})


class Compare(unittest.TestCase):
    def test_same_results_no_regression(self) -> None:
        diff = nightly.compare(BEFORE, BEFORE)
        self.assertEqual(diff, {"new_failures": [], "fixed": [], "slower": [], "missing": [],
                                "still_failing": ["bookworm/A.test_fail"], "cell_load": []})
        text, regression = nightly.report(BEFORE, BEFORE, diff)
        self.assertFalse(regression)
        self.assertIn("no regression", text)
        self.assertIn("still failing: bookworm/A.test_fail", text)

    def test_new_failure_fixed_and_absent(self) -> None:
        now = line("t2", bookworm={"A.test_pass": ("failed", 5.0), "A.test_fail": ("passed", 3.0),
                                   "A.test_skip": ("error", 0.0), "A.test_new": ("failed", 1.0)},
                   trixie={"A.test_pass": ("passed", 5.0)})
        diff = nightly.compare(BEFORE, now)
        self.assertEqual(diff["new_failures"], ["bookworm/A.test_new", "bookworm/A.test_pass", "bookworm/A.test_skip"])
        self.assertEqual(diff["fixed"], ["bookworm/A.test_fail"])
        text, regression = nightly.report(BEFORE, now, diff)
        self.assertTrue(regression)
        self.assertIn("new failure: bookworm/A.test_pass", text)
        self.assertIn("REGRESSION: 3 new failures, 0 slower", text)

    def test_a_test_that_stopped_running_is_missing_and_a_regression(self) -> None:
        now = line("t2", bookworm={"A.test_pass": ("passed", 5.0), "A.test_fail": ("failed", 3.0),
                                   "A.test_skip": ("skipped", 0.0), "A.test_long": ("passed", 20.0)},
                   trixie={"A.test_pass": ("passed", 5.0)})
        diff = nightly.compare(BEFORE, now)
        self.assertEqual(diff["missing"], ["bookworm/A.test_short"])
        text, regression = nightly.report(BEFORE, now, diff)
        self.assertTrue(regression)
        self.assertIn("- missing: bookworm/A.test_short", text)
        self.assertIn("REGRESSION: 0 new failures, 0 slower, 1 missing", text)

    def test_missing_needs_the_same_selection_and_a_cell_that_ran(self) -> None:
        now = line("t2", bookworm={"A.test_pass": ("passed", 5.0)})      # trixie not run now: not missing
        self.assertEqual(nightly.compare(BEFORE, now)["missing"], ["bookworm/A.test_fail", "bookworm/A.test_long",
                                                                   "bookworm/A.test_short", "bookworm/A.test_skip"])
        self.assertEqual(nightly.compare(BEFORE, {**now, "pytest_args": ["-k", "pass"]})["missing"], [])
        cut = line("t2", bookworm={"A.test_pass": ("passed", 5.0), "(pytest)": ("error", 0.0)})
        self.assertEqual(nightly.compare(BEFORE, cut)["missing"], [], "a cell cut short already fails")
        self.assertEqual(nightly.compare(BEFORE, cut)["new_failures"], ["bookworm/(pytest)"])

    def test_a_pytest_run_cut_short_is_named(self) -> None:
        self.assertIsNone(nightly.pytest_cut_short(0, 10))
        self.assertIsNone(nightly.pytest_cut_short(1, 10))
        self.assertIn("ended at its bound of 1800 s", nightly.pytest_cut_short(-1, 1800) or "")
        self.assertIn("pytest exited 2", nightly.pytest_cut_short(2, 10) or "")

    def test_same_test_other_cell_is_its_own(self) -> None:
        now = line("t2", trixie={"A.test_fail": ("failed", 3.0)})
        self.assertEqual(nightly.compare(BEFORE, now)["new_failures"], ["trixie/A.test_fail"])

    def test_slower_needs_ratio_and_seconds(self) -> None:
        now = line("t2", bookworm={"A.test_pass": ("passed", 10.5),   # x2.1 and +5.5 s: slower
                                   "A.test_short": ("passed", 4.0),   # x4 but +3 s: noise
                                   "A.test_long": ("passed", 28.0)},  # +8 s but x1.4: not slower
                   trixie={"A.test_pass": ("failed", 50.0)})           # a failure, not a slowdown
        diff = nightly.compare(BEFORE, now)
        self.assertEqual(diff["slower"], ["bookworm/A.test_pass (5 s -> 10.5 s)"])
        self.assertEqual(nightly.compare(BEFORE, now, ratio=1.3)["slower"],
                         ["bookworm/A.test_long (20 s -> 28 s)", "bookworm/A.test_pass (5 s -> 10.5 s)"])
        slower = line("t3", bookworm={"A.test_pass": ("passed", 10.5)})
        self.assertTrue(nightly.report(BEFORE, slower, nightly.compare(BEFORE, slower))[1])

    def test_a_cell_slower_as_a_whole_is_noted_and_its_outlier_still_caught(self) -> None:
        """A loaded machine doubles every test: no regression; one test 4x slower still is one."""
        old = {f"A.t{i}": ("passed", 10.0) for i in range(8)}
        doubled = {n: ("passed", 20.0) for n in old}
        diff = nightly.compare(line("t1", aarch64=old), line("t2", aarch64=doubled))
        self.assertEqual(diff["slower"], [])
        self.assertEqual(len(diff["cell_load"]), 1)
        self.assertIn("aarch64 ran 2.0x slower as a whole", diff["cell_load"][0])
        self.assertFalse(nightly.report(line("t1", aarch64=old), line("t2", aarch64=doubled), diff)[1])
        outlier = dict(doubled, **{"A.t0": ("passed", 40.0)})
        self.assertEqual(nightly.compare(line("t1", aarch64=old), line("t2", aarch64=outlier))["slower"],
                         ["aarch64/A.t0 (10 s -> 40 s)"])

    def test_first_run_exits_by_its_own_results(self) -> None:
        text, regression = nightly.report(None, BEFORE, None)
        self.assertIn("no previous run to compare with", text)
        self.assertTrue(regression)
        self.assertFalse(nightly.report(None, line("t", bookworm={"A.t": ("passed", 1.0)}), None)[1])

    def test_totals_count_errors_as_failed(self) -> None:
        self.assertEqual(line("t", k={"a": ("passed", 1), "b": ("error", 0), "c": ("skipped", 0)})["totals"],
                         {"passed": 1, "failed": 1, "skipped": 1, "known": 0})


class History(unittest.TestCase):
    def test_last_line_and_junit(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            history = Path(tmp, "h.jsonl")
            self.assertIsNone(nightly.last_line(history))
            history.write_text(json.dumps(BEFORE) + "\n" + json.dumps({"time": "t9", "cells": {}}) + "\n\n")
            self.assertEqual(nightly.last_line(history)["time"], "t9")
            junit = Path(tmp, "junit.xml")
            junit.write_text('<testsuites><testsuite><testcase classname="tests.acceptance.test_b.B" name="test_x" '
                             'time="4.56"/><testcase classname="tests.acceptance.test_b.B" name="test_y" time="1">'
                             '<failure message="boom"/></testcase><testcase classname="tests.acceptance.test_b.B" '
                             'name="test_z" time="0"><skipped/></testcase></testsuite></testsuites>')
            self.assertEqual(nightly.junit_tests(junit), {
                "B.test_x": {"outcome": "passed", "seconds": 4.6},
                "B.test_y": {"outcome": "failed", "seconds": 1.0},
                "B.test_z": {"outcome": "skipped", "seconds": 0.0}})

    def test_qemu_source(self) -> None:
        self.assertEqual(nightly.qemu_source({}), "pinned Debian version")
        self.assertEqual(nightly.qemu_source({"QEMU_DEB_VERSION": "1:10.1+ds-1"}), "QEMU_DEB_VERSION=1:10.1+ds-1")
        self.assertEqual(nightly.qemu_source({"QEMU_SRC": "/q", "QEMU_DEB_VERSION": "x", "MUTANT": "m"}),
                         "QEMU_SRC=/q, MUTANT=m")
        self.assertIn("given binaries", nightly.qemu_source({"QEMU": "/bin/q"}))



class CellsFile(unittest.TestCase):
    """One list of cells (.ci/cells.json) for make nightly and the CI pipeline."""

    def test_the_project_file_reads(self) -> None:
        cells, default = nightly.read_cells()
        self.assertIn("sid", cells)
        self.assertEqual(cells["sid"]["GUEST_KERNEL"], "sid")
        self.assertTrue(Path(cells["ns-only"]["PATCHES"]).is_absolute())
        self.assertTrue((Path(cells["ns-only"]["PATCHES"]) / "series").is_file())
        self.assertEqual(default.split()[0], "cloud", "the longest cell first")

    def test_a_default_without_its_cell_is_refused_by_name(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "cells.json"
            path.write_text(json.dumps({"default": ["a", "nosuch"], "cells": {"a": {"vars": {"GUEST": "fast"}}}}))
            with self.assertRaisesRegex(ValueError, r"cells\.json: the default names cells it does not define: nosuch"):
                nightly.read_cells(path)


if __name__ == "__main__":
    unittest.main()
