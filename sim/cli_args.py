"""Command-line ``KEY=VALUE`` arguments shared by the CLIs (``sim.serve``, ``sim.eval``, ``sim.train``)."""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from typing import Any


def parse_policy_kwargs(pairs: Sequence[str]) -> dict[str, Any]:
    """``["seed=3", "mode=uniform", "device=cpu"]`` -> ``{"seed": 3, "mode": "uniform", "device": "cpu"}``.

    Values are Python literals (``3``, ``0.5``, ``True``, ``None``, ``[1, 2]``) or JSON (``true``, ``null``) when
    they parse as such, otherwise strings.

    Raises:
        ValueError: an item without ``=`` or with an empty or non-identifier key.
    """
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"policy arguments must look like KEY=VALUE, got {pair!r}")
        value: Any = text
        for parse in (ast.literal_eval, json.loads):
            try:
                value = parse(text)
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
        kwargs[key] = value
    return kwargs
