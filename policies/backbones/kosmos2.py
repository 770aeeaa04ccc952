"""``kosmos2``: the team's frozen ``microsoft/kosmos-2-patch14-224`` (transformers ``Kosmos2ForConditionalGeneration``)
and the CLIP parts their models read beside it.

Streams, as the team's feature code computes them (``../shared/seeds/002_*.txt``, ``extract_vision_features`` /
``extract_language_features``; ``../shared/reference/TEAM_MODELS.md``):

- ``image``: ``processor(images=...)`` -> ``vision_model(pixel_values).pooler_output`` (1024-d);
- ``text``: ``processor(text=...)`` -> the text transformer's ``last_hidden_state.mean(1)`` (2048-d). One
  deliberate difference: instructions are encoded one string at a time, so the mean never averages pad tokens in
  (the team's batched call did when strings of different lengths shared a batch; for a single instruction, the
  deployed case, both are identical);
- ``multimodal`` (the original hybrid / pure-Kosmos-2 trainers): ``processor(images=..., text=instruction)``
  through the whole model. Their code reads ``.pooler_output`` of that output, which a Kosmos-2 output does not
  have; we take **the mean of the language model's last hidden states over the attended tokens** (image tokens
  and text), the same pooling as their ``text`` feature (our reading, stated in the README);
- ``clip_image`` / ``clip_text``: :mod:`policies.backbones.clip`, when CLIP weights are attached.

Weights: a local ``save_pretrained`` folder or hub id (``Kosmos2ForConditionalGeneration.from_pretrained``), or
the frozen Kosmos-2 weights inside a team checkpoint (:func:`build_kosmos2_model`: ``Kosmos2Model`` names of
transformers 4.x (``text_model.layers...``) or 5.x (``text_model.model.layers...``), or
``Kosmos2ForConditionalGeneration`` names), assigned without a copy from the memory-mapped file; only the
processor then comes from a folder or the local hub cache. fp32 on CPU; bf16 (fp16 where bf16 is unsupported) on
CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foundations.errors import MobileVLAError
from policies.backbones.base import Backbone, freeze
from policies.backbones.minilm import quiet_transformers

#: Hub id used when no ``path`` is given.
DEFAULT_KOSMOS2_ID = "microsoft/kosmos-2-patch14-224"


class Kosmos2LoadError(MobileVLAError, ValueError):
    """Kosmos-2 weights or processor that cannot be found or used (the message says what to pass)."""


def kosmos2_dtype(device: torch.device) -> torch.dtype:
    """Inference dtype: float32 on CPU, bfloat16 on CUDA when supported, else float16
    (:func:`~policies.backbones.base.inference_dtype`)."""
    from policies.backbones.base import inference_dtype

    return inference_dtype(device)


def _local(ref: str | Path | None) -> Path | None:
    if ref is None:
        return None
    path = Path(os.path.expanduser(str(ref)))
    if path.exists():
        return path
    text = str(ref)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"Kosmos-2 folder not found: {path}")
    return None


def _source(path: str | Path | None) -> str:
    """What ``from_pretrained`` gets: the local folder ``path``, else ``path`` as a cached hub id, else
    :data:`DEFAULT_KOSMOS2_ID` (raises FileNotFoundError for a local-looking path that does not exist)."""
    local = _local(path)
    return str(local) if local is not None else (str(path) if path is not None else DEFAULT_KOSMOS2_ID)


def kosmos2_config(name: str, path: str | Path | None = None) -> Any:
    """The ``Kosmos2Config`` of backbone ``name`` without loading weights: the toy one for ``tiny-kosmos2``; for
    ``kosmos2`` the ``config.json`` of a local folder ``path``, else transformers' default (= the sizes of
    ``microsoft/kosmos-2-patch14-224``: vision 1024-d x 24, text 2048-d x 24, 64 latent queries)."""
    from transformers import Kosmos2Config

    if name == "tiny-kosmos2":
        from policies.backbones.tiny_kosmos2 import tiny_kosmos2_config

        return tiny_kosmos2_config()
    local = _local(path)
    if local is not None and (local / "config.json").is_file():
        return Kosmos2Config.from_pretrained(str(local))
    return Kosmos2Config()


def to_generation_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Kosmos-2 weights in any of the team's layouts -> ``Kosmos2ForConditionalGeneration`` names
    (``text_model.layers.*`` -> ``text_model.model.layers.*``; ``lm_head`` tied to the token embedding when absent)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("text_model.") and not key.startswith(("text_model.model.", "text_model.lm_head.")):
            key = "text_model.model." + key[len("text_model."):]
        out[key] = value
    if "text_model.lm_head.weight" not in out and "text_model.model.embed_tokens.weight" in out:
        out["text_model.lm_head.weight"] = out["text_model.model.embed_tokens.weight"]
    return out


def build_kosmos2_model(config: Any, state: Mapping[str, torch.Tensor]) -> Any:
    """A ``Kosmos2ForConditionalGeneration`` of ``config`` holding ``state``'s tensors (assigned, not copied: a
    memory-mapped checkpoint stays mapped). Built on the meta device, so no random weights are allocated.

    Raises:
        Kosmos2LoadError: missing, unexpected or mis-shaped tensors (listed).
    """
    from transformers import Kosmos2ForConditionalGeneration

    state = to_generation_layout(state)
    with torch.device("meta"):
        model = Kosmos2ForConditionalGeneration(config)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    wrong = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise Kosmos2LoadError(f"the Kosmos-2 weights do not fit the {config.text_config.embed_dim}-d Kosmos-2 "
                               f"configuration: {len(missing)} missing {missing[:4]}, {len(unexpected)} unexpected "
                               f"{unexpected[:4]}, {len(wrong)} mis-shaped {wrong[:3]}")
    model.load_state_dict(state, assign=True)
    for module in model.modules():  # non-persistent buffers (position ids, sinusoid tables) are still on meta
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_meta:
                module._buffers[name] = _rebuild_buffer(module, name, buf)
    return model.eval().requires_grad_(False)


def _rebuild_buffer(module: torch.nn.Module, name: str, buf: torch.Tensor) -> torch.Tensor:
    if name == "position_ids":
        return torch.arange(buf.shape[-1]).expand(buf.shape).clone()
    if name == "weights" and hasattr(module, "get_embedding"):  # sinusoidal position table
        num, dim = buf.shape
        return module.get_embedding(num, dim, getattr(module, "padding_idx", None)).to(buf.dtype)
    raise Kosmos2LoadError(f"cannot rebuild buffer {type(module).__name__}.{name} after loading weights")


def load_kosmos2_processor(name: str, path: str | Path | None = None) -> Any:
    """The ``Kosmos2Processor``: the toy one for ``tiny-kosmos2``; else from a local folder ``path`` or the hub
    cache of :data:`DEFAULT_KOSMOS2_ID` (never a download).

    Raises:
        Kosmos2LoadError: no processor files available.
    """
    if name == "tiny-kosmos2":
        from policies.backbones.tiny_kosmos2 import tiny_kosmos2_processor

        return tiny_kosmos2_processor()
    from transformers import AutoProcessor

    ref = _source(path)
    try:
        with quiet_transformers():
            return AutoProcessor.from_pretrained(ref, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise Kosmos2LoadError(
            f"the Kosmos-2 processor (tokenizer + image preprocessing) was not found in {ref!r}: pass "
            f"--backbone-path DIR (a save_pretrained folder of {DEFAULT_KOSMOS2_ID}, at least its processor "
            f"files) or put that model in the Hugging Face cache ({type(exc).__name__})") from None


def load_kosmos2_parts(name: str, path: str | Path | None = None,
                       weights: Mapping[str, torch.Tensor] | None = None) -> tuple[Any, Any]:
    """``(Kosmos2ForConditionalGeneration, Kosmos2Processor)`` on the CPU, frozen.

    Args:
        name: ``"kosmos2"`` or ``"tiny-kosmos2"``.
        path: ``kosmos2``: local folder or hub id (``None`` = :data:`DEFAULT_KOSMOS2_ID`; a hub id must be in the
            local cache).
        weights: Kosmos-2 tensors from a checkpoint; when given, the architecture comes from
            :func:`kosmos2_config` and only the processor from ``path``.

    Raises:
        FileNotFoundError: ``path`` looks local but does not exist. Kosmos2LoadError: unusable weights or no
        processor.
    """
    if weights:
        model = build_kosmos2_model(kosmos2_config(name, path), weights)
        return model, load_kosmos2_processor(name, path)
    if name == "tiny-kosmos2":
        from policies.backbones.tiny_kosmos2 import build_tiny_kosmos2

        return build_tiny_kosmos2()
    from transformers import Kosmos2ForConditionalGeneration

    ref = _source(path)
    try:
        with quiet_transformers():
            model = Kosmos2ForConditionalGeneration.from_pretrained(ref, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise Kosmos2LoadError(
            f"Kosmos-2 weights not found in {ref!r}: pass --backbone-path DIR (a save_pretrained folder of "
            f"{DEFAULT_KOSMOS2_ID}), put that model in the Hugging Face cache, or use a checkpoint that carries "
            f"the frozen Kosmos-2 weights ({type(exc).__name__})") from None
    return freeze(model), load_kosmos2_processor(name, path)


class Kosmos2Backbone(Backbone):
    """Kosmos-2 features (``image``, ``text``, ``multimodal``) and, when attached, CLIP ones (``clip_image``,
    ``clip_text``), from an already built ``Kosmos2ForConditionalGeneration`` + ``Kosmos2Processor``.

    Args:
        model: a ``Kosmos2ForConditionalGeneration`` (frozen and moved here).
        processor: the matching ``Kosmos2Processor``.
        name: registry name to report (``"kosmos2"`` or ``"tiny-kosmos2"``).
        device: torch device; the model is cast to :func:`kosmos2_dtype`.
        clip_image, clip_text: sources for :func:`policies.backbones.clip.load_clip_image` /
            :func:`~policies.backbones.clip.load_clip_text` (state dict, file, folder, ``"tiny"``), or built
            encoders, or ``None`` (stream unavailable).
        clip_tokenizer_path: CLIP tokenizer folder for a ``clip_text`` state dict.

    Widths: ``image`` = ``vision_config.hidden_size`` (1024 for the real model), ``text`` / ``multimodal`` =
    ``text_config.embed_dim`` (2048), ``clip_image`` = the CLIP projection width (512), ``clip_text`` = the CLIP
    text width (512).
    """

    def __init__(self, model: Any, processor: Any, name: str = "kosmos2", device: str | torch.device = "cpu", *,
                 clip_image: Any = None, clip_text: Any = None, clip_tokenizer_path: str | Path | None = None) -> None:
        from policies.backbones import clip

        super().__init__(device)
        self.name = name
        self.dtype = kosmos2_dtype(self.device)
        self.model = freeze(model.to(device=self.device, dtype=self.dtype))
        self.processor = processor
        self.vision_dim = int(model.config.vision_config.hidden_size)
        self.text_dim = int(model.config.text_config.embed_dim)
        if clip_image is not None and not isinstance(clip_image, clip.ClipImageEncoder):
            clip_image = clip.load_clip_image(clip_image, self.device)
        if clip_text is not None and not isinstance(clip_text, clip.ClipTextEncoder):
            clip_text = clip.load_clip_text(clip_text, self.device, tokenizer_path=clip_tokenizer_path)
        self.clip_image, self.clip_text = clip_image, clip_text

    def stream_dims(self) -> dict[str, int]:
        dims = {"image": self.vision_dim, "image_mean": self.vision_dim, "text": self.text_dim,
                "multimodal": self.text_dim}
        if self.clip_image is not None:
            dims["clip_image"] = self.clip_image.dim
        if self.clip_text is not None:
            dims["clip_text"] = self.clip_text.dim
        return dims

    @property
    def text_transformer(self) -> Any:
        """The Kosmos-2 text transformer (``Kosmos2TextTransformer``)."""
        return self.model.text_model.model

    def vision_modules(self) -> dict[str, torch.nn.Module]:
        """``vision_model`` (``image``, and inside the whole model for ``multimodal``) and, when attached, the CLIP
        image model (``clip_image``)."""
        modules = {"vision_model": self.model.vision_model}
        if self.clip_image is not None:
            modules["clip_image"] = self.clip_image.model
        return modules

    def _encode_frames(self, images: np.ndarray, streams: tuple[str, ...], instruction: str | None
                       ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if "image" in streams or "image_mean" in streams:
            pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
            vision = self.model.vision_model(pixels.to(self.device, self.dtype))
            out["image"] = vision.pooler_output
            out["image_mean"] = vision.last_hidden_state.mean(dim=1)  # all tokens, CLS included
        if "clip_image" in streams:
            out["clip_image"] = self.clip_image.encode(images)
        if "multimodal" in streams:
            out["multimodal"] = self._multimodal(images, instruction or "")
        return out

    def _multimodal(self, images: np.ndarray, instruction: str) -> torch.Tensor:
        inputs = self.processor(images=list(images), text=[instruction] * len(images), return_tensors="pt",
                                num_image_tokens=int(self.model.config.latent_query_num))
        mask = inputs["attention_mask"].to(self.device)
        output = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.dtype),
                            input_ids=inputs["input_ids"].to(self.device), attention_mask=mask,
                            image_embeds_position_mask=inputs["image_embeds_position_mask"].to(self.device),
                            output_hidden_states=True, use_cache=False)
        hidden = output.hidden_states[-1]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1)

    def image_split(self, layers: int) -> Any:
        """``vision_model`` cut below its last ``layers`` encoder layers: the trunk gives their input hidden states,
        float32 ``(N, 1 + patches, vision_dim)``; the top runs those layers and ``post_layernorm`` over the class
        token (= ``pooler_output``); LoRA targets are those layers' ``nn.Linear`` modules
        (:mod:`policies.backbones.lora`)."""
        from policies.backbones.lora import ImageSplit, call_encoder_layer, check_layers

        tower = self.model.vision_model.model  # Kosmos2VisionTransformer
        blocks = tower.encoder.layers
        cut = check_layers(layers, len(blocks), f"{self.name} (vision encoder layers)")
        targets = tuple(f"encoder.layers.{i}.{name}" for i in range(cut, len(blocks))
                        for name in ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj",
                                     "mlp.fc1", "mlp.fc2"))

        def trunk(images: np.ndarray) -> torch.Tensor:
            pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                hidden = tower.pre_layrnorm(tower.embeddings(pixels.to(self.device, self.dtype)))
                for block in blocks[:cut]:
                    hidden = call_encoder_layer(block, hidden)
            return hidden.float().cpu().clone()

        def top(hidden: torch.Tensor) -> torch.Tensor:
            hidden = hidden.to(self.device, self.dtype)
            for block in blocks[cut:]:
                hidden = call_encoder_layer(block, hidden)
            return tower.post_layernorm(hidden[:, 0]).float()

        return ImageSplit(tower, targets, trunk, top)

    def _encode_instruction(self, stream: str, texts: list[str]) -> torch.Tensor:
        if stream == "clip_text":
            return self.clip_text.encode(texts)
        feats = []
        for text in texts:
            ids = self.processor(text=[text], return_tensors="pt")["input_ids"].to(self.device)
            feats.append(self.text_transformer(input_ids=ids).last_hidden_state.mean(1))
        return torch.cat(feats, 0)


def load_kosmos2(path: str | Path | None = None, device: str | torch.device = "cpu", **kwargs: Any
                 ) -> Kosmos2Backbone:
    """The ``kosmos2`` backbone from a local folder or cached hub id (see :func:`load_kosmos2_parts`);
    ``kwargs`` go to :class:`Kosmos2Backbone` (CLIP parts)."""
    model, processor = load_kosmos2_parts("kosmos2", path)
    return Kosmos2Backbone(model, processor, name="kosmos2", device=device, **kwargs)
