"""The team's benchmark files in a run folder, the failure line of the console and summary.md, sim.leaderboard across
runs, and the run page: its video budget, and a render in a real headless browser."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from policies import register
from policies.base import Policy
from sim.evaluation import EvalConfig, evaluate
from sim.evaluation.config import policy_spec
from sim.evaluation.html_report import pick_videos
from sim.evaluation.report import console_table
from sim.leaderboard import main as leaderboard

BENCHMARK_FILES = ("metrics.json", "leaderboard_row.json", "failure_summary.json", "episode_results.jsonl")


class ForwardPolicy(Policy):
    """A collapsed head: full forward at every step."""

    def _act(self, observation):
        return np.array([1.15, 0.0, 0.0], dtype=np.float32)


register("test_forward", "tests.test_benchmark_files:ForwardPolicy", overwrite=True)


def run(out: Path, policies=("test_forward", "expert"), episodes: int = 2, seed: int = 0, record: str = "failures"):
    cfg = EvalConfig(policies=[policy_spec(p) for p in policies], env={"image_size": "64x48"},
                     sweep={"layouts": ["1box_hori_left"], "distances": ["close"], "episodes_per_combo": episodes,
                            "seed": seed},
                     output={"out": out, "record": record, "videos_per_combo": None})
    return evaluate(cfg, progress=False, plots=True)


def strict_json(text: str):
    """json.loads that refuses the bare NaN / Infinity Python's json writes by default."""
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench")
    return run(base / "a"), run(base / "b", policies=("expert",)), run(base / "c", policies=("expert",), seed=7)


def test_every_run_writes_the_four_files_with_the_dominant_failure(runs):
    result = runs[0]
    for name in BENCHMARK_FILES:
        assert (result.out / name).is_file(), name
    failures = strict_json((result.out / "failure_summary.json").read_text())
    forward = failures["policies"]["test_forward"]
    assert forward["failed"] == 2 and next(iter(forward["primary"])) == "forward_collapse"
    assert forward["per_combo"]["1box_hori_left/close"]["primary"] == {"forward_collapse": 2}
    assert failures["thresholds"]["collapse_share"] == 0.9 and "forward_collapse" in failures["categories"]
    lines = [strict_json(line) for line in (result.out / "episode_results.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and {line["policy"] for line in lines} == {"test_forward", "expert"}
    assert all(line["failure"] == "forward_collapse" for line in lines if line["policy"] == "test_forward")
    assert all(line["failure"] is None and line["success"] for line in lines if line["policy"] == "expert")
    metrics = strict_json((result.out / "metrics.json").read_text())["policies"]
    assert metrics["expert"]["success_rate"] == 1.0 and metrics["expert"]["deviation_mean_m"] < 0.05
    assert metrics["test_forward"]["collision_rate"] == 1.0 and metrics["test_forward"]["terminal_distance_m"] > 1.0
    rows = strict_json((result.out / "leaderboard_row.json").read_text())["rows"]
    assert [r["policy"] for r in rows] == ["test_forward", "expert"] and rows[0]["top_failure"] == "forward_collapse"


def test_the_console_and_summary_md_name_the_top_failure_and_the_denominators(runs):
    summary = runs[0].summary
    table = console_table(summary)
    assert "test_forward failures: forward_collapse 100% (2/2 failed)" in table
    assert "expert failures: none (0/2 failed)" in table
    side = summary["policies"]["expert"]["overall"]
    assert f"({side['side_compliance_n']}/{side['side_compliance_n']})" in table  # the rate shows its denominator
    md = (runs[0].out / "summary.md").read_text()
    assert "- `test_forward`: forward_collapse 100% (2/2 failed)" in md and "## The team's closed-loop metrics" in md


def test_leaderboard_ranks_runs_of_one_sweep_and_refuses_mixed_ones(runs, tmp_path, capsys):
    a, b, c = (r.out for r in runs)
    assert leaderboard([str(a), str(b), "--out", str(tmp_path / "lb")]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(table) == 4  # header + three rows: two experts (rank 1), the collapsed head last
    assert table[1].startswith("| 1 | expert") and table[3].startswith("| 3 | test_forward")
    assert "forward_collapse (100%)" in table[3]
    assert (tmp_path / "lb/leaderboard.html").read_text().count("<tr>") == 4
    assert leaderboard([str(a), str(c)]) == 2
    assert "different sweeps" in capsys.readouterr().err
    assert leaderboard([str(a), str(c), "--allow-mixed"]) == 0
    assert "mixed sweeps" in capsys.readouterr().out


def test_leaderboard_sweep_cell_names_the_cadence():
    from sim.evaluation.leaderboard import cells

    row = {"rank": 1, "policy": "exp73", "success_ci95": [0.0, 0.2], "success_rate": 0.0, "episodes": 15,
           "sweep": {"layouts": ["a"] * 5, "distances": ["straight"], "episodes_per_combo": 3, "seed": 0},
           "run_dir": "r", "sweep_label": "B"}
    deployed = {"name": "deployed", "mode": "async", "period_s": 0.1}
    assert cells({**row, "cadence": deployed}, mixed=True)[5] == "B: 5x1x3 seed 0, deployed cadence"
    assert cells({**row, "cadence": "v5"}, mixed=False)[5] == "5x1x3 seed 0, v5 cadence"  # an older row's name
    assert cells(row, mixed=False)[5] == "5x1x3 seed 0"


def test_leaderboard_names_a_folder_without_its_row_file(tmp_path, capsys):
    (tmp_path / "old").mkdir()
    assert leaderboard([str(tmp_path / "old")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "old: no leaderboard_row.json" in err
    (tmp_path / "old/leaderboard_row.json").write_text("{not json")
    assert leaderboard([str(tmp_path / "old")]) == 2
    assert "not a leaderboard row file" in capsys.readouterr().err


def test_the_page_inlines_failures_first_one_per_category_then_successes():
    results = ([{"policy": "p", "failure": "collision", "video": f"c{i}"} for i in range(5)]
               + [{"policy": "p", "failure": "late_turn", "video": "l0"}]
               + [{"policy": "p", "failure": None, "video": f"s{i}"} for i in range(3)])
    inline, linked = pick_videos(results, 4)
    assert [r["video"] for r in inline] == ["c0", "l0", "s0", "c1"]
    assert len(linked) == 5 and [r["video"] for r in pick_videos(results, 0)[1]][:2] == ["c0", "l0"]


def test_the_page_embeds_at_most_the_budget_and_links_the_rest(tmp_path):
    result = run(tmp_path / "run", policies=("test_forward",), episodes=3)
    videos = [r["video"] for r in result.records]
    assert all(videos)
    from sim.evaluation.benchmark import episode_results
    from sim.evaluation.html_report import eval_page

    page = eval_page(result.out, result.summary, episode_results(result.records), inline_videos=1)
    assert page.count("data:video/mp4;base64,") == 1 and page.count('<a href="') == 2
    assert "Failure taxonomy" in page and page.index("Why episodes failed") < page.index("Overall")
    assert "<td>env.image_size</td><td>64x48</td>" in page


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_the_run_page_renders_in_a_real_browser_without_console_errors(runs):
    """Headless Chromium (Debian's ``chromium``, driven by playwright): a non-blank screenshot, no console error,
    every table and the embedded video and plot load."""
    executable = _browser()
    required = os.environ.get("MOBILE_VLA_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if executable is None:
        if required:
            pytest.fail("no chromium on PATH (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    from PIL import Image

    page_file = runs[0].out / "index.html"
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(page_file.as_uri(), wait_until="load")
            shot = page.screenshot(full_page=True)
            tables = page.locator("table").count()
            images_loaded = page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            video_ok = page.evaluate("Array.from(document.querySelectorAll('video')).every(v => v.error === null)")
            heading = page.locator("h2").first.inner_text()
        finally:
            browser.close()
    assert problems == []
    assert tables >= 6 and images_loaded and video_ok and heading.startswith("Why episodes failed")
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float32)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # text, tables and plots: not a blank page
