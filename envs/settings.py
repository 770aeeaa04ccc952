"""Value types of the environment's settings, each defined once: :class:`ImageSize` and the actuation modes.

Every command, config and policy that names an image size or an actuation uses these (the model: the enums of
gym-pybullet-drones), so a value is parsed and checked in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

from foundations.errors import ConfigError

#: How an action moves the robot (see :class:`envs.box_avoid.BoxAvoidEnv`): one 0.4 s key press at the fixed
#: throttle (the 2025 robot), body velocities held for one control period, or one of the eight action classes of
#: 2026 (:mod:`envs.actions`) executed at the robot's cadence (:mod:`envs.cadence`).
Actuation = Literal["keypress", "velocity", "class"]
ACTUATIONS: tuple[str, ...] = get_args(Actuation)

#: Physics rate (Hz): PyBullet steps 1/240 s, its default; every simulated time is a whole number of these steps.
PHYSICS_HZ = 240

#: Largest camera image (px): the robot's 1280x720 (ROBOT_AND_DATA.md section 3).
MAX_IMAGE_SIZE = (1280, 720)


class ImageSize(NamedTuple):
    """A camera image size in px, always ``(width, height)``; written ``"WxH"`` on command lines and in files.

    Arrays of such an image have shape ``(height, width, 3)``.
    """

    width: int
    height: int

    @classmethod
    def parse(cls, value: str | Sequence[int] | ImageSize, name: str = "image size") -> ImageSize:
        """``"224x224"``, ``(width, height)`` or an :class:`ImageSize` -> :class:`ImageSize`.

        Raises:
            ConfigError: malformed, non-positive, or larger than 1280x720 (the message starts with ``name``).
        """
        if isinstance(value, str):
            try:
                w, h = (int(v) for v in value.lower().split("x"))
            except ValueError:
                raise ConfigError(f"{name} must look like WIDTHxHEIGHT (e.g. 224x224), got {value!r}") from None
        else:
            try:
                w, h = (int(v) for v in value)
                if any(int(v) != v for v in value):
                    raise ValueError
            except (TypeError, ValueError):
                raise ConfigError(f"{name} must be (width, height) in px, got {value!r}") from None
        if w <= 0 or h <= 0 or w > MAX_IMAGE_SIZE[0] or h > MAX_IMAGE_SIZE[1]:
            raise ConfigError(f"{name} {w}x{h} must be positive and at most {MAX_IMAGE_SIZE[0]}x{MAX_IMAGE_SIZE[1]}")
        return cls(w, h)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


#: The actuation a family's environments use unless told otherwise: the 2026 corridor drives with the classes.
FAMILY_ACTUATION = {"corridor": "class"}

#: The camera pitch (deg down) of a family's robot unless told otherwise (others: ``RobotConfig.camera_pitch``, 10).
#: Corridor, 5 deg, our reading of three facts of the 2026 robot: its grounder rejects a box centred above
#: ``cy = 0.35`` because "the basket is always lower-middle of the image" (EdgeGroundVLA
#: ``stage2_v2_inference_server.py``, ``min_cy``), the V6 instruction "the gray basket ... fills the lower half of
#: the frame" at the stop, and "narrow vertical FOV: the object leaves the bottom of the frame when close"
#: (TEAM_STACK_2026.md section 3). At 5 deg (camera 0.30 m high, 62 deg FOV) the basket's centre sits at
#: ``cy`` 0.45 from the start (2.97 m) and 0.70 at the stop band, its box reaching the frame's bottom; at 10 deg it
#: would sit at 0.32 from the start, where the deployed grounder would discard it.
FAMILY_CAMERA_PITCH_DEG = {"corridor": 5.0}


def default_actuation(family: str) -> Actuation:
    """The actuation of ``family`` when none is given (``keypress`` but for :data:`FAMILY_ACTUATION`)."""
    return FAMILY_ACTUATION.get(family, "keypress")  # type: ignore[return-value]


def check_actuation(value: str) -> Actuation:
    """Return ``value`` if it is an :data:`Actuation`.

    Raises:
        ConfigError: any other value (the message lists the choices).
    """
    if value not in ACTUATIONS:
        raise ConfigError(f"actuation must be one of {', '.join(ACTUATIONS)}, got {value!r}")
    return value  # type: ignore[return-value]
