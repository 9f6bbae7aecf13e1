#!/usr/bin/env bash
# Build qemu-system-x86_64 (GUEST_ARCH=aarch64: qemu-system-aarch64) with our series applied, or
# find it in the cache.
# The last line printed is the binary's absolute path (scripts rely on it).
#
# Source: Debian's source package qemu (pinned below), unpacked with dpkg-source so Debian's
# own quilt patches apply; or QEMU_SRC=/path/to/a/qemu/git/checkout. The series in
# PATCHES (a folder with a `series` file; default patches/, or `none`) is applied with git am,
# so a patch that does not apply fails with its name. The build is cached under
# $CACHE_ROOT/qemu/<key>, key = hash(source identity, patch contents, configure flags, RECIPE).
# MUTANT=<name> then applies patches/mutants/<name>.diff (git apply), a deliberately broken
# variant for the mutation check; its content goes into the key, so each mutant is cached apart.
# Incremental builds (MUTANT set, or QEMU_INCREMENTAL=1: make review's prefixes): the variant is made
# in one configured work tree per source and flags ($CACHE_ROOT/qemu/tree-<base key>), brought to
# the wanted patches by resetting only to the last patch it shares with them, and ninja rebuilds
# what changed; only the binary is kept under the variant's key (no src/ or build/ tree).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
. "$here/lib.sh"

QEMU_DEB_VERSION=${QEMU_DEB_VERSION:-1:10.2.2+ds-1}
# Bump when a change to this script changes what it builds (the cache key does not hash the script,
# so fixes to logging or messages do not cost a rebuild).
RECIPE=1
MESON_VERSION=1.9.1
PYCOTAP_VERSION=1.3.1
PATCHES=${PATCHES:-$top/patches}
# Absolute: the patches are applied from inside the build's own source tree.
[ "$PATCHES" = none ] || PATCHES=$(cd "$PATCHES" 2>/dev/null && pwd) || die "PATCHES=$PATCHES is not a folder"
GUEST_ARCH=${GUEST_ARCH:-x86_64}
case "$GUEST_ARCH" in x86_64|aarch64) ;; *) die "GUEST_ARCH must be x86_64 or aarch64 (got $GUEST_ARCH)" ;; esac
TARGET=$GUEST_ARCH-softmmu
CONFIGURE_FLAGS=(--target-list="$TARGET" --without-default-features --enable-slirp --enable-kvm
                 --enable-tcg --enable-fdt=system --disable-install-blobs --disable-docs)
binary_name=qemu-system-${TARGET%-softmmu}
# QEMU_DEVICES=lean (default): only the devices in scripts/qemu-devices/$GUEST_ARCH.mak (what the suite,
# the qtests and test-hmp use; the boards bring what they select), a quarter less build time
# (227 -> 170 s here) and binary (74.5 -> 56.2 MB).
# QEMU_DEVICES=default: every device QEMU builds by default for the target (e.g. to compare, or for a
# test of your own that needs more). The file's content is part of the cache key.
QEMU_DEVICES=${QEMU_DEVICES:-lean}
devices_file=
case "$QEMU_DEVICES" in
  lean) devices_file=$top/scripts/qemu-devices/$GUEST_ARCH.mak
        [ -f "$devices_file" ] || die "no device list $devices_file for GUEST_ARCH=$GUEST_ARCH"
        CONFIGURE_FLAGS+=(--without-default-devices "--with-devices-$GUEST_ARCH=nvme-hotswap") ;;
  default) ;;
  *) die "QEMU_DEVICES must be lean or default (got $QEMU_DEVICES)" ;;
esac
# QEMU_FLAVOUR=asan: AddressSanitizer (and LeakSanitizer at exit) in QEMU; its own cache key through the
# flags. The harness fails a test when QEMU reports (a report ends QEMU with a non-zero status).
QEMU_FLAVOUR=${QEMU_FLAVOUR:-default}
case "$QEMU_FLAVOUR" in
  default) ;;
  asan) CONFIGURE_FLAGS+=(--enable-asan) ;;
  *) die "QEMU_FLAVOUR must be default or asan (got $QEMU_FLAVOUR)" ;;
esac

# --- the series --------------------------------------------------------------------------------
patch_files=()
if [ "$PATCHES" != none ]; then
  [ -f "$PATCHES/series" ] || die "no series file in $PATCHES; set PATCHES=none to build without the series"
  list=$(series_patches "$PATCHES") || exit 1
  [ -z "$list" ] || mapfile -t patch_files <<< "$list"
fi

mutant_file=
# A mutant's build also carries the series' qtests (those its source has), built against it:
# make check-mutants runs them as a stage of its own, and mutants built side by side share one
# work tree, so each keeps its own copy under build/tests/qtest/.
MUTANT_QTESTS="nvme-hotplug-test qos-test test-hmp"
if [ -n "${MUTANT:-}" ]; then
  mutant_file=$top/patches/mutants/$MUTANT.diff
  [ -f "$mutant_file" ] || die "mutant $MUTANT: no such file $mutant_file"
fi

# --- source identity -----------------------------------------------------------------------------
if [ -n "${QEMU_SRC:-}" ]; then
  QEMU_SRC=$(cd "$QEMU_SRC" && pwd) || die "QEMU_SRC=$QEMU_SRC is not a directory"
  git -C "$QEMU_SRC" rev-parse HEAD >/dev/null 2>&1 || die "QEMU_SRC=$QEMU_SRC must be a git checkout of QEMU"
  source_id="git:$QEMU_SRC:$(git -C "$QEMU_SRC" rev-parse HEAD):$(git -C "$QEMU_SRC" diff HEAD | sha256_of_stdin)"
else
  source_id="debian:qemu=$QEMU_DEB_VERSION"
fi

key=$( { echo "$source_id"; echo "${CONFIGURE_FLAGS[*]}"; echo "meson=$MESON_VERSION pycotap=$PYCOTAP_VERSION";
         echo "recipe=$RECIPE"; [ -z "$devices_file" ] || cat "$devices_file"; for p in "${patch_files[@]}"; do basename "$p"; cat "$p"; done;
         if [ -n "$mutant_file" ]; then echo "mutant=$MUTANT"; cat "$mutant_file"; echo "qtests=$MUTANT_QTESTS"; fi
       } | sha256_of_stdin)
out="$CACHE_ROOT/qemu/$key"
# One builder per key: a second run (another checkout, CI, a helper) waits for the first.
mkdir -p "$CACHE_ROOT/qemu"
exec 9>"$out.lock"
flock -n 9 || { log "another build of $key is running; waiting for it"; flock 9; }
# QEMU_REBUILD=1 with QEMU_INCREMENTAL=1: build the variant in the work tree even when its binary is
# cached, so that the tree holds it (make review runs a series' functional tests there).
if [ "${QEMU_REBUILD:-0}" != 1 ] && cache_intact "$out"; then
  log "cached build $key ($source_id, ${#patch_files[@]} patches${MUTANT:+, mutant $MUTANT})"
  echo "$out/build/$binary_name"
  exit 0
fi

bash "$here/install-host-deps.sh" >&2

# meson >= 1.5 is needed and Debian's tarball ships no wheels: a build venv kept in the cache.
buildenv="$CACHE_ROOT/buildenv"
if ! "$buildenv/bin/meson" --version 2>/dev/null | grep -qx "$MESON_VERSION" || ! "$buildenv/bin/python3" -c "import pycotap" 2>/dev/null; then
  log "creating build venv with meson $MESON_VERSION in $buildenv"
  python3 -m venv "$buildenv" >&2
  "$buildenv/bin/pip" install -q "meson==$MESON_VERSION" "pycotap==$PYCOTAP_VERSION" >&2
fi

# --- unpack --------------------------------------------------------------------------------------
# debian_tree: Debian's source package, unpacked with its quilt patches, once ($srcdir/tree).
debian_tree() {
  srcdir="$CACHE_ROOT/src/qemu-$QEMU_DEB_VERSION"
  if [ ! -f "$srcdir/.unpacked" ]; then
    uri=$(debian_archive_uri)
    opts=$(private_apt sid-src "deb-src $uri sid main")   # not "sid": the guest's unstable kernel has that state
    mkdir -p "$srcdir"
    log "fetching Debian source qemu=$QEMU_DEB_VERSION from $uri"
    # shellcheck disable=SC2086  # $opts: apt options (private_apt), split into words on purpose
    ( cd "$srcdir" && apt-get -q $opts source --download-only "qemu=$QEMU_DEB_VERSION" >download.log 2>&1 ) \
      || die "Debian source package qemu=$QEMU_DEB_VERSION could not be downloaded (see $srcdir/download.log); the archive may have dropped it: set QEMU_DEB_VERSION to one it lists (apt-cache showsrc qemu) or use QEMU_SRC"
    rm -rf "$srcdir/tree"
    ( cd "$srcdir" && dpkg-source -x ./*.dsc tree >unpack.log 2>&1 ) \
      || die "dpkg-source -x failed; see $srcdir/unpack.log"
    touch "$srcdir/.unpacked"
  fi
}

# git_base DIR: a throwaway repository, so the series goes in with git am and a bad patch fails by
# name. gc.auto=0: git am would otherwise start a repack of the whole tree in the background.
git_base() {
  ( cd "$1" && rm -rf .git && git init -q && git config gc.auto 0 && git add -A && \
      git -c user.name=build -c user.email=build@localhost commit -q -m "base: $source_id" && git tag base ) >&2
}

# git_am DIR PATCH: apply one patch with git am, or die naming it.
git_am() {
  git -C "$1" -c user.name=build -c user.email=build@localhost am -q --keep-cr "$2" >&2 \
    || { git -C "$1" am --abort >/dev/null 2>&1 || true; die "patch $(basename "$2") does not apply on $source_id"; }
}

# ccache (meson picks it up) makes a rebuild after a one-patch change cost minutes less; paths
# are made relative to the build's folder so builds under different keys share the cache.
# QEMU's configure names the compiler itself, so ccache comes in through Debian's masquerade links.
use_ccache() {  # use_ccache BASEDIR
  export CCACHE_DIR="$CACHE_ROOT/ccache" CCACHE_BASEDIR="$1" CCACHE_NOHASHDIR=true CCACHE_MAXSIZE=5G
  [ -d /usr/lib/ccache ] && export PATH="/usr/lib/ccache:$PATH"
  return 0
}

configure_in() {  # configure_in ENTRY: configure ENTRY/build from ENTRY/src
  mkdir -p "$1/build"
  log "configure ${CONFIGURE_FLAGS[*]} (log: $1/build.log)"
  ( cd "$1/build" && ../src/configure --python="$buildenv/bin/python3" \
      "${CONFIGURE_FLAGS[@]}" ) >"$1/build.log" 2>&1 || { tail -30 "$1/build.log" >&2; die "configure failed; see $1/build.log"; }
}

ninja_in() {  # ninja_in ENTRY
  log "ninja $binary_name"
  ninja -C "$1/build" "$binary_name" >>"$1/build.log" 2>&1 || { tail -40 "$1/build.log" >&2; die "build failed; see $1/build.log"; }
}

write_done() {  # write_done ENTRY SECONDS [EXTRA LINE]
  { echo "source=$source_id"; echo "patches=${#patch_files[@]}"; echo "build_seconds=$2";
    [ "$QEMU_FLAVOUR" = default ] || echo "flavour=$QEMU_FLAVOUR";
    [ -z "$mutant_file" ] || echo "mutant=$MUTANT sha256=$(sha256sum "$mutant_file" | cut -c1-16)";
    [ -z "${3:-}" ] || echo "$3"; } > "$1/DONE"
  for p in "${patch_files[@]}"; do echo "patch=$(basename "$p") sha256=$(sha256sum "$p" | cut -c1-16)"; done >> "$1/DONE"
}

# copy_source DIR: the source to build, as a plain tree in DIR: QEMU_SRC's HEAD plus its uncommitted
# changes and fetched subprojects (the user's tree is not modified), else Debian's pristine tree.
copy_source() {
  if [ -n "${QEMU_SRC:-}" ]; then
    log "copying $QEMU_SRC (HEAD plus uncommitted changes) to $1; your tree is not modified"
    mkdir -p "$1"
    git -C "$QEMU_SRC" archive HEAD | tar -x -C "$1" || die "git archive of $QEMU_SRC failed"
    git -C "$QEMU_SRC" diff HEAD --binary | (cd "$1" && git apply --allow-empty) \
      || die "could not carry the uncommitted changes of $QEMU_SRC over"
    # meson subprojects fetched into the user's tree (there is no network here to fetch them again)
    for d in "$QEMU_SRC"/subprojects/*/; do
      [ -d "$d" ] && [ ! -e "$1/subprojects/$(basename "$d")" ] && cp -a "$d" "$1/subprojects/"
    done
    for sp in keycodemapdb berkeley-softfloat-3 berkeley-testfloat-3; do
      [ -e "$1/subprojects/$sp/meson.build" ] || die "QEMU_SRC=$QEMU_SRC lacks the meson subproject $sp and this machine cannot download it: run 'meson subprojects download' (or one build) in your tree where the network reaches gitlab.com, then retry"
    done
  else
    debian_tree
    log "copying pristine tree to $1"
    cp -a "$srcdir/tree" "$1"
  fi
  # configure finds --with-devices-ARCH=NAME only as configs/devices/<target>/NAME.mak
  [ -z "$devices_file" ] || cp "$devices_file" "$1/configs/devices/$TARGET/nvme-hotswap.mak"
}

start=$(date +%s)
if [ -n "$mutant_file" ] || [ "${QEMU_INCREMENTAL:-0}" = 1 ]; then
  base_key=$( { echo "$source_id"; echo "${CONFIGURE_FLAGS[*]}"; echo "meson=$MESON_VERSION pycotap=$PYCOTAP_VERSION";
                echo "recipe=$RECIPE"; [ -z "$devices_file" ] || cat "$devices_file"; } | sha256_of_stdin)
  tree="$CACHE_ROOT/qemu/tree-$base_key"
  exec 8>"$tree.lock"
  flock -n 8 || { log "another build is using the work tree $tree; waiting for it"; flock 8; }
  use_ccache "$tree"
  if [ ! -f "$tree/READY" ]; then
    log "making the work tree $tree: configured once, each variant is then built in it incrementally"
    rm -rf "$tree"; mkdir -p "$tree"
    cache_on_interrupt "$tree"
    copy_source "$tree/src"
    git_base "$tree/src"
    configure_in "$tree"
    : > "$tree/applied"
    touch "$tree/READY"
  fi
  trap - INT TERM    # an interrupted variant leaves the tree to be reset by the next one
  # Bring the tree to the wanted patches: drop a mutant's uncommitted change, keep the patches it
  # shares with this variant (a prefix), reset to there and apply the rest. Git rewrites only the
  # files that differ, so ninja recompiles only those.
  git -C "$tree/src" am --abort >/dev/null 2>&1 || true
  git -C "$tree/src" checkout -q -- . && git -C "$tree/src" clean -fdq
  mapfile -t applied < "$tree/applied"
  keep=0
  for p in "${patch_files[@]}"; do
    if [ "$keep" -ge "${#applied[@]}" ] || [ "${applied[$keep]%% *}" != "$(sha256sum "$p" | cut -d' ' -f1)" ]; then
      break
    fi
    keep=$((keep + 1))
  done
  if [ "$keep" -eq 0 ]; then at=base; else at=${applied[$((keep - 1))]#* }; fi
  git -C "$tree/src" reset -q --hard "$at"
  printf '%s\n' "${applied[@]:0:$keep}" | sed '/^$/d' > "$tree/applied"
  for p in "${patch_files[@]:$keep}"; do
    log "applying $(basename "$p")"
    git_am "$tree/src" "$p"
    echo "$(sha256sum "$p" | cut -d' ' -f1) $(git -C "$tree/src" rev-parse HEAD)" >> "$tree/applied"
  done
  if [ -n "$mutant_file" ]; then
    log "applying mutant $MUTANT"
    git -C "$tree/src" apply "$mutant_file" >&2 || die "mutant $MUTANT ($mutant_file) does not apply on the series"
  fi
  ninja_in "$tree"
  rm -rf "$out"; mkdir -p "$out/build"
  cp "$tree/build/$binary_name" "$out/build/$binary_name"
  products=("build/$binary_name")
  if [ -n "$mutant_file" ]; then
    qtests=()
    for q in $MUTANT_QTESTS; do [ ! -f "$tree/src/tests/qtest/$q.c" ] || qtests+=("tests/qtest/$q"); done
    log "ninja ${qtests[*]}"
    ninja -C "$tree/build" "${qtests[@]}" >>"$tree/build.log" 2>&1 || { tail -40 "$tree/build.log" >&2; die "qtest build failed; see $tree/build.log"; }
    mkdir -p "$out/build/tests/qtest"
    for q in "${qtests[@]}"; do cp "$tree/build/$q" "$out/build/$q"; products+=("build/$q"); done
  fi
  end=$(date +%s)
  cache_seal "$out" "${products[@]}"
  write_done "$out" "$((end-start))" "incremental=$tree (kept $keep of ${#patch_files[@]} patches)"
  log "built in $((end-start)) s (incremental: $keep of ${#patch_files[@]} patches were in the work tree)"
  echo "$out/build/$binary_name"
  exit 0
fi

rm -rf "$out"; mkdir -p "$out"
cache_on_interrupt "$out"
copy_source "$out/src"
git_base "$out/src"
for p in "${patch_files[@]}"; do
  log "applying $(basename "$p")"
  git_am "$out/src" "$p"
done
if [ -n "$mutant_file" ]; then
  log "applying mutant $MUTANT"
  git -C "$out/src" apply "$mutant_file" >&2 || die "mutant $MUTANT ($mutant_file) does not apply on the series"
fi

# --- build ---------------------------------------------------------------------------------------
use_ccache "$out"
configure_in "$out"
ninja_in "$out"
end=$(date +%s)
cache_seal "$out" "build/$binary_name"
write_done "$out" "$((end-start))"
log "built in $((end-start)) s"
echo "$out/build/$binary_name"
