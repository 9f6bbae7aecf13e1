# The devices our qemu-system-x86_64 is built with (configure --without-default-devices
# --with-devices-x86_64=nvme-hotswap; scripts/build-qemu.sh copies this file into QEMU's
# configs/devices/x86_64-softmmu/). Only what the suite, the qtests and test-hmp use; each board
# brings what it selects in Kconfig (q35: ICH9 LPC, AHCI, the ISA serial, fw_cfg, ...).
# QEMU_DEVICES=default builds every default device instead (docs/builds.md).

# Boards: q35 for the guests and the series' qtest; pc (i440FX) for qos-test's nvme paths,
# which libqos only offers under x86_64/pc.
CONFIG_Q35=y
CONFIG_I440FX=y

# The topology: root ports with AER and native hotplug, NVMe controllers, namespaces and
# subsystems (all in NVME_PCI).
CONFIG_PCIE_PORT=y
CONFIG_NVME_PCI=y

# What QEMU 10.2's Kconfig forgets to select without default devices (the link fails without them):
# hw/nvme/ctrl.c calls the SPDM socket backend, q35's ACPI tables call hw/cxl, which needs PXB and
# its type-3 memory device.
CONFIG_SPDM_SOCKET=y
CONFIG_CXL=y
CONFIG_PXB=y
CONFIG_CXL_MEM_DEVICE=y

# The guest's network (virtio-net-pci, slirp) and the cloud guest's disks and the tests' own
# virtio-blk disk.
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_NET=y
CONFIG_VIRTIO_BLK=y
