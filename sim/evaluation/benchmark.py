"""The team's benchmark files in every run folder (MoNaVLA ``docs/BENCHMARK_PIPELINE_DESIGN.md``, layer D outputs;
``../shared/reference/TEAM_STACK_2026.md`` section 4), derived from ``episodes.jsonl`` and ``summary.json``:

- ``episode_results.jsonl``: one line per episode: its identity, outcome, failure labels (:mod:`.failures`) and the
  team's metrics;
- ``failure_summary.json``: per policy, counts and shares of the primary failure labels, overall and per
  layout/distance (the corridor: position/path), the secondary labels, and the taxonomy's thresholds;
- ``metrics.json``: per policy, success (95 % Wilson CI), SPL, outcome rates and the team's closed-loop metrics;
- ``leaderboard_row.json``: one row per policy for :mod:`sim.leaderboard`.

Every field is documented in the README ("The team's benchmark files").
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foundations.files import atomic_write_text, json_text
from sim.evaluation.failures import CATEGORIES, CAUSES, classify, thresholds_json

#: Version of the four files' layout (bumped on an incompatible change).
SCHEMA_VERSION = 1
#: The per-episode identity fields copied into ``episode_results.jsonl``.
_IDENTITY = ("policy", "episode", "layout", "distance", "seed", "status", "success", "steps", "sim_time_s",
             "path_length_m", "spl", "side_ok", "collided_with", "stop_distance_m", "video")
#: The team's metrics averaged per policy (``metrics.json``).
TEAM_METRICS = ("overshoot_m", "terminal_distance_m", "deviation_mean_m", "deviation_max_m", "oscillations")


def episode_results(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ``episode_results.jsonl`` line per ``episodes.jsonl`` record (same order): identity and outcome,
    ``failure`` (the primary label, None for a success), ``failure_labels``, ``categories`` and the team's metrics
    (:func:`~sim.evaluation.failures.classify`)."""
    out = []
    for record in records:
        result = classify(record)
        out.append({**{k: record.get(k) for k in _IDENTITY}, "failure": result.primary,
                    "failure_labels": result.labels, "categories": result.categories, **result.metrics})
    return out


def failure_counts(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The failures of a group of episodes: ``episodes``, ``failed``, ``primary`` (label -> count, most frequent
    first), ``primary_share`` (label -> share of the failed episodes), ``labels`` (every label that applied ->
    count) and ``unknown`` (category -> failed episodes where it could not be decided)."""
    failed = [r for r in results if r["failure"] is not None]
    primary = Counter(r["failure"] for r in failed)
    return {
        "episodes": len(results),
        "failed": len(failed),
        "primary": dict(primary.most_common()),
        "primary_share": {k: round(v / len(failed), 4) for k, v in primary.most_common()},
        "labels": dict(Counter(label for r in failed for label in r["failure_labels"]).most_common()),
        "unknown": {c: n for c in CATEGORIES if (n := sum(r["categories"].get(c) == "unknown" for r in failed))},
    }


def team_metrics(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The team's layer-D metrics of a group: the mean of each per-episode metric (``overshoot_m`` ...,
    ``*_n``: the episodes it was measured on), the worst ``deviation_max_m``, and the recovery rate among the
    episodes that left the expert's path (``recovery_rate`` = ``recovered`` / ``deviated``; None if none did)."""
    out: dict[str, Any] = {}
    for name in TEAM_METRICS:
        values = [r[name] for r in results if r.get(name) is not None]
        out[name] = round(float(np.mean(values)), 4) if values else None
        out[f"{name}_n"] = len(values)
    worst = [r["deviation_max_m"] for r in results if r.get("deviation_max_m") is not None]
    out["deviation_worst_m"] = max(worst) if worst else None
    deviated = [r for r in results if r.get("recovered") is not None]
    out["recovered"], out["deviated"] = sum(bool(r["recovered"]) for r in deviated), len(deviated)
    out["recovery_rate"] = round(out["recovered"] / len(deviated), 4) if deviated else None
    return out


def policy_failures(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``summary.json``'s ``failures`` of one policy: :func:`failure_counts` overall, and per combo
    (``"layout/distance"`` -> counts)."""
    combos: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        combos[f"{r['layout']}/{r['distance']}"].append(r)
    return {**failure_counts(results), "per_combo": {c: failure_counts(combos[c]) for c in sorted(combos)}}


def top_failures(failures: dict[str, Any], n: int = 3) -> str:
    """``"forward_collapse 95% (228/240 failed), collision 3% (7/240)"``: the ``n`` most frequent primary labels
    with their share of the failed episodes; ``"none (0 failed)"``."""
    failed = failures["failed"]
    if not failed:
        return f"none (0/{failures['episodes']} failed)"
    return ", ".join(f"{label} {100 * count / failed:.0f}% ({count}/{failed} failed)"
                     for label, count in list(failures["primary"].items())[:n])


def sweep_id(config: dict[str, Any]) -> str:
    """What makes two runs' episodes the same (family, actuation, cadence, layouts, distances, episodes per combo,
    seed) as a short hash: the leaderboard ranks only runs that share it."""
    env, sweep = config["env"], config["sweep"]
    key = {"family": env.get("family"), "actuation": env.get("actuation"), "cadence": env.get("cadence"),
           "layouts": list(sweep["layouts"]), "distances": list(sweep["distances"]),
           "episodes_per_combo": sweep["episodes_per_combo"], "seed": sweep["seed"]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _latency_text(config: dict[str, Any], provenance: dict[str, Any]) -> str:
    components = provenance.get("component latencies (s)")
    applied = config["env"].get("latency") or {}
    if applied.get("measured"):
        return "measured"
    parts = [f"{applied.get('seconds', 0.0):g} s"] if applied.get("seconds") else []
    merged = {**(components or {}), **(applied.get("components") or {})}
    parts += [f"{name} {seconds:g} s" for name, seconds in merged.items()]
    return " + ".join(parts) if parts else "0 s"


def leaderboard_rows(run_dir: Path, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One leaderboard row per policy of a run (``leaderboard_row.json``'s ``rows``)."""
    cfg = summary["config"]
    rows = []
    for name, p in summary["policies"].items():
        o, prov = p["overall"], p.get("provenance") or {}
        top = next(iter(p["failures"]["primary"].items()), None)
        rows.append({
            "run": str(Path(run_dir).resolve()), "policy": name,
            "architecture": prov.get("architecture"), "checkpoint": prov.get("weights"),
            "family": cfg["env"]["family"], "cadence": cfg["env"].get("cadence"), "sweep_id": sweep_id(cfg),
            "sweep": {**cfg["sweep"], "actuation": cfg["env"].get("actuation")},
            "episodes": o["episodes"], "successes": o["successes"], "success_rate": o["success_rate"],
            "success_ci95": o["success_ci95"], "spl": o["spl"],
            "top_failure": top[0] if top else None,
            "top_failure_share": round(top[1] / p["failures"]["failed"], 4) if top else None,
            "latency_p50_ms": o["latency_p50_ms"], "latency_applied": _latency_text(cfg, prov),
        })
    return rows


def write_benchmark_files(run_dir: Path, summary: dict[str, Any], results: Sequence[dict[str, Any]]) -> list[Path]:
    """Write the four files (atomic; valid JSON: a non-finite number is ``null``, :func:`foundations.files.json_text`)
    into ``run_dir``; returns their paths."""
    run_dir = Path(run_dir)
    by_policy: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_policy[r["policy"]].append(r)
    metrics = {"schema_version": SCHEMA_VERSION, "sweep_id": sweep_id(summary["config"]), "policies": {}}
    failures = {"schema_version": SCHEMA_VERSION, "categories": list(CATEGORIES), "causes": list(CAUSES),
                "thresholds": thresholds_json(), "policies": {}}
    for name, p in summary["policies"].items():
        o = p["overall"]
        metrics["policies"][name] = {
            "episodes": o["episodes"], "success_rate": o["success_rate"], "success_ci95": o["success_ci95"],
            "spl": o["spl"], **{k: v for k, v in o.items() if k.endswith("_rate") and k != "success_rate"},
            **p["team_metrics"], "offline_mae": p["offline_metrics"].get("mae"),
            "latency_p50_ms": o["latency_p50_ms"], "latency_p95_ms": o["latency_p95_ms"],
        }
        failures["policies"][name] = p["failures"]
    files = {
        "metrics.json": json_text(metrics, indent=1, default=float) + "\n",
        "failure_summary.json": json_text(failures, indent=1, default=float) + "\n",
        "leaderboard_row.json": json_text({"schema_version": SCHEMA_VERSION, "rows": leaderboard_rows(run_dir, summary)},
                                          indent=1, default=float) + "\n",
        "episode_results.jsonl": "".join(json_text(r, default=float) + "\n" for r in results),
    }
    for file, text in files.items():
        atomic_write_text(run_dir / file, text)
    return [run_dir / f for f in files]
