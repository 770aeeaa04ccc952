"""Every head on the ``tiny-kosmos2`` and ``lite`` backbones: builds through the registry, acts on an
environment observation with the right shape and finite values; head-level contracts (streams, window, chunk,
output range, z-axis weight, configs) and the team's forward-pass details (LayerNorm(2), CLIP normalisation over
the batch, the resampler over one token)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policies import make_policy
from policies.backbones import make_backbone
from policies.heads import HEADS, HeadInputError, head_class, head_from_config, make_head

try:
    from tests.conftest_vla import INSTRUCTION, observation, single_torch_thread
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from conftest_vla import INSTRUCTION, observation, single_torch_thread  # noqa: F401

HEAD_NAMES = list(HEADS)
EXPECTED = {  # name: (class name, team class, frame streams, instruction streams, window, chunk, activation)
    "case1": ("Simplified2DActionModelV2", True, ("image",), ("text",), 1, 1, "layernorm"),
    "case1-v1": ("Simplified2DActionModel", True, ("image",), ("text",), 1, 1, "layernorm"),
    "case2": ("CLIPNormalized2DActionModelV2", True, ("image", "clip_image"), ("text",), 1, 1, "layernorm"),
    "case3": ("SimpleCase3Model", True, ("image",), ("text",), 1, 1, "layernorm"),
    "hybrid": ("Kosmos2CLIPHybridModel", True, ("multimodal",), ("clip_text",), 1, 1, "linear"),
    "pure-kosmos2": ("PureKosmos2Model", True, ("multimodal",), (), 1, 1, "linear"),
    "robovlms": ("RoboVLMsHead", True, ("action_token",), (), 8, 10, "tanh"),
    "case4-recon": ("Case4Reconstruction", False, ("image",), ("text",), 8, 5, "linear"),
    "lstm-recon": ("LSTMReconstruction", False, ("image",), ("text",), 8, 10, "tanh"),
    "clip-lstm-recon": ("CLIPLSTMReconstruction", False, ("image", "clip_image"), ("text",), 8, 10, "tanh"),
    "final-fixed-recon": ("FinalFixedReconstruction", False, ("image",), ("text",), 1, 1, "linear"),
    "hybrid-ensemble-recon": ("HybridEnsembleReconstruction", False, ("image",), ("text",), 8, 10, "linear"),
}
POLICY_KW = {"robovlms": {"config": {"act_head": {"hidden_size": 16}, "image_size": 56,
                                     "tokenizer": {"max_text_len": 24}}},
             "final-fixed-recon": {"action_dim": 2},  # 3-DoF by default (seed 000's Final-Fixed)
             "hybrid-ensemble-recon": {"action_dim": 2}}


def small_head(name: str, **overrides) -> torch.nn.Module:
    """Head ``name`` at small widths: every stream 16 wide (instruction streams 12), no instruction -> 0."""
    cls = head_class(name)
    widths = {field: (12 if kind == "instruction" else 16)
              for kind, inputs in (("frame", cls.frame_inputs(cls.config_class())),
                                   ("instruction", cls.instruction_inputs(cls.config_class())))
              for _, field in inputs}
    values = {"vision_dim": 16, "text_dim": 0, **widths, **overrides}
    torch.manual_seed(0)  # the heads draw their init from torch's global RNG: the same weights whatever ran before
    return make_head(name, **values)


def inputs(head, batch: int = 1, frames: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, head.frame_dim, generator=gen), torch.randn(batch, head.instruction_dim,
                                                                                   generator=gen)


@pytest.fixture(scope="module", params=["tiny-kosmos2", "lite"])
def backbone(request):
    return make_backbone(request.param, streams=("clip_image", "clip_text"))  # cached: loaded once per session


def test_registry_covers_every_head():
    assert sorted(HEADS) == sorted(EXPECTED)
    for name, (cls_name, team, frames, instr, window, chunk, act) in EXPECTED.items():
        cls = HEADS[name]
        assert cls.__name__ == cls_name and cls.head_name == name
        assert bool(cls.team_class) == team and name.endswith("-recon") != team
        assert cls.output_activation == act
        cfg = cls.config_class()
        assert (cfg.window_size, cfg.chunk_size) == (window, chunk)
        head = small_head(name)
        assert (head.frame_streams, head.instruction_streams) == (frames, instr)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_every_head_acts_on_every_backbone(name, backbone):
    if name == "robovlms" and backbone.name == "lite":
        with pytest.raises(ValueError, match="action_token"):
            make_policy(name, backbone="lite", **POLICY_KW[name])
        return
    policy = make_policy(name, backbone=backbone.name, zero_first_step=False, dead_zone=False,
                         **POLICY_KW.get(name, {}))
    dims = policy.backbone.stream_dims()
    assert policy.head.frame_dim == sum(dims[s] for s in policy.frame_streams)
    assert policy.head.instruction_dim == sum(dims[s] for s in policy.instruction_streams)
    policy.reset(INSTRUCTION)
    actions = [policy.act(observation(seed)) for seed in range(3)]
    for action in actions:
        assert action.dtype == np.float32 and action.shape == (3,)
        assert np.all(np.isfinite(action))
        assert action[2] == 0.0  # action_dim 2: angular_z padded
        assert np.all(np.abs(action) <= 1.5 + 1e-6)  # clipped
    assert len(policy.latencies_ms) == 3
    chunk = policy.last_chunk
    assert chunk.shape == (EXPECTED[name][5], 2)
    assert np.any(chunk != 0)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_three_dim_variant_outputs_angular_z(name):
    head = small_head(name, action_dim=3).eval()
    weights = [head.final_fixed.z_axis_weight, head.advanced.z_axis_weight] if name == "hybrid-ensemble-recon" \
        else [head.z_axis_weight]  # the ensemble's members weight their own outputs
    assert all(w.tolist() == pytest.approx([1.0, 1.0, 0.05]) for w in weights)
    vision, text = inputs(head, seed=1)
    with torch.inference_mode():
        weighted = head(vision, text)
        for w in weights:
            w[2] = 1.0
        unweighted = head(vision, text)
    assert weighted.shape == (1, head.chunk_size, 3)
    assert torch.allclose(weighted[..., 2], 0.05 * unweighted[..., 2], atol=1e-6)
    assert torch.equal(weighted[..., :2], unweighted[..., :2])


def test_larger_camera_frames_are_resized_by_the_backbone(backbone):
    policy = make_policy("case1", backbone=backbone.name, zero_first_step=False, use_bundled=False)
    policy.reset(INSTRUCTION)
    action = policy.act(observation(2, size=(360, 640)))
    assert action.shape == (3,) and np.all(np.isfinite(action))


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_head_forward_shapes_and_ranges(name):
    torch.manual_seed(0)
    head = small_head(name).eval()
    out = head(*inputs(head, batch=3))
    assert out.shape == (3, head.chunk_size, 2)
    assert torch.isfinite(out).all()
    if head.output_activation == "tanh":
        assert out.abs().max() < 1.0
    # the config is JSON-serialisable and rebuilds an identical architecture
    cfg = json.loads(json.dumps(head.config.to_dict()))
    rebuilt = head_from_config(name, cfg)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in head.state_dict().items()}


def test_single_frame_heads_read_the_newest_frame_only():
    vision_changed = {}
    for name in HEAD_NAMES:
        head = small_head(name).eval()
        vision, text = inputs(head)
        changed = vision.clone()
        changed[:, :-1] += 5.0  # change every frame but the newest
        with torch.inference_mode():
            vision_changed[name] = not torch.allclose(head(vision, text), head(changed, text))
    single = {n for n in HEAD_NAMES if EXPECTED[n][4] == 1}
    assert {n for n, sensitive in vision_changed.items() if not sensitive} == single


def test_heads_depend_on_the_instruction():
    from policies.heads import config_fields

    for name in HEAD_NAMES:
        # Without the case heads' final LayerNorm(2), which saturates to the same (1, -1) for many inputs and would
        # hide the dependence this test looks for.
        head = small_head(name, **({"final_norm": False} if "final_norm" in config_fields(name) else {})).eval()
        vision, _ = inputs(head)
        if head.instruction_dim == 0:  # pure-kosmos2 / robovlms: the instruction is inside their frame features
            assert not head.instruction_streams
            continue
        with torch.inference_mode():
            a = head(vision, torch.zeros(1, head.instruction_dim))
            b = head(vision, torch.ones(1, head.instruction_dim))
        assert not torch.allclose(a, b), name


@pytest.mark.parametrize("name", ["case1", "case1-v1", "case2", "case3"])
def test_final_layernorm_puts_every_action_on_one_line(name):
    """The team's ``final_norm = LayerNorm(2)``: outputs are ``(s, -s) * gamma + beta`` with ``|s| <= 1``."""
    head = small_head(name).eval()
    with torch.no_grad():
        head.final_norm.weight.copy_(torch.tensor([0.5, 1.0]))
        head.final_norm.bias.copy_(torch.tensor([0.5, 0.0]))
        out = head(*inputs(head, batch=64))[:, 0]
    s = (out[:, 0] - 0.5) / 0.5
    assert torch.allclose(out[:, 1], -s, atol=1e-5)  # one fixed line through beta
    assert s.abs().max() <= 1.0 + 1e-5


def test_final_norm_ablation_switch_drops_the_layernorm_only():
    for name in ("case1", "case2"):
        team, ablated = small_head(name), small_head(name, final_norm=False)
        assert set(team.state_dict()) - set(ablated.state_dict()) == {"final_norm.weight", "final_norm.bias"}
        assert team.config.final_norm and not ablated.config.final_norm  # the team's architecture by default
        out = ablated.eval()(*inputs(ablated, batch=32))[:, 0]
        centred = out - out.mean(0)
        assert torch.linalg.matrix_rank(centred, atol=1e-4) == 2  # no longer one line


def test_case2_clip_normalisation_attends_over_the_batch():
    """Batch 1: the aligned feature is the frame's own normalised CLIP feature, whatever clip_proj is; in a batch,
    each sample's output depends on the other samples' CLIP features (the team's training)."""
    torch.manual_seed(0)
    norm = small_head("case2").eval().clip_norm_vision
    feats, clip = torch.randn(2, 256), torch.randn(2, 16)
    with torch.inference_mode():
        expected = norm.norm(feats[:1] + norm.inverse_proj(torch.nn.functional.normalize(clip[:1], dim=-1)))
        torch.testing.assert_close(norm(feats[:1], clip[:1]), expected)
        other = clip.clone()
        other[1] = torch.randn(16)  # change the second sample's CLIP feature only
        assert not torch.allclose(norm(feats, clip)[0], norm(feats, other)[0])


def test_case2_switches_follow_the_team_model_config():
    plain = small_head("case2", use_clip_normalization=False, use_vision_resampler=False)
    assert plain.frame_streams == ("image",) and plain.frame_dim == 16
    assert not any(k.startswith("vision_resampler.") for k in plain.state_dict())
    assert any(k.startswith("clip_norm_vision.") for k in plain.state_dict())  # built, as theirs, but unused
    with pytest.raises(ValueError, match="clip_norm"):
        small_head("case2", clip_norm_layers=False)


def test_wrong_feature_widths_raise_a_clear_error():
    head = small_head("case1")
    with pytest.raises(HeadInputError, match=r"\(B, T, 16\)"):
        head(torch.randn(1, 8, 15), torch.randn(1, 12))
    with pytest.raises(HeadInputError, match="text"):
        head(torch.randn(1, 8, 16), torch.randn(1, 11))


def test_case4_recon_exposes_its_hierarchical_outputs():
    head = small_head("case4-recon").eval()
    with torch.inference_mode():
        out = head.forward_hierarchical(*inputs(head, batch=2))
    assert out["actions"].shape == (2, 5, 2)
    assert out["task_logits"].shape == (2, 10)
    assert out["plan"].shape == (2, 5, 512)
    assert out["predicted_states"].shape == (2, 5, 64)


def test_random_heads_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = make_policy("lstm-recon", backbone="tiny-kosmos2")
    after = torch.rand(1)
    b = make_policy("lstm-recon", backbone="tiny-kosmos2")
    c = make_policy("lstm-recon", backbone="tiny-kosmos2", seed=1)
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
    with pytest.raises(ValueError, match="no argument or config field no_such_field"):
        make_policy("case1", backbone="tiny-kosmos2", head_overrides={"no_such_field": 1})
    with pytest.raises(ValueError, match="no argument or config field typo"):
        make_policy("case1", backbone="tiny-kosmos2", typo=1)  # a policy argument that is no config field either
    with pytest.raises(TypeError, match="robovlms"):
        make_policy("case1", backbone="tiny-kosmos2", config={"act_head": {}})


def test_ensemble_factory_mixes_case2_and_lstm_recon_with_weight_0_6():
    plain = {"backbone": "tiny-kosmos2", "clip": False, "dead_zone": False, "zero_first_step": False}
    ens = make_policy("ensemble", **plain)
    first = make_policy("case2", denormalize=False, **plain)
    second = make_policy("lstm-recon", denormalize=False, **plain)
    assert (ens.first.head.head_name, ens.second.head.head_name, ens.weight) == ("case2", "lstm-recon", 0.6)
    for p in (ens, first, second):
        p.reset(INSTRUCTION)
    for seed in range(3):
        obs = observation(seed)
        a1, a2 = first.act(obs), second.act(obs)
        np.testing.assert_allclose(ens.act(obs), 1.15 * (0.6 * a1 + 0.4 * a2), atol=1e-5)
    with pytest.raises(TypeError, match="first_checkpoint"):
        make_policy("ensemble", backbone="tiny-kosmos2", checkpoint="x.safetensors")


def test_registry_descriptions_name_the_models_and_their_provenance():
    from policies import describe
    from policies.heads import provenance

    assert describe("case1").startswith("team architecture (Simplified2DActionModelV2)")
    assert "reconstruction" in describe("lstm-recon") and "ensemble" in describe("ensemble").lower()
    assert provenance("case2") == "team architecture (CLIPNormalized2DActionModelV2)"
    assert provenance("case4-recon") == "our reconstruction"
