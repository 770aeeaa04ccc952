"""A self-contained HTML page per run folder (``index.html``): the summary tables, the trajectory plots, the videos
and frames, embedded as data URIs so the page opens offline in any browser, with no server. An evaluation's page
embeds at most a few videos (``OutputSettings.inline_videos``) and links the others by relative path; the offline
page links those beyond :data:`EMBED_BUDGET_BYTES`. Rendered with jinja2 (autoescaped).
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from sim.evaluation.benchmark import top_failures
from sim.evaluation.failures import CATEGORIES, CAUSES, DEFINITIONS, thresholds_json
from sim.evaluation.report import axes, combo_label, num, pct, side_text

#: Bytes of video embedded in one page; further videos are linked (relative paths) instead.
EMBED_BUDGET_BYTES = 40 * 2**20

_TEMPLATE = jinja2.Environment(autoescape=True).from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figcaption { font-size: 0.8em; color: #555; max-width: 640px; }
img, video { max-width: 640px; border: 1px solid #ddd; }
p.note { background: #fff8e0; padding: 0.5em; }
</style></head><body>
<h1>{{ title }}</h1>
{% for line in intro %}<p>{{ line }}</p>{% endfor %}
{% for section in sections %}
<section><h2>{{ section.heading }}</h2>
{% for line in section.text %}<p class="note">{{ line }}</p>{% endfor %}
{% for table in section.tables %}<table><tr>{% for h in table[0] %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in table[1:] %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</table>{% endfor %}
{% for fig in section.figures %}<figure>{% if fig.kind == "video" %}<video controls preload="metadata" src="{{ fig.src }}"></video>
{% elif fig.kind == "link" %}<a href="{{ fig.src }}">{{ fig.caption }}</a>{% else %}<img alt="{{ fig.caption }}" src="{{ fig.src }}">{% endif %}
<figcaption>{{ fig.caption }}</figcaption></figure>{% endfor %}
</section>
{% endfor %}
</body></html>
""")


def num3(value: float | None) -> str:
    """``value`` with three decimals; ``"-"`` for None or NaN (:func:`sim.evaluation.report.num`)."""
    return num(value, ".3f")


@dataclass
class Figure:
    """An embedded image or video (``src`` a data URI), or a relative link."""

    kind: str
    src: str
    caption: str


@dataclass
class Section:
    """One ``<section>`` of the report: a heading, then its notes, tables (header row first, cells as text) and
    figures, in that order."""

    heading: str
    text: list[str] = field(default_factory=list)
    tables: list[list[list[str]]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


class _Embedder:
    """Data URIs for the files of a page, within the video budget."""

    def __init__(self, page_dir: Path) -> None:
        self.page_dir, self.spent = page_dir, 0

    def image(self, path: Path, caption: str) -> Figure:
        mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
        return Figure("image", f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}", caption)

    def video(self, path: Path, caption: str) -> Figure:
        size = path.stat().st_size
        if self.spent + size > EMBED_BUDGET_BYTES:
            return Figure("link", os.path.relpath(path, self.page_dir), caption)
        self.spent += size
        return Figure("video", f"data:video/mp4;base64,{base64.b64encode(path.read_bytes()).decode()}", caption)


def render(title: str, intro: Sequence[str], sections: Sequence[Section]) -> str:
    """The page's HTML text."""
    return _TEMPLATE.render(title=title, intro=list(intro), sections=list(sections))


def _flatten(prefix: str, value: Any) -> list[list[str]]:
    """``[[key, value], ...]`` rows of a nested settings dict (``latency.components.grounder``)."""
    if isinstance(value, dict) and value:
        return [row for k, v in value.items() for row in _flatten(f"{prefix}.{k}" if prefix else str(k), v)]
    return [[prefix, "-" if value in (None, {}, []) else str(value)]]


def pick_videos(results: Sequence[dict[str, Any]], limit: int) -> tuple[list[dict], list[dict]]:
    """Which episodes' videos a run page embeds (at most ``limit``) and which it links: first one failure per
    (policy, primary label), the most frequent labels first; then one success per policy; then the other failures
    and successes in plan order. ``results``: ``episode_results.jsonl`` lines whose video file exists."""
    frequency = Counter((r["policy"], r["failure"]) for r in results if r["failure"])
    order: list[dict] = []
    seen: set = set()
    for policy, label in sorted(frequency, key=lambda k: -frequency[k]):
        first = next(r for r in results if r["policy"] == policy and r["failure"] == label)
        order.append(first)
        seen.add(id(first))
    for policy in dict.fromkeys(r["policy"] for r in results):
        success = next((r for r in results if r["policy"] == policy and r["failure"] is None), None)
        if success is not None:
            order.append(success)
            seen.add(id(success))
    rest = [r for r in results if id(r) not in seen]
    order += [r for r in rest if r["failure"]] + [r for r in rest if not r["failure"]]
    return order[:limit], order[limit:]


def eval_page(out: Path, summary: dict[str, Any], results: Sequence[dict[str, Any]],
              inline_videos: int = 12) -> str:
    """The page of a ``sim.eval`` run folder: why episodes failed (the taxonomy's counts and definitions) at the
    top, the comparison table, the team's metrics, per-combo success and top failure, the settings as a table,
    every trajectory plot (embedded), at most ``inline_videos`` videos embedded (:func:`pick_videos`) and the
    others linked by relative path. ``results``: the run's ``episode_results.jsonl`` lines."""
    embed = _Embedder(out)
    policies = summary["policies"]
    cfg = summary["config"]
    family, (first, second) = cfg["env"]["family"], axes(cfg)
    why = [["policy", "failed", *(f"top {i}" for i in (1, 2, 3))]]
    for name, p in policies.items():
        f = p["failures"]
        top = [f"{label}: {count} ({100 * count / f['failed']:.0f}%)" for label, count in f["primary"].items()][:3]
        why.append([name, f"{f['failed']}/{f['episodes']}", *(top + ["-"] * (3 - len(top)))])
    taxonomy = [["label", "definition", *policies]]
    for label in (*CATEGORIES, *CAUSES):
        taxonomy.append([label, DEFINITIONS.get(label, f"none of the categories applies; the episode ended in {label}"),
                         *(f"{p['failures']['primary'].get(label, 0)} / {p['failures']['labels'].get(label, 0)}"
                           for p in policies.values())])
    overall = [["policy", "success [95% CI]", "SPL", "collision", "timeout", "overshoot", "side compliance (of reached)",
                "offline MAE", "latency p50 ms", "episodes"]]
    for name, p in policies.items():
        o = p["overall"]
        lo, hi = o["success_ci95"]
        overall.append([name, f"{pct(o['success_rate'])} [{100 * lo:.0f}-{100 * hi:.0f}]", num3(o["spl"]),
                        pct(o["collision_rate"]), pct(o["timeout_rate"]), pct(o.get("overshoot_rate")),
                        side_text(o), num3(p["offline_metrics"]["mae"]),
                        num3(o.get("latency_p50_ms")), str(o["episodes"])])
    team = [["policy", "overshoot m", "terminal distance m", "deviation mean / max m", "recovered / deviated",
             "oscillations"]]
    for name, p in policies.items():
        t = p["team_metrics"]
        team.append([name, num3(t["overshoot_m"]), num3(t["terminal_distance_m"]),
                     f"{num3(t['deviation_mean_m'])} / {num3(t['deviation_max_m'])}", f"{t['recovered']}/{t['deviated']}",
                     num(t["oscillations"], ".1f")])
    combos = sorted({c for p in policies.values() for c in p["per_combo"]})

    def combo_cell(p: dict[str, Any], combo: str) -> str:
        if combo not in p["per_combo"]:
            return "-"
        s, f = p["per_combo"][combo], p["failures"]["per_combo"].get(combo, {})
        top = next(iter(f.get("primary", {})), None)
        return f"{s['successes']}/{s['episodes']}" + (f" ({top})" if top else "")

    per_combo = [[f"{first}/{second}", *policies]] + [
        [combo_label(c, family), *(combo_cell(p, c) for p in policies.values())] for c in combos]
    settings = [["setting", "value"], *_flatten("env", cfg["env"]), *_flatten("sweep", cfg["sweep"])]
    for name, p in policies.items():
        settings += [[f"{name}: {k}", str(v)] for k, v in (p.get("provenance") or {}).items()]
    sections = [
        Section("Why episodes failed (primary label per failed episode)", tables=[why]),
        Section("Overall", tables=[overall]),
        Section("The team's closed-loop metrics", tables=[team]),
        Section(f"Per {first} x {second}: successes (top failure)", tables=[per_combo]),
        Section("Failure taxonomy (primary / any label, per policy)", tables=[taxonomy], text=[
            "Thresholds (sim/evaluation/failures.py): " + ", ".join(f"{k} = {v:g}" for k, v in thresholds_json().items())]),
        Section("Settings", tables=[settings]),
    ]
    plots = sorted(out.glob("trajectories_*.png"))
    sections.append(Section("Trajectories", figures=[embed.image(p, p.stem.removeprefix("trajectories_"))
                                                     for p in plots]))
    with_video = [r for r in results if r.get("video") and Path(r["video"]).is_file()]
    inline, linked = pick_videos(with_video, inline_videos)

    def caption(r: dict[str, Any]) -> str:
        why = f" ({r['failure']})" if r["failure"] and r["failure"] != r["status"] else ""
        return f"{r['policy']} {r['layout']} {r['distance']} episode {r['episode']}: {r['status']}{why}"

    if with_video:
        sections.append(Section(f"Videos ({len(inline)} shown, {len(linked)} linked)",
                                figures=[embed.video(Path(r["video"]), caption(r)) for r in inline]
                                + [Figure("link", os.path.relpath(r["video"], out), caption(r)) for r in linked]))
    intro = [f"{family} family: {len(cfg['sweep']['layouts'])} {first}s x {len(cfg['sweep']['distances'])} {second}s x "
             f"{cfg['sweep']['episodes_per_combo']} episodes, seed {cfg['sweep']['seed']}"]
    intro += [f"{name}: {pct(p['overall']['success_rate'])} success; failures: {top_failures(p['failures'])}"
              for name, p in policies.items()]
    return render(f"Closed-loop evaluation: {', '.join(policies)}", intro, sections)


def offline_page(out: Path, summary: dict[str, Any]) -> str:
    """The page of a ``sim.offline`` run folder: the comparison and its sentence, the offline metrics, the sim-real
    gap per scenario, and every twin's video."""
    embed = _Embedder(out)
    table = [["policy", "offline MAE (real)", "closed-loop success (sim)", "sim-real: same key", "action gap",
              "image cosine"]]
    for r in summary["comparison"]["table"]:
        table.append([r["policy"], num3(r["mae"]), pct(r["success_rate"]),
                      pct(r["direction_agreement"]), num3(r["action_gap"]), num3(r["image_cosine"])])
    metrics = [["policy", "group", "MAE", "RMSE", "acc<0.3", "acc<0.2", "acc<0.15", "steps"]]
    gaps = [["policy", "scenario", "steps", "same key", "action gap", "image cosine"]]
    for name, p in summary["policies"].items():
        for group, m in {"overall": p["overall"], **p["per_distance"], **p["per_layout"], **p["per_kind"]}.items():
            metrics.append([name, group, num3(m["mae"]), num3(m["rmse"]), num3(m["accuracy_0.3"]),
                            num3(m["accuracy_0.2"]), num3(m["accuracy_0.15"]), str(m["n"])])
        for scenario, g in p["sim_real_gap"]["per_scenario"].items():
            gaps.append([name, scenario, str(g["steps"]), pct(g["direction_agreement"]),
                         num3(g["action_mae"]), num3(g["image_cosine"])])
    twins = [(name, t) for name, t in summary["twins"].items() if t.get("video") and (out / t["video"]).is_file()]
    sections = [
        Section("Comparison", text=[summary["comparison"]["sentence"]], tables=[table]),
        Section("Offline metrics on the real frames (the team's definitions)", tables=[metrics]),
        Section("Sim-real gap per scenario", tables=[gaps]),
        Section("Twins: real | simulated | top-down", figures=[
            embed.video(out / t["video"], f"{name}: {t['layout']} {t['distance']}, twin {t['status'] or 'running'}")
            for name, t in twins]),
    ]
    intro = [f"{summary['episodes']} real episodes from {summary['files']} files; {len(summary['invalid'])} invalid "
             f"(skipped); families: {', '.join(summary['families'])}."]
    return render(f"Offline evaluation on real episodes: {', '.join(summary['policies'])}", intro, sections)
