"""The after-every-test kernel-log check can fail: it catches a report and quotes it."""
from nvme_hotswap.testcase import HotswapTest


class KernelLogCheck(HotswapTest):
    """A report planted in the guest kernel log is found with its context; a clean log passes.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,harness
    """

    controllers = 1

    def test_detects_a_planted_warning(self) -> None:
        self.assertEqual(self.guest_kernel_problems(), [], "a freshly booted guest should have a clean log")
        self.guest.check("echo 'WARNING: CPU: 0 PID: 1 at planted-by-the-suite' > /dev/kmsg")
        problems = self.guest_kernel_problems()
        self.assertEqual(len(problems), 1)
        self.assertIn("planted-by-the-suite", problems[0])
        self.guest.check("dmesg -c >/dev/null")  # so this test's own teardown check passes
