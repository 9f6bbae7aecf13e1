"""The results of a run: results/<UTC timestamp>/ with a `latest` link, one folder per test.

Layout of a run folder:
  junit.xml                    pytest's JUnit report (CI systems read it)
  environment.json             QEMU, its capabilities, accelerator, guest, host, packages
  tests/<test id>/             per-test artifacts: test.log, console, QEMU stderr,
                               monitor transcript, SSH transcript, guest kernel log
"""
from __future__ import annotations

import datetime
import functools
import json
import os
import re
from pathlib import Path

from .. import config

RUN_DIR_ENV = "NVME_HOTSWAP_RUN_DIR"


@functools.cache
def run_dir() -> Path:
    """This run's folder; created once and shared with child processes through the environment."""
    existing = os.environ.get(RUN_DIR_ENV)
    if existing:
        path = Path(existing)
        path.mkdir(parents=True, exist_ok=True)
        return path
    root = config.current().results_root
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    path = root / stamp
    n = 1
    while True:
        try:
            path.mkdir(parents=True)
            break
        except FileExistsError:  # two runs started in the same second
            n += 1
            path = root / f"{stamp}-{n}"
    latest = root / "latest"
    tmp = root / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(path.name)
    tmp.replace(latest)
    os.environ[RUN_DIR_ENV] = str(path)
    return path


def test_dir(test_id: str) -> Path:
    """The artifact folder of one test, named after its id with path-unsafe characters replaced."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_id).strip("_")
    path = run_dir() / "tests" / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


def worker_folder(name: str) -> Path:
    """`name` in this run's folder, suffixed with the pytest-xdist worker (gw0, gw1, ...) when there
    is one, so processes of one run (`pytest -n 2`) never write the same files."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return run_dir() / (f"{name}-{worker}" if worker else name)


def record_environment(extra: dict[str, object]) -> Path:
    """Merge `extra` into environment.json of this run and return its path. The file is replaced
    atomically (xdist workers record the same environment; a reader never sees half a file)."""
    path = run_dir() / "environment.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(extra)
    tmp = path.with_name(f".environment.json.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path


if __name__ == "__main__":
    # `python -m nvme_hotswap.report.results`: make this run's folder now and print it, so a Makefile recipe
    # can hand the same folder to pytest and to the evidence report (NVME_HOTSWAP_RUN_DIR) and a
    # second run started meanwhile (which moves results/latest) cannot mix them up.
    print(run_dir())
