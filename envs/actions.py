"""The robot's eight action classes of 2026 (V5/V6 data, the grounder + MLP policies) and their conventions.

Sources (``../shared/reference/TEAM_STACK_2026.md`` section 2):

- the classes, their order and their ``[linear_x, linear_y, angular_z]`` labels: MoNaVLA
  ``scripts/sim/rollout_core.py`` (``ACTION_VEL``, ``CLASS_NAMES``) and the inference server EdgeGroundVLA
  ``robovlm_nav/serve/stage2_v2_inference_server.py`` (``ACTION_3D``); ``linear_x``/``linear_y`` are the
  joystick's full deflection 1.15 (a label, not m/s: the robot drives at a fixed throttle in the direction of
  ``(linear_x, linear_y)``), ``angular_z`` is ``+-0.25`` for the rotation classes;
- a continuous action to its class: ``rollout_core.continuous_to_class`` (translation when ``|linear_x| > 0.5`` or
  ``|linear_y| > 0.5``, else rotation when ``|angular_z| > 0.1``, else STOP); as on the robot, whose motor code
  spins only when it does not translate (EdgeGroundVLA ``robovlm_nav/serve/vla_control_utils.py``);
- the server's 2-D ``action`` field (``ACTION_2D``: the rotations give ``[0, 0]``; the 3-D vector goes in a
  separate ``action_3d`` field);
- the V6 joystick form written in the data (EdgeGroundVLA ``robovlm_nav/serve/mona_dashboard.py``,
  ``DashboardJoystickReader``): ``linear_x, linear_y`` in ``{0, +-1.15}``, ``angular_z = +-1.15`` for a pure
  rotation of the right stick.
"""

from __future__ import annotations

import numpy as np

from envs.keys import ACTION_LABEL

#: The classes in the team's index order (class ``i`` is logit ``i`` of their heads).
CLASS_NAMES: tuple[str, ...] = ("STOP", "FORWARD", "LEFT", "RIGHT", "FWD+L", "FWD+R", "ROT_L", "ROT_R")
#: ``angular_z`` label of ROT_L (ROT_R: minus it), their ``ACTION_3D``.
ROTATION_LABEL = 0.25
_L = ACTION_LABEL
#: Class -> ``[linear_x, linear_y, angular_z]`` label (the server's ``ACTION_3D``).
CLASS_ACTIONS: dict[str, tuple[float, float, float]] = {
    "STOP": (0.0, 0.0, 0.0),
    "FORWARD": (_L, 0.0, 0.0),
    "LEFT": (0.0, _L, 0.0),
    "RIGHT": (0.0, -_L, 0.0),
    "FWD+L": (_L, _L, 0.0),
    "FWD+R": (_L, -_L, 0.0),
    "ROT_L": (0.0, 0.0, ROTATION_LABEL),
    "ROT_R": (0.0, 0.0, -ROTATION_LABEL),
}
#: Thresholds of ``continuous_to_class`` (label units).
TRANSLATION_THRESHOLD = 0.5
ROTATION_THRESHOLD = 0.1
#: ``angular_z`` the V6 joystick writes for a pure rotation.
JOYSTICK_ROTATION = ACTION_LABEL
ROTATIONS = frozenset({"ROT_L", "ROT_R"})


def class_action(name: str) -> np.ndarray:
    """The ``(3,)`` float32 label of class ``name`` (their ``ACTION_3D``).

    Raises:
        KeyError: an unknown class (the message lists the classes).
    """
    try:
        return np.asarray(CLASS_ACTIONS[name], dtype=np.float32)
    except KeyError:
        raise KeyError(f"unknown action class {name!r}; classes: {', '.join(CLASS_NAMES)}") from None


def action_class(action: np.ndarray) -> str:
    """The class of a continuous ``[linear_x, linear_y(, angular_z)]`` action, as their ``continuous_to_class``:
    translation wins (forward when ``linear_x > 0.5``, combined with left/right when ``|linear_y| > 0.5``); a
    rotation only without translation (``|angular_z| > 0.1``); STOP otherwise. Backward motion has no class: a
    ``linear_x < -0.5`` alone is STOP, as in their code."""
    a = np.asarray(action, dtype=np.float32).reshape(-1)
    lx, ly = float(a[0]), float(a[1])
    az = float(a[2]) if a.shape[0] > 2 else 0.0
    forward, left, right = lx > TRANSLATION_THRESHOLD, ly > TRANSLATION_THRESHOLD, ly < -TRANSLATION_THRESHOLD
    if forward:
        return "FWD+L" if left else "FWD+R" if right else "FORWARD"
    if left or right:
        return "LEFT" if left else "RIGHT"
    if az > ROTATION_THRESHOLD:
        return "ROT_L"
    if az < -ROTATION_THRESHOLD:
        return "ROT_R"
    return "STOP"


def server_action_2d(name: str) -> np.ndarray:
    """The server's 2-D ``action`` field for class ``name`` (``ACTION_2D``: rotations are ``[0, 0]``)."""
    return class_action(name)[:2].copy()


def joystick_action(name: str) -> np.ndarray:
    """Class ``name`` as the V6 joystick writes it in the data: translations as their labels, rotations with
    ``angular_z = +-1.15`` (a full right-stick deflection), float32 ``(3,)``."""
    a = class_action(name)
    if name in ROTATIONS:
        a[2] = np.sign(a[2]) * JOYSTICK_ROTATION
    return a
