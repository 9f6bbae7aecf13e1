"""The generated-mutant program's pure parts: which lines a patch adds, and the score table."""
import re
import tempfile
import unittest
from pathlib import Path

from nvme_hotswap.config import ROOT
from nvme_hotswap.mutation import score as ms

PATCH = """diff --git a/hw/nvme/ctrl.c b/hw/nvme/ctrl.c
--- a/hw/nvme/ctrl.c
+++ b/hw/nvme/ctrl.c
@@ -10,3 +10,5 @@ static void f(void)
 {
-    old();
+    new();
+    more();
 }
diff --git a/docs/x.rst b/docs/x.rst
--- a/docs/x.rst
+++ b/docs/x.rst
@@ -1,1 +1,2 @@
+text
"""


class AddedLines(unittest.TestCase):
    def test_line_numbers_are_those_of_the_patched_file_and_c_files_only(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            patch = Path(tmp, "0001-x.patch")
            patch.write_text(PATCH)
            self.assertEqual(ms.added_lines(patch), {"hw/nvme/ctrl.c": [11, 12]})


class Table(unittest.TestCase):
    def test_score_counts_timeouts_as_judged_never_as_kills(self) -> None:
        def m(verdict: str) -> ms.Mutant:
            return ms.Mutant("0001", "hw/nvme/ctrl.c", 5, "a();", "b();", "", verdict, "why")
        text = ms.table([m("killed"), m("survived"), m("timeout"), m("stillborn"), m("equivalent"), m("duplicate")],
                        {"0001": 40})
        self.assertIn("| 0001 | 40 | 6 | 1 | 1 | 1 | 3 | 1 | 1 | 1 | 33% | 6-79% |", text)
        self.assertIn("`hw/nvme/ctrl.c:5` `a();` -> `b();`: survived (why)", text)

    def test_a_patch_tried_whole_has_no_interval(self) -> None:
        m = ms.Mutant("0002", "block/x.c", 1, "a();", "b();", "", "killed", "t")
        self.assertIn("| 100% | all tried |", ms.table([m], {"0002": 1}))

    def test_wilson_interval_holds_the_rate_and_narrows_with_the_sample(self) -> None:
        lo, hi = ms.wilson(36, 40)
        self.assertTrue(lo < 0.9 < hi)
        lo2, hi2 = ms.wilson(360, 400)
        self.assertTrue(lo < lo2 < 0.9 < hi2 < hi)


class Equivalents(unittest.TestCase):
    def test_a_line_without_four_fields_names_the_file_and_line(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            listing = Path(tmp, "eq.txt")
            listing.write_text("# comment\nhw/nvme/ctrl.c\tif (a) {\tif (!a) {\tbecause\nbroken line\n")
            with self.assertRaisesRegex(ValueError, r"eq.txt:3: want 4 tab-separated fields"):
                ms.read_equivalents(listing)
            listing.write_text("hw/nvme/ctrl.c\tif (a) {\tif (!a) {\tbecause\n")
            self.assertEqual(ms.read_equivalents(listing), {("hw/nvme/ctrl.c", "if (a) {", "if (!a) {"): "because"})

    def test_the_projects_list_parses(self) -> None:
        ms.read_equivalents()

    def test_a_listed_survivor_leaves_the_score_with_its_reason_a_listed_kill_stays_a_kill(self) -> None:
        eq = {("hw/nvme/ctrl.c", "if (a) {", "if (!a) {"): "cold plug only"}
        survivor = ms.Mutant("0001", "hw/nvme/ctrl.c", 5, "if (a) {", "if (!a) {", "", "survived", "14 tests passed")
        killed = ms.Mutant("0001", "hw/nvme/ctrl.c", 5, "if (a) {", "if (!a) {", "x", "killed", "qtest")
        other = ms.Mutant("0001", "hw/nvme/ctrl.c", 6, "b();", "", "y", "survived", "14 tests passed")
        ms.apply_equivalents([survivor, killed, other], eq)
        self.assertEqual((survivor.verdict, killed.verdict, other.verdict), ("equivalent", "killed", "survived"))
        self.assertIn("cold plug only", survivor.by)
        self.assertIn("Equivalent by reading", ms.table([survivor, killed, other], {"0001": 3}))


class Store(unittest.TestCase):
    def test_verdicts_survive_a_new_run_under_the_same_key_only_and_timeouts_are_never_kept(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "v.json")
            killed = ms.Mutant("0001", "hw/nvme/ctrl.c", 5, "a();", "", "text 1", "killed", "qtest x", "abc")
            hung = ms.Mutant("0001", "hw/nvme/ctrl.c", 6, "b();", "", "text 2", "timeout", "bound")
            store = ms.VerdictStore(path, "suite1")
            store.keep(killed)
            store.keep(hung)
            again = ms.Mutant("0001", "hw/nvme/ctrl.c", 5, "a();", "", "text 1")
            self.assertTrue(ms.VerdictStore(path, "suite1").recall(again))
            self.assertEqual((again.verdict, again.by, again.obj, again.kept), ("killed", "qtest x", "abc", True))
            self.assertFalse(ms.VerdictStore(path, "suite1").recall(ms.Mutant("0001", "hw/nvme/ctrl.c", 6, "b();", "",
                                                                             "text 2")))
            self.assertFalse(ms.VerdictStore(path, "suite2").recall(ms.Mutant("0001", "hw/nvme/ctrl.c", 5, "a();", "",
                                                                             "text 1")))
            self.assertFalse(ms.VerdictStore(path, "suite1", fresh=True).recall(again))


if __name__ == "__main__":
    unittest.main()


class HandWrittenMutants(unittest.TestCase):
    def test_every_mutant_changes_only_lines_the_series_adds(self) -> None:
        """A mutant of QEMU's own code would test QEMU, not the series (seen: one aimed at
        x-blockdev-reconnect's check changed blockdev-del's identical line)."""
        added: dict[str, set[int]] = {}
        for per_path in ms.series_added_lines(sorted((ROOT / "patches").glob("0*.patch"))).values():
            for path, lines in per_path.items():
                added.setdefault(path, set()).update(lines)
        for diff in sorted((ROOT / "patches" / "mutants").glob("*.diff")):
            path, line, outside = "", 0, []
            for text in diff.read_text().splitlines():
                if text.startswith("+++ "):
                    path = text.removeprefix("+++ b/")
                elif text.startswith("@@"):
                    line = int(re.match(r"@@ -(\d+)", text).group(1))  # type: ignore[union-attr]
                elif text.startswith("-") and not text.startswith("---"):
                    outside += [line] if line not in added.get(path, set()) else []
                    line += 1
                elif text.startswith(" "):
                    line += 1
            with self.subTest(mutant=diff.stem):
                self.assertEqual(outside, [], f"{diff.stem} changes {path} lines the series does not add")


class Describe(unittest.TestCase):
    def test_an_inserted_line_is_named_by_the_line_it_follows(self) -> None:
        before = ["for (;;) {", "    if (a) {", "        f();", "    }", "}"]
        after = before[:4] + ["    continue;"] + before[4:]
        m = ms.describe("0001", "x.c", before, after, 4, "")
        self.assertEqual((m.line, m.original, m.changed), (4, "after line 4: }", "insert: continue;"))

    def test_a_changed_and_a_deleted_line(self) -> None:
        before = ["a();", "b();", "c();"]
        m = ms.describe("0001", "x.c", before, ["a();", "x();", "c();"], 1, "")
        self.assertEqual((m.line, m.original, m.changed), (2, "b();", "x();"))
        m = ms.describe("0001", "x.c", before, ["a();", "c();"], 1, "")
        self.assertEqual((m.line, m.original, m.changed), (2, "b();", "(line deleted)"))


class NeverCompiles(unittest.TestCase):
    """Shapes of universalmutator's C mutants that cannot compile are dropped before a build."""

    FILE = ["static void f(int *a)", "{", "    int i;", "    for (i = 0; i < 3; i++) {", "        g(i);",
            "    }", "    h(a);", "}"]

    def verdict(self, original: str, changed: str, line: int = 7) -> str | None:
        return ms.never_compiles(ms.Mutant("0001", "x.c", line, original, changed, ""), self.FILE)

    def test_what_cannot_compile(self) -> None:
        cases = {("if (a || b) {", "(0==1) || b) {"): "unbalanced ()",
                 ("if (x) {", "/*if (x) {*/"): "unbalanced {}",
                 ("uint64_t perm;", "uint(64-1)_t perm;"): "a number changed inside an identifier",
                 ("uint32_t nsid = 1;", "uint0_t nsid = 1;"): "a number changed inside an identifier",
                 ("Error *err = NULL;", "Error %err = NULL;"): "a declarator's * turned into an operator",
                 ("Error **errp)", "Error *+errp)"): "a declarator's * turned into an operator",
                 ("f(a, &err);", "f(a, |err);"): "a binary operator where an operand starts",
                 ("int n = g();", "/*int n = g();*/"): "a declaration commented out",
                 ("if (a || b) {", "if (a (0==1) || b) {"): "an operand where an operator belongs"}
        for (original, changed), reason in cases.items():
            with self.subTest(changed=changed):
                self.assertEqual(self.verdict(original, changed), reason)

    def test_what_may_compile_is_left_to_the_compiler(self) -> None:
        for original, changed in (("if (a || b) {", "if (0==1) {"), ("h(a);", "/*h(a);*/"),
                                  ("if (!bs) {", "if (bs) {"), ("x = f(a, b);", "x = f ( b,a);"),
                                  ("i < 3", "i <= 3"), ("return (char *)p;", "return (char *)q;")):
            with self.subTest(changed=changed):
                self.assertIsNone(self.verdict(original, changed))

    def test_break_and_continue_only_inside_a_loop(self) -> None:
        self.assertIsNone(self.verdict("after line 5: g(i);", "insert: break;", line=5))
        self.assertIsNone(self.verdict("after line 5: g(i);", "insert: continue;", line=5))
        self.assertEqual(self.verdict("after line 7: h(a);", "insert: break;", line=7), "break; outside a loop")
        self.assertEqual(self.verdict("after line 3: int i;", "insert: continue;", line=3), "continue; outside a loop")

    def test_a_statement_is_not_a_declaration(self) -> None:
        self.assertIsNone(self.verdict("goto out;", "/*goto out;*/"))
        self.assertIsNone(self.verdict("return ret;", "/*return ret;*/"))


class CheckMutantsLayers(unittest.TestCase):
    """make check-mutants names the layer that killed a mutant, from its kept killer too."""

    def test_layer_of_a_kept_killer(self) -> None:
        from nvme_hotswap.mutation import check as mutation
        self.assertEqual(mutation.layer_of("qtest:nvme-hotplug-test"), "qtest")
        self.assertEqual(mutation.layer_of("tests/acceptance/test_reconnect_contract.py::ReconnectContract::test_x"),
                         "device")
        self.assertEqual(mutation.layer_of("tests/acceptance/test_drive_reconnect.py::DriveReconnect::test_x"), "guest")

    def test_device_files_are_the_device_tests(self) -> None:
        """Every file listed as device level exists and holds DeviceTest classes, and no other does."""
        from nvme_hotswap.mutation import check as mutation
        device = {str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "acceptance").glob("test_*.py")
                  if "(DeviceTest)" in p.read_text()}
        self.assertEqual(set(mutation.DEVICE_FILES), device)

    def test_series_qtests_are_what_the_build_carries(self) -> None:
        from nvme_hotswap.mutation import check as mutation
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "tests" / "qtest").mkdir(parents=True)
            binary = Path(tmp) / "qemu-system-x86_64"
            self.assertEqual(mutation.series_qtests(str(binary)), [])
            (Path(tmp) / "tests" / "qtest" / "test-hmp").write_text("")
            self.assertEqual(mutation.series_qtests(str(binary)), ["test-hmp"])


class NoResults(unittest.TestCase):
    def test_a_qemu_the_preflight_refuses_is_killed(self) -> None:
        log = ("Exit: preflight: QEMU=/x/qemu-system-x86_64 is not QEMU: `-version` was killed by SIGSEGV and "
               "printed nothing; point QEMU at a qemu-system-x86_64\n")
        verdict, by = ms.no_results_verdict(2, log)
        self.assertEqual(verdict, "killed")
        self.assertTrue(by.startswith("preflight: QEMU="))

    def test_anything_else_is_not_a_verdict(self) -> None:
        self.assertEqual(ms.no_results_verdict(4, "ERROR: file or directory not found: tests/x\n"),
                         ("timeout", "pytest exit 4 without results: ERROR: file or directory not found: tests/x"))


class SeriesLines(unittest.TestCase):
    """A patch's added lines, numbered in the tree with the whole series (where mutants are built)."""

    LATER = """--- a/f.c
+++ b/f.c
@@ -3,2 +3,4 @@ ctx
 three
+new1
+new2
 four
@@ -10,3 +12,2 @@ ctx
 ten
-eleven
 twelve
"""

    def test_lines_move_with_later_hunks(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            later = Path(tmp) / "0002.patch"
            later.write_text(self.LATER)
            self.assertEqual([ms.map_line(later, "f.c", n) for n in (1, 3, 4, 5, 9, 10, 11, 12, 20)],
                             [1, 3, 6, 7, 11, 12, None, 13, 21])
            self.assertEqual(ms.map_line(later, "other.c", 5), 5)

    def test_the_series_own_patches(self) -> None:
        """0001's lines of hw/nvme/ctrl.c, mapped through the later patches: in order, none lost
        but those a later patch rewrites, and those below a later patch's additions moved down."""
        patches = sorted((ROOT / "patches").glob("0*.patch"))
        own = ms.added_lines(patches[0])["hw/nvme/ctrl.c"]
        mapped = ms.series_added_lines(patches)["0001"]["hw/nvme/ctrl.c"]
        self.assertEqual(mapped, sorted(set(mapped)))
        self.assertLessEqual(len(mapped), len(own))
        self.assertGreaterEqual(mapped[-1], own[-1])
