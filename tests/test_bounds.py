"""Issue 27 (deliverables 2 and 4): everything a client or a file controls is bounded, and a user's file or value
never gives a traceback: one line naming it, exit 2."""

from __future__ import annotations

import pytest

from policies.lru import MAX_INSTRUCTIONS, LRUCache
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
    assert len(policy._text) == MAX_INSTRUCTIONS
    assert backbone.text_cache_size <= 4 * MAX_INSTRUCTIONS
    first = flat_observation(10, instruction="go to the bottle number 0")  # evicted: encoded again, same answer
    policy.reset(first["instruction"])
    policy.act(first)
    assert list(policy._text)[-1] == first["instruction"]
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
