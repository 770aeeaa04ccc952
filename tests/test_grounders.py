"""The OWL-v2 and PaliGemma2 grounders (``policies/goalnav/grounders.py``): the S2V2 server's post-processing and
filters on fixed inputs, and the real transformers code path end to end on tiny random models saved with
``save_pretrained`` into a temporary folder and loaded back through the grounders (offline, CPU)."""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Callable

import numpy as np
import pytest
import torch

from policies.goalnav.grounders import (
    FULL_FRAME_AREA,
    GROUNDERS,
    MIN_AREA,
    MIN_CY,
    MISS,
    OWL_PAD_VALUE,
    Grounder,
    GrounderError,
    Grounding,
    Owlv2Grounder,
    PaliGemma2Grounder,
    SemicolonStop,
    build_grounder,
    owl_grounding,
    pad_to_square,
    paligemma_grounding,
    parse_locations,
    server_filter,
)

transformers = pytest.importorskip("transformers")

TINY_IMAGE = 32
SEED = 20260801
WORDS = ("detect", "gray", "basket", "laundry")


def _miss_values(g: Grounding) -> tuple:
    return g.cx, g.cy, g.area, g.has_bbox


def _frame(height: int = 24, width: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# --- tiny models ----------------------------------------------------------------------------------------------------


def _merge_words(vocab: dict[str, int], words: list[list[str]]) -> list[tuple[str, str]]:
    """BPE merges that join each word's ``pieces`` left to right into one token (added to ``vocab``)."""
    merges = []
    for pieces in words:
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    return merges


def _clip_tokenizer():
    """A real ``CLIPTokenizer`` on a toy vocabulary (letters, the test's words; specials last, as CLIP's)."""
    vocab: dict[str, int] = {}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    merges = _merge_words(vocab, [list(w[:-1]) + [w[-1] + "</w>"] for w in WORDS])
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)


def _gemma_tokenizer():
    """A real ``GemmaTokenizer`` on a toy vocabulary (Gemma's specials first; ``▁`` is its space)."""
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "\n", ";", "▁"])}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
    merges = _merge_words(vocab, [list(w) for w in WORDS])
    return transformers.GemmaTokenizer(vocab=vocab, merges=merges)


@pytest.fixture(scope="module")
def owl_folder(tmp_path_factory):
    """A tiny random OWL-v2 (hidden 32, 2 layers, patch 8, image 32) with its processor, saved to a folder."""
    tokenizer = _clip_tokenizer()
    processor = transformers.Owlv2Processor(
        transformers.Owlv2ImageProcessorPil(size={"height": TINY_IMAGE, "width": TINY_IMAGE}), tokenizer)
    layers = {"intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32}
    config = transformers.Owlv2Config(
        text_config={**layers, "vocab_size": len(tokenizer), "max_position_embeddings": 16,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={**layers, "image_size": TINY_IMAGE, "patch_size": 8}, projection_dim=32)
    torch.manual_seed(SEED)
    folder = tmp_path_factory.mktemp("owlv2")
    transformers.Owlv2ForObjectDetection(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _save_tiny_paligemma(folder, suppress: Callable[[str], bool] | None = None):
    """A tiny random PaliGemma2 (SigLIP hidden 32 / 2 layers / patch 8 / image 32, Gemma2 hidden 32 / 2 layers) with
    its processor (``<image>`` and the ``<locNNNN>`` tokens added by ``PaliGemmaProcessor``), saved to ``folder``.
    ``suppress``: its generation config never emits the tokens for which this is true."""
    image_processor = transformers.SiglipImageProcessorPil(size={"height": TINY_IMAGE, "width": TINY_IMAGE},
                                                           image_seq_length=(TINY_IMAGE // 8) ** 2)
    processor = transformers.PaliGemmaProcessor(image_processor, _gemma_tokenizer())
    tok = processor.tokenizer
    config = transformers.PaliGemmaConfig(
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": TINY_IMAGE, "patch_size": 8},
        text_config={"model_type": "gemma2", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                     "max_position_embeddings": 128, "pad_token_id": tok.pad_token_id,
                     "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id},
        image_token_id=processor.image_token_id, projection_dim=32)
    torch.manual_seed(SEED)
    model = transformers.PaliGemmaForConditionalGeneration(config)
    if suppress is not None:
        vocab = tok.get_vocab()
        model.generation_config.suppress_tokens = sorted(i for t, i in vocab.items() if suppress(t))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pg2_folder(tmp_path_factory):
    return _save_tiny_paligemma(tmp_path_factory.mktemp("paligemma2"))


# --- the filters ----------------------------------------------------------------------------------------------------


def test_server_filter_thresholds_and_order():
    ok = dict(cx=0.5, cy=0.6, raw_area=0.05, x1=0.4, x2=0.6)
    for grounder in ("owlv2", "paligemma2"):
        assert server_filter(**ok, grounder=grounder) is None
        assert server_filter(**{**ok, "raw_area": FULL_FRAME_AREA}, grounder=grounder) is None  # strictly above
        assert server_filter(**{**ok, "raw_area": 0.91}, grounder=grounder) == "full-frame"
        assert server_filter(**{**ok, "raw_area": MIN_AREA}, grounder=grounder) is None  # strictly below
        assert server_filter(**{**ok, "raw_area": 0.0099}, grounder=grounder) == "tiny"
        assert server_filter(**{**ok, "cy": MIN_CY}, grounder=grounder) is None
        assert server_filter(**{**ok, "cy": 0.3499}, grounder=grounder) == "top"
        # the server's order: full-frame, then tiny, then top
        assert server_filter(**{**ok, "cy": 0.1, "raw_area": 0.95}, grounder=grounder) == "full-frame"
        assert server_filter(**{**ok, "cy": 0.1, "raw_area": 0.001}, grounder=grounder) == "tiny"
    wide = {**ok, "x1": 0.01, "x2": 0.99}
    assert server_filter(**wide, grounder="paligemma2") == "x-full"
    assert server_filter(**wide, grounder="owlv2") is None  # OWL-v2 has no x-full filter
    assert server_filter(**{**wide, "x1": 0.02}, grounder="paligemma2") is None
    assert server_filter(**{**wide, "cy": 0.2}, grounder="paligemma2") == "top"  # top comes before x-full
    with pytest.raises(GrounderError, match="kosmos"):
        server_filter(**ok, grounder="kosmos")


# --- OWL-v2 post-processing -----------------------------------------------------------------------------------------


def test_owl_grounding_best_box_normalised_by_frame_and_scaled_area():
    boxes = np.array([[0, 0, 200, 100], [10, 60, 50, 100], [100, 50, 150, 80]], dtype=np.float32)  # pixels
    g = owl_grounding(np.array([0.3, 0.9, 0.5]), boxes, height=100, width=200, threshold=0.2, area_scale=3.0)
    assert g.has_bbox and g.filter_reason is None
    assert g.box == pytest.approx((0.05, 0.6, 0.25, 1.0))
    assert (g.cx, g.cy) == pytest.approx((0.15, 0.8))
    assert g.raw_area == pytest.approx(0.2 * 0.4)
    assert g.area == pytest.approx(3.0 * 0.08)  # served area, the raw one scaled
    assert g.score == pytest.approx(0.9)


def test_owl_grounding_area_cap_and_filters_on_raw_area():
    # raw 0.5 -> served min(1.5, 1) = 1.0
    g = owl_grounding(np.array([0.5]), np.array([[0, 40, 100, 90]]), height=100, width=100, area_scale=3.0)
    assert g.has_bbox and g.raw_area == pytest.approx(0.5) and g.area == 1.0
    # raw 0.008 is "tiny" although its served area (0.024) would pass: the filters test the raw area
    tiny = owl_grounding(np.array([0.5]), np.array([[40, 60, 48, 70]]), height=100, width=100)
    assert tiny.filter_reason == "tiny" and _miss_values(tiny) == _miss_values(MISS)
    assert tiny.box == pytest.approx((0.4, 0.6, 0.48, 0.7)) and tiny.raw_area == pytest.approx(0.008)
    top = owl_grounding(np.array([0.5]), np.array([[40, 0, 60, 50]]), height=100, width=100)
    assert top.filter_reason == "top" and _miss_values(top) == _miss_values(MISS) and top.score == 0.5


def test_owl_grounding_threshold_and_score_floor():
    box = np.array([[10, 60, 50, 100]])
    below = owl_grounding(np.array([0.2]), box, 100, 200, threshold=0.2)  # the post-processing keeps scores > t
    assert dataclasses.replace(below, score=0.0) == dataclasses.replace(MISS, filter_reason="no-locs")
    assert below.score == pytest.approx(0.2)  # reported on a miss too
    assert owl_grounding(np.array([0.005]), box, 100, 200, threshold=0.001).score == 0.0  # under the floor
    empty = owl_grounding(np.zeros(0), np.zeros((0, 4)), 100, 200)
    assert empty == dataclasses.replace(MISS, filter_reason="no-locs")


def test_pad_to_square_uses_the_team_gray_and_the_processor_adds_none(owl_folder):
    frame = _frame(24, 40)
    square = pad_to_square(frame)
    assert square.shape == (40, 40, 3) and square.dtype == np.float32
    assert np.array_equal(square[:24], frame) and np.all(square[24:] == OWL_PAD_VALUE * 255)
    processor = transformers.Owlv2ImageProcessorPil.from_pretrained(owl_folder)
    pixels = processor(square, return_tensors="pt")["pixel_values"][0]  # (3, 32, 32)
    gray = (OWL_PAD_VALUE - torch.tensor(processor.image_mean)) / torch.tensor(processor.image_std)
    torch.testing.assert_close(pixels[:, -1, :], gray[:, None].expand(3, TINY_IMAGE), atol=1e-5, rtol=0)


# --- OWL-v2 end to end ----------------------------------------------------------------------------------------------


def test_owlv2_grounder_loads_a_local_folder_and_grounds(owl_folder):
    grounder = Owlv2Grounder(owl_folder)
    assert isinstance(grounder, Grounder) and grounder.name == "owlv2" and grounder.default_latency_s == 1.902
    assert grounder.threshold == 0.20 and grounder.area_scale == 3.0 and not grounder.model.training
    grounder.reset({})
    g = grounder.ground(_frame(), None, 0)
    assert isinstance(g, Grounding) and isinstance(g.has_bbox, bool)
    assert all(math.isfinite(v) for v in (g.cx, g.cy, g.area, g.score, g.raw_area)) and 0.0 <= g.score <= 1.0
    if g.has_bbox:
        assert g.filter_reason is None and g.area == pytest.approx(min(3.0 * g.raw_area, 1.0))
    else:
        assert _miss_values(g) == _miss_values(MISS) and g.filter_reason is not None
    assert grounder.ground(_frame(), None, 1) == g  # deterministic


def test_owlv2_grounder_matches_a_manual_pass(owl_folder):
    """The grounder's decision equals the server's steps written out on the same model (threshold 0: a box)."""
    grounder = Owlv2Grounder(owl_folder, threshold=0.0)
    frame = _frame(30, 20, seed=3)  # portrait: the padding is on the right
    inputs = grounder.processor(text=[["gray basket"]], images=pad_to_square(frame), return_tensors="pt")
    with torch.no_grad():
        out = grounder.model(**inputs)
    res = grounder.processor.post_process_grounded_object_detection(out, threshold=0.0, target_sizes=[(30, 20)])[0]
    best = int(res["scores"].argmax())
    x1, y1, x2, y2 = res["boxes"][best].tolist()
    g = grounder.ground(frame, None, 0)
    assert g.box == pytest.approx((x1 / 20, y1 / 30, x2 / 20, y2 / 30), rel=1e-5)
    assert g.score == pytest.approx(float(res["scores"][best]))


def test_owlv2_threshold_above_one_is_the_server_miss(owl_folder):
    g = Owlv2Grounder(owl_folder, threshold=1.01).ground(_frame(), None, 0)
    assert (g.cx, g.cy, g.area, g.has_bbox) == (0.5, 0.6, 0.06, False)
    assert g.box is None and g.raw_area == 0.0 and g.filter_reason == "no-locs"


def test_owlv2_rejects_a_non_rgb_frame(owl_folder):
    with pytest.raises(ValueError, match="uint8"):
        Owlv2Grounder(owl_folder).ground(np.zeros((8, 8, 3), dtype=np.float32), None, 0)


@pytest.mark.parametrize("cls", [Owlv2Grounder, PaliGemma2Grounder])
def test_missing_folder_config_or_weights(cls, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(GrounderError, match=f"{missing}: not found"):
        cls(missing)
    with pytest.raises(GrounderError, match=f"{tmp_path}: no config.json"):
        cls(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(GrounderError, match=f"{tmp_path}: no weights"):
        cls(tmp_path)


def test_folder_without_processor_files(owl_folder, tmp_path):
    for name in ("config.json", "model.safetensors"):
        shutil.copy(owl_folder / name, tmp_path / name)
    with pytest.raises(GrounderError, match=f"{tmp_path}: cannot load its processor"):
        Owlv2Grounder(tmp_path)


# --- PaliGemma2 -----------------------------------------------------------------------------------------------------


def test_parse_locations_order_divisor_and_sorting():
    assert parse_locations("<loc0256><loc0128><loc0768><loc0896> gray basket") == pytest.approx(
        (256 / 1023, 128 / 1023, 768 / 1023, 896 / 1023))  # y1, x1, y2, x2
    # swapped corners are sorted
    assert parse_locations("<loc0768><loc0896><loc0256><loc0128>") == parse_locations(
        "<loc0256><loc0128><loc0768><loc0896>")
    # text around, a fifth location and a second detection are ignored; only 4-digit tokens count
    text = "<eos>x <loc0010><loc12>a<loc0020> <loc0030><loc0040><loc0050> gray basket ; <loc0001><loc0002>"
    assert parse_locations(text) == pytest.approx((10 / 1023, 20 / 1023, 30 / 1023, 40 / 1023))
    assert parse_locations("<loc1023><loc0000><loc0000><loc1023>") == (0.0, 0.0, 1.0, 1.0)
    assert parse_locations("<loc0001><loc0002><loc0003> gray basket") is None
    assert parse_locations("") is None


def test_paligemma_grounding_unscaled_area_filters_and_no_score():
    g = paligemma_grounding("<loc0512><loc0256><loc0768><loc0512> gray basket")  # y 0.5-0.75, x 0.25-0.5
    assert g.has_bbox and g.filter_reason is None and math.isnan(g.score)
    assert g.box == pytest.approx((256 / 1023, 512 / 1023, 512 / 1023, 768 / 1023))
    assert g.area == g.raw_area == pytest.approx((256 / 1023) ** 2)  # no area scale for PaliGemma2
    assert (g.cx, g.cy) == pytest.approx((384 / 1023, 640 / 1023))
    xfull = paligemma_grounding("<loc0700><loc0005><loc0800><loc1020>")
    assert xfull.filter_reason == "x-full" and _miss_values(xfull) == _miss_values(MISS)
    full = paligemma_grounding("<loc0000><loc0000><loc1022><loc1023>")
    assert full.filter_reason == "full-frame"
    none = paligemma_grounding("gray basket")
    assert none.filter_reason == "no-locs" and none.box is None and _miss_values(none) == _miss_values(MISS)


def test_paligemma2_prompt_with_or_without_image_token_is_the_same(pg2_folder):
    """The grounder's ``<image>detect ...`` gives the tokens of the server's bare ``detect ...``."""
    from PIL import Image

    processor = PaliGemma2Grounder(pg2_folder).processor
    image = Image.fromarray(_frame())
    ours = processor(text="<image>detect gray basket", images=image, return_tensors="pt")["input_ids"]
    server = processor(text="detect gray basket", images=image, return_tensors="pt")["input_ids"]
    assert torch.equal(ours, server)
    tokens = processor.tokenizer.convert_ids_to_tokens(ours[0].tolist())
    assert tokens[:17] == ["<image>"] * 16 + ["<bos>"] and tokens[-1] == "\n"


def test_paligemma2_grounder_end_to_end(pg2_folder):
    grounder = PaliGemma2Grounder(pg2_folder)
    assert isinstance(grounder, Grounder) and grounder.name == "paligemma2" and grounder.default_latency_s == 2.13
    assert not grounder.model.training and grounder.model.dtype == torch.bfloat16
    text = grounder.generate_text(_frame())
    assert isinstance(text, str) and text
    assert grounder.processor.tokenizer.convert_tokens_to_ids("<loc0000>") != grounder.processor.tokenizer.unk_token_id
    g = grounder.ground(_frame(), None, 0)
    assert isinstance(g, Grounding) and isinstance(g.has_bbox, bool) and g == paligemma_grounding(text)


def test_semicolon_stop_on_the_last_token(pg2_folder):
    tok = PaliGemma2Grounder(pg2_folder).processor.tokenizer
    semi, a, loc = tok.convert_tokens_to_ids([";", "a", "<loc0001>"])
    done = SemicolonStop(tok)(torch.tensor([[a, semi], [semi, a], [semi, loc]]), torch.zeros(3, len(tok)))
    assert done.tolist() == [True, False, False]


def test_paligemma2_generation_stops_after_a_semicolon(tmp_path):
    """A model that can only emit ``;`` stops after one token (48 without the server's stopping criterion)."""
    grounder = PaliGemma2Grounder(_save_tiny_paligemma(tmp_path, lambda t: t != ";"))
    assert grounder.generate_text(_frame()) == ";"


def test_paligemma2_output_without_locations_is_a_miss(tmp_path):
    grounder = PaliGemma2Grounder(_save_tiny_paligemma(tmp_path, lambda t: t.startswith("<loc")), max_new_tokens=8)
    assert "<loc" not in grounder.generate_text(_frame())
    g = grounder.ground(_frame(), None, 0)
    assert _miss_values(g) == (0.5, 0.6, 0.06, False) and g.filter_reason == "no-locs"


# --- the registry ---------------------------------------------------------------------------------------------------


class FixedGrounder(Grounder):
    """A grounder that reads no folder and always reports one box (registry test)."""

    name = "fixed"
    default_latency_s = 0.0

    def __init__(self, cx: float = 0.5) -> None:
        self.cx = cx

    def ground(self, image, state, step):
        return Grounding(self.cx, 0.7, 0.1, True, 1.0, None, 0.1, None)


def test_build_grounder_registry(owl_folder, monkeypatch):
    assert GROUNDERS["oracle"] == "policies.goalnav.oracle:OracleGrounder"  # the lead's, not imported here
    g = build_grounder("owlv2", owl_folder, threshold=0.3, phrase="laundry basket")
    assert isinstance(g, Owlv2Grounder) and g.threshold == 0.3 and g.phrase == "laundry basket"
    with pytest.raises(GrounderError, match="needs its local model folder"):
        build_grounder("paligemma2")
    with pytest.raises(GrounderError, match="unknown grounder 'kosmos2'; known: owlv2, paligemma2, oracle"):
        build_grounder("kosmos2")
    monkeypatch.setitem(GROUNDERS, "fixed", f"{__name__}:FixedGrounder")
    assert build_grounder("fixed", cx=0.25).ground(_frame(), None, 0).cx == 0.25
    with pytest.raises(GrounderError, match="reads no model folder"):
        build_grounder("fixed", owl_folder)
