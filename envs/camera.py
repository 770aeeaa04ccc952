"""The onboard camera as a pinhole model: where the robot's camera is, and where a world point or box appears in
its image. :meth:`envs.scene.Scene.render_onboard` renders with :func:`camera_frame`, so a point projected here
is where the renderer draws it (tested), and the corridor family places its basket with :func:`lateral_for_image_x`
so that the first image shows it at the team's image x-centre.

Image coordinates are normalised: ``u`` from 0 (left edge) to 1 (right edge), ``v`` from 0 (top) to 1 (bottom),
the conventions of the team's grounders (``cx, cy`` in ``[0, 1]``, EdgeGroundVLA ``stage2_v2_inference_server.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.robot import RobotConfig
from scenarios.spec import target_half_extents

Vec3 = tuple[float, float, float]

#: The robot's camera frame, width / height: the team's 1280x720 images (``../shared/reference/TEAM_STACK_2026.md``
#: section 3), whatever size the simulator renders for a policy's vision feature.
ROBOT_ASPECT = 1280 / 720


@dataclass(frozen=True)
class CameraFrame:
    """A camera pose in the world: ``eye`` (m), unit ``forward`` (optical axis), ``up`` and ``right`` vectors, and
    the horizontal field of view ``hfov`` (rad)."""

    eye: np.ndarray
    forward: np.ndarray
    up: np.ndarray
    right: np.ndarray
    hfov: float


def camera_frame(robot: RobotConfig, pose: Sequence[float], offset: Vec3 = (0.0, 0.0, 0.0)) -> CameraFrame:
    """The onboard camera of a robot at ``pose = (x, y, yaw)`` (m, rad), mounted as :class:`RobotConfig` says
    (``camera_height``, ``camera_forward``, ``camera_pitch`` down, ``camera_hfov``), plus the scene's mount jitter
    ``offset = (d_height m, d_pitch rad, d_yaw rad)``."""
    x, y, yaw = (float(v) for v in pose[:3])
    dh, dpitch, dyaw = offset
    heading, pitch = yaw + dyaw, robot.camera_pitch + dpitch
    eye = np.array([x + robot.camera_forward * math.cos(yaw), y + robot.camera_forward * math.sin(yaw),
                    robot.camera_height + dh])
    forward = np.array([math.cos(pitch) * math.cos(heading), math.cos(pitch) * math.sin(heading), -math.sin(pitch)])
    up = np.array([math.sin(pitch) * math.cos(heading), math.sin(pitch) * math.sin(heading), math.cos(pitch)])
    return CameraFrame(eye, forward, up, np.cross(forward, up), robot.camera_hfov)


def project(frame: CameraFrame, points: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image coordinates of world points.

    Args:
        frame: the camera (:func:`camera_frame`).
        points: ``(N, 3)`` world points (m).
        aspect: image width / height (the horizontal field of view is kept; the vertical follows, as rendered).

    Returns:
        ``(uv (N, 2), depth (N,))``: ``u`` right, ``v`` down in ``[0, 1]`` inside the image; depth along the optical
        axis (m); points with depth <= 0 are behind the camera and their ``uv`` is meaningless.
    """
    rel = np.asarray(points, dtype=np.float64).reshape(-1, 3) - frame.eye
    depth = rel @ frame.forward
    tan_h = math.tan(frame.hfov / 2)
    tan_v = tan_h / aspect
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 0.5 + (rel @ frame.right) / depth / (2 * tan_h)
        v = 0.5 - (rel @ frame.up) / depth / (2 * tan_v)
    return np.stack([u, v], axis=1), depth


def box_corners(center: Sequence[float], half_extents: Sequence[float], yaw: float = 0.0) -> np.ndarray:
    """The 8 corners ``(8, 3)`` of a box standing with its centre at ``center`` (m), half sizes ``half_extents``
    along its own x, y, z, rotated by ``yaw`` (rad) about z."""
    cx, cy, cz = center
    hx, hy, hz = half_extents
    c, s = math.cos(yaw), math.sin(yaw)
    out = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            for sz in (-1, 1):
                dx, dy = sx * hx, sy * hy
                out.append((cx + c * dx - s * dy, cy + s * dx + c * dy, cz + sz * hz))
    return np.asarray(out)


def box_in_image(frame: CameraFrame, corners: np.ndarray, aspect: float) -> tuple[float, float, float, float] | None:
    """The image bounding box ``(x1, y1, x2, y2)`` (normalised, clipped to the image) of a box given by its
    corners, as a detector would report it; None when no part of it is in front of the camera and inside the
    image. A box partly behind the camera is clipped to the part in front of it (its corners behind are moved
    onto a plane just in front of the eye)."""
    uv, depth = project(frame, corners, aspect)
    if np.all(depth <= 1e-3):
        return None
    if np.any(depth <= 1e-3):  # clip the edges that cross the eye's plane at a small positive depth
        front, behind = corners[depth > 1e-3], corners[depth <= 1e-3]
        pts = [front]
        rel_depth = lambda p: (p - frame.eye) @ frame.forward  # noqa: E731
        for a in front:
            for b in behind:
                da, db = rel_depth(a), rel_depth(b)
                t = (da - 1e-3) / (da - db)
                pts.append((a + t * (b - a))[None])
        uv, _ = project(frame, np.concatenate(pts), aspect)
    x1, y1 = np.clip(uv.min(axis=0), 0.0, 1.0)
    x2, y2 = np.clip(uv.max(axis=0), 0.0, 1.0)
    if x2 <= x1 or y2 <= y1:
        return None
    return float(x1), float(y1), float(x2), float(y2)


@dataclass(frozen=True)
class TargetView:
    """Where an episode's target (the cup or the basket) appears in the robot's camera: its image bounding box at
    any robot pose. Inside the field of view only: an obstacle in front of the target is not considered (the
    corridor has none).

    Attributes:
        robot: the camera mount (``camera_height``, ``camera_forward``, ``camera_pitch``, ``camera_hfov``).
        camera_offset: the scene's mount jitter ``(d_height m, d_pitch rad, d_yaw rad)``.
        corners: the target's bounding-box corners ``(8, 3)`` (m, world frame).
    """

    robot: RobotConfig
    camera_offset: Vec3
    corners: np.ndarray

    @classmethod
    def from_reset_info(cls, info: Mapping[str, Any]) -> TargetView:
        """The target of the episode whose ``env.reset`` info this is (its ``"scene"`` and ``"control"``).

        Raises:
            KeyError: no ``"scene"`` or ``"control"`` in ``info``.
        """
        if "scene" not in info or "control" not in info:
            raise KeyError("the target's view needs the environment's reset() info (with 'scene' and 'control')")
        scene, control = info["scene"], info["control"]
        robot = RobotConfig(camera_height=control["camera_height"], camera_forward=control["camera_forward"],
                            camera_pitch=control["camera_pitch"], camera_hfov=control["camera_hfov"])
        half = target_half_extents(scene["target_kind"])
        return cls(robot, tuple(scene["camera_offset"]), box_corners((*scene["target_position"], half[2]), half))

    def box(self, pose: Sequence[float], aspect: float = ROBOT_ASPECT) -> tuple[float, float, float, float] | None:
        """The target's image box ``(x1, y1, x2, y2)`` (fractions of the frame, :func:`box_in_image`) with the robot
        at ``pose = (x, y, yaw, ...)`` (m, rad), or None when no part of it is in view."""
        return box_in_image(camera_frame(self.robot, pose[:3], self.camera_offset), self.corners, aspect)


def lateral_for_image_x(robot: RobotConfig, image_x: float, target_x: float, half_extents: Sequence[float],
                        start: Sequence[float], offset: Vec3 = (0.0, 0.0, 0.0), aspect: float = 16 / 9) -> float:
    """The sideways position ``y`` (m, + left) at which a box standing at ``x = target_x`` (its centre, m) appears
    with its image bounding box centred at ``image_x`` (normalised, 0 = left edge) in the first image of a robot
    at ``start = (x, y, yaw)``: how the team placed its basket (by watching the live ``cx`` of the start image,
    EdgeGroundVLA ``mona_dashboard.py`` ``COLLECT_CX_POSITIONS``). Solved by bisection (the centre moves
    monotonically with ``y``).

    Raises:
        ValueError: ``image_x`` outside ``(0, 1)`` or a box that cannot be seen there (behind the camera).
    """
    if not 0.0 < image_x < 1.0:
        raise ValueError(f"image x-centre must be in (0, 1), got {image_x}")
    frame = camera_frame(robot, start, offset)
    z = half_extents[2]

    def centre_u(y: float) -> float:  # unclipped: the centre keeps moving when the box leaves the image
        uv, depth = project(frame, box_corners((target_x, y, z), half_extents), aspect)
        return math.nan if np.any(depth <= 1e-3) else float(uv[:, 0].min() + uv[:, 0].max()) / 2

    reach = 2.0 * max(0.5, target_x - start[0])  # a bearing of 63 deg, twice the half field of view
    lo, hi = start[1] - reach, start[1] + reach  # u(lo) > 1 (right of the image), u(hi) < 0 (left)
    for _ in range(60):
        mid = (lo + hi) / 2
        u = centre_u(mid)
        if math.isnan(u):
            raise ValueError(f"a box at x = {target_x:.2f} m is not in front of the camera")
        if u > image_x:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
