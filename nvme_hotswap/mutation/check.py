"""Mutation check: the series scenarios must catch deliberately broken variants of our series.

For each patches/mutants/<name>.diff: build QEMU with the series plus that diff
(`MUTANT=<name> scripts/build-qemu.sh`, cached like any build), run the tests that need the series
against it (`-x`: the first failure is enough), the device-level tests first (seconds, no guest),
then the series' own qtests (built with the mutant: nvme-hotplug-test, QEMU's nvme tests, test-hmp),
then the guest-level scenarios if those killed nothing, and call the mutant killed when at least
one test failed or errored (a cancel/skip does not count); the row says which layer killed it.
Writes mutation.json and mutation.md into this run's results folder, each mutant's own run under
mutants/<name>/. Exits non-zero unless every mutant is killed, or when a mutant does not apply or
does not build.

The test that killed a mutant last time is recorded ($CACHE/mutation-killers.json). Mutants with a
record run that test alone first, JOBS of them side by side (one guest each, as the suite's
workers); a mutant it does not kill, and one without a record, then runs the whole selection, one
mutant at a time on JOBS xdist workers. Ctrl-C or SIGTERM ends every child by PID.

A control run comes first: the same scenarios on our QEMU build without the series must all
cancel with a "QEMU lacks ..." reason, none may run or fail (a test that needs the series but
lacks its `needs:` tag shows up here).

Verdicts are kept ($CACHE/mutation-check-verdicts.json) under suite_key: the build's cache key (source,
series, mutant, flags, device list), the guest's, and the suite's own files, Python pins and
firmware. A mutant (or the control) whose key has a kept verdict is not run again: its row says
"kept verdict". Any change to a test, the harness, the series, a mutant or the guest runs it again;
MUTATION_FRESH=1 runs everything again. Only a killed mutant and a control that behaved are kept.

    make check-mutants                                   # every mutant
    MUTANTS="no-aen-on-plug unplug-keeps-nsid" make check-mutants   # only these
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import time
from pathlib import Path
from typing import NotRequired, TypedDict

from ..config import ROOT, RunConfig
from ..programs.proc import end_children, run_logged, sigterm_as_interrupt
from ..report import junit, results
from .suite_key import KeptStore, suite_key

MUTANTS_DIR = ROOT / "patches" / "mutants"
SELECT = "needs_nvme_ns_hotplug or needs_drive_insert or needs_reconnect_qmp or needs_reconnect"
#: the files of the device-level tests (DeviceTest, tagged `device`), as pytest ids name them
DEVICE_FILES = ("tests/acceptance/test_nvme_contract.py", "tests/acceptance/test_reconnect_contract.py")


def description(diff: Path) -> str:
    """What the mutant breaks: its leading `# ` comment lines from `Breaks:` on (all of them if none)."""
    lines = []
    for line in diff.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    return text[text.index("Breaks:") + len("Breaks:"):].strip() if "Breaks:" in text else text


class JunitOutcome(TypedDict):
    tests_run: int
    failed: int
    first_failure: str


class Row(TypedDict):
    """One line of mutation.json / mutation.md: a mutant (or the control) and how it fared."""
    mutant: str
    breaks: str
    tests_run: int
    failed: int
    first_failure: str
    killed: bool
    build_seconds: int
    test_seconds: int
    build_cached: NotRequired[bool]
    qemu: NotRequired[str]
    error: NotRequired[str]
    cancelled: NotRequired[int]     # the control only
    kept: NotRequired[str]          # the suite_key whose kept verdict this row is
    killer: NotRequired[str | None]  # a kept verdict's killing test
    layer: NotRequired[str]          # what killed it: device (NVMe host over qtest), qtest (the series') or guest


def junit_outcome(path: Path) -> JunitOutcome:
    """Tests run, failed (failures + errors) and the first failing test of a pytest junit.xml."""
    ran = [c for c in junit.read(path) if c.outcome != "skipped"]
    failed = [c for c in ran if c.outcome in ("failed", "error")]
    first = f"{failed[0].short_name}: {failed[0].message[:160] or failed[0].outcome}" if failed else ""
    return {"tests_run": len(ran), "failed": len(failed), "first_failure": first}


def xdist() -> list[str]:
    """Scenarios side by side on JOBS workers, as check-acceptance runs them (default: CPUs, at most
    4); with -x the run stops at the first failure either way."""
    jobs = int(os.environ.get("JOBS") or min(os.cpu_count() or 1, 4))
    return ["-n", str(jobs)] if jobs > 1 else []


KILLERS = "mutation-killers.json"   # in the cache root: mutant -> the test that killed it last time
VERDICTS = "mutation-check-verdicts.json"   # in the cache root: suite_key -> a kept verdict


def node_id(case: junit.Case) -> str:
    """pytest's id of a junit case: tests/acceptance/test_x.py::Class::test_y."""
    module, _, cls = case.classname.rpartition(".")
    return f"{module.replace('.', '/')}.py::{cls}::{case.name}"


def build(row: Row, build_env: dict[str, str], folder: Path) -> str | None:
    """Build QEMU with `build_env` (MUTANT= or PATCHES=); the binary, or None with row["error"] set."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    rc, binary = run_logged(["bash", "scripts/build-qemu.sh"], {**child_env(), **build_env}, folder / "build.log")
    row["build_seconds"] = round(time.monotonic() - start)
    row["build_cached"] = "cached build" in (folder / "build.log").read_text()
    if rc != 0 or not Path(binary).is_file():
        row["error"] = f"{row['mutant']} does not apply or does not build (see {folder / 'build.log'})"
        return None
    row["qemu"] = binary
    return binary


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (results.RUN_DIR_ENV, "QEMU", "PYTEST_ADDOPTS")}


def run_tests(row: Row, binary: str, pytest_args: list[str], folder: Path, guest: str, first: str | None = None,
              selection: bool = True) -> Path | None:
    """Run the tests on `binary` in stages, each only if the one before killed nothing; return the
    last pytest stage's junit.xml (None if none ran; row["error"] set if pytest wrote none).

    `first`: a test to run alone (the one that killed this mutant last time, or "qtest:<name>");
    then, with `selection`, the device-level tests (seconds, no guest: they see what Linux ignores),
    the series' qtests the build carries (series_qtests), then the guest-level scenarios. Fills
    the row's test seconds, counts summed over the stages run, and row["layer"]: the stage whose
    tests killed it.
    """
    start = time.monotonic()
    test_env = {**child_env(), "QEMU": binary, "GUEST_DIR": guest}
    qtests = series_qtests(binary)
    stages: list[tuple[str, list[str], Path]] = []
    if first:
        stages.append(("first", [first], folder / "first"))
    if selection:
        stages.append(("device", ["tests/acceptance", *pytest_args, "-m", f"device and ({SELECT})"], folder / "device"))
        if qtests:
            stages.append(("qtest", qtests, folder / "qtest"))
        stages.append(("guest", ["tests/acceptance", *pytest_args, *xdist(), "-m", f"not device and ({SELECT})"],
                       folder))
    junit_xml: Path | None = None
    row["tests_run"] = row["failed"] = 0
    for stage, args, results_dir in stages:
        if stage == "qtest" or (stage == "first" and args[0].startswith(QTEST_KILLER)):
            failed = run_qtests(binary, qtests, results_dir, row)
            if failed:
                row["first_failure"], row["layer"] = failed, "qtest"
                break
            continue
        rc, _ = run_logged([sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider"],
                           {**test_env, "RESULTS_DIR": str(results_dir)}, folder / f"pytest-{stage}.log")
        junit_xml = results_dir / "latest" / "junit.xml"
        if not junit_xml.is_file():
            row["test_seconds"] = round(time.monotonic() - start)
            row["error"] = f"pytest (exit {rc}) wrote no {junit_xml}; see {folder / f'pytest-{stage}.log'}"
            return None
        outcome = junit_outcome(junit_xml)
        row["tests_run"] += outcome["tests_run"]
        row["failed"] += outcome["failed"]
        if outcome["failed"]:
            row["first_failure"] = outcome["first_failure"]
            row["layer"] = layer_of(first) if stage == "first" and first else stage
            break
    row["test_seconds"] = round(time.monotonic() - start)
    return junit_xml


QTEST_KILLER = "qtest:"   # a kept killer that is one of the series' qtests: "qtest:<name>"
QTEST_NAMES = ("nvme-hotplug-test", "qos-test", "test-hmp")
QTEST_BOUND_S = 900


def series_qtests(binary: str) -> list[str]:
    """The series' qtests a mutant's build carries (scripts/build-qemu.sh copies them beside the
    binary, built against it); none for a build without them (the control)."""
    folder = Path(binary).parent / "tests" / "qtest"
    return [q for q in QTEST_NAMES if (folder / q).is_file()]


def run_qtests(binary: str, names: list[str], folder: Path, row: Row) -> str:
    """The series' own qtests on a mutant (scripts/check-series.sh, PREBUILT: the binaries of its
    cache entry): "qtest:<name>: <its summary line>" of the first that failed, or "" if all
    passed.
    A qtest that hangs is ended by check-series.sh's timeout and counts as failed (exit 124), as a
    guest test that hangs does."""
    folder.mkdir(parents=True, exist_ok=True)
    rc, _ = run_logged(["bash", str(ROOT / "scripts" / "check-series.sh"), str(Path(binary).parent)],
                       {**child_env(), "PREBUILT": "1", "QTESTS": " ".join(names), "TARGET_BIN": Path(binary).name,
                        "RESULTS_DIR": str(folder)}, folder / "check-series.log", bound=QTEST_BOUND_S)
    text = (folder / "check-series.log").read_text(errors="replace")
    row["tests_run"] += len(names)
    if rc == 0:
        return ""
    lines = [ln.split("]", 1)[-1].strip() for ln in text.splitlines() if ln.startswith("[check-series.sh]")]
    bad = [ln for ln in lines if " FAIL " in ln and not ln.startswith("build")]
    row["failed"] += max(1, len(bad))
    first = bad[0] if bad else f"check-series.sh exit {rc} (log: {folder / 'check-series.log'})"
    name = next((q for q in names if first.startswith(q) or first.startswith(f"nvme-test ({q})")), names[0])
    return f"{QTEST_KILLER}{name}: {first[:160]}"


def layer_of(node: str) -> str:
    """The layer of a kept killer: `qtest` for one of the series' qtests, `device` for the
    device-level tests (by pytest id), else `guest`."""
    if node.startswith(QTEST_KILLER):
        return "qtest"
    return "device" if node.split("::")[0] in DEVICE_FILES else "guest"


class KeptVerdicts(KeptStore):
    """$CACHE/mutation-check-verdicts.json: suite_key -> the verdict (row fields and killer) of a
    killed mutant or a control that behaved."""

    FIELDS = ("tests_run", "failed", "first_failure", "killed", "cancelled", "layer")

    def recall(self, key: str, row: Row) -> bool:
        """Fill `row` from the verdict kept under `key` (row["killer"]: the test that killed it); False if none."""
        got = self.data.get(key)
        if not got:
            return False
        for f in (*self.FIELDS, "killer"):
            if f in got:
                row[f] = got[f]   # type: ignore[literal-required]
        row["kept"] = key
        return True

    def keep(self, key: str, row: Row, killer: str | None) -> None:
        if row["killed"]:
            self.put(key, {**{f: row[f] for f in self.FIELDS if f in row}, "killer": killer})   # type: ignore[literal-required]


def new_row(name: str, breaks: str) -> Row:
    return {"mutant": name, "breaks": breaks, "tests_run": 0, "failed": 0, "first_failure": "",
            "killed": False, "build_seconds": 0, "test_seconds": 0}


def check(name: str, diff: Path, folder: Path, guest: str, first: str | None, kept: KeptVerdicts,
          selection: bool = True) -> tuple[Row, str | None]:
    """A mutant is killed when at least one scenario failed or errored on it (-x: the first will do).
    `first` (the test that killed it last time) runs first, alone; `selection=False` stops there.
    A kept verdict under the same suite_key is taken instead of running anything.
    Returns the row and the test that killed it (None: not killed)."""
    row = new_row(name, description(diff))
    binary = build(row, {"MUTANT": name}, folder)
    if binary is None:
        return row, None
    key = suite_key(Path(binary).parent.parent.name, guest)
    if kept.recall(key, row):
        return row, row.get("killer")
    junit_xml = run_tests(row, binary, ["-x"], folder, guest, first, selection)
    if row.get("error"):
        return row, None
    row["killed"] = row["failed"] > 0
    if row.get("layer") == "qtest":
        killer: str | None = row["first_failure"].split(": ", 1)[0]
    else:
        failed = [c for c in junit.read(junit_xml) if c.outcome in ("failed", "error")] if junit_xml else []
        killer = node_id(failed[0]) if failed else None
    kept.keep(key, row, killer)
    return row, killer


def side_by_side() -> int:
    """Mutants whose killer is known run side by side, one guest each: JOBS of them (as the suite's
    workers; default CPUs, at most 4). The rest run one at a time on JOBS xdist workers."""
    return max(1, int(os.environ.get("JOBS") or min(os.cpu_count() or 1, 4)))


def check_unpatched(folder: Path, guest: str, kept: KeptVerdicts) -> Row:
    """The control: on QEMU without the series every selected scenario cancels with a reason."""
    row = new_row("(control) no series", "the whole series is absent: every scenario must cancel, none may run")
    binary = build(row, {"PATCHES": "none"}, folder)
    if binary is None:
        return row
    key = suite_key(Path(binary).parent.parent.name, guest)
    if kept.recall(key, row):
        return row
    junit_xml = run_tests(row, binary, [], folder, guest)
    if junit_xml is None:
        return row
    cases = [c for stage in (folder / "device", folder) if (stage / "latest" / "junit.xml").is_file()
             for c in junit.read(stage / "latest" / "junit.xml")]
    reasons = [c.message for c in cases if c.outcome == "skipped"]
    unexplained = [r for r in reasons if "QEMU lacks" not in r]
    row["cancelled"] = len(reasons)
    # "killed" reads as "the control behaved": nothing ran, everything cancelled with a reason.
    row["killed"] = bool(cases) and row["tests_run"] == 0 and not unexplained
    if not row["killed"]:
        row["first_failure"] = (row["first_failure"] or (unexplained[0] if unexplained else "")
                                or f"{row['tests_run']} scenarios ran without the series")
    kept.keep(key, row, None)
    return row


def table(rows: list[Row]) -> str:
    head = ["mutant", "what it breaks", "tests run", "failed", "first failing test", "killed", "by layer",
            "build s", "test s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        first = r.get("error") or r["first_failure"] or "-"
        build = f"{r['build_seconds']}{' (cached)' if r.get('build_cached') else ''}"
        tests = f"{r['test_seconds']}{' (kept verdict)' if r.get('kept') else ''}"
        cells = [r["mutant"], r["breaks"], r["tests_run"], r["failed"], first,
                 "yes" if r["killed"] else "**NO**", r.get("layer", "-"), build, tests]
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"


def main() -> int:
    sigterm_as_interrupt()
    wanted = os.environ.get("MUTANTS", "").split()
    diffs = sorted(MUTANTS_DIR.glob("*.diff"))
    if wanted:
        unknown = set(wanted) - {d.stem for d in diffs}
        if unknown:
            print(f"no such mutant: {', '.join(sorted(unknown))} (in {MUTANTS_DIR})", file=sys.stderr)
            return 2
        diffs = [d for d in diffs if d.stem in wanted]
    if not diffs:
        print(f"no mutants in {MUTANTS_DIR}", file=sys.stderr)
        return 2
    run = results.run_dir()
    cfg = RunConfig.from_env()
    guest = str(cfg.guest_dir)
    killers_file = cfg.cache_root / KILLERS
    try:
        killers: dict[str, str] = json.loads(killers_file.read_text()) if killers_file.is_file() else {}
    except ValueError:   # a damaged record only costs time: start afresh
        killers = {}
    kept = KeptVerdicts(cfg.cache_root / VERDICTS, fresh=os.environ.get("MUTATION_FRESH") == "1")
    rows: list[Row] = []
    if not wanted:
        print("control: the scenarios on QEMU without the series must all cancel ...", flush=True)
        rows.append(check_unpatched(run / "mutants" / "control-no-series", guest, kept))
        control = rows[-1]
        verdict = "as expected" if control["killed"] else "WRONG: " + (control.get("error") or control["first_failure"])
        print(f"control: {control.get('cancelled', 0)} cancelled, {control['tests_run']} ran ({verdict})"
              + (" [kept verdict: nothing it depends on changed]" if control.get("kept") else ""), flush=True)
    def report(name: str, row: Row, killer: str | None) -> None:
        if killer:
            killers[name] = killer
        else:
            killers.pop(name, None)
        killers_file.write_text(json.dumps(killers, indent=2, sort_keys=True) + "\n")
        verdict = row.get("error") or (f"killed ({row.get('layer', '?')} level) by " + str(row["first_failure"])
                                       if row["killed"]
                                       else f"SURVIVED {row['tests_run']} tests")
        if row.get("kept"):
            verdict += " [kept verdict: nothing it depends on changed]"
        print(f"mutant {name}: {verdict} (build {row['build_seconds']} s, tests {row['test_seconds']} s)",
              flush=True)

    # First the mutants with a known killer, side by side, each running that test alone; then, one at
    # a time, those it did not kill and those without a record, on the whole selection.
    verdicts: dict[str, Row] = {}
    known = [d for d in diffs if d.stem in killers]
    print(f"mutants: {len(known)} with a known killer, {side_by_side()} at a time; then "
          f"{len(diffs) - len(known)} without one, one at a time", flush=True)
    with concurrent.futures.ThreadPoolExecutor(side_by_side()) as pool:
        futures = {pool.submit(check, d.stem, d, run / "mutants" / d.stem / "known-killer", guest,
                               killers[d.stem], kept, False): d.stem for d in known}
        try:
            for future in concurrent.futures.as_completed(futures):
                name = futures[future]
                row, killer = future.result()
                if row["killed"]:
                    verdicts[name] = row
                    report(name, row, killer)
                else:
                    print(f"mutant {name}: its last killer did not kill it; the whole selection follows", flush=True)
        except KeyboardInterrupt:   # before the pool's exit, which waits for the threads' children
            for f in futures:
                f.cancel()
            end_children()
            raise
    for diff in diffs:
        if diff.stem in verdicts:
            continue
        print(f"mutant {diff.stem}: building and running the scenarios ...", flush=True)
        row, killer = check(diff.stem, diff, run / "mutants" / diff.stem, guest, None, kept)
        verdicts[diff.stem] = row
        report(diff.stem, row, killer)
    rows += [verdicts[d.stem] for d in diffs]
    (run / "mutation.json").write_text(json.dumps(rows, indent=2) + "\n")
    md = table(rows)
    (run / "mutation.md").write_text("# Mutation check\n\n" + md)
    print("\n" + md + f"\nresults: {run / 'mutation.md'} (also results/latest)")
    bad = [r["mutant"] for r in rows if not r["killed"]]
    if bad:
        print(f"mutation check FAILED: not killed: {', '.join(map(str, bad))}", file=sys.stderr)
        return 1
    also = "" if wanted else "the control cancelled and "
    print(f"mutation check passed: {also}all {len(diffs)} mutants were killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
