"""The evidence report: parsing lines recorded by real runs (monitor transcript, guest dmesg), and the reports."""
import json
import tempfile
import unittest
from pathlib import Path

from nvme_hotswap.guest.facts import KernelLine, parse_dmesg
from nvme_hotswap.report import evidence, junit
from nvme_hotswap.report.evidence import model, parse, render
from nvme_hotswap.vm.topology import Topology

MONITOR = """\
16:42:16 +   0.000s launch /root/.cache/nvme-hotswap/qemu/f556335196722069/build/qemu-system-x86_64 -machine q35
16:42:21 +   4.675s hmp>   info usernet
16:42:21 +   4.677s hmp<   Hub -1 (net0):
  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
  TCP[HOST_FORWARD]  15       127.0.0.1 37405       10.0.2.15    22     0     0
16:42:22 +   5.444s hmp>   drive_del drv2
16:42:22 +   5.445s hmp<   
16:42:22 +   5.732s hmp>   drive_insert ns2 /tmp/ci1/results/2026-11-24T164108Z/tests/test_drive_reconnect.DriveReconnect.test_same_file/disks/disk-nvme2n1.img
16:42:22 +   5.733s hmp<   
16:42:22 +   5.733s hmp>   pcie_aer_inject_error rp2 SDN
16:42:22 +   5.734s hmp<   OK id: rp2 root bus: 0000:00, bus: 0 devfn: 12.0
16:42:23 +   6.802s exit   exit code 0
"""  # noqa: E501, W291 (recorded verbatim: the empty replies end in spaces)

DMESG = """\
[    3.740682] nvme nvme2: Ignoring bogus Namespace Identifiers
[    5.022597] nvme-hotswap: mark cb88264c1cf4
[    5.100516] nvme2n1: I/O Cmd(0x2) @ LBA 0, 8 blocks, I/O Error (sct 0x2 / sc 0x81) 
[    5.101566] critical medium error, dev nvme2n1, sector 0 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2
[    5.316267] pcieport 0000:00:12.0: AER: Uncorrected (Fatal) error message received from 0000:00:12.0
[    5.316965] pcieport 0000:00:12.0: PCIe Bus Error: severity=Uncorrected (Fatal), type=Transaction Layer, (Receiver ID)
[    5.317287] pcieport 0000:00:12.0:    [ 5] SDES                   (First)
[    5.317747] nvme nvme2: frozen state error detected, reset controller
[    5.501290] pcieport 0000:00:12.0: AER: Root Port link has been reset (0)
[    5.501536] nvme nvme2: restart after slot reset
[    5.521898] nvme nvme2: 2/0/0 default/read/poll queues
[    5.522808] pcieport 0000:00:12.0: AER: device recovery successful
"""  # noqa: E501, W291 (recorded verbatim)

# test_hot_remove_and_replug: two marks, two commands, one QMP event in between.
REPLUG_MONITOR = """\
16:43:05 +   5.646s qmp>   {"execute": "device_del", "arguments": {"id": "ns2"}}
16:43:05 +   5.647s event  {"timestamp": {"seconds": 1795538584, "microseconds": 938820}, "event": "NIC_RX_FILTER_CHANGED", "data": {"path": "/machine/peripheral-anon/device[0]/virtio-backend"}}
16:43:05 +   5.657s event  {"timestamp": {"seconds": 1795538585, "microseconds": 767888}, "event": "DEVICE_DELETED", "data": {"device": "ns2", "path": "/machine/peripheral/ns2"}}
16:43:06 +   6.505s qmp>   {"execute": "device_add", "arguments": {"driver": "nvme-ns", "id": "ns2", "drive": "drv2", "bus": "nvme2", "nsid": 1}}
16:43:06 +   6.507s qmp>   query-pci
"""  # noqa: E501 (recorded verbatim)
REPLUG_DMESG = """\
[    5.195098] nvme-hotswap: mark 2f5641d80384
[    5.199883] nvme nvme2: rescanning namespaces.
[    6.052640] nvme-hotswap: mark e2c32b17296e
[    6.059791] nvme nvme2: rescanning namespaces.
"""


class Monitor(unittest.TestCase):
    def test_entries_with_continuation_lines(self) -> None:
        entries = parse.parse_monitor(MONITOR)
        self.assertEqual([e.kind for e in entries], ["launch", "hmp>", "hmp<", "hmp>", "hmp<", "hmp>", "hmp<",
                                                     "hmp>", "hmp<", "exit"])
        self.assertIn("127.0.0.1 37405", entries[2].text)
        self.assertEqual((entries[3].seconds, entries[3].text), (5.444, "drive_del drv2"))

    def test_operator_form_skips_noise_and_shortens_paths(self) -> None:
        commands = [parse.shorten_paths(c) for c in map(parse.operator_form, parse.parse_monitor(MONITOR)) if c]
        self.assertEqual(commands, ["drive_del drv2", "drive_insert ns2 disks/disk-nvme2n1.img",
                                    "pcie_aer_inject_error rp2 SDN"])

    def test_qmp_commands_in_hmp_form(self) -> None:
        commands = [c for c in map(parse.operator_form, parse.parse_monitor(REPLUG_MONITOR)) if c]
        self.assertEqual(commands, ["device_del ns2", "# event DEVICE_DELETED ns2",
                                    "device_add nvme-ns,id=ns2,drive=drv2,bus=nvme2,nsid=1"])


class KernelProof(unittest.TestCase):
    def test_recovery_lines_labelled(self) -> None:
        labels = [label for _, label in parse.proof_lines(parse_dmesg(DMESG))]
        self.assertEqual(labels, ["mark", "I/O fails", "fatal error received", "SDES", "frozen, reset",
                                  "link reset", "restart after slot reset", "recovery successful (I/O resumes)"])

    def test_recovery_failed(self) -> None:
        lines = parse_dmesg("[    6.352193] pcieport 0000:00:12.0: AER: device recovery failed\n")
        self.assertEqual([label for _, label in parse.proof_lines(lines)], ["recovery failed"])


class HotSwaps(unittest.TestCase):
    def test_one_swap_in_milliseconds_per_clock(self) -> None:
        [swap] = parse.hot_swaps(parse.parse_monitor(MONITOR), parse.proof_lines(parse_dmesg(DMESG)))
        self.assertEqual([(round(ms), n) for ms, n in swap.host_ms()],
                         [(0, "drive_del"), (288, "drive_insert"), (289, "pcie_aer_inject_error")])
        guest = dict((label, round(ms)) for ms, label in swap.guest_ms())
        self.assertEqual((guest["mark"], guest["fatal error received"], guest["recovery successful (I/O resumes)"]),
                         (0, 294, 500))

    def test_each_mark_gets_the_command_after_it(self) -> None:
        swaps = parse.hot_swaps(parse.parse_monitor(REPLUG_MONITOR),
                              parse.proof_lines(parse_dmesg(REPLUG_DMESG)))
        self.assertEqual([[n for _, n in s.host_ms()] for s in swaps], [["device_del"], ["device_add"]])
        self.assertEqual([[label for _, label in s.guest_ms()] for s in swaps], [["mark", "AEN rescan"]] * 2)

    def test_no_mark_no_timeline(self) -> None:
        self.assertEqual(parse.hot_swaps(parse.parse_monitor(MONITOR), []), [])


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite>
<testcase classname="tests.acceptance.test_drive_reconnect.DriveReconnect" name="test_same_file" time="6.8" />
<testcase classname="tests.acceptance.test_drive_reconnect.DriveReconnect" name="test_replacement_disk" time="0.1">
<skipped message="CANCEL: QEMU lacks drive_insert" /></testcase>
</testsuite></testsuites>"""


class Report(unittest.TestCase):
    def test_missing_artifacts_do_not_fail_the_report(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp)
            (run / "junit.xml").write_text(JUNIT)
            (run / "tests" / "test_drive_reconnect.DriveReconnect.test_replacement_disk").mkdir(parents=True)
            passed = run / "tests" / "test_drive_reconnect.DriveReconnect.test_same_file"
            passed.mkdir()
            (passed / "vm-monitor.log").write_text(MONITOR)   # no guest-dmesg.log, no environment.json
            evidence.write_reports(run)
            md = (run / "EVIDENCE.md").read_text()
            self.assertIn("(qemu) pcie_aer_inject_error rp2 SDN", md)
            self.assertIn("environment.json missing", md)
            self.assertNotIn("Tested-by", md)   # one test was cancelled
            self.assertIn("<table>", (run / "EVIDENCE.html").read_text())

    def test_truncated_transcript_is_reported_not_raised(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp)
            (run / "junit.xml").write_text(JUNIT)
            passed = run / "tests" / "test_drive_reconnect.DriveReconnect.test_same_file"
            passed.mkdir(parents=True)
            (passed / "vm-monitor.log").write_text('16:43:05 +   5.646s qmp>   {"execute": "device_del", "argu\n')
            self.assertIn("unreadable", render.to_markdown(model.build(run)))

    def test_tested_by_only_when_all_passed(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp)
            (run / "junit.xml").write_text(JUNIT.replace('<skipped message="CANCEL: QEMU lacks drive_insert" />', ""))
            self.assertIn("Tested-by:", render.to_markdown(model.build(run)))


class Render(unittest.TestCase):
    """Both templates on a small Report: the Markdown as written for the list, the HTML escaped."""

    REPORT = model.Report(
        title="NVMe hot-swap acceptance: run1",
        counts=model.Counts(passed=1, failed=1, error=0, skipped=0),
        environment=(model.EnvItem("QEMU 10.2.2, built from src with 1 patches:", ("`0001-a.patch` sha256 `44f4`",)),),
        results=(model.ResultRow("test_a.A.test_swap", "passed", 4.12, ""),
                 model.ResultRow("test_b.B.test_fails", "failed", 0.04, "AssertionError: 3 < 4 | <script>")),
        scenarios=(model.Scenario("test_a.A.test_swap", commands=("drive_del drv2", "# event DEVICE_DELETED ns2"),
                                  kernel_log=(KernelLine(5.022597, "nvme-hotswap: mark cb88264c1cf4"),),
                                  notes=(model.Note("Names", "nvme2 -> nvme3 `by-id`"),)),),
        trailer=None)

    def test_markdown(self) -> None:
        md = render.to_markdown(self.REPORT)
        self.assertTrue(md.startswith("# NVMe hot-swap acceptance: run1\n\n1 passed, 1 failed, 0 errors, 0 skipped"))
        self.assertIn("- QEMU 10.2.2, built from src with 1 patches:\n  - `0001-a.patch` sha256 `44f4`\n", md)
        self.assertIn("| test_b.B.test_fails | failed | 0.0 | AssertionError: 3 < 4 / <script> |\n", md)
        self.assertIn("### test_a.A.test_swap\n\n```\n(qemu) drive_del drv2\n# event DEVICE_DELETED ns2\n\n"
                      "# guest kernel log\n[    5.022597] nvme-hotswap: mark cb88264c1cf4\n```\n\n"
                      "Names: nvme2 -> nvme3 `by-id`\n", md)
        self.assertTrue(md.endswith("`by-id`\n"))   # one newline at the end, no trailer: a test failed

    def test_html_is_escaped(self) -> None:
        page = render.to_html(self.REPORT, plots=False)
        self.assertIn("<td class='AssertionError: 3 &lt; 4 | &lt;script&gt;'>AssertionError: 3 &lt; 4 | &lt;script&gt;"
                      "</td>", page)
        self.assertNotIn("<script>", page)
        self.assertIn("<li><code>0001-a.patch</code> sha256 <code>44f4</code></li>", page)
        self.assertIn("<pre>(qemu) drive_del drv2\n# event DEVICE_DELETED ns2\n\n# guest kernel log\n", page)
        self.assertIn("<p>Names: nvme2 -&gt; nvme3 <code>by-id</code></p>", page)
        self.assertTrue(page.endswith("</p>\n</body></html>\n"))


class TopologyRecord(unittest.TestCase):
    def test_as_dict(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            record = Topology.create(Path(tmp), controllers=3, size_mib=1, subsys=True).as_dict(True)
        json.dumps(record)
        nvme2 = record["controllers"][2]
        self.assertEqual((nvme2["id"], nvme2["serial"], nvme2["pci_address"], nvme2["port_pci_address"],
                          nvme2["subsys"]), ("nvme2", "NVMEHS0002", "0000:03:00.0", "0000:00:12.0", "subsys2"))
        self.assertEqual(nvme2["namespaces"][0]["drive"], "drv2")
        self.assertTrue(record["native_pcie_hotplug"])


class TrailerRule(unittest.TestCase):
    """Tested-by names a person who tested the series: not after a failure, not without the series."""

    def case(self, outcome: str, message: str = "") -> junit.Case:
        return junit.Case("tests.acceptance.test_x.X", f"test_{outcome}", outcome, 1.0, message)

    def test_a_cancel_outside_the_series_does_not_block_it(self) -> None:
        cancel = self.case("skipped", "CANCEL: needs the cloud guest (GUEST=cloud): the fast guest has no udev")
        self.assertTrue(model.trailer_allowed([self.case("passed"), cancel]))

    def test_a_failure_or_a_missing_series_blocks_it(self) -> None:
        self.assertFalse(model.trailer_allowed([self.case("passed"), self.case("failed", "AssertionError")]))
        self.assertFalse(model.trailer_allowed([self.case("passed"), self.case("error")]))
        lacks = self.case("skipped", "CANCEL: QEMU lacks drive_insert (unknown command: 'drive_insert')")
        self.assertFalse(model.trailer_allowed([self.case("passed"), lacks]))
        self.assertFalse(model.trailer_allowed([]))
