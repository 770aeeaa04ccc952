"""LoRA on the backbone's vision tower (peft): the trunk / top split, training with the head on the tiny Kosmos-2,
the adapter in the checkpoint, merged when the policy is built; the shared frozen backbone never changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from foundations.errors import ConfigError
from policies import make_policy
from policies.backbones import make_backbone
from policies.backbones.lora import LoraAdapter, LoraSettings, adapter_state, add_lora, merge_lora
from policies.checkpoints import CheckpointFormatError, load_checkpoint, sidecar_path
from sim import generate
from sim.training.supervised import train

try:
    from tests.conftest_vla import INSTRUCTION, single_torch_thread  # noqa: F401  (module fixture)
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from conftest_vla import INSTRUCTION, single_torch_thread  # noqa: F401

FRAMES = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
SETTINGS = LoraSettings(r=4, alpha=8, dropout=0.0)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    out = tmp_path_factory.mktemp("episodes")
    assert generate.main(["--out", str(out), "--episodes", "4", "--image-size", "64x64", "--workers", "1",
                          "--layouts", "1box_hori_left", "1box_hori_right", "--distances", "close",
                          "--no-progress"]) == 0
    return out


@pytest.mark.parametrize("name, layers, first_target", [
    ("tiny-kosmos2", 1, "encoder.layers.1.self_attn.k_proj"),
    ("tiny-kosmos2", 2, "encoder.layers.0.self_attn.k_proj"),
    ("lite", 1, "_conv_head"),
    ("lite", 3, "_blocks.14._expand_conv"),
])
def test_top_of_trunk_is_the_frozen_image_stream(name, layers, first_target):
    backbone = make_backbone(name)
    split = backbone.image_split(layers)
    assert split.targets[0] == first_target
    with torch.no_grad():
        torch.testing.assert_close(split.top(split.trunk(FRAMES)), backbone.encode_frames(FRAMES, ("image",)))
    with pytest.raises(ConfigError, match="LoRA layers must be in"):
        backbone.image_split(99)


@pytest.mark.parametrize("name", ["tiny-kosmos2", "lite"])
def test_a_trained_adapter_merges_into_a_fresh_backbone(name):
    trained = make_backbone(name, cache=False)
    split = trained.image_split(1)
    trunk = split.trunk(FRAMES)
    params = add_lora(split, SETTINGS, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(split.top(trunk), make_backbone(name).encode_frames(FRAMES, ("image",)))  # B = 0
    optimizer = torch.optim.SGD(params, lr=0.5)
    for _ in range(3):  # push the first feature up (the top may end in a LayerNorm: a norm would hardly move)
        loss = -split.top(trunk)[:, 0].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        adapted = split.top(trunk)
    adapter = LoraAdapter(SETTINGS, split.targets, adapter_state(split))
    merged = merge_lora(make_backbone(name, cache=False), adapter)
    out = merged.encode_frames(FRAMES, ("image",))
    torch.testing.assert_close(out, adapted, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out, make_backbone(name).encode_frames(FRAMES, ("image",)), atol=1e-4)
    assert not any("lora" in n for n, _ in merged.image_split(1).root.named_modules())  # plain modules again


def test_lora_training_saves_the_adapter_and_the_policy_uses_it(episodes, tmp_path):
    frozen = make_backbone("tiny-kosmos2").encode_frames(FRAMES, ("image",))
    options = dict(backbone="tiny-kosmos2", epochs=2, batch_size=8, lr=1e-2, cache_dir=tmp_path / "cache",
                   progress=False, patience=10, lora=SETTINGS, head_overrides={"hidden_dim": 16})
    summary = train("case1", [episodes], tmp_path / "a", **options)
    ckpt = load_checkpoint(summary["checkpoint"])
    assert ckpt.backbone_lora is not None and ckpt.backbone_lora.settings == SETTINGS
    assert ckpt.backbone_lora.tensors and all(".lora_" in k for k in ckpt.backbone_lora.tensors)
    assert json.loads(sidecar_path(summary["checkpoint"]).read_text())["meta"]["recipe"]["lora"]["r"] == 4
    policy = make_policy("case1", backbone="tiny-kosmos2", checkpoint=summary["checkpoint"])
    adapted = policy.backbone.encode_frames(FRAMES, ("image",))
    assert not torch.allclose(adapted, frozen)
    torch.testing.assert_close(make_backbone("tiny-kosmos2").encode_frames(FRAMES, ("image",)), frozen)  # untouched
    policy.reset(INSTRUCTION)
    assert policy.act({"image": FRAMES[0], "instruction": INSTRUCTION}).shape == (3,)
    again = train("case1", [episodes], tmp_path / "b", **options)  # same seed: the same adapter
    for key, value in ckpt.backbone_lora.tensors.items():
        torch.testing.assert_close(load_checkpoint(again["checkpoint"]).backbone_lora.tensors[key], value)
    resumed = train("case1", [episodes], tmp_path / "a", **{**options, "epochs": 3}, resume=True)
    assert resumed["epochs_run"] == 3
    with pytest.raises(ConfigError, match="with LoRA, this run is without LoRA"):
        train("case1", [episodes], tmp_path / "a", **{**options, "lora": None, "epochs": 4}, resume=True)


def test_lora_needs_a_head_reading_the_image_stream_only(episodes, tmp_path):
    with pytest.raises(ConfigError, match="reads image\\+clip_image frames"):
        train("case2", [episodes], tmp_path / "o", backbone="tiny-kosmos2", epochs=1, cache_dir=tmp_path / "c",
              progress=False, lora=SETTINGS)


def test_a_malformed_adapter_entry_is_a_checkpoint_format_error(episodes, tmp_path):
    summary = train("case1", [episodes], tmp_path / "a", backbone="tiny-kosmos2", epochs=1, progress=False,
                    cache_dir=tmp_path / "cache", lora=SETTINGS, head_overrides={"hidden_dim": 16})
    side = sidecar_path(summary["checkpoint"])
    info = json.loads(side.read_text())
    info["backbone_lora"]["settings"]["r"] = "big"
    side.write_text(json.dumps(info))
    with pytest.raises(CheckpointFormatError, match="backbone_lora.settings: LoRA r must be"):
        load_checkpoint(summary["checkpoint"])
