"""Behaviour cloning on generated H5 episodes: checkpoint, loss, feature cache, resume."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from policies import make_policy
from sim import generate
from sim.train import main
from sim.training.supervised import FeatureWindows, train


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    out = tmp_path_factory.mktemp("episodes")
    code = generate.main(["--out", str(out), "--episodes", "6", "--image-size", "64x64", "--workers", "1",
                          "--layouts", "1box_hori_left", "1box_hori_right", "--distances", "close", "--no-progress"])
    assert code == 0
    return out


def read_metrics(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_training_writes_a_loadable_checkpoint_and_the_loss_goes_down(episodes, tmp_path, make_env):
    out = tmp_path / "ckpt"
    small = {"in_features": 32, "hidden_size": 32, "num_layers": 1}
    summary = train("lstm-recon", [episodes], out, backbone="tiny-kosmos2", epochs=6, batch_size=16, lr=3e-3,
                    cache_dir=tmp_path / "cache", patience=10, head_overrides=small, progress=False)
    rows = read_metrics(out / "metrics.csv")
    assert len(rows) == 6 and summary["epochs_run"] == 6 and summary["cache_misses"] == 6
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert (out / "best.safetensors").exists() and (out / "best.json").exists()
    policy = make_policy("lstm-recon", backbone="tiny-kosmos2", checkpoint=str(out / "best.safetensors"))
    assert policy.checkpoint is not None and policy.checkpoint.meta["training_data"] == [str(episodes)]
    env = make_env(image_size=(64, 64))
    obs, info = env.reset(seed=0)
    policy.reset(info["instruction"], info)
    assert policy.act(obs).shape == (3,)


def test_second_run_hits_the_feature_cache_and_resume_continues(episodes, tmp_path):
    cache = tmp_path / "cache"
    first = train("case1", [episodes], tmp_path / "a", backbone="tiny-kosmos2", epochs=1, cache_dir=cache, progress=False)
    assert first["cache_misses"] == 6 and first["cache_hits"] == 0
    again = train("case1", [episodes], tmp_path / "b", backbone="tiny-kosmos2", epochs=2, cache_dir=cache, progress=False)
    assert again["cache_hits"] == 6 and again["cache_misses"] == 0
    resumed = train("case1", [episodes], tmp_path / "a", backbone="tiny-kosmos2", epochs=3, cache_dir=cache,
                    resume=True, progress=False)
    rows = read_metrics(tmp_path / "a" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and resumed["epochs_run"] == 3
    with pytest.raises(ValueError, match="was training case1"):
        train("case3", [episodes], tmp_path / "a", backbone="tiny-kosmos2", epochs=4, cache_dir=cache,
              resume=True, progress=False)


def test_windows_pad_the_start_and_mask_past_the_end():
    vision = [np.arange(4, dtype=np.float32)[:, None].repeat(2, 1)]
    actions = [np.array([[0, 0, 0], [1.15, 0, 0], [1.15, 1.15, 0], [0, 0, 0]], np.float32)]
    ds = FeatureWindows(vision, [np.zeros(3, np.float32)], actions, window=3, chunk=3, action_dim=2, stop_weight=4.0)
    first, last = ds[0], ds[3]
    assert first["vision"][:, 0].tolist() == [0, 0, 0]
    assert first["actions"].tolist() == [[0, 0], [1, 0], [1, 1]] and first["mask"].tolist() == [1, 1, 1]
    assert last["vision"][:, 0].tolist() == [1, 2, 3] and last["mask"].tolist() == [1, 0, 0]
    assert torch.all(last["actions"][1:] == 0)
    assert first["weight"] == 1.0 and last["weight"] == 4.0, "only the final stop is up-weighted, not episode_start"


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["--policy", "case1", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_run_without_a_finite_loss_exits_1_and_names_no_checkpoint(episodes, tmp_path, capsys, monkeypatch):
    from sim.training import supervised

    monkeypatch.setattr(supervised, "evaluate", lambda *a, **k: (float("nan"), float("nan")))
    out = tmp_path / "o"
    assert main(["--policy", "case1", "--backbone", "tiny-kosmos2", "--data", str(episodes), "--out", str(out),
                 "--epochs", "2", "--cache-dir", str(tmp_path / "cache")]) == 1
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "no checkpoint written" in err[0]
    assert '"checkpoint": null' in captured.out and not (out / "best.safetensors").exists()


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"lr": float("nan")}, {"lr": 0.0}])
def test_the_library_refuses_what_the_command_refuses(episodes, tmp_path, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        train("case1", [episodes], tmp_path / "o", backbone="tiny-kosmos2", cache_dir=tmp_path / "c", progress=False,
              **kwargs)
    assert not (tmp_path / "o").exists()
