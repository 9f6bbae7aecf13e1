"""On the cloud guest (udev): the /dev/disk/by-id/nvme-* links of the swapped drive survive."""
from nvme_hotswap.testcase import HotswapTest

# name<TAB>target for every by-id link of the NVMe namespaces, after udev has handled all events.
BYID_SH = r"""
udevadm settle --timeout=30
for l in /dev/disk/by-id/nvme-*; do
  [ -e "$l" ] || continue
  printf '%s\t%s\n' "${l##*/}" "$(readlink -f "$l")"
done
"""


class CloudByIdLinks(HotswapTest):
    """Storage software tracks /dev/disk/by-id (udev: model+serial, eui/nguid); the cover letter's
    drive_del / drive_insert / SDN sequence on nvme2 must leave those links on the same device.

    :avocado: enable
    :avocado: tags=arch:x86_64,machine:q35,nvme,aer,cloud,needs:drive_insert
    """

    def guest_precondition(self) -> str | None:
        # Before anything is booted: the default (fast) run stays as fast as it was.
        if self.cfg.flavour != "cloud":
            return ("needs the cloud guest (GUEST=cloud), whose udev runs from boot; on the fast guest "
                    "test_storage_stacks.PersistentNames checks the links")
        return None

    def byid_links(self, disk: str) -> dict[str, str]:
        """by-id link name -> target, for the links that resolve to /dev/`disk`."""
        out = self.guest.check(BYID_SH)
        links = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
        return {name: target for name, target in links.items() if target == f"/dev/{disk}"}

    def test_byid_links_survive_swap(self) -> None:
        c = self.rig.ctrl(2)
        ns = c.namespaces[0]
        disk = self.guest.namespace(self.rig.ctrl_name(2), ns.nsid).block
        before = self.byid_links(disk)
        self.log.info("by-id links of /dev/%s before the swap: %s", disk, before)
        self.assertTrue(before, f"udev made no /dev/disk/by-id/nvme-* link for /dev/{disk}")
        self.assertTrue(any(c.serial in name for name in before),
                        f"no by-id link of /dev/{disk} names its serial {c.serial}: {sorted(before)}")
        names = self.guest.nvme_names()

        self.swap_drive(2, ns.image)

        after = self.byid_links(disk)
        self.log.info("by-id links of /dev/%s after the swap: %s", disk, after)
        (self.artifacts / "byid.txt").write_text(
            "before:\n" + "".join(f"  {k} -> {v}\n" for k, v in sorted(before.items())) +
            "after:\n" + "".join(f"  {k} -> {v}\n" for k, v in sorted(after.items())))
        self.assertEqual(after, before, "the by-id links of the swapped drive changed")
        self.assert_names_unchanged(names)
