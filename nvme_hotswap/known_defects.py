"""Known defects of an upstream release: a test that fails on it for a documented reason reads as such.

A reviewer running the suite on upstream's own release (`make check-upstream`) must tell a defect
already reported (docs/findings/) from a new one, without the test being switched off: the test
still runs and must still fail as the finding describes (its failure text matches `fails_with`).
Then the run reports it as "known upstream defect (docs/findings/...)" (pytest: xfail, junit:
skipped of type pytest.xfail) and the run's status ignores it. Strict both ways: a test that now
passes fails the run ("upstream fixed it? remove the marker"), and a failure of another kind stays
a failure. A marker names the release it was seen on by the package string QEMU itself reports
(QMP query-version's `package`): our build, a mutant or another release never matches it.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from .config import ROOT

#: What upstream QEMU 11.1.3 as Debian builds it says of itself (query-version's package).
UPSTREAM_11_1_3 = "Debian 1:11.1.3+ds-1"
ATTRIBUTE = "known_defects"
PREFIX = "known upstream defect"

F = TypeVar("F", bound=Callable[..., object])


@dataclasses.dataclass(frozen=True)
class KnownDefect:
    finding: str        # docs/findings/<name>.md, relative to the project's root
    fails_with: str     # a regex the failure's text must match (the defect as the finding shows it)
    qemu_package: str   # the release it applies to, as QEMU reports it (query-version's package)

    def applies_to(self, package: str | None) -> bool:
        return bool(package) and package == self.qemu_package


def known_defect(finding: str, fails_with: str, qemu_package: str = UPSTREAM_11_1_3) -> Callable[[F], F]:
    """Mark a test method as failing on `qemu_package` because of the defect documented in `finding`."""
    if not (ROOT / finding).is_file():
        raise ValueError(f"known_defect: {finding} does not exist; write the finding first")
    re.compile(fails_with)   # a bad regex fails at import, not in the run

    def mark(func: F) -> F:
        marks = list(getattr(func, ATTRIBUTE, ()))
        marks.append(KnownDefect(finding, fails_with, qemu_package))
        setattr(func, ATTRIBUTE, tuple(marks))
        return func
    return mark


def of(func: object) -> tuple[KnownDefect, ...]:
    return tuple(getattr(func, ATTRIBUTE, ()))


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: str        # passed, failed or known (a known defect, reproduced as documented)
    message: str        # for known: the reason the run shows; for failed: what to add to the failure


def judge(defects: Sequence[KnownDefect], package: str | None, outcome: str, failure: str) -> Verdict | None:
    """How a test's outcome reads under its markers on the QEMU reporting `package`; None: as it is
    (no marker applies, or the test was skipped)."""
    applying = [d for d in defects if d.applies_to(package)]
    if not applying or outcome not in ("passed", "failed"):
        return None
    if outcome == "passed":
        names = ", ".join(d.finding for d in applying)
        return Verdict("failed", f"{PREFIX} ({names}) did not reproduce on QEMU '{package}': the behaviour changed "
                                 "(upstream fixed it?); check the finding and remove the marker")
    for d in applying:
        if re.search(d.fails_with, failure, re.MULTILINE):
            first = next((line.strip() for line in failure.splitlines()
                          if re.search(d.fails_with, line)), "")
            return Verdict("known", f"{PREFIX} ({d.finding}): {first[:200]}")
    wanted = "; ".join(f"/{d.fails_with}/ ({d.finding})" for d in applying)
    return Verdict("failed", f"this test has a {PREFIX} marker, but it failed otherwise: its failure matches none "
                             f"of {wanted}: a new failure")
