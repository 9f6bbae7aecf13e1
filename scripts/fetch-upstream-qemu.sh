#!/usr/bin/env bash
# Obtain upstream QEMU's own release, as Debian unstable ships it in binary form, or find it in the cache.
# The last line printed is a qemu-system-<arch> the suite runs like any other QEMU=.
#
# Why a binary package: Debian's archive here serves qemu-system-x86 / qemu-system-arm 1:11.1.3+ds-1 but
# not their source (the .dsc is 404), so upstream 11.1 can be run, not built. Its libraries are
# unstable's (newer than this host's), so it lives in a private unstable root made by mmdebstrap and is
# started through that root's own dynamic loader with --library-path into the root: QEMU sees the host's
# files (disks, sockets, kernels) exactly as the suite passes them, and nothing on the host changes.
# The entry's bin/qemu-system-<arch> is that start, with `exec` (the PID the suite ends is QEMU's), the
# root's module folder, and the root's firmware first in the search path (-L: the release's own SeaBIOS,
# option ROMs and iPXE; the suite's -L folders come after and are only looked at for what it lacks).
#
# Cache: $CACHE_ROOT/upstream-qemu/<key>, key = hash(package, pinned version, RECIPE); sealed like the
# other entries (scripts/lib.sh: SHA256SUMS of the root's /usr and the starter), rebuilt when damaged.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

# The one place the upstream release under test is pinned (make check-upstream, the upstream cell).
UPSTREAM_QEMU_DEB_VERSION=${UPSTREAM_QEMU_DEB_VERSION:-1:11.1.3+ds-1}
UPSTREAM_SUITE=sid
RECIPE=1
GUEST_ARCH=${GUEST_ARCH:-x86_64}
case "$GUEST_ARCH" in
  x86_64)  package=qemu-system-x86 ;;
  aarch64) package=qemu-system-arm ;;
  *) die "GUEST_ARCH must be x86_64 or aarch64 (got $GUEST_ARCH)" ;;
esac
binary_name=qemu-system-$GUEST_ARCH
[ "$(uname -m)" = x86_64 ] || die "the upstream root is made for an x86_64 host (its loader and libraries); this host is $(uname -m)"
ldso_rel=usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
libdirs_rel=(usr/lib/x86_64-linux-gnu lib/x86_64-linux-gnu)

key=$(printf '%s\n' "$package=$UPSTREAM_QEMU_DEB_VERSION" "suite=$UPSTREAM_SUITE" "recipe=$RECIPE" | sha256_of_stdin)
out=$CACHE_ROOT/upstream-qemu/$key
if cache_intact "$out"; then
  log "upstream QEMU: cached $package $UPSTREAM_QEMU_DEB_VERSION ($out)"
  echo "$out/bin/$binary_name"
  exit 0
fi

command -v mmdebstrap >/dev/null || die "mmdebstrap is missing; run scripts/install-host-deps.sh (as root)"
[ "$(id -u)" -eq 0 ] || die "making the private unstable root needs root (mmdebstrap's root mode); run as root"
uri=$(debian_archive_uri)

# Is the pinned version still in the archive? Ask a private apt state of unstable (the host's is not
# touched); its Release file may be past its Valid-Until here, which says nothing about the packages.
APT_EXTRA_OPTS="-o Acquire::Check-Valid-Until=false"
opts=$(private_apt "upstream-$UPSTREAM_SUITE" "deb $uri $UPSTREAM_SUITE main")
# shellcheck disable=SC2086  # the options are words on purpose
offered=$(apt-cache $opts madison "$package" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' | paste -sd' ' -)
case " $offered " in
  *" $UPSTREAM_QEMU_DEB_VERSION "*) ;;
  *) die "Debian $UPSTREAM_SUITE ($uri) no longer has $package $UPSTREAM_QEMU_DEB_VERSION (it has: ${offered:-nothing}); pin the version it has in UPSTREAM_QEMU_DEB_VERSION (scripts/fetch-upstream-qemu.sh), then check the known-defect markers (docs/findings/) against it" ;;
esac

log "upstream QEMU: making a private $UPSTREAM_SUITE root with $package $UPSTREAM_QEMU_DEB_VERSION (log: $out.log)"
cache_on_interrupt "$out"
rm -rf "$out"
mkdir -p "$out"
start=$SECONDS
# Firmware and data by name: mmdebstrap installs no Recommends, and the release's own files are wanted.
if ! mmdebstrap --variant=apt --quiet --aptopt='Acquire::Check-Valid-Until "false"' \
     --include="$package=$UPSTREAM_QEMU_DEB_VERSION,qemu-system-data,seabios,ipxe-qemu" \
     "$UPSTREAM_SUITE" "$out/root" "deb $uri $UPSTREAM_SUITE main" >"$out.log" 2>&1; then
  rm -rf "$out"
  die "mmdebstrap of $package $UPSTREAM_QEMU_DEB_VERSION failed; see $out.log"
fi
for f in "$ldso_rel" "usr/bin/$binary_name"; do
  [ -f "$out/root/$f" ] || die "the private root lacks $f; see $out.log"
done
rm -rf "$out/root/var/cache/apt/archives" "$out/root/var/lib/apt/lists"   # downloads, not needed to run

mkdir -p "$out/bin"
libpath=$(printf "$out/root/%s:" "${libdirs_rel[@]}")
fw=()
for d in usr/share/seabios usr/share/qemu usr/lib/ipxe/qemu; do [ ! -d "$out/root/$d" ] || fw+=(-L "$out/root/$d"); done
{
  echo '#!/bin/sh'
  echo "# upstream QEMU: Debian's $package $UPSTREAM_QEMU_DEB_VERSION from a private $UPSTREAM_SUITE root (scripts/fetch-upstream-qemu.sh)"
  echo "QEMU_MODULE_DIR='$out/root/usr/lib/x86_64-linux-gnu/qemu'; export QEMU_MODULE_DIR"
  printf 'exec %q --library-path %q %q' "$out/root/$ldso_rel" "${libpath%:}" "$out/root/usr/bin/$binary_name"
  printf ' %q' "${fw[@]}"
  echo ' "$@"'
} > "$out/bin/$binary_name"
chmod +x "$out/bin/$binary_name"
version=$("$out/bin/$binary_name" -version | head -n 1) || die "$out/bin/$binary_name -version failed; see $out.log"
log "upstream QEMU: $version"

mapfile -t sealed < <(cd "$out" && find root/usr bin -type f -printf '%p\n' | LC_ALL=C sort)
cache_seal "$out" "${sealed[@]}"
{ echo "origin=upstream QEMU release, Debian binary package (not built here: its source is not served)"
  echo "package=$package $UPSTREAM_QEMU_DEB_VERSION ($UPSTREAM_SUITE, $uri)"
  echo "version=$version"
  echo "started_through=the root's $ldso_rel --library-path ${libpath%:}"
  echo "firmware=the root's seabios, qemu-system-data and ipxe-qemu (-L first)"
  echo "fetch_seconds=$((SECONDS - start))"; } > "$out/DONE"
log "upstream QEMU: ready in $((SECONDS - start)) s ($out)"
echo "$out/bin/$binary_name"
