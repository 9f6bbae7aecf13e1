"""make review SERIES=...: a series from the list, tested before and after, patch by patch, to a reply.

1. Read SERIES with b4 (nvme_hotswap/review/series.py): cover, version, order, Message-Ids.
2. The base: our pinned Debian QEMU (the suite's default), or QEMU_SRC, plus the patches of
   REVIEW_BASE_PATCHES (a PATCHES folder, e.g. patches/upstream-11.1: a base as upstream 11.1); the cover's
   `base-commit:` picks a commit of QEMU_SRC when it has it; a git range's start is its base.
   A patch the base already holds (it reverse-applies there) is skipped, and the reply says so.
3. Every prefix of the remaining patches is built (scripts/build-qemu.sh with a PATCHES folder of
   the first k mails: cached per prefix, ccache for what is shared), checkpatch'd, and probed
   (vm/capabilities.py): "1/5 ... enables nvme-ns hotplug". A patch that does not apply or does
   not build is named with git's or the compiler's reason, and the later prefixes are not built.
4. The acceptance suite on the base and on the whole series; per scenario, both outcomes. The
   device-level tests (seconds, no guest) run on every prefix too: the patch-by-patch list says
   how each prefix fares at the level Linux cannot see.
5. Each test that fails with the series is bisected on its own over the prefixes (a cancel there,
   its capability not in yet, is not a failure) to name its first bad patch ("2/5"); the reply
   answers the earliest such patch's own message.
6. A series that adds or changes tests in QEMU's tests/functional has them run on its whole build
   (scripts/check-series.sh with QTESTS=functional: meson test, offline); a test that ran and
   failed is a problem of the reply, one that could not run here (a missing asset) is listed as
   not run.
7. REVIEW.md (the body) and REVIEW.eml (the draft) in the run folder. Tested-by (git config
   user.name/user.email) only when every test that applies to the series passed: a cancel for a
   capability the series does not provide, or for a reason outside it, does not block it.

Exit status: 0 reply with Tested-by; 1 a problem was found (the reply says which); 2 SERIES or
the environment could not be used (nothing was tested).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .. import preflight
from ..config import ROOT, RunConfig
from ..guest.facts import KernelLine
from ..report import junit, results
from ..report.evidence import model
from ..review import reply
from ..review import series as series_mod
from ..review.series import Patch, Series, SeriesError
from ..vm import capabilities
from ..vm.capabilities import Capabilities
from .proc import run_logged, sigterm_as_interrupt

NEEDS = ("nvme_ns_hotplug", "reconnect_qmp", "drive_insert")
#: capabilities a series may lack without that being a problem: either interface of reconnection, our
#: drive_insert's format argument (the cover letter's command has none)
OPTIONAL = ("reconnect", "drive_insert_format")
ENABLES = {"nvme_ns_hotplug": "nvme-ns hotplug", "reconnect_qmp": f"QMP {capabilities.RECONNECT_QMP_COMMAND}",
           "drive_insert": "HMP drive_insert"}
SUITE_BOUND_S = 1800.0
#: a mail's diff touching a functional test (QEMU's tests/functional/<arch or generic>/test_*.py)
FUNCTIONAL_DIFF = re.compile(r"^diff --git a/tests/functional/[^/\s]+/test_[^/\s]+\.py ", re.M)


@dataclasses.dataclass
class Prefix:
    patches: list[Patch]
    binary: Path | None = None
    caps: Capabilities | None = None


def child_env(cfg: RunConfig, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in cfg.build_env().items() if k not in (results.RUN_DIR_ENV, "PYTEST_ADDOPTS")}
    return {**env, **extra}


def build(env: dict[str, str], log: Path) -> tuple[Path | None, str]:
    """scripts/build-qemu.sh under `env`: (binary, "") or (None, why: git's or the build's own lines)."""
    rc, last = run_logged(["bash", str(ROOT / "scripts" / "build-qemu.sh")], env, log)
    if rc == 0 and last and Path(last).is_file():
        return Path(last), ""
    text = log.read_text(errors="replace").splitlines()
    reasons = [ln.strip() for ln in text if ln.startswith(("error:", "fatal:", "Patch failed", "[build-qemu.sh] ERROR"))
               or ": error:" in ln]
    return None, "; ".join(dict.fromkeys(reasons[-4:])) or f"scripts/build-qemu.sh exit {rc} (log: {log})"


def in_base(mail: Path, base_src: Path) -> bool:
    """The base already holds this patch: its diff applies in reverse there."""
    return subprocess.run(["git", "-C", str(base_src), "apply", "--check", "-R", str(mail)],
                          capture_output=True).returncode == 0


def checkpatch(mail: Path, src: Path) -> str:
    """checkpatch.pl's `total:` line for one mail (scripts/checkpatch.pl of the tree under test)."""
    script = src / "scripts" / "checkpatch.pl"
    if not script.is_file():
        return ""
    proc = subprocess.run(["perl", str(script), str(mail)], cwd=src, capture_output=True, text=True, timeout=300)
    return next((ln for ln in proc.stdout.splitlines() if ln.startswith("total:")), "no total line")


def probe(cfg: RunConfig, binary: Path, folder: Path) -> Capabilities:
    return capabilities.probe(RunConfig.from_env(child_env(cfg, QEMU=str(binary))), folder)


def enables(before: Capabilities | None, after: Capabilities) -> str:
    new = [ENABLES[n] for n in NEEDS if after.missing(n) is None and (before is None or before.missing(n) is not None)]
    return ", ".join(new)


def run_suite(cfg: RunConfig, binary: Path, guest: Path, folder: Path,
              tests: list[str] | None = None) -> list[junit.Case]:
    """The acceptance suite (or the node ids `tests`) on `binary`; its junit cases."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = min(os.cpu_count() or 1, 4)
    cmd = [sys.executable, "-m", "pytest", *(tests or ["tests/acceptance"]), "-p", "no:cacheprovider",
           *(["-n", str(jobs)] if jobs > 1 else [])]
    run_logged(cmd, child_env(cfg, QEMU=str(binary), GUEST_DIR=str(guest), RESULTS_DIR=str(folder)),
               folder / "pytest.log", bound=SUITE_BOUND_S)
    xml = folder / "latest" / "junit.xml"
    return junit.read(xml) if xml.is_file() else []


def device_level(cases: list[junit.Case]) -> str:
    """The device-level tests on one prefix, as the patch-by-patch list shows them."""
    if not cases:
        return "did not run"
    passed = sum(c.outcome == "passed" for c in cases)
    failed = [c.name for c in cases if c.outcome in ("failed", "error")]
    cancelled = sum(c.outcome == "skipped" for c in cases)
    parts = [f"{passed} passed"] + ([f"{cancelled} cancelled"] if cancelled else [])
    return ", ".join(parts) + (f", {len(failed)} FAILED: {', '.join(failed)}" if failed else "")


def node_id(case: junit.Case) -> str:
    module, cls = case.classname.rsplit(".", 1)
    return f"{module.replace('.', '/')}.py::{cls}::{case.name}"


def phrase(case: junit.Case | None, run: Path) -> str:
    """One outcome as the before/after list shows it."""
    if case is None:
        return "not run"
    if case.outcome == "skipped":
        reason = case.message.removeprefix("CANCEL: ")
        if reason.startswith(model.SERIES_MISSING):   # "QEMU lacks drive_insert (...): series patch ..."
            reason = re.split(r" \(|: ", reason, maxsplit=1)[0]
        return f"cancelled: {reason}"
    if case.outcome in ("failed", "error"):
        return f"FAILED: {case.message[:160]}"
    folder = model.test_dir(run, case.full_name)
    notes = []
    for artifact in ("renaming.txt", "observed.txt"):
        path = folder / artifact if folder else None
        if path is not None and path.is_file():
            notes += [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return "passed" + (f": {'; '.join(dict.fromkeys(notes))}" if notes else "")


def earns_trailer(cases: list[junit.Case], caps: Capabilities | None) -> bool:
    """Every test that applies to the series passed: nothing failed, something passed, and a
    "QEMU lacks" cancel only for a capability the whole series does not provide."""
    if caps is None or not any(c.outcome == "passed" for c in cases):
        return False
    if any(c.outcome in ("failed", "error") for c in cases):
        return False
    lacking = [r for n in (*NEEDS, *OPTIONAL) if (r := caps.missing(n)) is not None]
    return all(any(r in c.message for r in lacking) for c in cases
               if c.outcome == "skipped" and model.SERIES_MISSING in c.message)


def holds(tree: Path, folder: Path) -> bool:
    """Whether the work tree holds exactly `folder`'s patches and no mutant."""
    want = [hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in (folder / "series").read_text().split()]
    have = [ln.split()[0] for ln in (tree / "applied").read_text().splitlines() if ln.strip()]
    dirty = subprocess.run(["git", "-C", str(tree / "src"), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return have == want and not dirty


def functional(patches: list[Patch], binary: Path, folder: Path, log: Path,
               base_env: dict[str, str] | None = None) -> tuple[str, ...]:
    """The series' own functional tests, run in the work tree that built `binary` (the whole series:
    `folder`'s patches, no mutant). () when the series brings none."""
    if not any(FUNCTIONAL_DIFF.search(p.mail.read_text(errors="replace")) for p in patches):
        return ()
    entry = binary.parent.parent
    if (entry / "build" / "build.ninja").exists() and (entry / "src").is_dir():
        build_dir = entry / "build"      # a full build of exactly these patches (cached under their key)
    else:
        done = (entry / "DONE").read_text() if (entry / "DONE").exists() else ""
        m = re.search(r"incremental=(\S+)", done)
        if m is None:
            return (f"not run: {binary} has neither its build tree nor a work tree (no incremental= in its DONE)",)
        tree = Path(m.group(1))
        if not holds(tree, folder):
            # the binary came from the cache and the tree moved on (a mutant, another series): build
            # the series there again
            env = {**(base_env or os.environ), "PATCHES": str(folder), "QEMU_INCREMENTAL": "1",
                   "QEMU_REBUILD": "1", "TARGET_BIN": binary.name}
            rebuilt, why = build(env, log.with_name("functional-build.log"))
            if rebuilt is None or not holds(tree, folder):
                return (f"not run: the work tree {tree} could not be brought to the series: "
                        f"{why or 'it holds another build'}",)
        build_dir = tree / "build"
    env = {**os.environ, "QTESTS": "functional", "PY": sys.executable, "TARGET_BIN": binary.name}
    # under the work tree's lock: a build (another review, check-mutants) must not change it meanwhile
    rc, _ = run_logged(["flock", f"{build_dir.parent}.lock", "bash", str(ROOT / "scripts" / "check-series.sh"),
                        str(build_dir)], env, log)
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines()
             if ln.startswith("  ") and ln.strip().startswith(("func-", "functional"))]
    return tuple(lines) or (f"not run: check-series ran no functional test (exit {rc}; log: {log})",)


def bisect(cfg: RunConfig, prefixes: list[Prefix], failing: list[str], guest: Path, work: Path) -> dict[str, int]:
    """Per failing test (node id), the index into `prefixes` of the first whose build fails it (the
    last prefix is known bad for all). Each test is bisected on its own: a test that needs a later
    patch cancels before it, and a cancel is not a failure, so it is not blamed on an earlier patch
    that broke another test. A prefix is run once, with every failing test, whatever asked for it."""
    last = len(prefixes) - 1
    seen: dict[int, set[str]] = {last: set(failing)}   # prefix index -> the tests that fail there

    def failing_at(i: int) -> set[str]:
        if i not in seen:
            binary = prefixes[i].binary
            assert binary is not None
            cases = run_suite(cfg, binary, guest, work / f"bisect-{i + 1}", failing)
            seen[i] = {node_id(c) for c in cases if c.outcome in ("failed", "error")} & set(failing)
            print(f"review: bisect: prefix {i + 1}: {len(seen[i])} of {len(failing)} failing", flush=True)
        return seen[i]

    first: dict[str, int] = {}
    for test in failing:
        lo, hi = 0, last
        while lo < hi:
            mid = (lo + hi) // 2
            if test in failing_at(mid):
                hi = mid
            else:
                lo = mid + 1
        first[test] = hi
    return first


def first_swap(lines: tuple[KernelLine, ...]) -> tuple[str, ...]:
    """The proof lines of a scenario's first hot-swap: up to its first recovery or rescan."""
    out: list[str] = []
    for line in lines:
        if out and line.text.startswith("nvme-hotswap: mark"):
            break
        out.append(str(line))
        if "device recovery successful" in line.text or "rescanning namespaces" in line.text:
            break
    return tuple(out)


def excerpt(run: Path, case: junit.Case, lines: int = 6) -> tuple[str, ...]:
    """The guest kernel log after the failing test's last mark (what its last step made the guest
    say), at most `lines` of it; nothing when the guest said nothing."""
    folder = model.test_dir(run, case.full_name)
    log = folder / "guest-dmesg.log" if folder else None
    if log is None or not log.is_file():
        return ()
    text = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    marks = [i for i, ln in enumerate(text) if "nvme-hotswap: mark" in ln]
    return tuple(text[marks[-1] + 1:][:lines]) if marks else ()


def base_patches(env: dict[str, str]) -> list[Path]:
    """The patch files the base itself is built with (REVIEW_BASE_PATCHES's series), in order, read
    by scripts/lib.sh's series_patches: the series format has one reader."""
    folder = env.get("PATCHES", "none")
    if folder == "none":
        return []
    proc = subprocess.run(["bash", "-c", f'. "{ROOT}/scripts/lib.sh" && series_patches "$1"', "_", folder],
                          capture_output=True, text=True, check=True)
    return [Path(p) for p in proc.stdout.splitlines() if p]


def base_source(cfg: RunConfig, s: Series, work: Path) -> tuple[dict[str, str], str, Path | None]:
    """The base build's environment, its description for the reply, and a git worktree to remove."""
    qemu_src = cfg.build_env().get("QEMU_SRC")
    base_patches = cfg.build_env().get("REVIEW_BASE_PATCHES", "")
    env = child_env(cfg, PATCHES=base_patches or "none")
    env.pop("MUTANT", None)
    commit = ""
    if series_mod.is_range(s.source):
        commit = series_mod.base_of_range(s.source)
    elif s.base_hint.startswith("base-commit: ") and qemu_src:
        sha = s.base_hint.split()[1]
        if subprocess.run(["git", "-C", qemu_src, "cat-file", "-e", f"{sha}^{{commit}}"],
                          capture_output=True).returncode == 0:
            commit = sha
    if qemu_src and commit:
        tree = work / "base-tree"
        subprocess.run(["git", "-C", qemu_src, "worktree", "remove", "--force", str(tree)], capture_output=True)
        subprocess.run(["git", "-C", qemu_src, "worktree", "add", "--detach", str(tree), commit],
                       check=True, capture_output=True)
        for sub in Path(qemu_src, "subprojects").glob("*/"):   # fetched subprojects: no network to fetch again
            if not (tree / "subprojects" / sub.name).exists():
                shutil.copytree(sub, tree / "subprojects" / sub.name, symlinks=True)
        env["QEMU_SRC"] = str(tree)
        return env, f"{commit} of QEMU_SRC={qemu_src}" + (f" (the cover's {s.base_hint})" if s.base_hint else ""), tree
    deb = env.get("QEMU_DEB_VERSION", "1:10.2.2+ds-1")
    what = f"HEAD of QEMU_SRC={qemu_src}" if qemu_src else f"Debian's qemu {deb} (the suite's default)"
    if base_patches:
        what += f" with the patches of REVIEW_BASE_PATCHES={base_patches}"
    if s.base_hint:
        what += f"; the cover's {s.base_hint} is not available here"
    return env, what, None


def main() -> int:
    sigterm_as_interrupt()
    start = time.monotonic()
    spec = os.environ.get("SERIES", "")
    if not spec:
        print("review: set SERIES to an mbox, a folder of git format-patch files, a git range in QEMU_SRC "
              "or a Message-Id (make review SERIES=...)", file=sys.stderr)
        return 2
    cfg = preflight.exit_unless_ready(qemu=False, who="review")   # the base and each prefix are built here
    guest = cfg.guest_dir
    run = results.run_dir()
    work = run / "review"
    qemu_src = cfg.build_env().get("QEMU_SRC")
    try:
        s = series_mod.read(spec, work, Path(qemu_src) if qemu_src else None)
    except SeriesError as exc:
        print(f"review: {exc}", file=sys.stderr)
        return 2
    print(f"review: {s.subject}: {s.total} patches"
          + (f", cover {s.cover_message_id}" if s.cover_message_id else ", no cover letter"), flush=True)
    base_env, base_what, tree = base_source(cfg, s, work)
    try:
        return review(cfg, s, guest, run, work, base_env, base_what, start)
    finally:
        if tree is not None and qemu_src:
            subprocess.run(["git", "-C", qemu_src, "worktree", "remove", "--force", str(tree)], capture_output=True)


def review(cfg: RunConfig, s: Series, guest: Path, run: Path, work: Path, base_env: dict[str, str],
           base_what: str, start: float) -> int:
    base_bin, why = build(base_env, work / "build-base.log")
    if base_bin is None:
        print(f"review: the base does not build: {why}", file=sys.stderr)
        return 2
    base_src = base_bin.parent.parent / "src"   # the base's tree as built (its patches applied)
    base_caps = probe(cfg, base_bin, work / "probe-base")
    steps: list[reply.PatchStep] = []
    prefixes: list[Prefix] = []
    taken: list[Patch] = []
    broken = False
    for p in s.patches:
        if broken:
            steps.append(reply.PatchStep(p, "not built", "an earlier patch failed", "", ""))
            continue
        if in_base(p.mail, base_src):
            steps.append(reply.PatchStep(p, "skipped", "the base already has it", "", ""))
            print(f"review: {s.label(p)} {p.subject}: already in the base, skipped", flush=True)
            continue
        taken.append(p)
        folder = s.quilt(work / f"prefix-{p.number}", taken, base_patches(base_env))
        t0 = time.monotonic()
        # incremental: in the shared work tree, only what the next patch changes is recompiled
        binary, why = build({**base_env, "PATCHES": str(folder), "QEMU_INCREMENTAL": "1"},
                            work / f"build-{p.number}.log")
        cp = checkpatch(p.mail, base_src)
        if binary is None:
            status = "does not apply" if "does not apply" in why else "does not build"
            steps.append(reply.PatchStep(p, status, why, cp, ""))
            print(f"review: {s.label(p)} {p.subject}: {status}: {why}", flush=True)
            broken = True
            continue
        caps = probe(cfg, binary, work / f"probe-{p.number}")
        prev = prefixes[-1].caps if prefixes else base_caps
        prefixes.append(Prefix(list(taken), binary, caps))
        device = device_level(run_suite(cfg, binary, guest, work / f"device-{p.number}", ["tests/acceptance", "-m",
                                                                                        "device"]))
        steps.append(reply.PatchStep(p, "applied", "", cp, enables(prev, caps), device))
        print(f"review: {s.label(p)} {p.subject}: built in {time.monotonic() - t0:.0f} s; {cp}"
              + (f"; enables {steps[-1].enables}" if steps[-1].enables else ""), flush=True)
    series_bin = prefixes[-1].binary if prefixes else None
    func: tuple[str, ...] = ()
    if series_bin is not None and not broken:
        func = functional(taken, series_bin, work / f"prefix-{prefixes[-1].patches[-1].number}",
                          work / "functional.log", base_env)
        for line in func:
            print(f"review: functional: {line}", flush=True)
    print("review: the suite on the base", flush=True)
    base_cases = run_suite(cfg, base_bin, guest, work / "base")
    series_cases: list[junit.Case] = []
    if series_bin is not None and not broken:
        print("review: the suite with the series", flush=True)
        series_cases = run_suite(cfg, series_bin, guest, work / "series")
    base_run, series_run = work / "base" / "latest", work / "series" / "latest"
    by_base = {c.full_name: c for c in base_cases}
    rows = tuple(reply.Row(f"{c.name} ({c.classname.rsplit('.', 1)[-1]})", phrase(by_base.get(c.full_name), base_run),
                           phrase(c, series_run))
                 for c in sorted(series_cases or base_cases, key=lambda c: (c.classname, c.name)))
    failed = [c for c in series_cases if c.outcome in ("failed", "error")]
    first_at: dict[str, int] = {}
    if failed and len(prefixes) > 1:
        first_at = bisect(cfg, prefixes, [node_id(c) for c in failed], guest, work)
    elif failed and prefixes:
        first_at = {node_id(c): 0 for c in failed}
    bad_of = {t: prefixes[i].patches[-1] for t, i in first_at.items()}
    failures = tuple(reply.Failure(c.short_name, c.message, bad_of.get(node_id(c)), excerpt(series_run, c))
                     for c in failed)
    # the reply answers the earliest patch found bad
    first_bad: Patch | None = prefixes[min(first_at.values())].patches[-1] if first_at else None
    scen = model.build(series_run).scenarios if series_cases else ()
    proof = next((sc for sc in scen if sc.kernel_log and "Reconnect" in sc.name), next(iter(scen), None))
    identity = model.git_identity()
    last_caps = prefixes[-1].caps if prefixes else None
    trailer = f"Tested-by: {identity}" if series_cases and earns_trailer(series_cases, last_caps) else None
    env_lines = [item.text.replace("`", "") for item in model.build(series_run if series_cases else base_run)
                 .environment[1:3]]
    bad_bin = next((pf.binary for pf in prefixes if first_bad is not None and pf.patches[-1] == first_bad), series_bin)
    reproduce = [f"make review SERIES={s.source}" + (f" QEMU_SRC={cfg.build_env()['QEMU_SRC']}"
                                                      if cfg.build_env().get("QEMU_SRC") else ""),
                 *([f"QEMU={bad_bin} GUEST_DIR={guest} make check-acceptance "
                    f"PYTEST_ARGS=\"-k '{failed[0].classname.rsplit('.', 1)[-1]} and {failed[0].name}'\""]
                   if failed else []),
                 f"base: {base_what}", f"guest: {guest}"]
    r = reply.Review(s, base_what, tuple(env_lines), tuple(steps), rows, first_swap(proof.kernel_log) if proof else (),
                     tuple(f"{c.short_name}: {c.message.removeprefix('CANCEL: ')}" for c in series_cases
                           if c.outcome == "skipped"),
                     failures, trailer, tuple(reproduce), time.monotonic() - start, func)
    quoted_mail = first_bad.mail if first_bad is not None else (work / "b4" / "series.cover")
    quoted = series_mod.quoted_text(quoted_mail if quoted_mail.exists() else s.patches[0].mail)
    (run / "REVIEW.md").write_text(reply.body(r))
    (run / "REVIEW.eml").write_bytes(bytes(reply.message(r, identity, quoted)))
    problem = bool(failed) or broken or not series_cases or reply.functional_failed(r)
    print("\n" + reply.body(r))
    if identity.startswith("Your Name"):
        print("review: git config user.name / user.email are not set: the draft's From and Tested-by say "
              "'Your Name'; set them and run again", file=sys.stderr)
    print(f"review: {'found a problem' if problem else 'Tested-by offered' if trailer else 'no trailer'}; "
          f"{run / 'REVIEW.md'}, {run / 'REVIEW.eml'} ({time.monotonic() - start:.0f} s)")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
