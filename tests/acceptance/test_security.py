"""Access to the VM and the guest stays local and per run; nothing secret lands in the results."""
import os
import stat
from pathlib import Path

import paramiko

from nvme_hotswap.guest import sshkey
from nvme_hotswap.testcase import HotswapTest

TCP_LISTEN = "0A"


def listening_tcp_of(pid: int) -> list[tuple[str, int]]:
    """(local address in /proc/net/tcp hex form, port) of every TCP socket `pid` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == TCP_LISTEN and inode in inodes:
                addr, port = local.split(":")
                out.append((addr, int(port, 16)))
    return out


class Security(HotswapTest):
    """QEMU and the guest are reachable from this host only, with this run's key only.

    :avocado: enable
    :avocado: tags=arch:x86_64,arch:aarch64,harness,security
    """

    controllers = 1

    def test_forwarded_ssh_listens_on_loopback_only(self) -> None:
        listening = listening_tcp_of(self.vm.pid)
        self.assertTrue(listening, "QEMU listens on no TCP port; where did the SSH forward go?")
        for addr, port in listening:
            self.assertEqual(addr, "0100007F", f"QEMU listens on {addr}:{port}, not 127.0.0.1")

    def test_monitor_socket_in_a_private_folder(self) -> None:
        st = os.stat(self.vm.socket_dir)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o700, f"{self.vm.socket_dir} is not 0700")
        self.assertEqual(st.st_uid, os.getuid())

    def test_no_password_login(self) -> None:
        """dropbear runs with -s: a password is refused before it is checked."""
        self.allow_growth(fds=1, why="slirp keeps the second SSH connection's socket a while after it closes")
        transport = paramiko.Transport(("127.0.0.1", self.vm.usernet_ssh_port()))
        try:
            transport.start_client(timeout=10)
            with self.assertRaises(paramiko.BadAuthenticationType) as cm:
                transport.auth_password("root", "root")
            self.assertNotIn("password", cm.exception.allowed_types)
        finally:
            transport.close()

    def test_ssh_key_is_this_runs(self) -> None:
        """The guest accepts exactly this run's key; the guest build holds no private key."""
        self.assertEqual(self.guest.check("cat /root/.ssh/authorized_keys").strip(), sshkey.public_key_line())
        key_dir = sshkey.private_key_file().parent
        self.assertEqual(stat.S_IMODE(os.stat(key_dir).st_mode), 0o700)
        self.assertNotIn(self.cfg.results_root.resolve(), key_dir.resolve().parents)
        if self.cfg.flavour == "fast":
            keys = [f.name for f in self.cfg.guest_dir.iterdir() if f.name.startswith("id_")]
            self.assertEqual(keys, [], f"the guest build {self.cfg.guest_dir} carries client keys")

    def test_no_secret_in_the_results(self) -> None:
        """Every file of this run so far (this test's included) is free of this run's private key."""
        secret = sshkey.private_key_file().read_text()
        body = "".join(secret.splitlines()[1:-1]).encode()
        run = self.artifacts.parent.parent
        leaks = [str(f) for f in run.rglob("*") if f.is_file() and not f.name.endswith(".img")
                 and (body[:40] in f.read_bytes() or body[-40:] in f.read_bytes())]
        self.assertEqual(leaks, [], "files in the results hold this run's private SSH key")
