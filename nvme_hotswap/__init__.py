"""Harness of the NVMe hot-swap acceptance suite, in layers that import only downwards.

  config.py, arch.py, wait.py, tags.py   the run's configuration (one frozen value), the guest
             architectures, bounded waits, avocado tags
  vm/        driving QEMU: the process and its monitor (machine), the accelerator probe (accel), the
             devices booted (topology), what the QEMU can do (capabilities)
  guest/     talking to the guest: SSH (ssh), parsers of what it prints (facts), kernel-log patterns
             (klog), the run's SSH key (sshkey), the cloud-style guest's seed and disk (cloud)
  device/    the device level, no guest: QEMU under qtest (machine), the qtest protocol (qtest), PCI
             config and BARs (pci), a minimal NVMe host (nvme) and its data structures (nvme_data),
             DeviceTest (testcase)
  hotswap/   the hot-swap layer: the boot to SSH (boot) and every hot-swap step with its wait (rig;
             its monitor half alone: MonitorSteps)
  report/    what a run leaves: results folders (results), environment.json (environment), junit.xml
             reading (junit), TAP (tap), EVIDENCE.md/.html (evidence)
  review/    a posted series: read with b4 (series), the reply to the list (reply)
  preflight.py  the environment checked once before anything boots (QEMU, guest, results, ACCEL=kvm)
  basetest.py  SuiteTest: what every acceptance test has (artifacts, cancels, needs: tags, one report)
  testcase.py  HotswapTest, the base class of the guest-level tests: boot, tear-down checks, assertions
  mutation/  make check-mutants (check), make mutation-score (score), the key a mutant's verdict is
             kept under (suite_key)
  longrun/   make soak, fuzz, bench (with virtme-ng booted beside our guest: vng) and boot variants
  programs/  make nightly, review, ci-local, the functional tests' assets (functional_assets) and
             the child-process helper every program uses (proc); none of the three is imported
             by the library
"""
