"""``hybrid``: ``Kosmos2CLIPHybridModel``, the team's best offline model (MAE 0.2121): two visual
streams (Kosmos-2 and CLIP features) + LSTM + MLP.

Honest mapping: the team's second stream was an open_clip ViT-B/32 image encoder. With one backbone and no
CLIP offline, both streams here read the *same* backbone features:

- stream A (``primary_stream``, the "Kosmos-2" stream): ``Linear, LayerNorm, GELU`` of each frame's feature;
- stream B (``motion_stream``, standing in for CLIP): a separately parameterised ``Linear, LayerNorm, GELU``
  of the *temporal difference* ``x_t - x_{t-1}`` (zero for the oldest frame of the window), i.e. a motion cue
  the first stream does not see directly.

``fusion([A_t ; B_t ; text])`` -> LSTM (hidden 512, 2 layers) -> RoboVLMs ``MLPTanhHead`` -> chunk of 10
actions. Window 8. Tanh output. Nothing about this head's numbers transfers to the team's hybrid checkpoints.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from policies.heads.base import ActionHead, HeadConfig
from policies.heads.layers import MLPTanhHead


@dataclasses.dataclass
class HybridConfig(HeadConfig):
    """Stream width 256, LSTM hidden 512 x 2 layers, window 8, chunk 10."""

    stream_dim: int = 256
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.1
    window_size: int = 8
    chunk_size: int = 10


def _stream(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.GELU())


class Kosmos2CLIPHybridModel(ActionHead):
    """Hybrid head: ``(B, T, vision_dim)``, ``(B, text_dim)`` -> ``(B, 10, action_dim)`` in (-1, 1).

    Modules: ``primary_stream``, ``motion_stream``, ``text_proj``, ``fusion``, ``rnn``, ``velocities``.
    """

    head_name = "hybrid"
    config_class = HybridConfig
    output_activation = "tanh"

    def __init__(self, config: HybridConfig) -> None:
        super().__init__(config)
        s = config.stream_dim
        self.primary_stream = _stream(config.vision_dim, s)
        self.motion_stream = _stream(config.vision_dim, s)
        self.text_proj = _stream(config.text_dim, s)
        self.fusion = nn.Sequential(nn.Linear(3 * s, config.hidden_size), nn.LayerNorm(config.hidden_size),
                                    nn.ReLU(), nn.Dropout(config.dropout))
        self.rnn = nn.LSTM(config.hidden_size, config.hidden_size, config.num_layers, batch_first=True,
                           dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.velocities = MLPTanhHead(config.hidden_size, self.out_features)

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        motion = torch.cat([torch.zeros_like(vision[:, :1]), vision[:, 1:] - vision[:, :-1]], dim=1)
        text_seq = self.text_proj(text).unsqueeze(1).expand(-1, vision.shape[1], -1)
        tokens = self.fusion(torch.cat([self.primary_stream(vision), self.motion_stream(motion), text_seq], -1))
        out, _ = self.rnn(tokens)
        return self.velocities(out[:, -1])
