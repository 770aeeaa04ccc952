"""``case1``: the team's ``Simplified2DActionModelV2``, and ``case1-v1``: its first version
``Simplified2DActionModel`` (``minuum/vla`` ``Robo+/Mobile_VLA/models/immediate/simplified_2d_model_v2.py`` and
``simplified_2d_model.py``; ``../shared/reference/team_models/case1_*.json``).

Forward pass, one frame in, one action out (no window, no chunk):

- ``image`` feature (Kosmos-2 ``vision_model(pixel_values).pooler_output``, 1024-d) -> ``feature_adapter``
  (Linear to ``hidden_dim``) -> ``layer_norm_vision`` -> ``dropout_vision``;
- ``text`` feature (Kosmos-2 ``text_model(input_ids).last_hidden_state.mean(1)``, 2048-d) -> ``language_adapter``
  -> ``layer_norm_language`` -> ``dropout_language``;
- concatenated (``2 * hidden_dim``) -> ``action_head`` -> ``final_norm = LayerNorm(action_dim)``.

``action_head`` is ``Linear(2h, 2h), ReLU, Dropout, Linear(2h, h), ReLU, Dropout, Linear(h, h/2), ReLU, Dropout,
Linear(h/2, action_dim)`` in V2 (parameters ``action_head.0/3/6/9``) and ``Linear(2h, h), ReLU, Dropout,
Linear(h, action_dim)`` in V1 (``action_head.0/3``). No LayerNorm inside. Note what ``final_norm`` does to two
values: ``LayerNorm`` over ``(a, b)`` gives ``(s, -s) * gamma + beta`` with ``s = u / sqrt(u^2 + eps)``,
``u = (a - b) / 2``, so every output lies on one fixed line segment (README: what this means in closed loop).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from policies.heads.base import ActionHead, HeadConfig, linear_in_out
from policies.heads.fusion import AdaptiveFeatureFusion, concat_or_fuse


@dataclasses.dataclass
class Case1Config(HeadConfig):
    """The team's ``model_config`` fields (``hidden_dim`` 256, ``action_dim`` 2, ``dropout`` 0.4); one frame, one
    action. ``final_norm`` = False drops the final ``LayerNorm(action_dim)``: **not** the team's architecture, an
    ablation switch (README: why the team's single-frame heads fail). ``adaptive_fusion`` = True joins the adapted
    vision and language features with the team's :class:`~policies.heads.fusion.AdaptiveFeatureFusion` (seed 000)
    instead of ``torch.cat`` (an ablation switch too; adds the ``fusion.*`` parameters)."""

    hidden_dim: int = 256
    dropout: float = 0.4
    final_norm: bool = True
    adaptive_fusion: bool = False
    window_size: int = 1
    chunk_size: int = 1


def adapter_sizes(state: Mapping[str, torch.Tensor], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``vision_dim`` / ``hidden_dim`` / ``text_dim`` read off the team's ``feature_adapter`` and
    ``language_adapter`` weights, ``final_norm`` (+ ``action_dim``) off ``final_norm.weight``, and
    ``adaptive_fusion`` when the state holds its ``fusion.*`` weights."""
    out = dict(values)
    vision = linear_in_out(state, "feature_adapter.weight")
    text = linear_in_out(state, "language_adapter.weight")
    if vision:
        out["vision_dim"], out["hidden_dim"] = vision
    if text:
        out["text_dim"] = text[0]
    norm = state.get("final_norm.weight")
    out["final_norm"] = norm is not None
    if "fusion.adaptive_weights.0.weight" in state:  # the ablation switch's extra parameters
        out["adaptive_fusion"] = True
    if norm is not None and "action_dim" not in values:
        out["action_dim"] = int(norm.shape[0])
    return out


def _mlp(dims: list[int], dropout: float) -> nn.Sequential:
    """``Linear, ReLU, Dropout`` between consecutive ``dims``, a bare ``Linear`` last."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class Simplified2DActionModelV2(ActionHead):
    """Case 1 V2: ``image (B, T, vision_dim)`` (newest frame used), ``text (B, text_dim)`` -> ``(B, 1, action_dim)``.

    Parameters (the team's names): ``feature_adapter``, ``language_adapter``, ``layer_norm_vision``,
    ``layer_norm_language``, ``action_head.{0,3,6,9}``, ``final_norm``.
    """

    head_name = "case1"
    config_class = Case1Config
    output_activation = "layernorm"
    team_class = "Simplified2DActionModelV2"

    def __init__(self, config: Case1Config) -> None:
        super().__init__(config)
        h = int(config.hidden_dim)
        self.feature_adapter = nn.Linear(config.vision_dim, h)
        self.language_adapter = nn.Linear(config.text_dim, h)
        self.layer_norm_vision = nn.LayerNorm(h)
        self.layer_norm_language = nn.LayerNorm(h)
        self.dropout_vision = nn.Dropout(config.dropout)
        self.dropout_language = nn.Dropout(config.dropout)
        self.fusion = AdaptiveFeatureFusion(h, h, 2 * h) if config.adaptive_fusion else None
        self.action_head = _mlp(self._head_dims(h), config.dropout)
        self.final_norm = nn.LayerNorm(self.out_features) if config.final_norm else nn.Identity()
        if not config.final_norm:
            self.output_activation = "linear"  # the ablation's outputs are unbounded

    def _head_dims(self, h: int) -> list[int]:
        return [2 * h, 2 * h, h, h // 2, self.out_features]

    @classmethod
    def config_from_state_dict(cls, state: Mapping[str, torch.Tensor], values: dict[str, Any]) -> dict[str, Any]:
        """:func:`adapter_sizes`: the widths read off the adapters and ``final_norm``."""
        return adapter_sizes(state, values)

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        v = self.dropout_vision(self.layer_norm_vision(self.feature_adapter(vision[:, -1])))
        t = self.dropout_language(self.layer_norm_language(self.language_adapter(text)))
        return self.final_norm(self.action_head(concat_or_fuse(self.fusion, v, t)))


class Simplified2DActionModel(Simplified2DActionModelV2):
    """Case 1 V1: as V2 with the shorter ``action_head`` ``2h -> h -> action_dim`` (``action_head.{0,3}``)."""

    head_name = "case1-v1"
    team_class = "Simplified2DActionModel"

    def _head_dims(self, h: int) -> list[int]:
        return [2 * h, h, self.out_features]
