"""The action-head interface: pooled backbone features in, a normalised action chunk out.

Heads never see pixels or tokens, only the features a :class:`policies.backbones.Backbone` produced, so a
training command can cache those features on disk. Every head:

- is built from a JSON-serialisable dataclass ``config`` (a :class:`HeadConfig` subclass) holding the
  feature widths it was built for (``vision_dim``, ``text_dim``), ``action_dim``, ``window_size`` (how many of
  the most recent frames it reads) and ``chunk_size`` (actions predicted per call);
- maps ``forward(vision (B, T, vision_dim), text (B, text_dim))`` to ``(B, chunk_size, action_dim)`` in
  normalised units (the training labels were clamped to [-1, 1]; :class:`policies.vla.VLAPolicy` scales back
  to +-1.15). ``output_activation`` says whether the last layer is ``"tanh"`` (bounded) or ``"linear"``;
- outputs ``[linear_x, linear_y]`` (``action_dim = 2``, the team's models) or ``[linear_x, linear_y,
  angular_z]`` (``action_dim = 3``, the "z-axis weight 0.05" variant of seed 000: the raw output is multiplied
  by the fixed buffer ``z_axis_weight = [1, 1, 0.05]``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn


class HeadInputError(ValueError):
    """Features passed to a head have the wrong rank or width."""


@dataclasses.dataclass
class HeadConfig:
    """Fields shared by every head's config (defaults = the team's Kosmos-2 widths).

    Attributes:
        vision_dim: width of one frame's vision feature.
        text_dim: width of the instruction feature.
        action_dim: 2 = ``[linear_x, linear_y]``; 3 adds ``angular_z`` (scaled by ``z_axis_weight``).
        window_size: most recent frames the head reads (it slices ``vision[:, -window_size:]``).
        chunk_size: actions predicted per call (the action chunk).
        z_axis_weight: factor on the ``angular_z`` output when ``action_dim == 3``.
    """

    vision_dim: int = 1024
    text_dim: int = 2048
    action_dim: int = 2
    window_size: int = 1
    chunk_size: int = 1
    z_axis_weight: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of the fields."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ``ValueError`` for non-positive sizes or an ``action_dim`` other than 2 or 3."""
        for field in ("vision_dim", "text_dim", "window_size", "chunk_size"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.action_dim not in (2, 3):
            raise ValueError(f"action_dim must be 2 (linear_x, linear_y) or 3 (+ angular_z), got {self.action_dim}")


class ActionHead(nn.Module):
    """Base class of the heads; subclasses set ``head_name``, ``config_class``, ``output_activation`` and
    implement :meth:`_forward`.
    """

    #: Registry name (``"case1"`` ... ``"hybrid"``).
    head_name: ClassVar[str] = "head"
    #: The dataclass of this head's config.
    config_class: ClassVar[type[HeadConfig]] = HeadConfig
    #: ``"tanh"`` (outputs in (-1, 1)) or ``"linear"`` (unbounded, trained towards [-1, 1]).
    output_activation: ClassVar[str] = "linear"

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        config.validate()
        self.config = config
        if config.action_dim == 3:
            self.register_buffer("z_axis_weight", torch.tensor([1.0, 1.0, float(config.z_axis_weight)]))

    @property
    def window_size(self) -> int:
        """Frames read per call (the most recent ones)."""
        return int(self.config.window_size)

    @property
    def chunk_size(self) -> int:
        """Actions predicted per call."""
        return int(self.config.chunk_size)

    @property
    def action_dim(self) -> int:
        """2 (linear_x, linear_y) or 3 (+ angular_z)."""
        return int(self.config.action_dim)

    def forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Predict an action chunk.

        Args:
            vision: float ``(B, T, vision_dim)``, frames oldest first; the head reads the last
                ``min(T, window_size)`` of them.
            text: float ``(B, text_dim)`` instruction features.

        Returns:
            float ``(B, chunk_size, action_dim)`` normalised actions.

        Raises:
            HeadInputError: wrong rank, batch size or feature width.
        """
        if vision.dim() != 3 or vision.shape[-1] != self.config.vision_dim or vision.shape[1] < 1:
            raise HeadInputError(f"{self.head_name}: vision features must be (B, T, {self.config.vision_dim}), "
                                 f"got {tuple(vision.shape)}")
        if text.dim() != 2 or text.shape[-1] != self.config.text_dim or text.shape[0] != vision.shape[0]:
            raise HeadInputError(f"{self.head_name}: text features must be ({vision.shape[0]}, "
                                 f"{self.config.text_dim}), got {tuple(text.shape)}")
        out = self._forward(vision[:, -self.window_size:], text)
        out = out.reshape(vision.shape[0], self.chunk_size, self.action_dim)
        if self.action_dim == 3:
            out = out * self.z_axis_weight
        return out

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``vision (B, T<=window, vision_dim)``, ``text (B, text_dim)`` -> ``(B, chunk_size * action_dim)``."""
        raise NotImplementedError

    @property
    def out_features(self) -> int:
        """Width of the final layer: ``chunk_size * action_dim``."""
        return self.chunk_size * self.action_dim

    def extra_repr(self) -> str:
        return f"config={self.config}"
