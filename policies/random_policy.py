"""Random baseline: seeded random key presses (or uniform continuous actions)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from envs.keys import ACTION_LABEL, MOVE_KEYS, key_to_action
from foundations.errors import ConfigError
from policies.base import Policy


class RandomPolicy(Policy):
    """Seeded random baseline: random key presses or uniform actions.

    ``mode="keys"``: a uniformly drawn key of ``w q a z s c d e SPACE``; ``mode="uniform"``: a uniform vector in
    ``[-1.15, 1.15]^2`` with ``angular_z = 0``. Reseeded per episode from ``info["episode_seed"]`` when given.

    Raises:
        ConfigError: unknown ``mode``.
    """

    def __init__(self, seed: int | None = 0, mode: str = "keys") -> None:
        super().__init__()
        if mode not in ("keys", "uniform"):
            raise ConfigError(f"mode must be 'keys' or 'uniform', got {mode!r}")
        self.mode = mode
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._keys = (*MOVE_KEYS, "SPACE")

    def _reset(self, instruction: str, info: dict[str, Any]) -> None:
        if "episode_seed" in info:  # evaluation harnesses pass the episode seed for reproducibility
            self.rng = np.random.default_rng([0 if self.seed is None else self.seed, int(info["episode_seed"])])

    def _act(self, observation: Mapping[str, Any]) -> np.ndarray:
        if self.mode == "keys":
            return key_to_action(self._keys[int(self.rng.integers(len(self._keys)))])
        return np.append(self.rng.uniform(-ACTION_LABEL, ACTION_LABEL, 2), 0.0).astype(np.float32)
