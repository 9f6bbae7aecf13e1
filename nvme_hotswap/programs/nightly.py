"""Nightly: build QEMU, run the guest matrix, append to a history file, compare with last night.

1. QEMU per guest architecture: $QEMU_X86_64 / $QEMU_AARCH64 (or $QEMU for x86_64) if given, else
   scripts/build-qemu.sh (cached), which reads QEMU_DEB_VERSION, QEMU_SRC, PATCHES and MUTANT from
   the environment; the nightly passes them through and records them.
   An upstream cell (QEMU_ORIGIN=upstream) runs upstream's own release instead: scripts/fetch-upstream-qemu.sh.
2. The acceptance suite once per cell in NIGHTLY_CELLS (default: .ci/cells.json's "default", "cloud
   bookworm-cloud bookworm trixie sid aarch64 upstream upstream-aarch64 ns-only": the cloud-style guest,
   Debian 12's cloud and generic kernels, Debian 13's and unstable's on x86_64, Debian 12 on arm64 virt,
   upstream's 11.1.3 release on both, and ns-only: patch 0001 with our fixes 0006 and 0007), each its
   own pytest run under <run>/<cell>/, selection from NIGHTLY_PYTEST_ARGS (else PYTEST_ARGS);
   NIGHTLY_MUTANTS=1 adds the mutation check under <run>/mutants/ (one "test" per mutant: killed = passed).
   NIGHTLY_MUTATION_SCORE=1 adds make mutation-score (MUTATION_SAMPLE as given; all by default) and
   records killed / judged per patch in the history line ("mutation_score"), as figures, not tests.
3. One JSON line per run appended to NIGHTLY_HISTORY (default results/nightly-history.jsonl).
4. The comparison with the previous line: new failures, fixed tests, tests slower by NIGHTLY_SLOWER
   (ratio, default 1.5) and at least NIGHTLY_SLOWER_MIN_S seconds (default 5). Printed and written
   to <run>/nightly.md; exit 1 on a new failure or a slowdown. The first run exits by its own results.

    make nightly                                      # .venv/bin/python -m nvme_hotswap.programs.nightly
    NIGHTLY_CELLS=bookworm NIGHTLY_PYTEST_ARGS="-k BootTopology" make nightly

The CI pipeline (.gitlab-ci.yml, docs/ci.md) splits the same work across jobs, one step each:
    make nightly-build WHAT=qemu|guest  # `nightly.py build <what>`: the product the job's variables name
                                    #   (GUEST_ARCH, PATCHES; GUEST_KERNEL, GUEST) if a selected cell needs it
    make nightly-cell CELL=<name>   # `nightly.py cell <name>`: step 2 for one cell, recorded in
                                    #   <NIGHTLY_CI_DIR>/cells/<name>/cell.json (exit 0 once recorded)
    make nightly-compare            # `nightly.py compare`: steps 3 and 4 over the recorded cells
"""
from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TypedDict

from .. import preflight
from ..config import ROOT, ConfigError, RunConfig
from ..report import junit, results
from .proc import run_logged, sigterm_as_interrupt

FAILED = ("failed", "error")

CELLS_FILE = ROOT / ".ci" / "cells.json"   # the one list of cells (the CI pipeline reads it too)


def read_cells(path: Path = CELLS_FILE) -> tuple[dict[str, dict[str, str]], str]:
    """The cells (name -> the variables that select its guest; PATCHES made absolute) and the
    default selection, from `path`."""
    data = json.loads(path.read_text())
    cells = {name: {k: str(ROOT / v) if k == "PATCHES" else v for k, v in cell["vars"].items()}
             for name, cell in data["cells"].items()}
    unknown = [c for c in data["default"] if c not in cells]
    if unknown:
        raise ValueError(f"{path}: the default names cells it does not define: {' '.join(unknown)}")
    return cells, " ".join(data["default"])


# A cell: the variables that select its guest (the rest of the environment is shared).
CELLS, DEFAULT_CELLS = read_cells()


class Result(TypedDict):
    """One test of a cell as a history line records it."""
    outcome: str        # passed, failed, error, skipped
    seconds: float


def junit_tests(path: Path) -> dict[str, Result]:
    """Per test of a pytest junit.xml ("Class.test_name"): outcome and seconds."""
    return {c.short_name: {"outcome": c.outcome, "seconds": round(c.seconds, 1)} for c in junit.read(path)}


def qemu_source(env: dict[str, str]) -> str:
    """Which QEMU this nightly tests, as the variables that chose it."""
    given = [f"{k}={env[k]}" for k in ("QEMU", "QEMU_X86_64", "QEMU_AARCH64") if env.get(k)]
    if given:
        return f"{', '.join(given)} (given binaries)"
    parts = [f"QEMU_SRC={env['QEMU_SRC']}" if env.get("QEMU_SRC") else
             f"QEMU_DEB_VERSION={env['QEMU_DEB_VERSION']}" if env.get("QEMU_DEB_VERSION") else "pinned Debian version"]
    parts += [f"{k}={env[k]}" for k in ("PATCHES", "MUTANT") if env.get(k)]
    return ", ".join(parts)


def qemu_script(env: dict[str, str]) -> str:
    """What makes a cell's QEMU: upstream's binary release (QEMU_ORIGIN=upstream) or our build."""
    return "scripts/fetch-upstream-qemu.sh" if env.get("QEMU_ORIGIN") == "upstream" else "scripts/build-qemu.sh"


def cell_qemu(arch_name: str, env: dict[str, str], log: Path) -> str:
    """The QEMU binary for a guest architecture: given (QEMU_<ARCH>, or QEMU for x86_64) or built;
    a cell with its own PATCHES (ns-only) is always built, an upstream cell (QEMU_ORIGIN) always
    runs upstream's release."""
    given = env.get(f"QEMU_{arch_name.upper()}") or (env.get("QEMU") if arch_name == "x86_64" else None)
    if given and "PATCHES" not in env and "QEMU_ORIGIN" not in env:
        return given
    rc, qemu = run_logged(["bash", qemu_script(env)], {**env, "GUEST_ARCH": arch_name}, log)
    return qemu if rc == 0 and Path(qemu).is_file() else ""


#: A cell's pytest run ends at this bound (NIGHTLY_CELL_BOUND_S): above the cloud-style guest's 30 min
#: beside other cells on 2 cores; the pipeline's job bound (60 min) is the tighter one there.
CELL_BOUND_S = 3 * 3600.0
#: pytest's exit statuses that mean every selected test ran: all passed, some failed, none selected.
PYTEST_RAN = (0, 1, 5)


def pytest_cut_short(rc: int, bound: float) -> str | None:
    """Why a cell's pytest run did not run all its tests (ended at the bound, interrupted, an
    internal or usage error), or None. Its junit.xml then lacks tests that would have run."""
    if rc == -1:
        return f"pytest ended at its bound of {bound:g} s (NIGHTLY_CELL_BOUND_S)"
    if rc not in PYTEST_RAN:
        return f"pytest exited {rc}: not every test ran (see pytest.log)"
    return None


def guest_build(cenv: dict[str, str]) -> tuple[str, str, str]:
    """For a cell's variables: the script that builds its guest, the variable that names the
    guest's folder, and the kernel file a good build has."""
    if cenv["GUEST"] == "cloud":
        return "images/build-cloud-image.sh", "CLOUD_DIR", "vmlinuz"
    return "images/build-guest.sh", "GUEST_DIR", "Image" if cenv["GUEST_ARCH"] == "aarch64" else "vmlinux"


def run_cell(name: str, folder: Path, env: dict[str, str], pytest_args: list[str]) -> dict[str, object]:
    """The acceptance suite on one cell's guest; its tests from junit.xml, or one failed pseudo-test."""
    folder.mkdir(parents=True, exist_ok=True)
    cenv = {**env, **CELLS[name]}
    own: dict[str, str] = {k: cenv[k] for k in ("PATCHES", "QEMU_ORIGIN") if k in CELLS[name]}   # its own QEMU
    qemu = cell_qemu(cenv["GUEST_ARCH"], {**env, **own}, folder / "qemu-build.log")
    if not qemu:
        return {"exit": 1, "tests": {"(qemu build)": {"outcome": "error", "seconds": 0}}}
    script, dir_var, kernel_file = guest_build(cenv)
    rc, guest = run_logged(["bash", script], cenv, folder / "guest-build.log")
    if rc != 0 or not Path(guest, kernel_file).is_file():
        return {"exit": rc, "tests": {"(guest build)": {"outcome": "error", "seconds": 0}}}
    jobs = env.get("JOBS", "1")
    xdist = ["-n", jobs] if jobs != "1" else []
    bound = float(env.get("NIGHTLY_CELL_BOUND_S", CELL_BOUND_S))
    rc, _ = run_logged([sys.executable, "-m", "pytest", *xdist, "tests/acceptance", *pytest_args],
                       {**cenv, "QEMU": qemu, dir_var: guest, "RESULTS_DIR": str(folder)}, folder / "pytest.log",
                       bound=bound)
    latest = folder / "latest"
    if not (latest / "junit.xml").is_file():
        return {"exit": rc, "tests": {"(pytest)": {"outcome": "error", "seconds": 0}}}
    tests = junit_tests(latest / "junit.xml")
    cut = pytest_cut_short(rc, bound)
    if cut:   # junit.xml holds the tests that ran before; the rest are missing, not passed
        tests["(pytest)"] = {"outcome": "error", "seconds": 0}
        print(f"nightly: {name}: {cut}; {len(tests) - 1} tests recorded", flush=True)
    run_logged([sys.executable, "-m", "nvme_hotswap.report.evidence", str(latest.resolve())], cenv,
               folder / "evidence.log")
    env_json = latest / "environment.json"
    environment = json.loads(env_json.read_text()) if env_json.is_file() else {}
    guest_info = environment.get("guest") or {}
    return {"exit": rc, "tests": tests, "qemu": qemu,
            "qemu_version": environment.get("qemu_version"), "qemu_build": environment.get("qemu_build"),
            "guest_kernel": guest_info.get("kernel_release") or guest_info.get("kernel")}


def run_mutants(folder: Path, env: dict[str, str]) -> dict[str, object]:
    folder.mkdir(parents=True, exist_ok=True)
    rc, _ = run_logged([sys.executable, "-m", "nvme_hotswap.mutation.check"], {**env, "RESULTS_DIR": str(folder)},
                       folder / "mutation.log")
    table = folder / "latest" / "mutation.json"
    rows = json.loads(table.read_text()) if table.is_file() else []
    tests = {str(r["mutant"]): {"outcome": "passed" if r["killed"] else "failed", "seconds": r["test_seconds"]}
             for r in rows}
    return {"exit": rc, "tests": tests or {"(mutation check)": {"outcome": "error", "seconds": 0}}}


def run_mutation_score(folder: Path, env: dict[str, str]) -> dict[str, dict[str, int]]:
    """Generated mutants: per patch, how many were judged and killed (mutation-score.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    run_logged([sys.executable, "-m", "nvme_hotswap.mutation.score"], {**env, "RESULTS_DIR": str(folder)},
               folder / "mutation-score.log", bound=24 * 3600.0)
    record = folder / "latest" / "mutation-score.json"
    mutants = json.loads(record.read_text())["mutants"] if record.is_file() else []
    score: dict[str, dict[str, int]] = {}
    for m in mutants:
        row = score.setdefault(m["patch"], {"judged": 0, "killed": 0})
        row["judged"] += m["verdict"] in ("killed", "survived", "timeout")
        row["killed"] += m["verdict"] == "killed"
    return score


def flat(line: dict) -> dict[str, Result]:
    """"cell/test" -> {outcome, seconds} over all cells of a history line."""
    return {f"{cell}/{name}": t for cell, data in line.get("cells", {}).items() for name, t in data["tests"].items()}


MIN_TESTS_FOR_LOAD = 5   # a cell's overall speed is judged from at least this many tests


def cell_load(before: dict[str, Result], now: dict[str, Result], cell: str) -> float:
    """How much slower the cell ran as a whole: the median duration ratio of its tests that passed
    both times (at least 1.0; 1.0 with fewer than MIN_TESTS_FOR_LOAD such tests). A loaded or
    slower machine stretches every test alike; one test's regression stands out against it."""
    ratios = [float(t["seconds"]) / float(before[n]["seconds"]) for n, t in now.items()
              if n.startswith(cell + "/") and t["outcome"] == "passed"
              and n in before and before[n]["outcome"] == "passed" and float(before[n]["seconds"]) > 0]
    return max(1.0, statistics.median(ratios)) if len(ratios) >= MIN_TESTS_FOR_LOAD else 1.0


def compare(prev: dict, cur: dict, ratio: float = 1.5, min_extra: float = 5.0) -> dict[str, list[str]]:
    """New failures (did not fail before, or absent; fails now), fixed tests (failed, now pass),
    and slower tests (passed both times, now >= ratio x and >= min_extra s longer than the old
    duration scaled by the cell's overall slowdown, see cell_load). A cell slower as a whole is
    noted under "cell_load" but not counted: shared runners' load would otherwise fail nights."""
    before, now = flat(prev), flat(cur)
    out: dict[str, list[str]] = {"new_failures": [], "fixed": [], "slower": [], "missing": missing(prev, cur),
                                 "still_failing": [], "cell_load": []}
    loads = {cell: cell_load(before, now, cell) for cell in cur.get("cells", {})}
    for cell, load in sorted(loads.items()):
        if load >= 1.2:
            out["cell_load"].append(f"{cell} ran {load:.1f}x slower as a whole (median of its tests); "
                                    "its tests are judged against that")
    for name, t in sorted(now.items()):
        old = before.get(name)
        if t["outcome"] in FAILED:
            out["still_failing" if old and old["outcome"] in FAILED else "new_failures"].append(name)
        elif t["outcome"] == "passed" and old and old["outcome"] in FAILED:
            out["fixed"].append(name)
        elif t["outcome"] == "passed" and old and old["outcome"] == "passed":
            s, o = float(t["seconds"]), float(old["seconds"]) * loads.get(name.split("/", 1)[0], 1.0)
            if s >= o * ratio and s - o >= min_extra:
                out["slower"].append(f"{name} ({float(old['seconds']):g} s -> {s:g} s)")
    return out


def missing(prev: dict, cur: dict) -> list[str]:
    """Tests that ran last time and not now, in a cell that ran both times with the same pytest
    selection and recorded no failure of its own ("(pytest)", "(no result)", ...: those already
    count): a test that silently stops running is how a broken series would pass."""
    if prev.get("pytest_args") != cur.get("pytest_args"):
        return []
    gone = []
    for cell, data in cur.get("cells", {}).items():
        if cell not in prev.get("cells", {}) or any(n.startswith("(") for n in data["tests"]):
            continue
        gone += [f"{cell}/{n}" for n in sorted(prev["cells"][cell]["tests"])
                 if not n.startswith("(") and n not in data["tests"]]
    return gone


def totals(line: dict) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "skipped": 0, "known": 0}   # known: a known upstream defect
    for t in flat(line).values():
        counts["failed" if t["outcome"] in FAILED else str(t["outcome"])] += 1
    return counts


def report(prev: dict | None, cur: dict, diff: dict[str, list[str]] | None) -> tuple[str, bool]:
    """The Markdown report and whether it is a regression (first run: whether anything failed)."""
    t = cur["totals"]
    lines = [f"# Nightly {cur['time']}", "", f"QEMU: {cur['qemu']['source']}, version {cur['qemu'].get('version')}",
             f"Cells: {', '.join(cur['cells'])}; {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped"
             + (f", {t['known']} known upstream defects" if t.get("known") else ""),
             ""]
    if prev is None or diff is None:
        failing = [n for n, x in flat(cur).items() if x["outcome"] in FAILED]
        lines += ["no previous run to compare with"] + [f"- failing: {n}" for n in failing]
        return "\n".join(lines) + "\n", bool(failing)
    lines.append(f"Compared with {prev['time']}:")
    for key, title in [("new_failures", "new failure"), ("slower", "slower"), ("missing", "missing"),
                       ("fixed", "fixed"), ("still_failing", "still failing"), ("cell_load", "note")]:
        lines += [f"- {title}: {n}" for n in diff.get(key, [])]
    gone = diff.get("missing", [])
    regression = bool(diff["new_failures"] or diff["slower"] or gone)
    lines += ["", f"REGRESSION: {len(diff['new_failures'])} new failures, {len(diff['slower'])} slower"
              + (f", {len(gone)} missing" if gone else "") if regression else "no regression"]
    return "\n".join(lines) + "\n", regression


def last_line(history: Path) -> dict | None:
    lines = [ln for ln in history.read_text().splitlines() if ln.strip()] if history.is_file() else []
    return json.loads(lines[-1]) if lines else None


def judge(line: dict, history: Path, report_dir: Path) -> int:
    """Steps 3 and 4: compare `line` with the history's last line, append it, print and write the
    report (report_dir/nightly.md); 1 on a regression (the first run: on any failure)."""
    line["totals"] = totals(line)
    prev = last_line(history)
    diff = compare(prev, line, float(os.environ.get("NIGHTLY_SLOWER", "1.5")),
                   float(os.environ.get("NIGHTLY_SLOWER_MIN_S", "5"))) if prev else None
    history.parent.mkdir(parents=True, exist_ok=True)
    with history.open("a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
    text, regression = report(prev, line, diff)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "nightly.md").write_text(text)
    print("\n" + text + f"\nreport: {report_dir / 'nightly.md'}; history: {history}")
    return 1 if regression else 0


def selected_cells() -> list[str]:
    """NIGHTLY_CELLS, else the file's default; an unknown name stops the run (exit 2) naming the known ones."""
    cells = os.environ.get("NIGHTLY_CELLS", DEFAULT_CELLS).split()
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        print(f"nightly: unknown cell(s) {' '.join(unknown)} in NIGHTLY_CELLS; known: {' '.join(CELLS)}",
              file=sys.stderr)
        sys.exit(2)
    return cells


def cell_env() -> dict[str, str]:
    """The environment every cell shares: ours without the variables a cell sets itself."""
    return {k: v for k, v in os.environ.items()
            if k not in (results.RUN_DIR_ENV, "GUEST_DIR", "CLOUD_DIR", *{v for c in CELLS.values() for v in c})}


def pytest_arguments() -> list[str]:
    return shlex.split(os.environ.get("NIGHTLY_PYTEST_ARGS", os.environ.get("PYTEST_ARGS", "")))


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run_one(name: str, folder: Path, env: dict[str, str], pytest_args: list[str]) -> dict[str, object]:
    """One cell, timed and summed up on stdout."""
    start = time.monotonic()
    cell = run_cell(name, folder, env, pytest_args)
    c = totals({"cells": {name: cell}})
    print(f"nightly: {name}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped "
          f"({round(time.monotonic() - start)} s)", flush=True)
    return cell


# --- the CI pipeline's two steps: a cell per job, then one compare job -------------------------
CI_DIR = Path(os.environ.get("NIGHTLY_CI_DIR") or ROOT / "results" / "ci")
CELL_RECORD = "cell.json"
NO_RESULT = "(no result)"


#: What the pipeline's build jobs are told apart by (their matrix variables), per product.
BUILD_KEYS = {"qemu": ("GUEST_ARCH", "PATCHES", "QEMU_ORIGIN"), "guest": ("GUEST_ARCH", "GUEST_KERNEL", "GUEST")}


def cells_needing(kind: str, env: dict[str, str]) -> list[str]:
    """The selected cells whose product of `kind` is the one `env` (a build job's variables) names."""
    def value(source: dict[str, str], key: str) -> str:
        v = source.get(key, "")
        return str(ROOT / v) if key == "PATCHES" and v else v
    return [c for c in selected_cells() if all(value(CELLS[c], k) == value(env, k) for k in BUILD_KEYS[kind])]


def main_build(kind: str) -> int:
    """A build job: the QEMU or the guest its variables name, through the same scripts as every
    build, unless no selected cell needs it (NIGHTLY_CELLS): then it says so and builds nothing."""
    env = dict(os.environ)
    users = cells_needing(kind, env)
    what = ", ".join(f"{k}={env.get(k, '')}" for k in BUILD_KEYS[kind])
    if not users:
        print(f"nightly build: no selected cell needs the {kind} of {what}: not built")
        return 0
    print(f"nightly build: the {kind} of {what}, for {' '.join(users)}", flush=True)
    script = qemu_script(env) if kind == "qemu" else guest_build({**CELLS[users[0]], **env})[0]
    return subprocess.call(["bash", script], cwd=ROOT, env=env)


def main_cell(name: str) -> int:
    """Run one cell and record it as <CI_DIR>/cells/<name>/cell.json: the cell's identity (its
    name, the pipeline) travels in the file, not in the job's name, which differs between GitLab
    and gitlab-ci-local. 0 once recorded, whatever the tests said: the compare job judges (a known
    failure is not a regression), and make turns any other status into its own 2, which a job could
    not tell from a crash. Not 0: the cell could not be recorded."""
    if name not in CELLS:
        print(f"nightly: unknown cell {name!r}; known: {' '.join(CELLS)}", file=sys.stderr)
        return 2
    if name not in selected_cells():
        print(f"nightly: cell {name} is not in NIGHTLY_CELLS ({os.environ.get('NIGHTLY_CELLS')}): not run")
        return 0
    env = cell_env()
    os.environ.update(CELLS[name])   # the preflight checks this cell's guest, not the default one
    preflight.exit_unless_ready(qemu=False, who=f"nightly cell {name}")
    folder = CI_DIR / "cells" / name
    for stale in (CELL_RECORD, "junit.xml"):   # an earlier pipeline's must not stand in
        (folder / stale).unlink(missing_ok=True)
    pytest_args = pytest_arguments()
    cell = run_one(name, folder, env, pytest_args)
    junit_xml = folder / "latest" / "junit.xml"   # a file, not under the latest/ symlink, for CI's junit report
    if junit_xml.is_file():
        shutil.copyfile(junit_xml, folder / "junit.xml")
    record = {"cell": name, "pipeline": os.environ.get("CI_PIPELINE_ID"), "time": now(), "pytest_args": pytest_args,
              "qemu_source": qemu_source(env), **cell}
    (folder / CELL_RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    failed = any(t["outcome"] in FAILED for t in cell["tests"].values())   # type: ignore[attr-defined]
    print(f"nightly: {name}: recorded in {folder / CELL_RECORD}" + ("; tests failed: the compare job judges"
                                                                     if failed else ""))
    return 0


def read_records(folder: Path, pipeline: str | None) -> dict[str, dict]:
    """The cells recorded under folder/*/cell.json, by the name each file gives; with `pipeline`,
    only that pipeline's (a record left by an earlier run does not count)."""
    records = {}
    for path in sorted(folder.glob(f"*/{CELL_RECORD}")):
        record = json.loads(path.read_text())
        if pipeline is None or record.get("pipeline") == pipeline:
            records[record["cell"]] = record
    return records


def merge(records: dict[str, dict], expected: list[str], pipeline: str | None) -> dict:
    """One history line from the cells' records; an expected cell without a record (its job did
    not run, was ended or crashed) counts as one failed test, NO_RESULT."""
    line: dict = {"time": now(), "run": str(CI_DIR), "pipeline": pipeline, "qemu": {}, "cells": {}}
    for name in expected:
        record = dict(records.get(name) or {"exit": None, "tests": {NO_RESULT: {"outcome": "error", "seconds": 0}}})
        line["pytest_args"] = record.pop("pytest_args", line.get("pytest_args", []))
        for key in ("source", "version", "build"):   # from the first cell that recorded it
            value = record.pop(f"qemu_{key}", None)
            if line["qemu"].get(key) is None:
                line["qemu"][key] = value
        for key in ("cell", "pipeline", "time"):
            record.pop(key, None)
        line["cells"][name] = record
    line["qemu"] = {k: v for k, v in line["qemu"].items() if v is not None} or {"source": "(no cell recorded it)"}
    return line


def main_compare() -> int:
    """Merge the recorded cells into one history line and judge it as make nightly does."""
    try:
        cfg = RunConfig.from_env()   # no QEMU, no guest: the cells had them
    except ConfigError as exc:
        print(f"nightly compare: {exc}", file=sys.stderr)
        return 2
    pipeline = os.environ.get("CI_PIPELINE_ID")
    records = read_records(CI_DIR / "cells", pipeline)
    expected = selected_cells()
    extra = sorted(set(records) - set(expected))
    if extra:
        print(f"nightly compare: recorded but not selected, left out: {' '.join(extra)}")
    print(f"nightly compare: pipeline {pipeline or '(none)'}; cells recorded "
          f"{' '.join(c for c in expected if c in records) or 'none'} of {' '.join(expected)}", flush=True)
    history = Path(os.environ.get("NIGHTLY_HISTORY", cfg.results_root / "nightly-history.jsonl"))
    return judge(merge(records, expected, pipeline), history, CI_DIR / "compare")


def main() -> int:
    sigterm_as_interrupt()
    if sys.argv[1:2] == ["cell"] and len(sys.argv) == 3:
        return main_cell(sys.argv[2])
    if sys.argv[1:] == ["compare"]:
        return main_compare()
    if sys.argv[1:2] == ["build"] and len(sys.argv) == 3 and sys.argv[2] in BUILD_KEYS:
        return main_build(sys.argv[2])
    if sys.argv[1:]:
        print("usage: nightly.py [build qemu|guest | cell <name> | compare]", file=sys.stderr)
        return 2
    cfg = preflight.exit_unless_ready(qemu=False, who="nightly")   # each cell builds its own QEMU
    history = Path(os.environ.get("NIGHTLY_HISTORY", cfg.results_root / "nightly-history.jsonl"))
    cells, pytest_args, env = selected_cells(), pytest_arguments(), cell_env()
    run = results.run_dir()
    line: dict = {"time": now(), "run": str(run), "pytest_args": pytest_args, "qemu": {"source": qemu_source(env)},
                  "cells": {}}
    print(f"nightly: QEMU from {line['qemu']['source']}; cells {' '.join(cells)}; results {run}", flush=True)

    for name in cells:
        cell = line["cells"][name] = run_one(name, run / name, env, pytest_args)
        line["qemu"].setdefault("version", cell.pop("qemu_version", None))
        line["qemu"].setdefault("build", cell.pop("qemu_build", None))
    if os.environ.get("NIGHTLY_MUTANTS") == "1":
        line["cells"]["mutants"] = run_mutants(run / "mutants", {k: v for k, v in env.items() if k != "QEMU"})
    if os.environ.get("NIGHTLY_MUTATION_SCORE") == "1":
        built = {k: v for k, v in env.items() if k != "QEMU"}   # mutants are built from our series
        line["mutation_score"] = run_mutation_score(run / "mutation-score", built)
        print(f"nightly: generated mutants killed / judged: {line['mutation_score']}", flush=True)
    return judge(line, history, run)


if __name__ == "__main__":
    sys.exit(main())
