"""make ci-local: the GitLab pipeline (.gitlab-ci.yml) on this machine, with gitlab-ci-local.

What gitlab-ci-local does differently from GitLab, and what this program does about it (docs/ci.md):
- It says CI_PIPELINE_SOURCE=push: we pass `schedule` (the nightly's jobs; CI_LOCAL_SOURCE=
  merge_request_event runs what a merge request runs, `make check`).
- It starts every ready job at once: `--concurrency` CI_LOCAL_CONCURRENCY (default 2, a cell a core)
  and JOBS=1 inside a cell (one guest per job).
- It enforces no `timeout:` and leaves a job's children running when it is stopped: each job runs
  under scripts/ci-job.sh, which bounds it by its JOB_TIMEOUT_S and ends it, QEMUs by PID, once
  CI_LOCAL_PID (this program) is gone; this program runs gitlab-ci-local in a process group of its
  own and ends that group by its PID on Ctrl-C, SIGTERM or exit.
- It wipes a job's artifacts at the job's next run: the history of earlier pipelines lives in a store
  of its own, NIGHTLY_HISTORY (default ~/.local/state/nvme-hotswap/ci-local/nightly-history.jsonl).
- Its matrix job names are not GitLab's: a cell's identity travels in its own cell.json.

gitlab-ci-local itself comes from npm, pinned (GCL_VERSION), into ~/.cache/nvme-hotswap/tools/, and is
reinstalled when `--version` does not answer with that version. The variables in PASSED reach the jobs
when set here (MUTANT=no-aen-on-plug make ci-local runs the pipeline against that mutant). The whole
output goes to stdout and to results/ci-local/<time>/pipeline.log; the exit status is gitlab-ci-local's.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..config import ROOT, RunConfig

#: The newest gitlab-ci-local that runs on Node.js 20 (4.74.0 calls Set.prototype.union: Node.js 22).
GCL_VERSION = "4.73.0"
MIN_NODE = 20
#: Variables passed on to the jobs when they are set here.
PASSED = ("MUTANT", "PATCHES", "QEMU_SRC", "QEMU_DEB_VERSION", "QEMU_DEVICES", "ACCEL", "NIGHTLY_CELLS",
          "NIGHTLY_PYTEST_ARGS", "NIGHTLY_SLOWER", "NIGHTLY_SLOWER_MIN_S", "MUTATION_FRESH")


class CiLocalError(RuntimeError):
    """What keeps gitlab-ci-local from running here, and what to do."""


def node_major() -> int | None:
    node = shutil.which("node")
    if node is None:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    try:
        return int(out.lstrip("v").split(".")[0])
    except ValueError:
        return None


def gitlab_ci_local(cache: Path) -> Path:
    """The pinned gitlab-ci-local, installed from npm when missing or damaged."""
    major = node_major()
    if major is None or major < MIN_NODE:
        raise CiLocalError(f"gitlab-ci-local {GCL_VERSION} needs Node.js {MIN_NODE} or newer; found "
                           f"{'none' if major is None else f'Node.js {major}'}: install Node.js {MIN_NODE}+ "
                           "(e.g. from npm's `node` package or your distribution's backports)")
    prefix = cache / "tools" / f"gitlab-ci-local-{GCL_VERSION}"
    binary = prefix / "node_modules" / ".bin" / "gitlab-ci-local"

    def answers() -> bool:
        if not binary.exists():
            return False
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
        return out.returncode == 0 and out.stdout.strip() == GCL_VERSION

    if not answers():
        shutil.rmtree(prefix, ignore_errors=True)
        print(f"ci-local: installing gitlab-ci-local {GCL_VERSION} from npm into {prefix}", flush=True)
        npm = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                              f"gitlab-ci-local@{GCL_VERSION}"], capture_output=True, text=True, check=False)
        if npm.returncode != 0 or not answers():
            raise CiLocalError(f"could not install gitlab-ci-local {GCL_VERSION} with npm (exit {npm.returncode}): "
                               f"{(npm.stderr or npm.stdout).strip()[-500:]}; check that npm reaches its registry")
    return binary


def history_store() -> Path:
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return Path(os.environ.get("NIGHTLY_HISTORY") or state / "nvme-hotswap" / "ci-local" / "nightly-history.jsonl")


def command(binary: Path, source: str, concurrency: int, history: Path) -> list[str]:
    """The gitlab-ci-local command line: the whole pipeline, non-interactive, our variables."""
    variables = {"CI_PIPELINE_SOURCE": source, "NIGHTLY_HISTORY": str(history), "CI_LOCAL_PID": str(os.getpid()),
                 "JOBS": "1", **{k: os.environ[k] for k in PASSED if os.environ.get(k)}}
    cmd = [str(binary), "--concurrency", str(concurrency),
           "--ignore-predefined-vars", "CI_PIPELINE_SOURCE"]
    for key, value in variables.items():
        cmd += ["--variable", f"{key}={value}"]
    return cmd


def main() -> int:
    cfg = RunConfig.from_env()
    try:
        binary = gitlab_ci_local(cfg.cache_root)
    except CiLocalError as exc:
        print(f"ci-local: {exc}", file=sys.stderr)
        return 2
    source = os.environ.get("CI_LOCAL_SOURCE", "schedule")
    concurrency = int(os.environ.get("CI_LOCAL_CONCURRENCY", "2"))
    history = history_store()
    folder = ROOT / "results" / "ci-local" / datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    folder.mkdir(parents=True, exist_ok=True)
    cmd = command(binary, source, concurrency, history)
    print(f"ci-local: gitlab-ci-local {GCL_VERSION}, CI_PIPELINE_SOURCE={source}, --concurrency {concurrency}, "
          f"history {history}; log {folder / 'pipeline.log'}", flush=True)
    with (folder / "pipeline.log").open("w") as log:
        log.write(" ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"})
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log.write(line)
            return proc.wait()
        except KeyboardInterrupt:
            print("ci-local: interrupted; ending gitlab-ci-local (its jobs end themselves once this "
                  "program is gone: scripts/ci-job.sh)", file=sys.stderr)
            return 130
        finally:
            end_group(proc)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def end_group(proc: subprocess.Popen[str], grace: float = 90.0) -> None:
    """End gitlab-ci-local's process group by its PID: SIGTERM reaches every job's scripts/ci-job.sh,
    which ends its command (pytest ends its QEMUs) within its own grace; wait for the whole group to
    be gone, then SIGKILL what is left."""
    if proc.poll() is None or group_alive(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


if __name__ == "__main__":
    from .proc import sigterm_as_interrupt
    sigterm_as_interrupt()
    sys.exit(main())
