"""The cloud guest's seed content and QEMU arguments (no QEMU, no image build)."""
from pathlib import Path

import pytest

from nvme_hotswap import config
from nvme_hotswap.guest import cloud


def test_user_data_gives_root_and_default_user_the_key() -> None:
    text = cloud.user_data("ssh-ed25519 AAAA test")
    assert text.startswith("#cloud-config\n")
    assert "disable_root: false" in text and "ssh_deletekeys: false" in text
    assert "  - ssh-ed25519 AAAA test\n" in text


def test_flavour(tmp_path: Path) -> None:
    assert config.RunConfig.from_env({}).flavour == "fast"
    image = tmp_path / "x.qcow2"
    image.write_bytes(b"")
    assert config.RunConfig.from_env({"IMAGE": str(image)}).flavour == "cloud"
    with pytest.raises(config.ConfigError, match="GUEST='vm'"):
        config.RunConfig.from_env({"GUEST": "vm"})
    with pytest.raises(config.ConfigError, match="IMAGE=/nonexistent.qcow2 is not a file"):
        config.RunConfig.from_env({"IMAGE": "/nonexistent.qcow2"})


def test_own_image_boots_by_its_bootloader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    image = tmp_path / "debian.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(60))
    cfg = config.RunConfig.from_env({"IMAGE": str(image)})
    monkeypatch.setattr(cloud, "seed_image", lambda: tmp_path / "seed.img")
    args = cloud.qemu_boot_args(cfg)
    assert "-kernel" not in args
    assert f"file={image},format=qcow2,if=none,id=cloudroot,snapshot=on" in args
    assert any("bootindex=0" in a for a in args)
    with pytest.raises(config.ConfigError, match="kernel arguments"):
        cloud.qemu_boot_args(cfg, "nvme_core.multipath=N")
