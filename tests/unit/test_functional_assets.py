"""Offline asset cache for QEMU's functional tests (nvme_hotswap/programs/functional_assets.py)."""
import hashlib
import tempfile
import unittest
from pathlib import Path

from nvme_hotswap.programs import functional_assets as fa

# As QEMU's tests write them: the URL split over adjacent literals, a comment between assets.
SOURCE = """
class T(LinuxKernelTest):
    ASSET_KERNEL = Asset(
        ('https://snapshot.debian.org/archive/debian/20261206T000000Z/pool/'
         'main/l/linux-signed-amd64/'
         'linux-image-6.1.0-50-cloud-amd64_6.1.176-1_amd64.deb'),
        'efe19f605b6f54a8352e68d85a629abb2d30b72a085faef603a9152590baa791')
    # elsewhere
    ASSET_INITRD = Asset(
        'https://archives.fedoraproject.org/pub/archive/fedora/initrd.img',
        "277cd6c7adf77c7e63d73bbb2cded8ef9e2d3a2f100000e92ff1f8396513cd8b")
"""


class Declared(unittest.TestCase):
    def test_parse(self) -> None:
        kernel, initrd = fa.declared_assets(SOURCE)
        self.assertEqual(kernel.url, "https://snapshot.debian.org/archive/debian/20261206T000000Z/pool/main/l/"
                                     "linux-signed-amd64/linux-image-6.1.0-50-cloud-amd64_6.1.176-1_amd64.deb")
        self.assertEqual(kernel.pool_path, "pool/main/l/linux-signed-amd64/"
                                           "linux-image-6.1.0-50-cloud-amd64_6.1.176-1_amd64.deb")
        self.assertTrue(initrd.sha256.startswith("277cd6c7"))
        self.assertIsNone(initrd.pool_path)


class Provide(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp())
        pool = self.tmp / "mirror" / "pool" / "main" / "b" / "busybox"
        pool.mkdir(parents=True)
        self.data = b"a .deb's bytes"
        (pool / "busybox-static_1_amd64.deb").write_bytes(self.data)
        self.mirror = (self.tmp / "mirror").as_uri()
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.url = "https://snapshot.debian.org/archive/debian/X/pool/main/b/busybox/busybox-static_1_amd64.deb"
        self.download = self.tmp / "cache" / "download"

    def test_fetched_then_cached(self) -> None:
        asset = fa.Asset(self.url, self.sha)
        self.assertTrue(fa.provide(asset, self.download, self.mirror).startswith("from file:"))
        self.assertEqual((self.download / self.sha).read_bytes(), self.data)
        self.assertEqual(fa.provide(asset, self.download, self.mirror), "cached")

    def test_damaged_cache_fetched_again(self) -> None:
        self.download.mkdir(parents=True)
        (self.download / self.sha).write_bytes(b"damaged")
        self.assertTrue(fa.provide(fa.Asset(self.url, self.sha), self.download, self.mirror).startswith("from "))
        self.assertEqual((self.download / self.sha).read_bytes(), self.data)

    def test_other_file_on_the_mirror_is_refused(self) -> None:
        with self.assertRaisesRegex(RuntimeError, "no longer serves that version"):
            fa.provide(fa.Asset(self.url, "0" * 64), self.download, self.mirror)
        self.assertEqual(list(self.download.iterdir()), [])

    def test_not_a_pool_file(self) -> None:
        self.assertEqual(fa.provide(fa.Asset("https://example.org/x.img", self.sha), self.download, self.mirror), "")
