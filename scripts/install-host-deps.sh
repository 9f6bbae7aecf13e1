#!/usr/bin/env bash
# Install the Debian packages needed to build QEMU and the guest (and to lint the scripts), once.
# Why a script: a fresh machine has none of them, and CI must get exactly what a developer gets.
# `install-host-deps.sh bench` also installs what `make bench` boots virtme-ng with (Debian's own
# QEMU with 9p, depmod, busybox for vng's initramfs, udevd: without it vng's guest cannot find its
# virtio-serial ports and vng exits 255); the suite itself never uses them. `install-host-deps.sh
# ci-local` installs what `make ci-local` runs gitlab-ci-local with: rsync (it copies the tree with it
# even for shell jobs) and, where this machine has no Node.js, Debian's nodejs and npm.
set -euo pipefail

PKGS=(
  # QEMU build (x86_64-softmmu, slirp, fdt)
  build-essential pkg-config ninja-build flex bison python3-venv dpkg-dev xz-utils ccache
  libglib2.0-dev libpixman-1-dev libslirp-dev libfdt-dev zlib1g-dev
  # firmware the built QEMU loads with -L (the Debian source tarball strips blobs)
  seabios qemu-system-data ipxe-qemu
  # guest image assembly (zstd, lz4: the payloads of trixie's and bookworm-cloud's bzImage; binutils' readelf)
  cpio gzip zstd lz4 binutils
  # cloud-style guest (images/build-cloud-image.sh, GUEST=cloud): rootfs, ext4 image, NoCloud seed (FAT)
  mmdebstrap e2fsprogs dosfstools mtools
  # make lint: the shell scripts
  shellcheck
  # qemu-img: test images in another format (drive_insert's [format] argument, test_drive_reconnect)
  qemu-utils
)
case "${1:-}" in
  "") ;;
  bench) PKGS+=(qemu-system-x86 kmod busybox-static udev) ;;
  ci-local) PKGS+=(rsync); command -v node >/dev/null && command -v npm >/dev/null || PKGS+=(nodejs npm) ;;
  *) echo "error: unknown package group '$1' (there are: bench, ci-local)" >&2; exit 2 ;;
esac

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "host packages: all present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing Debian packages: ${missing[*]}; run 'sudo $0' or install them" >&2
  exit 1
fi
echo "host packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "host packages: installed ${#missing[@]}"
