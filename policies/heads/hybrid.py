"""``hybrid``: the team's original ``Kosmos2CLIPHybridModel``, and ``pure-kosmos2``: their ``PureKosmos2Model``
(``minuum/vla`` ``Mobile_VLA/training/trainers/train_kosmos2_clip_hybrid_original.py`` and
``train_pure_kosmos2_original.py``; ``../shared/reference/team_models/kosmos2_clip_hybrid_original.json``,
``pure_kosmos2_original.json``).

Both read one frame and output one action, with no LSTM, window or chunk:

- ``hybrid``: ``[multimodal (2048) ; clip_text (512)]`` -> ``fusion`` ``Linear(2560, 512), ReLU, Dropout`` ->
  ``action_head`` ``Linear(512, 256), ReLU, Dropout, Linear(256, 2)``;
- ``pure-kosmos2``: ``multimodal (2048)`` -> ``fusion`` ``Linear(2048, 512), ReLU, Dropout`` -> the same
  ``action_head``.

``multimodal`` is the Kosmos-2 feature of the frame *and* the instruction (their code reads
``Kosmos2Model(**processor(images, text)).pooler_output``, an attribute that model's output does not have:
see :mod:`policies.backbones` for the feature we compute in its place); ``clip_text`` is the CLIP text tower's
``pooler_output`` (``openai/clip-vit-base-patch32``). Their ``clip_vision`` model is loaded but never used by
the forward pass. Linear output (no final norm).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from policies.heads.base import ActionHead, HeadConfig, linear_in_out
from policies.heads.case1 import _mlp


@dataclasses.dataclass
class HybridConfig(HeadConfig):
    """``vision_dim`` = the ``multimodal`` width (2048), ``text_dim`` = the ``clip_text`` width (512), the team's
    ``hidden_dim`` 512 and ``dropout`` 0.2."""

    vision_dim: int = 2048
    text_dim: int = 512
    hidden_dim: int = 512
    dropout: float = 0.2


@dataclasses.dataclass
class PureKosmos2Config(HybridConfig):
    """As :class:`HybridConfig` without an instruction feature (``text_dim`` 0)."""

    text_dim: int = 0


class Kosmos2CLIPHybridModel(ActionHead):
    """Hybrid: ``multimodal (B, T, vision_dim)`` (newest frame), ``clip_text (B, text_dim)`` -> ``(B, 1, 2)``.

    Parameters (the team's names): ``fusion.0``, ``action_head.{0,3}``.
    """

    head_name = "hybrid"
    config_class = HybridConfig
    output_activation = "linear"
    team_class = "Kosmos2CLIPHybridModel"

    @classmethod
    def frame_inputs(cls, config: HeadConfig) -> tuple[tuple[str, str], ...]:
        return (("multimodal", "vision_dim"),)

    @classmethod
    def instruction_inputs(cls, config: HeadConfig) -> tuple[tuple[str, str], ...]:
        return (("clip_text", "text_dim"),)

    def __init__(self, config: HybridConfig) -> None:
        super().__init__(config)
        h = int(config.hidden_dim)
        self.fusion = nn.Sequential(nn.Linear(self.frame_dim + self.instruction_dim, h), nn.ReLU(),
                                    nn.Dropout(config.dropout))
        self.action_head = _mlp([h, h // 2, self.out_features], config.dropout)

    @classmethod
    def config_from_state_dict(cls, state: Mapping[str, torch.Tensor], values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with ``hidden_dim`` off ``fusion.0``; when neither width is given, its input split as the
        team's: ``vision_dim`` 2048 (:class:`HybridConfig`), ``text_dim`` the rest (0 for pure Kosmos-2)."""
        out = dict(values)
        fusion = linear_in_out(state, "fusion.0.weight")
        if fusion:
            out["hidden_dim"] = fusion[1]
            if "vision_dim" not in values and "text_dim" not in values:  # the team's split: 2048 + the rest
                text = max(0, fusion[0] - HybridConfig.vision_dim) if cls.instruction_inputs(HybridConfig()) else 0
                out["vision_dim"], out["text_dim"] = fusion[0] - text, text
        return out

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.action_head(self.fusion(torch.cat([vision[:, -1], text], dim=-1)))


class PureKosmos2Model(Kosmos2CLIPHybridModel):
    """Pure Kosmos-2: ``multimodal (B, T, vision_dim)`` (newest frame) -> ``(B, 1, 2)``; no instruction feature
    besides the one inside ``multimodal``. Parameters ``fusion.0``, ``action_head.{0,3}``."""

    head_name = "pure-kosmos2"
    config_class = PureKosmos2Config
    team_class = "PureKosmos2Model"

    @classmethod
    def instruction_inputs(cls, config: HeadConfig) -> tuple[tuple[str, str], ...]:
        return ()
