"""The three-wheel omni robot: its constants, inverse kinematics and velocity ramp.

PyBullet has no omni-wheel joint, so the base is driven holonomically by setting its velocity every physics
substep (see :class:`envs.box_avoid.BoxAvoidEnv`); the wheels are reported, not simulated: their speeds come
from the inverse kinematics below. Rollers are not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RobotConfig:
    """Every constant of the simulated robot in one place (SI units).

    Sources: ``ROBOT_AND_DATA.md`` section 1. Figures the team never measured are marked *chosen*:

    Attributes:
        speed: translation speed at the fixed throttle of 50 (m/s). *Chosen* 0.45 so that one 0.4 s press
            covers 0.18 m (the spec's "roughly 0.15-0.2 m"): the value that lets most human 1-box key guides
            pass their box collision-free (calibration in the README, ``python -m sim.replay_patterns``).
        angular_speed: in-place spin rate for ``r``/``t`` (rad/s). *Chosen*: 1.5 (a press turns ~34 deg).
        class_rotation_rate: in-place spin rate of the ROT_L / ROT_R classes (rad/s, ``class`` actuation): 0.25,
            the team's kinematic model ("measured from data", MoNaVLA ``scripts/sim/rollout_core.py``
            ``ACTION_VEL``); consistent with their V5 guides ``left_straight`` / ``right_straight``, which face a
            basket slightly off-centre with one 0.4 s rotation (5.7 deg). The robot spins at a fixed rotation
            throttle (17.5 in V6, ``vla_control_utils.py``) whose rate was never measured.
        acceleration: translation acceleration limit (m/s^2). *Chosen*: 2.5 (0.18 s to full speed).
        deceleration: translation braking limit (m/s^2). *Chosen*: 2.5 (so a press covers exactly
            ``speed * press_duration``).
        angular_acceleration: spin acceleration/braking limit (rad/s^2). *Chosen*: 7.5.
        press_duration: drive time of one key press (s). Spec: 0.4 s (0.3 s in an older collector).
        radius: footprint radius of the round body (m), used for collisions. *Chosen*: 0.15.
        body_height: body cylinder height (m); the URDF matches. *Chosen*: 0.10.
        ground_clearance: height of the body's underside (m). *Chosen*: 0.04.
        mass: total mass (kg), in the URDF. *Chosen*: 3.0.
        wheel_radius: omni wheel radius (m). *Chosen*: 0.035.
        wheel_base: distance from the centre to each wheel's contact point (m). *Chosen*: 0.13.
        wheel_angles: wheel positions around the body, counter-clockwise from +x (rad): front-left, rear,
            front-right (a "kiwi" drive, 120 deg apart).
        camera_height: camera optical centre above the floor (m). Spec: about 0.3 ("30 cm perspective").
        camera_forward: camera ahead of the body centre (m). *Chosen*: 0.10.
        camera_pitch: downward pitch (rad, positive looks down). *Chosen*: 10 deg.
        camera_hfov: horizontal field of view (rad). Spec: unknown; 62 deg of the common IMX219 module.
    """

    speed: float = 0.45
    angular_speed: float = 1.5
    class_rotation_rate: float = 0.25
    acceleration: float = 2.5
    deceleration: float = 2.5
    angular_acceleration: float = 7.5
    press_duration: float = 0.4
    radius: float = 0.15
    body_height: float = 0.10
    ground_clearance: float = 0.04
    mass: float = 3.0
    wheel_radius: float = 0.035
    wheel_base: float = 0.13
    wheel_angles: tuple[float, float, float] = (math.radians(60), math.radians(180), math.radians(300))
    camera_height: float = 0.30
    camera_forward: float = 0.10
    camera_pitch: float = math.radians(10.0)
    camera_hfov: float = math.radians(62.0)

    @property
    def brake_time(self) -> float:
        """Time to stop from full speed at the braking limit (s)."""
        return max(self.speed / self.deceleration, self.angular_speed / self.angular_acceleration)

    @property
    def press_distance(self) -> float:
        """Distance covered by one translation key press from rest, accelerating and braking (m)."""
        return self.speed * self.press_duration


def wheel_speeds(config: RobotConfig, vx: float, vy: float, wz: float) -> np.ndarray:
    """Inverse kinematics of the kiwi drive.

    Args:
        vx, vy: body-frame velocity (m/s, x forward, y left); wz: yaw rate (rad/s, CCW).

    Returns:
        float32 ``(3,)`` wheel angular speeds (rad/s) in the order of ``config.wheel_angles``; positive spins
        the wheel so that it pushes the body counter-clockwise about the centre.
    """
    speeds = [
        (-math.sin(a) * vx + math.cos(a) * vy + config.wheel_base * wz) / config.wheel_radius
        for a in config.wheel_angles
    ]
    return np.asarray(speeds, dtype=np.float32)


def body_velocity_from_wheels(config: RobotConfig, speeds: np.ndarray) -> np.ndarray:
    """Forward kinematics (least-squares inverse of :func:`wheel_speeds`): wheel rad/s -> ``(vx, vy, wz)``."""
    jac = np.array(
        [[-math.sin(a), math.cos(a), config.wheel_base] for a in config.wheel_angles], dtype=np.float64
    ) / config.wheel_radius
    return np.linalg.solve(jac, np.asarray(speeds, dtype=np.float64)).astype(np.float32)


def ramp(vx: float, vy: float, tx: float, ty: float, accel_step: float, decel_step: float) -> tuple[float, float]:
    """One control tick of the translation ramp: move ``(vx, vy)`` towards the target ``(tx, ty)`` (m/s).

    The change is limited in norm by ``decel_step`` (m/s per tick) when the target is slower than the current
    velocity, by ``accel_step`` otherwise, so direction changes are smooth and a stop from ``v`` takes
    ``v / deceleration`` seconds. Plain floats: this runs at every 240 Hz physics substep.
    """
    dx, dy = tx - vx, ty - vy
    norm = math.hypot(dx, dy)
    limit = decel_step if math.hypot(tx, ty) < math.hypot(vx, vy) else accel_step
    if norm <= limit:
        return tx, ty
    return vx + dx * limit / norm, vy + dy * limit / norm
