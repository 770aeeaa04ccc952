"""The foundations every package builds on: the error base and exit codes (:mod:`.errors`), the one way to write
and to read a small file (:mod:`.files`: atomic writes, size-capped reads, always-valid JSON) and a bounded LRU
mapping (:mod:`.lru`).

The bottom layer of ``foundations -> scenarios -> envs -> policies -> sim``: it imports nothing from the project,
and every package may import it.
"""
