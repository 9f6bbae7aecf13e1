"""The fuzz's shrinking without QEMU: ddmin on pure predicates, the repeated-run predicate on fake runs."""
import random
import re
import tempfile
import unittest
from pathlib import Path

from nvme_hotswap.longrun import fuzz


def counting(predicate):  # type: ignore[no-untyped-def]
    """The predicate, recording every candidate it is asked about."""
    asked: list[list[object]] = []

    def ask(candidate: list[object]) -> bool:
        asked.append(list(candidate))
        return bool(predicate(candidate))
    return ask, asked


class DeltaDebugging(unittest.TestCase):
    def test_finds_the_two_needed_items_out_of_twenty(self) -> None:
        self.assertEqual(fuzz.ddmin(list(range(20)), lambda c: {3, 7} <= set(c)), [3, 7])

    def test_keeps_the_order_of_every_candidate_and_of_the_result(self) -> None:
        items = list("hgfedcba")
        ask, asked = counting(lambda c: "f" in c and "b" in c)
        self.assertEqual(fuzz.ddmin(items, ask), ["f", "b"])
        for candidate in asked:
            self.assertEqual(candidate, [x for x in items if x in candidate])

    def test_a_single_needed_item(self) -> None:
        self.assertEqual(fuzz.ddmin(list(range(30)), lambda c: 13 in c), [13])

    def test_nothing_needed_shrinks_to_nothing(self) -> None:
        self.assertEqual(fuzz.ddmin(list(range(9)), lambda c: True), [])

    def test_equal_items_at_different_positions_are_told_apart(self) -> None:
        items = ["drive_del drv0", "x", "drive_del drv0", "y"]
        self.assertEqual(fuzz.ddmin(items, lambda c: c.count("drive_del drv0") == 2), ["drive_del drv0"] * 2)

    def test_no_candidate_asked_twice_and_the_calls_stay_bounded(self) -> None:
        ask, asked = counting(lambda c: {3, 7} <= set(c))
        fuzz.ddmin(list(range(20)), ask)
        self.assertEqual(len(asked), len({tuple(c) for c in asked}))
        self.assertLessEqual(len(asked), 30)
        # every item needed: the worst case, still within Zeller's bound n^2 + 3n
        ask, asked = counting(lambda c: len(c) == 12)
        self.assertEqual(fuzz.ddmin(list(range(12)), ask), list(range(12)))
        self.assertLessEqual(len(asked), 12 * 12 + 3 * 12)

    def test_one_minimal_for_a_set_that_needs_one_of_two_pairs(self) -> None:
        result = fuzz.ddmin(list(range(16)), lambda c: {2, 5} <= set(c) or {9, 14} <= set(c))
        self.assertIn(result, ([2, 5], [9, 14]))


#: The real shrink of the blk_mq_unfreeze_queue WARNING (FUZZ_SEED=1795551730 FUZZ_ONLY=6, 6.1, FUZZ_SHRINK=250,
#: results/2026-12-02T155009Z): every candidate ddmin asked, as sequence.txt lines, '+' where it warned
#: within 5 runs. The budget ran out after the last one.
RECORDED = """1-15+; 1-8; 9-15; 1-4; 5-8; 9-12; 13-15; 5-15+; 5-8, 13-15; 5-12; 5-6; 7-8; 9-10; 11-12; 13-14; 15; 7-15;
5-6, 9-15+; 5-6, 11-15; 5-6, 9-10, 13-15; 5-6, 9-12, 15; 5-6, 9-14; 5; 6; 9; 10; 11; 12; 13; 14; 6, 9-15; 5, 9-15;
5-6, 10-15+; 6, 10-15; 5, 10-15; 5-6, 10, 12-15; 5-6, 10-11, 13-15+; 6, 10-11, 13-15; 5, 10-11, 13-15;
5-6, 11, 13-15; 5-6, 10, 13-15; 5-6, 10-11, 14-15+; 6, 10-11, 14-15; 5, 10-11, 14-15; 5-6, 11, 14-15;
5-6, 10, 14-15; 5-6, 10-11, 15; 5-6, 10-11, 14+; 6, 10-11, 14; 5, 10-11, 14; 5-6, 11, 14; 5-6, 10, 14+; 6, 10, 14;
5, 10, 14"""


def positions(lines: str) -> tuple[int, ...]:
    """'5-6, 10' (1-based lines) -> (4, 5, 9)."""
    out: list[int] = []
    for part in lines.split(", "):
        first, _, last = part.partition("-")
        out += range(int(first) - 1, int(last or first))
    return tuple(out)


class RecordedShrink(unittest.TestCase):
    def test_ddmin_on_the_recorded_verdicts_asks_the_same_candidates_and_ends_at_the_same_four(self) -> None:
        record = [(positions(c.strip().rstrip("+")), c.strip().endswith("+")) for c in RECORDED.split(";")]
        verdicts = dict(record)
        ask, asked = counting(lambda c: verdicts.get(tuple(c), False))   # unrecorded: the budget was spent
        self.assertEqual(fuzz.ddmin(list(range(30)), ask), [4, 5, 9, 13])
        self.assertEqual([tuple(c) for c in asked[:len(record)]], [p for p, _ in record])
        self.assertEqual(len(asked), len(record) + 2)    # the two left unrun: without line 10, without line 14


def outcome(warns: bool = False, failure: str | None = None) -> fuzz.Outcome:
    return fuzz.Outcome(failure=failure, warnings=["WARNING: CPU: 0 PID: 58 at block/blk-mq.c:227 "
                                                   "blk_mq_unfreeze_queue+0x4c/0x60"] if warns else [])


OPS = fuzz.generate(fuzz.sequence_seed(1795551730, 6), 30)
WARNS = re.compile("blk_mq_unfreeze_queue")


class Reproducing(unittest.TestCase):
    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp())

    def reproducer(self, answers: list[fuzz.Outcome], repeat: int = 5, budget: int = 100,
                   **kw: object) -> tuple[fuzz.Reproducer, list[list[fuzz.Op]]]:
        ran: list[list[fuzz.Op]] = []

        def run(ops: list[fuzz.Op], folder: Path) -> fuzz.Outcome:
            ran.append(ops)
            return answers.pop(0)
        return fuzz.Reproducer(OPS, run, fuzz.warned(WARNS), repeat, budget, self.folder,
                               report=lambda line: None, **kw), ran  # type: ignore[arg-type]

    def test_reproduces_at_the_first_run_that_shows_it(self) -> None:
        r, ran = self.reproducer([outcome(), outcome(warns=True), outcome(warns=True)])
        self.assertTrue(r([0, 4]))
        self.assertEqual(len(ran), 2)
        self.assertEqual(ran[0], [OPS[0], OPS[4]])
        self.assertEqual(r.trials[0]["runs"], ["no", "shows"])
        self.assertEqual(r.trials[0]["lines"], "1, 5")

    def test_does_not_reproduce_after_repeat_runs_without_it(self) -> None:
        r, ran = self.reproducer([outcome(), outcome(failure="QEMU exited with -6"), outcome()], repeat=3)
        self.assertFalse(r([1, 2, 3]))
        self.assertEqual(len(ran), 3)
        self.assertEqual(r.trials[0]["runs"], ["no", "failed: QEMU exited with -6", "no"])

    def test_the_budget_counts_runs_and_then_every_answer_is_no(self) -> None:
        r, ran = self.reproducer([outcome()] * 7, repeat=5, budget=7)
        self.assertFalse(r([1]))
        self.assertFalse(r([2]))
        self.assertFalse(r([3]))
        self.assertEqual((len(ran), r.runs, r.unrun), (7, 7, 1))
        self.assertIn("1 candidates left unrun", r.log())

    def test_the_failing_command_stays_last(self) -> None:
        r, ran = self.reproducer([outcome(warns=True)], suffix=[OPS[29]])
        r([3])
        self.assertEqual(ran[0], [OPS[3], OPS[29]])

    def test_shrink_failure_keeps_the_failing_command(self) -> None:
        def run(ops: list[fuzz.Op], folder: Path) -> fuzz.Outcome:
            return outcome(failure="QEMU exited" if OPS[9] in ops and ops[-1] == OPS[20] else None)
        shrunk, r = fuzz.shrink_failure(run, OPS, 20, self.folder, repeat=2, budget=200)
        self.assertEqual(shrunk, [OPS[9], OPS[20]])
        self.assertLessEqual(r.runs, 200)

    def test_shrink_warning_on_a_race_then_replays(self) -> None:
        """Warns two times in three when lines 5, 6, 10 and 11 are all there: ddmin finds them."""
        rng = random.Random(1)

        def run(ops: list[fuzz.Op], folder: Path) -> fuzz.Outcome:
            return outcome(warns=all(OPS[i] in ops for i in (4, 5, 9, 10)) and rng.random() < 0.65)
        result = fuzz.shrink_warning(run, OPS, WARNS, self.folder, repeat=5, budget=300, replays=20,
                                     report=lambda line: None)
        self.assertEqual(result["shrunk"], [OPS[i].monitor_line() for i in (4, 5, 9, 10)])
        self.assertEqual(result["replays"], 20)
        self.assertTrue(8 <= result["warned"] <= 20)
        self.assertEqual(fuzz.parse_sequence((self.folder / "shrunk.txt").read_text()), [OPS[i] for i in (4, 5, 9, 10)])
        self.assertIn("REPRODUCED", (self.folder / "shrink.txt").read_text())

    def test_no_warning_nothing_to_shrink(self) -> None:
        result = fuzz.shrink_warning(lambda ops, folder: outcome(), OPS, WARNS, self.folder, repeat=3, budget=50,
                                     replays=20, report=lambda line: None)
        self.assertEqual((result["reproduced"], result["runs"], result["replays"]), (False, 3, 0))

    def test_budget_zero_only_replays(self) -> None:
        result = fuzz.shrink_warning(lambda ops, folder: outcome(warns=True), OPS[:3], WARNS, self.folder, repeat=5,
                                     budget=0, replays=4, report=lambda line: None)
        self.assertEqual((result["runs"], result["warned"], result["replays"]), (0, 4, 4))
        self.assertEqual(len(result["shrunk"]), 3)


class ReplayFile(unittest.TestCase):
    def test_monitor_lines_read_back_into_the_same_ops(self) -> None:
        ops = [op for i in range(40) for op in fuzz.generate(fuzz.sequence_seed(11, i), 30)]
        text = "\n".join(op.monitor_line() for op in ops) + "\n\n"
        self.assertEqual(fuzz.parse_sequence(text), ops)

    def test_a_line_the_fuzz_never_prints_is_refused_with_the_line(self) -> None:
        with self.assertRaisesRegex(ValueError, "info qtree"):
            fuzz.parse_sequence("drive_del drv0\ninfo qtree\n")

    def test_spans_are_sequence_txt_line_numbers(self) -> None:
        self.assertEqual(fuzz.spans([0, 1, 2, 6, 8, 9]), "1-3, 7, 9-10")
        self.assertEqual(fuzz.spans([]), "none")


if __name__ == "__main__":
    unittest.main()
