"""Bounded polling: every wait in the suite has a bound and says what it waited for."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message names what was awaited and the last value seen."""


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Call `predicate` until it returns a truthy value; return that value.

    Raises WaitTimeout after `timeout` seconds, naming `what` and the last value seen, so a
    failure reads as "waited 10 s for nvme2n1 to appear; last seen: [...]".
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"waited {timeout:g} s for {what}; last seen: {last!r}")
        time.sleep(interval)
