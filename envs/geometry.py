"""Plane geometry rules of the arena shared by the environment and the calibration's kinematic model."""

from __future__ import annotations


def passing_side(previous: tuple[float, float], current: tuple[float, float], x_extent: tuple[float, float],
                 center_y: float) -> str | None:
    """The side on which a straight move from ``previous`` to ``current`` (robot centre ``(x, y)``, m) passes an
    obstacle spanning ``x_extent = (x0, x1)`` along x with its centre at ``center_y``: ``"left"`` (+y) or
    ``"right"``, judged by the robot's lateral position in the middle of the overlap of its path with the
    obstacle's extent; None if the move does not overlap that extent.
    """
    (x0, y0), (x1, y1) = previous, current
    lo, hi = min(x0, x1), max(x0, x1)
    bx0, bx1 = x_extent
    if hi < bx0 or lo > bx1:
        return None
    xm = (max(lo, bx0) + min(hi, bx1)) / 2
    ym = y0 if x0 == x1 else y0 + (y1 - y0) * (xm - x0) / (x1 - x0)
    return "left" if ym > center_y else "right"
