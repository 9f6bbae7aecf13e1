#!/usr/bin/env bash
# Check our QEMU series against a build where it is applied.
# Usage: scripts/check-series.sh BUILD_DIR
#   BUILD_DIR is the meson build dir of a tree with the series applied, with the source at
#   BUILD_DIR/../src (the layout scripts/build-qemu.sh makes: $CACHE_ROOT/qemu/<key>/{src,build}).
# Checks, each with a one-line summary: checkpatch on every patch in patches/series (errors
# fail, warnings are shown), our qtest nvme-hotplug-test, QEMU's nvme tests (part of qos-test)
# and test-hmp (which runs every HMP command listed in it, drive_insert included), and the
# functional tests (tests/functional) the series adds or changes, through QEMU's own meson test,
# offline: their assets come from this machine's Debian mirror (nvme_hotswap/programs/functional_assets.py).
# Only incremental ninja targets are built. Exit status: number of failed checks (0 = pass).
# QTESTS="nvme-hotplug-test qos-test" runs only those checks and no checkpatch (make
# mutation-score judges each generated mutant with the qtests of its patch this way; make review
# runs a series' functional tests with QTESTS=functional).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
. "$here/lib.sh"

[ $# -eq 1 ] || die "usage: $0 BUILD_DIR (a QEMU build dir with the series applied, source in BUILD_DIR/../src)"
build=$(cd "$1" 2>/dev/null && pwd) || die "build dir $1 does not exist"
# PREBUILT=1 (with QTESTS): BUILD_DIR holds built binaries only (a mutant's cache entry of
# scripts/build-qemu.sh: the QEMU binary and tests/qtest/*), no source, nothing to build.
PREBUILT=${PREBUILT:-0}
if [ "$PREBUILT" = 1 ]; then
  [ -n "${QTESTS:-}" ] || die "PREBUILT=1 needs QTESTS (there is no source to run checkpatch on)"
  src=
else
  src=$(cd "$build/../src" 2>/dev/null && pwd) || die "no source tree at $build/../src"
  [ -f "$build/build.ninja" ] || die "$build is not a configured meson build dir"
fi
PATCHES=${PATCHES:-$top/patches}
[ -f "$PATCHES/series" ] || die "no series file in $PATCHES"
TARGET_BIN=${TARGET_BIN:-qemu-system-x86_64}
QTEST_TIMEOUT=${QTEST_TIMEOUT:-300}
# Logs go with the other results (results/check-series/<UTC time>/), not to a temporary folder.
logdir="${RESULTS_DIR:-$top/results}/check-series/$(date -u +%Y-%m-%dT%H%M%SZ)"
mkdir -p "$logdir"

failed=0
summary=()
result() {  # result NAME STATUS DETAIL
  summary+=("$(printf '%-22s %-4s %s' "$1" "$2" "$3")")
  printf '[%s] %-22s %-4s %s\n' "$(basename "$0")" "$1" "$2" "$3" >&2
  [ "$2" = ok ] || failed=$((failed + 1))
}

# --- checkpatch ----------------------------------------------------------------------------------
list=$(series_patches "$PATCHES") || exit 1
patches=()
[ -z "$list" ] || mapfile -t patches <<< "$list"
[ ${#patches[@]} -gt 0 ] || die "$PATCHES/series lists no patches"

QTESTS=${QTESTS:-}
only() { [ -z "$QTESTS" ] || [[ " $QTESTS " == *" $1 "* ]]; }  # only NAME: is the qtest NAME selected?
[ -z "$QTESTS" ] || patches=()   # a qtest selection skips checkpatch

for p in "${patches[@]}"; do
  name=$(basename "$p")
  out="$logdir/checkpatch-$name.log"
  ( cd "$src" && perl scripts/checkpatch.pl "$p" ) >"$out" 2>&1
  totals=$(grep -m1 '^total:' "$out" || echo "no total line")
  errors=$(sed -n 's/^total: \([0-9]*\) errors.*/\1/p' "$out" | head -n 1)
  # checkpatch's exit status also reflects warnings: judge by the error count
  if [ -z "$errors" ] || [ "$errors" != 0 ]; then
    grep -B1 -A3 '^ERROR' "$out" >&2 || tail -n 20 "$out" >&2
    result "checkpatch" FAIL "$name: $totals"
  else
    grep -A3 '^WARNING' "$out" >&2 || true
    result "checkpatch" ok "$name: $totals"
  fi
done

# --- build the test binaries (incremental) -------------------------------------------------------
qtests=()
for q in nvme-hotplug-test qos-test test-hmp; do only "$q" && qtests+=("tests/qtest/$q"); done
if [ "$PREBUILT" = 1 ]; then
  missing=()
  for f in "$TARGET_BIN" "${qtests[@]}"; do [ -x "$build/$f" ] || missing+=("$f"); done
  [ ${#missing[@]} -eq 0 ] || die "PREBUILT=1: $build lacks ${missing[*]}"
elif ! nice ninja -C "$build" "$TARGET_BIN" "${qtests[@]}" >"$logdir/ninja.log" 2>&1; then
  tail -n 40 "$logdir/ninja.log" >&2
  result "build" FAIL "ninja $TARGET_BIN ${qtests[*]} (log: $logdir/ninja.log)"
  printf '%s\n' "${summary[@]}"
  exit "$failed"
fi
result "build" ok "$TARGET_BIN and ${#qtests[@]} qtests"

# --- firmware where the build tree looks for it (Debian strips the blobs from its source) --------
bundle="$build/qemu-bundle/usr/local/share/qemu"
mkdir -p "$bundle"
for dir in /usr/share/seabios /usr/share/qemu /usr/lib/ipxe/qemu; do
  [ -d "$dir" ] || continue
  for f in "$dir"/*; do
    # -L too: meson leaves a link to the build's trace-events-all that dangles until ninja makes it
    [ -e "$bundle/$(basename "$f")" ] || [ -L "$bundle/$(basename "$f")" ] || ln -s "$f" "$bundle/"
  done
done
[ -e "$bundle/bios-256k.bin" ] || log "warning: no bios-256k.bin for $bundle (install seabios, qemu-system-data, ipxe-qemu)"

# --- qtests --------------------------------------------------------------------------------------
export QTEST_QEMU_BINARY="$build/$TARGET_BIN"
run_qtest() {  # run_qtest NAME BINARY [ARGS...]
  local name=$1 bin=$2; shift 2
  local out="$logdir/$name.log" rc npass nfail
  ( cd "$build" && timeout "$QTEST_TIMEOUT" "$bin" --tap -k "$@" ) >"$out" 2>&1
  rc=$?
  npass=$(grep -c '^ok ' "$out")
  nfail=$(grep -c '^not ok ' "$out")
  if [ "$rc" -eq 0 ] && [ "$nfail" -eq 0 ] && [ "$npass" -gt 0 ]; then
    result "$name" ok "$npass passed"
  else
    grep -v '^# starting QEMU' "$out" | tail -n 30 >&2
    result "$name" FAIL "$npass passed, $nfail failed, exit $rc (log: $out)"
  fi
}

only nvme-hotplug-test && run_qtest nvme-hotplug-test tests/qtest/nvme-hotplug-test

# QEMU's nvme tests are qos-test nodes: select them by path. `|| true` whatever failed (cd, qos-test,
# or grep finding nothing): an empty list is reported as a failure just below.
if only qos-test; then
  # shellcheck disable=SC2015
  nvme_paths=$(cd "$build" && ./tests/qtest/qos-test -l 2>/dev/null | grep '^/.*/nvme/' || true)
  if [ -z "$nvme_paths" ]; then
    result "nvme-test (qos-test)" FAIL "qos-test lists no nvme test"
  else
    args=()
    while read -r p; do args+=(-p "$p"); done <<< "$nvme_paths"
    run_qtest "nvme-test (qos-test)" tests/qtest/qos-test "${args[@]}"
  fi
fi

if only test-hmp; then
  run_qtest test-hmp tests/qtest/test-hmp
  if [ -n "$src" ] && [ -f "$logdir/test-hmp.log" ] && ! grep -q 'drive_insert' "$src/tests/qtest/test-hmp.c"; then
    result "test-hmp drive_insert" FAIL "test-hmp.c does not run drive_insert"
  fi
fi

# --- functional tests the series brings ---------------------------------------------------------
# A skipped test is not a pass: it counts as failed, with the framework's reason.
if only functional && [ -n "$src" ]; then
  arch=${TARGET_BIN#qemu-system-}
  # the tree's base commit is tagged `base` (scripts/build-qemu.sh); renamed tests count as added
  ftests=() touched=
  if touched=$(git -C "$src" diff --no-renames --name-only --diff-filter=AM base HEAD -- "tests/functional/*/test_*.py"); then
    # this target's tests and the generic ones run here
    mapfile -t ftests < <(grep -E "^tests/functional/($arch|generic)/" <<< "$touched")
  else
    result "functional" FAIL "git diff base..HEAD failed in $src (no 'base' tag? a tree of scripts/build-qemu.sh has one)"
  fi
  if [ ${#ftests[@]} -eq 0 ]; then
    # A series whose functional tests are all for other targets runs none here; say so in the summary.
    [ -z "$touched" ] || result "functional" ok "none for $arch: the series' tests are $(echo "$touched" | paste -sd ' ')"
    [ -n "$touched" ] || log "functional: the series adds no test under tests/functional/{$arch,generic}"
  elif ! ( cd "$build" && make check-venv ) >"$logdir/check-venv.log" 2>&1; then
    result "functional" FAIL "QEMU's make check-venv failed (log: $logdir/check-venv.log)"
  else
    assets="$CACHE_ROOT/functional-assets"
    ( cd "$top" && "${PY:-python3}" -m nvme_hotswap.programs.functional_assets --cache "$assets" \
        --mirror "$(debian_archive_uri)" "${ftests[@]/#/$src/}" ) >"$logdir/assets.log" 2>&1 \
      || log "functional: some assets are missing (see $logdir/assets.log): their tests skip"
    for t in "${ftests[@]}"; do
      name=$(basename "$t" .py); name=${name#test_}
      mt="func-$arch-$name" out="$logdir/$mt.log"
      tap="$build/meson-logs/testlog-thorough.txt"
      rm -f "$tap"   # its SKIP lines are read below: none may come from an earlier run
      start=$(date +%s)
      ( cd "$build" && QEMU_TEST_CACHE_DIR="$assets" QEMU_TEST_NO_DOWNLOAD=1 \
          pyvenv/bin/meson test --setup thorough --no-rebuild --print-errorlogs "$mt" ) >"$out" 2>&1
      rc=$? secs=$(( $(date +%s) - start ))
      line=$(grep -E "^ *[0-9]+/[0-9]+ .* $mt +[A-Z]+" "$out" | tail -n 1)
      status=$(sed -E "s/.* $mt +([A-Z]+).*/\1/" <<< "$line")
      subtests=$(grep -oE '[0-9]+ subtests passed' <<< "$line")
      skipped=$(grep -E '^ok [0-9]+ .*# SKIP' "$tap" 2>/dev/null | sed 's/.*# SKIP *//' | sort -u | head -n 3 | paste -sd ';')
      if [ "$rc" -eq 0 ] && [ "$status" = OK ] && [ -z "$skipped" ]; then
        result "$mt" ok "meson test --setup thorough $mt: ${subtests:-OK} in ${secs} s"
      else
        grep -E '^(not ok|ok .*SKIP)|Error|error:' "$out" "$tap" 2>/dev/null | tail -n 20 >&2
        result "$mt" FAIL "${status:-no result}${skipped:+, skipped: $skipped} in ${secs} s (log: $out)"
      fi
    done
  fi
fi

echo "check-series: ${#summary[@]} checks, $failed failed (logs: $logdir)"
printf '  %s\n' "${summary[@]}"
[ "$failed" -eq 0 ] && rm -rf "$logdir"
exit "$failed"
