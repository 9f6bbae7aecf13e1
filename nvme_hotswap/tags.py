"""Avocado docstring tags (`:avocado: tags=a,b,key:value`), read the way avocado reads them.

Under avocado the runner filters on them (`avocado run -t nvme ...`); under pytest conftest.py
turns each into a marker (`-m nvme`, `-m needs_drive_insert`). `needs:<capability>` tags also
drive the cancel-with-reason of tests the QEMU under test cannot run.
"""
from __future__ import annotations

import re

_DIRECTIVE = re.compile(r"^\s*:avocado:\s*tags\s*=\s*(\S+)\s*$", re.MULTILINE)


def from_docstring(doc: str | None) -> list[str]:
    """All tags in `doc`, in order, without duplicates."""
    seen: list[str] = []
    for m in _DIRECTIVE.finditer(doc or ""):
        for tag in m.group(1).split(","):
            if tag and tag not in seen:
                seen.append(tag)
    return seen


def of_test(cls: type, method_name: str) -> list[str]:
    """Class tags followed by the method's own, as avocado merges them."""
    method = getattr(cls, method_name, None)
    merged = from_docstring(cls.__doc__)
    return merged + [t for t in from_docstring(getattr(method, "__doc__", None)) if t not in merged]


def marker_name(tag: str) -> str:
    """A pytest marker name for a tag: `needs:drive_insert` -> `needs_drive_insert`."""
    return re.sub(r"\W", "_", tag)


def needs(tags: list[str]) -> list[str]:
    """The capabilities named by `needs:<capability>` tags."""
    return [t.split(":", 1)[1] for t in tags if t.startswith("needs:")]
