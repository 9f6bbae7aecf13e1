"""The programs around the suite (make soak, fuzz, bench, nightly, check-mutants, boot variants).

They drive the library; the library never imports them. Each is run with `python -m
nvme_hotswap.programs.<name>`; what they share about child processes is in `proc`, the key of a
mutant's kept verdict in `suite_key`; `vng` is bench's virtme-ng side.
"""
