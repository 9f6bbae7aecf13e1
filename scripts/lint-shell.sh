#!/usr/bin/env bash
# Runs shellcheck on every shell script in the tree (`make lint`): each *.sh file and each file
# whose first line is a sh or bash shebang, from git's file list (tracked files and new ones that
# are not ignored), so a new script is checked without being listed anywhere.
# Settings (sourced files, lib.sh's path) are in .shellcheckrc. Exit status 0: no findings.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v shellcheck >/dev/null || { echo "shellcheck is not installed: run scripts/install-host-deps.sh" >&2; exit 1; }

# images/build-guest.sh hashes the files it copies into the guest into the guest's cache key, so a
# directive comment there would rebuild every cached guest: their deliberate findings are excluded
# here instead, file by file (move them into the files as directives when they change anyway).
#   images/init.sh (busybox sh): splits the kernel command line (SC2013) and its module list
#                                (SC2086) into words on purpose
#   images/udhcpc.script: reads the variables udhcpc sets for it (interface, ip, router, dns: SC2154)
declare -A EXCLUDE=([images/init.sh]="SC2013,SC2086" [images/udhcpc.script]="SC2154")

scripts=()
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue   # tracked but deleted in the work tree
  case $f in
    *.sh) scripts+=("$f"); continue ;;
  esac
  first=
  IFS= read -r first < "$f" || true
  if [[ $first =~ ^\#!.*[/\ ](ba|da)?sh([[:space:]]|$) ]]; then scripts+=("$f"); fi
done < <(git ls-files -z --cached --others --exclude-standard | sort -z)
[ ${#scripts[@]} -gt 0 ] || { echo "no shell scripts found (not a git checkout?)" >&2; exit 1; }

plain=()
rc=0
for f in "${scripts[@]}"; do
  if [ -n "${EXCLUDE[$f]:-}" ]; then
    shellcheck --exclude="${EXCLUDE[$f]}" "$f" || rc=1
  else
    plain+=("$f")
  fi
done
[ ${#plain[@]} -eq 0 ] || shellcheck "${plain[@]}" || rc=1
echo "shellcheck: ${#scripts[@]} scripts: ${scripts[*]}"
exit $rc
