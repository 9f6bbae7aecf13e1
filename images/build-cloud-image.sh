#!/usr/bin/env bash
# Build the cloud-style guest (a Debian 12 rootfs disk that boots like a cloud image: systemd,
# udev, openssh-server, cloud-init with the NoCloud datasource), or find it in the cache.
# The last line printed is the image directory's absolute path.
#
# Debian packages only, installed by `mmdebstrap` (a host build tool: scripts/install-host-deps.sh)
# from this machine's Debian archive URI into a directory, then made into an ext4 filesystem image
# with `mke2fs -d` (no loop mount, no partition table: the harness boots it with root=LABEL=cloudroot on a
# virtio-blk disk, so the NVMe controllers keep nvme0..2). The kernel and initrd are copied out of
# the image's /boot for direct kernel boot. The SSH key is not in the image: the harness makes a
# NoCloud seed per run (nvme_hotswap/guest/cloud.py) and cloud-init installs it.
#
# Output in $CACHE_ROOT/cloud/<key>/ (key = package list + RECIPE + the files written below):
# rootfs.img (raw ext4, sparse), vmlinuz, initrd.img, manifest.json. See images/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
. "$top/scripts/lib.sh"

SUITE=bookworm
# The cloud kernel (6.1): nvme and virtio built in or in the initrd; AER and pciehp built in
# (checked below against the image's /boot/config).
PACKAGES=(
  systemd systemd-sysv udev dbus openssh-server cloud-init sudo
  linux-image-cloud-amd64 initramfs-tools nvme-cli
  iproute2 procps kmod e2fsprogs
)
IMAGE_SIZE=2G
# Bump RECIPE when a change to this script changes the image it builds.
RECIPE=1

# Files written into the image (part of the key).
NETWORK='[Match]
Name=en* eth*

[Network]
DHCP=ipv4
'
CLOUD_CFG='# nvme-hotswap: the seed is a NoCloud volume (label CIDATA); probe nothing else.
datasource_list: [ NoCloud, None ]
# The network is configured by systemd-networkd in the image (DHCP on the slirp NIC).
network: {config: disabled}
'
FSTAB='LABEL=cloudroot / ext4 errors=remount-ro 0 1
'
# Debian's cloud images take keys only; so does ours, from the first connection on (the seed's
# ssh_pwauth would apply only once cloud-init's config stage has run, after sshd started).
SSHD_CFG='# nvme-hotswap: as a cloud image: keys only.
PasswordAuthentication no
KbdInteractiveAuthentication no
'

key=$( { printf '%s\n' "${PACKAGES[@]}" "size=$IMAGE_SIZE" "recipe=$RECIPE"; printf '%s' "$NETWORK$CLOUD_CFG$FSTAB$SSHD_CFG"; } | sha256_of_stdin)
out="$CACHE_ROOT/cloud/$key"
if cache_intact "$out"; then log "cached cloud image $key"; echo "$out"; exit 0; fi

mkdir -p "$CACHE_ROOT/cloud"
exec 9>"$CACHE_ROOT/cloud/.lock"
flock 9
if cache_intact "$out"; then log "cached cloud image $key (built concurrently)"; echo "$out"; exit 0; fi
for t in mmdebstrap mke2fs python3; do
  command -v $t >/dev/null || die "$t is needed on the host (scripts/install-host-deps.sh)"
done
[ "$(id -u)" -eq 0 ] || die "mmdebstrap needs root here (run as root, as the rest of the build)"
start=$(date +%s.%N)
uri=$(debian_archive_uri)

work=$(mktemp -d "$CACHE_ROOT/cloud/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
cache_on_interrupt "$work"
root="$work/rootfs"
stage="$work/out"
mkdir -p "$stage"

log "mmdebstrap $SUITE from $uri (${#PACKAGES[@]} packages and their dependencies)"
pkgs=$(IFS=,; echo "${PACKAGES[*]}")
if ! mmdebstrap --quiet --mode=root --variant=apt --include="$pkgs" \
     --aptopt='Acquire::Languages "none"' --dpkgopt='path-exclude=/usr/share/doc/*' \
     --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
     "$SUITE" "$root" "deb $uri $SUITE main" >"$work/mmdebstrap.log" 2>&1; then
  cp "$work/mmdebstrap.log" "$CACHE_ROOT/cloud/mmdebstrap-failed.log"
  die "mmdebstrap failed; see $CACHE_ROOT/cloud/mmdebstrap-failed.log"
fi

# --- configuration -------------------------------------------------------------------------------
printf '%s' "$NETWORK" > "$root/etc/systemd/network/10-dhcp.network"
ln -sf /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
printf '%s' "$CLOUD_CFG" > "$root/etc/cloud/cloud.cfg.d/90-nvme-hotswap.cfg"
printf '%s' "$FSTAB" > "$root/etc/fstab"
printf '%s' "$SSHD_CFG" > "$root/etc/ssh/sshd_config.d/50-nvme-hotswap.conf"
echo debian > "$root/etc/hostname"
# Each instance gets its own identity, as a cloud image's first boot does.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

# shellcheck disable=SC2012  # the names are kernel versions
kver=$(ls "$root/lib/modules" | head -1)
# shellcheck disable=SC2015  # die when any of the three tests fails
[ -n "$kver" ] && [ -f "$root/boot/vmlinuz-$kver" ] && [ -f "$root/boot/initrd.img-$kver" ] \
  || die "no kernel and initrd in the image's /boot"
for opt in CONFIG_PCIEAER CONFIG_HOTPLUG_PCI_PCIE CONFIG_BLK_DEV_NVME CONFIG_VIRTIO_BLK; do
  grep -Eq "^$opt=(y|m)$" "$root/boot/config-$kver" || die "$kver lacks $opt (see /boot/config-$kver)"
done
cp "$root/boot/vmlinuz-$kver" "$stage/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$stage/initrd.img"
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package}=${Version}\n' > "$work/packages.txt"

# --- the disk ------------------------------------------------------------------------------------
mke2fs -q -t ext4 -L cloudroot -d "$root" "$stage/rootfs.img" "$IMAGE_SIZE"
end=$(date +%s.%N)

python3 - "$stage/manifest.json" "$key" "$uri" "$SUITE" "$kver" "$start" "$end" "$work/packages.txt" "${PACKAGES[@]}" <<'EOF'
import json, os, sys
path, key, uri, suite, kver, start, end, pkgfile, *asked = sys.argv[1:]
d = os.path.dirname(path)
img = os.path.join(d, 'rootfs.img')
json.dump({
    'key': key, 'flavour': 'cloud', 'debian_suite': suite, 'archive': uri,
    'packages_asked': asked,
    'packages': dict(l.split('=', 1) for l in open(pkgfile).read().split()),
    'kernel_release': kver,
    'root': 'LABEL=cloudroot', 'root_fs': 'ext4',
    'image_bytes': os.path.getsize(img),
    'image_allocated_bytes': os.stat(img).st_blocks * 512,
    'build_seconds': round(float(end) - float(start), 1),
    'ssh': {'user': 'root', 'port': 22, 'key': 'per run (NoCloud seed)'},
}, open(path, 'w'), indent=2)
EOF

cache_seal "$stage"
rm -rf "$out"
mv "$stage" "$out"
date -u +%FT%TZ > "$out/DONE"
log "built cloud image $key in $(python3 -c "print(round($end - $start, 1))") s: $(du -sh "$out/rootfs.img" | cut -f1) allocated of $IMAGE_SIZE, kernel $kver"
echo "$out"
