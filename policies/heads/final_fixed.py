"""**Our reconstructions** of two models of the team's optimisation notes (``../shared/seeds/000_*.txt``), whose
full source is not public; the notes give their core as code, which these heads follow:

- ``final-fixed-recon``: ``FinalFixedOptimizedModel`` ("1. Final Fixed 스타일 최적화"): a 3-DoF output
  ``[linear_x, linear_y, angular_z]`` multiplied by a **learnable** ``z_axis_weight`` initialised to
  ``[1, 1, 0.05]`` (their ``nn.Parameter``), ``LayerNorm(hidden_dim)``, ``Dropout(0.2)`` and the "simple action
  head" ``Linear(h, h/2), ReLU, Linear(h/2, action_dim)``. The notes' forward starts from ``features`` of width
  ``hidden_dim`` without saying which; ours are the ``image`` and ``text`` streams concatenated (or fused with
  :class:`~policies.heads.fusion.AdaptiveFeatureFusion`) and brought to ``hidden_dim`` by ``feature_adapter``
  (our addition), then the notes' LayerNorm and dropout, which their snippet declares but does not call.
  ``hidden_dim`` 256 (the team's case heads' width, seed 002; the notes give none). Its training recipe (strategy
  1: dropout 0.2, lr 1e-3, weight decay 1e-5, 6 epochs; loss MSE + 0.1 L1 on z-weighted actions) is
  :data:`sim.training.recipes.STRATEGIES` and ``--loss final-fixed``.
- ``hybrid-ensemble-recon``: ``HybridEnsembleModel`` ("2. 하이브리드 앙상블 접근"): ``w * final_fixed + (1 - w) *
  advanced`` with a **learnable** ``ensemble_weight`` ``w`` initialised to 0.6 (their ``nn.Parameter``, not
  constrained to [0, 1]). Both members and ``w`` are trained together, end to end (the notes do not say whether the
  members were trained first). The team's "advanced" model is not public: ``advanced`` names one of this project's
  heads that read ``image`` + ``text`` (default ``lstm-recon``, our reconstruction of their "Simple LSTM"), with
  ``advanced_config`` for its other config fields.

Both read the ``image`` and ``text`` streams. The existing ``ensemble`` policy is different: a fixed 0.6 average of
two separately trained policies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from foundations.errors import ConfigError
from policies.heads.base import ActionHead, HeadConfig
from policies.heads.factory import make_head
from policies.heads.fusion import AdaptiveFeatureFusion, concat_or_fuse


@dataclasses.dataclass
class FinalFixedConfig(HeadConfig):
    """3-DoF by default (``action_dim`` 3, ``z_axis_weight`` 0.05: seed 000 Final-Fixed), ``hidden_dim`` 256,
    ``dropout`` 0.2 (seed 000: "낮은 드롭아웃"); one frame, one action. ``adaptive_fusion``: fuse ``image`` and
    ``text`` with :class:`~policies.heads.fusion.AdaptiveFeatureFusion` instead of concatenating them."""

    action_dim: int = 3
    hidden_dim: int = 256
    dropout: float = 0.2
    adaptive_fusion: bool = False


class FinalFixedReconstruction(ActionHead):
    """``final-fixed-recon``: ``image (B, T, vision_dim)`` (newest frame), ``text (B, text_dim)`` ->
    ``(B, chunk_size, action_dim)``, linear output times the learnable ``z_axis_weight`` when 3-DoF.

    Modules: ``fusion`` (only with ``adaptive_fusion``), ``feature_adapter``, ``layer_norm``, ``dropout``,
    ``action_head.{0,2}``; parameter ``z_axis_weight`` (3-DoF).
    """

    head_name = "final-fixed-recon"
    config_class = FinalFixedConfig
    output_activation = "linear"

    def __init__(self, config: FinalFixedConfig) -> None:
        super().__init__(config)
        h = int(config.hidden_dim)
        if h < 2:
            raise ConfigError(f"hidden_dim must be >= 2, got {h}")
        if config.action_dim == 3:  # the notes' nn.Parameter, in place of the base class's fixed buffer
            del self.z_axis_weight
            self.z_axis_weight = nn.Parameter(torch.tensor([1.0, 1.0, float(config.z_axis_weight)]))
        self.fusion = (AdaptiveFeatureFusion(config.vision_dim, config.text_dim, h)
                       if config.adaptive_fusion else None)
        self.feature_adapter = nn.Linear(config.vision_dim + config.text_dim, h)
        self.layer_norm = nn.LayerNorm(h)
        self.dropout = nn.Dropout(config.dropout)
        self.action_head = nn.Sequential(nn.Linear(h, h // 2), nn.ReLU(), nn.Linear(h // 2, self.out_features))

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        features = self.feature_adapter(concat_or_fuse(self.fusion, vision[:, -1], text))
        return self.action_head(self.dropout(self.layer_norm(features)))


#: Heads ``hybrid-ensemble-recon`` accepts as its ``advanced`` member (they read ``image`` + ``text``).
ADVANCED_HEADS = ("lstm-recon", "case1", "case1-v1", "case3", "case4-recon", "final-fixed-recon")
#: Config fields the ensemble sets on both members itself.
SHARED_FIELDS = ("vision_dim", "text_dim", "action_dim", "window_size", "chunk_size", "z_axis_weight")


@dataclasses.dataclass
class HybridEnsembleConfig(HeadConfig):
    """``ensemble_weight`` 0.6 (seed 000: "Final Fixed에 더 높은 가중치"), 3-DoF; ``hidden_dim`` / ``dropout`` are
    the Final-Fixed member's; ``advanced`` + ``advanced_config`` the other member (window 8 and chunk 10: the
    default ``lstm-recon``'s; the Final-Fixed member predicts the same chunk from the newest frame)."""

    action_dim: int = 3
    window_size: int = 8
    chunk_size: int = 10
    ensemble_weight: float = 0.6
    hidden_dim: int = 256
    dropout: float = 0.2
    advanced: str = "lstm-recon"
    advanced_config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        """As :meth:`HeadConfig.validate`, and raise ``ConfigError`` for an ``advanced`` head outside
        :data:`ADVANCED_HEADS` or an ``advanced_config`` that is not a dict or sets a :data:`SHARED_FIELDS` field."""
        super().validate()
        if self.advanced not in ADVANCED_HEADS:
            raise ConfigError(f"advanced must be one of {', '.join(ADVANCED_HEADS)} (heads reading image + text), "
                              f"got {self.advanced!r}")
        if not isinstance(self.advanced_config, dict) or not all(isinstance(k, str) for k in self.advanced_config):
            raise ConfigError(f"advanced_config must be a dict of config fields, got {self.advanced_config!r}")
        shared = sorted(set(self.advanced_config) & set(SHARED_FIELDS))
        if shared:
            raise ConfigError(f"advanced_config cannot set {', '.join(shared)}: the ensemble sets them on both members")


class HybridEnsembleReconstruction(ActionHead):
    """``hybrid-ensemble-recon``: ``image (B, T, vision_dim)``, ``text (B, text_dim)`` -> ``(B, chunk_size,
    action_dim)`` = ``ensemble_weight * final_fixed(...) + (1 - ensemble_weight) * advanced(...)``; each member
    applies its own ``z_axis_weight``.

    Modules: ``final_fixed`` (:class:`FinalFixedReconstruction`), ``advanced`` (the ``advanced`` head); parameter
    ``ensemble_weight`` (scalar).

    Raises:
        ConfigError: see :meth:`HybridEnsembleConfig.validate`; an ``advanced_config`` field the member lacks.
    """

    head_name = "hybrid-ensemble-recon"
    config_class = HybridEnsembleConfig
    output_activation = "linear"
    applies_z_axis_weight = False

    def __init__(self, config: HybridEnsembleConfig) -> None:
        super().__init__(config)
        shared = {f: getattr(config, f) for f in SHARED_FIELDS}
        self.final_fixed = FinalFixedReconstruction(FinalFixedConfig(
            **shared, hidden_dim=config.hidden_dim, dropout=config.dropout))
        self.advanced = make_head(config.advanced, **shared, **config.advanced_config)
        self.ensemble_weight = nn.Parameter(torch.tensor(float(config.ensemble_weight)))

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        w = self.ensemble_weight
        mixed = w * self.final_fixed(vision, text) + (1 - w) * self.advanced(vision, text)
        return mixed.flatten(1)
