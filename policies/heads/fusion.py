"""``AdaptiveFeatureFusion``: the team's fusion module with softmax weights over vision and language features
(``../shared/seeds/000_*.txt``, section "3. 적응형 특징 융합", written there as a class of its own).

``adaptive_weights`` = ``Linear(vision_dim + language_dim, hidden_dim // 2), ReLU, Linear(hidden_dim // 2, 2),
Softmax``: two weights per sample that sum to 1, the first scaling the vision features, the second the language
features; the output is the two weighted parts concatenated, so the module replaces a plain ``torch.cat`` in any
head (same output width). The heads that offer it (config field ``adaptive_fusion``: ``case1``, ``case1-v1``,
``case3``, ``lstm-recon``, ``final-fixed-recon``) use it where they concatenate their vision and language features;
the default, ``False``, keeps their original ``torch.cat``.
"""

from __future__ import annotations

import torch
from torch import nn


class AdaptiveFeatureFusion(nn.Module):
    """Softmax-weighted fusion of vision and language features (the team's ``AdaptiveFeatureFusion``).

    Args:
        vision_dim: width of the vision features.
        language_dim: width of the language features.
        hidden_dim: sets the width of the weight network's hidden layer (``hidden_dim // 2``, as the team wrote it).

    ``forward(vision (..., vision_dim), language (..., language_dim))`` -> float ``(..., vision_dim +
    language_dim)`` = ``[vision * w_v ; language * w_l]``, ``(w_v, w_l) = softmax(adaptive_weights([vision ;
    language]))``. Any leading dimensions (batch, time) are allowed; both inputs must share them.
    """

    def __init__(self, vision_dim: int, language_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.adaptive_weights = nn.Sequential(
            nn.Linear(vision_dim + language_dim, hidden_dim // 2),
            nn.ReLU(),
            nn.Linear(hidden_dim // 2, 2),  # vision, language
            nn.Softmax(dim=-1),
        )

    def weights(self, vision: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        """The per-sample ``(w_vision, w_language)``, float ``(..., 2)``, each row summing to 1."""
        return self.adaptive_weights(torch.cat([vision, language], dim=-1))

    def forward(self, vision: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        weights = self.weights(vision, language)
        return torch.cat([vision * weights[..., 0:1], language * weights[..., 1:2]], dim=-1)


def concat_or_fuse(fusion: nn.Module | None, vision: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
    """``fusion(vision, language)`` when the head has an :class:`AdaptiveFeatureFusion`, else ``torch.cat``."""
    return torch.cat([vision, language], dim=-1) if fusion is None else fusion(vision, language)
