"""Closed-loop evaluation: reproducibility across workers, resume, errors, reports, latency."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policies import register
from policies.base import Policy
from sim.eval import main
from sim.evaluation import EvalConfig, evaluate, read_records
from sim.evaluation.config import policy_spec
from sim.evaluation.runner import episode_seed

SMALL = ["--layouts", "1box_vert_left", "2box_hori_right", "--distances", "close", "--episodes-per-combo", "2",
         "--image-size", "64x64", "--record", "none"]
OUTCOME_KEYS = ("policy", "layout", "distance", "episode", "seed", "status", "steps", "path_length_m", "path", "pred_xy", "expert_xy")


class FailingPolicy(Policy):
    """Drives forward, then fails in the way it is told to at step 2."""

    def __init__(self, mode: str = "raise") -> None:
        super().__init__()
        self.mode, self.t = mode, 0

    def _reset(self, instruction, info):
        self.t = 0

    def _act(self, observation):
        self.t += 1
        if self.t < 2:
            return np.array([1.15, 0.0, 0.0])
        if self.mode == "raise":
            raise RuntimeError("model exploded")
        return np.array([np.nan, 0.0, 0.0]) if self.mode == "nan" else np.zeros(5)


register("test_failing", "tests.test_eval:FailingPolicy", overwrite=True)


def outcomes(run_dir):
    return sorted((tuple(json.dumps(r[k]) for k in OUTCOME_KEYS) for r in read_records(run_dir / "episodes.jsonl")))


def test_seeds_depend_on_names_not_order():
    assert episode_seed(0, "1box_vert_left", "close", 0) == episode_seed(0, "1box_vert_left", "close", 0)
    assert len({episode_seed(0, "1box_vert_left", d, e) for d in ("close", "far") for e in range(5)}) == 10
    assert episode_seed(1, "1box_vert_left", "close", 0) != episode_seed(0, "1box_vert_left", "close", 0)


def test_same_results_with_one_and_two_workers(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["--policy", "expert", "--policy", "random", *SMALL, "--workers", "1", "--out", str(one)]) == 0
    assert main(["--policy", "expert", "--policy", "random", *SMALL, "--workers", "2", "--out", str(two)]) == 0
    assert outcomes(one) == outcomes(two)
    summary = json.loads((one / "summary.json").read_text())
    expert, random = summary["policies"]["expert"], summary["policies"]["random"]
    assert expert["overall"]["success_rate"] == 1.0 and expert["overall"]["episodes"] == 4
    assert random["overall"]["success_rate"] < expert["overall"]["success_rate"]
    assert expert["offline_metrics"]["mae"] == 0.0 and random["offline_metrics"]["mae"] > 0.3
    assert set(expert["per_combo"]) == {"1box_vert_left/close", "2box_hori_right/close"}
    markdown = (one / "summary.md").read_text()
    assert "| expert | 100% [" in markdown and "| random | 0% [" in markdown
    assert sorted(p.name for p in one.glob("trajectories_*.png")) == [
        "trajectories_1box_vert_left_close.png", "trajectories_2box_hori_right_close.png"]


def test_resume_completes_an_interrupted_run(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    args = ["--policy", "random", *SMALL, "--workers", "1"]
    assert main([*args, "--out", str(full)]) == 0
    assert main([*args, "--out", str(cut)]) == 0
    lines = (cut / "episodes.jsonl").read_text().splitlines()
    (cut / "episodes.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])  # killed mid-write
    moved = tmp_path / "moved"
    cut.rename(moved)  # a run folder can be moved or renamed before it is resumed
    assert main(["--resume", str(moved), "--workers", "1"]) == 0
    assert outcomes(moved) == outcomes(full) and not cut.exists()
    assert main([*args, "--out", str(full)]) == 2, "an existing run is never overwritten"


@pytest.mark.parametrize("mode, message", [("raise", "model exploded"), ("nan", "non-finite"), ("shape", "shape")])
def test_a_failing_policy_errors_its_episodes_and_the_run_continues(tmp_path, mode, message, capsys):
    out = tmp_path / mode
    code = main(["--policy", "test_failing", "--policy-arg", f"test_failing@mode={mode}", "--policy", "expert", *SMALL,
                 "--workers", "1", "--out", str(out)])
    assert code == 1
    records = read_records(out / "episodes.jsonl")
    failing = [r for r in records if r["policy"] == "test_failing"]
    assert len(failing) == 4 and all(r["status"] == "error" and message in r["error"] for r in failing)
    assert all(r["status"] == "success" for r in records if r["policy"] == "expert")
    assert "ended in an error" in capsys.readouterr().err


def test_failure_videos_and_real_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = tmp_path / "real.csv"
    csv.write_text("policy,success_rate\nexpert,0.9\nrandom,5%\n")
    args = ["--policy", "expert", "--policy", "random", "--layouts", "1box_hori_left", "--distances", "medium",
            "--episodes-per-combo", "1", "--image-size", "64x64", "--workers", "1", "--out", "runs/vid",
            "--real-results", str(csv)]
    assert main(args) == 0
    records = read_records(tmp_path / "runs/vid/episodes.jsonl")
    videos = [r.get("video") for r in records]
    assert videos[0] is None and videos[1].startswith("runs/vid/videos/random_1box_hori_left_medium_ep000_")
    import imageio.v3 as iio

    frames = iio.imread(tmp_path / videos[1])
    assert frames.shape[0] >= records[1]["steps"] + 1 and frames.shape[-1] == 3
    svr = json.loads((tmp_path / "runs/vid/summary.json").read_text())["sim_vs_real"]
    assert svr["real"] == [0.9, 0.05] and svr["mmrv"] == 0.0 and svr["pearson_r"] == pytest.approx(1.0)


def _instruction_rows(make_env, *instructions: str) -> list[np.ndarray]:
    """The header's instruction row (pixels 20-44) of a one-step video frame drawn for each instruction."""
    from sim.evaluation.video import HEADER, TOP_SIZE, compose_frames

    env = make_env(obs_keys=("state",), jitter=False)
    env.reset(seed=0)
    cam, top = np.zeros((64, 64, 3), np.uint8), np.zeros((TOP_SIZE[1], TOP_SIZE[0], 3), np.uint8)
    rows = []
    for text in instructions:
        (frame,) = compose_frames([cam], [top], [(0.0, 0.0, 0.0)], [], spec=env.unwrapped.spec_scene, title="t",
                                  instruction=text, status="success")
        rows.append(frame[20:HEADER])
    return rows


def test_video_draws_hangul_with_a_covering_font(make_env):
    from sim.evaluation import video

    path = video._covering_font("바구니 직진해")
    if path is None:
        pytest.skip(f"no installed font covers Hangul (apt-get install {video.FONT_PACKAGE}; .ci/run does)")
    assert getattr(video._font(14, "바구니"), "path", None) == path
    # Missing glyphs are drawn as identical boxes (tofu): two different words of as many syllables draw differently
    # only in a font that has them.
    a, b = _instruction_rows(make_env, "바구니", "직진해")
    assert a.any() and not np.array_equal(a, b)
    assert video._font(14, "Navigate toward the gray basket") is video._font(14), "Latin-1 keeps the default font"


def test_video_without_a_hangul_font_falls_back_and_warns_once(make_env, monkeypatch):
    import warnings

    from sim.evaluation import video

    monkeypatch.setattr(video, "_covering_font", lambda text: None)
    video._warn_no_font.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a, b = _instruction_rows(make_env, "바구니", "직진해")
        assert video._font(14, "바구니") is video._font(14)
    video._warn_no_font.cache_clear()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and video.FONT_PACKAGE in messages[0]
    assert np.array_equal(a, b), "the default font draws both words as the same boxes"


def test_latency_delays_commands_in_velocity_mode(make_env):
    fast = make_env(obs_keys=("state",), jitter=False, actuation="velocity")
    slow = make_env(obs_keys=("state",), jitter=False, actuation="velocity", action_latency=0.15)
    fast.reset(seed=0), slow.reset(seed=0)
    cmd = np.array([0.3, 0.0, 0.0], np.float32)
    (f1, *_), (s1, *_) = fast.step(cmd), slow.step(cmd)
    assert f1["state"][0] > 0.01 and s1["state"][0] == pytest.approx(0.0, abs=1e-6), "0.15 s > one 0.1 s period"
    for _ in range(9):
        (f, *_), (s, *_) = fast.step(cmd), slow.step(cmd)
    assert f["state"][0] - s["state"][0] == pytest.approx(0.3 * 0.15, abs=0.005)


def test_list_and_bad_arguments(capsys, tmp_path):
    assert main(["--list"]) == 0
    assert "expert" in capsys.readouterr().out
    assert main(["--episodes-per-combo", "1"]) == 2
    assert main(["--policy", "no_such_policy", *SMALL, "--out", str(tmp_path / "never")]) == 2
    assert not (tmp_path / "never").exists(), "a policy that cannot be built writes nothing"


@pytest.mark.parametrize("bad, named", [
    (["--latency-ms", "-5"], "--latency-ms"), (["--image-size", "64"], "--image-size"), (["--seed", "-1"], "--seed"),
    (["--max-steps", "0"], "--max-steps"), (["--max-steps", "-3"], "--max-steps"), (["--layouts", "nope"], "nope"),
    (["--distances", "near"], "near"), (["--episodes-per-combo", "0"], "--episodes-per-combo"),
    (["--policy-arg", "oops"], "--policy-arg"), (["--real-results", "missing.csv"], "missing.csv"),
])
def test_an_invalid_value_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, bad, named):
    out = tmp_path / "run"
    assert main(["--policy", "expert", "--layouts", "1box_vert_left", "--distances", "close", *bad,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and named in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_evaluate_is_a_library_call_and_its_config_round_trips(tmp_path):
    cfg = EvalConfig(policies=[policy_spec("expert")],
                     env={"image_size": "64x48", "latency": 0.05, "max_steps": 25},
                     sweep={"layouts": ["1box_vert_left"], "distances": ["close"], "episodes_per_combo": 2, "seed": 4},
                     output={"out": tmp_path / "lib", "record": "none"})
    result = evaluate(cfg, progress=False, plots=False)
    assert [r["status"] for r in result.records] == ["success", "success"] and result.errors == 0
    assert all(r["latency_applied"] == 0.05 and r["keys"][-1] == "SPACE" for r in result.records)
    assert EvalConfig.load(tmp_path / "lib") == cfg
    assert result.summary["config"]["env"]["image_size"] == "64x48"


def test_a_config_json_of_the_older_flat_format_still_resumes(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    old = {"policies": ["expert"], "layouts": ["1box_vert_left"], "distances": ["close"], "episodes_per_combo": 1,
           "seed": 0, "record": "none", "latency": 0.0, "actuation": "keypress", "image_size": "64x64",
           "max_steps": None, "checkpoint": None, "backbone": None, "backbone_path": None, "clip_path": None,
           "key_map": None, "config": None, "policy_args": {}, "out": str(out), "video_dir": "videos/old",
           "real_results": None}
    (out / "config.json").write_text(json.dumps(old))
    assert main(["--resume", str(out), "--workers", "1"]) == 0
    assert [r["status"] for r in read_records(out / "episodes.jsonl")] == ["success"]


def test_a_broken_config_json_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"sweep": {"layouts": []}}')
    assert main(["--resume", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
