"""The programs around the suite (make soak, fuzz, bench, nightly, check-mutants, boot variants).

They drive the library; the library never imports them. Each is run with `python -m
nvme_hotswap.programs.<name>`; what they share about child processes is in `proc`.
"""
