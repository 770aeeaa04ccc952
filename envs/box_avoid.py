"""``MobileVLA/BoxAvoid-v0``: drive a three-wheel omni robot around box obstacles to a target object.

Physics/control split (as in gym-pybullet-drones): :mod:`envs.robot` holds the robot's constants, kinematics and
velocity ramp; :mod:`envs.scene` builds and moves the PyBullet bodies and renders cameras; this module turns
actions into velocity commands, steps the physics at 240 Hz and scores the episode.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import string
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import scenarios
from envs.actions import CLASS_ACTIONS, ROTATIONS, action_class
from envs.cadence import DEFAULT_CADENCE, DEFAULT_MAX_TIME, Cadence, Command, CommandSchedule
from envs.camera import lateral_for_image_x
from envs.geometry import LEFT, NOT_PASSED, passing_side
from envs.keys import ACTION_LABEL, DEAD_ZONE, action_to_key, apply_dead_zone
from envs.rendering import choose_renderer
from envs.robot import RobotConfig, ramp, wheel_speeds
from envs.scene import PHYSICS_HZ, Scene
from envs.settings import FAMILY_CAMERA_PITCH_DEG, ImageSize, check_actuation, default_actuation
from envs.stopping import StopMetrics, stop_metrics
from foundations.errors import ConfigError
from scenarios.spec import target_half_extents

OBS_KEYS = ("image", "instruction", "state")
#: Characters allowed in the ``instruction`` observation: printable ASCII and the Hangul syllables (the team's V5
#: instruction ends in Korean: "... 바구니를 향해 직진해.").
INSTRUCTION_CHARSET = (frozenset(string.printable) - set("\t\n\r\x0b\x0c")) | frozenset(map(chr, range(0xAC00, 0xD7A4)))
INSTRUCTION_MAX_LENGTH = 256

#: Reward terms (see :meth:`BoxAvoidEnv.step`). Our reading; the team has none: its models are fitted to the
#: operators' recorded actions (Huber loss, ``ROBOT_AND_DATA.md`` section 5). Only the RL baseline
#: (:mod:`sim.training.rl`) reads the reward; no evaluation metric does (they come from ``info["status"]``). Why these
#: values: progress pays per metre, and a start is at most 4.2 m from its goal (every layout of the three families,
#: jitter included), so the terminal +-10 outweighs all the progress an episode can earn, and the step cost is a small
#: time cost (-0.3 over the 30-press limit).
REWARD_PROGRESS = 1.0  # per metre of distance-to-goal reduced
REWARD_SUCCESS = 10.0
REWARD_FAILURE = -10.0  # collision, out of bounds, or (corridor) overshoot
REWARD_STEP = -0.01


class _CameraPlacer:
    """The robot's camera for :class:`scenarios.corridor.TargetPlacer`: the corridor places its basket with it."""

    def __init__(self, robot: RobotConfig) -> None:
        self.robot, self.radius = robot, robot.radius

    def lateral_for_image_x(self, image_x, target_x, half_extents, start, camera_offset) -> float:
        return lateral_for_image_x(self.robot, image_x, target_x, half_extents, start, camera_offset)


class BoxAvoidEnv(gym.Env):
    """The Mobile VLA robot with its onboard camera, in one of the team's set-ups: around box obstacles to a target
    object (``cup``, ``basket``), or to a gray basket in a corridor (``corridor``; ``MobileVLA/Corridor-v0``).

    Args:
        scenario: layout name (``scenarios.names(family=family)``), e.g. ``"1box_hori_left"``; a basket position
            for the corridor (``"strong_left"``). Default: the first of the family's sweep (``1box_hori_left``,
            ``center``).
        distance: ``"close"``, ``"medium"`` or ``"far"``; a path for the corridor (``"left_curve"``, ...).
            Default: ``medium``; the corridor's ``straight``.
        family: scenario family (``scenarios.FAMILIES``): ``"cup"`` (the 2025 set-up, calibrated to the operators'
            key guides; default), ``"basket"`` (the early-2026 set-up at the spec's measured distances) or
            ``"corridor"`` (the set-up since V5, :mod:`scenarios.corridor`).
        actuation: ``"keypress"`` (one step = one 0.4 s key press at the fixed throttle, then a stop),
            ``"velocity"`` (continuous body velocities in m/s and rad/s held for ``1 / control_hz`` s) or
            ``"class"`` (one step = one decision among the eight classes of :mod:`envs.actions`, executed at
            ``cadence``). Default: the family's (:func:`envs.settings.default_actuation`: ``class`` for the
            corridor, ``keypress`` otherwise).
        cadence: ``class`` actuation only: when decisions are taken and how long their commands drive
            (:class:`envs.cadence.Cadence` or ``"v5"``, ``"v6-data"``, ``"deployed"``, ``"deployed,coast_s=1.2"``);
            default ``"deployed"``.
        control_hz: control rate of the velocity mode (Hz).
        image_size: onboard camera ``(width, height)`` px or ``"WxH"``; default 224x224, at most 1280x720.
        obs_keys: observation keys to return, any of ``("image", "instruction", "state")``.
        max_steps: truncation (steps); default 30 presses (keypress), the same simulated time (velocity), none
            (class: ``max_time`` ends the episode).
        max_time: ``class`` actuation: truncation in simulated time (s); default 45.
        success_radius: box families: the robot must stop within this distance of the goal point (m). The
            corridor's rule is its scene's ``stop_band`` and ``facing_tolerance`` instead.
        stop_to_succeed: success needs a stop (a zero action, the STOP class) at rest, like Habitat's STOP action
            and the operators' final SPACE, or, in the corridor, being at rest for ``stop_dwell`` s; if False,
            being at rest where the rule says is enough.
        stop_dwell: corridor: seconds at rest that count as a stop without a STOP decision (the robot's COAST
            timer can leave it still). Default 2.0: longer than any rest the cadence presets impose between two
            moves (V5: 0.95 s of each 1.35 s; the deployed loop with the 1.2 s COAST of before 2026-07-23 and a
            2.2 s grounding step: 1.0 s). Our reading.
        jitter: sample the scenario's pose ranges on every reset (otherwise the nominal scene).
        domain_randomization: sample appearance (box colour/scale, floor texture, light, camera pose,
            instruction template, target kind).
        scenario_dir: extra folder of layout TOML files.
        robot: a :class:`RobotConfig` (default: its defaults, with the family's camera pitch,
            :data:`envs.settings.FAMILY_CAMERA_PITCH_DEG`: 5 deg for the corridor); ``camera_height`` (m),
            ``camera_pitch_deg``, ``camera_hfov_deg`` override its camera fields.
        renderer: ``"tiny"`` (CPU ``ER_TINY_RENDERER``), ``"egl"`` (OpenGL through PyBullet's EGL plugin, falling
            back to tiny with a warning when it cannot load) or ``"auto"`` (default: the faster for ``image_size``
            on a CPU, :func:`envs.rendering.choose_renderer`). ``env.unwrapped.renderer`` is the one that draws.
        render_mode: ``None`` or ``"rgb_array"`` (top-down view of the arena).
        render_size: ``(width, height)`` px of :meth:`render`.
        action_latency: policy latency in simulated time (s): each action takes effect this long after the
            observation it answers. The robot keeps executing its previous command meanwhile: in velocity mode
            the previous velocity (commands queue up when the latency exceeds a control period); in keypress
            mode the previous press has already ended, so the robot waits at rest before pressing; in class mode
            as the cadence holds it.

    Observation (``Dict``): ``"image"`` uint8 ``(H, W, 3)`` RGB; ``"instruction"`` ``Text``; ``"state"``
    float32 ``(6,)`` = ``x, y, yaw, vx, vy, wz`` in the world frame (m, rad, m/s, rad/s).

    Action: ``Box(-1.15, 1.15, (3,), float32)`` = ``[linear_x, linear_y, angular_z]`` (REP-103). A non-finite
    or wrongly shaped action raises ``ValueError``. In class mode it stands for its class
    (:func:`envs.actions.action_class`, the team's ``continuous_to_class``).

    Episode end: ``terminated`` on success, collision (any contact with a box, the target or a wall), leaving the
    arena, or (corridor) overshoot: the robot's front closer to the basket than the stop band, or past it;
    ``truncated`` after ``max_steps`` (or ``max_time``). ``info["status"]`` is ``"success"``, ``"collision"``,
    ``"out_of_bounds"``, ``"overshoot"``, ``"timeout"`` or ``None`` while running. Corridor success: stopped (a
    STOP at rest, or at rest for ``stop_dwell``) with the front in the scene's ``stop_band`` (0.40-0.50 m) of the
    basket and the heading within ``facing_tolerance`` (20 deg) of its centre (:mod:`envs.stopping`).

    Reward: ``1.0`` per metre of progress towards the goal, ``-0.01`` per step, ``+10`` on success, ``-10`` on
    collision, leaving the arena or overshoot.

    Info (``reset`` and every ``step``):

    - ``status`` (str | None): as above. ``success`` (bool): ``status == "success"``.
    - ``collided`` (bool), ``collided_with`` (str | None): the body touched (``"obstacle_0"``, ``"target"``,
      ``"wall"`` ...).
    - ``distance_to_goal`` (float, m): robot centre to the goal point. ``path_length`` (float, m): driven so far.
    - ``passed_side`` (``"left"``/``"right"``/None): the side every box reached so far was passed on;
      ``side_ok`` (bool | None): whether that is the instructed side (None before any box is reached).
    - ``stop_distance`` (float | None, m), ``heading_error`` (float | None, rad): corridor: the robot's front to the
      basket, and its heading's angle to the basket's centre (+ = basket to the left); None elsewhere.
    - ``instruction`` (str), ``scenario`` (layout name), ``distance`` (preset name), ``family`` (scenario family)
      of the current scene.
    - ``steps`` (int): steps taken. ``sim_time`` (float, s): simulated time elapsed, latency included.
    - ``key`` (str): the robot key the action maps to (``envs.keys``; ``"SPACE"`` = stop, and at reset), or in
      class mode its class (``"FORWARD"``, ``"STOP"`` ...).
    - ``action`` (float32 ``(3,)``): the action executed after clipping to the action space (zeros at reset).
    - ``state`` (float32 ``(6,)``): as the observation's ``"state"``, also when it is not observed.
    - ``wheel_speeds`` (float ``(3,)``, rad/s): the commanded cruise speeds of the three wheels this step.
    - ``scene`` (dict, ``reset`` only): the sampled :class:`scenarios.SceneSpec` (privileged: poses, colours).
    - ``control`` (dict, ``reset`` only): how actions move the robot (privileged, for the experts): ``actuation``,
      ``cadence`` (its fields; keypress and velocity described in the same terms), ``action_latency`` (s), ``speed`` (m/s), ``rotation_rate`` (rad/s),
      ``acceleration`` / ``deceleration`` (m/s^2), ``radius`` (m), ``stop_dwell`` (s), the camera mount
      (``camera_height``, ``camera_forward`` m, ``camera_pitch``, ``camera_hfov`` rad).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(
        self,
        scenario: str | None = None,
        distance: str | None = None,
        *,
        family: str = scenarios.DEFAULT_FAMILY,
        actuation: str | None = None,
        cadence: str | Cadence | None = None,
        control_hz: float = 10.0,
        image_size: str | Sequence[int] = (224, 224),
        obs_keys: Sequence[str] = OBS_KEYS,
        max_steps: int | None = None,
        max_time: float | None = None,
        success_radius: float = 0.3,
        stop_to_succeed: bool = True,
        stop_dwell: float = 2.0,
        jitter: bool = True,
        domain_randomization: bool = False,
        scenario_dir: str | None = None,
        robot: RobotConfig | None = None,
        camera_height: float | None = None,
        camera_pitch_deg: float | None = None,
        camera_hfov_deg: float | None = None,
        renderer: str = "auto",
        render_mode: str | None = None,
        render_size: Sequence[int] = (640, 360),
        action_latency: float = 0.0,
    ) -> None:
        actuation = check_actuation(actuation if actuation is not None else default_actuation(family))
        if cadence is not None and actuation != "class":
            raise ConfigError(f"a cadence is for the class actuation (the {actuation} actuation has its own timing)")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        unknown = set(obs_keys) - set(OBS_KEYS)
        if unknown or not obs_keys:
            raise ConfigError(f"obs_keys must be a non-empty subset of {OBS_KEYS}, got {tuple(obs_keys)}")
        if control_hz <= 0 or success_radius <= 0:
            raise ConfigError("control_hz and success_radius must be positive")
        if max_steps is not None and (isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1):
            raise ConfigError(f"max_steps must be a whole number >= 1 (or None for the default), got {max_steps!r}")
        if max_time is not None and not (isinstance(max_time, (int, float)) and 0 < max_time <= 3600):
            raise ConfigError(f"max_time must be in (0, 3600] s, got {max_time!r}")
        if not (isinstance(stop_dwell, (int, float)) and 0 <= stop_dwell <= 600):
            raise ConfigError(f"stop_dwell must be in [0, 600] s, got {stop_dwell!r}")

        if robot is None:
            pitch = FAMILY_CAMERA_PITCH_DEG.get(family)
            robot = RobotConfig() if pitch is None else RobotConfig(camera_pitch=math.radians(pitch))
        overrides = {
            "camera_height": camera_height,
            "camera_pitch": None if camera_pitch_deg is None else math.radians(camera_pitch_deg),
            "camera_hfov": None if camera_hfov_deg is None else math.radians(camera_hfov_deg),
        }
        self.robot = dataclasses.replace(robot, **{k: v for k, v in overrides.items() if v is not None})
        self.actuation = actuation
        self.control_hz = float(control_hz)
        self.image_size = ImageSize.parse(image_size, "image_size")
        self.obs_keys = tuple(k for k in OBS_KEYS if k in obs_keys)
        self.success_radius = float(success_radius)
        self.stop_to_succeed = bool(stop_to_succeed)
        self.stop_dwell = float(stop_dwell)
        self.jitter = bool(jitter)
        self.domain_randomization = bool(domain_randomization)
        self.scenario_dir = scenario_dir
        self.render_mode = render_mode
        self.render_size = ImageSize.parse(render_size, "render_size")

        self.dt = 1.0 / PHYSICS_HZ
        self.set_action_latency(action_latency)
        self.cadence: Cadence | None = None
        self.max_time: float | None = None
        if actuation == "keypress":
            self._press_substeps = round(self.robot.press_duration * PHYSICS_HZ)
            self._brake_substeps = math.ceil(self.robot.brake_time * PHYSICS_HZ)
            self.step_duration = (self._press_substeps + self._brake_substeps) * self.dt
        elif actuation == "velocity":
            self._control_substeps = max(1, round(PHYSICS_HZ / self.control_hz))
            self.step_duration = self._control_substeps * self.dt
        else:
            self.cadence = Cadence.parse(cadence if cadence is not None else DEFAULT_CADENCE)
            self.max_time = float(max_time) if max_time is not None else DEFAULT_MAX_TIME
            self.cadence.check_fits(self.max_time)
            self.step_duration = self.cadence.period_s  # the nominal time between two decisions
        press_time = self.robot.press_duration + self.robot.brake_time
        if max_steps is not None:
            self.max_steps = int(max_steps)
        elif actuation == "class":
            self.max_steps = math.inf  # max_time ends the episode
        else:
            self.max_steps = 30 if actuation == "keypress" else round(30 * press_time / self.step_duration)

        if scenario is None:
            scenario = scenarios.default_sweep(family, scenario_dir)[0][0]
        if distance is None:
            distance = "straight" if family == "corridor" else "medium"
        self.scenario = scenarios.load(scenario, distance, scenario_dir, family)
        self.scene = Scene(self.robot, renderer=choose_renderer(renderer, self.image_size))
        self.renderer = self.scene.renderer_name
        self._placer = _CameraPlacer(self.robot)

        w, h = self.image_size
        all_spaces = {
            "image": spaces.Box(0, 255, (h, w, 3), np.uint8),
            "instruction": spaces.Text(INSTRUCTION_MAX_LENGTH, charset="".join(sorted(INSTRUCTION_CHARSET))),
            "state": spaces.Box(-np.inf, np.inf, (6,), np.float32),
        }
        self.observation_space = spaces.Dict({k: all_spaces[k] for k in self.obs_keys})
        self.action_space = spaces.Box(-ACTION_LABEL, ACTION_LABEL, (3,), np.float32)

        self.spec_scene: scenarios.SceneSpec | None = None
        self._v_body: tuple[float, float] = (0.0, 0.0)
        self._wz = 0.0

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Sample a scene and place the robot at its start.

        ``options`` may hold ``"scenario"``, ``"distance"`` and/or ``"family"`` to switch layout without a new env, and ``"scene"`` (a :class:`scenarios.SceneSpec`) to replay an exact scene.
        ``info`` holds ``"instruction"`` and ``"scene"`` (the sampled :class:`scenarios.SceneSpec` as a dict,
        which a privileged policy may read) besides the per-step keys.
        """
        super().reset(seed=seed)
        options = options or {}
        if {"scenario", "distance", "family"} & set(options):
            self.scenario = scenarios.load(
                options.get("scenario", self.scenario.name),
                options.get("distance", self.scenario.distance),
                self.scenario_dir,
                options.get("family", self.scenario.family),
            )
        if options.get("scene") is not None:
            self.spec_scene = options["scene"]
        else:
            self.spec_scene = self.scenario.sample(
                self.np_random, jitter=self.jitter, domain_randomization=self.domain_randomization,
                placer=self._placer,
            )
        self.scene.place(self.spec_scene)
        self._v_body: tuple[float, float] = (0.0, 0.0)
        self._wz = 0.0
        self._command = (np.zeros(2), 0.0)
        self._active = [np.zeros(2), 0.0]  # velocity mode: command in effect
        self._queue: collections.deque = collections.deque()
        self._schedule = CommandSchedule()  # class mode: the commands by the substep they take effect
        self._substep = 0
        self._tick = self._last_motion = 0  # physics substeps simulated; the last one the robot moved in
        self._sim_time = 0.0
        self._steps = 0
        self._path_length = 0.0
        self._sides: dict[int, str] = {}
        self._collided_with: str | None = None
        self._status: str | None = None
        self._pose = self.scene.robot_pose()
        self._distance = self._goal_distance()
        obs = self._observation()
        info = self._info(np.zeros(3, np.float32), "STOP" if self.actuation == "class" else "SPACE")
        info["scene"] = self.spec_scene.to_dict()
        info["control"] = self.control()
        return obs, info

    def key_of(self, action: np.ndarray) -> str:
        """The key (``info["key"]``) an action maps to under this env's actuation: one of the eight classes
        (:data:`envs.actions.CLASS_NAMES`) in the ``class`` actuation, else a robot key (:data:`envs.keys.KEY_ACTIONS`,
        ``"SPACE"`` inside the dead-zone). ``action``: ``[linear_x, linear_y(, angular_z)]`` labels."""
        return action_class(action) if self.actuation == "class" else action_to_key(action)

    def control(self) -> dict[str, Any]:
        """How actions move the robot (``info["control"]`` at reset; privileged, read by the experts): see the class
        doc."""
        r = self.robot
        if self.actuation == "keypress":  # the same timing in the cadence's terms: a press, then the brake
            cadence = Cadence("keypress", "sync", period_s=self.step_duration, move_s=r.press_duration,
                              rotation_move_s=r.press_duration)
        elif self.actuation == "velocity":
            cadence = Cadence("velocity", "async", period_s=self.step_duration)
        else:
            cadence = self.cadence
        return {"actuation": self.actuation, "cadence": cadence.to_dict(),
                "action_latency": self.action_latency, "speed": r.speed,
                "rotation_rate": r.class_rotation_rate if self.actuation == "class" else r.angular_speed,
                "acceleration": r.acceleration, "deceleration": r.deceleration,
                "angular_acceleration": r.angular_acceleration, "radius": r.radius, "stop_dwell": self.stop_dwell,
                "press_duration": r.press_duration, "camera_height": r.camera_height,
                "camera_forward": r.camera_forward, "camera_pitch": r.camera_pitch, "camera_hfov": r.camera_hfov}

    def step(self, action):
        """Execute one key press (keypress mode), one control period (velocity mode) or one decision at the cadence
        (class mode); see the class doc."""
        if self.spec_scene is None:
            raise RuntimeError("call reset() before step()")
        if self._status is not None:
            raise RuntimeError(f"episode already ended ({self._status}); call reset()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (3,):
            raise ValueError(f"action must have shape (3,) [linear_x, linear_y, angular_z], got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action.tolist()}")
        action = np.clip(action, -ACTION_LABEL, ACTION_LABEL)

        key = self.key_of(action)
        if self.actuation == "class":
            is_stop = key == "STOP"
            target_v, target_wz = self._class_command(key)
            phases = self._class_phases(key, target_v, target_wz)
        else:
            is_stop = key == "SPACE"  # every component inside the dead-zone
        if self.actuation == "keypress":
            target_v, target_wz = self._keypress_command(action)
            phases = [(self._press_substeps, target_v, target_wz), (self._brake_substeps, np.zeros(2), 0.0)]
            if self._latency_substeps:
                phases.insert(0, (self._latency_substeps, np.zeros(2), 0.0))  # at rest while the policy thinks
        elif self.actuation == "velocity":
            target_v, target_wz = self._velocity_command(action)
            phases = self._velocity_phases(target_v, target_wz)
        self._command = (target_v, target_wz)
        previous = self._pose
        self._sim_time += sum(phase[0] for phase in phases) * self.dt
        for substeps, v_target, wz_target in phases:
            collided = self._simulate(substeps, v_target, wz_target)
            self._pose = self.scene.robot_pose()  # the next phase starts from this heading
            if collided:
                break
        self._steps += 1
        self._path_length += math.hypot(self._pose[0] - previous[0], self._pose[1] - previous[1])
        self._record_sides(previous, self._pose)

        old_distance, self._distance = self._distance, self._goal_distance()
        reward = REWARD_STEP + REWARD_PROGRESS * (old_distance - self._distance)
        x, y = self._pose[0], self._pose[1]
        x_min, x_max, y_min, y_max = self.spec_scene.arena
        at_rest = math.hypot(*self._v_body) < 0.02 and abs(self._wz) < 0.05
        band = self.spec_scene.stop_band
        if self._collided_with is not None:
            self._status, reward = "collision", reward + REWARD_FAILURE
        elif not (x_min <= x <= x_max and y_min <= y <= y_max):
            self._status, reward = "out_of_bounds", reward + REWARD_FAILURE
        elif band is not None:  # the corridor: stop in the band in front of the basket, facing it
            metrics = self.stop_metrics()
            stopped = at_rest and (is_stop or not self.stop_to_succeed or self.rest_time >= self.stop_dwell)
            if metrics.overshot(band):
                self._status, reward = "overshoot", reward + REWARD_FAILURE
            elif stopped and metrics.in_band(band, self.spec_scene.facing_tolerance):
                self._status, reward = "success", reward + REWARD_SUCCESS
        elif self._distance <= self.success_radius and at_rest and (is_stop or not self.stop_to_succeed):
            self._status, reward = "success", reward + REWARD_SUCCESS
        terminated = self._status is not None
        out_of_time = self.max_time is not None and self._sim_time >= self.max_time - 1e-9
        truncated = not terminated and (self._steps >= self.max_steps or out_of_time)
        if truncated:
            self._status = "timeout"
        return self._observation(), float(reward), terminated, truncated, self._info(action, key)

    def render(self) -> np.ndarray | None:
        """Top-down RGB view ``(H, W, 3)`` uint8 of the arena (``render_size``), or None without render_mode."""
        if self.render_mode != "rgb_array":
            return None
        return self.scene.render_topdown(self.spec_scene, self.render_size)

    def close(self) -> None:
        """Disconnect the scene's PyBullet client (safe to call twice)."""
        self.scene.close()

    # ------------------------------------------------------------------ internals
    def _keypress_command(self, action: np.ndarray) -> tuple[np.ndarray, float]:
        """Robot semantics: only the direction of (linear_x, linear_y) matters; angular_z alone spins."""
        a = apply_dead_zone(action, DEAD_ZONE)
        if a[0] or a[1]:
            heading = math.atan2(a[1], a[0])
            return self.robot.speed * np.array([math.cos(heading), math.sin(heading)]), 0.0
        if a[2]:
            return np.zeros(2), math.copysign(self.robot.angular_speed, a[2])
        return np.zeros(2), 0.0

    def _class_command(self, name: str) -> tuple[np.ndarray, float]:
        """Class mode: a translation class drives at the fixed ``speed`` in its label's direction (the robot's
        ``Driving.move(atan2(linear_y, linear_x), throttle)``), a rotation spins at ``class_rotation_rate``."""
        lx, ly, az = CLASS_ACTIONS[name]
        if name in ROTATIONS:
            return np.zeros(2), math.copysign(self.robot.class_rotation_rate, az)
        if lx or ly:
            heading = math.atan2(ly, lx)
            return self.robot.speed * np.array([math.cos(heading), math.sin(heading)]), 0.0
        return np.zeros(2), 0.0

    def _class_phases(self, name: str, target_v: np.ndarray, target_wz: float) -> list[tuple[int, np.ndarray, float]]:
        """Schedule the decision ``name`` at the cadence (:mod:`envs.cadence`) and return the ``(substeps, v, wz)``
        phases from this decision's frame to the next one's; the simulated clock moves to the next frame."""
        cadence, start, latency = self.cadence, self._substep, self._latency_substeps
        effect = cadence.effect_substep(start, latency, stop=name == "STOP")
        drive = None if name == "STOP" else cadence.drive_substeps(rotation=name in ROTATIONS)
        self._schedule.add(Command(effect, None if drive is None else effect + drive,
                                   (float(target_v[0]), float(target_v[1])), float(target_wz)))
        self._substep = cadence.next_frame(start, latency)
        return [(n, np.asarray(v), wz) for n, v, wz in self._schedule.phases(start, self._substep)]

    @property
    def rest_time(self) -> float:
        """Seconds the robot has been at rest (no translation, no spin) up to now."""
        return (self._tick - self._last_motion) * self.dt

    def stop_metrics(self) -> StopMetrics | None:
        """The robot's front gap and heading error to the target (:func:`envs.stopping.stop_metrics`), for a scene
        with a stop band (the corridor); None otherwise."""
        spec = self.spec_scene
        if spec is None or spec.stop_band is None:
            return None
        return stop_metrics(self._pose, self.robot.radius, spec.target_position, target_half_extents(spec.target_kind))

    def _velocity_command(self, action: np.ndarray) -> tuple[np.ndarray, float]:
        """Continuous mode: m/s and rad/s, translation clipped to ``speed``, spin to ``angular_speed``."""
        v = action[:2].astype(np.float64)
        norm = float(np.linalg.norm(v))
        if norm > self.robot.speed:
            v *= self.robot.speed / norm
        return v, float(np.clip(action[2], -self.robot.angular_speed, self.robot.angular_speed))

    def set_action_latency(self, seconds: float) -> None:
        """Change ``action_latency`` (s) between steps, e.g. to a policy's measured per-step latency.

        Raises:
            ConfigError: outside ``[0, 10]`` s (a ``ValueError``).
        """
        if not 0.0 <= seconds <= 10.0:
            raise ConfigError(f"action_latency must be in [0, 10] s, got {seconds}")
        self.action_latency = float(seconds)
        self._latency_substeps = round(seconds * PHYSICS_HZ)

    def _velocity_phases(self, target_v: np.ndarray, target_wz: float) -> list[tuple[int, np.ndarray, float]]:
        """Split one control period into ``(substeps, v, wz)`` phases, applying commands ``action_latency`` late.

        Commands wait in a queue keyed by the substep at which they take effect, so a latency longer than a
        control period delays them by several steps, as on the robot.
        """
        self._queue.append((self._substep + self._latency_substeps, target_v, target_wz))
        end = self._substep + self._control_substeps
        phases = []
        while self._substep < end:
            while self._queue and self._queue[0][0] <= self._substep:
                _, *self._active = self._queue.popleft()
            until = min(end, self._queue[0][0]) if self._queue else end
            phases.append((until - self._substep, *self._active))
            self._substep = until
        return phases

    def _simulate(self, substeps: int, v_target: np.ndarray, wz_target: float) -> bool:
        """Ramp towards the command and step physics; returns True (and stops early) on a contact.

        The base velocity is only re-set while it changes or while spinning: PyBullet keeps a translation (the robot
        has no damping and nothing else is dynamic), but a free spin drifts and tilts, and a body-frame translation
        must follow the yaw.
        """
        r, scene = self.robot, self.scene
        accel, decel, w_step = r.acceleration * self.dt, r.deceleration * self.dt, r.angular_acceleration * self.dt
        (vx, vy), wz = self._v_body, self._wz
        tx, ty = float(v_target[0]), float(v_target[1])
        yaw = self._pose[2]
        for _ in range(substeps):
            moving = (vx, vy) != (tx, ty) or wz != wz_target
            if moving:
                vx, vy = ramp(vx, vy, tx, ty, accel, decel)
                wz += min(w_step, max(-w_step, wz_target - wz))
            if wz and (vx or vy):  # the heading only matters for a translation
                yaw = scene.robot_pose()[2]
            if moving or wz:
                scene.drive(vx, vy, wz, yaw)
            scene.step()
            self._tick += 1
            if vx or vy or wz:
                self._last_motion = self._tick
            hit = scene.contact()
            if hit is not None:
                self._collided_with = hit
                self._v_body, self._wz = (0.0, 0.0), 0.0
                return True
        self._v_body, self._wz = (vx, vy), wz
        return False

    def _goal_distance(self) -> float:
        gx, gy = self.spec_scene.goal
        return math.hypot(self._pose[0] - gx, self._pose[1] - gy)

    def _record_sides(self, previous: tuple[float, float, float], current: tuple[float, float, float]) -> None:
        """Note on which side the robot passed each obstacle (:func:`envs.geometry.passing_side`), the first time
        its path overlaps the obstacle's extent along x."""
        for i, box in enumerate(self.spec_scene.obstacles):
            if i not in self._sides:
                side = passing_side(*previous[:2], *current[:2], box.center[0] - box.size[0] / 2,
                                    box.center[0] + box.size[0] / 2, box.center[1])
                if side != NOT_PASSED:
                    self._sides[i] = "left" if side == LEFT else "right"

    @property
    def passed_side(self) -> str | None:
        """``"left"``/``"right"`` if every box reached so far was passed on that side, else None."""
        sides = set(self._sides.values())
        return sides.pop() if len(sides) == 1 else None

    def _state(self) -> np.ndarray:
        x, y, yaw = self._pose
        c, s = math.cos(yaw), math.sin(yaw)
        vx, vy = self._v_body
        return np.array([x, y, yaw, c * vx - s * vy, s * vx + c * vy, self._wz], dtype=np.float32)

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {}
        if "image" in self.obs_keys:
            obs["image"] = self.scene.render_onboard(self.spec_scene, self.image_size)
        if "instruction" in self.obs_keys:
            obs["instruction"] = self.spec_scene.instruction
        if "state" in self.obs_keys:
            obs["state"] = self._state()
        return obs

    def _info(self, action: np.ndarray, key: str) -> dict[str, Any]:
        passed = self.passed_side
        cmd_v, cmd_wz = self._command
        metrics = self.stop_metrics()
        return {
            "status": self._status,
            "success": self._status == "success",
            "collided": self._collided_with is not None,
            "collided_with": self._collided_with,
            "distance_to_goal": self._distance,
            "path_length": self._path_length,
            "passed_side": passed,
            "side_ok": passed == self.spec_scene.side if self._sides else None,
            "stop_distance": None if metrics is None else metrics.front_gap,
            "heading_error": None if metrics is None else metrics.heading_error,
            "instruction": self.spec_scene.instruction,
            "scenario": self.spec_scene.scenario,
            "distance": self.spec_scene.distance,
            "family": self.spec_scene.family,
            "steps": self._steps,
            "sim_time": self._sim_time,
            "key": key,
            "action": np.asarray(action, dtype=np.float32),
            "state": self._state(),
            # Commanded (cruise) wheel speeds of this step, rad/s: the robot is at rest again after a press.
            "wheel_speeds": wheel_speeds(self.robot, float(cmd_v[0]), float(cmd_v[1]), cmd_wz),
        }
