#!/usr/bin/env bash
# Build (or find) QEMU and the guest side by side, and print them as two shell assignments:
#   qemu=<binary>
#   guest=<guest dir>
# Why: on a fresh machine the guest's downloads and assembly (network and disk) fit inside QEMU's
# compile (CPU), so the first test result comes that much sooner. QEMU or GUEST_DIR given in the
# environment are taken as they are. The first build to fail ends the other and this script with
# status 1; the build has said why on stderr. Each build runs in a process group of its own (setsid),
# ended as a whole by its PID: a failure, Ctrl-C or SIGTERM leaves no compiler or download running.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")

# Both builds need the host packages: install them once, before either starts.
if [ -z "${QEMU:-}" ] || [ -z "${GUEST_DIR:-}" ]; then bash "$here/install-host-deps.sh" >&2; fi

out=$(mktemp -d)
declare -A pids=()   # pid -> what it builds
end_all() { for p in "${!pids[@]}"; do kill -- "-$p" 2>/dev/null || true; done; }
trap 'end_all; rm -rf "$out"' EXIT
trap 'exit 130' INT TERM
if [ -z "${QEMU:-}" ]; then
  setsid bash "$here/build-qemu.sh" > "$out/qemu" &
  pids[$!]=qemu
fi
if [ -z "${GUEST_DIR:-}" ]; then
  setsid bash "$top/images/build-guest.sh" > "$out/guest" &
  pids[$!]=guest
fi
while [ ${#pids[@]} -gt 0 ]; do
  rc=0
  wait -n -p finished "${!pids[@]}" || rc=$?
  unset "pids[$finished]"
  [ "$rc" -eq 0 ] || exit 1
done

qemu=${QEMU:-$(tail -n 1 "$out/qemu")}
guest=${GUEST_DIR:-$(tail -n 1 "$out/guest")}
printf 'qemu=%q\nguest=%q\n' "$qemu" "$guest"
