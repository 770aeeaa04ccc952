"""``compile_vision``: the frozen vision tower(s) compiled with ``torch.compile`` (:mod:`policies.backbones.compile`)
give the eager outputs, at batch 1 and above without recompiling after the warm-up, are never handed to an eager
user by the backbone caches, and bad modes are one-line errors (exit 2 on the command line).

Inductor compiles real C++ kernels here (tiny-kosmos2, the ``default`` mode); the lite tower uses the ``aot_eager``
backend (the same capture, no code generation: inductor on EfficientNet-Lite0 takes ~50 s on 2 cores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from foundations.errors import ConfigError
from policies.backbones import compile as compile_module
from policies.backbones import make_backbone
from policies.backbones.compile import COMPILE_MODES, check_compile_mode, compile_vision, cpp_compiler
from policies.backbones.lite import LiteBackbone
from policies.vla import build_vla_policy
from sim import eval as sim_eval

INSTRUCTION = "Navigate around obstacles and reach the front of the beverage bottle on the left"
ATOL = 1e-5

needs_cxx = pytest.mark.skipif(cpp_compiler() is None, reason="no C++ compiler: inductor cannot build CPU kernels")


def frames(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@needs_cxx
def test_inductor_on_tiny_kosmos2_equals_eager_and_is_never_shared_with_eager_users():
    """One test, so that one xdist worker pays inductor's compile (~25 s on 2 cores with a cold inductor cache)."""
    before = counters["stats"]["unique_graphs"]
    compiled = make_backbone("tiny-kosmos2", compile_vision="default")
    # batch 1 (specialised) and a dynamic-batch graph, both compiled while building
    assert counters["stats"]["unique_graphs"] - before == 2
    eager = make_backbone("tiny-kosmos2")
    check_image_stream(compiled, eager)
    check_cache(compiled, eager)
    check_robovlms_action_token()


def check_image_stream(compiled, eager):
    assert compiled.vision_compile == "default" and eager.vision_compile == "off"
    graphs = counters["stats"]["unique_graphs"]
    for n in (1, 3, 2, 5):
        images = frames(n, seed=n)
        got, want = compiled.encode_images(images), eager.encode_images(images)
        assert got.shape == (n, 32) and got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert counters["stats"]["unique_graphs"] == graphs  # no recompile for any batch size after the warm-up


def check_cache(compiled, eager):
    """The backbone cache never hands a compiled backbone to an eager request, nor the reverse."""
    assert eager is not compiled and eager.model is not compiled.model
    assert make_backbone("tiny-kosmos2", compile_vision="off") is eager
    assert make_backbone("tiny-kosmos2", compile_vision="default") is compiled
    assert getattr(eager.model.vision_model, "_compiled_call_impl", None) is None
    assert getattr(compiled.model.vision_model, "_compiled_call_impl", None) is not None
    fast = build_vla_policy("lstm-recon", backbone="tiny-kosmos2", compile_vision="default")
    slow = build_vla_policy("lstm-recon", backbone="tiny-kosmos2")
    assert fast.backbone is compiled and slow.backbone is eager
    obs = {"image": frames(1)[0], "instruction": INSTRUCTION, "state": np.zeros(6, np.float32)}
    fast.reset(INSTRUCTION)
    slow.reset(INSTRUCTION)
    np.testing.assert_allclose(fast.act(obs), slow.act(obs), atol=ATOL)


def check_robovlms_action_token():
    """The robovlms backbone cache is keyed by the mode too; the action-token stream equals eager's."""
    fast = build_vla_policy("robovlms", backbone="tiny-kosmos2", compile_vision="default")
    slow = build_vla_policy("robovlms", backbone="tiny-kosmos2")
    assert fast.backbone is not slow.backbone
    assert fast.backbone.vision_compile == "default" and slow.backbone.vision_compile == "off"
    assert build_vla_policy("robovlms", backbone="tiny-kosmos2", compile_vision="default").backbone is fast.backbone
    for n in (1, 3):
        images = frames(n, seed=10 + n)
        got = fast.backbone.encode_frames(images, ("action_token",), INSTRUCTION)
        want = slow.backbone.encode_frames(images, ("action_token",), INSTRUCTION)
        assert got.shape == (n, 32)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_lite_tower_compiled_equals_eager_at_batch_1_and_3():
    eager = make_backbone("lite")
    lite = LiteBackbone()
    assert compile_vision(lite, "default", backend="aot_eager") is lite and lite.vision_compile == "default"
    assert getattr(lite.image_tower, "_compiled_call_impl", None) is not None
    assert getattr(lite.image_model, "_compiled_call_impl", None) is None  # export / LoRA keep the eager module
    for n in (1, 3):
        images = frames(n, size=96, seed=20 + n)
        got = lite.encode_frames(images, ("image", "clip_image"))
        torch.testing.assert_close(got, eager.encode_frames(images, ("image", "clip_image")), atol=ATOL, rtol=0)
    assert compile_vision(lite, "default") is lite  # the same mode again: nothing to do
    with pytest.raises(ConfigError, match="already compiled with 'default'"):
        compile_vision(lite, "reduce-overhead", backend="aot_eager")


@pytest.mark.parametrize("mode, message", [
    ("fast", "compile_vision must be one of off, default, reduce-overhead, cuda-graph, got 'fast'"),
    (3, "compile_vision must be one of"),
    ("cuda-graph", "compile_vision=cuda-graph captures CUDA graphs and needs a CUDA device, not cpu"),
])
def test_bad_modes_are_one_line_config_errors_before_anything_is_built(mode, message, monkeypatch):
    monkeypatch.setattr(compile_module, "compile_vision", lambda *a, **k: pytest.fail("built"))
    for call in (lambda: make_backbone("tiny-kosmos2", compile_vision=mode, cache=False),
                 lambda: check_compile_mode(mode, "cpu")):
        with pytest.raises(ConfigError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_vla_policy("lstm-recon", backbone="tiny-kosmos2", compile_vision=mode)
    assert str(info.value).startswith("lstm-recon: compile_vision") and "\n" not in str(info.value)


def test_mode_list_and_cpu_rules(monkeypatch):
    assert COMPILE_MODES == ("off", "default", "reduce-overhead", "cuda-graph")
    assert check_compile_mode("off", "meta") == "off"  # nothing to check without compiling
    assert check_compile_mode("cuda-graph", "cuda:1") == "cuda-graph"  # allowed on CUDA (not run here)
    monkeypatch.setattr(compile_module, "cpp_compiler", lambda: None)
    for mode in ("default", "reduce-overhead"):
        with pytest.raises(ConfigError, match=f"compile_vision={mode}: inductor needs a C\\+\\+ compiler"):
            check_compile_mode(mode, "cpu")
    assert check_compile_mode("default", "cpu", backend="aot_eager") == "default"  # no code generation


def test_a_built_backbone_or_one_without_a_tower_is_refused():
    from policies.backbones.base import Backbone

    with pytest.raises(ConfigError, match="has no vision tower to compile"):
        compile_vision(Backbone(), "default", backend="aot_eager")
    with pytest.raises(ConfigError, match="compile_vision applies to a backbone given by name"):
        build_vla_policy("lstm-recon", backbone=make_backbone("lite"), compile_vision="default")
    with pytest.raises(ConfigError, match="cannot warm up text"):
        compile_vision(LiteBackbone(), "default", backend="aot_eager", warmup=("text",))


@pytest.mark.parametrize("value, message", [
    ("fast", "compile_vision must be one of off, default, reduce-overhead, cuda-graph, got 'fast'"),
    ("cuda-graph", "needs a CUDA device"),
    ("3", "compile_vision must be a string, got 3"),
])
def test_sim_eval_refuses_a_bad_compile_vision_in_one_line(value, message, tmp_path, capsys):
    code = sim_eval.main(["--policy", "lstm-recon", "--policy-arg", f"compile_vision={value}", "--workers", "1",
                          "--episodes-per-combo", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
