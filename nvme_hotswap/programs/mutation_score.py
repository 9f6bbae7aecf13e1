"""make mutation-score: generated mutants of every C line the series adds, judged by the tests of their patch.

The hand-written mutants (make check-mutants) are the breakages we thought of; these are the ones
nobody chose. Steps:

1. Lines: every `+` line of a .c file in patches/000N-*.patch, as line numbers of the patched tree.
2. Mutants: universalmutator (`mutate FILE c --lines LINES --noCheck`): negated conditions, removed
   calls, swapped arguments, off-by-one, ... one change per mutant. --noCheck because universalmutator
   compiles nothing itself for C (it would call every mutant valid); the build below is the check.
3. Build: a scratch copy of the cached series build (source and configured build dir, made once per
   build key under $CACHE/mutation-work/), the mutant written into it, `ninja` of QEMU and the
   patch's qtests: a few seconds per mutant. One that does not compile is dropped (stillborn); one
   whose object file is byte-identical to the original's is equivalent (trivial compiler
   equivalence) and dropped. A mutant that changes the line count is never byte-identical (QEMU's
   error_setg() and assert embed __LINE__): it is judged by the tests like any other.
4. Judge: the patch's qtests first (seconds; scripts/check-series.sh with QTESTS=), then the
   acceptance tests tagged for the patch, -x.
   Killed: a qtest or a test failed or errored (QEMU crashing included). A run that hits the bound
   is a timeout, reported on its own and NOT counted as a kill (a hang is not a verdict).
5. Report: killed / judged per patch, every survivor with its file:line and the change, in
   mutation-score.md and mutation-score.json of the run folder.

    MUTATION_SAMPLE=N     judge N mutants per patch (in a seeded random order, MUTATION_SEED,
                          default 1; stillborn and equivalent ones do not count); 0 = all
    MUTATION_PATCHES="0001 0003"   only these patches
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..config import ROOT, RunConfig
from ..report import junit, results
from .proc import run_logged, sigterm_as_interrupt

PATCH_TESTS = {   # patch number -> (pytest -m selection, qtests)
    "0001": ("needs_nvme_ns_hotplug", ("nvme-hotplug-test", "qos-test")),
    "0002": ("needs_reconnect_qmp or needs_drive_insert", ("test-hmp",)),
    "0003": ("needs_drive_insert", ("test-hmp",)),
}
TEST_BOUND_S = 900.0
BUILD_BOUND_S = 600.0


@dataclasses.dataclass
class Mutant:
    patch: str
    path: str          # in the QEMU tree
    line: int
    original: str
    changed: str
    text: str          # the whole mutated file
    verdict: str = ""  # stillborn, equivalent, killed, survived, timeout
    by: str = ""       # what killed it, or why it is not judged


def added_lines(patch: Path) -> dict[str, list[int]]:
    """Path -> line numbers (in the patched file) of the lines the patch adds, .c files only."""
    out: dict[str, list[int]] = {}
    path, line = None, 0
    for text in patch.read_text().splitlines():
        if text.startswith("+++ "):
            name = text[4:].removeprefix("b/")
            path = name if name.endswith(".c") and not name.startswith("tests/") else None
        elif text.startswith("@@"):
            m = re.match(r"@@ -\d+(?:,\d+)? \+(\d+)", text)
            line = int(m.group(1)) if m else 0
        elif path and text.startswith("+"):
            out.setdefault(path, []).append(line)
            line += 1
        elif path and not text.startswith("-"):
            line += 1
    return out


def generate(patch: str, src: Path, path: str, lines: list[int], scratch: Path) -> list[Mutant]:
    """universalmutator's mutants of `lines` of `path`; each one differs from the original in one line."""
    original = (src / path).read_text()
    work = scratch / path.replace("/", "_")
    work.mkdir(parents=True, exist_ok=True)
    (work / "orig.c").write_text(original)
    (work / "lines.txt").write_text("\n".join(map(str, lines)) + "\n")
    mutate = Path(sys.executable).parent / "mutate"
    subprocess.run([str(mutate), "orig.c", "c", "--lines", "lines.txt", "--noCheck", "--mutantDir", "m"],
                   cwd=work, check=True, stdout=subprocess.DEVNULL)
    before = original.splitlines()
    mutants = []
    for f in sorted((work / "m").glob("orig.mutant.*.c"), key=lambda p: int(p.name.split(".")[2])):
        text = f.read_text()
        after = text.splitlines()
        diff = [i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b]
        if not diff:
            continue
        i = diff[0]
        mutants.append(Mutant(patch, path, i + 1, before[i].strip(), after[i].strip() if i < len(after) else "",
                              text))
    return mutants


def object_of(build: Path, path: str) -> Path | None:
    """The object file ninja makes from `path` (meson flattens the path with underscores)."""
    flat = path.replace("/", "_") + ".o"
    found = sorted(build.glob(f"*.p/{flat}"))
    return found[0] if found else None


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def work_copy(entry: Path, cache: Path) -> Path:
    """A scratch copy of a cached build entry (src/ and build/), made once per entry; the cached
    entry itself is never written."""
    work = cache / "mutation-work" / entry.name
    if not (work / "READY").exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for part in ("src", "build"):
            subprocess.run(["cp", "-a", str(entry / part), str(work / part)], check=True)
        (work / "READY").write_text("copied from " + str(entry) + "\n")
    return work


def run_qtests(build: Path, binary: str, names: tuple[str, ...], folder: Path) -> str | None:
    """The patch's qtests through scripts/check-series.sh (QTESTS=...: no checkpatch); its summary
    line of the first failing qtest, or None."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "check-series.sh"), str(build)],
                          env=dict(os.environ, QTESTS=" ".join(names), TARGET_BIN=Path(binary).name,
                                   RESULTS_DIR=str(folder)),
                          capture_output=True, text=True, timeout=BUILD_BOUND_S + 600)
    (folder / "qtest.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode == 0:
        return None
    failed = [ln.strip() for ln in proc.stdout.splitlines() if " FAIL " in ln]
    return f"qtest {failed[0] if failed else f'check-series.sh exit {proc.returncode}'}"


def judge(m: Mutant, work: Path, cfg: RunConfig, baseline: dict[str, str], folder: Path, guest: str) -> None:
    src, build = work / "src", work / "build"
    target = f"qemu-system-{cfg.arch.name}"
    selection, qtests = PATCH_TESTS[m.patch]
    original = (src / m.path).read_text()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mutant.txt").write_text(f"{m.path}:{m.line}\n- {m.original}\n+ {m.changed}\n")
    (src / m.path).write_text(m.text)
    try:
        proc = subprocess.run(["timeout", str(int(BUILD_BOUND_S)), "ninja", "-C", str(build), target,
                               *(f"tests/qtest/{q}" for q in qtests)], capture_output=True, text=True)
        if proc.returncode != 0:
            m.verdict, m.by = "stillborn", "does not compile"
            return
        obj = object_of(build, m.path)
        if obj is not None and sha(obj) == baseline.get(m.path):
            m.verdict, m.by = "equivalent", "object code identical to the original's"
            return
        binary = str(build / target)
        failed = run_qtests(build, binary, qtests, folder)
        if failed:
            m.verdict, m.by = "killed", failed
            return
        env = {k: v for k, v in cfg.build_env().items() if k not in (results.RUN_DIR_ENV, "PYTEST_ADDOPTS")}
        jobs = min(os.cpu_count() or 1, 4)
        rc, _ = run_logged([sys.executable, "-m", "pytest", "tests/acceptance", "-x", "-p", "no:cacheprovider",
                            *(["-n", str(jobs)] if jobs > 1 else []), "-m", selection],
                           {**env, "QEMU": binary, "GUEST_DIR": guest, "RESULTS_DIR": str(folder)},
                           folder / "pytest.log", bound=TEST_BOUND_S)
        junit_xml = folder / "latest" / "junit.xml"
        if rc == -1 or not junit_xml.is_file():
            m.verdict, m.by = "timeout", f"the tests did not finish within {TEST_BOUND_S:g} s (exit {rc})"
            return
        bad = [c for c in junit.read(junit_xml) if c.outcome in ("failed", "error")]
        ran = [c for c in junit.read(junit_xml) if c.outcome != "skipped"]
        if bad:
            m.verdict, m.by = "killed", f"{bad[0].short_name}: {bad[0].message[:140]}"
        else:
            m.verdict, m.by = "survived", f"{len(ran)} tests and {len(qtests)} qtests passed"
    finally:
        (src / m.path).write_text(original)


def table(mutants: list[Mutant], generated: dict[str, int] | None = None) -> str:
    """Per patch: mutants generated, tried (built), and of those stillborn, equivalent, judged, ..."""
    out = ["| patch | generated | tried | stillborn | equivalent | judged | killed | survived | timeout | score |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for patch in sorted({m.patch for m in mutants}):
        ms = [m for m in mutants if m.patch == patch and m.verdict]
        n = {v: sum(m.verdict == v for m in ms) for v in ("stillborn", "equivalent", "killed", "survived", "timeout")}
        judged = n["killed"] + n["survived"] + n["timeout"]
        score = f"{100 * n['killed'] / judged:.0f}%" if judged else "-"
        total = (generated or {}).get(patch, len(ms))
        out.append(f"| {patch} | {total} | {len(ms)} | {n['stillborn']} | {n['equivalent']} | {judged} | "
                   f"{n['killed']} | {n['survived']} | {n['timeout']} | {score} |")
    survivors = [m for m in mutants if m.verdict in ("survived", "timeout")]
    if survivors:
        out += ["", "Survivors:", ""]
        out += [f"- {m.patch} `{m.path}:{m.line}` `{m.original}` -> `{m.changed}`: {m.verdict} ({m.by})"
                for m in survivors]
    return "\n".join(out) + "\n"


def main() -> int:
    sigterm_as_interrupt()
    cfg = RunConfig.from_env()
    binary = cfg.qemu_binary
    entry = binary.parent.parent
    if not (entry / "DONE").is_file() or not (entry / "src" / ".git").exists():
        print(f"mutation-score: {binary} is not a cached series build of scripts/build-qemu.sh; "
              "unset QEMU (mutants are built from our series)", file=sys.stderr)
        return 2
    wanted = os.environ.get("MUTATION_PATCHES", "").split() or sorted(PATCH_TESTS)
    sample = int(os.environ.get("MUTATION_SAMPLE", "0"))
    rng = random.Random(os.environ.get("MUTATION_SEED", "1"))
    run = results.run_dir()
    out = run / "mutation-score"
    out.mkdir(parents=True, exist_ok=True)
    work = work_copy(entry, cfg.cache_root)
    guest = str(cfg.guest_dir)
    mutants: list[Mutant] = []
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="nvme-hotswap-mutants-") as tmp:
        for patch in sorted(ROOT.glob("patches/0*.patch")):
            number = patch.name[:4]
            if number not in wanted or number not in PATCH_TESTS:
                continue
            generated = [m for path, lines in added_lines(patch).items()
                         for m in generate(number, work / "src", path, lines, Path(tmp) / number)]
            counts[number] = len(generated)
            rng.shuffle(generated)
            mutants += generated
    print(f"mutation-score: {len(mutants)} mutants of patches {' '.join(wanted)} ({counts}); judging "
          f"{str(sample) + ' per patch' if sample else 'all'}; work tree {work}", flush=True)
    subprocess.run(["ninja", "-C", str(work / "build"), f"qemu-system-{cfg.arch.name}"], check=True,
                   stdout=subprocess.DEVNULL, timeout=BUILD_BOUND_S)
    baseline = {m.path: sha(o) for m in mutants if (o := object_of(work / "build", m.path)) is not None}
    start = time.monotonic()
    judged: dict[str, int] = {}
    for i, m in enumerate(mutants, 1):
        if sample and judged.get(m.patch, 0) >= sample:
            continue
        judge(m, work, cfg, baseline, out / f"{m.patch}-{i:04d}", guest)
        judged[m.patch] = judged.get(m.patch, 0) + (m.verdict in ("killed", "survived", "timeout"))
        print(f"mutant {i} {m.patch} {m.path}:{m.line}: {m.verdict} ({m.by})", flush=True)
    subprocess.run(["ninja", "-C", str(work / "build"), f"qemu-system-{cfg.arch.name}"], check=False,
                   stdout=subprocess.DEVNULL, timeout=BUILD_BOUND_S)   # leave the work tree built as the series
    tried = [m for m in mutants if m.verdict]
    (run / "mutation-score.json").write_text(json.dumps({"generated": counts, "mutants": [
        dataclasses.asdict(m) | {"text": None} for m in tried]}, indent=2) + "\n")
    md = table(tried, counts)
    (run / "mutation-score.md").write_text("# Generated mutants\n\n" + md)
    print("\n" + md + f"\n{time.monotonic() - start:.0f} s; results: {run / 'mutation-score.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
