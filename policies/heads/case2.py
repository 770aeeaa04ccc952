"""``case2``: the team's ``CLIPNormalized2DActionModelV2`` with its ``OptimizedVisionResampler`` (``minuum/vla``
``Robo+/Mobile_VLA/models/short_term/clip_normalized_model_v2.py`` and ``optimized_vision_resampler.py``;
``../shared/reference/team_models/case2_CLIPNormalized2DActionModelV2.json``).

Forward pass, one frame in, one action out:

1. ``image`` (Kosmos-2 pooler, 1024-d) -> ``feature_adapter`` (to ``hidden_dim`` 256);
2. ``clip_norm_vision`` (:class:`CLIPNormalization`) against the ``clip_image`` feature of the same frames
   (open_clip ViT-B-32 ``encode_image``, 512-d): ``clip_proj`` 256 -> 512, cosine similarities with the
   **batch's** CLIP features divided by the temperature 0.07, softmax over the batch, the weighted mean of the
   normalised CLIP features, ``inverse_proj`` 512 -> 256, residual + ``norm``. At batch 1 (deployment, and every
   step in the simulator) the softmax has one entry, so the aligned feature is the frame's own normalised CLIP
   feature; in training batches each sample attends to every sample's CLIP feature, as in the team's training;
3. ``vision_resampler`` (:class:`OptimizedVisionResampler`) over the single token ``(B, 1, 256)``;
4. ``layer_norm_vision`` -> ``dropout_vision``;
5. ``text`` (Kosmos-2 text mean, 2048-d) -> ``language_adapter`` -> ``clip_norm_language`` without CLIP
   features (``normalize(clip_proj(x))``, ``inverse_proj``, residual + ``norm``) -> ``layer_norm_language`` ->
   ``dropout_language``;
6. concatenated 512 -> ``action_head`` ``Linear(512, 256), ReLU, Dropout, Linear(256, action_dim)`` ->
   ``final_norm = LayerNorm(action_dim)``.

The team's ``model_config`` switches: ``use_clip_normalization`` (steps 2 and 5, and whether ``clip_image`` is
read at all) and ``use_vision_resampler`` (step 3; without it no ``vision_resampler.*`` parameters exist). When
open_clip failed to load in their trainer, ``use_clip_normalization`` was saved as false but the
``clip_norm_*`` modules were still built; ``clip_norm_layers`` records whether the modules exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from policies.heads.base import ActionHead, HeadConfig, linear_in_out
from policies.heads.case1 import _mlp, adapter_sizes


@dataclasses.dataclass
class Case2Config(HeadConfig):
    """The team's case-2 ``model_config`` fields plus the widths and constants of their modules.

    Attributes:
        hidden_dim, dropout: as in their ``model_config`` (256, 0.4).
        use_clip_normalization: apply the CLIP normalisation (and read ``clip_image``).
        use_vision_resampler: build and apply the resampler.
        clip_norm_layers: the ``clip_norm_*`` modules exist (true whenever the constructor asked for CLIP
            normalisation, even if ``use_clip_normalization`` was saved as false).
        clip_dim: CLIP image-embedding width (open_clip ViT-B-32: 512; the team's ``clip_dim`` default).
        temperature: similarity temperature (0.07).
        resampler_latents, resampler_heads: 16 latents, 4 heads (the team's "optimised" resampler).
        final_norm: False drops the final ``LayerNorm(action_dim)``: **not** the team's architecture, an ablation
            switch (README: why the team's single-frame heads fail).
    """

    hidden_dim: int = 256
    dropout: float = 0.4
    use_clip_normalization: bool = True
    use_vision_resampler: bool = True
    clip_norm_layers: bool = True
    clip_dim: int = 512
    temperature: float = 0.07
    resampler_latents: int = 16
    resampler_heads: int = 4
    final_norm: bool = True
    window_size: int = 1
    chunk_size: int = 1


class CLIPNormalization(nn.Module):
    """The team's ``CLIPNormalization``: ``features (B, D)`` [+ ``clip_features (B, C)``] -> ``(B, D)``.

    Parameters ``clip_proj`` (D -> C), ``inverse_proj`` (C -> D), ``norm`` (LayerNorm D).
    """

    def __init__(self, input_dim: int, clip_dim: int = 512, temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.clip_proj = nn.Linear(input_dim, clip_dim)
        self.inverse_proj = nn.Linear(clip_dim, input_dim)
        self.norm = nn.LayerNorm(input_dim)

    def forward(self, features: torch.Tensor, clip_features: torch.Tensor | None = None) -> torch.Tensor:
        projected = self.clip_proj(features)
        if clip_features is not None:
            clip = F.normalize(clip_features, dim=-1)
            weights = F.softmax(F.normalize(projected, dim=-1) @ clip.T / self.temperature, dim=-1)
            aligned = weights @ clip
        else:
            aligned = F.normalize(projected, dim=-1)
        return self.norm(features + self.inverse_proj(aligned))


class OptimizedVisionResampler(nn.Module):
    """The team's ``OptimizedVisionResampler``: ``(B, N, in) -> (B, out)``.

    ``input_proj``; ``num_latents`` learned ``latents`` cross-attend to the tokens (``attention``), then the
    same ``attention`` module is reused for latent self-attention, each followed by residual + ``norm1`` /
    ``norm2``; ``ffn`` (``out -> 1.5 out -> out``, ReLU, dropout) with a residual; ``output_proj``,
    ``final_norm``; mean over the latents.
    """

    def __init__(self, input_dim: int, output_dim: int, num_latents: int = 16, num_heads: int = 4,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, output_dim))
        self.input_proj = nn.Linear(input_dim, output_dim)
        self.output_proj = nn.Linear(output_dim, output_dim)
        self.attention = nn.MultiheadAttention(output_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(output_dim)
        self.norm2 = nn.LayerNorm(output_dim)
        ffn = int(output_dim * 1.5)
        self.ffn = nn.Sequential(nn.Linear(output_dim, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, output_dim))
        self.final_norm = nn.LayerNorm(output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(x)
        latents = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
        latents = self.norm1(latents + self.attention(latents, x, x, need_weights=False)[0])
        latents = self.norm2(latents + self.attention(latents, latents, latents, need_weights=False)[0])
        latents = latents + self.ffn(latents)
        return self.final_norm(self.output_proj(latents)).mean(dim=1)


class CLIPNormalized2DActionModelV2(ActionHead):
    """Case 2: ``[image | clip_image] (B, T, vision_dim + clip_dim)`` (newest frame used), ``text (B, text_dim)``
    -> ``(B, 1, action_dim)``. Without CLIP normalisation the frame input is ``image`` alone.

    Parameters (the team's names): ``feature_adapter``, ``language_adapter``, ``clip_norm_vision.*``,
    ``clip_norm_language.*``, ``layer_norm_vision``, ``layer_norm_language``, ``vision_resampler.*``,
    ``action_head.{0,3}``, ``final_norm``.
    """

    head_name = "case2"
    config_class = Case2Config
    output_activation = "layernorm"
    team_class = "CLIPNormalized2DActionModelV2"

    @classmethod
    def frame_inputs(cls, config: Case2Config) -> tuple[tuple[str, str], ...]:
        if config.use_clip_normalization:
            return (("image", "vision_dim"), ("clip_image", "clip_dim"))
        return (("image", "vision_dim"),)

    def __init__(self, config: Case2Config) -> None:
        super().__init__(config)
        if config.use_clip_normalization and not config.clip_norm_layers:
            raise ValueError("use_clip_normalization needs the clip_norm modules (clip_norm_layers=True)")
        h, p = int(config.hidden_dim), config.dropout
        self.feature_adapter = nn.Linear(config.vision_dim, h)
        self.language_adapter = nn.Linear(config.text_dim, h)
        if config.clip_norm_layers:
            self.clip_norm_vision = CLIPNormalization(h, config.clip_dim, config.temperature)
            self.clip_norm_language = CLIPNormalization(h, config.clip_dim, config.temperature)
        self.layer_norm_vision = nn.LayerNorm(h)
        self.layer_norm_language = nn.LayerNorm(h)
        self.dropout_vision = nn.Dropout(p)
        self.dropout_language = nn.Dropout(p)
        if config.use_vision_resampler:
            self.vision_resampler = OptimizedVisionResampler(h, h, config.resampler_latents, config.resampler_heads, p)
        self.action_head = _mlp([2 * h, h, self.out_features], p)
        self.final_norm = nn.LayerNorm(self.out_features) if config.final_norm else nn.Identity()
        if not config.final_norm:
            self.output_activation = "linear"  # the ablation's outputs are unbounded

    @classmethod
    def config_from_state_dict(cls, state: Mapping[str, torch.Tensor], values: dict[str, Any]) -> dict[str, Any]:
        """:func:`~policies.heads.case1.adapter_sizes`, plus ``clip_dim`` off ``clip_norm_vision.clip_proj`` (no such
        weights: CLIP normalisation off) and the resampler's presence and ``resampler_latents``."""
        out = adapter_sizes(state, values)
        clip = linear_in_out(state, "clip_norm_vision.clip_proj.weight")
        out["clip_norm_layers"] = clip is not None
        if clip:
            out["clip_dim"] = clip[1]
        else:
            out["use_clip_normalization"] = False
        if "vision_resampler.latents" in state:
            out["use_vision_resampler"] = True
            out["resampler_latents"] = int(state["vision_resampler.latents"].shape[0])
        else:
            out["use_vision_resampler"] = False
        return out

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        frame = vision[:, -1]
        cfg = self.config
        v = self.feature_adapter(frame[:, :cfg.vision_dim])
        if cfg.use_clip_normalization:
            v = self.clip_norm_vision(v, frame[:, cfg.vision_dim:])
        if cfg.use_vision_resampler:
            v = self.vision_resampler(v.unsqueeze(1))
        v = self.dropout_vision(self.layer_norm_vision(v))
        t = self.language_adapter(text)
        if cfg.use_clip_normalization:
            t = self.clip_norm_language(t)
        t = self.dropout_language(self.layer_norm_language(t))
        return self.final_norm(self.action_head(torch.cat([v, t], dim=-1)))
