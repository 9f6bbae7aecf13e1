"""pytest's junit.xml, read once for every report (evidence, mutation check, nightly)."""
from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Case:
    classname: str      # tests.acceptance.test_drive_reconnect.DriveReconnect
    name: str           # test_same_file
    outcome: str        # passed, failed, error, skipped (a cancel is a skip) or known (a known upstream
                        # defect, reproduced as its finding says: pytest's xfail)
    seconds: float
    message: str        # first line of the failure, error or skip message ("" when passed)

    @property
    def full_name(self) -> str:
        return f"{self.classname}.{self.name}".lstrip(".")

    @property
    def short_name(self) -> str:
        """Class.test: what the tables show."""
        return f"{self.classname.rsplit('.', 1)[-1]}.{self.name}"


def read(path: Path) -> list[Case]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = ("failed" if tag == "failure" else
                           "known" if el.get("type") == "pytest.xfail" else tag)
                message = (el.get("message") or "").splitlines()[0] if el.get("message") else ""
                break
        cases.append(Case(case.get("classname", ""), case.get("name", ""), outcome,
                          float(case.get("time") or 0), message))
    return cases
