"""``kosmos2``: the team's frozen ``microsoft/kosmos-2-patch14-224`` feature extractor (transformers).

Exactly the team's feature code (``../shared/seeds/002_*.txt``, ``extract_vision_features`` /
``extract_language_features``):

- vision: ``processor(images=...)`` -> ``model.vision_model(pixel_values).pooler_output`` (1024-d);
- text: ``processor(text=...)`` -> ``model.text_model(input_ids).last_hidden_state.mean(1)`` (2048-d).

One deliberate difference: instructions are encoded one string at a time, so the mean never averages pad
tokens in (the team's batched call did when strings of different lengths shared a batch; for a single
instruction, the deployed case, both are identical). fp32 on CPU; bf16 (or fp16 where bf16 is unsupported)
on CUDA.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.backbones.base import Backbone, freeze
from policies.backbones.minilm import quiet_transformers

#: Hub id used when no ``path`` is given.
DEFAULT_KOSMOS2_ID = "microsoft/kosmos-2-patch14-224"


def kosmos2_dtype(device: torch.device) -> torch.dtype:
    """Inference dtype: float32 on CPU, bfloat16 on CUDA when supported, else float16."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Kosmos2Backbone(Backbone):
    """Kosmos-2 vision/text features from an already built ``Kosmos2Model`` + ``Kosmos2Processor``.

    Args:
        model: a ``transformers.Kosmos2Model`` (frozen here).
        processor: the matching ``Kosmos2Processor`` (image resize/crop/normalise and tokenizer).
        name: registry name to report (``"kosmos2"`` or ``"tiny-kosmos2"``).
        device: torch device; the model is moved there and cast to :func:`kosmos2_dtype`.

    ``vision_dim`` = ``vision_config.hidden_size`` (1024 for the real model), ``text_dim`` =
    ``text_config.embed_dim`` (2048).
    """

    def __init__(self, model: Any, processor: Any, name: str = "kosmos2",
                 device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.name = name
        self.dtype = kosmos2_dtype(self.device)
        self.model = freeze(model.to(device=self.device, dtype=self.dtype))
        self.processor = processor
        self.vision_dim = int(model.config.vision_config.hidden_size)
        self.text_dim = int(model.config.text_config.embed_dim)

    def _encode_images(self, images: np.ndarray) -> torch.Tensor:
        inputs = self.processor(images=list(images), return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, dtype=self.dtype)
        return self.model.vision_model(pixel_values).pooler_output

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        feats = []
        for text in texts:
            ids = self.processor(text=[text], return_tensors="pt")["input_ids"].to(self.device)
            feats.append(self.model.text_model(ids).last_hidden_state.mean(1))
        return torch.cat(feats, 0)


def load_kosmos2(path: str | Path | None = None, device: str | torch.device = "cpu") -> Kosmos2Backbone:
    """Load Kosmos-2 with ``AutoModel`` + ``AutoProcessor`` from a local folder or a hub id.

    Args:
        path: local folder (``save_pretrained`` layout) or hub id; ``None`` = :data:`DEFAULT_KOSMOS2_ID`.
            A hub id is resolved by transformers' usual cache rules (with ``HF_HUB_OFFLINE=1`` it must be cached).
        device: torch device.

    Raises:
        FileNotFoundError: ``path`` looks like a local path but does not exist (checked before transformers
            could mistake it for a hub id and try the network).
    """
    from transformers import AutoModel, AutoProcessor

    ref = str(path) if path is not None else DEFAULT_KOSMOS2_ID
    ref = os.path.expanduser(ref)
    local = Path(ref).exists()
    if not local and (path is not None and (ref.startswith((".", "/")) or ref.count("/") > 1)):
        raise FileNotFoundError(f"Kosmos-2 folder not found: {ref}")
    kwargs: dict[str, Any] = {"local_files_only": True} if local else {}
    dev = torch.device(device)
    with quiet_transformers():
        model = AutoModel.from_pretrained(ref, dtype=kosmos2_dtype(dev), **kwargs)
        processor = AutoProcessor.from_pretrained(ref, **kwargs)
    return Kosmos2Backbone(model, processor, name="kosmos2", device=dev)
