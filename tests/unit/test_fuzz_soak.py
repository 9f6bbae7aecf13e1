"""The fuzz generator and the soak's bounds, without QEMU."""
import unittest

from nvme_hotswap.longrun import fuzz, soak


class Generator(unittest.TestCase):
    def test_same_seed_same_sequence_other_seed_other_sequence(self) -> None:
        a = fuzz.generate(fuzz.sequence_seed(42, 0), 30)
        self.assertEqual(a, fuzz.generate(fuzz.sequence_seed(42, 0), 30))
        self.assertNotEqual(a, fuzz.generate(fuzz.sequence_seed(42, 1), 30))
        self.assertNotEqual(a, fuzz.generate(fuzz.sequence_seed(43, 0), 30))

    def test_every_kind_every_error_and_every_port_appear(self) -> None:
        ops = [op for i in range(40) for op in fuzz.generate(fuzz.sequence_seed(7, i), 30)]
        self.assertEqual({op.kind for op in ops}, set(fuzz.KINDS))
        aer = [op for op in ops if op.kind == "aer"]
        self.assertEqual({op.args[2] for op in aer} - {"NO_SUCH_ERROR"}, set(fuzz.AER_ERRORS))
        self.assertTrue(set(fuzz.PORTS) <= {op.args[1] for op in aer})
        self.assertIn("-a ", {op.args[0] for op in aer})

    def test_monitor_lines_are_what_a_person_types(self) -> None:
        self.assertEqual(fuzz.Op("aer", ("-a ", "rp2", "SDN")).monitor_line(), "pcie_aer_inject_error -a rp2 SDN")
        self.assertEqual(fuzz.Op("device_add", ("ns2", "drv2", "nvme2", "1")).monitor_line(),
                         "device_add nvme-ns,id=ns2,drive=drv2,bus=nvme2,nsid=1")
        self.assertEqual(fuzz.Op("drive_insert", ("ns2", "f0")).monitor_line(), "drive_insert ns2 f0")


def samples(seq: str, rss_mib: list[float], fds: list[int]) -> list[soak.Sample]:
    return [soak.Sample(seq, i + 1, 1.0, int(r * 1024), f) for i, (r, f) in enumerate(zip(rss_mib, fds, strict=True))]


class Bounds(unittest.TestCase):
    def test_flat_after_warmup_passes(self) -> None:
        s = samples("reconnect", [290 + i * 0.5 for i in range(10)] + [295.0] * 90, [20] * 5 + [22] * 95)
        self.assertEqual(soak.check_bounds(s), [])

    def test_fd_leak_is_named_with_its_cycle(self) -> None:
        s = samples("namespace", [300.0] * 30, [22] * 10 + [22 + i for i in range(20)])
        (problem,) = soak.check_bounds(s)
        self.assertIn("open fds grew from 22 (cycle 10) to 41 (cycle 30)", problem)

    def test_rss_growth_past_the_bound_fails(self) -> None:
        s = samples("reconnect", [300.0] * 10 + [300 + i for i in range(1, 31)], [22] * 40)
        (problem,) = soak.check_bounds(s, rss_bound_mib=16)
        self.assertIn("QEMU's own RSS (without guest RAM and TCG code) grew 30.0 MiB", problem)

    def test_guest_ram_and_tcg_code_filling_up_is_not_a_leak(self) -> None:
        s = [soak.Sample("namespace", i + 1, 1.0, (300 << 10) + i * 1024, 18, 6, 100_000 + i * 700, 2048 + i * 324)
             for i in range(40)]
        self.assertEqual(soak.check_bounds(s, rss_bound_mib=16), [])

    def test_smaps_split_finds_guest_ram_and_tcg_code(self) -> None:
        smaps = "\n".join([
            "7f0000000000-7f0040000000 rw-p 00000000 00:00 0 ", "Size: 1048576 kB", "Rss: 51200 kB",
            "7f0040000000-7f007ff00000 rwxp 00000000 00:00 0 ", "Rss: 2048 kB",
            "55d000000000-55d000e00000 rw-p 00000000 00:00 0                          [heap]", "Rss: 8696 kB",
            "7f0080000000-7f0080d00000 r--p 00000000 fd:01 123 /build/qemu-system-x86_64", "Rss: 1628 kB",
            "VmFlags: rd wr mr mw me ac"])
        self.assertEqual(soak.rss_split(smaps, ram_mib=1024), (51200, 2048))

    def test_unbounded_rss_still_bounds_fds(self) -> None:
        """Under ASan RSS is not bounded (its quarantine holds freed memory); fds still are."""
        s = samples("reconnect", [300.0] * 10 + [300 + i for i in range(1, 31)], [22] * 39 + [23])
        (problem,) = soak.check_bounds(s, rss_bound_mib=None)
        self.assertIn("open fds grew", problem)

    def test_growth_over_the_last_half_tells_a_plateau_from_a_leak(self) -> None:
        plateau = samples("namespace", [300 + min(i, 20) for i in range(100)], [22] * 100)
        leak = samples("namespace", [300 + i * 0.1 for i in range(100)], [22] * 100)
        self.assertEqual(soak.summary(plateau)["namespace"]["rss_growth_last_half_mib"], 0.0)
        self.assertAlmostEqual(soak.summary(leak)["namespace"]["rss_growth_last_half_mib"], 4.9, places=1)


class NodeBound(unittest.TestCase):
    def test_a_block_node_kept_per_cycle_is_named_with_its_cycle(self) -> None:
        s = [soak.Sample("namespace", i + 1, 1.0, 300 * 1024, 22, 6 if i < 12 else 8) for i in range(20)]
        (problem,) = soak.check_bounds(s)
        self.assertIn("block nodes grew from 6 (cycle 10) to 8 (cycle 13)", problem)


if __name__ == "__main__":
    unittest.main()
