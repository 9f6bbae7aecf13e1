"""The NVMe contract of namespace hotplug, checked from the host's side of the controller (no guest).

The test is the NVMe host (nvme_hotswap.device over qtest): it chooses the controller's state at
plug time and reads what a Linux guest ignores (the Changed Namespace List's content, Identify of
an inactive NSID, the Asynchronous Event Configuration). Spec references: NVM Express Base
Specification 2.0 ("Base") and NVM Command Set Specification 1.0 ("NVM"). docs/device-contract.md
lists what is covered and what is not.
"""
from pathlib import Path

from nvme_hotswap.device import nvme_data as d
from nvme_hotswap.device.machine import QtestMachine
from nvme_hotswap.device.nvme import CSS_ALL, NvmeController
from nvme_hotswap.device.testcase import DeviceTest
from nvme_hotswap.known_defects import known_defect

SLOT_A, SLOT_B = 0x04, 0x05
NQN = "nqn.2026-12.org.qemu:contract"
QUIET_S = 0.5   # how long "no event" is watched (polling, the virtual clock stepped each round)
LBA = 512       # nvme-ns default logical block size (QEMU: logical_block_size=512)


class NvmeContract(DeviceTest):
    """device_add / device_del nvme-ns seen by an NVMe host driving the controller over qtest.

    :avocado: enable
    :avocado: tags=arch:x86_64,machine:q35,nvme,aen,device,needs:nvme_ns_hotplug
    """

    # --- topology and verbs --------------------------------------------------------------------
    def one_controller(self, subsys: bool = False) -> tuple[QtestMachine, NvmeController]:
        """nvme0 at pcie.0 slot 4 with namespace 1 cold-plugged (in an nvme-subsys if `subsys`)."""
        cold = self.disk("cold1", 8)
        devices = ["-drive", f"if=none,id=cold1,file={cold},format=raw"]
        if subsys:
            devices += ["-device", f"nvme-subsys,id=s0,nqn={NQN}"]
        devices += ["-device", f"nvme,id=nvme0,serial=contract0,addr={SLOT_A:02x}.0" + (",subsys=s0" if subsys else ""),
                    "-device", "nvme-ns,id=ns1,drive=cold1,bus=nvme0,nsid=1"]
        m = self.machine(devices)
        return m, m.controller(SLOT_A, "nvme0")

    def two_controllers(self) -> tuple[QtestMachine, NvmeController, NvmeController]:
        """nvmeA and nvmeB in one nvme-subsys, no namespace yet."""
        m = self.machine(["-device", f"nvme-subsys,id=s0,nqn={NQN}",
                          "-device", f"nvme,id=nvmeA,serial=contract,subsys=s0,addr={SLOT_A:02x}.0",
                          "-device", f"nvme,id=nvmeB,serial=contract,subsys=s0,addr={SLOT_B:02x}.0"])
        return m, m.controller(SLOT_A, "nvmeA"), m.controller(SLOT_B, "nvmeB")

    def plug(self, m: QtestMachine, bus: str, nsid: int, size_mib: int = 16, unmap: bool = False,
             **props: object) -> Path:
        """A fresh raw image as namespace `nsid` on controller `bus` (device id ns<nsid>)."""
        image = self.disk(f"ns{nsid}", size_mib)
        m.add_blockdev(f"node{nsid}", image, unmap=unmap)
        m.plug_namespace(f"ns{nsid}", f"node{nsid}", bus, nsid, **props)
        return image

    def unplug(self, m: QtestMachine, nsid: int) -> None:
        m.unplug(f"ns{nsid}")
        m.del_blockdev(f"node{nsid}")

    def assert_one_ns_event(self, c: NvmeController, why: str) -> None:
        """Exactly one completion of an outstanding AER: Notice / Namespace Attribute Changed / log 04h."""
        first = c.wait_event(5.0)   # the first within a generous bound, then any more within QUIET_S
        events = ([first] if first else []) + c.take_events(QUIET_S)
        self.assertEqual([str(e) for e in events], [str(d.NS_ATTR_CHANGED)],
                         f"{c.name}: {why}: Base 'Asynchronous Event Request command': one completion with type "
                         "2h (Notice), information 00h (Namespace Attribute Changed), log page 04h")

    def assert_no_event(self, c: NvmeController, why: str) -> None:
        events = c.take_events(QUIET_S)
        self.assertEqual([str(e) for e in events], [], f"{c.name} got an asynchronous event: {why}")

    def assert_changed(self, c: NvmeController, nsids: list[int], why: str) -> None:
        """Log page 04h lists `nsids`, and reading it (RAE=0) cleared it: a second read is empty."""
        self.assertEqual(c.changed_namespaces(), nsids,
                         f"{c.name}: Changed Namespace List (Base, log page 04h) {why}")
        self.assertEqual(c.changed_namespaces(), [],
                         f"{c.name}: Base 'Changed Namespace List': the log is cleared when read with RAE=0, "
                         "but a second read still lists namespaces")

    # --- a: plug on an enabled controller --------------------------------------------------------
    def test_plug_on_enabled_controller(self) -> None:
        """Plug on a controller with I/O queues and AERs outstanding: one AEN, the NSID listed once,
        active, sized from its backing file, and I/O works."""
        m, c = self.one_controller()
        self.host(c, aec=d.AEC_NS_ATTR_NOTICES, aers=2)
        self.assertTrue(c.identify_controller().oaes & d.OAES_NS_ATTR,
                        "Identify Controller OAES bit 8 (Namespace Attribute Notices supported) is clear")
        self.assertEqual(c.active_nsids(), [1])

        image = self.plug(m, "nvme0", 2, size_mib=16)
        self.assert_one_ns_event(c, "after device_add nvme-ns nsid=2")
        self.assert_changed(c, [2], "after plugging NSID 2 must list exactly it")
        self.assertEqual(c.active_nsids(), [1, 2],
                         "Base 'Identify' CNS 02h: the Active Namespace ID list must gain the plugged NSID 2")
        ns = c.identify_namespace(2)
        self.assertFalse(ns.zero, "Identify Namespace of the plugged NSID 2 is zero-filled (an inactive NSID's)")
        self.assertEqual(ns.lba_size, LBA, f"NVM 'Identify Namespace' LBAF[FLBAS] of NSID 2: {ns.lbaf}")
        self.assertEqual(ns.nsze, image.stat().st_size // ns.lba_size,
                         "NVM 'Identify Namespace' NSZE must be the backing file's size in logical blocks")
        self.assertLessEqual(ns.ncap, ns.nsze, "NVM 'Identify Namespace': NCAP <= NSZE")

        pattern = bytes(range(256)) * 4
        c.write(2, 5, pattern, LBA)
        self.assertEqual(c.read(2, 5, 2, LBA), pattern, "NVM Write then Read of LBA 5-6 on NSID 2 differ")
        with image.open("rb") as f:
            f.seek(5 * LBA)
            self.assertEqual(f.read(len(pattern)), pattern, "the Write did not reach NSID 2's backing file")
        self.observe(f"plug on enabled controller: AEN {d.NS_ATTR_CHANGED}, changed [2], active {c.active_nsids()}")

    # --- b: unplug ---------------------------------------------------------------------------
    def test_unplug_notifies_and_deactivates(self) -> None:
        """device_del: one AEN, the NSID in the changed list, gone from the active list, Identify
        Namespace of it zero-filled, I/O to it refused; then the freed NSID takes a new drive."""
        m, c = self.one_controller()
        self.host(c, aec=d.AEC_NS_ATTR_NOTICES, aers=2)
        self.plug(m, "nvme0", 2)
        self.assert_one_ns_event(c, "after device_add")
        self.assert_changed(c, [2], "after plugging NSID 2")
        c.submit_aer()

        self.unplug(m, 2)
        self.assert_one_ns_event(c, "after device_del (DEVICE_DELETED seen)")
        self.assert_changed(c, [2], "after unplugging NSID 2 must list exactly it")
        self.assertEqual(c.active_nsids(), [1], "Base 'Identify' CNS 02h: the unplugged NSID 2 is still active")
        completion, raw = c.identify_raw(0x00, 2, check=False)
        self.assertTrue(completion.status.ok and not any(raw),
                        f"Base 'Identify' CNS 00h: for an inactive NSID the controller returns a zero-filled "
                        f"data structure; got status {completion.status}, "
                        f"{sum(1 for b in raw if b)} non-zero bytes")
        failed = c.write(2, 0, bytes(LBA), LBA, check=False)
        self.assertEqual((failed.status.sct, failed.status.sc), (0, 0x02),
                         "Base 'Common Command Format' NSID: a command naming an inactive NSID is aborted with "
                         f"Invalid Field in Command (SCT 0 SC 02h); got {failed.status}")
        self.observe("unplug: AEN, changed [2], active [1], Identify NSID 2 zero-filled")

        c.submit_aer()
        self.plug(m, "nvme0", 2)   # the NSID is free again: a new drive takes it (the namespace-level swap)
        self.assert_one_ns_event(c, "after device_add of NSID 2 again, once it was unplugged")
        self.assertEqual(c.active_nsids(), [1, 2], "Base 'Identify' CNS 02h: NSID 2, plugged again, is not active")

    # --- c: Asynchronous Event Configuration -----------------------------------------------------
    @known_defect("docs/findings/nvme-namespace-notices-sent-when-disabled.md",
                  r"shall not send the Namespace Attribute Changed event; it was sent")
    def test_notices_disabled_then_enabled(self) -> None:
        """AEC bit 8 clear: no AEN for a plug, but the namespace is active; set again: the next plug
        notifies."""
        m, c = self.one_controller()
        self.host(c, aec=0, aers=2)
        self.assertEqual(c.get_feature(0x0B) & d.AEC_NS_ATTR_NOTICES, 0, "Get Features 0Bh after setting 0")
        self.plug(m, "nvme0", 2)
        disabled_events = c.take_events(QUIET_S)
        self.assertIn(2, c.active_nsids(), "a plug with notices disabled must still make the namespace active")
        c.changed_namespaces()   # what a host does anyway after a rescan; clears a Notice that was posted

        c.set_async_event_config(d.AEC_NS_ATTR_NOTICES)
        if c.outstanding_aers < 2:
            c.submit_aer(2 - c.outstanding_aers)
        self.plug(m, "nvme0", 3)
        self.assert_one_ns_event(c, "after device_add with Namespace Attribute Notices enabled again")
        self.assert_changed(c, [3], "after plugging NSID 3")
        self.observe(f"plug with AEC bit 8 clear: events {[str(e) for e in disabled_events]}")
        self.assertEqual([str(e) for e in disabled_events], [],
                         "Base 'Asynchronous Event Configuration' (feature 0Bh) bit 8: when Namespace Attribute "
                         "Notices is cleared, the controller shall not send the Namespace Attribute Changed "
                         "event; it was sent for a plug")

    # --- d: no AER outstanding -------------------------------------------------------------------
    def test_event_waits_for_an_aer(self) -> None:
        """No AER outstanding at plug: the event is kept and completes the next AER submitted."""
        m, c = self.one_controller()
        self.host(c, aec=d.AEC_NS_ATTR_NOTICES, aers=0)
        self.plug(m, "nvme0", 2)
        self.assert_no_event(c, "no AER was outstanding, so nothing can complete")
        c.submit_aer()
        event = c.wait_event(5.0)
        self.assertEqual(str(event), str(d.NS_ATTR_CHANGED),
                         "Base 'Asynchronous Event Request command': an event that occurs with no AER outstanding "
                         "should be retained and reported on the next AER")
        self.assert_changed(c, [2], "after plugging NSID 2 with no AER outstanding")

    # --- e: two controllers in one subsystem ------------------------------------------------------
    def test_shared_namespace_reaches_both_controllers(self) -> None:
        """shared=on plugged on nvmeA: active on both controllers, both notified, NMIC bit 0 set."""
        m, a, b = self.two_controllers()
        for c in (a, b):
            self.host(c, aec=d.AEC_NS_ATTR_NOTICES, aers=2)
        self.plug(m, "nvmeA", 2, shared=True)
        for c in (a, b):
            self.assert_one_ns_event(c, "a shared namespace was plugged into the subsystem")
            self.assert_changed(c, [2], "after plugging shared NSID 2")
            self.assertEqual(c.active_nsids(), [2], f"{c.name}: shared NSID 2 not active")
            self.assertTrue(c.identify_namespace(2).shared,
                            f"{c.name}: NVM 'Identify Namespace' NMIC bit 0 (may be attached to two or more "
                            "controllers) clear for a shared namespace")
        self.unplug(m, 2)
        for c in (a, b):
            self.assert_one_ns_event(c, "the shared namespace was unplugged")
            self.assert_changed(c, [2], "after unplugging shared NSID 2")
            self.assertEqual(c.active_nsids(), [], f"{c.name}: NSID 2 still active after device_del")

    def assert_private(self, m: QtestMachine, owner: NvmeController, other: NvmeController, nsid: int) -> None:
        """shared=off NSID `nsid` plugged on `owner`: active and notified there only; `other`'s
        active list, events and Changed Namespace List untouched, its Identify of the NSID zero."""
        self.plug(m, owner.name, nsid, shared=False)
        self.assert_one_ns_event(owner, "a private namespace was plugged on it")
        self.assertIn(nsid, owner.active_nsids(), f"{owner.name}: private NSID {nsid} plugged on it is not active")
        self.assertFalse(owner.identify_namespace(nsid).shared,
                         f"{owner.name}: NMIC bit 0 set for a shared=off namespace")
        self.assertNotIn(nsid, other.active_nsids(),
                         f"private namespace {nsid} plugged on {owner.name} is active on {other.name}: Base "
                         f"'Namespaces' - a private namespace is attached to one controller only (device_add "
                         f"bus={owner.name})")
        self.assert_no_event(other, f"private namespace {nsid} plugged on {owner.name} is not {other.name}'s")
        self.assertEqual(other.changed_namespaces(), [],
                         f"{other.name}'s Changed Namespace List lists {owner.name}'s private NSID {nsid}")
        self.assertTrue(other.identify_namespace(nsid).zero,
                        f"{other.name}: Identify Namespace of NSID {nsid}, inactive on it, is not zero-filled "
                        "(Base 'Identify' CNS 00h)")
        self.assert_changed(owner, [nsid], f"after plugging private NSID {nsid}")
        owner.submit_aer()

    @known_defect("docs/findings/nvme-private-namespace-hotplug-reaches-every-controller.md",
                  r"private namespace \d plugged on nvme[AB] is active on nvme[AB]")
    def test_private_namespace_stays_on_its_controller(self) -> None:
        """shared=off plugged on nvmeB, then another on nvmeA: each active and notified on its own
        controller only (both directions: which controller comes first in the subsystem, or in
        memory, must not matter)."""
        m, a, b = self.two_controllers()
        for c in (a, b):
            self.host(c, aec=d.AEC_NS_ATTR_NOTICES, aers=2)
        self.assert_private(m, b, a, 3)
        self.assert_private(m, a, b, 4)

    # --- f: detached=on and Namespace Attachment --------------------------------------------------
    def test_detached_namespace_and_attachment(self) -> None:
        """detached=on: active nowhere, no AEN; Namespace Attachment attaches (with an AEN), detaches."""
        m, c = self.one_controller(subsys=True)
        self.host(c, aec=d.AEC_NS_ATTR_NOTICES, aers=2)
        cntlid = c.identify_controller().cntlid
        self.plug(m, "nvme0", 2, detached=True)
        self.assert_no_event(c, "a detached namespace was plugged (attached to no controller)")
        self.assertEqual(c.active_nsids(), [1], "detached=on NSID 2 is active right after the plug")

        reserved = c.namespace_attachment(2, [cntlid], attach=True, check=False, sel=0x2)
        self.assertEqual((reserved.status.sct, reserved.status.sc), (0, 0x02),
                         "Base 'Namespace Attachment': SEL 2h is reserved, the command must fail with Invalid "
                         f"Field in Command; got {reserved.status}")
        self.assertEqual(c.active_nsids(), [1], "a Namespace Attachment with a reserved SEL attached NSID 2")
        self.assert_no_event(c, "a Namespace Attachment with a reserved SEL changed nothing")

        c.namespace_attachment(2, [cntlid], attach=True)
        self.assertEqual(c.active_nsids(), [1, 2], "Base 'Namespace Attachment' (SEL 0h): NSID 2 not active after it")
        # QEMU's Namespace Attachment has notified the controller it attached since it was added
        # (nvme_ns_attachment); a series must not lose that
        self.assert_one_ns_event(c, "after Namespace Attachment (attach) to this controller (QEMU's behaviour)")
        self.assert_changed(c, [2], "after attaching NSID 2")
        c.submit_aer()

        c.namespace_attachment(2, [cntlid], attach=False)
        self.assertEqual(c.active_nsids(), [1], "Base 'Namespace Attachment' (SEL 1h): NSID 2 still active after it")
        self.assert_one_ns_event(c, "after Namespace Attachment (detach)")
        self.assert_changed(c, [2], "after detaching NSID 2")

    # --- g: plug on a controller the host never enabled ------------------------------------------
    def test_plug_on_disabled_controller(self) -> None:
        """CC.EN=0 at plug (never enabled): QEMU survives; once enabled the namespace is active."""
        m, c = self.one_controller()
        self.assertFalse(c.ready, "the controller is ready before the host enabled it")
        self.plug(m, "nvme0", 2)
        self.assertEqual(m.vm.qmp("query-status")["status"], "running", "QEMU's VM stopped after the plug")
        self.host(c, aec=d.AEC_NS_ATTR_NOTICES, aers=1)
        self.assertEqual(c.active_nsids(), [1, 2],
                         "a namespace plugged while CC.EN=0 must be active once the host enables the controller")
        self.observe(f"plug on disabled controller: events after enabling {[str(e) for e in c.take_events(QUIET_S)]}"
                     f", changed list {c.changed_namespaces()}")

    # --- h: Dataset Management on a namespace plugged into an empty controller --------------------
    def deallocated_reads_zero(self, c: NvmeController, nsid: int) -> bool:
        """Write 8 blocks of NSID `nsid`, deallocate them (Dataset Management), read them back:
        whether they read as zeroes."""
        pattern = bytes(range(256)) * (8 * LBA // 256)
        c.write(nsid, 0, pattern, LBA)
        self.assertEqual(c.read(nsid, 0, 8, LBA), pattern, f"{c.name}: NSID {nsid} does not read back a write")
        c.deallocate(nsid, [(0, 8)])
        return c.read(nsid, 0, 8, LBA) == bytes(8 * LBA)

    def test_deallocate_on_a_namespace_plugged_into_an_empty_controller(self) -> None:
        """A controller with no namespace gets one: the Dataset Management limits it reports cover
        the new namespace, and a Deallocate there takes effect as it does on a namespace a
        controller had at boot (the reference: nvmeB's, on the same kind of drive, discard=unmap)."""
        ref = self.disk("ref", 16)
        m = self.machine(["-device", f"nvme,id=nvmeA,serial=contractA,addr={SLOT_A:02x}.0",
                          "-drive", f"if=none,id=ref,file={ref},format=raw,discard=unmap",
                          "-device", f"nvme,id=nvmeB,serial=contractB,addr={SLOT_B:02x}.0",
                          "-device", "nvme-ns,id=nsref,drive=ref,bus=nvmeB,nsid=1"])
        a = self.host(m.controller(SLOT_A, "nvmeA"), aec=d.AEC_NS_ATTR_NOTICES, aers=1)
        b = self.host(m.controller(SLOT_B, "nvmeB"), aec=d.AEC_NS_ATTR_NOTICES, aers=1)
        if not self.deallocated_reads_zero(b, 1):
            self.cancel("a Deallocate on a namespace present at boot does not read back as zeroes here (the "
                        "results folder's file system does not punch holes?): no reference to compare with")
        self.assertEqual(a.active_nsids(), [])
        self.plug(m, "nvmeA", 1, unmap=True)
        self.assert_one_ns_event(a, "after device_add nvme-ns nsid=1")
        self.assertEqual(a.identify_namespace(1).dlfeat & 0x7, b.identify_namespace(1).dlfeat & 0x7)
        limits = a.identify_nvm_controller()
        self.assertTrue(limits.dmrsl == 0 or limits.dmrsl >= 8,
                        f"NVM 'Identify Controller' (CNS 06h) DMRSL {limits.dmrsl} logical blocks: a limit below "
                        "an 8-block range on the plugged namespace (0 would mean no limit)")
        self.assertTrue(self.deallocated_reads_zero(a, 1),
                        "NVM 'Dataset Management' (Deallocate) of LBA 0-7 on the plugged namespace did not take "
                        "effect, although on a namespace present at boot it does (the range was skipped?)")

    # --- i: a namespace of a command set the host did not enable ----------------------------------
    def test_zoned_namespace_on_a_host_that_enabled_nvm_only(self) -> None:
        """CC.CSS 000b (NVM command set only): a zoned namespace plugged at run time stays inactive
        there, as at boot (QEMU attaches only namespaces of the command sets the host enabled:
        nvme_csi_supported), and the host is not told of a namespace it cannot use."""
        m, c = self.one_controller()
        self.host(c, aec=d.AEC_NS_ATTR_NOTICES, aers=2)
        self.plug(m, "nvme0", 2, size_mib=128, zoned=True)   # QEMU's default zone size is 128 MiB
        self.assertEqual(c.active_nsids(), [1],
                         "Base 'I/O Command Set selection': with CC.CSS 000b only NVM command set namespaces "
                         "are active, but the zoned NSID 2 plugged at run time is")
        self.assert_no_event(c, "a zoned namespace was plugged on a controller the host enabled for NVM only")
        self.assertEqual(c.changed_namespaces(), [], "the Changed Namespace List names a namespace the host cannot use")

    # --- j: the command sets of each controller of a subsystem ----------------------------------------
    def test_zoned_shared_namespace_reaches_the_controller_that_enabled_it(self) -> None:
        """nvmeA enabled for the NVM command set only (CC.CSS 000b), nvmeB for all I/O command sets
        (110b): a shared zoned namespace plugged at run time is active and announced on nvmeB, though
        nvmeA comes first in the subsystem, and stays inactive and unannounced on nvmeA (a generated
        mutant stopped at the first controller that could not take it)."""
        m, a, b = self.two_controllers()
        self.host(a, aec=d.AEC_NS_ATTR_NOTICES, aers=2)
        self.host(b, aec=d.AEC_NS_ATTR_NOTICES, aers=2, css=CSS_ALL)
        self.plug(m, "nvmeA", 2, size_mib=128, zoned=True, shared=True)
        self.assert_one_ns_event(b, "a shared zoned namespace plugged while nvmeB has all command sets enabled")
        self.assertEqual(b.active_nsids(), [2], "Base 'I/O Command Set selection': with CC.CSS 110b the zoned "
                                                "namespace is active on nvmeB")
        self.assert_changed(b, [2], "after plugging the zoned NSID 2")
        self.assertEqual(a.active_nsids(), [], "the zoned namespace is active on nvmeA, enabled for NVM only")
        self.assert_no_event(a, "a zoned namespace was announced to nvmeA, enabled for NVM only")
