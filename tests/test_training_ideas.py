"""The team's training ideas (seeds 000 / 001) as heads and ``sim.train`` options: AdaptiveFeatureFusion, the
Final-Fixed head and loss, HybridEnsemble, hard-negative sampling, distance-aware augmentation, the strategies."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from foundations.errors import ConfigError
from policies.heads import make_head
from sim import generate
from sim import train as train_cli
from sim.training.augmentation import DISTANCE_FACTORS, AugmentedCopy, check_factors, episode_copies
from sim.training.recipes import STRATEGIES, apply_strategy
from sim.training.sampling import HardNegativeSampler
from sim.training.supervised import masked_loss, step_losses, train

try:
    from tests.conftest_vla import single_torch_thread  # noqa: F401  (module fixture)
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from conftest_vla import single_torch_thread  # noqa: F401


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    out = tmp_path_factory.mktemp("episodes")
    code = generate.main(["--out", str(out), "--episodes", "6", "--image-size", "64x64", "--workers", "1",
                          "--layouts", "1box_hori_left", "1box_hori_right", "--distances", "close", "far",
                          "--no-progress"])
    assert code == 0
    return out


def _inputs(vision_dim=16, text_dim=12, batch=4, frames=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, vision_dim, generator=gen), torch.randn(batch, text_dim, generator=gen)


# ------------------------------------------------------------------------------------------------ heads
def test_adaptive_fusion_weights_the_two_parts_with_a_softmax():
    from policies.heads.fusion import AdaptiveFeatureFusion

    torch.manual_seed(0)
    fusion = AdaptiveFeatureFusion(6, 4, 16)
    assert [tuple(p.shape) for p in fusion.parameters()] == [(8, 10), (8,), (2, 8), (2,)]  # hidden // 2 = 8
    vision, language = torch.randn(5, 6), torch.randn(5, 4)
    weights = fusion.weights(vision, language)
    torch.testing.assert_close(weights.sum(-1), torch.ones(5))
    out = fusion(vision, language)
    torch.testing.assert_close(out, torch.cat([vision * weights[:, :1], language * weights[:, 1:]], -1))
    with torch.no_grad():  # all weight to vision: the language half vanishes
        fusion.adaptive_weights[2].weight.zero_()
        fusion.adaptive_weights[2].bias.copy_(torch.tensor([50.0, -50.0]))
    torch.testing.assert_close(fusion(vision, language)[:, :6], vision)
    assert fusion(vision, language)[:, 6:].abs().max() < 1e-12


@pytest.mark.parametrize("name", ["case1", "lstm-recon", "final-fixed-recon"])
def test_adaptive_fusion_switch_adds_the_module_and_changes_the_output(name):
    small = {"lstm-recon": {"in_features": 16, "hidden_size": 16, "num_layers": 1}}.get(name, {"hidden_dim": 16})
    torch.manual_seed(0)
    plain = make_head(name, 16, 12, **small).eval()
    torch.manual_seed(0)
    fused = make_head(name, 16, 12, adaptive_fusion=True, **small).eval()
    new = set(fused.state_dict()) - set(plain.state_dict())
    assert new and all(k.startswith("fusion.adaptive_weights.") for k in new)
    vision, text = _inputs(frames=8)
    with torch.no_grad():
        assert not torch.allclose(plain(vision, text), fused(vision, text))


def test_case1_checkpoints_with_fusion_rebuild_with_it(tmp_path):
    from policies import make_policy
    from policies.checkpoints import save_checkpoint

    head = make_head("case1", 32, 32, adaptive_fusion=True, final_norm=False)
    path = save_checkpoint(tmp_path / "c1.safetensors", head, backbone="tiny-kosmos2")
    policy = make_policy("case1", backbone="tiny-kosmos2", checkpoint=path)
    assert policy.head.config.adaptive_fusion and policy.head.fusion is not None


def test_final_fixed_has_a_learnable_z_axis_weight():
    torch.manual_seed(0)
    head = make_head("final-fixed-recon", 16, 12, action_dim=3, hidden_dim=32)
    assert isinstance(head.z_axis_weight, torch.nn.Parameter)
    assert head.z_axis_weight.tolist() == pytest.approx([1.0, 1.0, 0.05])
    assert head.config.dropout == 0.2 and head.dropout.p == 0.2
    head.eval()
    vision, text = _inputs()
    out = head(vision, text)
    raw = head._forward(vision, text).reshape(out.shape)
    torch.testing.assert_close(out, raw * torch.tensor([1.0, 1.0, 0.05]))
    out.sum().backward()
    assert head.z_axis_weight.grad is not None and head.z_axis_weight.grad.abs().sum() > 0
    assert "z_axis_weight" in head.state_dict()  # saved with the checkpoint, so a trained weight survives
    assert make_head("final-fixed-recon", 16, 12).action_dim == 2 and "z_axis_weight" not in \
        make_head("final-fixed-recon", 16, 12).state_dict()


def test_hybrid_ensemble_mixes_its_members_with_a_learnable_weight():
    torch.manual_seed(0)
    head = make_head("hybrid-ensemble-recon", 16, 12, action_dim=3, window_size=1, chunk_size=1, hidden_dim=32,
                     advanced="case1", advanced_config={"final_norm": False, "hidden_dim": 16}).eval()
    assert head.ensemble_weight.item() == pytest.approx(0.6)
    assert head.advanced.head_name == "case1" and not head.advanced.config.final_norm
    vision, text = _inputs()
    out = head(vision, text)
    expected = 0.6 * head.final_fixed(vision, text) + 0.4 * head.advanced(vision, text)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert head.ensemble_weight.grad is not None and head.ensemble_weight.grad != 0
    with torch.no_grad():
        head.ensemble_weight.fill_(1.0)
    torch.testing.assert_close(head(vision, text), head.final_fixed(vision, text))


@pytest.mark.parametrize("overrides, message", [
    ({"advanced": "case2"}, "advanced must be one of"),
    ({"advanced_config": {"window_size": 3}}, "cannot set window_size"),
    ({"advanced": "case1", "advanced_config": {"no_such": 1}}, "no field"),
])
def test_hybrid_ensemble_refuses_bad_members(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_head("hybrid-ensemble-recon", 16, 12, **overrides)


# ------------------------------------------------------------------------------------------------ loss
def test_final_fixed_loss_is_mse_plus_a_tenth_of_l1_on_z_weighted_actions():
    pred = torch.tensor([[[0.5, -0.2, 1.0]]])
    target = torch.tensor([[[0.1, 0.3, 0.0]]])
    d = torch.tensor([0.4, -0.5, 0.05])  # (pred - target) * [1, 1, 0.05]
    expected = (d.pow(2) + 0.1 * d.abs()).mean()
    torch.testing.assert_close(step_losses(pred, target, "final-fixed")[0, 0], expected)
    two = step_losses(pred[..., :2], target[..., :2], "final-fixed")[0, 0]  # 2-DoF: weights [1, 1]
    torch.testing.assert_close(two, (d[:2].pow(2) + 0.1 * d[:2].abs()).mean())
    huber = torch.nn.functional.huber_loss(pred, target, reduction="none", delta=0.1).mean()
    torch.testing.assert_close(step_losses(pred, target, "huber")[0, 0], huber)
    mask = torch.tensor([[1.0]])
    torch.testing.assert_close(masked_loss(pred, target, mask, "final-fixed"), expected)
    with pytest.raises(ConfigError, match="loss must be one of"):
        step_losses(pred, target, "l2")


# ------------------------------------------------------------------------------------------------ sampling
def test_hard_negative_sampler_draws_thirty_percent_from_the_high_loss_pool():
    n = 1000
    sampler = HardNegativeSampler(n, 0.3, 0.1, torch.Generator().manual_seed(0))
    first = list(sampler)
    assert len(first) == n and sampler.hard is None  # no losses yet: uniform draws
    losses = torch.arange(n, dtype=torch.float32)  # window i has loss i: the pool is the last 100
    pool = sampler.set_losses(losses)
    assert pool.tolist() == list(range(900, 1000))
    draws = torch.tensor(list(sampler))
    in_pool = (draws >= 900).float().mean().item()
    assert in_pool == pytest.approx(0.3 + 0.7 * 0.1, abs=0.04)  # 30 % from the pool, plus uniform draws landing in it
    again = HardNegativeSampler(n, 0.3, 0.1, torch.Generator().manual_seed(0))
    list(again)
    again.set_losses(losses)
    assert torch.equal(torch.tensor(list(again)), draws)  # same seed, same epochs
    with pytest.raises(ConfigError, match="fraction"):
        HardNegativeSampler(n, 1.5)


# ------------------------------------------------------------------------------------------------ augmentation
def test_distance_factors_and_kinds_follow_the_notes():
    assert DISTANCE_FACTORS == {"close": 8, "medium": 5, "far": 8}
    copies = {d: episode_copies("ep.h5", d, DISTANCE_FACTORS, 0) for d in ("close", "medium", "far")}
    assert {d: len(c) for d, c in copies.items()} == DISTANCE_FACTORS
    assert {d: {c.kind for c in cs} for d, cs in copies.items()} == {
        "close": {"precision"}, "medium": {"balanced"}, "far": {"speed"}}
    assert episode_copies("ep.h5", None, DISTANCE_FACTORS, 0) == []
    with pytest.raises(ConfigError, match="unknown distance 'near'"):
        check_factors({"near": 3})
    with pytest.raises(ConfigError, match="whole number"):
        check_factors({"far": -1})


def test_augmented_copies_are_deterministic_and_differ_by_kind():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (9, 32, 40, 3), dtype=np.uint8)
    precision = AugmentedCopy("precision", "a.h5", 0, 0)
    out = precision.apply(frames)
    assert out.shape == frames.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, AugmentedCopy("precision", "a.h5", 0, 0).apply(frames))
    assert not np.array_equal(out, AugmentedCopy("precision", "a.h5", 1, 0).apply(frames))
    assert not np.array_equal(out, frames)
    assert np.abs(out.astype(int) - frames).mean() < np.abs(
        AugmentedCopy("balanced", "a.h5", 0, 0).apply(frames).astype(int) - frames).mean()  # precision is milder
    speed = AugmentedCopy("speed", "a.h5", 0, 0)
    kept = speed.frame_indices(9)
    assert kept[-1] == 8 and np.all(np.diff(kept) <= 2) and len(kept) in (5, 6)  # every other frame + the stop
    assert speed.apply(frames).shape == (len(kept), 32, 40, 3)
    assert {AugmentedCopy("speed", "a.h5", i, 0).frame_indices(9)[0] for i in range(8)} == {0, 1}  # both phases


# ------------------------------------------------------------------------------------------------ strategies
def test_strategies_are_the_notes_values_and_layer_under_explicit_ones():
    assert {k: (v["head"]["dropout"], v["lr"], v["weight_decay"], v["epochs"], v["patience"])
            for k, v in STRATEGIES.items()} == {"final-fixed": (0.2, 1e-3, 1e-5, 6, None),
                                                "balanced-hybrid": (0.3, 1e-4, 1e-4, 15, None),
                                                "advanced": (0.4, 5e-5, 1e-3, 20, 7)}
    kwargs, head = apply_strategy("balanced-hybrid", "case1", {"lr": 3e-4}, {"final_norm": False},
                                  defaults={"lr": 1e-3, "epochs": 30, "patience": 5}, head_defaults={"dropout": 0.1})
    assert kwargs == {"lr": 3e-4, "weight_decay": 1e-4, "epochs": 15, "patience": 15}  # no early stopping
    assert head == {"dropout": 0.3, "action_dim": 3, "z_axis_weight": 0.05, "final_norm": False}
    assert apply_strategy(None, "case1", {"lr": 1.0}, {}) == ({"lr": 1.0}, {})
    with pytest.raises(ConfigError, match="lstm-recon does not have"):
        apply_strategy("advanced", "lstm-recon", {}, {})


# ------------------------------------------------------------------------------------------------ training
def _metrics(path):
    with open(path) as fh:
        return [{k: v for k, v in row.items()} for row in csv.DictReader(fh)]


def test_training_with_the_ideas_is_deterministic_and_records_them(episodes, tmp_path):
    options = dict(backbone="tiny-kosmos2", epochs=3, batch_size=16, lr=3e-3, cache_dir=tmp_path / "cache",
                   progress=False, head_overrides={"hidden_dim": 16, "action_dim": 3}, loss="final-fixed",
                   sampling="hard-negative", distance_augmentation={"close": 2, "far": 1}, patience=10)
    first = train("final-fixed-recon", [episodes], tmp_path / "a", **options)
    second = train("final-fixed-recon", [episodes], tmp_path / "b", **options)
    assert _metrics(tmp_path / "a" / "metrics.csv") == _metrics(tmp_path / "b" / "metrics.csv")
    train_eps = first["augmented_copies"]
    assert train_eps > 0 and first["augmented_copies"] == second["augmented_copies"]
    plain = train("final-fixed-recon", [episodes], tmp_path / "c", **{**options, "distance_augmentation": None})
    assert first["train_windows"] > plain["train_windows"]
    from policies.checkpoints import load_checkpoint

    recipe = load_checkpoint(tmp_path / "a" / "best.safetensors").meta["recipe"]
    assert recipe["sampling"] == "hard-negative" and recipe["hard_negative_fraction"] == 0.3
    assert recipe["distance_augmentation"] == {"close": 2, "far": 1} and recipe["loss"].startswith("final-fixed")


@pytest.mark.parametrize("argv, message", [
    (["--distance-augmentation", "close=8,near=2"], "--distance-augmentation: unknown distance 'near'"),
    (["--distance-augmentation", "close"], "must look like close=8"),
    (["--strategy", "advanced", "--policy", "lstm-recon"], "strategy advanced sets dropout, which head lstm-recon"),
    (["--lora", "--lora-r", "0"], "--lora-r: must be an integer in [1, 4096]"),
])
def test_bad_idea_options_are_one_line_errors(argv, message, tmp_path, capsys):
    base = ["--policy", "case1", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert train_cli.main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
