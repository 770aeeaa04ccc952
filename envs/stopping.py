"""Where the robot stands relative to a stop band in front of its target: the corridor family's success rule.

The team's goal since V5: the robot stops 40-50 cm before the basket (``TEAM_STACK_2026.md`` section 1), facing it.
:func:`stop_metrics` measures the three things the rule needs from a pose; the environment applies it at each
decision (:class:`envs.box_avoid.BoxAvoidEnv`), the corridor expert plans with the same function, so the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StopMetrics:
    """Of one pose, against a target's footprint.

    Attributes:
        front_gap: m from the robot's front (its centre plus its radius along its heading) to the nearest point of
            the target's footprint (0 when inside it).
        heading_error: rad, signed (+ = the target is to the left): from the robot's heading to the direction of
            the target's centre.
        passed: the robot's front has reached the plane of the target's near face (its x) without touching it:
            it drove past the goal.
    """

    front_gap: float
    heading_error: float
    passed: bool

    def in_band(self, band: Sequence[float], facing_tolerance: float | None) -> bool:
        """The front gap inside ``band = (low, high)`` (m) and, unless ``facing_tolerance`` is None, the heading
        error within it (rad)."""
        facing = facing_tolerance is None or abs(self.heading_error) <= facing_tolerance
        return band[0] <= self.front_gap <= band[1] and facing

    def overshot(self, band: Sequence[float]) -> bool:
        """Closer than the band (``front_gap < band[0]``) or past the target: the robot cannot come back (none of
        the eight classes drives backwards)."""
        return self.passed or self.front_gap < band[0]


def wrap(angle: float) -> float:
    """``angle`` (rad) in ``(-pi, pi]``."""
    return math.atan2(math.sin(angle), math.cos(angle))


def stop_metrics(pose: Sequence[float], radius: float, target: Sequence[float], half_extents: Sequence[float]
                 ) -> StopMetrics:
    """The :class:`StopMetrics` of a robot at ``pose = (x, y, yaw)`` (m, rad) with footprint ``radius`` (m), its
    target's footprint an axis-aligned rectangle centred at ``target = (x, y)`` with half sizes
    ``half_extents[:2]`` (m)."""
    x, y, yaw = (float(v) for v in pose[:3])
    tx, ty = float(target[0]), float(target[1])
    hx, hy = float(half_extents[0]), float(half_extents[1])
    fx, fy = x + radius * math.cos(yaw), y + radius * math.sin(yaw)
    dx = max(tx - hx - fx, 0.0, fx - tx - hx)
    dy = max(ty - hy - fy, 0.0, fy - ty - hy)
    return StopMetrics(front_gap=math.hypot(dx, dy), heading_error=wrap(math.atan2(ty - y, tx - x) - yaw),
                       passed=fx >= tx - hx and not (dx == 0.0 and dy == 0.0))
