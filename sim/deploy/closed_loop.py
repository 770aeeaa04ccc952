"""Closed-loop parity of an exported artifact: the original and the exported policy on the same seeds
(``python -m sim.export --verify``), through the evaluation core (:func:`sim.evaluation.evaluate`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foundations.files import atomic_write_json
from sim.evaluation import Episode, EvalConfig, evaluate
from sim.evaluation.config import EnvSettings, Latency, OutputSettings, Sweep, policy_spec
from sim.evaluation.runner import episode_seed

#: Largest per-combo success difference (episodes) for a PASS.
ALLOWED_COMBO_DIFFERENCE = 1


def action_difference_in_loop(reference: Any, exported: Any, layouts: Sequence[str], distances: Sequence[str],
                              seed: int = 0, family: str = "cup") -> dict[str, float]:
    """Per-step action difference on the same observations: ``reference`` drives one episode per layout x
    distance of scenario ``family``, ``exported`` is queried on every observation it sees. Returns max / mean abs difference (label
    units), the share of steps whose key differs, and the largest difference of driving heading (degrees, over
    steps where both translate): the robot drives along ``atan2(linear_y, linear_x)`` itself, not the snapped key,
    so a heading difference well under the 45 degrees between keys still moves the trajectory."""
    import gymnasium as gym

    from envs import ENV_ID
    from envs.keys import DEAD_ZONE, action_to_key, apply_dead_zone

    def heading(action: np.ndarray) -> float | None:
        x, y = apply_dead_zone(action[:2], DEAD_ZONE)
        return math.degrees(math.atan2(y, x)) if (x or y) else None

    def both(obs: dict[str, Any]) -> np.ndarray:
        nonlocal key_changes
        a, b = reference.act(obs), exported.act(obs)
        diffs.append(float(np.max(np.abs(a - b))))
        key_changes += action_to_key(a) != action_to_key(b)
        ha, hb = heading(a), heading(b)
        if ha is not None and hb is not None:
            heading_diffs.append(abs((ha - hb + 180.0) % 360.0 - 180.0))
        return a

    env = gym.make(ENV_ID, family=family)
    diffs: list[float] = []
    key_changes, heading_diffs = 0, [0.0]
    try:
        for layout in layouts:
            for distance in distances:
                episode = Episode(env, episode_seed(seed, layout, distance, 0),
                                  {"scenario": layout, "distance": distance})
                reference.reset(episode.instruction, episode.reset_info)
                exported.reset(episode.instruction, episode.reset_info)
                for _ in episode.run(both):
                    pass
    finally:
        env.close()
    return {"steps": len(diffs), "max_abs_diff": max(diffs), "mean_abs_diff": float(np.mean(diffs)),
            "key_mismatch_rate": key_changes / len(diffs), "max_heading_diff_deg": max(heading_diffs)}


def verify_closed_loop(policy: str, model_path: str | Path, out: str | Path, *, latency_ms: float,
                       episodes: int = 4, seed: int = 0, layouts: Sequence[str], distances: Sequence[str],
                       family: str = "cup", model_source: Mapping[str, Any] | None = None, policy_args: Mapping[str, Any] | None = None,
                       threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``policy`` and ``onnx:model_path`` on the same seeds of scenario ``family`` in ``out/verify`` (resumed if it is there),
    compare success per layout x distance, measure the per-step action difference, and write
    ``out/verify.json``; returns that report (``verdict`` ``"PASS"`` when no combo differs by more than
    :data:`ALLOWED_COMBO_DIFFERENCE` episode).

    Both policies run with the same fixed ``latency_ms`` in the loop: each one's own measured latency would make
    the comparison depend on the machine's load, and a difference in the outcome would then be timing noise
    rather than the artifact.

    ``model_source`` and ``policy_args`` rebuild the original policy as it was exported.

    Raises:
        ConfigError: invalid layouts, distances or latency (named).
    """
    from policies import make_policy

    exported_name = f"onnx:{model_path}"
    run = Path(out) / "verify"
    resume = (run / "episodes.jsonl").exists()
    if resume:
        cfg = EvalConfig.load(run)  # a resumed run keeps the settings it started with
    else:
        cfg = EvalConfig(
            policies=[policy_spec(policy, model_source=model_source, policy_args={"*": dict(policy_args or {})}),
                      policy_spec(exported_name)],
            env=EnvSettings(family=family, latency=Latency(seconds=latency_ms / 1e3)),
            sweep=Sweep(layouts=layouts, distances=distances, episodes_per_combo=episodes, seed=seed),
            output=OutputSettings(out=run, record="none"))
    result = evaluate(cfg, workers=1, resume=resume, progress=progress)
    original, exported = (result.summary["policies"][p.name] for p in cfg.policies)
    combos = {combo: (original["per_combo"][combo]["successes"], exported["per_combo"][combo]["successes"])
              for combo in sorted(original["per_combo"])}
    worst = max((abs(a - b) for a, b in combos.values()), default=0)
    kwargs = {**(model_source or {}), **(policy_args or {}), "num_threads": threads or 1}
    diff = action_difference_in_loop(make_policy(policy, **kwargs), make_policy(exported_name),
                                     cfg.sweep.layouts, cfg.sweep.distances, cfg.sweep.seed, cfg.env.family)
    report = {"max_combo_difference": worst,
              "verdict": "PASS" if worst <= ALLOWED_COMBO_DIFFERENCE and not result.errors else "FAIL",
              "latency_ms": round(cfg.env.latency.seconds * 1e3, 1), "episode_errors": result.errors,
              "per_combo": {combo: {"pytorch": a, "onnx": b} for combo, (a, b) in combos.items()},
              "success": {"pytorch": [original["overall"]["successes"], original["overall"]["episodes"]],
                          "onnx": [exported["overall"]["successes"], exported["overall"]["episodes"]]},
              "success_rate": {"pytorch": original["overall"]["success_rate"],
                               "onnx": exported["overall"]["success_rate"]},
              "action_difference": diff}
    atomic_write_json(Path(out) / "verify.json", report)
    return report


def format_verify(report: dict[str, Any]) -> str:
    """The console lines of a :func:`verify_closed_loop` report."""
    lines = [f"\n{'layout/distance':28} {'pytorch':>9} {'onnx':>9}"]
    lines += [f"{combo:28} {v['pytorch']:>9} {v['onnx']:>9}" for combo, v in report["per_combo"].items()]
    rate = report["success_rate"]
    lines.append(f"{'overall success':28} {rate['pytorch']:>9.0%} {rate['onnx']:>9.0%}")
    diff = report["action_difference"]
    lines.append(f"per-step action difference on the same observations ({diff['steps']} steps): max "
                 f"{diff['max_abs_diff']:.2e}, mean {diff['mean_abs_diff']:.2e}, different key in "
                 f"{diff['key_mismatch_rate']:.1%} of steps, heading up to {diff['max_heading_diff_deg']:.2f} deg apart")
    lines.append(f"closed-loop parity {report['verdict']}: largest per-combo success difference "
                 f"{report['max_combo_difference']} episode(s) (allowed {ALLOWED_COMBO_DIFFERENCE}), "
                 f"{report['latency_ms']:.1f} ms latency in the loop"
                 + (f", {report['episode_errors']} episode(s) ended in an error" if report["episode_errors"] else ""))
    return "\n".join(lines)
