# Shared shell helpers for the build scripts. Source it; do not run it.
# Why: the QEMU build and the guest build both need the cache root and a private apt setup
# whose archive URI comes from this machine's own apt configuration (never a hard-coded mirror).
# shellcheck shell=bash

CACHE_ROOT=${NVME_HOTSWAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nvme-hotswap}

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# The Debian archive URI this machine's apt already uses (from `apt-cache policy`: the first
# source whose release is labelled Debian, not the security archive).
debian_archive_uri() {
  local uri
  uri=$(apt-cache policy 2>/dev/null | awk '
    /^ *[0-9]+ [a-z]+:\/\// { uri = $2; next }
    /release / && /o=Debian,/ && /l=Debian,/ && !/security/ { if (uri != "") { print uri; exit } }')
  [ -n "$uri" ] || die "no Debian archive found in this machine's apt configuration (apt-cache policy); run 'apt-get update' or add a Debian source"
  printf '%s\n' "${uri%/}"
}

# private_apt [--arch ARCH] NAME LINE... : prepare an apt state dir under the cache whose sources
# are LINE... and print the apt options that select it (--arch: a foreign architecture's packages,
# e.g. arm64 for the aarch64 guest). The host's own apt state is not touched.
private_apt() {
  local arch=
  if [ "$1" = --arch ]; then arch=$2; shift 2; fi
  local name=$1; shift
  local root="$CACHE_ROOT/apt/$name"
  mkdir -p "$root/lists/partial" "$root/cache/archives/partial"
  printf '%s\n' "$@" > "$root/sources.list.new"
  # "lists/ holds nothing but partial/": the names are apt's own (SC2010). Not `! ls | grep -qv`
  # (SC2143): grep -q may quit early and, under pipefail, ls's SIGPIPE would invert the test.
  # shellcheck disable=SC2010,SC2143
  if ! cmp -s "$root/sources.list.new" "$root/sources.list" 2>/dev/null || [ -z "$(ls "$root/lists" | grep -v partial)" ]; then
    mv "$root/sources.list.new" "$root/sources.list"
    # shellcheck disable=SC2046  # the options are words on purpose (-o Key=value ...)
    apt-get -q $(private_apt_opts "$root" "$arch") update >"$root/update.log" 2>&1 \
      || die "apt-get update for $name failed; see $root/update.log"
  fi
  private_apt_opts "$root" "$arch"
}

private_apt_opts() {  # private_apt_opts ROOT [ARCH]
  local root=$1 arch=${2:-}
  printf -- '-o Dir::Etc::SourceList=%s -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=%s -o Dir::Cache=%s -o Debug::NoDropPrivs=1 -o APT::Sandbox::User=root' \
    "$root/sources.list" "$root/lists" "$root/cache"
  # APT_EXTRA_OPTS: options one caller needs (e.g. an archive whose Release is past its Valid-Until)
  [ -z "${APT_EXTRA_OPTS:-}" ] || printf ' %s' "$APT_EXTRA_OPTS"
  [ -z "$arch" ] || printf -- ' -o APT::Architecture=%s -o APT::Architectures=%s' "$arch" "$arch"
  echo
}

sha256_of_stdin() { sha256sum | cut -c1-16; }

# series_patches DIR: the patch files named in DIR/series, in order, one path per line
# (comments and blank lines skipped); dies if the series file or a patch it names is missing.
series_patches() {
  local dir=$1 p
  [ -f "$dir/series" ] || die "no series file in $dir"
  while read -r p; do
    p=${p%%#*}
    # shellcheck disable=SC2086,SC2116  # unquoted echo on purpose: trims the blanks around the name
    p=$(echo $p)
    [ -n "$p" ] || continue
    [ -f "$dir/$p" ] || die "$dir/series names $p, which does not exist"
    printf '%s\n' "$dir/$p"
  done < "$dir/series"
}

# --- cache entries -------------------------------------------------------------------------------
# An entry is a folder under CACHE_ROOT that holds DONE only once it is complete. DONE's folder also
# holds SHA256SUMS, the sha256 of every product (sha256sum's format, paths relative to the folder),
# so a truncated or edited file is found and the entry rebuilt instead of trusted.

# cache_seal DIR [FILE...]: record the sha256 of FILE... (default: every file in DIR) in DIR/SHA256SUMS.
# Call it just before DONE is written.
cache_seal() {
  local dir=$1; shift
  if [ $# -eq 0 ]; then
    mapfile -t files < <(cd "$dir" && find . -type f ! -name DONE ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort)
    set -- "${files[@]}"
  fi
  ( cd "$dir" && sha256sum -- "$@" > SHA256SUMS.new && mv SHA256SUMS.new SHA256SUMS ) || die "could not record the sha256 of $dir"
}

# cache_damage DIR: print what is wrong with the products of DIR ("build/x has changed; y is missing",
# or "it records no sha256 of its products") and fail; print nothing and succeed if they match.
# No side effects: the preflight (nvme_hotswap/preflight.py) reads guests through it too.
cache_damage() {
  local dir=$1 bad
  if [ ! -f "$dir/SHA256SUMS" ]; then
    echo "it records no sha256 of its products"
    return 1
  fi
  bad=$(cd "$dir" && sha256sum --quiet --strict -c SHA256SUMS 2>&1) && return 0
  printf '%s\n' "$bad" | sed -n 's/: FAILED open or read$/ is missing/p; s/: FAILED$/ has changed/p' | paste -sd';' - \
    | sed 's/;/; /g'
  return 1
}

# cache_intact DIR: true if DIR is a complete entry whose products match SHA256SUMS. A damaged
# entry is named on stderr and loses its DONE, so the caller rebuilds it.
cache_intact() {
  local dir=$1 bad
  [ -f "$dir/DONE" ] || return 1
  bad=$(cache_damage "$dir") && return 0
  log "cache entry $dir is damaged: $bad; rebuilding"
  rm -f "$dir/DONE"
  return 1
}

# cache_on_interrupt DIR: if INT or TERM stops the build, say "interrupted" (not "failed"), remove
# the partial entry DIR (nothing of it looks built) and exit 130.
cache_on_interrupt() {
  # shellcheck disable=SC2064  # DIR is expanded now, on purpose
  trap "log 'interrupted: the build of $1 was stopped by a signal; its partial entry is removed and the next run starts it again'; rm -rf '$1'; exit 130" INT TERM
}
