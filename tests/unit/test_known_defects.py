"""Known upstream defects (nvme_hotswap/known_defects.py) and the plug registry's undo (QemuMachine)."""
import subprocess
import sys
import textwrap
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

from nvme_hotswap import known_defects
from nvme_hotswap.config import ROOT
from nvme_hotswap.known_defects import KnownDefect, judge
from nvme_hotswap.report import junit
from nvme_hotswap.vm.machine import QemuMachine

FINDING = "docs/findings/virtio-blk-config-after-drive-del.md"
UPSTREAM = known_defects.UPSTREAM_11_1_3
DEFECT = KnownDefect(FINDING, r"QEMU (exited|died|was killed).*SIGSEGV", UPSTREAM)


class Judge(unittest.TestCase):
    def test_the_documented_failure_on_the_release_reads_known(self) -> None:
        v = judge([DEFECT], UPSTREAM, "failed", "AssertionError: QEMU was killed by SIGSEGV during a guest command")
        assert v is not None
        self.assertEqual(v.outcome, "known")
        self.assertIn(f"known upstream defect ({FINDING})", v.message)

    def test_never_on_another_build(self) -> None:
        for package in ("", None, "Debian 1:10.2.2+ds-1", "Debian 1:11.1.4+ds-1"):
            with self.subTest(package=package):
                self.assertIsNone(judge([DEFECT], package, "failed", "QEMU was killed by SIGSEGV"))

    def test_a_pass_on_the_release_fails_until_the_marker_goes(self) -> None:
        v = judge([DEFECT], UPSTREAM, "passed", "")
        assert v is not None
        self.assertEqual(v.outcome, "failed")
        self.assertIn("did not reproduce", v.message)
        self.assertIn("remove the marker", v.message)

    def test_another_failure_stays_a_failure(self) -> None:
        v = judge([DEFECT], UPSTREAM, "failed", "AssertionError: 'x' != 'y'")
        assert v is not None
        self.assertEqual(v.outcome, "failed")
        self.assertIn("a new failure", v.message)

    def test_skips_are_left_alone(self) -> None:
        self.assertIsNone(judge([DEFECT], UPSTREAM, "skipped", ""))

    def test_a_marker_needs_its_finding(self) -> None:
        with self.assertRaises(ValueError):
            known_defects.known_defect("docs/findings/no-such-finding.md", "x")


PLANTED = '''
import unittest
from nvme_hotswap import known_defects

class T(unittest.TestCase):
    @known_defects.known_defect({finding!r}, r"the documented way")
    def test_fails_as_documented(self):
        raise AssertionError("broken in the documented way")

    @known_defects.known_defect({finding!r}, r"the documented way")
    def test_fails_otherwise(self):
        raise AssertionError("broken in a new way")

    @known_defects.known_defect({finding!r}, r"the documented way")
    def test_fixed(self):
        pass
'''


# A pytest plugin for the planted run: the QEMU's package as the probe would report it, without a QEMU.
FAKE_PROBE = """
import sys
def pytest_collection_finish(session):
    sys.modules["conftest"]._package_under_test = lambda: {package!r}
"""


class UnderPytest(unittest.TestCase):
    """The markers through conftest.py's hook, on a planted test file, with the probe's answer
    replaced by a plugin of this test's own (production code has no way to claim a package)."""

    def run_planted(self, package: str, tmp: Path) -> dict[str, junit.Case]:
        test = ROOT / "tests" / "unit" / "planted_known_defect_test.py"
        test.write_text(textwrap.dedent(PLANTED.format(finding=FINDING)))
        (tmp / "fake_probe.py").write_text(FAKE_PROBE.format(package=package))
        try:
            xml = tmp / "junit.xml"
            subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "fake_probe",
                            str(test), f"--junitxml={xml}", "-o", "python_files=planted_*.py"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={**_env(), "PYTHONPATH": str(tmp), "RESULTS_DIR": str(tmp)})
            return {c.name: c for c in junit.read(xml)}
        finally:
            test.unlink()

    def test_outcomes(self) -> None:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            cases = self.run_planted(UPSTREAM, Path(tmp))
            self.assertEqual(cases["test_fails_as_documented"].outcome, "known")
            self.assertIn("known upstream defect", cases["test_fails_as_documented"].message)
            self.assertEqual(cases["test_fails_otherwise"].outcome, "failed")
            self.assertEqual(cases["test_fixed"].outcome, "failed")
            ours = self.run_planted("", Path(tmp))
            self.assertEqual({n: c.outcome for n, c in ours.items()},
                             {"test_fails_as_documented": "failed", "test_fails_otherwise": "failed",
                              "test_fixed": "passed"})

    def test_junit_reads_xfail_as_known(self) -> None:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "junit.xml")
            suite = ET.Element("testsuite")
            case = ET.SubElement(suite, "testcase", classname="a.B", name="test_x", time="1")
            ET.SubElement(case, "skipped", type="pytest.xfail", message=f"known upstream defect ({FINDING}): x")
            ET.ElementTree(suite).write(path)
            self.assertEqual(junit.read(path)[0].outcome, "known")


def _env() -> dict[str, str]:
    import os
    return {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", "PYTEST_CURRENT_TEST")}


class PlugRegistry(unittest.TestCase):
    """Each successful plug registers its unplug; each unplug takes it back (no QEMU: the registry's
    bookkeeping on recorded monitor commands)."""

    def machine(self) -> QemuMachine:
        return QemuMachine(Path("/nonexistent"), [], Path("/nonexistent"))

    def test_plugs_and_unplugs(self) -> None:
        vm = self.machine()
        vm._note_plug("hmp", "drive_add", {"line": "drive_add 0 if=none,id=drv2_2,file=/x.img,format=raw", "out": "OK"})
        vm._note_plug("qmp", "device_add", {"driver": "nvme-ns", "id": "ns2_2", "drive": "drv2_2"})
        vm._note_plug("qmp", "blockdev-add", {"driver": "raw", "node-name": "faulty"})
        self.assertEqual(vm.plugged(), ["blockdev-del faulty", "device_del ns2_2", "drive_del drv2_2"])
        vm._note_plug("qmp", "x-blockdev-reconnect", {"id": "/machine/peripheral/vblk", "node-name": "faulty"})
        vm._note_plug("qmp", "device_del", {"id": "ns2_2"})
        self.assertEqual(vm.plugged(), ["drive_del drv2_2"])
        vm._note_plug("hmp", "drive_del", {"line": "drive_del drv2_2", "out": ""})
        self.assertEqual(vm.plugged(), [])

    def test_refused_commands_register_nothing(self) -> None:
        vm = self.machine()
        vm._note_plug("hmp", "drive_add", {"line": "drive_add 0 if=none,id=bad,file=/x", "out": "Could not open"})
        vm._note_plug("hmp", "drive_del", {"line": "drive_del drv2", "out": "Device 'drv2' not found"})
        self.assertEqual(vm.plugged(), [])

    def test_undo_runs_last_first_and_reports_what_failed(self) -> None:
        vm = self.machine()
        done: list[str] = []
        vm._plugged = {"a": ("undo a", lambda: done.append("a")),
                       "b": ("undo b", lambda: (_ for _ in ()).throw(AssertionError("no DEVICE_DELETED"))),
                       "c": ("undo c", lambda: done.append("c"))}
        failed = vm.undo_plugs()
        self.assertEqual(done, ["c", "a"])
        self.assertEqual(failed, ["undo b: no DEVICE_DELETED"])
        self.assertEqual(vm.plugged(), [])
