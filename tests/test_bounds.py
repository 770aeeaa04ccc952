"""Issue 27 (deliverables 2 and 4): everything a client or a file controls is bounded, and a user's file or value
never gives a traceback: one line naming it, exit 2."""

from __future__ import annotations

import pytest

from foundations.lru import MAX_INSTRUCTIONS, LRUCache
from policies.vla import VLAPolicy

try:
    from tests.conftest_vla import ScriptedHead, StubBackbone, flat_observation, single_torch_thread
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from conftest_vla import ScriptedHead, StubBackbone, flat_observation, single_torch_thread  # noqa: F401


# ------------------------------------------------------------------------------------------ caches
def test_lru_cache_keeps_the_most_recent_entries():
    cache = LRUCache(2)
    cache["a"], cache["b"] = 1, 2
    assert cache.get("a") == 1  # "a" now the most recent
    cache["c"] = 3
    assert list(cache) == ["a", "c"]
    with pytest.raises(ValueError):
        LRUCache(0)


def test_distinct_instructions_do_not_grow_the_policy_or_backbone_caches():
    backbone = StubBackbone()
    policy = VLAPolicy(ScriptedHead([[[0.5, 0.0]]]), backbone)
    for i in range(MAX_INSTRUCTIONS + 50):
        text = f"go to the bottle number {i}"
        policy.reset(text)
        policy.act(flat_observation(10, instruction=text))
    assert len(policy.forward._text) == MAX_INSTRUCTIONS
    assert backbone.text_cache_size <= 4 * MAX_INSTRUCTIONS
    first = flat_observation(10, instruction="go to the bottle number 0")  # evicted: encoded again, same answer
    policy.reset(first["instruction"])
    policy.act(first)
    assert list(policy.forward._text)[-1] == first["instruction"]
    for i in range(4 * MAX_INSTRUCTIONS + 10):
        backbone.encode_text([f"instruction {i}"])
    assert backbone.text_cache_size == 4 * MAX_INSTRUCTIONS


# ------------------------------------------------------------------------------------- numeric flags
@pytest.mark.parametrize("module, argv", [
    ("eval", ["--policy", "random", "--episodes-per-combo", "1e12"]),
    ("eval", ["--policy", "random", "--episodes-per-combo", "1000000000000"]),
    ("eval", ["--policy", "random", "--workers", "100000"]),
    ("eval", ["--policy", "random", "--latency-ms", "inf"]),
    ("eval", ["--policy", "random", "--batch-wait-ms", "inf"]),
    ("eval", ["--policy", "random", "--step-timeout", "nan"]),
    ("generate", ["--episodes", "1e12"]),
    ("generate", ["--episodes", "4", "--variant-ratio", "nan"]),
    ("generate", ["--episodes", "4", "--workers", "0"]),
    ("train", ["--policy", "case2", "--data", "d", "--epochs", "0"]),
    ("train", ["--policy", "case2", "--data", "d", "--batch-size", "0"]),
    ("train", ["--policy", "case2", "--data", "d", "--lr", "nan"]),
    ("train", ["--policy", "case2", "--data", "d", "--lr", "inf"]),
    ("serve", ["--policy", "random", "--read-timeout", "inf"]),
    ("serve", ["--policy", "random", "--max-body-mb", "1e12"]),
    ("offline", ["--policy", "case2", "--data", "d", "--closed-loop-episodes", "1e12"]),
    ("train_rl", ["--timesteps", "1e12"]),
    ("train_rl", ["--timesteps", "10", "--gamma", "nan"]),
])
def test_a_non_finite_or_huge_number_is_one_line_exit_2_before_anything_is_written(module, argv, tmp_path, capsys,
                                                                                   monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(f"sim.{module}").main
    out = ["--out", str(tmp_path / "out")] if module != "serve" else []
    assert main([*argv, *out]) == 2
    err = capsys.readouterr().err.strip()
    flag = next(a for a in reversed(argv) if a.startswith("--"))
    assert len(err.splitlines()) == 1 and flag in err and err.startswith("error:"), err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- JSON
def test_every_json_we_write_is_valid_json_with_null_and_a_reason(tmp_path, monkeypatch):
    import json

    import numpy as np

    from sim.evaluation import report

    monkeypatch.setattr(report, "to_markdown", lambda summary: "")

    summary = {"policies": {"case2": {"spl": float("nan"), "latency_ms": np.float32("inf"), "n": np.int64(3)}},
               "ci": [0.0, -float("inf")]}
    report.write_summary(tmp_path, summary)
    text = (tmp_path / "summary.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in summary.json"))
    assert data["policies"]["case2"] == {"spl": None, "latency_ms": None, "n": 3}
    assert data["non_finite"] == {"policies.case2.spl": "nan", "policies.case2.latency_ms": "inf", "ci.1": "-inf"}


# ------------------------------------------------------------------------------------------ scenarios
LAYOUT = "1box_hori_left"


def _layout(tmp_path, edit):
    import scenarios

    text = (scenarios.family_dir("cup") / "layouts" / f"{LAYOUT}.toml").read_text()
    (tmp_path / "mine.toml").write_bytes(edit(text) if callable(edit) else edit)
    return tmp_path


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("target_y = 0.18", "target_y = 1e308").encode(), "distances.close.target_y = 1e+308"),
    (lambda t: t.replace("obstacle_y = -0.00", "obstacle_y = -1e300").encode(), "obstacle_y"),
    (lambda t: ("# caf\xe9\n" + t).encode("latin-1"), "not UTF-8"),
    (lambda t: (t + "\n[randomization]\nbox_scale = [0.0, 1.0]\n").encode(), "box scale must be > 0"),
    (lambda t: (t + "\n[randomization]\nbox_scale = [-1.0, -0.5]\n").encode(), "box scale must be > 0"),
    (lambda t: t.replace("target = [2.30, 2.30]\nobstacle_y = -0.00\ntarget_y = 0.18",
                         "target = [0.55, 0.55]\nobstacle_y = -0.00\ntarget_y = 0.0").encode(), "inside obstacles.0"),
])
def test_a_bad_layout_file_is_refused_at_load_naming_the_file_and_field(tmp_path, edit, message):
    import scenarios

    folder = _layout(tmp_path, edit)
    with pytest.raises(scenarios.ScenarioError, match=None) as info:
        scenarios.load("mine", "close", scenario_dir=folder)
    assert "mine.toml" in str(info.value) and message in str(info.value), str(info.value)


# ------------------------------------------------------------------------------------ files read whole
def test_files_read_whole_are_capped_and_named(tmp_path, capsys):
    from sim import eval as sim_eval

    big = tmp_path / "real.csv"
    big.write_text("policy,success_rate\n" + "case2,0.5\n" * 2_000_000)  # 20 MB
    assert sim_eval.main(["--policy", "random", "--real-results", str(big), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "real.csv: larger than 16 MiB" in err
    nan = tmp_path / "nan.csv"
    nan.write_text("policy,success_rate\ncase2,nan\n")
    assert sim_eval.main(["--policy", "random", "--real-results", str(nan), "--out", str(tmp_path / "o")]) == 2
    assert "nan.csv:2: success_rate 'nan'" in capsys.readouterr().err
    key_map = tmp_path / "map.json"
    key_map.write_text("[" * 100_000 + "]" * 100_000)
    assert sim_eval.main(["--policy", "case2", "--key-map", str(key_map), "--out", str(tmp_path / "o")]) == 2
    assert "map.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------- H5
def _episode_file(tmp_path, name="episode_20251201_220000_1box_hori_left_core_medium.h5"):
    from test_inspect import _episode

    return _episode(tmp_path, name, list("qqwwwe"))


@pytest.mark.parametrize("link", ["cycle", "dangling-external", "dangling-soft"])
def test_h5_link_cycles_and_dangling_links_are_listed_invalid(tmp_path, capsys, link):
    import h5py

    from sim import inspect as inspect_cli

    bad = _episode_file(tmp_path, "episode_20251201_220001_1box_hori_left_core_far.h5")
    _episode_file(tmp_path)
    with h5py.File(bad, "a") as f:
        del f["images"]
        if link == "cycle":
            f["images"], f["loop"] = h5py.SoftLink("/loop"), h5py.SoftLink("/images")
        elif link == "dangling-external":
            f["images"] = h5py.ExternalLink("missing.h5", "/images")
        else:
            f["images"] = h5py.SoftLink("/nowhere")
    assert inspect_cli.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"INVALID {bad.name}: 'images' is a" in out and "1 valid, 1 invalid" in out


BLANK_FRAMES = 1000  # 720p: 2.6 GiB decompressed, a few KiB on disk (chunks never written read as zeros)


def _blank_720p_episode(tmp_path):
    from datetime import datetime

    import h5py
    import numpy as np

    from sim.data import h5format

    n = BLANK_FRAMES
    path = tmp_path / "episode_20251201_220000_1box_hori_left_core_medium.h5"
    actions = np.zeros((n, 3), np.float32)
    actions[1:-1, 0] = 1.15
    events = ["episode_start"] + ["start_action"] * (n - 2) + ["stop_action"]
    attrs = h5format.collector_attributes(path.stem, 0.6 * (n - 1), n, "hori", "night", datetime(2025, 12, 1, 22))
    h5format.write_episode(path, np.zeros((n, 8, 8, 3), np.uint8), actions, events, attrs,
                           instruction="Navigate to the cup")
    with h5py.File(path, "a") as f:  # the same file with 720p frames that were never written (all zero)
        del f["images"]
        f.create_dataset("images", (n, 720, 1280, 3), np.uint8, chunks=(1, 720, 1280, 3), compression="gzip")
    assert path.stat().st_size < 1_000_000 and h5format.check_episode(path) == []
    return path


def test_long_h5_episodes_are_read_by_windows_not_whole(tmp_path):
    """sim.train's feature cache and sim.offline's real episodes hold a window of frames, not the whole array."""
    import subprocess
    import sys

    path = _blank_720p_episode(tmp_path)
    script = f"""
import resource, sys
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
from pathlib import Path
from conftest_vla import StubBackbone
from sim.evaluation.offline import load_real_episode
from sim.training.supervised import FeatureCache
path = Path({str(path)!r})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
feats = FeatureCache(Path({str(tmp_path / 'cache')!r}), StubBackbone(), ("image",)).vision(path)
assert feats.shape == ({BLANK_FRAMES}, 1), feats.shape
real = load_real_episode(path)
assert len(real.frames) == {BLANK_FRAMES} and sum(int(f[0, 0, 0]) for f in real.frames) == 0
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) < 600, f"peak grew by {done.stdout.split()[-1]} MiB"


def test_inspect_reports_the_decompressed_size(tmp_path, capsys):
    from sim import inspect as inspect_cli

    _blank_720p_episode(tmp_path)
    assert inspect_cli.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "images decompressed: 2.6 GiB (largest episode 2.6 GiB); files on disk: 0." in out
