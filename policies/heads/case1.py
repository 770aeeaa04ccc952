"""``case1``: ``Simplified2DActionModelV2``, the team's "immediate optimisation" model.

Seed 002 / spec section 5: adapters ``vision_dim -> 256`` and ``text_dim -> 256`` (``Linear, LayerNorm,
ReLU, Dropout 0.4``), concatenated to 512, then a 4-layer MLP ``512 -> 512 -> 256 -> 128 -> action_dim``
with LayerNorm. One frame in (the newest of the window), one action out. Linear output.
"""

from __future__ import annotations

import dataclasses

import torch

from policies.heads.base import ActionHead, HeadConfig
from policies.heads.layers import adapter, ln_mlp


@dataclasses.dataclass
class Case1Config(HeadConfig):
    """``hidden_dim`` 256 and ``dropout`` 0.4 as in the team's registry (seed 002); window 1, chunk 1."""

    hidden_dim: int = 256
    dropout: float = 0.4
    window_size: int = 1
    chunk_size: int = 1


class Simplified2DActionModelV2(ActionHead):
    """Case 1: ``(B, T, vision_dim)`` (last frame used), ``(B, text_dim)`` -> ``(B, chunk, action_dim)``.

    Modules: ``vision_adapter``, ``text_adapter``, ``action_head`` (the 4-layer MLP).
    """

    head_name = "case1"
    config_class = Case1Config
    output_activation = "linear"

    def __init__(self, config: Case1Config) -> None:
        super().__init__(config)
        h = config.hidden_dim
        self.vision_adapter = adapter(config.vision_dim, h, config.dropout)
        self.text_adapter = adapter(config.text_dim, h, config.dropout)
        self.action_head = ln_mlp([2 * h, 2 * h, h, h // 2], self.out_features, config.dropout)

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([self.vision_adapter(vision[:, -1]), self.text_adapter(text)], dim=-1)
        return self.action_head(fused)
