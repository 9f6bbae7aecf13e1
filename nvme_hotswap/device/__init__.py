"""The device-level layer: drive QEMU's NVMe controller as a minimal host would, over qtest.

Why a layer beside the guest: a Linux guest is blind to much of the contract a namespace hotplug
must honour. It reads the Changed Namespace List only to clear the event and ignores its content
(it rescans every namespace), keeps Asynchronous Event Configuration at its own setting, always
creates its I/O queues at probe and never leaves a controller enabled halfway, and cannot attach
or detach a namespace on demand in a test. Here the test is the host: it chooses the controller's
state at plug time, reads every log page and Identify structure, and checks each field against
the NVMe specification, without booting a guest (QEMU runs with `-accel qtest`, cheap).

Modules: `qtest` (the wire protocol), `pci` (config space, BAR mapping), `nvme` (registers,
queues, admin and I/O commands, typed results), `machine` (QEMU with qtest and QMP, ended by PID),
`testcase` (the base class of tests/acceptance/test_nvme_contract.py).
"""
