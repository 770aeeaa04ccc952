"""Plane geometry rules of the arena, shared by the environment and the calibration's kinematic model
(:mod:`sim.calibration.kinematics`). Every function takes floats or numpy arrays that broadcast together."""

from __future__ import annotations

import numpy as np

LEFT, RIGHT, NOT_PASSED = 1, -1, 0


def passing_side(x0, y0, x1, y1, box_x0, box_x1, box_y):
    """On which side a straight move of the robot's centre from ``(x0, y0)`` to ``(x1, y1)`` (m) passes an obstacle
    spanning ``[box_x0, box_x1]`` along x with its centre at ``box_y``: :data:`LEFT` (+1, +y side), :data:`RIGHT`
    (-1), or :data:`NOT_PASSED` (0) when the move does not overlap the obstacle's extent along x. The side is the
    robot's lateral position in the middle of that overlap, relative to the obstacle's centre.

    Returns an int array of the broadcast shape (a 0-d array for scalars).
    """
    x0, y0, x1, y1 = (np.asarray(v, dtype=np.float64) for v in (x0, y0, x1, y1))
    lo, hi = np.minimum(x0, x1), np.maximum(x0, x1)
    overlaps = (hi >= box_x0) & (lo <= box_x1)
    xm = (np.maximum(lo, box_x0) + np.minimum(hi, box_x1)) / 2
    dx = x1 - x0
    with np.errstate(divide="ignore", invalid="ignore"):
        ym = np.where(dx == 0, y0, y0 + (y1 - y0) * (xm - x0) / np.where(dx == 0, 1.0, dx))
    return np.where(overlaps, np.where(ym > box_y, LEFT, RIGHT), NOT_PASSED)
