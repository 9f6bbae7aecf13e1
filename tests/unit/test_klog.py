"""Kernel-log patterns against lines printed by Debian 12 (6.1) and Debian 13 (6.12) guests."""
import unittest

from nvme_hotswap.guest import klog
from nvme_hotswap.guest.facts import parse_dmesg

PORT = "0000:00:12.0"
RECOVERY_6_1 = parse_dmesg("""[   20.100000] pcieport 0000:00:12.0: AER: Uncorrected (Fatal) error received: 0000:00:12.0
[   20.100100] pcieport 0000:00:12.0: PCIe Bus Error: severity=Uncorrected (Fatal), type=Transaction Layer, (Receiver ID)
[   20.100200] pcieport 0000:00:12.0:    [ 5] SDES                   (First)
[   20.100300] nvme nvme2: frozen state error detected, reset controller
[   20.700000] pcieport 0000:00:12.0: AER: Root Port link has been reset (0)
[   20.710000] nvme nvme2: restart after slot reset
[   20.740000] nvme nvme2: 2/0/0 default/read/poll queues
[   20.750000] pcieport 0000:00:12.0: AER: device recovery successful
""")
FATAL_6_12 = parse_dmesg(
    "[ 3.0] pcieport 0000:00:12.0: AER: Multiple Uncorrectable (Fatal) error message received from 0000:00:12.0\n")


class Patterns(unittest.TestCase):
    def test_recovery_sequence_on_6_1(self) -> None:
        for template, names in [(klog.AER_FATAL_RECEIVED, {"port": PORT}), (klog.AER_SDES, {}),
                                (klog.NVME_FROZEN, {"ctrl": "nvme2"}), (klog.NVME_SLOT_RESET, {"ctrl": "nvme2"}),
                                (klog.LINK_RESET_OK, {"port": PORT}), (klog.RECOVERY_OK, {"port": PORT})]:
            with self.subTest(template=template):
                self.assertEqual(len(klog.find(RECOVERY_6_1, template, **names)), 1)

    def test_fatal_wording_of_6_12(self) -> None:
        self.assertTrue(klog.find(FATAL_6_12, klog.AER_FATAL_RECEIVED, port=PORT))

    def test_names_are_matched_exactly(self) -> None:
        self.assertFalse(klog.find(RECOVERY_6_1, klog.NVME_FROZEN, ctrl="nvme1"))
        self.assertFalse(klog.find(RECOVERY_6_1, klog.RECOVERY_OK, port="0000:00:11.0"))
        self.assertFalse(klog.find(RECOVERY_6_1, klog.RECOVERY_FAILED, port=PORT))

    def test_rescan_and_boot_lines(self) -> None:
        lines = parse_dmesg("[1.0] nvme nvme2: rescanning namespaces.\n"
                            "[0.5] pcieport 0000:00:10.0: AER: enabled with IRQ 24\n"
                            "[0.6] pcieport 0000:00:10.0: pciehp: Slot #1 AttnBtn+ PwrCtrl+ MRL- AttnInd+ "
                            "PwrInd+ HotPlug+ Surprise+ Interlock+ NoCompl- IbPresDis- LLActRep+\n")
        self.assertTrue(klog.find(lines, klog.NS_RESCAN, ctrl="nvme2"))
        self.assertFalse(klog.find(lines, klog.NS_RESCAN, ctrl="nvme20"))
        self.assertTrue(klog.find(lines, klog.AER_ENABLED, port="0000:00:10.0"))
        self.assertTrue(klog.find(lines, klog.PCIEHP_SLOT, port="0000:00:10.0"))


class Trouble(unittest.TestCase):
    def test_clean_log_has_no_trouble(self) -> None:
        self.assertEqual(klog.trouble(RECOVERY_6_1), [])

    def test_warning_is_reported_with_its_context(self) -> None:
        lines = parse_dmesg("[1.0] ok\n[2.0] WARNING: CPU: 0 PID: 1 at drivers/nvme/host/core.c:1\n"
                            "[2.1] Call Trace:\n[2.2]  <TASK>\n")
        excerpts = klog.trouble(lines)
        self.assertEqual(len(excerpts), 1)
        self.assertIn("drivers/nvme/host/core.c", excerpts[0])
        self.assertIn("Call Trace", excerpts[0])
