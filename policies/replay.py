"""Open-loop replay of a key sequence, an action array, or an H5 episode's actions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.keys import KEY_ACTIONS, key_to_action
from foundations.errors import ConfigError
from foundations.files import read_json
from policies.base import Policy

#: The key guides human operators drove for 1-box scenarios (copied from the team's reference data).
HUMAN_PATTERNS = Path(__file__).resolve().parents[1] / "scenarios" / "human" / "core_patterns_1box.json"


def load_patterns(path: str | Path = HUMAN_PATTERNS) -> dict[str, list[str]]:
    """Read a ``{name: [key, ...]}`` JSON file of key guides.

    Raises:
        ConfigError: unreadable JSON, or a pattern that is not a list of known keys (names the pattern).
    """
    path = Path(path)
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read key patterns: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected an object of name -> list of keys")
    for name, keys in data.items():
        if not isinstance(keys, list) or any(k not in KEY_ACTIONS for k in keys):
            raise ConfigError(f"{path}: pattern {name!r} must be a list of keys from {sorted(KEY_ACTIONS)}")
    return data


def read_h5_actions(path: str | Path) -> np.ndarray:
    """Actions of an H5 episode, float32 ``(N, 3)``, without the leading ``episode_start`` frame.

    Raises:
        ConfigError: the file is not HDF5 or has no ``actions`` dataset of shape (N, 3).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            actions = np.asarray(f["actions"], dtype=np.float32)
            events = [e.decode() if isinstance(e, bytes) else str(e) for e in f["action_event_types"][:]] if "action_event_types" in f else []
    except (OSError, KeyError) as exc:
        raise ConfigError(f"{path}: cannot read actions: {exc}") from exc
    if actions.ndim != 2 or actions.shape[1] != 3:
        raise ConfigError(f"{path}: actions must have shape (N, 3), got {actions.shape}")
    if events[:1] == ["episode_start"] or (not events and actions.shape[0] and not actions[0].any()):
        actions = actions[1:]
    return actions


class ReplayPolicy(Policy):
    """Plays a fixed sequence of actions, one per step, then stops (``SPACE``) once it runs out.

    Give exactly one of:
        keys: key names, e.g. ``["w", "w", "a", ..., "SPACE"]``;
        pattern: a name in ``patterns_file`` (default: the operators' 1-box key guides);
        actions: float32 ``(N, 3)`` (or ``(N, 2)``) action labels;
        path: an H5 episode file (its ``actions`` after ``episode_start``).

    Raises:
        ConfigError: none or several sources given, or an unknown key / pattern.
    """

    def __init__(
        self,
        keys: Sequence[str] | None = None,
        pattern: str | None = None,
        actions: np.ndarray | None = None,
        path: str | Path | None = None,
        patterns_file: str | Path = HUMAN_PATTERNS,
    ) -> None:
        super().__init__()
        given = [x is not None for x in (keys, pattern, actions, path)]
        if sum(given) != 1:
            raise ConfigError("give exactly one of keys=, pattern=, actions= or path=")
        if pattern is not None:
            patterns = load_patterns(patterns_file)
            if pattern not in patterns:
                raise ConfigError(f"unknown pattern {pattern!r}; available: {', '.join(patterns)}")
            keys = patterns[pattern]
        if keys is not None:
            self.actions = np.stack([key_to_action(k) for k in keys]) if keys else np.zeros((0, 3), np.float32)
        elif path is not None:
            self.actions = read_h5_actions(path)
        else:
            arr = np.asarray(actions, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[1] not in (2, 3):
                raise ConfigError(f"actions must have shape (N, 2) or (N, 3), got {arr.shape}")
            self.actions = arr if arr.shape[1] == 3 else np.pad(arr, ((0, 0), (0, 1)))
        self._index = 0

    def _reset(self, instruction: str, info: dict[str, Any]) -> None:
        self._index = 0

    def _act(self, observation: Mapping[str, Any]) -> np.ndarray:
        if self._index >= len(self.actions):
            return np.zeros(3, np.float32)
        action = self.actions[self._index]
        self._index += 1
        return action
