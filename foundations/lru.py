"""A bounded least-recently-used mapping: every cache keyed by something a client or a file controls (an
instruction string) is one of these, so a stream of distinct instructions cannot grow memory without bound."""

from __future__ import annotations

import collections
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: Distinct instructions whose features a backbone or policy keeps (per stream): 256. An instruction's features
#: are a few KiB to ~42 KiB (Kosmos-2's), so at most ~10 MiB per cache; the robot uses a handful of instructions.
MAX_INSTRUCTIONS = 256


class LRUCache(collections.OrderedDict, Generic[K, V]):
    """An ``OrderedDict`` holding at most ``maxsize`` entries; reading (:meth:`get`, ``[]``) or writing an entry
    makes it the most recent, and writing beyond ``maxsize`` drops the least recent. Not thread-safe by itself.

    Args:
        maxsize: entries kept (>= 1).

    Raises:
        ValueError: ``maxsize < 1``.
    """

    def __init__(self, maxsize: int = MAX_INSTRUCTIONS) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        super().__init__()
        self.maxsize = int(maxsize)

    def __getitem__(self, key: K) -> V:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def get(self, key: K, default: Any = None) -> Any:
        """The value of ``key`` (now the most recent), or ``default``."""
        return self[key] if key in self else default

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)
