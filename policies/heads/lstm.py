"""``lstm``: ``MobileVLALSTMDecoder``, the team's RoboVLMs-style LSTM policy head (Kosmos-2 + LSTM,
MAE 0.222-0.247).

Spec section 5 and the team's ``MobileVLALSTMDecoder``: a window of 8 frames -> LSTM (hidden 512, 4 layers as
RoboVLMs' ``LSTMDecoder`` default) -> RoboVLMs ``MLPTanhHead`` (hidden -> 1024 -> 512 -> ``chunk *
action_dim``, tanh) predicting a chunk of 10 actions from the last time step. In RoboVLMs the LSTM's
per-frame input is the VLM's action token; here the backbone is frozen and only pooled features exist, so
each frame's token is ``input_proj([vision_t ; text])`` (``Linear, LayerNorm, ReLU`` to ``in_features``).
The whole window is re-run every call (as RoboVLMs does once its history is full). Tanh output.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from policies.heads.base import ActionHead, HeadConfig
from policies.heads.layers import MLPTanhHead


@dataclasses.dataclass
class LSTMConfig(HeadConfig):
    """Window 8, chunk 10, LSTM hidden 512 x 4 layers; ``in_features`` = per-frame token width."""

    in_features: int = 512
    hidden_size: int = 512
    num_layers: int = 4
    policy_rnn_dropout_p: float = 0.0
    window_size: int = 8
    chunk_size: int = 10


class MobileVLALSTMDecoder(ActionHead):
    """LSTM head: ``(B, T, vision_dim)``, ``(B, text_dim)`` -> ``(B, 10, action_dim)`` in (-1, 1).

    Modules: ``input_proj``, ``rnn`` (``nn.LSTM``, batch first), ``velocities`` (:class:`MLPTanhHead`).
    """

    head_name = "lstm"
    config_class = LSTMConfig
    output_activation = "tanh"

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__(config)
        self.input_proj = nn.Sequential(nn.Linear(config.vision_dim + config.text_dim, config.in_features),
                                        nn.LayerNorm(config.in_features), nn.ReLU())
        self.rnn = nn.LSTM(config.in_features, config.hidden_size, config.num_layers, batch_first=True,
                           dropout=config.policy_rnn_dropout_p if config.num_layers > 1 else 0.0)
        self.velocities = MLPTanhHead(config.hidden_size, self.out_features)

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        text_seq = text.unsqueeze(1).expand(-1, vision.shape[1], -1)
        tokens = self.input_proj(torch.cat([vision, text_seq], dim=-1))
        out, _ = self.rnn(tokens)
        return self.velocities(out[:, -1])
