"""The action-head interface: frozen-backbone features in, a normalised action chunk out.

Heads never see pixels or tokens, only the features a :class:`policies.backbones.Backbone` produced, so a
training command can cache those features on disk. A head names the feature **streams** it reads
(:mod:`policies.backbones`: ``image``, ``text``, ``clip_image``, ``clip_text``, ``multimodal``,
``action_token``) and the config field that holds each stream's width:

- :meth:`ActionHead.frame_inputs` ``(config)``: per-frame streams, concatenated in that order into ``vision``;
- :meth:`ActionHead.instruction_inputs` ``(config)``: per-instruction streams, concatenated into ``text`` (may
  be empty: ``text_dim = 0``).

Every head is built from a JSON-serialisable dataclass ``config`` (a :class:`HeadConfig` subclass) and maps
``forward(vision (B, T, frame_dim), text (B, text_dim))`` to ``(B, chunk_size, action_dim)`` in normalised
units (training labels are clamped to [-1, 1]; :class:`policies.vla.VLAPolicy` scales back to +-1.15).
Actions are ``[linear_x, linear_y]`` (``action_dim = 2``, the team's models) or ``[linear_x, linear_y,
angular_z]`` (``action_dim = 3``, seed 000's "z-axis weight 0.05" variant: the raw output is multiplied by the
fixed buffer ``z_axis_weight = [1, 1, 0.05]``).

Provenance: ``team_class`` names the class of the team's repository (``minuum/vla``) whose parameter names,
shapes and forward pass the head reproduces; ``None`` marks our own reconstruction of a model whose source is
not public (registry names ending in ``-recon``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from foundations.errors import ConfigError, MobileVLAError


class HeadInputError(MobileVLAError, ValueError):
    """Features passed to a head have the wrong rank or width."""


#: Largest integer a head config field may hold (widths, windows, chunks, layer counts).
MAX_CONFIG_SIZE = 1 << 16


@dataclasses.dataclass
class HeadConfig:
    """Fields shared by every head's config (defaults = the team's Kosmos-2 widths).

    Attributes:
        vision_dim: width of the head's main per-frame feature (Kosmos-2 ``image``: 1024).
        text_dim: width of the instruction feature (Kosmos-2 ``text``: 2048; 0 for heads that read none).
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
        """Raise ``ConfigError`` for non-positive sizes, a size over :data:`MAX_CONFIG_SIZE` (no head needs one;
        a corrupt config must not make torch allocate terabytes), or an ``action_dim`` other than 2 or 3."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_CONFIG_SIZE:
                raise ConfigError(f"{field.name} = {value} is larger than any head needs (at most {MAX_CONFIG_SIZE})")
        for field in ("vision_dim", "window_size", "chunk_size"):
            if int(getattr(self, field)) < 1:
                raise ConfigError(f"{field} must be >= 1, got {getattr(self, field)}")
        if int(self.text_dim) < 0:
            raise ConfigError(f"text_dim must be >= 0, got {self.text_dim}")
        if self.action_dim not in (2, 3):
            raise ConfigError(f"action_dim must be 2 (linear_x, linear_y) or 3 (+ angular_z), got {self.action_dim}")


def linear_in_out(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, int] | None:
    """``(in_features, out_features)`` of the ``nn.Linear`` whose weight is ``state[key]``, or ``None``."""
    weight = state.get(key)
    if weight is None or weight.dim() != 2:
        return None
    return int(weight.shape[1]), int(weight.shape[0])


class ActionHead(nn.Module):
    """Base class of the heads; subclasses set ``head_name``, ``config_class``, ``output_activation``,
    ``team_class`` and implement :meth:`_forward` (and :meth:`frame_inputs` / :meth:`instruction_inputs` /
    :meth:`config_from_state_dict` where they differ from the defaults).
    """

    #: Registry name (``"case1"``, ``"case2"``, ..., ``"case4-recon"``).
    head_name: ClassVar[str] = "head"
    #: The dataclass of this head's config.
    config_class: ClassVar[type[HeadConfig]] = HeadConfig
    #: ``"tanh"`` (outputs in (-1, 1)), ``"layernorm"`` (a final ``LayerNorm(action_dim)``) or ``"linear"``.
    output_activation: ClassVar[str] = "linear"
    #: The team's class this head reproduces (``minuum/vla``), or ``None`` for our reconstruction.
    team_class: ClassVar[str | None] = None
    #: Whether :meth:`forward` multiplies a 3-DoF output by ``z_axis_weight``; ``False`` for a head whose parts
    #: already weight their own outputs (``hybrid-ensemble-recon``).
    applies_z_axis_weight: ClassVar[bool] = True

    @classmethod
    def frame_inputs(cls, config: HeadConfig) -> tuple[tuple[str, str], ...]:
        """``(stream, config field)`` pairs of the per-frame features, in concatenation order."""
        return (("image", "vision_dim"),)

    @classmethod
    def instruction_inputs(cls, config: HeadConfig) -> tuple[tuple[str, str], ...]:
        """``(stream, config field)`` pairs of the instruction features, in concatenation order."""
        return (("text", "text_dim"),)

    @classmethod
    def config_from_state_dict(cls, state: Mapping[str, torch.Tensor], values: dict[str, Any]) -> dict[str, Any]:
        """Complete config ``values`` (e.g. a team ``model_config``, possibly absent) with the sizes the
        checkpoint's tensors imply (feature widths, hidden sizes, layer counts). The default changes nothing."""
        return values

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        config.validate()
        self.config = config
        if config.action_dim == 3 and self.applies_z_axis_weight:
            self.register_buffer("z_axis_weight", torch.tensor([1.0, 1.0, float(config.z_axis_weight)]))

    @property
    def frame_streams(self) -> tuple[str, ...]:
        """Per-frame feature streams read, in concatenation order."""
        return tuple(stream for stream, _ in self.frame_inputs(self.config))

    @property
    def instruction_streams(self) -> tuple[str, ...]:
        """Instruction feature streams read, in concatenation order (may be empty)."""
        return tuple(stream for stream, _ in self.instruction_inputs(self.config))

    @property
    def frame_dim(self) -> int:
        """Width of one frame's concatenated input features."""
        return sum(int(getattr(self.config, field)) for _, field in self.frame_inputs(self.config))

    @property
    def instruction_dim(self) -> int:
        """Width of the concatenated instruction features (0 when the head reads none)."""
        return sum(int(getattr(self.config, field)) for _, field in self.instruction_inputs(self.config))

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
            vision: float ``(B, T, frame_dim)``, frames oldest first; the head reads the last
                ``min(T, window_size)`` of them.
            text: float ``(B, instruction_dim)`` instruction features (``(B, 0)`` for heads that read none).

        Returns:
            float ``(B, chunk_size, action_dim)`` normalised actions.

        Raises:
            HeadInputError: wrong rank, batch size or feature width.
        """
        if vision.dim() != 3 or vision.shape[-1] != self.frame_dim or vision.shape[1] < 1:
            raise HeadInputError(f"{self.head_name}: vision features must be (B, T, {self.frame_dim}), "
                                 f"got {tuple(vision.shape)}")
        if text.dim() != 2 or text.shape[-1] != self.instruction_dim or text.shape[0] != vision.shape[0]:
            raise HeadInputError(f"{self.head_name}: text features must be ({vision.shape[0]}, "
                                 f"{self.instruction_dim}), got {tuple(text.shape)}")
        out = self._forward(vision[:, -self.window_size:], text)
        out = out.reshape(vision.shape[0], self.chunk_size, self.action_dim)
        if self.action_dim == 3 and self.applies_z_axis_weight:
            out = out * self.z_axis_weight
        return out

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``vision (B, T<=window, frame_dim)``, ``text (B, text_dim)`` -> ``(B, chunk_size * action_dim)``."""
        raise NotImplementedError

    @property
    def out_features(self) -> int:
        """Width of the final layer: ``chunk_size * action_dim``."""
        return self.chunk_size * self.action_dim

    def extra_repr(self) -> str:
        """``config=...`` in the module's ``repr``."""
        return f"config={self.config}"
