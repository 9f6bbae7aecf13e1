"""HotswapTest: the base class of the guest-level acceptance tests (a SuiteTest: basetest.py).

It carries the test's lifecycle so a test carries only its intent: cancel when this run cannot
serve the test (architecture, a `needs:` capability, the guest flavour), boot the topology on the
probed accelerator through a Rig (the hot-swap layer: `self.rig`), and after every test fail it on
what a reviewer would not accept even if the test's own assertions passed: a kernel bug report in
the guest log (blktests' habit), block nodes or open fds that QEMU did not give back once what the
test plugged and left is unplugged (each plug registers its unplug: a failure reads once), and a QEMU
that died or did not end cleanly at quit (an assertion in bdrv_close_all, say). The VM is always
ended by PID, whatever happened. The `assert_*` verbs are what tests conclude.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from . import preflight
from .basetest import SuiteTest
from .guest import klog
from .guest.ssh import Guest
from .hotswap.rig import Names, Rig
from .report import environment
from .vm import accel
from .vm.machine import QemuExited, QemuMachine, Resources, describe_status
from .vm.topology import Topology
from .wait import WaitTimeout, wait_until

SETTLE_S = 3.0   # how long block nodes and fds may take to come back after a test (bottom halves, unrefs)


class HotswapTest(SuiteTest):
    """Boots `controllers` NVMe controllers behind root ports; subclasses state the intent.

    Class attributes a test may override: controllers, namespaces_per_controller, disk_mib (each
    namespace's sparse backing file), discard (the drives pass discards to their files), subsys
    (an nvme-subsys per controller), shared_subsys (controllers sharing one), native_pcie_hotplug,
    extra_kernel_args.
    """

    timeout = 600
    controllers = 3
    namespaces_per_controller = 1
    disk_mib = 64
    discard = False
    subsys = False
    shared_subsys: tuple[int, ...] = ()
    native_pcie_hotplug = True
    extra_kernel_args = ""

    def __init__(self, methodName: str = "test", name: Any = None, params: Any = None,
                 base_logdir: str | None = None, config: Any = None, tags: Any = None) -> None:
        self._rig: Rig | None = None
        self._baseline: Resources | None = None
        self._growth = (0, 0, "")      # block nodes and fds a test may keep, and why
        self._exit_problem: str | None = None
        super().__init__(methodName, name=name, params=params, base_logdir=base_logdir,
                         config=config, tags=tags)

    # --- what a test uses ------------------------------------------------------------------
    @property
    def rig(self) -> Rig:
        """The booted guest on its topology, with the hot-swap verbs."""
        if self._rig is None:
            raise RuntimeError("no guest booted: the test is in set-up or was cancelled")
        return self._rig

    @property
    def vm(self) -> QemuMachine:
        return self.rig.vm

    @property
    def guest(self) -> Guest:
        return self.rig.guest

    @property
    def topology(self) -> Topology:
        return self.rig.topology

    # --- setup / teardown ------------------------------------------------------------------
    def check_environment(self) -> None:
        preflight.require(self.cfg)   # once per process; under pytest conftest.py has run it already

    def _set_up(self) -> None:
        self.accel = accel.choose(self.cfg)
        self.log.info("QEMU %s (%s); accelerator: %s", self.caps.version, self.caps.qemu, self.accel)
        environment.record(self.cfg, self.caps, self.accel)
        (self.artifacts / "accelerator.txt").write_text(f"{self.accel}\n")
        topology = Topology.create(self.artifacts / "disks", controllers=self.controllers,
                                   namespaces_per_controller=self.namespaces_per_controller,
                                   size_mib=self.disk_mib, subsys=self.subsys, discard=self.discard,
                                   shared_subsys=self.shared_subsys)
        (self.artifacts / "topology.json").write_text(
            json.dumps(topology.as_dict(self.native_pcie_hotplug), indent=2) + "\n")
        self._rig = Rig.boot(self.cfg, self.accel, topology, self.artifacts, self.native_pcie_hotplug,
                             self.extra_kernel_args, self.extra_qemu_args())
        self.log.info("guest up over SSH %.2f s after QEMU started (%s)", self._rig.boot_seconds, self.accel.accel)
        (self.artifacts / "guest-names.json").write_text(json.dumps(self._rig.boot_names, indent=2) + "\n")
        self._baseline = self.vm.resources()

    def precondition(self) -> str | None:
        return self.guest_precondition()

    def tear_down_problems(self) -> list[str]:
        """What the test left: a kernel bug report, resources QEMU kept once the test's plugs are
        undone, a QEMU that died or did not quit cleanly (the VM is ended here, by PID)."""
        problems: list[str] = []
        failure = self._test_failure
        try:
            if self._rig is not None:
                if not self.vm.is_running():
                    if not isinstance(failure, QemuExited):   # else the test's own failure named it
                        problems.append(f"QEMU exited during the test ({describe_status(self.vm.returncode)}): "
                                        f"{self.vm.stderr_tail()}")
                else:
                    try:
                        problems += self.guest_kernel_problems()
                    except Exception as exc:  # an unreachable guest is itself worth reporting
                        if failure is None:
                            problems.append(f"could not read the guest kernel log after the test: {exc!r}")
                        else:
                            self.log.warning("could not read the guest kernel log after the failed test: %r", exc)
                    self.undo_plugs()
                    problems += self.resource_problems()
                problems += self.needs_problems(self.vm.issued, passed=failure is None)
        finally:
            running = self._rig is not None and self.vm.is_running()
            self._release()
        if running and self._exit_problem:
            problems.append(self._exit_problem)
        return problems

    def undo_plugs(self) -> None:
        """Unplug what the test plugged and left (a test that failed half-way): every plug registered
        its unplug when it succeeded (QemuMachine), so the failure reads once and the leak check
        that follows judges only what QEMU kept after a proper unplug. What could not be undone is
        logged; the leak check names what it left."""
        left = self.vm.plugged()
        if left:
            self.log.info("undoing what the test plugged and left: %s", "; ".join(left))
        for failure in self.vm.undo_plugs():
            self.log.warning("could not undo %s", failure)

    def allow_growth(self, nodes: int = 0, fds: int = 0, why: str = "") -> None:
        """Let this test end with `nodes` block nodes and `fds` open fds more than at boot (`why`:
        what the test leaves plugged on purpose)."""
        self._growth = (nodes, fds, why)

    def resource_problems(self) -> list[str]:
        """Block nodes or open fds above the boot baseline (plus allow_growth) once things settle."""
        base = self._baseline
        if base is None:
            return []
        nodes, fds, why = self._growth

        def settled() -> Resources | None:
            now = self.vm.resources()
            return now if len(now.nodes) <= len(base.nodes) + nodes and now.fds <= base.fds + fds else None

        try:
            wait_until(settled, SETTLE_S, "QEMU to give back its block nodes and fds")
            return []
        except WaitTimeout:
            now = self.vm.resources()
        allowed = f" (allowed: +{nodes} nodes, +{fds} fds: {why})" if nodes or fds else ""
        return [f"QEMU kept resources after the test{allowed}: block nodes {len(base.nodes)} -> {len(now.nodes)} "
                f"(not there at boot: {sorted(set(now.nodes) - set(base.nodes))}), open fds {base.fds} -> {now.fds}"]

    def _release(self) -> None:
        """End the VM by PID, drop the backing files; safe to call twice."""
        if self._rig is not None:
            self._rig.close()
            self._exit_problem = self._rig.vm.exit_problem()
        if hasattr(self, "artifacts"):
            shutil.rmtree(self.artifacts / "disks", ignore_errors=True)

    def guest_kernel_problems(self) -> list[str]:
        """Save the guest kernel log as an artifact; return excerpts of any kernel bug reports."""
        lines = self.guest.klog()
        (self.artifacts / "guest-dmesg.log").write_text("\n".join(map(str, lines)) + "\n")
        return [f"guest kernel log reports trouble:\n{e}" for e in klog.trouble(lines)]

    def guest_precondition(self) -> str | None:
        """Why this test cannot run on the configured guest, or None. Nothing is booted yet."""
        return None

    def extra_qemu_args(self) -> list[str]:
        """Devices a test class adds to the topology (none by default)."""
        return []

    # --- what tests conclude ---------------------------------------------------------------
    def swap_drive(self, index: int, image: Path, fmt: str | None = None) -> str:
        """The cover letter's sequence (Rig.reconnect), asserting that guest I/O fails while the
        drive is pulled and that the guest's AER recovery went as it should. Returns the mark."""
        mark = self.rig.reconnect(index, image, while_pulled=self.assert_io_fails, fmt=fmt)
        self.assert_aer_recovery(mark, index)
        return mark

    def assert_io_fails(self, disk: str) -> None:
        """With the drive pulled, guest I/O fails promptly with an error; it does not hang."""
        self.assertEqual(self.guest.try_read(disk, seconds=10).status, "error",
                         f"a read of {disk} with its drive pulled did not fail promptly")

    def assert_aer_recovery(self, mark: str, index: int) -> None:
        """The guest logged the fatal error on the port, reset the controller and recovered."""
        c = self.rig.ctrl(index)
        self.rig.wait_for_recovery(index, mark)
        lines = self.guest.klog_since(mark)
        ctrl = self.rig.ctrl_name(index)
        for template, names in [(klog.AER_FATAL_RECEIVED, {"port": c.port_pci_address}), (klog.AER_SDES, {}),
                                (klog.NVME_FROZEN, {"ctrl": ctrl}), (klog.NVME_SLOT_RESET, {"ctrl": ctrl})]:
            self.assertTrue(klog.find(lines, template, **names),
                            f"no /{klog.pattern(template, **names).pattern}/ in the guest log after the injection")
        self.assertFalse(klog.find(lines, klog.RECOVERY_FAILED, port=c.port_pci_address))
        fatal = klog.find(lines, klog.AER_FATAL_RECEIVED, port=c.port_pci_address)
        done = klog.find(lines, klog.RECOVERY_OK, port=c.port_pci_address)
        if fatal and done and fatal[0].seconds is not None and done[-1].seconds is not None:
            self.observe(f"{ctrl} AER recovery {done[-1].seconds - fatal[0].seconds:.2f} s (guest clock)")

    def assert_names_unchanged(self, before: Names) -> None:
        """The guest names every controller and disk as it did before (what storage software tracks)."""
        self.assertEqual(self.guest.nvme_names(), before,
                         "guest NVMe names changed (PCI address -> (controller, disks))")
        self.observe("names kept: " + " ".join(d for _, disks in sorted(before.values()) for d in disks))

