"""Write EVIDENCE.md for a run: what was tested, on what, and what happened.

Reads results/latest (or the run folder given as argument): junit.xml, environment.json and
the per-test artifacts. The Markdown is meant to be pasted into a reply on the list.
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from . import config


def outcomes(junit: Path) -> list[dict[str, str]]:
    """One row per test case: name, outcome (passed/failed/error/skipped), seconds, message."""
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            el = case.find(kind)
            if el is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (el.get("message") or "").splitlines()[0] if el.get("message") else ""
                break
        rows.append({"name": f"{case.get('classname', '')}.{case.get('name', '')}".lstrip("."),
                     "outcome": outcome, "seconds": f"{float(case.get('time', 0)):.1f}", "message": message})
    return rows


def render(run: Path) -> str:
    env = json.loads((run / "environment.json").read_text()) if (run / "environment.json").exists() else {}
    rows = outcomes(run / "junit.xml") if (run / "junit.xml").exists() else []
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("passed", "failed", "error", "skipped")}
    out = [f"# NVMe hot-swap acceptance: {run.name}", "",
           f"{counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors, "
           f"{counts['skipped']} skipped/cancelled", "", "## Environment", ""]
    for key in sorted(env):
        out.append(f"- {key}: `{json.dumps(env[key]) if isinstance(env[key], (dict, list)) else env[key]}`")
    out += ["", "## Results", "", "| test | outcome | s | note |", "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['name']} | {r['outcome']} | {r['seconds']} | {r['message'].replace('|', '/')[:160]} |")
    renames = sorted(run.glob("tests/*/renaming.txt"))
    if renames:
        out += ["", "## Controller replacement renames the disk (today's behaviour)", ""]
        out += [f"- {p.read_text().strip()}" for p in renames]
    caps = env.get("capabilities") or {}
    if caps.get("nvme_ns_hotplug") and caps.get("drive_insert_hmp") and counts["failed"] == counts["error"] == 0:
        out += ["", f"Tested-by: nvme-hotswap-acceptance (QEMU {caps.get('version')}, accel {env.get('accelerator')})"]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    run = Path(argv[1]) if len(argv) > 1 else config.results_root() / "latest"
    if not run.exists():
        print(f"no results at {run}: run `make check-acceptance` first", file=sys.stderr)
        return 1
    run = run.resolve()
    (run / "EVIDENCE.md").write_text(render(run))
    print(f"evidence: {run / 'EVIDENCE.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
