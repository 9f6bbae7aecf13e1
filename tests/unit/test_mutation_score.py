"""The generated-mutant program's pure parts: which lines a patch adds, and the score table."""
import re
import tempfile
import unittest
from pathlib import Path

from nvme_hotswap.config import ROOT
from nvme_hotswap.programs import mutation_score as ms

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
        text = ms.table([m("killed"), m("survived"), m("timeout"), m("stillborn"), m("equivalent")], {"0001": 40})
        self.assertIn("| 0001 | 40 | 5 | 1 | 1 | 3 | 1 | 1 | 1 | 33% |", text)
        self.assertIn("`hw/nvme/ctrl.c:5` `a();` -> `b();`: survived (why)", text)


if __name__ == "__main__":
    unittest.main()


class HandWrittenMutants(unittest.TestCase):
    def test_every_mutant_changes_only_lines_the_series_adds(self) -> None:
        """A mutant of QEMU's own code would test QEMU, not the series (seen: one aimed at
        x-blockdev-reconnect's check changed blockdev-del's identical line)."""
        added: dict[str, set[int]] = {}
        for patch in sorted((ROOT / "patches").glob("0*.patch")):
            for path, lines in ms.added_lines(patch).items():
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
