# The devices our qemu-system-aarch64 is built with (configure --without-default-devices
# --with-devices-aarch64=nvme-hotswap; scripts/build-qemu.sh copies this file into QEMU's
# configs/devices/aarch64-softmmu/). The virt board selects its GICv3, PL011, fw_cfg and
# generic PCIe host bridge; the rest is the topology and the guest's network and disks.
# QEMU_DEVICES=default builds every default device instead (docs/builds.md).
CONFIG_ARM_VIRT=y
CONFIG_PCIE_PORT=y
CONFIG_NVME_PCI=y
# What QEMU 10.2's Kconfig forgets to select without default devices (the link fails without them):
# hw/nvme/ctrl.c calls the SPDM socket backend, virt's ACPI tables (ACPI_CXL) call hw/cxl, which needs PXB and
# its type-3 memory device.
CONFIG_SPDM_SOCKET=y
CONFIG_CXL=y
CONFIG_PXB=y
CONFIG_CXL_MEM_DEVICE=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_NET=y
CONFIG_VIRTIO_BLK=y
