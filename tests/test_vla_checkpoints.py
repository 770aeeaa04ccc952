"""Checkpoints: the project's safetensors + JSON sidecar, the team's ``.pth`` and Lightning ``.ckpt``
files; round trips give identical actions, mismatches and corrupt files give clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from policies import make_policy
from policies.checkpoints import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    compare_state_dicts,
    default_checkpoint,
    load_checkpoint,
    load_into_head,
    save_checkpoint,
    sidecar_path,
)
from policies.heads import HEADS, make_head

try:
    from tests.conftest_vla import INSTRUCTION, observation, single_torch_thread
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from conftest_vla import INSTRUCTION, observation, single_torch_thread  # noqa: F401

BACKBONE = "tiny-kosmos2"
POST = {"zero_first_step": False, "dead_zone": False}


def rollout(policy, steps=4):
    policy.reset(INSTRUCTION)
    return np.stack([policy.act(observation(seed)) for seed in range(steps)])


def trained_policy(name="lstm-recon", **kw):
    """A policy whose head differs from the factory default (seed 7 instead of 0), standing in for training."""
    return make_policy(name, backbone=BACKBONE, seed=7, **POST, **kw)


def team_pth(path, head, extra_state=None):
    """Write ``head`` the way the team's training scripts did."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=5e-5, weight_decay=1e-3)
    state = dict(head.state_dict())
    state.update(extra_state or {})
    cfg = head.config
    torch.save({
        "epoch": 9,
        "model_state_dict": state,
        "optimizer_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": {"last_epoch": 9},
        "loss": 0.0131,
        "mae": np.float64(0.2121),
        "model_config": {"vision_dim": cfg.vision_dim, "language_dim": cfg.text_dim, "action_dim": cfg.action_dim,
                         "hidden_dim": getattr(cfg, "hidden_dim", 256), "dropout": 0.4,
                         "use_vision_resampler": False, "clip_model_name": "ViT-B-32"},
    }, path)


def lightning_ckpt(path, head):
    torch.save({
        "epoch": 9,
        "global_step": 1234,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": {f"model.{k}": v for k, v in head.state_dict().items()},
        "optimizer_states": [],
    }, path)


# ------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "ckpt"])
def test_round_trip_gives_identical_actions(tmp_path, fmt):
    source = trained_policy("lstm-recon")
    expected = rollout(source)
    path = tmp_path / f"head.{fmt}"
    if fmt == "safetensors":
        save_checkpoint(path, source.head, {"episodes": 250}, backbone=BACKBONE)
    elif fmt == "pth":
        team_pth(path, source.head)
    else:
        lightning_ckpt(path, source.head)
    loaded = make_policy("lstm-recon", backbone=BACKBONE, checkpoint=path, **POST)
    np.testing.assert_array_equal(rollout(loaded), expected)
    assert loaded.checkpoint.format == fmt
    # the default seeded head acts differently, so the weights really came from the file
    assert not np.array_equal(rollout(make_policy("lstm-recon", backbone=BACKBONE, **POST)), expected)


@pytest.mark.parametrize("name", [n for n in HEADS if n != "robovlms"])
def test_every_head_round_trips_through_the_project_format(tmp_path, name):
    source = trained_policy(name, action_dim=3)
    path = save_checkpoint(tmp_path / f"{name}.safetensors", source.head, backbone=BACKBONE)
    loaded = make_policy(name, backbone=BACKBONE, path=path, **POST)  # path= as the registry passes it
    assert loaded.action_dim == 3  # taken from the checkpoint
    np.testing.assert_array_equal(rollout(loaded, 2), rollout(source, 2))


def test_registry_name_with_a_path_argument(tmp_path):
    source = trained_policy("case1")
    path = save_checkpoint(tmp_path / "c1.safetensors", source.head, backbone=BACKBONE)
    loaded = make_policy(f"case1:{path}", backbone=BACKBONE, **POST)
    np.testing.assert_array_equal(rollout(loaded, 2), rollout(source, 2))


def test_sidecar_records_the_head_and_metadata(tmp_path):
    head = make_head("lstm-recon", 32, 32, action_dim=3)
    path = save_checkpoint(tmp_path / "sub" / "lstm.safetensors", head, {"data": "sim-250ep", "epochs": 10},
                           backbone="tiny-kosmos2")
    info = json.loads(sidecar_path(path).read_text())
    assert info["format"] == "mobile-vla-sim.head"
    assert info["head"] == "lstm-recon" and info["head_class"] == "LSTMReconstruction"
    assert info["team_class"] is None and info["stored_dtype"] is None
    assert info["backbone"] == "tiny-kosmos2"
    assert (info["action_dim"], info["window_size"], info["chunk_size"]) == (3, 8, 10)
    assert info["head_config"]["hidden_size"] == 512
    assert info["meta"] == {"data": "sim-250ep", "epochs": 10}
    ckpt = load_checkpoint(path)
    assert ckpt.head_name == "lstm-recon" and ckpt.meta["epochs"] == 10


def test_float16_storage_loads_back_into_a_float32_head(tmp_path):
    head = make_head("case1", 32, 32)
    path = save_checkpoint(tmp_path / "c.safetensors", head, dtype=torch.float16)
    assert json.loads(sidecar_path(path).read_text())["stored_dtype"] == "float16"
    ckpt = load_checkpoint(path)
    assert all(t.dtype == torch.float16 for t in ckpt.state_dict.values())
    fresh = make_head("case1", 32, 32)
    load_into_head(fresh, ckpt)
    for key, value in head.state_dict().items():
        assert fresh.state_dict()[key].dtype == torch.float32
        torch.testing.assert_close(fresh.state_dict()[key], value.half().float())


def test_team_pth_metadata_and_frozen_keys(tmp_path):
    head = make_head("case1", 32, 32)
    path = tmp_path / "best_model.pth"
    team_pth(path, head, extra_state={"kosmos.vision_model.embeddings.patch_embedding.weight": torch.zeros(4, 3)})
    ckpt = load_checkpoint(path)
    assert ckpt.format == "pth"
    assert list(ckpt.frozen) == ["kosmos."]
    assert list(ckpt.frozen["kosmos."]) == ["vision_model.embeddings.patch_embedding.weight"]
    assert list(ckpt.frozen_weights()) == ["kosmos2"]
    assert ckpt.meta["epoch"] == 9 and ckpt.meta["mae"] == pytest.approx(0.2121)
    assert ckpt.head_config["language_dim"] == 32
    load_into_head(make_head("case1", 32, 32), ckpt)  # fits once the backbone keys are dropped


def test_save_is_atomic_and_overwrites(tmp_path):
    head = make_head("case1", 32, 32)
    path = save_checkpoint(tmp_path / "c.safetensors", head)
    save_checkpoint(path, make_head("case1", 32, 32))  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["c.json", "c.safetensors"]


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    import safetensors.torch

    head = make_head("case1", 32, 32)
    path = save_checkpoint(tmp_path / "c.safetensors", head, {"v": 1})
    before = path.read_bytes()

    def boom(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, make_head("case1", 32, 32), {"v": 2})
    assert path.read_bytes() == before
    assert json.loads(sidecar_path(path).read_text())["meta"] == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["c.json", "c.safetensors"]


def test_save_rejects_a_wrong_suffix_and_non_json_meta(tmp_path):
    head = make_head("case1", 32, 32)
    with pytest.raises(ValueError, match="safetensors"):
        save_checkpoint(tmp_path / "c.pth", head)
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "c.safetensors", head, {"bad": object()})
    assert not list(tmp_path.iterdir())


# -------------------------------------------------------------------------------------- mismatches


def test_sizes_come_from_the_tensors_when_the_file_has_no_config(tmp_path):
    small = make_head("case1", 32, 32, hidden_dim=64)
    path = tmp_path / "small.pth"
    torch.save({"model_state_dict": small.state_dict()}, path)  # no config: sizes from the shapes
    policy = make_policy("case1", backbone=BACKBONE, checkpoint=path)
    assert policy.head.config.hidden_dim == 64


def test_shape_mismatch_lists_the_keys(tmp_path):
    state = make_head("case1", 32, 32, hidden_dim=64).state_dict()
    state["action_head.3.weight"] = torch.zeros(100, 128)
    path = tmp_path / "odd.pth"
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        make_policy("case1", backbone=BACKBONE, checkpoint=path)
    msg = str(err.value)
    assert str(path) in msg and "shape mismatches" in msg
    assert "action_head.3.weight checkpoint [100, 128] vs model [64, 128]" in msg
    assert ("action_head.3.weight", (100, 128), (64, 128)) in err.value.mismatched
    assert not err.value.missing and not err.value.unexpected


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = make_head("case1", 32, 32).state_dict()
    state["renamed.weight"] = state.pop("action_head.0.weight")
    path = tmp_path / "renamed.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_into_head(make_head("case1", 32, 32), path)
    assert err.value.missing == ["action_head.0.weight"]
    assert err.value.unexpected == ["renamed.weight"]
    assert "missing keys (1): action_head.0.weight" in str(err.value)
    assert "unexpected keys (1): renamed.weight" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_compare_state_dicts():
    a = {"x": torch.zeros(2), "y": torch.zeros(3)}
    b = {"x": torch.zeros(4), "z": torch.zeros(1)}
    assert compare_state_dicts(a, b) == (["y"], ["z"], [("x", (4,), (2,))])


def test_head_name_backbone_and_width_mismatches(tmp_path):
    path = save_checkpoint(tmp_path / "c1.safetensors", make_head("case1", 32, 32), backbone=BACKBONE)
    with pytest.raises(CheckpointMismatchError, match="'case1' head .*, not 'lstm-recon'"):
        make_policy("lstm-recon", backbone=BACKBONE, checkpoint=path)
    with pytest.raises(CheckpointMismatchError, match="backbone 'tiny-kosmos2', not 'lite'"):
        make_policy("case1", backbone="lite", checkpoint=path)
    unnamed = save_checkpoint(tmp_path / "c1_lite.safetensors", make_head("case1", 1280, 384))
    with pytest.raises(CheckpointMismatchError, match=r"image features of width 1280 \(vision_dim\) but backbone "
                                                      r"'tiny-kosmos2' gives 32"):
        make_policy("case1", backbone=BACKBONE, checkpoint=unnamed)
    with pytest.raises(CheckpointMismatchError, match="action_dim=2"):
        make_policy("case1", backbone=BACKBONE, checkpoint=path, action_dim=3)


# ------------------------------------------------------------------------------ unreadable files


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError):
        make_policy("case1", backbone=BACKBONE, checkpoint=tmp_path / "nope.safetensors")
    path = save_checkpoint(tmp_path / "c.safetensors", make_head("case1", 32, 32))
    sidecar_path(path).unlink()
    with pytest.raises(CheckpointNotFoundError, match="sidecar"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["garbage.pth", "garbage.ckpt", "garbage.safetensors"])
def test_corrupt_files_name_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00not a checkpoint" * 8)
    if path.suffix == ".safetensors":
        sidecar_path(path).write_text(json.dumps({"format": "mobile-vla-sim.head", "head": "case1"}))
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, CheckpointError)


def test_truncated_torch_file(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model_state_dict": make_head("case1", 32, 32).state_dict()}, good)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match="truncated.pth"):
        load_checkpoint(bad)


def test_corrupt_sidecar(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", make_head("case1", 32, 32))
    sidecar_path(path).write_text("{ not json")
    with pytest.raises(CheckpointFormatError, match="c.json"):
        load_checkpoint(path)


class _Payload:
    """Unpickling this would create a file: it must never happen."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_objects_are_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointFormatError, match="weights_only"):
        load_checkpoint(path)
    assert not marker.exists()


def test_unsupported_layout(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"weights": [1, 2, 3]}, path)
    with pytest.raises(CheckpointFormatError, match="unsupported layout"):
        load_checkpoint(path)


def test_bundled_weights_exist_for_every_head_on_lite_only():
    from sim.bundle import BUNDLED_HEAD_CONFIGS

    total = 0
    for head in BUNDLED_HEAD_CONFIGS:
        path = default_checkpoint(head, "lite")
        assert path is not None and path.name == f"{head}_lite.safetensors"
        assert load_checkpoint(path).head_name == head
        total += path.stat().st_size + sidecar_path(path).stat().st_size
    assert total < 25e6
    assert default_checkpoint("case1", "tiny-kosmos2") is None
    assert default_checkpoint("robovlms", "lite") is None
