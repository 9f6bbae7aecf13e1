"""make mutation-score: generated mutants of every C line the series adds, judged by the tests of their patch.

The hand-written mutants (make check-mutants) are the breakages we thought of; these are the ones
nobody chose. Steps:

1. Lines: every `+` line of a .c file in patches/000N-*.patch, as line numbers of the tree with the
   whole series applied (series_added_lines: later patches move them).
2. Mutants: universalmutator (`mutate FILE c --lines LINES --noCheck`): negated conditions, removed
   calls, swapped arguments, off-by-one, ... one change per mutant. --noCheck because universalmutator
   compiles nothing itself for C (it would call every mutant valid); the build below is the check.
3. Build: a mutant whose shape never compiles (never_compiles(): unbalanced brackets, `break;`
   outside a loop, a declarator's `*` made an operator, ...) is stillborn without a build (about
   two in three of universalmutator's mutants of the series). The others: a scratch copy of the
   cached series build (source and configured build dir, made once per build key under
   $CACHE/mutation-work/), the mutant written into it, `ninja` of QEMU and the
   patch's qtests: a few seconds per mutant. One that does not compile is dropped (stillborn); one
   whose object file is byte-identical to the original's is equivalent (trivial compiler
   equivalence) and dropped. A mutant that changes the line count is never byte-identical (QEMU's
   error_setg() and assert embed __LINE__): it is judged by the tests like any other.
4. Judge, cheapest layer first: the device-level tests tagged for the patch (the NVMe host over
   qtest, seconds), the patch's qtests, then the guest-level acceptance tests tagged for it, -x;
   the verdict's "by" starts with the layer that killed it (device:, qtest:, guest:).
   Killed: a qtest or a test failed or errored (QEMU crashing included). A run that hits the bound
   (or a qtest that check-series.sh's timeout ended: exit 124) is a timeout, reported on its own and
   NOT counted as a kill (a hang is not a verdict).
   Duplicate: a mutant whose object file is byte-identical to an earlier mutant's is that mutant
   again (the same machine code): it gets the earlier one's verdict and counts once.
   A survivor listed in patches/mutation-equivalent.txt (path, original line, changed line, why)
   was judged equivalent by reading it: reported with its reason, out of the score.
5. Report: killed / judged per patch (with a 95% interval when sampled), every survivor with its
   file:line and the change, in mutation-score.md and mutation-score.json of the run folder.
6. Resume: each verdict is kept in $CACHE/mutation-verdicts.json under a key of everything that
   decides it (the series build, the mutated file's text, the guest, and the suite: tests/,
   nvme_hotswap/, scripts/check-series.sh); a verdict under the same key is reused, so an
   interrupted run or the next night goes on where it stopped. Timeouts are never kept.

    MUTATION_SAMPLE=N     judge N mutants per patch (in a seeded random order, MUTATION_SEED,
                          default 1; stillborn and equivalent ones do not count); 0 = all
    MUTATION_PATCHES="0001 0003"   only these patches
    MUTATION_FRESH=1      ignore kept verdicts (judge again)
    MUTATION_BUDGET_S=N   start no new mutant after N seconds (the patches are taken round robin,
                          so what was judged is a random sample of each)
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
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
from ..programs.proc import run_logged, sigterm_as_interrupt
from ..report import junit, results
from .suite_key import KeptStore, suite_key

PATCH_TESTS = {   # patch number -> (pytest -m selection, qtests)
    "0001": ("needs_nvme_ns_hotplug", ("nvme-hotplug-test", "qos-test")),
    "0002": ("needs_reconnect_qmp or needs_drive_insert or needs_reconnect", ("test-hmp",)),
    "0007": ("device", ()),
    "0003": ("needs_drive_insert or needs_reconnect", ("test-hmp",)),
}
TEST_BOUND_S = 900.0
BUILD_BOUND_S = 600.0
EQUIVALENT_LIST = ROOT / "patches" / "mutation-equivalent.txt"
JUDGED = ("killed", "survived", "timeout")


@dataclasses.dataclass
class Mutant:
    patch: str
    path: str          # in the QEMU tree
    line: int
    original: str
    changed: str
    text: str          # the whole mutated file
    verdict: str = ""  # stillborn, equivalent, duplicate, killed, survived, timeout
    by: str = ""       # what killed it, or why it is not judged
    obj: str = ""      # sha256 of its object file, once built
    kept: bool = False  # the verdict came from the verdict store

    @property
    def text_sha(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


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


HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def map_line(patch: Path, path: str, line: int) -> int | None:
    """Where line `line` of `path` is once `patch` is applied (None: the patch removes it)."""
    offset, current, inside = 0, None, False
    hunks: list[tuple[int, int, int, list[str]]] = []
    for text in patch.read_text().splitlines():
        if text.startswith("+++ "):
            current, inside = text[4:].removeprefix("b/"), False
        elif text.startswith("@@") and current == path:
            m = HUNK.match(text)
            if m:
                hunks.append((int(m.group(1)), int(m.group(2) or 1), int(m.group(3)), []))
                inside = True
        elif inside and current == path and text[:1] in (" ", "-", "+", ""):
            hunks[-1][3].append(text)
        elif text.startswith("diff "):
            inside = False
    for old_start, old_len, new_start, body in hunks:
        if line < old_start or (old_len == 0 and line <= old_start):
            return line + offset
        if line < old_start + old_len:
            old, new = old_start, new_start
            for text in body:
                kind = text[:1] or " "
                if kind == " ":
                    if old == line:
                        return new
                    old, new = old + 1, new + 1
                elif kind == "-":
                    if old == line:
                        return None
                    old += 1
                else:
                    new += 1
            return None
        offset = (new_start + sum(1 for t in body if t[:1] != "-")) - (old_start + old_len)
    return line + offset


def series_added_lines(patches: list[Path]) -> dict[str, dict[str, list[int]]]:
    """Patch number -> path -> the lines it adds, numbered in the tree with the whole series
    applied (where its mutants are built): a later patch that adds or removes lines above them in
    the same file moves them (0007 moves 0001's lines of hw/nvme/ctrl.c by 4)."""
    out: dict[str, dict[str, list[int]]] = {}
    for i, patch in enumerate(patches):
        lines = added_lines(patch)
        for later in patches[i + 1:]:
            lines = {path: [m for n in ns if (m := map_line(later, path, n)) is not None]
                     for path, ns in lines.items()}
        out[patch.name[:4]] = lines
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
        mutants.append(describe(patch, path, before, after, diff[0], text))
    return mutants


def read_equivalents(path: Path = EQUIVALENT_LIST) -> dict[tuple[str, str, str], str]:
    """(file, original line, changed line) -> why it is equivalent; tab-separated, # comments."""
    out: dict[tuple[str, str, str], str] = {}
    if path.is_file():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 4:
                raise ValueError(f"{path}:{n}: want 4 tab-separated fields (file, original, changed, why), "
                                 f"got {len(parts)}")
            out[(parts[0], parts[1].strip(), parts[2].strip())] = parts[3].strip()
    return out


class VerdictStore(KeptStore):
    """$CACHE/mutation-verdicts.json: verdicts by (suite key, mutated file's text)."""

    def __init__(self, path: Path, suite: str, fresh: bool = False) -> None:
        super().__init__(path, fresh)
        self.suite = suite

    def key(self, m: Mutant) -> str:
        return f"{self.suite}:{m.path}:{m.text_sha[:20]}"

    def recall(self, m: Mutant) -> bool:
        got = self.data.get(self.key(m))
        if got is None:
            return False
        m.verdict, m.by, m.obj, m.kept = got["verdict"], got["by"], got.get("obj", ""), True
        return True

    def keep(self, m: Mutant) -> None:
        if m.verdict == "timeout" or not m.verdict:
            return
        self.put(self.key(m), {"verdict": m.verdict, "by": m.by, "obj": m.obj})


def apply_equivalents(mutants: list[Mutant], equivalents: dict[tuple[str, str, str], str]) -> None:
    """Survivors judged equivalent by reading them leave the score, with the reason; applied when the
    report is made (a kept verdict stays "survived"), so a line added to the list takes effect at once."""
    for m in mutants:
        why = equivalents.get((m.path, m.original, m.changed))
        if m.verdict == "survived" and why is not None:
            m.verdict, m.by = "equivalent", f"judged by reading it (patches/mutation-equivalent.txt): {why}"


def wilson(killed: int, judged: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a kill rate measured on a sample."""
    if not judged:
        return (0.0, 1.0)
    p = killed / judged
    centre = (p + z * z / (2 * judged)) / (1 + z * z / judged)
    half = z * math.sqrt(p * (1 - p) / judged + z * z / (4 * judged * judged)) / (1 + z * z / judged)
    return (max(0.0, centre - half), min(1.0, centre + half))


def describe(patch: str, path: str, before: list[str], after: list[str], i: int, text: str) -> Mutant:
    """The mutant as its one change: a line changed, a line inserted (universalmutator inserts
    `break;`/`continue;` lines: named by the line they follow, with its number, since "after `}`"
    alone would match many places) or a line deleted."""
    if len(after) == len(before) + 1:
        return Mutant(patch, path, i, f"after line {i}: {before[i - 1].strip()}", f"insert: {after[i].strip()}", text)
    if len(after) == len(before) - 1:
        return Mutant(patch, path, i + 1, before[i].strip(), "(line deleted)", text)
    return Mutant(patch, path, i + 1, before[i].strip(), after[i].strip() if i < len(after) else "", text)


#: a C type before a declarator's `*` (Type *name, struct x *name, uint32_t *name, const char *name)
TYPE_BEFORE_STAR = re.compile(r"(?:\b[A-Z]\w*|\b\w+_t|\bchar|\bint|\bvoid|\bbool|\bstruct\s+\w+)\s*\**\s*$")
NOT_CODE = re.compile(r'/\*.*?\*/|//.*|"(?:\\.|[^"\\])*"' + r"|'(?:\\.|[^'\\])*'")   # comments, literals
DECLARATION = re.compile(r"^(?!(?:goto|return|case|else|do|break|continue)\b)"
                         r"(?:static\s+|const\s+)*(?:struct\s+)?[A-Za-z_]\w*(?:\s*\*+\s*|\s+)[A-Za-z_]\w*"
                         r"(?:\s*,\s*\**\s*[A-Za-z_]\w*)*\s*(?:=.*)?;$")


def never_compiles(m: Mutant, before: list[str]) -> str | None:
    """Why mutant `m` of the file `before` (its lines) cannot compile, seen without compiling it
    (None: let the compiler say).

    universalmutator's C rules are textual: four in five of their mutants of the series did not
    compile (measured), each costing a build. These shapes never do: brackets left unbalanced
    ("if (a || b) {" -> "(0==1) || b) {", or half a line commented out), a number rewritten inside
    an identifier ("uint(64-1)_t"), a declarator's `*` turned into an operator ("Error %err"), a
    binary operator where an operand starts ("f(a, |err)"), a declaration commented out (its variable
    is used below), `break;` or `continue;` inserted outside any loop (or switch, for break)."""
    original, changed = m.original, m.changed
    if changed.startswith("insert: "):
        statement = changed.removeprefix("insert: ")
        return None if enclosing_loop(before, m.line - 1, statement == "break;") else f"{statement} outside a loop"
    if changed == "(line deleted)":
        return None
    visible = re.sub(r"/\*.*?\*/", "", changed)
    for pair in ("()", "{}", "[]"):
        if original.count(pair[0]) - original.count(pair[1]) != visible.count(pair[0]) - visible.count(pair[1]):
            return f"unbalanced {pair}"
    prefix = len(os.path.commonprefix([original, changed]))
    suffix = len(os.path.commonprefix([original[prefix:][::-1], changed[prefix:][::-1]]))
    new = changed[prefix:len(changed) - suffix]
    if (re.search(r"[A-Za-z_]\(\d+[-+]1\)\w", changed) or
            (re.fullmatch(r"\d+", new) and prefix and re.match(r"\w", original[prefix - 1])
             and re.match(r"[A-Za-z_]", changed[len(changed) - suffix:] or " "))):
        return "a number changed inside an identifier"
    if re.search(r"[+\-*/%|^]\s*[%/|^*]\s*[);\]]|[%/|^]\s*[);\]]", visible) and not \
            re.search(r"[+\-*/%|^]\s*[%/|^*]\s*[);\]]|[%/|^]\s*[);\]]", original):
        return "an operator with no operand"
    for constant in re.finditer(r"\((?:0|1)==(?:0|1)\)", visible):
        before_it = visible[:constant.start()].rstrip()
        last = re.search(r"(\w+|\S)$", before_it)
        if last and (last.group(1) == ")" or (re.fullmatch(r"\w+", last.group(1))
                                             and last.group(1) not in ("if", "while", "return", "switch"))):
            return "an operand where an operator belongs"
    if prefix < len(original) and original[prefix] == "*" and TYPE_BEFORE_STAR.search(original[:prefix]):
        return "a declarator's * turned into an operator"
    if re.search(r"[(,]\s*[|%/^<>]", visible) and not re.search(r"[(,]\s*[|%/^<>]", original):
        return "a binary operator where an operand starts"
    if changed == f"/*{original}*/" and DECLARATION.match(original):
        return "a declaration commented out"
    return None


def enclosing_loop(lines: list[str], index: int, switch_too: bool) -> bool:
    """Whether the end of line `index` (0-based: an inserted statement follows it) is inside a for,
    while or do loop (or a switch, with `switch_too`) of its function: the blocks enclosing it,
    found by their braces walking up, to the function's own `{` (in column 0)."""
    unmatched = 0   # closing braces seen walking up, still to be matched by an opening one
    for i in range(index, -1, -1):
        code = NOT_CODE.sub("", lines[i])
        for pos in range(len(code) - 1, -1, -1):
            if code[pos] == "}":
                unmatched += 1
            elif code[pos] == "{":
                if unmatched:
                    unmatched -= 1
                    continue
                if pos == 0 and i > 0 and not code.strip().startswith("{ "):   # a function's body
                    return False
                header = code[:pos] if code[:pos].strip() else (lines[i - 1] if i else "")
                if re.search(r"\b(for|while|do)\b", header) or (switch_too and re.search(r"\bswitch\b", header)):
                    return True
    return False


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


def judge(m: Mutant, work: Path, cfg: RunConfig, baseline: dict[str, str], folder: Path, guest: str,
          seen: dict[tuple[str, str], Mutant]) -> None:
    """Build `m` in the work tree and give it its verdict; `seen`: (file, object sha) -> the first
    mutant with that object code (duplicates take its verdict)."""
    src, build = work / "src", work / "build"
    target = f"qemu-system-{cfg.arch.name}"
    selection, qtests = PATCH_TESTS[m.patch]
    original = (src / m.path).read_text()
    reason = never_compiles(m, original.splitlines())
    if reason:
        m.verdict, m.by = "stillborn", f"{reason} (seen without compiling)"
        return
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
        m.obj = sha(obj) if obj is not None else ""
        if m.obj and m.obj == baseline.get(m.path):
            m.verdict, m.by = "equivalent", "object code identical to the original's"
            return
        first = seen.get((m.path, m.obj)) if m.obj else None
        if first is not None:
            m.verdict, m.by = "duplicate", f"object code identical to {first.path}:{first.line}'s ({first.verdict})"
            return
        binary = str(build / target)
        env = {k: v for k, v in cfg.build_env().items() if k not in (results.RUN_DIR_ENV, "PYTEST_ADDOPTS")}
        env.update(QEMU=binary, GUEST_DIR=guest)
        # the layers in order of cost: the device-level tests (seconds), the series' qtests, the guest
        verdict = pytest_stage(f"device and ({selection})", env, folder / "device", parallel=False)
        if verdict is not None:
            m.verdict, m.by = verdict[0], f"device: {verdict[1]}"
            return
        failed = run_qtests(build, binary, qtests, folder)
        if failed and "exit 124" in failed:   # timeout(1) ended a hung qtest: a hang is not a verdict
            m.verdict, m.by = "timeout", failed
            return
        if failed:
            m.verdict, m.by = "killed", f"qtest: {failed}"
            return
        verdict = pytest_stage(f"not device and ({selection})", env, folder, parallel=True)
        if verdict is not None:
            m.verdict, m.by = verdict[0], f"guest: {verdict[1]}"
        else:
            m.verdict, m.by = "survived", f"the device-level and guest tests and {len(qtests)} qtests passed"
    finally:
        (src / m.path).write_text(original)


def pytest_stage(selection: str, env: dict[str, str], folder: Path, parallel: bool) -> tuple[str, str] | None:
    """The acceptance tests of `selection` (-x) on env's QEMU: ("killed", by what) or ("timeout",
    why); None if none failed (or none was selected)."""
    jobs = min(os.cpu_count() or 1, 4) if parallel else 1
    folder.mkdir(parents=True, exist_ok=True)
    rc, _ = run_logged([sys.executable, "-m", "pytest", "tests/acceptance", "-x", "-p", "no:cacheprovider",
                        *(["-n", str(jobs)] if jobs > 1 else []), "-m", selection],
                       {**env, "RESULTS_DIR": str(folder)}, folder / "pytest.log", bound=TEST_BOUND_S)
    junit_xml = folder / "latest" / "junit.xml"
    if rc == -1:
        return "timeout", f"the tests did not finish within {TEST_BOUND_S:g} s"
    if not junit_xml.is_file():
        return no_results_verdict(rc, (folder / "pytest.log").read_text(errors="replace"))
    bad = [c for c in junit.read(junit_xml) if c.outcome in ("failed", "error")]
    return ("killed", f"{bad[0].short_name}: {bad[0].message[:140]}") if bad else None


def no_results_verdict(rc: int, log: str) -> tuple[str, str]:
    """A pytest run that ended by itself without results: the preflight refusing the mutant's QEMU
    (it crashes at `-version`, say) is a kill, since no test can use it; anything else is reported
    like a timeout (not a verdict), with pytest's last line."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    refused = next((ln for ln in lines if "preflight:" in ln and "QEMU" in ln), None)
    if refused:
        return "killed", refused[refused.index("preflight:"):][:200]
    return "timeout", f"pytest exit {rc} without results: {lines[-1][:160] if lines else 'no output'}"


def table(mutants: list[Mutant], generated: dict[str, int] | None = None) -> str:
    """Per patch: mutants generated, tried (built), and of those stillborn, equivalent, duplicate,
    judged, killed, ...; the score is killed / judged, with its 95% interval when only a sample of
    the patch's mutants was tried."""
    out = ["| patch | generated | tried | stillborn | equivalent | duplicate | judged | killed | survived | timeout "
           "| score | 95% interval |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for patch in sorted({m.patch for m in mutants}):
        ms = [m for m in mutants if m.patch == patch and m.verdict]
        n = {v: sum(m.verdict == v for m in ms)
             for v in ("stillborn", "equivalent", "duplicate", "killed", "survived", "timeout")}
        judged = n["killed"] + n["survived"] + n["timeout"]
        score = f"{100 * n['killed'] / judged:.0f}%" if judged else "-"
        total = (generated or {}).get(patch, len(ms))
        lo, hi = wilson(n["killed"], judged)
        interval = "all tried" if len(ms) >= total else (f"{100 * lo:.0f}-{100 * hi:.0f}%" if judged else "-")
        out.append(f"| {patch} | {total} | {len(ms)} | {n['stillborn']} | {n['equivalent']} | {n['duplicate']} | "
                   f"{judged} | {n['killed']} | {n['survived']} | {n['timeout']} | {score} | {interval} |")
    judged_eq = [m for m in mutants if m.verdict == "equivalent" and m.by.startswith("judged by reading")]
    if judged_eq:
        out += ["", "Equivalent by reading (out of the score):", ""]
        out += [f"- {m.patch} `{m.path}:{m.line}` `{m.original}` -> `{m.changed}`: {m.by.split(': ', 1)[-1]}"
                for m in judged_eq]
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
    per_patch: list[list[Mutant]] = []
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="nvme-hotswap-mutants-") as tmp:
        in_series = series_added_lines(sorted(ROOT.glob("patches/0*.patch")))
        for patch in sorted(ROOT.glob("patches/0*.patch")):
            number = patch.name[:4]
            if number not in wanted or number not in PATCH_TESTS:
                continue
            generated = [m for path, lines in in_series[number].items()
                         for m in generate(number, work / "src", path, lines, Path(tmp) / number)]
            counts[number] = len(generated)
            rng.shuffle(generated)
            per_patch.append(generated)
    # round robin over the patches, each in its seeded random order: a run cut short by the budget
    # (or the sample) has judged a random sample of every patch, not all of the first one
    mutants = [m for group in itertools.zip_longest(*per_patch) for m in group if m is not None]
    print(f"mutation-score: {len(mutants)} mutants of patches {' '.join(wanted)} ({counts}); judging "
          f"{str(sample) + ' per patch' if sample else 'all'}; work tree {work}", flush=True)
    subprocess.run(["ninja", "-C", str(work / "build"), f"qemu-system-{cfg.arch.name}"], check=True,
                   stdout=subprocess.DEVNULL, timeout=BUILD_BOUND_S)
    baseline = {m.path: sha(o) for m in mutants if (o := object_of(work / "build", m.path)) is not None}
    store = VerdictStore(cfg.cache_root / "mutation-verdicts.json", suite_key(entry.name, guest),
                         fresh=os.environ.get("MUTATION_FRESH") == "1")
    seen: dict[tuple[str, str], Mutant] = {}
    start = time.monotonic()
    judged: dict[str, int] = {}
    budget = float(os.environ.get("MUTATION_BUDGET_S", "0"))
    for i, m in enumerate(mutants, 1):
        if sample and judged.get(m.patch, 0) >= sample:
            continue
        if budget and time.monotonic() - start > budget:
            print(f"mutation-score: the budget of {budget:g} s is spent; {i - 1} of {len(mutants)} mutants tried",
                  flush=True)
            break
        t0 = time.monotonic()
        if not store.recall(m):
            judge(m, work, cfg, baseline, out / f"{m.patch}-{i:04d}", guest, seen)
            store.keep(m)
        if m.obj and m.verdict in (*JUDGED, "equivalent"):
            seen.setdefault((m.path, m.obj), m)
        judged[m.patch] = judged.get(m.patch, 0) + (m.verdict in JUDGED)
        print(f"mutant {i} {m.patch} {m.path}:{m.line}: {m.verdict} ({m.by})"
              f"{' [kept verdict]' if m.kept else f' {time.monotonic() - t0:.0f} s'}", flush=True)
    subprocess.run(["ninja", "-C", str(work / "build"), f"qemu-system-{cfg.arch.name}"], check=False,
                   stdout=subprocess.DEVNULL, timeout=BUILD_BOUND_S)   # leave the work tree built as the series
    tried = [m for m in mutants if m.verdict]
    apply_equivalents(tried, read_equivalents())
    (run / "mutation-score.json").write_text(json.dumps({"generated": counts, "sample_per_patch": sample, "mutants": [
        dataclasses.asdict(m) | {"text": None} for m in tried]}, indent=2) + "\n")
    md = table(tried, counts)
    (run / "mutation-score.md").write_text("# Generated mutants\n\n" + md)
    print("\n" + md + f"\n{time.monotonic() - start:.0f} s; results: {run / 'mutation-score.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
