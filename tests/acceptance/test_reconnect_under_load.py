"""The cover letter's sequence while the guest keeps writing to the disk being swapped.

Storage software does not stop writing because a drive is pulled: acknowledged data must survive,
and errors must be confined to the window between the pull and the recovery.
"""
import shlex

from nvme_hotswap.guest import klog
from nvme_hotswap.testcase import HotswapTest
from nvme_hotswap.wait import wait_until

LOOP_BASE = 1024          # first 4 KiB block the loop writes
LOOP_MAX = 8000           # the loop's own bound, far beyond what the test needs
MARGIN_S = 1.0            # /proc/uptime vs printk clock, and SSH latency


def header(i: int) -> bytes:
    return b"nvme-hotswap block %08d\n" % i


class ReconnectUnderLoad(HotswapTest):
    """drive_del / drive_insert / SDN on nvme2 under a write loop (each write O_DIRECT + fsync).

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,machine:q35,machine:virt,nvme,aer,load,needs:drive_insert
    """

    def start_write_loop(self) -> None:
        """Write block i (a header naming i) at LOOP_BASE+i; log "i ok|err uptime" per write."""
        loop = (f"i=0; while [ ! -e /tmp/stop ] && [ $i -lt {LOOP_MAX} ]; do "
                "if printf 'nvme-hotswap block %08d\\n' $i | "
                f"dd of=/dev/{self.rig.disk(2)} bs=4096 seek=$(({LOOP_BASE}+i)) "
                "conv=sync,fsync oflag=direct 2>/dev/null; "
                "then s=ok; else s=err; fi; echo \"$i $s $(cut -d' ' -f1 /proc/uptime)\"; i=$((i+1)); "
                "done > /tmp/loop.log; touch /tmp/loop.done")
        self.guest.spawn(f"sh -c {shlex.quote(loop)}")

    def loop_log(self) -> list[tuple[int, str, float]]:
        out = self.guest.check("cat /tmp/loop.log")
        return [(int(i), s, float(t))
                for i, s, t in (line.split() for line in out.splitlines() if line.count(" ") == 2)]

    def wait_for_acks(self, count: int, after: float = 0.0) -> None:
        wait_until(lambda: sum(1 for _, s, t in self.loop_log() if s == "ok" and t > after) >= count, 60,
                   f"{count} acknowledged writes of the loop after t={after:.2f} s")

    def test_pull_under_load(self) -> None:
        c = self.rig.ctrl(2)
        ns = c.namespaces[0]
        before = self.guest.nvme_names()
        self.start_write_loop()
        self.wait_for_acks(20)

        pulled_at = float(self.guest.check("cut -d' ' -f1 /proc/uptime"))
        mark = self.swap_drive(2, ns.image)
        recovered_at = klog.find(self.guest.klog_since(mark), klog.RECOVERY_OK, port=c.port_pci_address)[0].seconds
        self.wait_for_acks(20, after=recovered_at)
        self.guest.check("touch /tmp/stop")
        wait_until(lambda: self.guest.run("test -e /tmp/loop.done").ok, 30, "the write loop to stop")

        log = self.loop_log()
        (self.artifacts / "write-loop.log").write_text("".join(f"{i} {s} {t}\n" for i, s, t in log))
        acked = [i for i, s, _ in log if s == "ok"]
        errors = [(i, t) for i, s, t in log if s == "err"]
        self.log.info("write loop: %d acknowledged, %d errors, pull at %.3f s, recovered at %.3f s",
                      len(acked), len(errors), pulled_at, recovered_at)
        self.assertTrue(errors, "the loop saw no error while the drive was pulled")
        outside = [(i, t) for i, t in errors if not pulled_at - MARGIN_S <= t <= recovered_at + MARGIN_S]
        self.assertEqual(outside, [], f"write errors outside the pull window [{pulled_at:.3f}, {recovered_at:.3f}] s")
        with open(ns.image, "rb") as image:
            lost = []
            for i in acked:
                image.seek((LOOP_BASE + i) * 4096)
                if image.read(len(header(i))) != header(i):
                    lost.append(i)
        self.assertEqual(lost, [], f"{len(lost)} of {len(acked)} acknowledged writes are not in the backing file")
        self.assert_names_unchanged(before)
