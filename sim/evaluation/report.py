"""Summaries of an evaluation run: ``summary.json``, ``summary.md``, trajectory plots and the console table."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import scenarios
from foundations.files import atomic_write, atomic_write_json, atomic_write_text
from scenarios.corridor import v5_path_type
from sim.evaluation.benchmark import episode_results, policy_failures, team_metrics, top_failures
from sim.evaluation.config import EvalConfig
from sim.evaluation.episode import STATUSES
from sim.evaluation.metrics import mmrv, offline_metrics, pearson, wilson_interval

OUTCOME_COLOURS = {"success": "tab:green", "collision": "tab:red", "timeout": "tab:orange",
                   "out_of_bounds": "tab:purple", "overshoot": "tab:brown", "error": "tab:gray"}


def axes(config: dict[str, Any] | EvalConfig) -> tuple[str, str]:
    """The names of a run's two axes (``("layout", "distance")``, the corridor's ``("position", "path")``)."""
    family = config.env.family if isinstance(config, EvalConfig) else config["env"]["family"]
    return scenarios.axis_names(family)


def combo_label(combo: str, family: str) -> str:
    """``"layout/distance"`` as the report shows it: a V5 corridor combo gets its V5 path-type name
    (``v5_left/right_curve (left_right)``)."""
    position, path = combo.split("/")
    v5 = v5_path_type(position, path) if family == "corridor" else None
    return f"{combo} ({v5})" if v5 else combo


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def group_stats(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Success rate with a 95 % Wilson interval, outcome rates, SPL, side compliance and latency of a group.

    Side compliance = share of episodes that passed every box they reached on the instructed side, among the
    ``side_compliance_n`` episodes that reached at least one box.
    """
    n = len(records)
    k = sum(r["status"] == "success" for r in records)
    lo, hi = wilson_interval(k, n)
    sided = [r for r in records if r.get("side_ok") is not None]
    out = {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else None,
        "success_ci95": [lo, hi],
        **{f"{s}_rate": (sum(r["status"] == s for r in records) / n if n else None) for s in STATUSES[1:]},
        "spl": _mean([r.get("spl") for r in records]),
        "side_compliance": (sum(bool(r["side_ok"]) for r in sided) / len(sided)) if sided else None,
        "side_compliance_n": len(sided),
        "success_on_instructed_side": (sum(r["status"] == "success" and r.get("side_ok") is True for r in records) / n) if n else None,
        "mean_steps": _mean([r["steps"] for r in records]),
        "mean_path_length_m": _mean([r["path_length_m"] for r in records]),
        "latency_p50_ms": _mean([r.get("latency_p50_ms") for r in records]),
        "latency_p95_ms": _mean([r.get("latency_p95_ms") for r in records]),
    }
    return out


def summarize(records: Sequence[dict[str, Any]], config: EvalConfig, real_results: dict[str, float] | None = None,
              provenance: dict[str, dict[str, Any]] | None = None,
              results: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything ``summary.json`` holds: the config, per policy overall and per layout x distance statistics,
    offline metrics against the expert's labels, the failure taxonomy's counts and the team's closed-loop metrics
    (:mod:`sim.evaluation.benchmark`), provenance (backbone, weights) and (with real results) sim-vs-real Pearson r
    and MMRV. ``records`` are :meth:`EpisodeRecord.to_json` dicts; ``results`` their
    :func:`~sim.evaluation.benchmark.episode_results` (computed when None)."""
    by_policy: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_policy[r["policy"]].append(r)
    results_by_policy: dict[str, list[dict]] = defaultdict(list)
    for r in episode_results(records) if results is None else results:
        results_by_policy[r["policy"]].append(r)
    policies: dict[str, Any] = {}
    for name in config.policy_names:
        recs = by_policy.get(name, [])
        res = results_by_policy.get(name, [])
        combos: dict[str, list[dict]] = defaultdict(list)
        for r in recs:
            combos[f"{r['layout']}/{r['distance']}"].append(r)
        pred = [xy for r in recs for xy in r.get("pred_xy", [])]
        tgt = [xy for r in recs for xy in r.get("expert_xy", [])]
        policies[name] = {
            "overall": group_stats(recs),
            "per_combo": {key: group_stats(combos[key]) for key in sorted(combos)},
            "offline_metrics": offline_metrics(np.asarray(pred, float).reshape(-1, 2), np.asarray(tgt, float).reshape(-1, 2)),
            "failures": policy_failures(res),
            "team_metrics": team_metrics(res),
            "errors": [f"{r['layout']}/{r['distance']}/seed {r['seed']}: {(r.get('error') or '').splitlines()[0]}" for r in recs if r["status"] == "error"][:20],
            "provenance": (provenance or {}).get(name, {}),
        }
    summary: dict[str, Any] = {"config": config.to_json(), "policies": policies}
    if real_results:
        names = [n for n in config.policy_names if n in real_results and policies[n]["overall"]["success_rate"] is not None]
        sim = [policies[n]["overall"]["success_rate"] for n in names]
        real = [real_results[n] for n in names]
        summary["sim_vs_real"] = {"policies": names, "sim": sim, "real": real,
                                  "pearson_r": pearson(sim, real), "mmrv": mmrv(sim, real) if names else None}
    return summary


def pct(x: float | None) -> str:
    """A rate in [0, 1] as ``"83%"``; ``"-"`` for None or NaN (the tables of every report)."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}%"


def side_text(stats: dict[str, Any]) -> str:
    """Side compliance with its denominator, the episodes that reached a box: ``"100% (3/3)"``; ``"-"``."""
    n = stats.get("side_compliance_n")
    if stats.get("side_compliance") is None or not n:
        return "-"
    return f"{pct(stats['side_compliance'])} ({round(stats['side_compliance'] * n)}/{n})"


def _ci(stats: dict[str, Any]) -> str:
    lo, hi = stats["success_ci95"]
    return f"{pct(stats['success_rate'])} [{100 * lo:.0f}-{100 * hi:.0f}]"


def num(x: float | None, fmt: str = ".2f") -> str:
    """A number in ``fmt``; ``"-"`` for None or NaN."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def to_markdown(summary: dict[str, Any]) -> str:
    """``summary.md``: comparison table, per-combo table, offline metrics, sim-vs-real."""
    cfg, pols = EvalConfig(**summary["config"]), summary["policies"]
    names = list(pols)
    sweep, env = cfg.sweep, cfg.env
    first, second = axes(cfg)
    lines = [f"# Closed-loop evaluation: {', '.join(names)}", ""]
    timing = f", cadence {env.cadence}" if env.cadence is not None else ""
    lines += [f"- {env.family} family: {len(sweep.layouts)} {first}s x {len(sweep.distances)} {second}s x "
              f"{sweep.episodes_per_combo} episodes, seed {sweep.seed}, actuation {env.actuation}{timing}, image "
              f"{env.image_size}, latency {env.latency}"]
    for name in names:
        prov = pols[name]["provenance"]
        if prov:
            lines.append(f"- `{name}`: " + ", ".join(f"{k} = {v}" for k, v in prov.items()))
    lines += ["", "## Overall", "",
              "| policy | success [95% CI] | on instructed side | side compliance | SPL | collision | timeout | out of bounds | overshoot | error | latency p50/p95 ms |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        o = pols[name]["overall"]
        lines.append(f"| {name} | {_ci(o)} | {pct(o['success_on_instructed_side'])} | {side_text(o)} | {num(o['spl'])} | "
                     f"{pct(o['collision_rate'])} | {pct(o['timeout_rate'])} | {pct(o['out_of_bounds_rate'])} | "
                     f"{pct(o.get('overshoot_rate'))} | {pct(o['error_rate'])} | "
                     f"{num(o['latency_p50_ms'], '.1f')} / {num(o['latency_p95_ms'], '.1f')} |")
    lines += ["", "## Why episodes failed (primary label per failed episode: `sim/evaluation/failures.py`)", ""]
    lines += [f"- `{name}`: {top_failures(pols[name]['failures'])}" for name in names]
    lines += ["", "## The team's closed-loop metrics (layer D)", "",
              "| policy | overshoot m | terminal distance m | deviation from expert path mean / max m | recovered | "
              "oscillations |", "|---|---|---|---|---|---|"]
    for name in names:
        t = pols[name]["team_metrics"]
        lines.append(f"| {name} | {num(t['overshoot_m'])} | {num(t['terminal_distance_m'])} | "
                     f"{num(t['deviation_mean_m'])} / {num(t['deviation_max_m'])} (worst {num(t['deviation_worst_m'])}) | "
                     f"{t['recovered']}/{t['deviated']} | {num(t['oscillations'], '.1f')} |")
    lines += ["", "## Offline metrics on the same rollouts (against the expert's action at every visited state)", "",
              "| policy | steps | MAE | RMSE | acc 0.3 | acc 0.2 | acc 0.15 | R2 x / y | corr x / y | direction x / y |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        m = pols[name]["offline_metrics"]
        lines.append(f"| {name} | {m['n']} | {num(m['mae'], '.3f')} | {num(m['rmse'], '.3f')} | {num(m['accuracy_0.3'], '.1f')}% | "
                     f"{num(m['accuracy_0.2'], '.1f')}% | {num(m['accuracy_0.15'], '.1f')}% | {num(m['linear_x_r2'])} / {num(m['linear_y_r2'])} | "
                     f"{num(m['linear_x_correlation'])} / {num(m['linear_y_correlation'])} | "
                     f"{num(m['linear_x_direction_accuracy'], '.0f')}% / {num(m['linear_y_direction_accuracy'], '.0f')}% |")
    lines += ["", f"## Per {first} x {second}: success [95% CI] / SPL / side compliance", "",
              f"| {first} | {second} | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    combos = sorted({c for n in names for c in pols[n]["per_combo"]})
    for combo in combos:
        layout, distance = combo_label(combo, env.family).split("/", 1)
        cells = []
        for name in names:
            s = pols[name]["per_combo"].get(combo)
            cells.append("-" if s is None else f"{_ci(s)} / {num(s['spl'])} / {pct(s['side_compliance'])}")
        lines.append(f"| {layout} | {distance} | " + " | ".join(cells) + " |")
    if "sim_vs_real" in summary:
        svr = summary["sim_vs_real"]
        lines += ["", "## Sim vs real", "", "| policy | sim | real |", "|---|---|---|"]
        lines += [f"| {n} | {pct(s)} | {pct(r)} |" for n, s, r in zip(svr["policies"], svr["sim"], svr["real"])]
        lines += ["", f"Pearson r = {num(svr['pearson_r'], '.3f')}, MMRV = {num(svr['mmrv'], '.3f')} (0 = same ranking)"]
    errors = [e for n in names for e in pols[n]["errors"]]
    if errors:
        lines += ["", "## Errors (first lines)", ""] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def console_table(summary: dict[str, Any]) -> str:
    """The one-screen summary printed at the end of a run."""
    pols = summary["policies"]
    names = list(pols)
    family = summary["config"]["env"]["family"]
    width = max(16, *(len(n) for n in names))
    combos = sorted({c for n in names for c in pols[n]["per_combo"]})
    head = f"{'/'.join(axes(summary['config'])):36}" + "".join(f"{n[:width]:>{width + 2}}" for n in names)
    rows = [head, "-" * len(head)]
    for combo in combos:
        cells = []
        for n in names:
            s = pols[n]["per_combo"].get(combo)
            cells.append("-" if s is None else f"{s['successes']}/{s['episodes']} {pct(s['success_rate'])}")
        rows.append(f"{combo_label(combo, family):36}" + "".join(f"{c:>{width + 2}}" for c in cells))
    rows.append("-" * len(head))
    def row(label: str, cell) -> str:
        return f"{label:36}" + "".join(f"{cell(pols[n]):>{width + 2}}" for n in names)

    rows.append(row("success [95% CI]", lambda p: _ci(p["overall"])))
    if family != "corridor":  # the corridor has no side to keep
        rows.append(row("side compliance (of reached)", lambda p: side_text(p["overall"])))
    rows.append(row("SPL", lambda p: num(p["overall"]["spl"])))
    if family == "corridor":
        rows.append(row("collision / overshoot / timeout", lambda p: " / ".join(
            pct(p["overall"][f"{s}_rate"]) for s in ("collision", "overshoot", "timeout"))))
    else:
        rows.append(row("collision / timeout", lambda p: " / ".join(
            pct(p["overall"][f"{s}_rate"]) for s in ("collision", "timeout"))))
    rows.append(row("offline MAE vs expert", lambda p: num(p["offline_metrics"]["mae"], ".3f")))
    rows.append(row("latency p50 ms", lambda p: num(p["overall"]["latency_p50_ms"], ".1f")))
    rows += [f"{n} failures: {top_failures(pols[n]['failures'])}" for n in names if "failures" in pols[n]]
    if "sim_vs_real" in summary:
        svr = summary["sim_vs_real"]
        rows.append(f"sim vs real: Pearson r {num(svr['pearson_r'], '.3f')}, MMRV {num(svr['mmrv'], '.3f')}")
    return "\n".join(rows)


def plot_trajectories(records: Sequence[dict[str, Any]], out_dir: Path, policies: Sequence[str]) -> list[Path]:
    """One ``trajectories_<layout>_<distance>.png`` per combo: a panel per policy, paths coloured by outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["layout"], r["distance"])].append(r)
    written = []
    for (layout, distance), recs in sorted(groups.items()):
        fig, axes = plt.subplots(1, len(policies), figsize=(5.2 * len(policies), 3.2), squeeze=False)
        for ax, name in zip(axes[0], policies):
            for r in (r for r in recs if r["policy"] == name):
                sc = r["scene"]
                for ob in sc["obstacles"]:
                    (cx, cy), (sx, sy) = ob["center"], ob["size"]
                    ax.add_patch(Rectangle((cx - sx / 2, cy - sy / 2), sx, sy, color="saddlebrown", alpha=0.25, lw=0))
                if "stop_band" in sc:  # the corridor: walls, the basket and the band its front must stop in
                    for w in sc["walls"]:
                        (cx, cy), (sx, sy) = w["center"], w["size"]
                        ax.add_patch(Rectangle((cx - sx / 2, cy - sy / 2), sx, sy, color="0.6", lw=0))
                    (tx, ty), (hx, hy), (lo, hi) = sc["target"], sc["target_half"], sc["stop_band"]
                    ax.add_patch(Rectangle((tx - hx, ty - hy), 2 * hx, 2 * hy, color="slategray", alpha=0.5, lw=0))
                    ax.add_patch(Rectangle((tx - hx - hi, ty - hy), hi - lo, 2 * hy, color="tab:green", alpha=0.12,
                                           lw=0))
                else:
                    ax.add_patch(Circle(sc["goal"], 0.3, fill=False, ls="--", color="gray", lw=0.6))
                    ax.plot(*sc["target"], "o", color="crimson", ms=4)
                xy = np.asarray(r["path"])
                ax.plot(xy[:, 0], xy[:, 1], "-", color=OUTCOME_COLOURS.get(r["status"], "k"), lw=1.2, alpha=0.85)
                ax.plot(xy[-1, 0], xy[-1, 1], "o", color=OUTCOME_COLOURS.get(r["status"], "k"), ms=3)
            arena = recs[0]["scene"]["arena"]
            walls = recs[0]["scene"].get("walls") or []
            ax.set_xlim(arena[0], arena[1])
            ax.set_ylim(min([arena[2]] + [w["center"][1] - w["size"][1] / 2 for w in walls]),
                        max([arena[3]] + [w["center"][1] + w["size"][1] / 2 for w in walls]))
            ax.set_aspect("equal")
            ax.set_title(f"{name}: {layout} {distance}", fontsize=9)
            ax.set_xlabel("x (m)")
            ax.set_ylabel("y (m, left)")
        handles = [plt.Line2D([], [], color=c, label=s) for s, c in OUTCOME_COLOURS.items()]
        fig.legend(handles=handles, loc="lower center", ncol=3 if len(policies) == 1 else 6, fontsize=7,
                   frameon=False)
        fig.subplots_adjust(left=0.08 / len(policies), right=1 - 0.02 / len(policies), bottom=0.24, top=0.9,
                            wspace=0.25)  # fixed margins: tight_layout took 40% of the plotting time
        path = out_dir / f"trajectories_{layout}_{distance}.png"
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=100, pil_kwargs={"compress_level": 1})
        plt.close(fig)
        written.append(path)
    return written


def write_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    """``summary.json`` and ``summary.md`` (atomic)."""
    atomic_write_json(out_dir / "summary.json", summary, default=float)
    atomic_write_text(out_dir / "summary.md", to_markdown(summary))
