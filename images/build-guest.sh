#!/usr/bin/env bash
# Build the test guest (kernel + initramfs; no SSH key: each run hands its own on the kernel command line), or find it in the cache.
# The last line printed is the guest directory's absolute path (scripts rely on it).
#
# Everything comes from pinned Debian 12 (bookworm) packages: fetched with `apt-get download`
# through a private apt state under the cache (archive URI from this machine's apt configuration),
# unpacked with `dpkg-deb -x`, never installed on the host. The guest lands in
# $CACHE_ROOT/guest/<key>, key = hash(package list with versions, RECIPE, the files it embeds,
# the compression). Output: vmlinuz, vmlinux (ELF, for PVH boot) or Image (arm64), initramfs.img,
# manifest.json. The image holds no client key: root's SSH key comes per run on the kernel command line. See images/README.md for the guest's contract.
#
# GUEST_COMPRESS=none|gzip|zstd|lz4 selects the initramfs compression (default none: under TCG the
# kernel inflates a gzip'd 16 MB initramfs in ~0.3 s, more than loading it uncompressed costs).
# GUEST_KERNEL=bookworm-cloud|bookworm|trixie|sid selects the kernel: Debian 12's 6.1 cloud flavour (the
# default on x86_64: fewer drivers, nvme built in, ~0.3 s faster to boot under TCG), Debian 12's
# generic 6.1 (the default on aarch64), Debian 13's 6.12 cloud kernel, or unstable's cloud kernel (the
# newest Debian ships, pinned below as of the day it was added; fetched through a private apt state of
# their own). Userland is bookworm's in all.
# GUEST_ARCH=x86_64|aarch64 selects the guest's architecture (default x86_64). aarch64 takes the same
# pins for arm64 (Debian 12's linux-image-6.1.0-50-arm64, an uncompressed Image booted on QEMU's
# `virt` machine); the build-time tools (depmod, dropbearkey, busybox's applet list) then run from the
# amd64 packages of the same pins, since arm64 binaries cannot run on the host.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
. "$top/scripts/lib.sh"

# --- pins ----------------------------------------------------------------------------------------
SUITE=bookworm   # userland (and the default kernel)
export GUEST_ARCH=${GUEST_ARCH:-x86_64}
if [ "$GUEST_ARCH" = x86_64 ]; then GUEST_KERNEL=${GUEST_KERNEL:-bookworm-cloud}; else GUEST_KERNEL=${GUEST_KERNEL:-bookworm}; fi
HOST_DEB_ARCH=$(dpkg --print-architecture)
case "$GUEST_ARCH" in
  x86_64)  DEB_ARCH=amd64 TRIPLET=x86_64-linux-gnu  LOADER=lib64/ld-linux-x86-64.so.2 ;;
  aarch64) DEB_ARCH=arm64 TRIPLET=aarch64-linux-gnu LOADER=lib/ld-linux-aarch64.so.1
           [ "$GUEST_KERNEL" = bookworm ] || die "GUEST_ARCH=aarch64 has Debian 12's kernel only (GUEST_KERNEL=bookworm)" ;;
  *) die "GUEST_ARCH must be x86_64 or aarch64 (got $GUEST_ARCH)" ;;
esac
[ "$HOST_DEB_ARCH" = amd64 ] || die "the guest is built on an amd64 host (this one is $HOST_DEB_ARCH)"
case "$GUEST_KERNEL" in
  bookworm)  # bookworm's linux-image-$DEB_ARCH 6.1 resolves to this ABI package and version.
    KERNEL_ABI=6.1.0-50-$DEB_ARCH
    KERNEL_VERSION=6.1.176-1 ;;
  bookworm-cloud)  # bookworm's linux-image-cloud-amd64 6.1: fewer drivers; nvme, AER, pciehp, DPC built in.
    [ "$GUEST_ARCH" = x86_64 ] || die "GUEST_KERNEL=bookworm-cloud is amd64 only"
    KERNEL_ABI=6.1.0-50-cloud-amd64
    KERNEL_VERSION=6.1.176-1 ;;
  trixie)    # trixie's linux-image-cloud-amd64 6.12: nvme, AER, pciehp, DPC, virtio-pci built in.
    KERNEL_ABI=6.12.117+deb13-cloud-amd64
    KERNEL_VERSION=6.12.117-1 ;;
  sid)       # unstable's linux-image-cloud-amd64 on 2026-12-02: 7.2; nvme, AER, pciehp, DPC, virtio-pci built
             # in. Unstable moves on: when the archive drops this version, set the newest one here.
    [ "$GUEST_ARCH" = x86_64 ] || die "GUEST_KERNEL=sid is amd64 only"
    KERNEL_ABI=7.2.13+deb14-cloud-amd64
    KERNEL_VERSION=7.2.13-1 ;;
  *) die "GUEST_KERNEL must be bookworm, bookworm-cloud, trixie or sid (got $GUEST_KERNEL)" ;;
esac
# The kernel's packages: one linux-image up to trixie; unstable splits it into the image's files
# (linux-base: config, modules.order, modules.builtin), the kernel (linux-binary) and its modules.
if [ "$GUEST_KERNEL" = sid ]; then
  KERNEL_PACKAGES=("linux-base-$KERNEL_ABI=$KERNEL_VERSION" "linux-binary-$KERNEL_ABI=$KERNEL_VERSION"
                   "linux-modules-$KERNEL_ABI=$KERNEL_VERSION")
else
  KERNEL_PACKAGES=("linux-image-$KERNEL_ABI=$KERNEL_VERSION")
fi
KERNEL_SUITE=${GUEST_KERNEL%-cloud}
PACKAGES=(
  "${KERNEL_PACKAGES[@]}"
  busybox-static=1:1.35.0-4+deb12u1+b1
  dropbear-bin=2022.83-1+deb12u3
  nvme-cli=2.4+really2.3-3
  kmod=30+20221128-1
  # shared libraries of the three above (checked below: nothing may resolve outside them)
  libc6=2.36-9+deb12u14
  libnvme1=1.3-1+deb12u1
  libjson-c5=0.16-2
  libdbus-1-3=1.14.10-1~deb12u1
  libsystemd0=252.39-1~deb12u2
  libcap2=1:2.66-4+deb12u3+b1
  libgcrypt20=1.10.1-3+deb12u1
  libgpg-error0=1.46-1
  liblz4-1=1.9.4-1
  libssl3=3.0.20-1~deb12u2
  libkmod2=30+20221128-1
  liblzma5=5.4.1-1+deb12u1
  libzstd1=1.5.4+dfsg2-5
  libtomcrypt1=1.18.2-6
  libtommath1=1.2.0-6+deb12u1
  libcrypt1=1:4.4.33-2
  libgmp10=2:6.2.1+dfsg1-1.1
  zlib1g=1:1.2.13.dfsg-1
  # the storage stacks (tests/acceptance/test_storage_stacks.py): ext4 and XFS tools, mdadm, LVM
  e2fsprogs=1.47.0-2+b2
  libext2fs2=1.47.0-2+b2
  libcom-err2=1.47.0-2+b2
  libblkid1=2.38.1-5+deb12u3
  libuuid1=2.38.1-5+deb12u3
  xfsprogs=6.1.0-1
  libinih1=55-1
  liburcu8=0.13.2-1
  mdadm=4.2-5
  libudev1=252.39-1~deb12u2
  lvm2=2.03.16-2
  dmsetup=2:1.02.185-2
  libdevmapper1.02.1=2:1.02.185-2
  libdevmapper-event1.02.1=2:1.02.185-2
  libaio1=0.3.113-4
  libedit2=3.1-20221030-2
  libbsd0=0.11.7-2
  libmd0=1.0.4-2
  libtinfo6=6.4-4
  libselinux1=3.4-1+b6
  libpcre2-8-0=10.42-1
  # udev (not started at boot: the persistent-names tests start it), for /dev/disk/by-id, by-path, by-uuid
  udev=252.39-1~deb12u2
  libacl1=2.3.1-3
)
# Kernel modules to ship (their dependencies are added), in the order /init loads them (it reads
# /etc/guest-modules): the crc helpers first, so t10-pi/crc64-rocksoft need no request_module round
# trip, then nvme (its controllers reset while the network comes up), then virtio. AER, pcieport,
# pciehp, DPC, devtmpfs and the serial console (8250; pl011 on arm64) are built into these kernels,
# PVH into amd64's; nvme, nvme-core and virtio are modules (virtio_blk: a disk whose device model
# honours rerror/werror, which hw/nvme does not).
MODULES=(crc64_rocksoft_generic crct10dif_pclmul crct10dif_generic nvme-core nvme virtio_pci virtio_net virtio_blk)
# arm64's accelerated t10dif is crct10dif-ce.
[ "$GUEST_ARCH" = x86_64 ] || MODULES=(crc64_rocksoft_generic crct10dif-ce crct10dif_generic nvme-core nvme virtio_pci virtio_net virtio_blk)
# The cloud kernels have nvme, nvme-core and the crc64/t10dif helpers built in; bookworm's keeps
# virtio_pci a module, trixie's builds it in too (and compresses its modules: .ko.xz).
[ "$GUEST_KERNEL" != bookworm-cloud ] || MODULES=(crct10dif_pclmul virtio_pci virtio_net virtio_blk)
[ "$GUEST_KERNEL" != trixie ] || MODULES=(crct10dif_pclmul virtio_net virtio_blk)
# unstable's has no crct10dif module any more (the CRC library carries its x86 code) and builds virtio-pci in.
[ "$GUEST_KERNEL" != sid ] || MODULES=(virtio_net virtio_blk)
# The storage stacks' modules ship but are not loaded at boot (nothing else needs them): md's
# personalities come through the kernel's request_module(), the tests modprobe the rest.
STORAGE_MODULES=(md_mod raid1 dm_mod xfs)
# The cloud kernels build ext4 in; Debian's generic kernel (arm64's) has it as a module.
[ "$GUEST_KERNEL" != bookworm ] || STORAGE_MODULES+=(ext4)
BINARIES=(usr/sbin/nvme usr/sbin/dropbear bin/kmod
          sbin/mke2fs sbin/e2fsck sbin/mkfs.xfs sbin/xfs_repair sbin/mdadm sbin/lvm sbin/dmsetup bin/udevadm)
# udev's rules for block devices only: the persistent names, and no rule that loads modules or
# renames network interfaces (the guest must behave the same whether a test starts udevd or not).
UDEV_RULES=(50-udev-default.rules 60-block.rules 60-persistent-storage.rules)
# Other names of those binaries (what the tests type), as their packages link them.
ALIASES=(sbin/mkfs.ext4:mke2fs sbin/fsck.ext4:e2fsck sbin/pvcreate:lvm sbin/pvs:lvm sbin/vgcreate:lvm
         sbin/vgchange:lvm sbin/vgs:lvm sbin/lvcreate:lvm sbin/lvs:lvm sbin/pvscan:lvm sbin/vgremove:lvm)
EMBEDDED=("$here/init.sh" "$here/udhcpc.script" "$here/lvm.conf")
COMPRESS=${GUEST_COMPRESS:-none}
case "$COMPRESS" in gzip|zstd|lz4|none) ;; *) die "GUEST_COMPRESS must be gzip, zstd, lz4 or none (got $COMPRESS)" ;; esac

# The kernel adds its name to the key unless it is `bookworm` (so the default bookworm-cloud does); another architecture adds its name.
key_extra=(); [ "$GUEST_KERNEL" = bookworm ] || key_extra=("kernel=$GUEST_KERNEL")
[ "$GUEST_ARCH" = x86_64 ] || key_extra+=("arch=$GUEST_ARCH")
# Bump RECIPE when a change to this script changes the guest it builds: the key hashes the inputs
# (pins, modules, embedded files) and RECIPE, not the script's text, so a fix to a message or a
# comment does not cost a rebuild.
RECIPE=2
key=$( { printf '%s\n' "${PACKAGES[@]}" "${MODULES[@]}" "${STORAGE_MODULES[@]}" "${ALIASES[@]}" "${UDEV_RULES[@]}" "compress=$COMPRESS" \
           "${key_extra[@]}" "recipe=$RECIPE"; cat "${EMBEDDED[@]}"; } | sha256_of_stdin)
out="$CACHE_ROOT/guest/$key"
if cache_intact "$out"; then
  log "cached guest $key ($GUEST_ARCH, kernel $KERNEL_ABI, $COMPRESS)"
  echo "$out"
  exit 0
fi

mkdir -p "$CACHE_ROOT/guest"
exec 9>"$CACHE_ROOT/guest/.lock"
flock 9   # a concurrent build of the same guest finishes first; then it is found below
if cache_intact "$out"; then log "cached guest $key (built concurrently)"; echo "$out"; exit 0; fi

for t in cpio gzip xz flock python3 readelf; do command -v $t >/dev/null || die "$t is needed on the host (scripts/install-host-deps.sh)"; done
[ "$COMPRESS" != zstd ] || command -v zstd >/dev/null || die "zstd is needed for GUEST_COMPRESS=zstd"
case "$GUEST_KERNEL" in trixie|sid) command -v zstd >/dev/null || die "zstd is needed for GUEST_KERNEL=$GUEST_KERNEL (its bzImage payload may be zstd)" ;; esac
[ "$GUEST_KERNEL" != bookworm-cloud ] || command -v lz4 >/dev/null || die "lz4 is needed for GUEST_KERNEL=bookworm-cloud (its bzImage payload is lz4)"
start=$(date +%s.%N)

# --- fetch ---------------------------------------------------------------------------------------
debs="$CACHE_ROOT/guest/debs"
mkdir -p "$debs"
uri=$(debian_archive_uri)
deb_file() {  # deb_file ARCH NAME=VERSION: the .deb in $debs, if already fetched
  local arch=$1 name=${2%%=*} ver=${2#*=}
  # shellcheck disable=SC2012  # two exact Debian file names: ls prints the one that exists
  ls "$debs/${name}_${ver//:/%3a}_$arch.deb" "$debs/${name}_${ver//:/%3a}_all.deb" 2>/dev/null | head -1
}
fetch() {  # fetch ARCH SUITE PKG=VER... : download the pins not yet in $debs from SUITE's private apt state
  local arch=$1 suite=$2 apt_opts p cand; shift 2
  local missing=()
  for p in "$@"; do [ -n "$(deb_file "$arch" "$p")" ] || missing+=("$p"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ "$arch" = "$HOST_DEB_ARCH" ]; then
    apt_opts=$(private_apt "$suite" "deb $uri $suite main")
  else
    apt_opts=$(private_apt --arch "$arch" "$suite-$arch" "deb [arch=$arch] $uri $suite main")
  fi
  log "fetching ${#missing[@]} $arch packages from $uri $suite"
  # shellcheck disable=SC2086  # $apt_opts: apt options (private_apt), split into words on purpose
  if ! ( cd "$debs" && apt-get -q $apt_opts download "${missing[@]}" ) >"$debs/download.log" 2>&1; then
    # Stale lists? Refresh once, then say which pin the archive no longer serves.
    apt-get -q $apt_opts update >/dev/null 2>&1 || true
    if ! ( cd "$debs" && apt-get -q $apt_opts download "${missing[@]}" ) >"$debs/download.log" 2>&1; then
      for p in "${missing[@]}"; do
        cand=$(apt-cache $apt_opts policy "${p%%=*}" 2>/dev/null | awk '/Candidate:/{print $2}')
        [ "$cand" = "${p#*=}" ] || log "pinned $p, but $suite now serves ${p%%=*} ${cand:-(nothing)}"
      done
      die "apt-get download failed (see $debs/download.log); update the pins at the top of $0"
    fi
  fi
}
# PACKAGES starts with the kernel's (from $KERNEL_SUITE), the rest is bookworm's userland; a foreign guest
# also needs the host's build of the userland pins, for the tools this script runs.
nk=${#KERNEL_PACKAGES[@]}
USERLAND=("${PACKAGES[@]:$nk}")
fetch "$DEB_ARCH" "$KERNEL_SUITE" "${KERNEL_PACKAGES[@]}"
fetch "$DEB_ARCH" "$SUITE" "${USERLAND[@]}"
[ "$DEB_ARCH" = "$HOST_DEB_ARCH" ] || fetch "$HOST_DEB_ARCH" "$SUITE" "${USERLAND[@]}"

# --- unpack --------------------------------------------------------------------------------------
work=$(mktemp -d "$CACHE_ROOT/guest/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
cache_on_interrupt "$work"
pkg="$work/pkg"     # all packages unpacked, the guest's architecture
tools="$pkg"        # the same userland for the host's architecture: what this script runs
rootfs="$work/rootfs"  # what goes into the initramfs
stage="$work/out"
mkdir -p "$pkg" "$rootfs" "$stage"
for p in "${PACKAGES[@]}"; do dpkg-deb -x "$(deb_file "$DEB_ARCH" "$p")" "$pkg"; done
if [ "$DEB_ARCH" != "$HOST_DEB_ARCH" ]; then
  tools="$work/tools"; mkdir -p "$tools"
  for p in "${USERLAND[@]}"; do dpkg-deb -x "$(deb_file "$HOST_DEB_ARCH" "$p")" "$tools"; done
fi
kver=$KERNEL_ABI
# trixie ships modules under /usr/lib/modules (merged /usr); bookworm's kmod looks in /lib/modules.
if [ -d "$pkg/usr/lib/modules/$kver" ] && [ ! -e "$pkg/lib/modules/$kver" ]; then
  mkdir -p "$pkg/lib/modules"; mv "$pkg/usr/lib/modules/$kver" "$pkg/lib/modules/$kver"
fi
# The kernel image: /boot/vmlinuz-<abi> up to trixie, <modules dir>/vmlinuz in unstable's packages.
vmlinuz=$pkg/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || vmlinuz=$pkg/lib/modules/$kver/vmlinuz
[ -f "$vmlinuz" ] || die "no /boot/vmlinuz-$kver nor /usr/lib/modules/$kver/vmlinuz in ${KERNEL_PACKAGES[*]}"
libpath="$tools/lib/x86_64-linux-gnu:$tools/usr/lib/x86_64-linux-gnu"
loader="$tools/lib64/ld-linux-x86-64.so.2"
# Run a host binary from the unpacked packages with their own loader and libraries.
toolrun() { "$loader" --library-path "$libpath" "$@"; }

# --- kernel --------------------------------------------------------------------------------------
cp "$vmlinuz" "$stage/vmlinuz"
if [ "$GUEST_ARCH" = aarch64 ]; then
  # Debian's arm64 vmlinuz is the uncompressed Image already; QEMU's virt machine boots it as it is.
  [ "$(od -An -tx1 -j56 -N4 "$stage/vmlinuz" | tr -d ' ')" = 41524d64 ] || die "vmlinuz-$kver is not an arm64 Image"
  mv "$stage/vmlinuz" "$stage/Image"
else
# The ELF vmlinux inside the bzImage (payload_offset/payload_length in the setup header; an xz
# stream in 6.1, zstd in trixie's 6.12, each followed by the le32 uncompressed size): QEMU boots an
# ELF with a PVH note directly, skipping decompression.
python3 - "$stage/vmlinuz" "$stage/vmlinux" <<'EOF'
import lzma, struct, subprocess, sys
data = open(sys.argv[1], 'rb').read()
setup_sects = data[0x1f1] or 4
off, length = struct.unpack_from('<II', data, 0x248)
payload = data[(setup_sects + 1) * 512 + off:][:length]
if payload.startswith(b'\xfd7zXZ'):
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
elif payload.startswith(b'\x28\xb5\x2f\xfd'):
    elf = subprocess.run(['zstd', '-dc'], input=payload[:-4], stdout=subprocess.PIPE, check=True).stdout
    assert len(elf) == struct.unpack('<I', payload[-4:])[0], 'zstd payload: size mismatch'
elif payload.startswith(b'\x02\x21\x4c\x18'):   # lz4 legacy frame (bookworm's cloud kernel)
    size = struct.unpack('<I', payload[-4:])[0]
    elf = subprocess.run(['lz4', '-dc'], input=payload[:-4], stdout=subprocess.PIPE, check=True).stdout[:size]
else:
    sys.exit('kernel payload is neither xz, zstd nor lz4; cannot extract vmlinux')
assert elf[:4] == b'\x7fELF'
open(sys.argv[2], 'wb').write(elf)
EOF
fi

# --- modules -------------------------------------------------------------------------------------
kmodrun() { local tool=$1; shift; LD_LIBRARY_PATH=$libpath "$loader" --argv0 "$tool" "$tools/bin/kmod" "$@"; }
kmodrun depmod -b "$pkg" "$kver"
mods=$(kmodrun modprobe -d "$pkg" -S "$kver" --show-depends -a "${MODULES[@]}" "${STORAGE_MODULES[@]}" \
       | awk '$1 == "insmod" {print $2}' | sort -u)
for m in "${MODULES[@]}" "${STORAGE_MODULES[@]}"; do   # every module asked for must be among them
  echo "$mods" | grep -qE "/${m//[-_]/[-_]}\.ko(\.xz|\.zst)?$" || die "module $m not found in ${KERNEL_PACKAGES[*]} (built in? see its config)"
done
for m in $mods; do
  rel=${m#"$pkg"/}
  mkdir -p "$rootfs/$(dirname "$rel")"
  cp "$m" "$rootfs/$rel"
done
cp "$pkg/lib/modules/$kver/modules.order" "$pkg/lib/modules/$kver/modules.builtin"* "$rootfs/lib/modules/$kver/"
kmodrun depmod -b "$rootfs" "$kver"

# --- binaries and their libraries ----------------------------------------------------------------
copy_file() {  # copy_file PATH-IN-PKG : into the rootfs at the same path, symlinks resolved
  mkdir -p "$rootfs/$(dirname "$1")"
  cp -L "$pkg/$1" "$rootfs/$1"
}
# The libraries a binary needs, read from the ELF (readelf reads any architecture), each found in
# the pinned packages, transitively; all of it must come from there.
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
copy_with_libs() {  # copy_with_libs PATH-IN-PKG
  local f=$1 lib d found
  [ -e "$rootfs/$f" ] && return 0
  copy_file "$f"
  for lib in $(needed "$pkg/$f"); do
    found=
    for d in lib/$TRIPLET usr/lib/$TRIPLET; do
      if [ -e "$pkg/$d/$lib" ]; then found=$d/$lib; break; fi
    done
    [ -n "$found" ] || die "$f needs $lib, which no pinned package provides (add its package to PACKAGES)"
    copy_with_libs "$found"
  done
}
for b in "${BINARIES[@]}"; do copy_with_libs "$b"; done
for a in "${ALIASES[@]}"; do ln -sf "${a#*:}" "$rootfs/${a%%:*}"; done
install -D -m 0644 "$pkg/etc/mke2fs.conf" "$rootfs/etc/mke2fs.conf"   # ext4's defaults (else mke2fs warns, uses ext2's)
install -D -m 0644 "$here/lvm.conf" "$rootfs/etc/lvm/lvm.conf"
for r in "${UDEV_RULES[@]}"; do install -D -m 0644 "$pkg/lib/udev/rules.d/$r" "$rootfs/lib/udev/rules.d/$r"; done
mkdir -p "$rootfs/lib/systemd" && ln -sf /bin/udevadm "$rootfs/lib/systemd/systemd-udevd"   # as the package links it
copy_file "lib/$TRIPLET/$(basename "$LOADER")"
mkdir -p "$rootfs/$(dirname "$LOADER")"
[ -e "$rootfs/$LOADER" ] || ln -sf "/lib/$TRIPLET/$(basename "$LOADER")" "$rootfs/$LOADER"

# kmod's tools live in $KMOD_DIR, not /sbin: while the kernel boots, a request_module() (the crypto
# self-test of CTR-KDF asks for "crypto-hmac(sha256)") execs /sbin/modprobe from the initramfs, which
# cost ~0.1 s of boot under TCG for a module that does not exist (hmac and sha256 are built in).
# /init points /proc/sys/kernel/modprobe at $KMOD_DIR/modprobe once it runs, so later requests work.
KMOD_DIR=usr/lib/nvme-hotswap/kmod
KMOD_TOOLS=(modprobe depmod insmod rmmod lsmod modinfo)
mkdir -p "$rootfs/$KMOD_DIR"
for t in "${KMOD_TOOLS[@]}"; do ln -sf /bin/kmod "$rootfs/$KMOD_DIR/$t"; done
copy_file bin/busybox
while read -r applet; do   # busybox applets, unless kmod has the name (nothing may answer /sbin/modprobe)
  name=$(basename "$applet")
  [[ " ${KMOD_TOOLS[*]} " == *" $name "* ]] && continue
  [ -e "$rootfs/sbin/$name" ] || [ -e "$rootfs/bin/$name" ] || [ -e "$rootfs/usr/sbin/$name" ] && continue
  mkdir -p "$rootfs/$(dirname "$applet")"
  [ -e "$rootfs/$applet" ] || ln -s /bin/busybox "$rootfs/$applet"
done < <("$tools/bin/busybox" --list-full)   # the host's busybox-static of the same pin: same applets

# --- configuration, keys -------------------------------------------------------------------------
install -m 0755 "$here/init.sh" "$rootfs/init"
install -D -m 0755 "$here/udhcpc.script" "$rootfs/etc/udhcpc.script"
printf '%s\n' "${MODULES[@]}" > "$rootfs/etc/guest-modules"
mkdir -p "$rootfs"/{proc,sys,dev,tmp,run,var/log,mnt} "$rootfs/etc/dropbear"
install -d -m 0700 "$rootfs/root" "$rootfs/root/.ssh"
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
echo 'root:*:19000:0:99999:7:::' > "$rootfs/etc/shadow"
printf 'root:x:0:\ntty:x:5:\n' > "$rootfs/etc/group"
echo /bin/sh > "$rootfs/etc/shells"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
echo nvme-guest > "$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n10.0.2.15 nvme-guest\n' > "$rootfs/etc/hosts"
echo 'export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root' > "$rootfs/etc/profile"

# Host key made here, so the guest does not spend boot time (and entropy) on it.
toolrun "$tools/usr/bin/dropbearkey" -t ed25519 -f "$rootfs/etc/dropbear/dropbear_ed25519_host_key" >/dev/null 2>&1 \
  || die "dropbearkey failed to make the host key"
# No client key in the image: /init installs the one given on the kernel command line
# (nvmehs.authorized_key=, made per run by the harness: nvme_hotswap/sshkey.py).

# --- initramfs -----------------------------------------------------------------------------------
raw_size=$(du -sb --apparent-size "$rootfs" | cut -f1)
( cd "$rootfs" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet ) > "$work/initramfs.cpio"
cpio_size=$(stat -c %s "$work/initramfs.cpio")
case "$COMPRESS" in
  gzip) gzip -9 -n -c "$work/initramfs.cpio" > "$stage/initramfs.img" ;;
  zstd) zstd -q -19 -c "$work/initramfs.cpio" > "$stage/initramfs.img" ;;
  lz4)  lz4 -q -l -9 -c "$work/initramfs.cpio" > "$stage/initramfs.img" ;;   # -l: the legacy frame the kernel reads
  none) cp "$work/initramfs.cpio" "$stage/initramfs.img" ;;
esac
img_size=$(stat -c %s "$stage/initramfs.img")
end=$(date +%s.%N)

# --- manifest ------------------------------------------------------------------------------------
# shellcheck disable=SC2046  # the module names, one argument each
python3 - "$stage/manifest.json" "$kver" "$COMPRESS" "$cpio_size" "$img_size" "$raw_size" "$start" "$end" \
  "$key" "$uri" "$SUITE" "$KERNEL_SUITE" "${PACKAGES[@]}" -- $(for m in $mods; do m=${m##*/}; echo "${m%%.ko*}"; done) <<'EOF'
import json, os, sys
(path, kver, comp, cpio, img, raw, start, end, key, uri, suite, ksuite), rest = sys.argv[1:13], sys.argv[13:]
sep = rest.index('--')
pkgs, mods = rest[:sep], rest[sep + 1:]
d = os.path.dirname(path)
json.dump({
    'key': key,
    'debian_suite': suite,
    'arch': os.environ['GUEST_ARCH'],
    'kernel_suite': ksuite,
    'packages': {p.split('=', 1)[0]: p.split('=', 1)[1] for p in pkgs},
    'kernel_release': kver,
    'kernel_modules': sorted(mods),
    'initramfs': {'compression': comp, 'files_bytes': int(raw), 'cpio_bytes': int(cpio),
                  'compressed_bytes': int(img)},
    'kernel_files': {f: os.path.getsize(os.path.join(d, f)) for f in ('vmlinuz', 'vmlinux', 'Image')
                     if os.path.exists(os.path.join(d, f))},
    'build_seconds': round(float(end) - float(start), 1),
    'ssh': {'user': 'root', 'port': 22, 'key': 'per run: kernel argument nvmehs.authorized_key=<base64 ed25519 public key>'},
    'console_marker': 'nvme-hotswap: sshd ready',
}, open(path, 'w'), indent=2)
EOF

cache_seal "$stage"
rm -rf "$out"
mv "$stage" "$out"
date -u +%FT%TZ > "$out/DONE"
log "built guest $key in $(python3 -c "print(round($end - $start, 1))") s: initramfs $((cpio_size/1024)) KiB cpio, $((img_size/1024)) KiB $COMPRESS"
echo "$out"
