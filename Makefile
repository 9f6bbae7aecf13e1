# nvme-hotswap-acceptance: build patched QEMU and a Debian guest, run the suite.
# The two commands a newcomer needs: `make check-acceptance` and `make check` (README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Tests run side by side on JOBS pytest-xdist workers (one TCG guest each): the number of CPUs, at
# most 4 (each guest takes a core and 1 GiB). JOBS=1 runs them one after the other.
JOBS ?= $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 )))
XDIST = $(if $(filter-out 1,$(JOBS)),-n $(JOBS))

# QEMU under test: $(QEMU) if given, else our patched build (built on first use, then cached).
RESOLVE_QEMU = $${QEMU:-$$(bash scripts/build-qemu.sh | tail -n 1)}
RESOLVE_GUEST = $${GUEST_DIR:-$$(bash images/build-guest.sh | tail -n 1)}
# Guest kernel: `make check-acceptance GUEST_KERNEL=trixie` runs on Debian 13's 6.12 (default bookworm,
# 6.1). images/build-guest.sh reads it from the environment; exported so that holds however it is set.
export GUEST_KERNEL
# Guest flavour: `make check-acceptance GUEST=cloud` (or `make check-cloud`) boots the cloud-style guest
# (images/build-cloud-image.sh; IMAGE=/path/to/cloud.qcow2 for your own, CLOUD_USER=debian|ubuntu).
export GUEST IMAGE CLOUD_USER
# Guest architecture: `make check-acceptance GUEST_ARCH=aarch64` (or `make check-aarch64`) builds
# qemu-system-aarch64 and an arm64 guest and boots it on the virt machine (TCG on this host).
export GUEST_ARCH

.PHONY: help venv host-deps qemu qemu-unpatched guest check check-unit check-series check-acceptance check-mutants evidence bench cloud-image check-cloud check-aarch64 nightly soak fuzz clean

help:
	@echo "make check-acceptance  build what is missing, run tests/acceptance, write the evidence report"
	@echo "make check             the project's own tests: unit tests, the series' QEMU tests, acceptance, mutants"
	@echo "make check-mutants     mutation check: every broken variant in patches/mutants/ must fail a scenario"
	@echo "make qemu              build (or find) patched QEMU; prints the binary path last"
	@echo "make qemu-unpatched    the same QEMU without our series (for comparisons)"
	@echo "make guest             build (or find) the guest; prints its directory last"
	@echo "make bench             speed figures against their targets (README.md, \"Benchmarks\")"
	@echo "make soak              SOAK_CYCLES (100) hot-swap cycles of each sequence on one guest: names, data, RSS, fds"
	@echo "make fuzz              seeded random monitor sequences under guest I/O: QEMU must answer all, never abort"
	@echo "make check-cloud       check-acceptance on the cloud-style guest (GUEST=cloud; IMAGE=/path/to/cloud.qcow2)"
	@echo "make cloud-image       build (or find) the cloud-style guest image; prints its directory last"
	@echo "make check-aarch64     check-acceptance on an arm64 guest on QEMU's virt machine (GUEST_ARCH=aarch64)"
	@echo "make nightly           build QEMU, run the guest matrix, compare with the last night (README.md, \"Nightly\")"
	@echo "variables: QEMU=/path/to/qemu-system-x86_64  QEMU_SRC=/path/to/qemu.git  ACCEL=auto|kvm|tcg  PYTEST_ARGS=..."
	@echo "           JOBS=N (tests side by side, default: CPUs, at most 4; JOBS=1 one at a time)"
	@echo "           GUEST_KERNEL=bookworm|trixie (guest kernel: Debian 12 6.1, default, or Debian 13 6.12)"
	@echo "           GUEST_ARCH=x86_64|aarch64 (guest architecture: q35, default, or arm64 on virt)"

host-deps:
	@bash scripts/install-host-deps.sh

$(VENV)/.installed: setup.cfg pyproject.toml
	@bash scripts/install-host-deps.sh
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e .
	@touch $@

venv: $(VENV)/.installed

qemu:
	@bash scripts/build-qemu.sh

qemu-unpatched:
	@PATCHES=none bash scripts/build-qemu.sh

guest:
	@bash images/build-guest.sh

cloud-image:
	@bash images/build-cloud-image.sh

check-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

check-series: venv
	@qemu=$$(bash scripts/build-qemu.sh | tail -n 1) && bash scripts/check-series.sh "$$(dirname "$$qemu")"

check-acceptance: venv
	@set -o pipefail; qemu=$(RESOLVE_QEMU) && guest=$(RESOLVE_GUEST) && \
	echo "QEMU under test: $$qemu" && echo "guest: $$guest" && \
	run=$$($(PY) -m nvme_hotswap.report.results) && export NVME_HOTSWAP_RUN_DIR="$$run" && \
	rc=0; QEMU="$$qemu" GUEST_DIR="$$guest" $(PY) -m pytest $(XDIST) tests/acceptance $(PYTEST_ARGS) || rc=$$?; \
	$(PY) -m nvme_hotswap.report.evidence "$$run" || { [ $$rc -ne 0 ] || rc=1; }; exit $$rc

evidence: venv
	$(PY) -m nvme_hotswap.report.evidence

# Builds each patches/mutants/<name>.diff on top of the series (cached) and runs the series
# scenarios against it; fails unless every mutant is caught (README.md, "Mutation check").
check-mutants: venv
	$(PY) -m nvme_hotswap.programs.mutation

check: check-unit check-series check-acceptance check-mutants

# The suite on the cloud-style guest (systemd, udev, cloud-init): test_cloud_byid runs instead of cancelling.
check-cloud:
	@$(MAKE) --no-print-directory check-acceptance GUEST=cloud

# The suite on an arm64 guest (Debian 12's arm64 kernel) on virt, with qemu-system-aarch64 built the same way.
check-aarch64:
	@$(MAKE) --no-print-directory check-acceptance GUEST_ARCH=aarch64

# The guest matrix (NIGHTLY_CELLS), one history line per run, exit 1 on a regression (README.md, "Nightly").
nightly: venv
	$(PY) -m nvme_hotswap.programs.nightly

# Reliability (README.md, "Soak and fuzz"): long runs on the patched QEMU, not part of `make check`.
soak: venv
	@qemu=$(RESOLVE_QEMU) && guest=$(RESOLVE_GUEST) && QEMU="$$qemu" GUEST_DIR="$$guest" $(PY) -m nvme_hotswap.programs.soak

fuzz: venv
	@qemu=$(RESOLVE_QEMU) && guest=$(RESOLVE_GUEST) && QEMU="$$qemu" GUEST_DIR="$$guest" $(PY) -m nvme_hotswap.programs.fuzz

bench: venv
	@qemu=$(RESOLVE_QEMU) && guest=$(RESOLVE_GUEST) && QEMU="$$qemu" GUEST_DIR="$$guest" $(PY) -m nvme_hotswap.programs.bench

clean:
	rm -rf $(VENV) results *.egg-info
