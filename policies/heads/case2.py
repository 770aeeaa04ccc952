"""``case2``: ``CLIPNormalized2DActionModelV2``, the team's best "case" model (MAE 0.466).

Team design (seed 002, spec section 5): case 1's adapters + "CLIP normalisation" (256 -> 512 -> 256,
attending to open_clip ViT-B/32 image features) + a vision resampler (16 latents, 4 heads) + head
512 -> 256 -> action_dim.

What this implementation does, and where it must differ:

- **CLIP normalisation without CLIP.** No CLIP model is available offline, so the reference the adapted
  feature attends to is *the backbone's own raw visual features of the window* (one token per frame,
  projected ``vision_dim -> 512``) instead of CLIP image features. Block: ``q = up(v_t)`` (256 -> 512),
  ``a = MHA(q, ref, ref)`` (8 heads), ``v' = LayerNorm(v_t + down(a))`` (512 -> 256), with ``v_t`` the newest
  frame's adapted feature.
- **Vision resampler**: :class:`~policies.heads.layers.VisionResampler`, 16 latents, 4 heads, Perceiver-style
  cross-attention over the window's adapted frame features (+ learned temporal embedding); latents are
  mean-pooled to 256.
- Vision summary ``LayerNorm(v' + resampled)`` (256) is concatenated with the text adapter output (256) ->
  512 -> 256 -> ``chunk * action_dim``. Linear output. Window 8, chunk 1.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from policies.heads.base import ActionHead, HeadConfig
from policies.heads.layers import VisionResampler, adapter


@dataclasses.dataclass
class Case2Config(HeadConfig):
    """Seed 002's case-2 hyper-parameters (hidden 256, dropout 0.4, resampler on) + block sizes."""

    hidden_dim: int = 256
    dropout: float = 0.4
    clip_norm_dim: int = 512
    clip_norm_heads: int = 8
    resampler_latents: int = 16
    resampler_heads: int = 4
    resampler_depth: int = 1
    window_size: int = 8
    chunk_size: int = 1


class CLIPNormalization(nn.Module):
    """``(B, hidden)`` query feature + ``(B, T, ref_dim)`` reference tokens -> normalised ``(B, hidden)``."""

    def __init__(self, hidden_dim: int, ref_dim: int, inner_dim: int = 512, heads: int = 8,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_dim, inner_dim)
        self.ref_proj = nn.Sequential(nn.Linear(ref_dim, inner_dim), nn.LayerNorm(inner_dim))
        self.attn = nn.MultiheadAttention(inner_dim, heads, dropout=dropout, batch_first=True)
        self.down = nn.Linear(inner_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, feature: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        q = self.up(feature).unsqueeze(1)
        ref = self.ref_proj(reference)
        attended = self.attn(q, ref, ref, need_weights=False)[0].squeeze(1)
        return self.norm(feature + self.down(attended))


class CLIPNormalized2DActionModelV2(ActionHead):
    """Case 2: ``(B, T, vision_dim)``, ``(B, text_dim)`` -> ``(B, chunk, action_dim)``.

    Modules: ``vision_adapter``, ``text_adapter``, ``clip_normalization``, ``vision_resampler``,
    ``vision_norm``, ``action_head``.
    """

    head_name = "case2"
    config_class = Case2Config
    output_activation = "linear"

    def __init__(self, config: Case2Config) -> None:
        super().__init__(config)
        h = config.hidden_dim
        self.vision_adapter = adapter(config.vision_dim, h, config.dropout)
        self.text_adapter = adapter(config.text_dim, h, config.dropout)
        self.clip_normalization = CLIPNormalization(h, config.vision_dim, config.clip_norm_dim,
                                                    config.clip_norm_heads)
        self.vision_resampler = VisionResampler(h, config.resampler_latents, config.resampler_heads,
                                                depth=config.resampler_depth, max_frames=config.window_size)
        self.vision_norm = nn.LayerNorm(h)
        self.action_head = nn.Sequential(nn.Linear(2 * h, h), nn.LayerNorm(h), nn.ReLU(),
                                         nn.Dropout(config.dropout), nn.Linear(h, self.out_features))

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        frames = self.vision_adapter(vision)                       # (B, T, h)
        normalised = self.clip_normalization(frames[:, -1], vision)  # (B, h)
        resampled = self.vision_resampler(frames).mean(dim=1)        # (B, h)
        visual = self.vision_norm(normalised + resampled)
        return self.action_head(torch.cat([visual, self.text_adapter(text)], dim=-1))
