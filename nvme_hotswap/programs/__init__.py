"""The programs around the suite that are neither mutation nor long runs: make nightly, review,
ci-local, the functional tests' assets (functional_assets) and what every program shares about
child processes (proc). Run with `python -m nvme_hotswap.programs.<name>`; the library never
imports them.
"""
