"""``sim.offline`` on files written exactly as the robot's collector writes them: every reported metric equals an
independent computation from ``steps.csv``; twins, the comparison and the HTML page."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser

import numpy as np
import pytest

from sim.offline import main
from tests.test_h5format import collector_file

EPISODES = {
    "episode_20251203_182233_1box_hori_left_core_medium.h5": ["q", "q", "w", "w", "w", "e", "e", "SPACE"],
    "episode_20251203_182301_1box_hori_left_variant_medium.h5": ["w", "q", "q", "w", "w", "e", "SPACE"],
    "episode_20260112_101500_basket_2box_vert_right_core_close.h5": ["e", "e", "w", "w", "q", "q", "SPACE"],
}


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    """Collector files: 720p BGR gzip, the collector's attributes, no language_instruction."""
    folder = tmp_path_factory.mktemp("real")
    for name, keys in EPISODES.items():
        collector_file(folder / name, hw=(720, 1280), keys=keys)
    return folder


@pytest.fixture(scope="module")
def run(real_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("offline") / "run"
    assert main(["--policy", "lstm-recon", "--policy", "case2", "--data", str(real_dir), "--out", str(out),
                 "--closed-loop-episodes", "1", "--workers", "1", "--no-progress", "--family", "cup"]) == 0
    return out


def test_mixed_families_need_a_family_for_the_closed_loop(real_dir, tmp_path, capsys):
    assert main(["--policy", "case2", "--data", str(real_dir), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "mixes the basket and cup families" in capsys.readouterr().err


def _independent(rows):
    """The team's metrics written out again from the CSV rows, without sim.evaluation.metrics."""
    p = np.array([[float(r["pred_x"]), float(r["pred_y"])] for r in rows])
    t = np.array([[float(r["label_x"]), float(r["label_y"])] for r in rows])
    err = np.abs(p - t)
    out = {"mae": err.mean(), "rmse": np.sqrt((err ** 2).mean()), "n": len(rows)}
    for thr in (0.3, 0.2, 0.15):
        out[f"accuracy_{thr}"] = 100 * np.mean((err < thr).all(axis=1))
        for i, axis in enumerate(("linear_x", "linear_y")):
            out[f"{axis}_{thr}"] = 100 * np.mean(err[:, i] < thr)
    for i, axis in enumerate(("linear_x", "linear_y")):
        ss_res, ss_tot = ((t[:, i] - p[:, i]) ** 2).sum(), ((t[:, i] - t[:, i].mean()) ** 2).sum()
        out[f"{axis}_r2"] = 1 - ss_res / ss_tot if ss_tot else (1.0 if ss_res == 0 else 0.0)
        out[f"{axis}_direction_accuracy"] = 100 * np.mean(np.sign(p[:, i]) == np.sign(t[:, i]))
    return out


def test_every_metric_equals_an_independent_computation_from_steps_csv(run):
    summary = json.loads((run / "summary.json").read_text())
    rows = list(csv.DictReader((run / "steps.csv").open()))
    assert list(rows[0])[:7] == ["policy", "episode", "step", "label_x", "label_y", "pred_x", "pred_y"]
    assert len(rows) == 2 * sum(len(k) + 1 for k in EPISODES.values()), "one row per labelled step and policy"
    for policy, p in summary["policies"].items():
        mine = [r for r in rows if r["policy"] == policy]
        groups = {"overall": (p["overall"], mine)}
        for episode, m in p["per_episode"].items():
            groups[episode] = (m, [r for r in mine if r["episode"] == episode])
        for distance, m in p["per_distance"].items():
            groups[distance] = (m, [r for r in mine if distance in r["episode"]])
        for kind, m in p["per_kind"].items():
            groups[kind] = (m, [r for r in mine if f"_{kind}_" in r["episode"]])
        for name, (reported, subset) in groups.items():
            expected = _independent(subset)
            for key, value in expected.items():
                assert reported[key] == pytest.approx(value, abs=1e-9), (policy, name, key)
    assert summary["policies"]["lstm-recon"]["overall"]["mae"] > 0


def test_labels_follow_the_collector_frames_and_the_instruction_rule(run):
    rows = [r for r in csv.DictReader((run / "steps.csv").open()) if r["policy"] == "case2"]
    first = [r for r in rows if r["episode"] == "episode_20251203_182233_1box_hori_left_core_medium"]
    assert [(float(r["label_x"]), float(r["label_y"])) for r in first[:3]] == [(0.0, 0.0), (1.0, 1.0), (1.0, 1.0)]
    assert float(first[0]["pred_x"]) == 0.0 and float(first[0]["pred_y"]) == 0.0, "the server's forced first zero"


def test_twins_replay_the_recorded_presses_and_the_gap_is_recomputable(run):
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["twins"]) == {name.removesuffix(".h5") for name in EPISODES}
    basket = summary["twins"]["episode_20260112_101500_basket_2box_vert_right_core_close"]
    assert basket["family"] == "basket" and basket["layout"] == "2box_vert_right", "played in the basket set-up"
    assert summary["twins"]["episode_20251203_182233_1box_hori_left_core_medium"]["family"] == "cup"
    assert json.loads((run / "closed_loop" / "config.json").read_text())["env"]["family"] == "cup"
    gaps = list(csv.DictReader((run / "twin_steps.csv").open()))
    for policy, p in summary["policies"].items():
        mine = [g for g in gaps if g["policy"] == policy]
        diff = [abs(float(g["real_x"]) - float(g["sim_x"])) + abs(float(g["real_y"]) - float(g["sim_y"])) for g in mine]
        same = np.mean([g["real_key"] == g["sim_key"] for g in mine])
        cosine = np.mean([float(g["image_cosine"]) for g in mine])
        overall = p["sim_real_gap"]["overall"]
        assert overall["steps"] == len(mine) > 0
        assert overall["action_mae"] == pytest.approx(np.mean(diff) / 2)
        assert overall["direction_agreement"] == pytest.approx(same)
        assert overall["image_cosine"] == pytest.approx(cosine, abs=1e-5) and -1 <= cosine <= 1
    for twin in summary["twins"].values():
        assert (run / twin["video"]).stat().st_size > 1000


def test_one_comparison_table_with_its_sentence(run):
    summary = json.loads((run / "summary.json").read_text())
    table = {r["policy"]: r for r in summary["comparison"]["table"]}
    assert set(table) == {"lstm-recon", "case2"}
    for row in table.values():
        assert row["closed_loop_episodes"] == 4 and 0 <= row["success_rate"] <= 1  # the data: 2 layouts x 2 distances
        assert row["mae"] == summary["policies"][row["policy"]]["overall"]["mae"]
    sentence = summary["comparison"]["sentence"]
    assert "lstm-recon" in sentence and "case2" in sentence and sentence.endswith(".")
    assert "## Comparison" in (run / "summary.md").read_text()


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags, self.sources = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.sources += [value for name, value in attrs if name == "src"]


def test_the_html_page_is_self_contained(run):
    page = _Page()
    page.feed((run / "index.html").read_text())
    assert page.tags.count("table") >= 3 and page.tags.count("video") == len(EPISODES)
    assert page.sources and all(src.startswith("data:") for src in page.sources), "no file or server needed"


def test_an_eval_run_has_its_page_too(tmp_path):
    from sim.eval import main as eval_main

    out = tmp_path / "eval"
    assert eval_main(["--policy", "expert", "--policy", "random", "--layouts", "1box_vert_left", "--distances",
                      "close", "--episodes-per-combo", "1", "--image-size", "48x48", "--workers", "1",
                      "--record", "all", "--out", str(out)]) == 0
    page = _Page()
    page.feed((out / "index.html").read_text())
    assert page.tags.count("img") == 1 and page.tags.count("video") == 2
    assert all(src.startswith("data:") for src in page.sources)


def test_bad_inputs_are_named(real_dir, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(real_dir, data)
    (data / "episode_20251203_999999_1box_hori_left_core_medium.h5").write_bytes(b"not hdf5")
    args = ["--policy", "case2", "--data", str(data), "--closed-loop-episodes", "0", "--no-twins", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--skip-invalid"]) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert len(summary["invalid"]) == 1 and summary["episodes"] == len(EPISODES) and "overall" in summary
    assert main(["--policy", "expert", "--data", str(real_dir), "--out", str(tmp_path / "c"),
                 "--closed-loop-episodes", "0", "--no-twins"]) == 2
    assert "cannot act on real frames" in capsys.readouterr().err
