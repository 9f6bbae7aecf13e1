"""Fill QEMU's functional-test asset cache offline, from this machine's Debian mirror.

QEMU's tests/functional declare each asset as `Asset(url, sha256)` and look for it in
$QEMU_TEST_CACHE_DIR/download/<sha256>. This machine reaches Debian's archive but no other
host, so an asset whose URL names a file of a Debian pool (deb.debian.org, snapshot.debian.org,
any mirror: `.../pool/<component>/...`) is fetched from the same pool path on the mirror in the
machine's own apt configuration; it goes in only if its sha256 is the one the test declares,
which proves it is the file the URL serves. Any other asset is reported as missing (the test
then skips on it, and scripts/check-series.sh counts the skip as a failure).

Usage: python -m nvme_hotswap.programs.functional_assets --cache DIR --mirror URI TEST.py...
Exit status: 0 when every asset is in the cache, 1 otherwise; one line per asset.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.client
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

_STRING = r"""(?:'[^'\n]*'|"[^"\n]*")"""
_ASSET = re.compile(r"Asset\(\s*\(?\s*((?:" + _STRING + r"\s*)+)\)?\s*,\s*['\"]([0-9a-f]{64})['\"]\s*\)")


@dataclasses.dataclass(frozen=True)
class Asset:
    url: str
    sha256: str

    @property
    def pool_path(self) -> str | None:
        """`pool/main/b/busybox/busybox-static_..._amd64.deb` if the URL is a Debian pool's file."""
        m = re.search(r"/(pool/[^?#]+)$", self.url)
        return m.group(1) if m else None


def declared_assets(source: str) -> list[Asset]:
    """The Asset(url, sha256) declarations of a test file (the URL may be split into adjacent
    string literals, as QEMU's tests write it)."""
    found = []
    for m in _ASSET.finditer(source):
        url = "".join(s[1:-1] for s in re.findall(_STRING, m.group(1)))
        found.append(Asset(url, m.group(2)))
    return found


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provide(asset: Asset, download: Path, mirror: str) -> str:
    """Make sure `asset` is in the cache; returns what happened, "" if it could not be done."""
    target = download / asset.sha256
    if target.exists():
        if sha256_of(target) == asset.sha256:
            return "cached"
        target.unlink()   # damaged: fetch it again
    pool = asset.pool_path
    if pool is None:
        return ""
    url = f"{mirror.rstrip('/')}/{pool}"
    download.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=download, delete=False) as tmp:
        part = Path(tmp.name)
        try:
            with urllib.request.urlopen(url, timeout=120) as r:
                while block := r.read(1 << 20):
                    tmp.write(block)
        except (OSError, http.client.HTTPException) as exc:   # refused, cut short, not found
            part.unlink()
            raise RuntimeError(f"{url}: {exc!r}") from exc
    got = sha256_of(part)
    if got != asset.sha256:
        part.unlink()
        raise RuntimeError(f"{url} has sha256 {got}, the test declares {asset.sha256}: the mirror no longer "
                           "serves that version; fetch the asset from its URL on a machine that reaches it")
    part.chmod(0o644)
    part.rename(target)
    return f"from {url}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True, help="QEMU_TEST_CACHE_DIR")
    ap.add_argument("--mirror", required=True, help="the Debian archive URI of this machine's apt configuration")
    ap.add_argument("tests", type=Path, nargs="+")
    args = ap.parse_args(argv)
    missing = 0
    for test in args.tests:
        for asset in declared_assets(test.read_text()):
            try:
                how = provide(asset, args.cache / "download", args.mirror)
            except RuntimeError as exc:
                how, why = "", str(exc)
            else:
                why = "not a Debian pool file, and only Debian's archive is reachable here"
            if how:
                print(f"{test.name}: {asset.url.rsplit('/', 1)[-1]}: {how}")
            else:
                missing += 1
                print(f"{test.name}: {asset.url}: missing ({why})", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
