"""The team's own "closed loop" beside ours, on the same corridor episodes (``sim.offline`` on V6 files).

**Their replay** (MoNaVLA ``scripts/sim/rollout_core.py``, ``scripts/sim/evaluate_closed_loop_v5.py``; EdgeGroundVLA
``scripts/sim/evaluate_closed_loop_exp73.py``): the policy runs on every recorded frame, teacher-forced (its actions
never change what it sees); its classes and the recorded (expert) classes are each integrated with their 2-D motion
model (``x += (lx cos th - ly sin th) dt``, ``y += (lx sin th + ly cos th) dt``, ``th += az dt``, ``dt`` 0.1 s, the
class velocities ``ACTION_VEL``: 1.15 and 0.25 in their units), and an episode succeeds when the final position error
to the expert's end point is under 0.5 and the path-length ratio within [0.7, 1.5] (``compute_metrics``). They write
that these figures cannot be compared with the robot's.

**Ours**: the same policy driving the same episode's scene (its ``sim_params``: the basket where it stood, the same
start) in the simulator, closed loop, at the robot's cadence (``deployed`` unless told otherwise) with the policy's
latencies: success as the environment defines it (stopped 0.40-0.50 m before the basket, facing it).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.actions import CLASS_ACTIONS, CLASS_NAMES, action_class
from foundations.errors import ConfigError
from foundations.files import atomic_write_json, json_text
from scenarios.spec import SceneSpec
from sim.data import h5format

#: Their frame time (``DT_DEFAULT``, s) and success thresholds (``success_fpe``; the TLD window).
DT = 0.1
SUCCESS_FPE = 0.5
TLD_RANGE = (0.7, 1.5)


def kinematic_path(classes: Sequence[str], dt: float = DT) -> np.ndarray:
    """Their ``build_trajectory``: ``(len(classes) + 1, 3)`` poses ``(x, y, theta)`` from ``(0, 0, 0)``, each class
    held ``dt`` at its ``ACTION_VEL`` (:data:`envs.actions.CLASS_ACTIONS`: the same numbers)."""
    poses = np.zeros((len(classes) + 1, 3))
    for i, name in enumerate(classes):
        lx, ly, az = CLASS_ACTIONS[name]
        x, y, th = poses[i]
        c, s = math.cos(th), math.sin(th)
        poses[i + 1] = (x + (lx * c - ly * s) * dt, y + (lx * s + ly * c) * dt, th + az * dt)
    return poses


def replay_metrics(expert: Sequence[str], predicted: Sequence[str], success_fpe: float = SUCCESS_FPE
                   ) -> dict[str, Any]:
    """Their ``compute_metrics`` of two class sequences: ``fpe`` (the end points' distance), ``tld`` (the
    predicted path's length over the expert's), ``mean_lateral_dev`` (mean distance of the poses of the same index),
    both lengths, and ``success`` (``fpe < success_fpe`` and ``0.7 <= tld <= 1.5``), in their units."""
    e, p = kinematic_path(expert), kinematic_path(predicted)
    e_len = float(np.linalg.norm(np.diff(e[:, :2], axis=0), axis=1).sum())
    p_len = float(np.linalg.norm(np.diff(p[:, :2], axis=0), axis=1).sum())
    fpe = float(np.linalg.norm(p[-1, :2] - e[-1, :2]))
    tld = p_len / max(e_len, 1e-6)
    n = min(len(e), len(p))
    dev = float(np.linalg.norm(p[:n, :2] - e[:n, :2], axis=1).mean()) if n else 0.0
    return {"fpe": round(fpe, 4), "tld": round(tld, 4), "mean_lateral_dev": round(dev, 4),
            "expert_len": round(e_len, 4), "pred_len": round(p_len, 4),
            "success": bool(fpe < success_fpe and TLD_RANGE[0] <= tld <= TLD_RANGE[1])}


def teacher_forced(policy, path: Path, info: h5format.EpisodeInfo) -> list[str]:
    """The policy's class on every recorded frame of a V6 file, in order, as their replay runs it (reset once,
    then ``act`` on each frame; the simulator's robot state of the frame in ``state`` when the file has it, for the
    oracle grounder and the expert)."""
    params = json.loads(info.attrs.get("sim_params", "{}"))
    reset_info = {"episode_seed": int(info.attrs.get("sim_episode_index", 0))}
    if "scene" in params and "control" in params:
        reset_info.update(scene=params["scene"], control=params["control"])
    policy.reset(info.instruction, reset_info)
    states = params.get("states")
    classes = []
    for t, frame in enumerate(h5format.EpisodeFrames(path)):
        state = np.zeros(6, np.float32) if states is None else np.asarray(states[t], np.float32)
        classes.append(action_class(policy.act({"image": frame, "instruction": info.instruction, "state": state})))
    return classes


def closed_loop_on(env, policy, path: Path, info: h5format.EpisodeInfo, latency, expert=None) -> dict[str, Any]:
    """The policy in the episode's own scene (``sim_params``), closed loop: the record's fields of interest;
    ``status`` None for a file that stores no scene (a recording of the robot: no closed-loop twin without one)."""
    from sim.evaluation.worker import run_policy_episode

    params = json.loads(info.attrs.get("sim_params", "{}"))
    if "scene" not in params:
        return {"status": None, "error": "a recording without a stored scene: no closed-loop twin"}
    seed = int(info.attrs.get("sim_episode_index", 0))
    record, _ = run_policy_episode(env, policy, seed, expert=expert, latency=latency,
                                   options={"scene": SceneSpec.from_dict(params["scene"])})
    return {"status": record.status, "steps": record.steps, "sim_time_s": record.sim_time_s,
            "stop_distance_m": record.stop_distance_m, "error": record.error}


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per policy, overall and per position: replay success and closed-loop success (counts and rates)."""
    out: dict[str, Any] = {}
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["policy"], "overall"].append(r)
        groups[r["policy"], r["position"]].append(r)
    for (policy, group), rs in sorted(groups.items()):
        n = len(rs)
        replay = sum(r["replay"]["success"] for r in rs)
        closed = sum(r["closed_loop"]["status"] == "success" for r in rs)
        twins = [r for r in rs if r["closed_loop"]["status"] is not None]
        out.setdefault(policy, {})[group] = {
            "episodes": n, "replay_successes": replay, "closed_loop_episodes": len(twins),
            "closed_loop_successes": closed, "replay_success_rate": replay / n,
            "closed_loop_success_rate": closed / len(twins) if twins else None,
            "agree": (sum(r["replay"]["success"] == (r["closed_loop"]["status"] == "success") for r in twins)
                      / len(twins)) if twins else None,
            "mean_fpe": float(np.mean([r["replay"]["fpe"] for r in rs])),
            "closed_loop_statuses": dict(sorted(Counter(r["closed_loop"]["status"] for r in twins).items())),
            "teacher_forced_classes": dict(sorted(Counter(c for r in rs for c in r["classes"]).items(),
                                                  key=lambda kv: CLASS_NAMES.index(kv[0]))),
        }
    return out


def to_markdown(summary: Mapping[str, Any], cadence: str) -> str:
    """``summary.md``: per policy and position, their replay success beside closed-loop success."""
    lines = ["# The team's replay beside closed loop, on the same corridor episodes", "",
             f"Replay: teacher-forced on the recorded frames, their kinematic model (FPE < {SUCCESS_FPE}, TLD in "
             f"[{TLD_RANGE[0]}, {TLD_RANGE[1]}]). Closed loop: the same scenes in the simulator, cadence {cadence}.", "",
             "| policy | position | episodes | replay success | closed-loop success | agree | closed-loop outcomes |",
             "|---|---|---|---|---|---|---|"]
    for policy, groups in summary.items():
        for group, g in sorted(groups.items(), key=lambda kv: (kv[0] != "overall", kv[0])):
            twins = g["closed_loop_episodes"]
            closed = (f"{g['closed_loop_successes']}/{twins} = {100 * g['closed_loop_success_rate']:.0f}%" if twins
                      else "- (recordings: no scene)")
            agree = f"{100 * g['agree']:.0f}%" if twins else "-"
            lines.append(f"| {policy} | {group} | {g['episodes']} | {g['replay_successes']}/{g['episodes']} = "
                         f"{100 * g['replay_success_rate']:.0f}% | {closed} | {agree} | "
                         + ", ".join(f"{k} {v}" for k, v in g["closed_loop_statuses"].items()) + " |")
    return "\n".join(lines) + "\n"


def evaluate_replay(policies: Mapping[str, Any], files: Sequence[Path], out: Path, *, cadence: str | None = None,
                    image_size: tuple[int, int] = (224, 224), progress: bool = True) -> dict[str, Any]:
    """Their replay and our closed loop for every policy on every V6 file; writes ``replay.jsonl`` (one line per
    policy x episode: the classes, their metrics, the closed-loop outcome), ``summary.json`` and ``summary.md`` into
    ``out``; returns the summary (:func:`summarize` plus the settings).

    A recording of the robot (no stored scene) gets their replay only: its closed-loop column is empty.

    Raises:
        ConfigError: a policy that needs the simulator's truth (the expert, the oracle grounder) on a recording.
    """
    import gymnasium as gym
    from tqdm import tqdm

    from envs import CORRIDOR_ENV_ID
    from foundations.files import atomic_write_text
    from sim.evaluation.config import EnvSettings

    settings = EnvSettings(family="corridor", cadence=cadence, image_size=image_size)
    env = gym.make(CORRIDOR_ENV_ID, image_size=tuple(settings.image_size), cadence=settings.cadence)
    rows = []
    try:
        for path in tqdm(list(files), desc="episodes", unit="ep", disable=not progress):
            info = h5format.read_info(path)
            actions, _ = h5format.read_actions(path)
            expert = [action_class(a) for a in actions]
            for name, policy in policies.items():
                try:
                    predicted = teacher_forced(policy, path, info)
                except (KeyError, ValueError) as exc:  # a policy that reads the simulator's truth, on a recording
                    raise ConfigError(f"{path}: {name} cannot replay it: {exc} (a recording has no scene: the "
                                      "oracle grounder and the expert need one; give a real grounder, "
                                      "--policy-arg grounder=owlv2 --policy-arg grounder_path=DIR)") from None
                rows.append({"policy": name, "episode": path.stem, "position": info.layout, "path": info.distance,
                             "classes": predicted, "expert_classes": expert,
                             "replay": replay_metrics(expert, predicted),
                             "closed_loop": closed_loop_on(env, policy, path, info, settings.latency)})
    finally:
        env.close()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "replay.jsonl", "".join(json_text(r) + "\n" for r in rows))
    summary = {"cadence": settings.cadence.to_dict(), "episodes": len(files), "policies": summarize(rows)}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", to_markdown(summary["policies"], str(settings.cadence)))
    return summary
