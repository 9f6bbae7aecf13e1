"""The SSH client key of this run: made per process, kept in a private 0700 folder outside the
results, removed at exit. Both guests take its public half at boot (the fast guest on its kernel
command line, the cloud guest from its NoCloud seed), so no key outlives the run and no guest
build carries one."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

COMMENT = "nvme-hotswap-run"
KERNEL_ARG = "nvmehs.authorized_key"   # read by images/init.sh


@functools.cache
def _folder() -> Path:
    d = Path(tempfile.mkdtemp(prefix="nvme-hotswap-key-"))   # mkdtemp: mode 0700
    atexit.register(shutil.rmtree, d, True)
    return d


@functools.cache
def private_key_file() -> Path:
    """A fresh ed25519 key pair (OpenSSH format, as paramiko loads it); the public half beside it (.pub)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    path = _folder() / "id_ed25519"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.with_suffix(".pub").write_text(f"{pub.decode()} {COMMENT}\n")
    return path


def public_key_line() -> str:
    """`ssh-ed25519 AAAA... nvme-hotswap-run`, as it goes into authorized_keys."""
    return private_key_file().with_suffix(".pub").read_text().strip()


def kernel_arg() -> str:
    """The fast guest's kernel argument carrying the public key (base64 only: no spaces allowed)."""
    return f"{KERNEL_ARG}={public_key_line().split()[1]}"
