"""Harness for the NVMe hot-swap acceptance suite.

Modules, by what they do:
  config       where the QEMU binary, the guest and the results come from
  accel        which accelerator really runs a guest here (a probe, not a guess)
  topology     the PCIe/NVMe devices a test boots with, as QEMU arguments
  machine      one QEMU process: launch, QMP/HMP, events, teardown by PID
  boot         the guest's QEMU command line and the wait until SSH answers
  cloud        the cloud-style guest (GUEST=cloud / IMAGE=): NoCloud seed, disk boot
  guest        the booted Linux guest over SSH: commands and parsed facts
  guestfacts   parsers for what the guest prints (unit tested on recorded text)
  klog         kernel-log patterns, named after what they prove
  capabilities what the QEMU under test can do (series present or not)
  results      the per-run results directory and per-test artifact folders
  tags         avocado docstring tags (markers, `needs:` capabilities)
  junit        junit.xml read once for every report
  tap          results.tap (TAP 13) next to junit.xml
  evidence     EVIDENCE.md / EVIDENCE.html of a run (monitor sequences, kernel-log proof, timelines)
  mutation     make check-mutants: broken variants of the series must fail a scenario
  nightly      make nightly: the matrix, a history line per run, regressions against the last
  testcase     HotswapTest, the base class the acceptance tests derive from
  wait         bounded polling with a message saying what was awaited
"""
