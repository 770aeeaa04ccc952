"""Backbones: the lite EfficientNet-Lite0 + MiniLM pair (strict weights, ImageNet-like behaviour,
determinism, text cache), tiny-kosmos2 (seeded, offline) and the kosmos2 loader on a local folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.backbones import UnknownBackboneError, make_backbone
from policies.backbones.base import BackboneInputError
from policies.backbones.efficientnet_lite import EfficientNetLite0, default_weights_path, load_efficientnet_lite0

try:
    from tests.conftest_vla import observation, scene_image, single_torch_thread
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from conftest_vla import observation, scene_image, single_torch_thread  # noqa: F401


@pytest.fixture(scope="module")
def lite():
    return make_backbone("lite")


@pytest.fixture(scope="module")
def tiny():
    return make_backbone("tiny-kosmos2", streams=("image", "text", "clip_image", "clip_text"))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1)))


# ------------------------------------------------------------------------------------------- lite


def test_efficientnet_weights_match_the_definition_exactly():
    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    assert set(model.state_dict()) == set(state)
    assert all(model.state_dict()[k].shape == v.shape for k, v in state.items())
    state["_extra.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="_extra.weight"):
        model.load_state_dict(state, strict=True)


def test_lite_backbone_is_frozen(lite):
    assert (lite.name, lite.vision_dim, lite.text_dim) == ("lite", 1280, 384)
    for module in (lite.image_model, lite.text_model.model):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())


def test_lite_image_features_are_deterministic_and_discriminative(lite):
    a, b = observation(1)["image"], observation(2)["image"]
    gradient = np.broadcast_to(np.linspace(0, 255, 224, dtype=np.uint8)[None, :, None], (224, 224, 3)).copy()
    feats = lite.encode_images(np.stack([a, b, gradient]))
    assert feats.dtype == torch.float32 and feats.shape == (3, 1280)
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # after ReLU6 and average pooling
    assert torch.equal(lite.encode_images(a[None]), feats[:1])  # deterministic
    assert cosine(feats[0], feats[2]) < 0.9  # noise vs a smooth gradient: clearly different
    assert not torch.allclose(feats[0], feats[1])


def test_lite_resizes_larger_frames_itself(lite):
    small, big = scene_image(224), scene_image(448)  # the same scene rendered at two resolutions
    f_small, f_big = lite.encode_images(small[None]), lite.encode_images(big[None])
    f_other = lite.encode_images(observation(3)["image"][None])
    assert cosine(f_small, f_big) > 0.9
    assert cosine(f_small, f_big) > cosine(f_small, f_other) + 0.2
    rect = lite.encode_images(observation(3, size=(360, 640))["image"])  # 16:9 camera frame
    assert rect.shape == (1, 1280)


def test_lite_classifies_a_real_photo():
    """ImageNet sanity: Grace Hopper's portrait (matplotlib sample data) -> 'military uniform' (class 652)."""
    cbook = pytest.importorskip("matplotlib.cbook")
    pil = pytest.importorskip("PIL.Image")
    try:
        with cbook.get_sample_data("grace_hopper.jpg") as fh:
            img = pil.open(fh).convert("RGB")
            img.load()
    except (OSError, ValueError):
        pytest.skip("matplotlib sample data not installed")
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
    frame = np.asarray(img.resize((224, 224)), dtype=np.uint8)
    from policies.backbones.base import to_float_nchw
    from policies.backbones.efficientnet_lite import INPUT_MEAN, INPUT_STD

    model = load_efficientnet_lite0()
    with torch.inference_mode():
        probs = model(to_float_nchw(frame[None], 224, INPUT_MEAN, INPUT_STD, "cpu")).softmax(-1)[0]
    assert int(probs.argmax()) == 652
    assert float(probs[652]) > 0.2


def test_lite_text_features_are_sentence_embeddings(lite):
    left = "Navigate around obstacles and reach the front of the beverage bottle on the left"
    right = "Navigate around obstacles and reach the front of the beverage bottle on the right"
    other = "Bake a chocolate cake for the birthday party"
    feats = lite.encode_text([left, right, other])
    assert feats.shape == (3, 384)
    assert torch.allclose(feats.norm(dim=1), torch.ones(3), atol=1e-5)
    assert cosine(feats[0], feats[1]) > cosine(feats[0], feats[2]) + 0.3
    assert not torch.allclose(feats[0], feats[1])


def test_text_features_are_cached_per_string(lite):
    before = lite.text_cache_size
    first = lite.encode_text(["reach the cup, cache test"])
    assert lite.text_cache_size == before + 1
    again = lite.encode_text(["reach the cup, cache test", "reach the cup, cache test"])
    assert lite.text_cache_size == before + 1
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[0])
    again[0].add_(1.0)  # callers get a copy, the cache is untouched
    assert torch.equal(lite.encode_text(["reach the cup, cache test"]), first)


def test_input_validation(lite):
    with pytest.raises(BackboneInputError, match="uint8"):
        lite.encode_images(np.zeros((1, 224, 224, 3), dtype=np.float32))
    with pytest.raises(BackboneInputError, match=r"\(N, H, W, 3\)"):
        lite.encode_images(np.zeros((1, 3, 224, 224), dtype=np.uint8))
    with pytest.raises(BackboneInputError, match="list of strings"):
        lite.encode_text("a bare string")
    img = observation(4)["image"]
    assert torch.equal(lite.encode_images(torch.from_numpy(img)), lite.encode_images(img[None]))


# -------------------------------------------------------------------------------------- kosmos-2


def test_tiny_kosmos2_is_the_real_code_path(tiny):
    from transformers import Kosmos2ForConditionalGeneration, Kosmos2Processor

    assert isinstance(tiny.model, Kosmos2ForConditionalGeneration) and isinstance(tiny.processor, Kosmos2Processor)
    assert (tiny.name, tiny.vision_dim, tiny.text_dim) == ("tiny-kosmos2", 32, 32)
    assert not tiny.model.training and not any(p.requires_grad for p in tiny.model.parameters())
    imgs = np.stack([observation(5)["image"], observation(6)["image"]])
    feats = tiny.encode_images(imgs)
    assert feats.shape == (2, 32) and torch.isfinite(feats).all()
    assert not torch.allclose(feats[0], feats[1])
    text = tiny.encode_text(["Navigate to the gray basket", "go left"])
    assert text.shape == (2, 32) and not torch.allclose(text[0], text[1])


def test_tiny_kosmos2_is_seeded_and_offline_deterministic(tiny):
    from policies.backbones import tiny_kosmos2

    tiny_kosmos2._tiny_state.cache_clear()
    tiny_kosmos2.tiny_kosmos2_processor.cache_clear()
    try:
        model, processor = tiny_kosmos2.build_tiny_kosmos2()
    finally:
        tiny_kosmos2._tiny_state.cache_clear()
    assert processor.tokenizer.get_vocab() == tiny.processor.tokenizer.get_vocab()
    ours, theirs = tiny.model.state_dict(), model.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert model is not tiny.model  # a fresh object per backbone: never shared across devices


def test_kosmos2_streams_and_instruction_conditioned_features(tiny):
    img = np.stack([observation(5)["image"], observation(6)["image"]])
    assert tiny.stream_dims() == {"image": 32, "image_mean": 32, "text": 32, "multimodal": 32, "clip_image": 24,
                                  "clip_text": 64}
    both = tiny.encode_frames(img, ("image", "clip_image"))
    assert both.shape == (2, 56)
    assert torch.allclose(both[:, :32], tiny.encode_images(img), atol=1e-6)
    left = tiny.encode_frames(img, ("multimodal",), "go left")
    right = tiny.encode_frames(img, ("multimodal",), "go right")
    assert left.shape == (2, 32) and not torch.allclose(left, right)
    with pytest.raises(BackboneInputError, match="instruction"):
        tiny.encode_frames(img, ("multimodal",))
    with pytest.raises(BackboneInputError, match="unknown feature stream"):
        tiny.encode_frames(img, ("depth",))
    with pytest.raises(BackboneInputError, match="instruction stream"):
        tiny.encode_frames(img, ("text",))
    pair = tiny.encode_instruction(["go left", "go right"], ("text", "clip_text"))
    assert pair.shape == (2, 96) and torch.allclose(pair[:, :32], tiny.encode_text(["go left", "go right"]))


def test_a_stream_the_backbone_lacks_names_the_remedy(tiny):
    from policies.backbones import MissingStreamError
    from policies.backbones.kosmos2 import Kosmos2Backbone

    bare = Kosmos2Backbone(tiny.model, tiny.processor, name="kosmos2")
    assert "clip_image" not in bare.stream_dims()
    with pytest.raises(MissingStreamError, match="clip_path"):
        bare.encode_frames(observation(1)["image"], ("image", "clip_image"))


def test_lite_streams_and_stand_ins(lite):
    from policies.backbones import stream_widths

    img = np.stack([observation(5)["image"], observation(6)["image"]])
    assert lite.stream_dims() == stream_widths("lite") == {"image": 1280, "image_mean": 1280, "text": 384,
                                                          "clip_image": 512, "clip_text": 384, "multimodal": 1664}
    feats = lite.encode_frames(img, ("image", "clip_image", "multimodal"), "go left")
    image = lite.encode_images(img)
    assert torch.allclose(feats[:, :1280], image)
    assert torch.allclose(feats[:, 1280:1792], image @ lite.clip_projection.T, atol=1e-5)
    assert torch.allclose(feats[:, 1792:3072], image)
    assert torch.allclose(feats[:, 3072:], lite.encode_text(["go left"]).expand(2, -1))
    assert torch.equal(lite.encode_instruction(["go left"], ("clip_text",)), lite.encode_text(["go left"]))


def test_kosmos2_loader_reads_a_local_folder(tmp_path, tiny):
    from policies.backbones import stream_widths

    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    loaded = make_backbone("kosmos2", path=tmp_path, cache=False)
    assert (loaded.name, loaded.vision_dim, loaded.text_dim) == ("kosmos2", 32, 32)
    assert stream_widths("kosmos2", tmp_path)["image"] == 32  # from the folder's config, no model built
    img = observation(7)["image"][None]
    assert torch.allclose(loaded.encode_images(img), tiny.encode_images(img), atol=1e-6)
    words = ["Navigate to the gray basket while avoiding the brown pot"]
    assert torch.allclose(loaded.encode_text(words), tiny.encode_text(words), atol=1e-6)


def test_kosmos2_missing_local_folder_fails_before_any_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        make_backbone("kosmos2", path=tmp_path / "no" / "such" / "dir", cache=False)


def test_unknown_backbone():
    with pytest.raises(UnknownBackboneError, match="lite"):
        make_backbone("clip")
