"""The long runs around the suite: make soak (hot-swap cycles on one guest), fuzz (random monitor
sequences under guest I/O), bench (speed figures against their targets; vng: virtme-ng booted
beside our guest) and boot variants. Run with `python -m nvme_hotswap.longrun.<name>`; the
library never imports them.
"""
