"""Every head on the ``tiny-kosmos2`` and ``lite`` backbones: builds through the registry, acts on an
environment observation with the right shape and finite values; head-level contracts (window, chunk,
output range, z-axis weight, configs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policies import make_policy
from policies.backbones import make_backbone
from policies.heads import HEADS, HeadInputError, head_from_config, make_head

try:
    from tests.conftest_vla import INSTRUCTION, observation, single_torch_thread
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from conftest_vla import INSTRUCTION, observation, single_torch_thread  # noqa: F401

HEAD_NAMES = ["case1", "case2", "case3", "case4", "lstm", "hybrid"]
EXPECTED = {  # name: (class name, window_size, chunk_size, output activation)
    "case1": ("Simplified2DActionModelV2", 1, 1, "linear"),
    "case2": ("CLIPNormalized2DActionModelV2", 8, 1, "linear"),
    "case3": ("SimpleCase3Model", 1, 1, "linear"),
    "case4": ("RoboVLMsCompleteModel", 8, 5, "linear"),
    "lstm": ("MobileVLALSTMDecoder", 8, 10, "tanh"),
    "hybrid": ("Kosmos2CLIPHybridModel", 8, 10, "tanh"),
}


@pytest.fixture(scope="module", params=["tiny-kosmos2", "lite"])
def backbone(request):
    return make_backbone(request.param)  # cached per process: loaded once for the whole session


def test_registry_covers_every_head():
    assert sorted(HEADS) == sorted(HEAD_NAMES)
    for name, (cls_name, window, chunk, act) in EXPECTED.items():
        cls = HEADS[name]
        assert cls.__name__ == cls_name
        assert cls.head_name == name
        assert cls.output_activation == act
        cfg = cls.config_class()
        assert (cfg.window_size, cfg.chunk_size) == (window, chunk)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_every_head_acts_on_every_backbone(name, backbone):
    policy = make_policy(name, backbone=backbone.name, zero_first_step=False, dead_zone=False)
    assert policy.head.config.vision_dim == backbone.vision_dim
    assert policy.head.config.text_dim == backbone.text_dim
    policy.reset(INSTRUCTION)
    actions = [policy.act(observation(seed)) for seed in range(3)]
    for action in actions:
        assert action.dtype == np.float32 and action.shape == (3,)
        assert np.all(np.isfinite(action))
        assert action[2] == 0.0  # action_dim 2: angular_z padded
        assert np.all(np.abs(action) <= 1.5 + 1e-6)  # clipped
    assert len(policy.latencies_ms) == 3
    chunk = policy.last_chunk
    assert chunk.shape == (EXPECTED[name][2], 2)
    assert np.any(chunk != 0)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_three_dim_variant_outputs_angular_z(name):
    bb = make_backbone("tiny-kosmos2")
    policy = make_policy(name, backbone="tiny-kosmos2", action_dim=3, zero_first_step=False, dead_zone=False,
                         denormalize=False)
    assert policy.head.z_axis_weight.tolist() == pytest.approx([1.0, 1.0, 0.05])
    policy.reset(INSTRUCTION)
    action = policy.act(observation(1))
    assert action.shape == (3,) and np.all(np.isfinite(action))
    # the z output is 0.05 x the raw one: compare with the same head and weight 1
    head = policy.head
    frames = bb.encode_images(observation(1)["image"]).unsqueeze(0)
    text = bb.encode_text([INSTRUCTION])
    with torch.inference_mode():
        weighted = head(frames, text)
        head.z_axis_weight[2] = 1.0
        unweighted = head(frames, text)
    assert torch.allclose(weighted[..., 2], 0.05 * unweighted[..., 2], atol=1e-6)
    assert torch.equal(weighted[..., :2], unweighted[..., :2])


def test_larger_camera_frames_are_resized_by_the_backbone(backbone):
    policy = make_policy("case1", backbone=backbone.name, zero_first_step=False)
    policy.reset(INSTRUCTION)
    action = policy.act(observation(2, size=(360, 640)))
    assert action.shape == (3,) and np.all(np.isfinite(action))


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_head_forward_shapes_and_ranges(name):
    torch.manual_seed(0)
    head = make_head(name, vision_dim=16, text_dim=12).eval()
    out = head(torch.randn(3, 8, 16), torch.randn(3, 12))
    assert out.shape == (3, head.chunk_size, 2)
    assert torch.isfinite(out).all()
    if head.output_activation == "tanh":
        assert out.abs().max() < 1.0
    # the config is JSON-serialisable and rebuilds an identical architecture
    cfg = json.loads(json.dumps(head.config.to_dict()))
    rebuilt = head_from_config(name, cfg)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in head.state_dict().items()}


def test_case1_uses_the_newest_frame_only_and_lstm_the_window():
    torch.manual_seed(0)
    vision, text = torch.randn(1, 8, 16), torch.randn(1, 12)
    changed = vision.clone()
    changed[:, :-1] += 5.0  # change every frame but the newest
    for name, sensitive in (("case1", False), ("case3", False), ("case2", True), ("case4", True),
                            ("lstm", True), ("hybrid", True)):
        head = make_head(name, 16, 12).eval()
        with torch.inference_mode():
            same = torch.allclose(head(vision, text), head(changed, text))
        assert same != sensitive, name


def test_heads_depend_on_the_instruction():
    torch.manual_seed(0)
    vision = torch.randn(1, 8, 16)
    for name in HEAD_NAMES:
        head = make_head(name, 16, 12).eval()
        with torch.inference_mode():
            a, b = head(vision, torch.zeros(1, 12)), head(vision, torch.ones(1, 12))
        assert not torch.allclose(a, b), name


def test_wrong_feature_widths_raise_a_clear_error():
    head = make_head("case1", 16, 12)
    with pytest.raises(HeadInputError, match=r"\(B, T, 16\)"):
        head(torch.randn(1, 8, 15), torch.randn(1, 12))
    with pytest.raises(HeadInputError, match="text"):
        head(torch.randn(1, 8, 16), torch.randn(1, 11))


def test_case4_exposes_its_hierarchical_outputs():
    head = make_head("case4", 16, 12).eval()
    with torch.inference_mode():
        out = head.forward_hierarchical(torch.randn(2, 8, 16), torch.randn(2, 12))
    assert out["actions"].shape == (2, 5, 2)
    assert out["task_logits"].shape == (2, 10)
    assert out["plan"].shape == (2, 5, 512)
    assert out["predicted_states"].shape == (2, 5, 64)


def test_random_heads_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = make_policy("lstm", backbone="tiny-kosmos2")
    after = torch.rand(1)
    b = make_policy("lstm", backbone="tiny-kosmos2")
    c = make_policy("lstm", backbone="tiny-kosmos2", seed=1)
    assert torch.equal(before, after)
    sa, sb, sc = a.head.state_dict(), b.head.state_dict(), c.head.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_unknown_names_are_rejected():
    from policies.backbones import UnknownBackboneError
    from policies.heads import UnknownHeadError

    with pytest.raises(UnknownHeadError):
        make_head("case9", 4, 4)
    with pytest.raises(UnknownBackboneError):
        make_policy("case1", backbone="resnet")
    with pytest.raises(ValueError, match="head_overrides"):
        make_policy("case1", backbone="tiny-kosmos2", head_overrides={"no_such_field": 1})


def test_ensemble_factory_mixes_case2_and_lstm_with_weight_0_6():
    plain = {"backbone": "tiny-kosmos2", "clip": False, "dead_zone": False, "zero_first_step": False}
    ens = make_policy("ensemble", **plain)
    first = make_policy("case2", denormalize=False, **plain)
    second = make_policy("lstm", denormalize=False, **plain)
    assert (ens.first.head.head_name, ens.second.head.head_name, ens.weight) == ("case2", "lstm", 0.6)
    for p in (ens, first, second):
        p.reset(INSTRUCTION)
    for seed in range(3):
        obs = observation(seed)
        a1, a2 = first.act(obs), second.act(obs)
        np.testing.assert_allclose(ens.act(obs), 1.15 * (0.6 * a1 + 0.4 * a2), atol=1e-5)
    with pytest.raises(TypeError, match="first_checkpoint"):
        make_policy("ensemble", backbone="tiny-kosmos2", checkpoint="x.safetensors")


def test_registry_descriptions_name_the_models():
    from policies import describe

    assert describe("case1").startswith("Case 1 Simplified2DActionModelV2")
    assert "LSTM" in describe("lstm") and "ensemble" in describe("ensemble").lower()
