"""The one episode loop: :class:`Episode` resets an environment, yields a typed :class:`Step` per ``env.step``
and sums the episode up as one typed :class:`EpisodeRecord`.

Every tool that drives ``MobileVLA/BoxAvoid-v0`` uses it (closed-loop evaluation, data generation, export
checks, the RL baseline's check, the preview, the key-guide replay); each supplies only ``act``, the function
from an observation to an action (a policy's ``act``, an expert, recorded keys), and reads what it needs from the
steps. The model: stable-baselines3's ``evaluate_policy`` loop and its typed tuples.

Example::

    episode = Episode(env, seed=3, options={"scenario": "1box_hori_left", "distance": "far"})
    policy.reset(episode.instruction, episode.reset_info)
    for step in episode.run(policy.act):
        ...                                 # step.obs, step.action, step.next_obs, step.info
    record = episode.record(policy="case2")  # EpisodeRecord; record.to_json() is one episodes.jsonl line
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scenarios.spec import target_half_extents

#: Outcomes of an episode: the env's terminal statuses (``overshoot``: the corridor's) plus ``"error"`` (the policy
#: raised or returned a non-finite or wrongly shaped action).
STATUSES = ("success", "collision", "timeout", "out_of_bounds", "overshoot", "error")

Observation = dict[str, Any]
Act = Callable[[Observation], np.ndarray]


@dataclass(frozen=True)
class Step:
    """One ``env.step``: the observation the action answered, the action, and what the env returned.

    Attributes:
        index: 0-based step number in the episode.
        obs: the observation ``act`` was called with (``image`` uint8 (H, W, 3) RGB, ``instruction`` str,
            ``state`` float32 (6,): x, y, yaw, vx, vy, wz in m, rad, m/s, rad/s).
        action: what ``act`` returned, as given to ``env.step`` (float32 (3,): linear_x, linear_y, angular_z).
        next_obs, reward, terminated, truncated, info: ``env.step``'s return (``info`` keys: the env's docstring).
    """

    index: int
    obs: Observation
    action: np.ndarray
    next_obs: Observation
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


@dataclass
class EpisodeRecord:
    """One episode, as a line of ``episodes.jsonl`` (units: m, s, ms).

    The fields up to ``scene`` describe any episode; the evaluation fields (``policy`` ... ``video``) are filled by
    closed-loop evaluation and stay ``None``/empty elsewhere. ``pred_xy``/``expert_xy`` are the policy's and the
    expert's ``[linear_x, linear_y]`` per step, clamped to [-1, 1] like the training labels. ``latency_applied`` is
    the simulated latency in s, ``"measured"`` or ``"components"``; ``latency_steps_s`` each step's when it varies
    (measured, per component). ``stop_distance_m`` / ``heading_error_deg``: the corridor's robot front to the basket
    and heading to its centre at the end. ``expert_keys``: the shadow expert's key (or class) at each visited state,
    in the env's vocabulary (:meth:`envs.box_avoid.BoxAvoidEnv.key_of`); ``expert_path``: the expert's own path from
    the start pose (m); ``detections``: whether the policy's perception found the target at each step (policies
    with a grounder), ``target_in_view``: whether the target was in the robot's camera view at the same steps
    (:class:`envs.camera.TargetView`, the 1280x720 frame). The optional fields (``video``, ``latency_steps_s``, the
    corridor's two, the expert's two, ``detections`` and ``target_in_view``) are left out of the JSON line when
    unset; a record without them (an older run) is still valid.
    """

    layout: str
    distance: str
    seed: int
    instruction: str
    status: str | None
    success: bool
    steps: int
    sim_time_s: float
    path_length_m: float
    final_distance_m: float | None
    passed_side: str | None
    side_ok: bool | None
    collided_with: str | None = None
    keys: list[str] = field(default_factory=list)
    path: list[list[float]] = field(default_factory=list)
    scene: dict[str, Any] | None = None
    policy: str | None = None
    episode: int | None = None
    shortest_path_m: float | None = None
    spl: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_applied: float | str | None = None
    latency_steps_s: list[float] = field(default_factory=list)
    error: str | None = None
    pred_xy: list[list[float]] = field(default_factory=list)
    expert_xy: list[list[float]] = field(default_factory=list)
    video: str | None = None
    stop_distance_m: float | None = None
    heading_error_deg: float | None = None
    expert_keys: list[str] = field(default_factory=list)
    expert_path: list[list[float]] = field(default_factory=list)
    detections: list[bool] = field(default_factory=list)
    target_in_view: list[bool] = field(default_factory=list)

    #: Order of the keys in a JSON line (the evaluation's historical order first).
    _ORDER = ("policy", "episode", "layout", "distance", "seed", "instruction", "status", "success", "steps",
              "sim_time_s", "path_length_m", "shortest_path_m", "spl", "final_distance_m", "passed_side", "side_ok",
              "latency_p50_ms", "latency_p95_ms", "latency_applied", "latency_steps_s", "error", "pred_xy", "expert_xy", "path", "scene",
              "collided_with", "keys", "video", "stop_distance_m", "heading_error_deg", "expert_keys", "expert_path",
              "detections", "target_in_view")
    _OPTIONAL = ("video", "latency_steps_s", "stop_distance_m", "heading_error_deg", "expert_keys", "expert_path",
                 "detections", "target_in_view")

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable dict (the optional fields only when set)."""
        data = dataclasses.asdict(self)
        return {k: data[k] for k in self._ORDER if not (k in self._OPTIONAL and data[k] in (None, []))}

    @classmethod
    def failed(cls, layout: str, distance: str, seed: int, error: str, **fields: Any) -> EpisodeRecord:
        """The record of an episode that could not start (e.g. its policy could not be built): status ``error``."""
        return cls(layout=layout, distance=distance, seed=int(seed), instruction="", status="error", success=False,
                   steps=0, sim_time_s=0.0, path_length_m=0.0, final_distance_m=None, passed_side=None,
                   side_ok=None, error=error, **fields)


def scene_summary(scene: dict[str, Any]) -> dict[str, Any]:
    """What a record keeps of a sampled scene (m): boxes' centres and sizes, goal, target, start, arena, side; the
    corridor's walls, target footprint (half sizes), stop band and the basket's start-frame x-centre when it has
    them."""
    out = {
        "obstacles": [{"center": b["center"][:2], "size": b["size"][:2]} for b in scene["obstacles"]],
        "goal": list(scene["goal"]),
        "target": list(scene["target_position"]),
        "start": list(scene["start"]),
        "arena": list(scene["arena"]),
        "side": scene["side"],
    }
    if scene.get("stop_band") is not None:
        out.update(walls=[{"center": w["center"][:2], "size": w["size"][:2]} for w in scene["walls"]],
                   target_half=list(target_half_extents(scene["target_kind"])[:2]), stop_band=list(scene["stop_band"]),
                   target_image_x=scene["target_image_x"])
    return out


class Episode:
    """One episode of a ``MobileVLA/BoxAvoid-v0`` env: resets it on construction, steps it in :meth:`run`.

    Args:
        env: the environment (any wrapper of :class:`envs.box_avoid.BoxAvoidEnv`).
        seed: the episode seed given to ``env.reset``.
        options: ``env.reset`` options (``{"scenario": ..., "distance": ...}`` switch the layout).
        keep_frames: keep every onboard image (``frames``: the reset image, then one per step) and executed
            action (``actions``) for a video.

    Attributes:
        obs, info: the latest observation and info (after reset, then after each step).
        reset_info: ``env.reset``'s info (``instruction``, ``scene`` ...).
        poses: ``(x, y, yaw)`` after reset and after each step (m, rad).
        states: the robot's full ``info["state"]`` at the same instants (``[x, y, yaw, vx, vy, wz]``: m, rad, m/s,
            rad/s).
        keys: the robot key of each step (``info["key"]``).
        status: None while running, then the env's final ``info["status"]``.
    """

    def __init__(self, env, seed: int, options: dict[str, Any] | None = None, *, keep_frames: bool = False) -> None:
        self.env, self.seed, self.keep_frames = env, int(seed), keep_frames
        self.obs, self.info = env.reset(seed=self.seed, options=options)
        self.reset_info = self.info
        self.poses: list[tuple[float, float, float]] = [tuple(float(v) for v in self.info["state"][:3])]
        self.states: list[list[float]] = [[float(v) for v in self.info["state"]]]
        self.keys: list[str] = []
        self.frames: list[np.ndarray] = [self.obs["image"]] if keep_frames and "image" in self.obs else []
        self.actions: list[np.ndarray] = []
        self.steps = 0
        self.status: str | None = None

    @property
    def instruction(self) -> str:
        """The episode's instruction (``"Navigate around the obstacle on the left side and reach the cup"``)."""
        return self.reset_info["instruction"]

    @property
    def scene(self) -> dict[str, Any]:
        """The sampled scene (:meth:`scenarios.SceneSpec.to_dict`)."""
        return self.reset_info["scene"]

    def run(self, act: Act) -> Iterator[Step]:
        """Call ``act(obs)`` and ``env.step`` until the episode ends, yielding each :class:`Step`.

        The caller may stop early (``break``); an exception from ``act`` or ``env.step`` propagates, with
        :attr:`steps` counting the steps completed.
        """
        while self.status is None:
            obs = self.obs
            action = act(obs)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            self.obs, self.info = next_obs, info
            self.steps += 1
            self.poses.append(tuple(float(v) for v in info["state"][:3]))
            self.states.append([float(v) for v in info["state"]])
            self.keys.append(info["key"])
            if self.keep_frames:
                self.actions.append(action)
                if "image" in next_obs:
                    self.frames.append(next_obs["image"])
            if terminated or truncated:
                self.status = info["status"]
            yield Step(self.steps - 1, obs, action, next_obs, float(reward), bool(terminated), bool(truncated), info)

    def record(self, **fields: Any) -> EpisodeRecord:
        """The :class:`EpisodeRecord` of the episode so far; ``fields`` fill the evaluation fields (``policy``,
        ``spl``, ``error`` ...) and may override ``status``."""
        info, scene = self.info, self.scene
        status = fields.pop("status", self.status)
        return EpisodeRecord(
            layout=scene["scenario"], distance=scene["distance"], seed=self.seed, instruction=scene["instruction"],
            status=status, success=status == "success", steps=self.steps,
            sim_time_s=round(float(info.get("sim_time", 0.0)), 3),
            path_length_m=round(float(info["path_length"]), 4),
            final_distance_m=round(float(info["distance_to_goal"]), 4),
            passed_side=info["passed_side"], side_ok=info["side_ok"], collided_with=info.get("collided_with"),
            keys=list(self.keys), path=[[round(x, 4), round(y, 4)] for x, y, _ in self.poses],
            scene=scene_summary(scene),
            stop_distance_m=None if info.get("stop_distance") is None else round(float(info["stop_distance"]), 4),
            heading_error_deg=None if info.get("heading_error") is None else
            round(math.degrees(float(info["heading_error"])), 2), **fields,
        )
