"""Building blocks shared by the heads: RoboVLMs' tanh MLP, and the adapters, LayerNorm MLPs and
Perceiver-style resampler of our reconstructions."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn


def adapter(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    """The team's feature adapter: ``Linear -> LayerNorm -> ReLU -> Dropout``."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.ReLU(), nn.Dropout(dropout))


def ln_mlp(dims: Sequence[int], out_dim: int, dropout: float) -> nn.Sequential:
    """``dims[0] -> dims[1] -> ... -> out_dim``: each hidden layer ``Linear, LayerNorm, ReLU, Dropout``; the
    last layer is a bare ``Linear`` (linear output)."""
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(dims):
        layers += [nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.ReLU(), nn.Dropout(dropout)]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


class MLPTanhHead(nn.Module):
    """RoboVLMs' ``MLPTanhHead`` (``robovlms.model.policy_head.base_policy``): ``hidden -> 1024 -> 512 -> 256 ->
    out`` with ReLU between, then ``tanh``; parameters ``mlp.0``, ``mlp.2``, ``mlp.4``, ``mlp.6``."""

    def __init__(self, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden_size, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(),
                                 nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, output_size), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class VisionResampler(nn.Module):
    """Perceiver-style resampler: ``num_latents`` learned queries cross-attend to the window's frame tokens.

    Flamingo/RoboVLMs layout: keys/values are the frame tokens concatenated with the latents, each layer is
    ``latents += attn(LN(latents), LN([frames; latents]))`` then ``latents += FF(LN(latents))``. A learned
    temporal embedding (``max_frames`` positions, newest frame last) tells frames apart.

    Input ``(B, T, dim)`` with ``T <= max_frames``; output ``(B, num_latents, dim)``.
    """

    def __init__(self, dim: int, num_latents: int = 16, heads: int = 4, depth: int = 1, max_frames: int = 8,
                 ff_mult: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.time_embed = nn.Parameter(torch.zeros(max_frames, dim))
        self.layers = nn.ModuleList()
        for _ in range(depth):
            self.layers.append(nn.ModuleDict({
                "norm_media": nn.LayerNorm(dim),
                "norm_latents": nn.LayerNorm(dim),
                "attn": nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True),
                "norm_ff": nn.LayerNorm(dim),
                "ff": nn.Sequential(nn.Linear(dim, dim * ff_mult), nn.GELU(), nn.Linear(dim * ff_mult, dim)),
            }))
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` -> ``(B, num_latents, dim)``.

        Raises:
            ValueError: ``T`` greater than ``max_frames``.
        """
        b, t, _ = frames.shape
        if t > self.time_embed.shape[0]:
            raise ValueError(f"resampler got {t} frames, built for at most {self.time_embed.shape[0]}")
        media = frames + self.time_embed[-t:]
        lat = self.latents.unsqueeze(0).expand(b, -1, -1)
        for layer in self.layers:
            q = layer["norm_latents"](lat)
            kv = torch.cat([layer["norm_media"](media), q], dim=1)
            lat = lat + layer["attn"](q, kv, kv, need_weights=False)[0]
            lat = lat + layer["ff"](layer["norm_ff"](lat))
        return self.norm_out(lat)
