"""`python -m nvme_hotswap.report.evidence [run_folder]`: write the run's EVIDENCE.md and EVIDENCE.html.

The folder defaults to results/latest (config.current().results_root); each file written is printed.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ... import config
from .render import write_reports


def main(argv: list[str]) -> int:
    run = Path(argv[1]) if len(argv) > 1 else config.current().results_root / "latest"
    if not run.exists():
        print(f"no results at {run}: run `make check-acceptance` first", file=sys.stderr)
        return 1
    for path in write_reports(run.resolve()):
        print(f"evidence: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
