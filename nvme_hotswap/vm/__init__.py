"""Driving QEMU: one process and its monitor, the accelerator, architectures, devices, capabilities."""
