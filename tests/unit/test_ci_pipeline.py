"""The GitLab pipeline (.gitlab-ci.yml) against the one list of cells, the nightly's CI steps on
hand-made records, scripts/ci-job.sh's bound and QEMU sweep, and make ci-local's command line."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from itertools import product
from pathlib import Path

import yaml

from nvme_hotswap.config import ROOT
from nvme_hotswap.programs import ci_local, nightly

PIPELINE = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
CELLS_DATA = json.loads((ROOT / ".ci" / "cells.json").read_text())
CI_JOB = ROOT / "scripts" / "ci-job.sh"


def expand(job: dict) -> list[dict[str, str]]:
    """A job's `parallel: matrix:` as GitLab expands it: one dict of variables per job."""
    rows = []
    for entry in job["parallel"]["matrix"]:
        keys = list(entry)
        values = [v if isinstance(v, list) else [v] for v in entry.values()]
        rows += [dict(zip(keys, combo, strict=True)) for combo in product(*values)]
    return rows


def seconds(timeout: str) -> int:
    """GitLab's `timeout:` ("90m", "1h 30m", "45 minutes") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)\s*([hms])", timeout)
    assert parts, f"unreadable timeout {timeout!r}"
    return sum(int(n) * units[u] for n, u in parts)


def jobs() -> dict[str, dict]:
    return {name: job for name, job in PIPELINE.items()
            if isinstance(job, dict) and "script" in job and not name.startswith(".")}


class PipelineMatchesCells(unittest.TestCase):
    """The pipeline and make nightly read the same cells: .ci/cells.json."""

    def test_the_test_matrix_is_the_cells_file(self) -> None:
        cells = [row["CELL"] for row in expand(PIPELINE["cell"])]
        self.assertEqual(cells, CELLS_DATA["default"])
        self.assertEqual(sorted(cells), sorted(CELLS_DATA["cells"]), "a cell the pipeline never runs")

    def test_the_build_stage_builds_each_cells_qemu(self) -> None:
        built = {(row["GUEST_ARCH"], row.get("PATCHES", ""), row.get("QEMU_ORIGIN", ""))
                 for row in expand(PIPELINE["build-qemu"])}
        needed = {(c["vars"]["GUEST_ARCH"], c["vars"].get("PATCHES", ""), c["vars"].get("QEMU_ORIGIN", ""))
                  for c in CELLS_DATA["cells"].values()}
        self.assertEqual(built, needed)

    def test_the_build_stage_builds_each_cells_guest(self) -> None:
        built = {(row["GUEST_ARCH"], row["GUEST_KERNEL"], row["GUEST"]) for row in expand(PIPELINE["build-guest"])}
        needed = {(c["vars"]["GUEST_ARCH"], c["vars"]["GUEST_KERNEL"], c["vars"]["GUEST"])
                  for c in CELLS_DATA["cells"].values()}
        self.assertEqual(built, needed)

    def test_each_build_job_is_needed_by_a_cell_and_only_by_selected_ones(self) -> None:
        for kind, job in (("qemu", "build-qemu"), ("guest", "build-guest")):
            for row in expand(PIPELINE[job]):
                with self.subTest(job=job, row=row):
                    self.assertTrue(nightly.cells_needing(kind, row), "a build no cell needs")
        self.assertEqual(nightly.cells_needing("qemu", {"GUEST_ARCH": "x86_64", "PATCHES": "patches/ns-only"}),
                         ["ns-only"])
        self.assertEqual(nightly.cells_needing("qemu", {"GUEST_ARCH": "aarch64", "QEMU_ORIGIN": "upstream"}),
                         ["upstream-aarch64"])
        self.assertEqual(nightly.qemu_script({"QEMU_ORIGIN": "upstream"}), "scripts/fetch-upstream-qemu.sh")
        self.assertEqual(nightly.cells_needing("guest", {"GUEST_ARCH": "x86_64", "GUEST_KERNEL": "bookworm",
                                                         "GUEST": "cloud"}), ["cloud"])
        os.environ["NIGHTLY_CELLS"] = "sid"
        try:
            self.assertEqual(nightly.cells_needing("qemu", {"GUEST_ARCH": "aarch64"}), [])
            self.assertEqual(nightly.cells_needing("qemu", {"GUEST_ARCH": "x86_64"}), ["sid"])
        finally:
            del os.environ["NIGHTLY_CELLS"]


class Jobs(unittest.TestCase):
    def test_every_job_states_its_timeout_and_ci_job_sh_bounds_it_alike(self) -> None:
        for name, job in jobs().items():
            with self.subTest(job=name):
                self.assertIn("timeout", job)
                self.assertEqual(int(job["variables"]["JOB_TIMEOUT_S"]), seconds(job["timeout"]))
                self.assertLessEqual(seconds(job["timeout"]), 90 * 60, "over CI's 90 minutes on a 2-core runner")
                for line in job["script"]:
                    self.assertRegex(line, r"^bash scripts/ci-job\.sh make ", "a job runs one Makefile target")
        self.assertEqual(PIPELINE["stages"][0], "prepare")
        self.assertEqual(PIPELINE["venv"]["stage"], "prepare", "jobs side by side must not each make the venv")

    def test_the_makefile_has_every_target_a_job_runs(self) -> None:
        targets = set(re.findall(r"^([A-Za-z0-9_.-]+):", (ROOT / "Makefile").read_text(), re.M))
        for name, job in jobs().items():
            for line in job["script"]:
                target = [w for w in line.split()[3:] if not w.startswith("-") and "=" not in w][0]
                self.assertIn(target, targets, f"job {name}")

    def test_cells_keep_junit_twice_and_their_folder_whatever_happened(self) -> None:
        cell = PIPELINE["cell"]
        self.assertEqual(cell["artifacts"]["when"], "always")
        junit = cell["artifacts"]["reports"]["junit"]
        folder = cell["artifacts"]["paths"][0]
        self.assertTrue(junit.startswith(folder), "gitlab-ci-local ignores reports: junit.xml must be in paths")
        self.assertNotIn("allow_failure", cell, "a cell passes once recorded; make would turn any code into 2")

    def test_schedules_run_the_matrix_merge_requests_run_make_check(self) -> None:
        def sources(job: dict) -> set[str]:
            rules = job.get("rules") or PIPELINE[job["extends"]]["rules"]
            return {m for r in rules for m in re.findall(r'\$CI_PIPELINE_SOURCE == "(\w+)"', r["if"])}
        for name, job in jobs().items():
            with self.subTest(job=name):
                expected = {"merge_request_event"} if name == "check" else {"schedule", "web"}
                self.assertEqual(sources(job), expected)
        self.assertEqual(PIPELINE["check"]["script"], ["bash scripts/ci-job.sh make check"])
        self.assertTrue(all(r.get("when") == "always" for r in PIPELINE["compare"]["rules"]),
                        "compare must judge even when a cell failed")


def record(cell: str, pipeline: str, **tests: str) -> dict:
    return {"cell": cell, "pipeline": pipeline, "time": "t", "pytest_args": [], "qemu_source": "pinned",
            "qemu_version": "10.2.2", "exit": 0, "tests": {n: {"outcome": o, "seconds": 1.0} for n, o in tests.items()}}


class CiSteps(unittest.TestCase):
    """nightly.py's cell records and their merge into one history line."""

    def write(self, folder: Path, sub: str, data: dict) -> None:
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / nightly.CELL_RECORD).write_text(json.dumps(data))

    def test_identity_comes_from_the_record_and_other_pipelines_do_not_count(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            self.write(folder, "t: [trixie]", record("trixie", "7", **{"A.test": "passed"}))
            self.write(folder, "sid", record("sid", "6", **{"A.test": "failed"}))
            self.assertEqual(list(nightly.read_records(folder, "7")), ["trixie"])
            self.assertEqual(sorted(nightly.read_records(folder, None)), ["sid", "trixie"])

    def test_a_cell_without_a_record_is_a_failed_test_and_a_new_failure(self) -> None:
        records = {"trixie": record("trixie", "7", **{"A.test": "passed"})}
        line = nightly.merge(records, ["trixie", "sid"], "7")
        self.assertEqual(line["cells"]["sid"]["tests"][nightly.NO_RESULT]["outcome"], "error")
        self.assertEqual(line["qemu"], {"source": "pinned", "version": "10.2.2"})
        prev = nightly.merge({"trixie": record("trixie", "6", **{"A.test": "passed"}),
                              "sid": record("sid", "6", **{"A.test": "passed"})}, ["trixie", "sid"], "6")
        diff = nightly.compare(prev, line)
        self.assertEqual(diff["new_failures"], [f"sid/{nightly.NO_RESULT}"])

    def test_the_qemu_comes_from_a_cell_that_recorded_it_when_the_first_did_not(self) -> None:
        line = nightly.merge({"sid": record("sid", "7", **{"A.test": "passed"})}, ["trixie", "sid"], "7")
        self.assertEqual(line["qemu"], {"source": "pinned", "version": "10.2.2"})

    def test_judge_appends_and_speaks_as_make_nightly(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            history, out = Path(tmp) / "h.jsonl", Path(tmp) / "compare"
            good = nightly.merge({"sid": record("sid", "1", **{"A.test": "passed", "A.known": "failed"})},
                                 ["sid"], "1")
            self.assertEqual(nightly.judge(good, history, out), 1, "the first run exits by its own results")
            same = nightly.merge({"sid": record("sid", "2", **{"A.test": "passed", "A.known": "failed"})},
                                 ["sid"], "2")
            self.assertEqual(nightly.judge(same, history, out), 0, "a known failure is not a regression")
            bad = nightly.merge({"sid": record("sid", "3", **{"A.test": "failed", "A.known": "failed"})},
                                ["sid"], "3")
            self.assertEqual(nightly.judge(bad, history, out), 1)
            text = (out / "nightly.md").read_text()
            self.assertIn("- new failure: sid/A.test", text)
            self.assertIn("REGRESSION: 1 new failures, 0 slower", text)
            self.assertEqual(len(history.read_text().splitlines()), 3)

    def test_a_cell_outside_nightly_cells_is_not_run(self) -> None:
        saved, os.environ["NIGHTLY_CELLS"] = nightly.CI_DIR, "trixie"
        os.environ["GUEST_DIR"] = "/nonexistent"   # were it run after all, its preflight stops it at once
        with tempfile.TemporaryDirectory() as tmp:
            nightly.CI_DIR = Path(tmp)
            try:
                self.assertEqual(nightly.main_cell("sid"), 0)
            finally:
                nightly.CI_DIR = saved
                del os.environ["NIGHTLY_CELLS"], os.environ["GUEST_DIR"]
            self.assertEqual(list(Path(tmp).iterdir()), [], "a cell not selected records nothing")

    def test_an_unknown_cell_is_refused_by_name(self) -> None:
        self.assertEqual(nightly.main_cell("nosuch"), 2)


def run_ci_job(cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CI_JOB), *cmd], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "END_GRACE_S": "1", **env})


# A stand-in for QEMU: a process in a session of its own (as the harness starts QEMU) that leaves
# its PID note in NVME_HOTSWAP_PID_DIR; the job itself then exits and leaves it running.
LEAVE_A_QEMU = """
import os, subprocess, sys
token = "/tmp/nvme-hotswap-qmp-test/qmp.sock"
p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", token], start_new_session=True)
open(os.path.join(os.environ["NVME_HOTSWAP_PID_DIR"], str(p.pid)), "w").write(token + "\\n")
print(p.pid)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours would still answer; its state says it is gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


class CiJobWrapper(unittest.TestCase):
    def test_a_qemu_left_running_is_ended_by_its_pid(self) -> None:
        out = run_ci_job([sys.executable, "-c", LEAVE_A_QEMU], JOB_TIMEOUT_S="60")
        pid = int(out.stdout.split()[0])
        try:
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(f"ending QEMU pid {pid}", out.stderr)
            self.assertFalse(alive(pid))
        finally:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def test_the_bound_ends_the_command_and_says_so(self) -> None:
        start = time.monotonic()
        out = run_ci_job(["sleep", "50"], JOB_TIMEOUT_S="4")
        self.assertEqual(out.returncode, 124)
        self.assertIn("over its bound of 3 s (job timeout 4 s less 1 s to end)", out.stderr)
        self.assertLess(time.monotonic() - start, 30)

    def test_the_job_ends_when_make_ci_local_is_gone(self) -> None:
        # a process that ends in 2 s and is reaped by init, not by us (a zombie of ours keeps its PID)
        gone = subprocess.run(["bash", "-c", "sleep 2 >/dev/null & echo $!"], capture_output=True, text=True).stdout
        start = time.monotonic()
        out = run_ci_job(["sleep", "50"], JOB_TIMEOUT_S="60", CI_LOCAL_PID=gone.strip())
        self.assertEqual(out.returncode, 143, out.stderr)
        self.assertIn(f"make ci-local (pid {gone.strip()}) is gone", out.stderr)
        self.assertLess(time.monotonic() - start, 30)

    def test_no_bound_is_refused_at_once(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("JOB_TIMEOUT_S", "CI_JOB_TIMEOUT")}
        out = subprocess.run(["bash", str(CI_JOB), "true"], capture_output=True, text=True, env=env, timeout=10)
        self.assertEqual(out.returncode, 2)
        self.assertIn("no job bound: set JOB_TIMEOUT_S", out.stderr)


class CiLocalCommand(unittest.TestCase):
    def test_schedule_history_store_own_pid_and_passed_variables(self) -> None:
        os.environ["MUTANT"] = "no-aen-on-plug"
        try:
            cmd = ci_local.command(Path("/x/gitlab-ci-local"), "schedule", 2, Path("/s/h.jsonl"))
        finally:
            del os.environ["MUTANT"]
        variables = dict(cmd[i + 1].split("=", 1) for i, w in enumerate(cmd) if w == "--variable")
        self.assertEqual(variables["CI_PIPELINE_SOURCE"], "schedule")
        self.assertEqual(variables["NIGHTLY_HISTORY"], "/s/h.jsonl")
        self.assertEqual(variables["CI_LOCAL_PID"], str(os.getpid()))
        self.assertEqual(variables["MUTANT"], "no-aen-on-plug")
        self.assertEqual(variables["JOBS"], "1")
        self.assertEqual(cmd[cmd.index("--concurrency") + 1], "2")


if __name__ == "__main__":
    unittest.main()
