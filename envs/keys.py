"""The robot's teleoperation key vocabulary and action conventions.

Source: the robot team's collector (``../shared/reference/ROBOT_AND_DATA.md`` section 2). Actions are
``[linear_x, linear_y, angular_z]`` float32 labels on REP-103 axes (x forward, y left, z counter-clockwise).
``1.15`` is a *label*, not a speed: the robot drives at a fixed throttle and only the direction of
``(linear_x, linear_y)`` matters.
"""

from __future__ import annotations

import math

import numpy as np

#: Label magnitude written by the collector for a pressed axis (dimensionless).
ACTION_LABEL = 1.15
#: Components with ``|value| < DEAD_ZONE`` count as zero (deployed ROS node).
DEAD_ZONE = 0.15
#: The deployed node clips outputs to +-1.5 before driving.
OUTPUT_CLIP = 1.5

_L = ACTION_LABEL
#: Key -> ``[linear_x, linear_y, angular_z]`` exactly as the collector writes them.
KEY_ACTIONS: dict[str, tuple[float, float, float]] = {
    "w": (_L, 0.0, 0.0),
    "s": (-_L, 0.0, 0.0),
    "a": (0.0, _L, 0.0),
    "d": (0.0, -_L, 0.0),
    "q": (_L, _L, 0.0),
    "e": (_L, -_L, 0.0),
    "z": (-_L, _L, 0.0),
    "c": (-_L, -_L, 0.0),
    "r": (0.0, 0.0, _L),
    "t": (0.0, 0.0, -_L),
    "SPACE": (0.0, 0.0, 0.0),
}
#: The eight translation keys, counter-clockwise from forward.
MOVE_KEYS = ("w", "q", "a", "z", "s", "c", "d", "e")


def key_to_action(key: str) -> np.ndarray:
    """Return the action label of a key as a ``(3,)`` float32 array.

    Raises:
        KeyError: for a key outside :data:`KEY_ACTIONS` (names are case-sensitive, ``"SPACE"`` for stop).
    """
    try:
        return np.asarray(KEY_ACTIONS[key], dtype=np.float32)
    except KeyError:
        raise KeyError(f"unknown key {key!r}; known keys: {sorted(KEY_ACTIONS)}") from None


def apply_dead_zone(action: np.ndarray, dead_zone: float = DEAD_ZONE) -> np.ndarray:
    """Zero every component with ``|value| < dead_zone``; returns a new float32 array of the same shape."""
    out = np.asarray(action, dtype=np.float32).copy()
    out[np.abs(out) < dead_zone] = 0.0
    return out


def action_to_key(action: np.ndarray, dead_zone: float = DEAD_ZONE) -> str:
    """Name the key the robot would execute for ``action`` (shape ``(2,)`` or ``(3,)``).

    Translation wins over rotation, as on the robot (``Driving.move(atan2(y, x))``); the direction is snapped
    to the nearest of the eight translation keys. A vector inside the dead-zone is ``"SPACE"``.
    """
    a = apply_dead_zone(np.asarray(action, dtype=np.float32).reshape(-1), dead_zone)
    x, y = float(a[0]), float(a[1])
    wz = float(a[2]) if a.shape[0] > 2 else 0.0
    if x == 0.0 and y == 0.0:
        if wz == 0.0:
            return "SPACE"
        return "r" if wz > 0 else "t"
    sector = int(round(math.atan2(y, x) / (math.pi / 4))) % 8
    return MOVE_KEYS[sector]
