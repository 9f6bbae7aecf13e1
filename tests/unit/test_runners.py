"""Avocado and pytest find the same acceptance tests (README promises both runners)."""
import re
import subprocess
import sys
import unittest
from pathlib import Path

from nvme_hotswap.config import ROOT

AVOCADO = Path(sys.executable).parent / "avocado"


def avocado_tests() -> set[str]:
    out = subprocess.run([str(AVOCADO), "list", "tests/acceptance"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    # "avocado-instrumented tests/acceptance/test_x.py:Class.test_y" (or python-unittest)
    return {m.group(1) for m in re.finditer(r"^\S+\s+(tests/acceptance/\S+)$", out, re.MULTILINE)}


def pytest_tests() -> set[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "tests/acceptance"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    # "tests/acceptance/test_x.py::Class::test_y" -> the avocado form "tests/acceptance/test_x.py:Class.test_y"
    return {re.sub(r"::", ":", line, count=1).replace("::", ".")
            for line in out.splitlines() if line.startswith("tests/acceptance/")}


class SameTests(unittest.TestCase):
    def test_avocado_and_pytest_collect_the_same_set(self) -> None:
        avocado, pytest = avocado_tests(), pytest_tests()
        self.assertGreaterEqual(len(pytest), 30, "pytest collected too few acceptance tests")
        self.assertEqual(avocado, pytest, f"only avocado: {sorted(avocado - pytest)}; "
                                          f"only pytest: {sorted(pytest - avocado)}")


if __name__ == "__main__":
    unittest.main()
