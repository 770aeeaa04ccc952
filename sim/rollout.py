"""One closed-loop episode: a policy drives the environment while the expert labels every visited state.

:func:`run_episode` is what evaluation, export verification and benchmarks share. It never raises for a policy's
fault: an exception, a NaN/inf or a wrongly shaped action ends the episode with status ``"error"``.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.keys import key_to_action
from policies.base import Policy
from policies.expert import ExpertPolicy
from sim.metrics import spl


@dataclass
class EpisodeResult:
    """Outcome of one episode (units: m, ms, s).

    ``record`` is the JSON-serialisable line written to ``episodes.jsonl``; ``frames`` (onboard images, uint8
    RGB) and ``poses`` (x, y, yaw after each step, starting with the reset pose) are kept only when asked for,
    to draw videos.
    """

    record: dict[str, Any]
    frames: list[np.ndarray] = field(default_factory=list)
    poses: list[tuple[float, float, float]] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)


def _scene_summary(scene: dict[str, Any]) -> dict[str, Any]:
    return {
        "obstacles": [{"center": b["center"][:2], "size": b["size"][:2]} for b in scene["obstacles"]],
        "goal": list(scene["goal"]),
        "target": list(scene["target_position"]),
        "start": list(scene["start"]),
        "arena": list(scene["arena"]),
        "side": scene["side"],
    }


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_episode(
    env,
    policy: Policy,
    seed: int,
    *,
    expert: ExpertPolicy | None = None,
    latency: float | str = 0.0,
    keep_frames: bool = False,
    options: dict[str, Any] | None = None,
) -> EpisodeResult:
    """Run ``policy`` for one episode of ``env`` reset with ``seed``.

    Args:
        env: a ``MobileVLA/BoxAvoid-v0`` environment whose observations include ``"state"``.
        policy: the policy under test; ``reset(instruction, info)`` gets the reset info plus ``episode_seed``.
        seed: episode seed.
        expert: shadows the policy: its action at every visited state is the label for the offline metrics, and
            its plan from the start pose is the shortest path for SPL. None skips both.
        latency: seconds of simulated policy latency, or ``"measured"`` to apply each action as late as the
            policy actually took to compute it (wall clock on this machine).
        keep_frames: keep onboard frames, poses and actions for a video.
        options: ``env.reset`` options (e.g. ``{"scenario": ..., "distance": ...}`` to switch layout).

    Returns:
        :class:`EpisodeResult`; ``record`` holds status, steps, path length, SPL, final distance to goal, passed
        side, side compliance, latency p50/p95, the predicted and expert ``[linear_x, linear_y]`` per step
        (clamped to [-1, 1] like the training labels), the path and a summary of the scene.
    """
    base = env.unwrapped
    obs, info = env.reset(seed=seed, options=options)
    scene = info["scene"]
    pose = tuple(float(v) for v in info["state"][:3])
    result = EpisodeResult(record={})
    if keep_frames:
        result.poses.append(pose)
        if "image" in obs:
            result.frames.append(obs["image"])
    shortest = math.nan
    if expert is not None:
        expert.reset(info["instruction"], info)
        plan = expert.plan(pose[:2], pose[2])
        shortest = len(plan) * expert.step_length if plan is not None else math.nan
    if latency != "measured":
        base.set_action_latency(float(latency))

    status, error, steps = None, None, 0
    pred_xy: list[list[float]] = []
    expert_xy: list[list[float]] = []
    path = [[round(pose[0], 4), round(pose[1], 4)]]
    try:
        policy.reset(info["instruction"], {**info, "episode_seed": seed})
    except Exception as exc:  # noqa: BLE001 - a policy's failure is an episode outcome, not a crash
        status, error = "error", f"reset: {type(exc).__name__}: {exc}"
    while status is None:
        try:
            action = policy.act(obs)
        except Exception as exc:  # noqa: BLE001
            status, error = "error", f"step {steps}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
            break
        if expert is not None:
            x, y, yaw = (float(v) for v in obs["state"][:3])
            label = key_to_action(expert.next_key(x, y, yaw))
            expert_xy.append(np.clip(label[:2], -1, 1).round(4).tolist())
            pred_xy.append(np.clip(action[:2], -1, 1).round(4).tolist())
        if latency == "measured":
            base.set_action_latency(min(10.0, policy.latencies_ms[-1] / 1e3))
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        state = info["state"]
        path.append([round(float(state[0]), 4), round(float(state[1]), 4)])
        if keep_frames:
            result.poses.append(tuple(float(v) for v in state[:3]))
            result.actions.append(action)
            if "image" in obs:
                result.frames.append(obs["image"])
        if terminated or truncated:
            status = info["status"]

    latencies = list(policy.latencies_ms)
    success = status == "success"
    result.record = {
        "layout": scene["scenario"],
        "distance": scene["distance"],
        "seed": int(seed),
        "instruction": scene["instruction"],
        "status": status,
        "success": success,
        "steps": steps,
        "sim_time_s": round(float(info.get("sim_time", 0.0)), 3),
        "path_length_m": round(float(info["path_length"]), 4),
        "shortest_path_m": None if math.isnan(shortest) else round(shortest, 4),
        "spl": round(spl(success, shortest, float(info["path_length"])), 4) if not math.isnan(shortest) else None,
        "final_distance_m": round(float(info["distance_to_goal"]), 4),
        "passed_side": info["passed_side"],
        "side_ok": info["side_ok"],
        "latency_p50_ms": _percentile(latencies, 50),
        "latency_p95_ms": _percentile(latencies, 95),
        "latency_applied": latency,
        "error": error,
        "pred_xy": pred_xy,
        "expert_xy": expert_xy,
        "path": path,
        "scene": _scene_summary(scene),
    }
    return result
