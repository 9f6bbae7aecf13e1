"""Guest architectures: selection by GUEST_ARCH, `arch:` tags, and what each machine gets."""
import unittest

from nvme_hotswap import arch, config, tags
from nvme_hotswap.programs import nightly


class Selection(unittest.TestCase):
    def test_default_is_x86_64_on_q35(self) -> None:
        a = config.RunConfig.from_env({}).arch
        self.assertEqual((a.name, a.machine, a.console, a.kernel_file), ("x86_64", "q35", "ttyS0", "vmlinux"))
        self.assertTrue(a.acpi_pci_hotplug)
        # qboot numbers buses in reverse; the kernel must renumber them or the PCI addresses move
        self.assertEqual(a.firmware, ("-bios", "qboot.rom"))
        self.assertEqual(a.firmware_kernel_args, "pci=assign-busses")

    def test_aarch64_is_virt_without_acpi_hotplug(self) -> None:
        a = config.RunConfig.from_env({"GUEST_ARCH": "aarch64"}).arch
        self.assertTrue(a.machine.startswith("virt"))
        self.assertEqual((a.console, a.kernel_file, a.qemu_binary_name), ("ttyAMA0", "Image", "qemu-system-aarch64"))
        self.assertEqual(a.native_hotplug_args, ())   # no q35 global on virt
        self.assertFalse(a.acpi_pci_hotplug)

    def test_unknown_arch_is_a_config_error_naming_the_choices(self) -> None:
        with self.assertRaisesRegex(config.ConfigError, "GUEST_ARCH='riscv64'.*x86_64, aarch64"):
            config.RunConfig.from_env({"GUEST_ARCH": "riscv64"})

    def test_cloud_guest_is_x86_64_only(self) -> None:
        with self.assertRaisesRegex(config.ConfigError, "GUEST=cloud is built for x86_64 only"):
            config.RunConfig.from_env({"GUEST_ARCH": "aarch64", "GUEST": "cloud"})


class ArchTags(unittest.TestCase):
    def test_arch_tags_name_the_architectures(self) -> None:
        doc = ":avocado: tags=arch:x86_64,arch:aarch64,machine:q35,nvme"
        self.assertEqual(arch.tagged_arches(tags.from_docstring(doc)), ["x86_64", "aarch64"])

    def test_no_arch_tag_means_any(self) -> None:
        self.assertEqual(arch.tagged_arches(["nvme", "needs:drive_insert"]), [])


class NightlyCells(unittest.TestCase):
    def test_default_cells_cover_every_kernel_arm64_and_cloud(self) -> None:
        cells = nightly.DEFAULT_CELLS.split()
        self.assertEqual(cells, ["cloud", "bookworm-cloud", "bookworm", "trixie", "sid", "aarch64", "upstream",
                                 "upstream-aarch64", "ns-only"])
        self.assertEqual({nightly.CELLS[c]["GUEST_ARCH"] for c in cells}, {"x86_64", "aarch64"})
        kernels = {nightly.CELLS[c]["GUEST_KERNEL"] for c in cells}
        self.assertEqual(kernels, {"bookworm-cloud", "bookworm", "trixie", "sid"})

    def test_the_ns_only_cell_builds_the_namespace_patch_without_drive_reconnection(self) -> None:
        from pathlib import Path
        series = Path(nightly.CELLS["ns-only"]["PATCHES"], "series")
        listed = [ln.strip() for ln in series.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        self.assertEqual([Path(p).name for p in listed], ["0001-hw-nvme-add-namespace-hotplug-support.patch",
                                                          "0006-hw-block-virtio-blk-do-not-read-zone-limits-of-an-em.patch",
                                                          "0007-hw-nvme-honour-the-Namespace-Attribute-Notices-confi.patch"])
        self.assertTrue(all((series.parent / p).is_file() for p in listed))

    def test_the_upstream_model_series_is_what_upstream_ships(self) -> None:
        from nvme_hotswap.config import ROOT
        series = ROOT / "patches" / "upstream-11.1" / "series"
        listed = [ln.strip() for ln in series.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        self.assertEqual(listed, ["../0001-hw-nvme-add-namespace-hotplug-support.patch"])

    def test_cell_qemu_prefers_the_given_binary_per_arch(self) -> None:
        env = {"QEMU": "/x86/qemu", "QEMU_AARCH64": "/arm/qemu"}
        self.assertEqual(nightly.cell_qemu("x86_64", env, None), "/x86/qemu")
        self.assertEqual(nightly.cell_qemu("aarch64", env, None), "/arm/qemu")


if __name__ == "__main__":
    unittest.main()
