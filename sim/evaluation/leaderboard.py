"""One table across evaluation runs, from each run folder's ``leaderboard_row.json``
(:func:`~sim.evaluation.benchmark.leaderboard_rows`): the team's leaderboard (MoNaVLA
``docs/BENCHMARK_PIPELINE_DESIGN.md``).

Rows rank by success rate, then SPL. Runs whose sweeps differ (family, actuation, cadence, layouts, distances,
episodes, seed: :func:`~sim.evaluation.benchmark.sweep_id`) ran different episodes and are not ranked together
unless the caller allows it; each row then carries its sweep's letter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foundations.errors import ConfigError
from foundations.files import read_json
from sim.evaluation.benchmark import SCHEMA_VERSION
from sim.evaluation.report import num, pct

ROW_FILE = "leaderboard_row.json"
#: Largest ``leaderboard_row.json`` read (bytes): a run has one row per policy.
MAX_ROW_FILE_BYTES = 4 * 2**20
COLUMNS = ("rank", "policy", "architecture", "checkpoint", "family", "sweep", "success [95% CI]", "SPL",
           "top failure", "latency", "run")


def load_rows(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The rows of every run folder, in the order given.

    Raises:
        ConfigError: a folder that does not exist or holds no ``leaderboard_row.json`` (not a finished
            ``sim.eval`` run, or one from before the file existed: re-summarise it with ``sim.eval --resume``), a
            file that is not the expected JSON, or the same run given twice.
    """
    rows, seen = [], set()
    for run_dir in run_dirs:
        path = Path(run_dir) / ROW_FILE
        if not Path(run_dir).is_dir():
            raise ConfigError(f"{run_dir}: no such run folder")
        if not path.is_file():
            raise ConfigError(f"{run_dir}: no {ROW_FILE} (not a finished sim.eval run; an older run gets one with "
                              f"python -m sim.eval --resume {run_dir})")
        try:
            data = read_json(path, MAX_ROW_FILE_BYTES)
            if not isinstance(data, dict):
                raise ValueError(f"must be a JSON object, got a JSON {type(data).__name__}")
            if not isinstance(data.get("rows"), list) or not all(isinstance(r, dict) for r in data["rows"]):
                if data.get("schema_version") == SCHEMA_VERSION:
                    raise ValueError("'rows' must be a list of JSON objects")
            if data.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
            file_rows = list(data["rows"])
            for row in file_rows:
                missing = [k for k in ("policy", "sweep_id", "success_rate", "success_ci95", "episodes") if k not in row]
                if missing:
                    raise ValueError(f"a row lacks {', '.join(missing)}")
        except ConfigError as exc:
            raise ConfigError(f"not a leaderboard row file: {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a leaderboard row file ({type(exc).__name__}: {exc})") from None
        resolved = Path(run_dir).resolve()
        if resolved in seen:
            raise ConfigError(f"{run_dir}: given twice")
        seen.add(resolved)
        rows += [{**row, "run_dir": str(run_dir)} for row in file_rows]
    return rows


def rank(rows: Sequence[dict[str, Any]], allow_mixed: bool = False) -> list[dict[str, Any]]:
    """The rows ranked (success rate, then SPL, descending; ``rank`` 1-based; ties share a rank), each with
    ``sweep_label`` (``"A"``, ``"B"`` ... in order of first appearance).

    Raises:
        ConfigError: the rows come from more than one sweep and ``allow_mixed`` is False.
    """
    labels: dict[str, str] = {}
    for row in rows:
        labels.setdefault(row["sweep_id"], chr(ord("A") + len(labels) % 26))
    if len(labels) > 1 and not allow_mixed:
        by_sweep = "; ".join(f"{labels[s]} = {s} ({', '.join(sorted({r['run_dir'] for r in rows if r['sweep_id'] == s}))})"
                             for s in labels)
        raise ConfigError(f"the runs ran different sweeps ({by_sweep}): their success rates are not comparable; "
                          "pass --allow-mixed to list them together, marked by sweep")

    def key(row: dict[str, Any]) -> tuple[float, float]:
        return (-(row["success_rate"] if row["success_rate"] is not None else -1.0),
                -(row.get("spl") if row.get("spl") is not None else -1.0))

    ranked = sorted(rows, key=key)
    out, previous, place = [], None, 0
    for i, row in enumerate(ranked, 1):
        if key(row) != previous:
            place, previous = i, key(row)
        out.append({**row, "rank": place, "sweep_label": labels[row["sweep_id"]]})
    return out


def cells(row: dict[str, Any], mixed: bool) -> list[str]:
    """One table row's text, in :data:`COLUMNS` order."""
    lo, hi = row["success_ci95"]
    sweep = row.get("sweep") or {}
    sweep_text = (f"{len(sweep.get('layouts', []))}x{len(sweep.get('distances', []))}x"
                  f"{sweep.get('episodes_per_combo', '?')} seed {sweep.get('seed', '?')}")
    cadence = row.get("cadence")
    if cadence:  # the run's Cadence fields (name: a preset, "+" when a field was changed) or an older run's name
        sweep_text += f", {cadence if isinstance(cadence, str) else cadence.get('name', '?')} cadence"
    if mixed:
        sweep_text = f"{row['sweep_label']}: {sweep_text}"
    top = row.get("top_failure")
    latency = f"p50 {num(row.get('latency_p50_ms'), '.1f')} ms; applied {row.get('latency_applied', '-')}"
    return [str(row["rank"]), row["policy"], row.get("architecture") or "-", row.get("checkpoint") or "-",
            row.get("family") or "-", sweep_text,
            f"{pct(row['success_rate'])} [{100 * lo:.0f}-{100 * hi:.0f}] (n={row['episodes']})",
            num(row.get("spl")), f"{top} ({pct(row.get('top_failure_share'))})" if top else "-", latency,
            row["run_dir"]]


def to_markdown(ranked: Sequence[dict[str, Any]]) -> str:
    """The table as markdown (a note line first when the sweeps are mixed)."""
    mixed = len({r["sweep_id"] for r in ranked}) > 1
    lines = ["> mixed sweeps: rows of different sweeps (letters) ran different episodes", ""] if mixed else []
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r, mixed)) + " |" for r in ranked]
    return "\n".join(lines) + "\n"


def to_html(ranked: Sequence[dict[str, Any]]) -> str:
    """The table as a self-contained HTML page (:func:`sim.evaluation.html_report.render`)."""
    from sim.evaluation.html_report import Section, render

    mixed = len({r["sweep_id"] for r in ranked}) > 1
    note = ["Mixed sweeps: rows of different sweeps (letters) ran different episodes."] if mixed else []
    table = [list(COLUMNS)] + [cells(r, mixed) for r in ranked]
    return render("Leaderboard", [f"{len(ranked)} rows from {len({r['run_dir'] for r in ranked})} runs"],
                  [Section("Ranking (success, then SPL)", text=note, tables=[table])])
