"""The hot-swap layer: booting the guest to SSH (boot) and the hot-swap steps with their waits (rig)."""
