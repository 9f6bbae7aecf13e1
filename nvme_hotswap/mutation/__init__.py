"""Does the suite fail on a broken series? make check-mutants (check: the hand-written mutants of
patches/mutants/, each killed by a scenario), make mutation-score (score: generated mutants of
every C line the series adds), and the key a mutant's verdict is kept under (suite_key).
Run with `python -m nvme_hotswap.mutation.<name>`; the library never imports them.
"""
