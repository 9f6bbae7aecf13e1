"""make review's pure parts on recorded mail: reading a series with b4, the trailer rule, the reply's form."""
import dataclasses
import email
import email.policy
import tempfile
import unittest
from pathlib import Path

from nvme_hotswap.config import ROOT
from nvme_hotswap.programs import review
from nvme_hotswap.report.junit import Case
from nvme_hotswap.review import reply, series
from nvme_hotswap.vm.capabilities import Capabilities

COVER = """From nobody Mon Sep 17 00:00:00 2001
From: A Developer <dev@example.org>
Date: Tue, 24 Nov 2026 16:00:00 +0000
Subject: [PATCH 0/8] NVMe namespace hotplug and drive reconnection
Message-Id: <cover.1@example.org>

This series adds namespace hotplug and drive_insert.

base-commit: 0123456789abcdef0123456789abcdef01234567
"""


def mbox_of_our_series(folder: Path) -> Path:
    """Our patches/ as a thread on the list: a cover, and each patch answering it with a Message-Id."""
    parts = [COVER]
    for n, p in enumerate(sorted((ROOT / "patches").glob("0*.patch")), 1):
        head, rest = p.read_text().split("\nSubject:", 1)
        parts.append(f"{head}\nMessage-Id: <patch.{n}@example.org>\nIn-Reply-To: <cover.1@example.org>\n"
                     f"References: <cover.1@example.org>\nSubject:{rest}")
    path = folder / "thread.mbox"
    path.write_text("\n".join(parts))
    return path


def caps(ns: bool, qmp: bool, hmp: bool) -> Capabilities:
    return Capabilities("q", "10.2.2", ns, "why", hmp, "why", qmp)


class ReadSeries(unittest.TestCase):
    def test_an_mbox_thread_gives_order_ids_cover_and_base(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            s = series.read(str(mbox_of_our_series(Path(tmp))), Path(tmp, "work"))
            self.assertEqual(s.total, 8)
            self.assertEqual(s.subject, "[PATCH 0/8] NVMe namespace hotplug and drive reconnection")
            self.assertEqual(s.cover_message_id, "<cover.1@example.org>")
            self.assertEqual(s.base_hint, "base-commit: 0123456789abcdef0123456789abcdef01234567")
            self.assertEqual([p.message_id for p in s.patches], [f"<patch.{n}@example.org>" for n in range(1, 9)])
            self.assertEqual(s.patches[0].subject, "hw/nvme: add namespace hotplug support")
            self.assertEqual(s.label(s.patches[1]), "2/8")
            quilt = s.quilt(Path(tmp, "q"), list(s.patches[:2]))
            self.assertEqual((quilt / "series").read_text().split(), ["0001.patch", "0002.patch"])
            self.assertIn("diff --git", (quilt / "0002.patch").read_text())

    def test_a_folder_of_format_patch_files_reads_as_the_same_series(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            s = series.read(str(ROOT / "patches"), Path(tmp))
            self.assertEqual([p.number for p in s.patches], [1, 2, 3, 4, 5, 6, 7, 8])
            self.assertEqual(s.cover_message_id, "")

    def test_what_cannot_be_read_is_named(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(series.SeriesError, "not a file, a folder, a git range"):
                series.read("no-such-thing", Path(tmp))
            with self.assertRaisesRegex(series.SeriesError, "set QEMU_SRC"):
                series.read("v11.0.0..HEAD", Path(tmp))
            Path(tmp, "empty").mkdir()
            with self.assertRaisesRegex(series.SeriesError, "holds no .patch files"):
                series.read(str(Path(tmp, "empty")), Path(tmp))

    def test_subject_prefix(self) -> None:
        self.assertEqual(series.strip_prefix("[PATCH v3 2/5] block: x"), ("block: x", 3, 2))
        self.assertEqual(series.strip_prefix("[RFC PATCH 1/1] hw/nvme: y"), ("hw/nvme: y", 1, 1))
        self.assertEqual(series.strip_prefix("no prefix"), ("no prefix", 1, None))


class Trailer(unittest.TestCase):
    def case(self, outcome: str, message: str = "") -> Case:
        return Case("tests.acceptance.test_x.X", "test_y", outcome, 1.0, message)

    def test_a_cancel_for_what_the_series_does_not_provide_does_not_block(self) -> None:
        ns_only = caps(True, False, False)
        cases = [self.case("passed"), self.case("skipped", ns_only.missing("drive_insert") or ""),
                 self.case("skipped", "needs the cloud guest")]
        self.assertTrue(review.earns_trailer(cases, ns_only))

    def test_a_failure_or_a_cancel_for_what_the_series_provides_blocks(self) -> None:
        full = caps(True, True, True)
        self.assertFalse(review.earns_trailer([self.case("passed"), self.case("failed", "boom")], full))
        lacking = caps(False, True, True).missing("nvme_ns_hotplug") or ""
        self.assertFalse(review.earns_trailer([self.case("passed"), self.case("skipped", lacking)], full))
        self.assertFalse(review.earns_trailer([self.case("skipped", "x")], full))

    def test_enables_names_only_what_is_new(self) -> None:
        self.assertEqual(review.enables(caps(False, False, False), caps(True, False, False)), "nvme-ns hotplug")
        self.assertEqual(review.enables(caps(True, False, False), caps(True, True, True)),
                         "QMP x-blockdev-reconnect, HMP drive_insert")
        self.assertEqual(review.enables(caps(True, True, True), caps(True, True, True)), "")


class Reply(unittest.TestCase):
    def review_of(self, failures: tuple[reply.Failure, ...]) -> reply.Review:
        patches = tuple(series.Patch(n, f"subject {n}", f"<p{n}@x>", Path(f"{n:04d}.patch")) for n in (1, 2))
        s = series.Series("x.mbox", "[PATCH v2 0/2] Both", 2, patches, "<cover@x>", "")
        steps = (reply.PatchStep(patches[0], "skipped", "the base already has it", "", ""),
                 reply.PatchStep(patches[1], "applied", "", "total: 0 errors, 0 warnings, 9 lines checked",
                                 "HMP drive_insert"))
        rows = (reply.Row("DriveReconnect.test_same_file", "cancelled: QEMU lacks drive_insert",
                          "passed: nvme2n1 kept, AER recovery 0.19 s " + "x" * 90),)
        return reply.Review(s, "Debian's qemu", ("Guest: Debian 13",), steps, rows, ("[ 1.0] nvme nvme2: ok",),
                            (), failures, "Tested-by: A Reviewer <r@example.org>", ("make review",), 600.0)

    def test_a_clean_review_offers_the_trailer_in_72_columns(self) -> None:
        text = reply.body(self.review_of(()))
        self.assertTrue(all(len(line) <= reply.WIDTH for line in text.splitlines()), text)
        self.assertIn("1/2 subject 1", text)
        self.assertIn("skipped; the base already has it", text)
        self.assertTrue(text.rstrip().endswith("Tested-by: A Reviewer <r@example.org>"))
        msg = email.message_from_bytes(bytes(reply.message(self.review_of(()), "A Reviewer <r@example.org>",
                                                           "cover text")), policy=email.policy.default)
        self.assertEqual(msg["Subject"], "Re: [PATCH v2 0/2] Both")
        self.assertEqual(msg["In-Reply-To"], "<cover@x>")
        body = msg.get_body().get_content()   # type: ignore[union-attr]
        self.assertTrue(body.startswith("> cover text"), "bottom-posted: the quote comes first")

    def test_a_failure_answers_the_first_bad_patch_without_the_trailer(self) -> None:
        r = self.review_of(())
        bad = reply.Failure("X.test_y", "AssertionError: names changed", r.series.patches[1], ("[ 2.0] boom",))
        r = self.review_of((bad,))
        text = reply.body(r)
        self.assertIn("Found a problem: X.test_y fails from 2/2 on:", text)
        self.assertIn("To reproduce:", text)
        self.assertNotIn("Tested-by", text)
        msg = email.message_from_bytes(bytes(reply.message(r, "R <r@x>", "patch")), policy=email.policy.default)
        self.assertEqual(msg["Subject"], "Re: [PATCH v2 2/2] subject 2")
        self.assertEqual(msg["In-Reply-To"], "<p2@x>")
        self.assertEqual(msg["References"], "<cover@x> <p2@x>")

    def test_the_series_functional_tests_are_reported_and_a_failure_withholds_the_trailer(self) -> None:
        ok = ("func-x86_64-nvme_hotplug ok   meson test --setup thorough func-x86_64-nvme_hotplug: "
              "2 subtests passed in 12 s",)
        text = reply.body(dataclasses.replace(self.review_of(()), functional=ok))
        self.assertIn("The series' own functional tests", text)
        self.assertIn("2 subtests passed in 12 s", text)
        self.assertTrue(text.rstrip().endswith("Tested-by: A Reviewer <r@example.org>"))
        text = reply.body(dataclasses.replace(self.review_of(()),
                                              functional=("func-x86_64-nvme_hotplug FAIL ERROR in 25 s (log: x.log)",)))
        self.assertNotIn("Tested-by", text)
        self.assertIn("To reproduce:", text)
        # could not be run here: shown, no verdict on the series
        for untested in ("not run: the work tree t could not be brought to the series: x",
                         "func-x86_64-nvme_hotplug FAIL OK, skipped: missing asset in 3 s (log: x.log)",
                         "functional FAIL QEMU's make check-venv failed (log: x.log)"):
            text = reply.body(dataclasses.replace(self.review_of(()), functional=(untested,)))
            self.assertIn(untested.split(" (log")[0], " ".join(text.split()))
            self.assertTrue(text.rstrip().endswith("Tested-by: A Reviewer <r@example.org>"), untested)

    def test_a_diff_of_a_functional_test_is_recognised(self) -> None:
        self.assertTrue(review.FUNCTIONAL_DIFF.search(
            "x\ndiff --git a/tests/functional/x86_64/test_nvme_hotplug.py "
            "b/tests/functional/x86_64/test_nvme_hotplug.py\n"))
        self.assertIsNone(review.FUNCTIONAL_DIFF.search(
            "diff --git a/tests/functional/qemu_test/asset.py b/tests/functional/qemu_test/asset.py\n"))
        self.assertTrue(review.FUNCTIONAL_DIFF.search((ROOT / "patches" / "0008-tests-functional-add-NVMe-namespace"
                                                       "-hotplug-and-driv.patch").read_text()))


if __name__ == "__main__":
    unittest.main()


TEST_Y = "tests/acceptance/test_x.py::X::test_y"


class Bisect(unittest.TestCase):
    def test_the_first_prefix_that_fails_is_found_with_few_runs(self) -> None:
        from unittest import mock
        prefixes = [review.Prefix([], Path(f"/q{k}")) for k in range(1, 6)]
        runs: list[str] = []

        def fake(cfg: object, binary: Path, guest: Path, folder: Path, tests: list[str] | None = None) -> list[Case]:
            runs.append(binary.name)
            bad = int(binary.name[1:]) >= 2     # from the second patch on
            return [Case("tests.acceptance.test_x.X", "test_y", "failed" if bad else "passed", 1.0, "")]

        with mock.patch.object(review, "run_suite", fake), tempfile.TemporaryDirectory() as tmp:
            self.assertEqual(review.bisect(mock.Mock(), prefixes, [TEST_Y], Path(tmp), Path(tmp)), {TEST_Y: 1})
        self.assertLessEqual(len(runs), 3)
        self.assertNotIn("q5", runs, "the whole series is known bad: not run again")

    def test_a_cancel_on_a_prefix_is_not_a_failure(self) -> None:
        from unittest import mock

        def fake(cfg: object, binary: Path, guest: Path, folder: Path, tests: list[str] | None = None) -> list[Case]:
            k = int(binary.name[1:])
            outcome = "skipped" if k < 3 else "failed"   # the capability arrives with patch 3
            return [Case("tests.acceptance.test_x.X", "test_y", outcome, 1.0, "QEMU lacks drive_insert")]

        prefixes = [review.Prefix([], Path(f"/q{k}")) for k in range(1, 6)]
        with mock.patch.object(review, "run_suite", fake), tempfile.TemporaryDirectory() as tmp:
            self.assertEqual(review.bisect(mock.Mock(), prefixes, [TEST_Y], Path(tmp), Path(tmp)), {TEST_Y: 2})

    def test_each_failing_test_is_bisected_on_its_own(self) -> None:
        """Measured on a foreign series: patch 1 broke namespace unplug, and a drive_insert test
        (which cancels before patch 2) failed too; judged together, both read "from 1/2 on"."""
        from unittest import mock
        unplug, insert = "tests/acceptance/test_x.py::X::test_unplug", "tests/acceptance/test_x.py::X::test_insert"
        runs: list[str] = []

        def fake(cfg: object, binary: Path, guest: Path, folder: Path, tests: list[str] | None = None) -> list[Case]:
            k = int(binary.name[1:])
            runs.append(binary.name)
            return [Case("tests.acceptance.test_x.X", "test_unplug", "failed", 1.0, "broken"),
                    Case("tests.acceptance.test_x.X", "test_insert", "skipped" if k < 2 else "failed", 1.0,
                         "QEMU lacks drive_insert" if k < 2 else "broken")]

        prefixes = [review.Prefix([], Path(f"/q{k}")) for k in range(1, 3)]
        with mock.patch.object(review, "run_suite", fake), tempfile.TemporaryDirectory() as tmp:
            got = review.bisect(mock.Mock(), prefixes, [unplug, insert], Path(tmp), Path(tmp))
        self.assertEqual(got, {unplug: 0, insert: 1})
        self.assertEqual(runs, ["q1"], "a prefix runs once for all the failing tests")


class InBase(unittest.TestCase):
    def test_a_patch_the_base_holds_reverse_applies_one_it_lacks_does_not(self) -> None:
        import subprocess
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp, "base")
            repo.mkdir()
            (repo / "f.c").write_text("int a;\n")

            def git(*args: str) -> str:
                return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@x", *args],
                                      check=True, capture_output=True, text=True).stdout
            git("init", "-q")
            git("add", "-A")
            git("commit", "-qm", "base")
            (repo / "f.c").write_text("int a;\nint b;\n")
            git("commit", "-qam", "add b")
            mail = Path(tmp, "0001.patch")
            mail.write_text(git("format-patch", "-1", "--stdout"))
            self.assertTrue(review.in_base(mail, repo), "the tree has the patch: it must be skipped")
            git("reset", "-q", "--hard", "HEAD~1")
            self.assertFalse(review.in_base(mail, repo), "the tree lacks the patch: it must be applied")


class BasePatches(unittest.TestCase):
    def test_the_base_patches_come_from_the_series_file_in_order(self) -> None:
        self.assertEqual(review.base_patches({"PATCHES": "none"}), [])
        got = review.base_patches({"PATCHES": str(ROOT / "patches" / "upstream-11.1")})
        self.assertEqual([p.name for p in got], ["0001-hw-nvme-add-namespace-hotplug-support.patch"])
        self.assertEqual([p.name for p in review.base_patches({"PATCHES": str(ROOT / "patches")})][:2],
                         ["0001-hw-nvme-add-namespace-hotplug-support.patch",
                          "0002-block-add-x-blockdev-reconnect-QMP-command.patch"])


class DeviceLevel(unittest.TestCase):
    def test_a_prefix_reads_as_counts_and_the_failing_names(self) -> None:
        cases = [Case("tests.acceptance.test_nvme_contract.NvmeContract", "test_a", "passed", 1.0, ""),
                 Case("tests.acceptance.test_nvme_contract.NvmeContract", "test_c", "failed", 1.0, "AEN sent"),
                 Case("tests.acceptance.test_nvme_contract.NvmeContract", "test_e", "skipped", 0.0, "QEMU lacks")]
        self.assertEqual(review.device_level(cases), "1 passed, 1 cancelled, 1 FAILED: test_c")
        self.assertEqual(review.device_level([]), "did not run")
