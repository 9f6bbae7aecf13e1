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

# QEMU under test: $(QEMU) if given, else our patched build (built on first use, then cached); the guest:
# $(GUEST_DIR) if given, else ours. Both are built side by side (scripts/build-products.sh), which sets
# the shell variables qemu and guest.
RESOLVE_PRODUCTS = products=$$(bash scripts/build-products.sh) && eval "$$products"
# Guest kernel: `make check-acceptance GUEST_KERNEL=trixie` runs on Debian 13's 6.12 (default bookworm-cloud,
# Debian 12's 6.1 cloud flavour). images/build-guest.sh reads it from the environment; exported so that
# holds however it is set.
export GUEST_KERNEL
# Guest flavour: `make check-acceptance GUEST=cloud` (or `make check-cloud`) boots the cloud-style guest
# (images/build-cloud-image.sh; IMAGE=/path/to/cloud.qcow2 for your own, CLOUD_USER=debian|ubuntu).
export GUEST IMAGE CLOUD_USER
# Guest architecture: `make check-acceptance GUEST_ARCH=aarch64` (or `make check-aarch64`) builds
# qemu-system-aarch64 and an arm64 guest and boots it on the virt machine (TCG on this host).
export GUEST_ARCH
# QEMU_FLAVOUR=asan: our QEMU with AddressSanitizer (scripts/build-qemu.sh; its own cache key).
export QEMU_FLAVOUR QEMU_DEVICES

# `make help` prints every target's `## ` comment (target: prerequisites ## what it does), then the
# lines below that start with `## `.
## variables: QEMU=/path/to/qemu-system-x86_64  QEMU_SRC=/path/to/qemu.git  ACCEL=auto|kvm|tcg  PYTEST_ARGS=...
##            JOBS=N (tests side by side, default: CPUs, at most 4; JOBS=1 one at a time)
##            GUEST_KERNEL=bookworm-cloud|bookworm|trixie|sid (guest kernel: bookworm-cloud, the default, is
##              Debian 12's 6.1 cloud flavour; bookworm Debian 12's generic 6.1; trixie Debian 13's 6.12;
##              sid unstable's cloud kernel, 7.2)
##            GUEST_ARCH=x86_64|aarch64 (guest architecture: q35, default, or arm64 on virt)
##            QEMU_FLAVOUR=asan (our QEMU with AddressSanitizer: a leak or use-after-free report fails its test)


.PHONY: help review mutation-score venv host-deps qemu qemu-unpatched guest lint check check-unit check-series check-acceptance check-mutants evidence bench cloud-image check-cloud check-aarch64 check-upstream nightly nightly-build nightly-cell nightly-compare ci-local soak fuzz clean

help: ## this list: every target, then the variables
	@awk 'BEGIN { FS = ":.*## " } \
	     /^[A-Za-z0-9_.-]+:.*## / { printf "make %-17s %s\n", $$1, $$2; next } \
	     /^##( |$$)/ { sub(/^## ?/, ""); vars[++n] = $$0 } \
	     END { for (i = 1; i <= n; i++) print vars[i] }' $(MAKEFILE_LIST)

host-deps: ## install the Debian packages the builds and the lint need (scripts/install-host-deps.sh, as root)
	@bash scripts/install-host-deps.sh

# The venv, rebuilt when the project's metadata changes: the project, editable, with its lint tools.
$(VENV)/.installed: setup.cfg pyproject.toml
	@bash scripts/install-host-deps.sh
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[lint,mutation,review,bench,ci]'
	@touch $@

venv: $(VENV)/.installed ## the Python venv (VENV, default .venv): this project, editable, and its pinned lint tools

qemu: ## build (or find) patched QEMU; prints the binary path last
	@bash scripts/build-qemu.sh

qemu-unpatched: ## the same QEMU without our series (for comparisons)
	@PATCHES=none bash scripts/build-qemu.sh

guest: ## build (or find) the guest (GUEST=cloud: the cloud-style image); prints its directory last
	@if [ "$${GUEST:-fast}" = cloud ]; then bash images/build-cloud-image.sh; else bash images/build-guest.sh; fi

cloud-image: ## build (or find) the cloud-style guest image; prints its directory last
	@bash images/build-cloud-image.sh

# Every linter runs even when one fails; the status is 1 if any found something.
lint: venv ## ruff, mypy and shellcheck (every shell script in the tree); fails on any finding
	@rc=0; \
	echo "ruff check ."; $(VENV)/bin/ruff check . || rc=1; \
	echo "mypy"; $(VENV)/bin/mypy || rc=1; \
	bash scripts/lint-shell.sh || rc=1; \
	exit $$rc

check-unit: venv ## the unit tests (tests/unit): no QEMU, no guest
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

check-series: venv ## checkpatch, QEMU's nvme and HMP qtests and the series' functional tests on the patched build (scripts/check-series.sh)
	@qemu=$$(bash scripts/build-qemu.sh | tail -n 1) && bash scripts/check-series.sh "$$(dirname "$$qemu")"

# The venv is made while QEMU and the guest build (a fresh machine's first result comes that much
# sooner); the host packages come first, as both need them.
check-acceptance: ## build what is missing, run tests/acceptance, write the evidence report
	@set -o pipefail; bash scripts/install-host-deps.sh && \
	{ $(MAKE) --no-print-directory -s venv >&2 & venv_pid=$$!; } && \
	{ $(RESOLVE_PRODUCTS) || { kill $$venv_pid 2>/dev/null; exit 1; }; } && \
	{ wait $$venv_pid || { echo "make venv failed (its message is above)" >&2; exit 1; }; } && \
	echo "QEMU under test: $$qemu" && echo "guest: $$guest" && \
	QEMU="$$qemu" GUEST_DIR="$$guest" $(PY) -m nvme_hotswap.preflight && \
	run=$$($(PY) -m nvme_hotswap.report.results) && export NVME_HOTSWAP_RUN_DIR="$$run" && { \
	rc=0; QEMU="$$qemu" GUEST_DIR="$$guest" $(PY) -m pytest $(XDIST) tests/acceptance $(PYTEST_ARGS) || rc=$$?; \
	[ ! -f "$$run/junit.xml" ] || $(PY) -m nvme_hotswap.report.evidence "$$run" || { [ $$rc -ne 0 ] || rc=1; }; \
	exit $$rc; }

evidence: venv ## the evidence report of the latest run again (results/latest)
	$(PY) -m nvme_hotswap.report.evidence

# Builds each patches/mutants/<name>.diff on top of the series (cached) and runs the series
# scenarios against it; fails unless every mutant is caught (docs/mutation.md).
check-mutants: venv ## mutation check: every broken variant in patches/mutants/ must fail a scenario
	$(PY) -m nvme_hotswap.mutation.check

mutation-score: venv ## generated mutants of every C line the series adds (MUTATION_SAMPLE=N per patch): killed / judged
	@$(RESOLVE_PRODUCTS) && QEMU="$$qemu" GUEST_DIR="$$guest" $(PY) -m nvme_hotswap.mutation.score

# lint first: it is the cheapest.
check: lint check-unit check-series check-acceptance check-mutants ## the project's own tests: lint, unit tests, the series' QEMU tests, acceptance, mutants

# The suite on the cloud-style guest (systemd, udev, cloud-init): test_cloud_byid runs instead of cancelling.
check-cloud: ## check-acceptance on the cloud-style guest (GUEST=cloud; IMAGE=/path/to/cloud.qcow2)
	@$(MAKE) --no-print-directory check-acceptance GUEST=cloud

# The suite on an arm64 guest (Debian 12's arm64 kernel) on virt, with qemu-system-aarch64 built the same way.
check-aarch64: ## check-acceptance on an arm64 guest on QEMU's virt machine (GUEST_ARCH=aarch64)
	@$(MAKE) --no-print-directory check-acceptance GUEST_ARCH=aarch64

# Upstream's own release (Debian's binary of the version pinned in scripts/fetch-upstream-qemu.sh, run from
# a private unstable root): the whole suite. A test failing as a documented upstream defect reads "known
# upstream defect (docs/findings/...)" and does not fail the run; one that passes there fails it
# (nvme_hotswap/known_defects.py). GUEST_ARCH=aarch64: its qemu-system-aarch64 on virt.
check-upstream: ## the suite against upstream QEMU's own release (Debian's 11.1.3 binary); known defects reported as such
	@bash scripts/install-host-deps.sh >&2 && qemu=$$(bash scripts/fetch-upstream-qemu.sh | tail -n 1) && \
	$(MAKE) --no-print-directory check-acceptance QEMU="$$qemu"

# The guest matrix (NIGHTLY_CELLS), one history line per run, exit 1 on a regression (docs/nightly.md).
nightly: venv ## build QEMU, run the guest matrix, compare with the last night (docs/nightly.md)
	$(PY) -m nvme_hotswap.programs.nightly

# The same nightly as a GitLab pipeline (.gitlab-ci.yml, docs/ci.md): a job per cell, then one compare.
nightly-build: venv ## WHAT=qemu|guest: the product the variables name (GUEST_ARCH, PATCHES, GUEST_KERNEL, GUEST) if a selected cell needs it
	@$(PY) -m nvme_hotswap.programs.nightly build "$(WHAT)"

nightly-cell: venv ## CELL=<name>: one nightly cell, recorded in results/ci/cells/<name>/ (the compare judges it)
	@$(PY) -m nvme_hotswap.programs.nightly cell "$(CELL)"

nightly-compare: venv ## merge the recorded cells into one history line, judge it as make nightly does
	@$(PY) -m nvme_hotswap.programs.nightly compare

ci-local: venv ## run .gitlab-ci.yml here with gitlab-ci-local (MUTANT=<name> against a mutant; docs/ci.md)
	@bash scripts/install-host-deps.sh ci-local && $(PY) -m nvme_hotswap.programs.ci_local

# Reliability (docs/reliability.md): long runs on the patched QEMU, not part of `make check`.
review: venv ## SERIES=<mbox|format-patch folder|base..tip in QEMU_SRC|Message-Id>: before/after, patch by patch, REVIEW.md/.eml
	@$(PY) -m nvme_hotswap.programs.review

soak: venv ## SOAK_CYCLES (100) hot-swap cycles of each sequence on one guest: names, data, RSS, fds
	@$(RESOLVE_PRODUCTS) && QEMU="$$qemu" GUEST_DIR="$$guest" $(PY) -m nvme_hotswap.longrun.soak

fuzz: venv ## seeded random monitor sequences under guest I/O: QEMU must answer all, never abort
	@$(RESOLVE_PRODUCTS) && QEMU="$$qemu" GUEST_DIR="$$guest" $(PY) -m nvme_hotswap.longrun.fuzz

bench: venv ## speed figures against their targets (docs/benchmarks.md)
	@bash scripts/install-host-deps.sh bench && $(RESOLVE_PRODUCTS) && QEMU="$$qemu" GUEST_DIR="$$guest" $(PY) -m nvme_hotswap.longrun.bench

clean: ## remove the venv, results/, *.egg-info and gitlab-ci-local's state (the build caches and ci-local's history stay)
	rm -rf $(VENV) results *.egg-info .gitlab-ci-local
