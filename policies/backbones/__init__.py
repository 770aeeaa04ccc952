"""Frozen feature extractors behind one interface (:class:`Backbone`), :func:`make_backbone` and
:func:`stream_widths`.

========================  =====================================================================================
name                      streams (width)
========================  =====================================================================================
``lite``                  EfficientNet-Lite0 + all-MiniLM-L6-v2, offline: image 1280, text 384, and stand-ins
                          clip_image 512, clip_text 384, multimodal 1664 (:mod:`policies.backbones.lite`)
``kosmos2``               ``microsoft/kosmos-2-patch14-224``: image 1024, text 2048, multimodal 2048; clip_image
                          512 / clip_text 512 with CLIP weights (:mod:`policies.backbones.kosmos2`)
``tiny-kosmos2``          the same code path at toy size, offline, with toy CLIP parts (tests)
========================  =====================================================================================

The ``action_token`` stream of the ``robovlms`` policy comes from :class:`~policies.backbones.robovlms.
RoboVLMsBackbone`, built around the same Kosmos-2 model plus the checkpoint's learned token.

Frozen weights inside a team checkpoint are passed as ``weights`` (role -> state dict, roles from
:data:`FROZEN_PREFIXES`): the model is then built from them instead of a folder.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from foundations.errors import MobileVLAError
from policies.backbones.base import STREAMS, Backbone, BackboneInputError, MissingStreamError, device_key
from policies.catalog import BACKBONE_NAMES  # the names make_backbone accepts

#: Prefixes under which the team's checkpoints carry frozen models -> the role of those weights.
FROZEN_PREFIXES = {
    "kosmos.": "kosmos2",          # case 1/2/3: the whole Kosmos2Model
    "kosmos2_model.": "kosmos2",   # original hybrid / pure Kosmos-2 trainers
    "kosmos_model.": "kosmos2",
    "backbone.": "kosmos2",        # RoboVLMs (after Lightning's "model." is stripped): Kosmos2ForConditionalGeneration
    "clip_model.": "clip_image",   # case 2: open_clip ViT-B-32
    "clip_text.": "clip_text",     # hybrid: transformers CLIPModel, text tower used
    "clip_vision.": "clip_vision",  # hybrid: a second CLIPModel its forward pass never uses
    "clip.": "clip_image",
}

_CACHE: dict[tuple[Any, ...], Backbone] = {}
_CACHE_LOCK = threading.Lock()


class UnknownBackboneError(MobileVLAError, ValueError):
    """A backbone name outside :data:`BACKBONE_NAMES`."""


def _check_name(name: str) -> None:
    if name not in BACKBONE_NAMES:
        raise UnknownBackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")


def _clip_image_width(source: Any) -> int:
    if isinstance(source, Mapping):
        if "visual.proj" in source:
            return int(source["visual.proj"].shape[1])
        if "visual_projection.weight" in source:
            return int(source["visual_projection.weight"].shape[0])
    from policies.backbones.clip import TINY_CLIP

    return TINY_CLIP["projection_dim"] if source == "tiny" else 512


def _clip_text_width(source: Any) -> int:
    if isinstance(source, Mapping):
        for key in ("text_model.embeddings.token_embedding.weight", "embeddings.token_embedding.weight"):
            if key in source:
                return int(source[key].shape[1])
    from policies.backbones.clip import TINY_CLIP

    return TINY_CLIP["width"] if source == "tiny" else 512


def _clip_sources(name: str, weights: Mapping[str, Any], clip_path: str | Path | None) -> tuple[Any, Any]:
    tiny = "tiny" if name == "tiny-kosmos2" else None
    image = weights.get("clip_image") or clip_path or tiny
    text = weights.get("clip_text") or (clip_path if clip_path and Path(clip_path).expanduser().is_dir() else None) or tiny
    return image, text


def stream_widths(name: str, path: str | Path | None = None, *, weights: Mapping[str, Any] | None = None,
                  clip_path: str | Path | None = None) -> dict[str, int]:
    """The stream widths :func:`make_backbone` would give, without building any model (configs and tensor shapes
    only), so a head can be checked against them first.

    Raises:
        UnknownBackboneError: unknown ``name``.
    """
    _check_name(name)
    if name == "lite":
        from policies.backbones.lite import STREAM_DIMS

        return dict(STREAM_DIMS)
    from policies.backbones.kosmos2 import kosmos2_config, to_generation_layout

    weights = weights or {}
    kosmos = to_generation_layout(weights["kosmos2"]) if weights.get("kosmos2") else {}
    if "text_model.model.embed_tokens.weight" in kosmos and "vision_model.model.post_layernorm.weight" in kosmos:
        vision = int(kosmos["vision_model.model.post_layernorm.weight"].shape[0])
        text = int(kosmos["text_model.model.embed_tokens.weight"].shape[1])
    else:
        config = kosmos2_config(name, path)
        vision, text = int(config.vision_config.hidden_size), int(config.text_config.embed_dim)
    dims = {"image": vision, "image_mean": vision, "text": text, "multimodal": text, "action_token": text}
    image, text_src = _clip_sources(name, weights, clip_path)
    if image is not None:
        dims["clip_image"] = _clip_image_width(image)
    if text_src is not None:
        dims["clip_text"] = _clip_text_width(text_src)
    return dims


def make_backbone(name: str = "lite", path: str | Path | None = None, device: str | torch.device = "cpu", *,
                  streams: Sequence[str] = ("image", "text"), weights: Mapping[str, Any] | None = None,
                  weights_id: str = "", clip_path: str | Path | None = None, cache: bool = True,
                  compile_vision: str = "off") -> Backbone:
    """Build (or reuse) a frozen backbone offering at least ``streams``.

    Args:
        name: one of :data:`BACKBONE_NAMES`.
        path: ``kosmos2``: local folder or cached hub id (``None`` = ``microsoft/kosmos-2-patch14-224``), the
            processor's source when ``weights`` hold the model; ``lite``: an EfficientNet-Lite0 ``.pth``
            (``None`` = the packaged weights); ignored by ``tiny-kosmos2``.
        device: torch device.
        streams: the streams the caller will read; CLIP parts are attached only when a ``clip_*`` stream is asked
            for.
        weights: frozen weights from a checkpoint, role (:data:`FROZEN_PREFIXES` values) -> state dict.
        weights_id: identifies ``weights`` in the cache key (e.g. the checkpoint path and modification time).
        clip_path: CLIP weights (open_clip file or ``save_pretrained`` folder) when ``weights`` carry none.
        cache: reuse one instance per (name, path, device and dtype, weights, CLIP parts, ``compile_vision``) in this
            process (backbones are frozen and stateless apart from their instruction-feature cache, so sharing is
            safe; one model object is never shared across devices, nor between compiled and eager users).
        compile_vision: compile the vision tower(s) with ``torch.compile``, one of
            :data:`~policies.backbones.compile.COMPILE_MODES` (``"off"``: eager, the default); the graphs are
            compiled while building, for the frame streams among ``streams``
            (:func:`policies.backbones.compile.compile_vision`).

    Raises:
        UnknownBackboneError: unknown ``name``. FileNotFoundError / ModuleNotFoundError: missing weights.
        Kosmos2LoadError / ClipWeightsError: unusable weights or processor.
        ConfigError: an unknown ``compile_vision`` mode, a CUDA-only one off CUDA, or inductor on the CPU without a
            C++ compiler (checked before anything is built).
    """
    from policies.backbones.compile import check_compile_mode, frame_streams
    from policies.backbones.compile import compile_vision as compile_towers

    _check_name(name)
    check_compile_mode(compile_vision, device)
    dev = torch.device(device)
    weights = weights or {}
    wants_clip = tuple(s for s in ("clip_image", "clip_text") if s in streams)
    key = (name, "" if path is None or name == "tiny-kosmos2" else str(path), device_key(dev), weights_id,
           str(clip_path or ""), wants_clip, compile_vision)

    def build() -> Backbone:
        backbone = build_eager()
        warm = [s for s in streams if s in frame_streams(backbone)]  # what the caller reads: compiled now
        return compile_towers(backbone, compile_vision, warmup=warm)

    def build_eager() -> Backbone:
        if name == "lite":
            from policies.backbones.lite import LiteBackbone

            return LiteBackbone(device=dev, image_weights=path)
        from policies.backbones.kosmos2 import Kosmos2Backbone, load_kosmos2_parts

        model, processor = load_kosmos2_parts(name, path, weights.get("kosmos2"))
        image, text = _clip_sources(name, weights, clip_path)
        return Kosmos2Backbone(model, processor, name=name, device=dev,
                               clip_image=image if "clip_image" in wants_clip else None,
                               clip_text=text if "clip_text" in wants_clip else None,
                               clip_tokenizer_path=clip_path or ("tiny" if name == "tiny-kosmos2" else None))

    return shared_backbone(key, build) if cache else build()


def shared_backbone(key: tuple[Any, ...], build: Any) -> Backbone:
    """The backbone cached under ``key`` in this process, built by ``build()`` on first use (thread-safe)."""
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


__all__ = [
    "BACKBONE_NAMES", "FROZEN_PREFIXES", "STREAMS", "Backbone", "BackboneInputError",
    "MissingStreamError", "UnknownBackboneError", "device_key", "make_backbone", "shared_backbone", "stream_widths",
]
