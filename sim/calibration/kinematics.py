"""A fast kinematic model of open-loop key presses, the calibration's surrogate of the PyBullet environment.

Played open loop, a guide's path does not depend on where the boxes are (until it hits one): each translation key
moves the robot's centre ``press_distance`` along the key's direction in the body frame (``RobotConfig``: the
environment's acceleration and braking limits make a press from rest cover exactly ``speed * press_duration``),
and ``r``/``t`` turn it ``angular_speed * press_duration`` in place. So the paths of every guide under every pose
jitter are computed once (:func:`guide_paths`), and a candidate geometry only costs distances from those sampled
paths to the obstacles and the target (:func:`score_paths`), vectorised over replays. The environment remains the
judge: :mod:`sim.calibration.search` verifies the chosen geometry with real replays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.geometry import NOT_PASSED, passing_side
from envs.keys import KEY_ACTIONS
from envs.robot import RobotConfig
from sim.calibration.guides import ends_with_stop, judge

#: Points sampled along each press (1.5 cm apart for an 0.18 m press).
SAMPLES_PER_PRESS = 12


@dataclass(frozen=True)
class Paths:
    """Sampled open-loop paths of ``R`` replays of one key sequence.

    Attributes:
        points: float64 ``(R, P, 2)`` robot centre positions (m), start included.
        ends: float64 ``(R, N + 1, 2)`` the centre after each of the ``N`` presses (``ends[:, 0]`` the start).
        stops: bool ``(R,)``: the key sequence ends with ``SPACE``; False: a truncated guide
            (:func:`sim.calibration.guides.judge`).
    """

    points: np.ndarray
    ends: np.ndarray
    stops: np.ndarray


def guide_paths(keys: tuple[str, ...], starts: np.ndarray, press_distance: float,
                robot: RobotConfig | None = None) -> Paths:
    """The paths of ``keys`` from each start pose ``starts`` (float ``(R, 3)``: x, y in m, yaw in rad)."""
    robot = robot or RobotConfig()
    turn = robot.angular_speed * robot.press_duration
    x, y, yaw = (starts[:, i].astype(np.float64) for i in range(3))
    ends, points = [np.stack([x, y], 1)], [np.stack([x, y], 1)[:, None]]
    fractions = np.arange(1, SAMPLES_PER_PRESS + 1) / SAMPLES_PER_PRESS
    for key in keys:
        lx, ly, wz = KEY_ACTIONS[key]
        if lx or ly:
            heading = yaw + math.atan2(ly, lx)
            nx, ny = x + press_distance * np.cos(heading), y + press_distance * np.sin(heading)
            points.append(np.stack([x[:, None] + (nx - x)[:, None] * fractions,
                                    y[:, None] + (ny - y)[:, None] * fractions], 2))
            x, y = nx, ny
        elif wz:
            yaw = yaw + math.copysign(turn, wz)
        ends.append(np.stack([x, y], 1))
    return Paths(points=np.concatenate(points, 1), ends=np.stack(ends, 1),
                 stops=np.full(len(starts), ends_with_stop(keys)))


@dataclass(frozen=True)
class Placement:
    """Where things are in each of ``R`` replays (m).

    Attributes:
        obstacle_centres: ``(R, B, 2)``. obstacle_halves: ``(B, 2)`` half depth (x) and half width (y).
        obstacle_round: bool ``(B,)``: a pot (radius = half depth) rather than a box.
        target: ``(R, 2)`` target centre; target_half: half extents ``(2,)`` of a box target, or ``(r, r)`` of a round
            one with ``target_round``. goal: ``(R, 2)``. arena: ``(R, 4)`` x_min, x_max, y_min, y_max.
        side: +1 left / -1 right, the instructed side.
    """

    obstacle_centres: np.ndarray
    obstacle_halves: np.ndarray
    obstacle_round: np.ndarray
    target: np.ndarray
    target_half: np.ndarray
    target_round: bool
    goal: np.ndarray
    arena: np.ndarray
    side: int


def _clearance(points: np.ndarray, centres: np.ndarray, half: np.ndarray, round_: bool) -> np.ndarray:
    """Distance (m) from each point ``(R, P, 2)`` to a box or disc centred at ``centres`` ``(R, 2)``: ``(R, P)``."""
    d = np.abs(points - centres[:, None, :])
    if round_:
        return np.hypot(d[..., 0], d[..., 1]) - half[0]
    out = np.maximum(d - half, 0.0)
    return np.hypot(out[..., 0], out[..., 1])


@dataclass(frozen=True)
class Outcome:
    """Per replay: ``clearance`` (m, the closest the robot's edge came to an obstacle or the target; < 0 is a
    collision), ``in_bounds``, ``side_ok`` (every obstacle reached was passed on the instructed side, and one was),
    ``start_distance`` and ``end_distance`` to the goal (m), ``stops`` (the guide ends with SPACE; else truncated)."""

    clearance: np.ndarray
    in_bounds: np.ndarray
    side_ok: np.ndarray
    start_distance: np.ndarray
    end_distance: np.ndarray
    stops: np.ndarray

    @property
    def passes(self) -> np.ndarray:
        """The calibration's pass rule (:func:`sim.calibration.guides.judge`): collision-free, inside the arena, on
        the instructed side, and, for a truncated guide, nearer the goal at the end than at the start."""
        return judge(self.stops, self.clearance > 0, self.in_bounds, self.side_ok, self.start_distance,
                     self.end_distance)


def score_paths(paths: Paths, place: Placement, robot_radius: float) -> Outcome:
    """What happens to each replay of ``paths`` in ``place`` (same ``R``)."""
    pts = paths.points
    clear = _clearance(pts, place.target, place.target_half, place.target_round).min(1)
    (x0, y0), (x1, y1) = paths.ends[:, :-1].transpose(2, 0, 1), paths.ends[:, 1:].transpose(2, 0, 1)
    sides = []
    for b in range(place.obstacle_halves.shape[0]):
        centre = place.obstacle_centres[:, b]
        clear = np.minimum(clear, _clearance(pts, centre, place.obstacle_halves[b], bool(place.obstacle_round[b])).min(1))
        half_x = place.obstacle_halves[b, 0]
        per_press = passing_side(x0, y0, x1, y1, (centre[:, 0] - half_x)[:, None], (centre[:, 0] + half_x)[:, None],
                                 centre[:, 1][:, None])
        reached = per_press != NOT_PASSED
        first = np.argmax(reached, axis=1)
        sides.append(np.where(reached.any(1), per_press[np.arange(len(first)), first], NOT_PASSED))
    sides = np.stack(sides, 1)
    reached = sides != NOT_PASSED
    side_ok = reached.any(1) & np.all(~reached | (sides == place.side), axis=1)
    x_min, x_max, y_min, y_max = (place.arena[:, i][:, None] for i in range(4))
    in_bounds = np.all((pts[..., 0] >= x_min) & (pts[..., 0] <= x_max) & (pts[..., 1] >= y_min) & (pts[..., 1] <= y_max), 1)
    start, end = paths.ends[:, 0], paths.ends[:, -1]
    return Outcome(clearance=clear - robot_radius, in_bounds=in_bounds, side_ok=side_ok,
                   start_distance=np.hypot(*(start - place.goal).T), end_distance=np.hypot(*(end - place.goal).T),
                   stops=paths.stops)
