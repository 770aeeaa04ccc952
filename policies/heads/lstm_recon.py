"""**Our reconstructions** of the team's two best-ranked models, whose model files are not public
(``../shared/reference/team_models/simple_lstm_mae0222.json``, ``simple_clip_lstm_hybrid_mae0212.json``: only
their training scripts are; the team's own loaders disagree on the layers):

- ``lstm-recon`` ("Simple LSTM", MAE 0.222): per frame ``input_proj([image_t ; text])`` (``Linear, LayerNorm,
  ReLU``) -> LSTM (hidden 512, 4 layers) over a window of 8 frames -> RoboVLMs' ``MLPTanhHead`` -> a chunk of 10
  actions from the last step;
- ``clip-lstm-recon`` ("Simple CLIP-LSTM hybrid", MAE 0.212): two visual streams, Kosmos-2 ``image`` and CLIP
  ``clip_image`` (each ``Linear, LayerNorm, GELU``), plus the projected ``text``, fused per frame -> LSTM
  (hidden 512, 2 layers) -> ``MLPTanhHead`` -> a chunk of 10.

The whole window is re-run every call, the first frame repeated before the episode's start. Tanh output.
Their ``.pth`` files store ``args`` as an ``argparse.Namespace`` (loaded safely, :mod:`policies.checkpoints`);
their parameter names will not match these heads without ``--key-map``, and may not fit at all.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from policies.heads.base import ActionHead, HeadConfig
from policies.heads.fusion import AdaptiveFeatureFusion, concat_or_fuse
from policies.heads.layers import MLPTanhHead


@dataclasses.dataclass
class LSTMReconConfig(HeadConfig):
    """Window 8, chunk 10, LSTM hidden 512 x 4 layers; ``in_features`` = per-frame token width.
    ``adaptive_fusion`` = True joins each frame's ``image`` and the ``text`` feature with the team's
    :class:`~policies.heads.fusion.AdaptiveFeatureFusion` (seed 000) before ``input_proj`` instead of
    ``torch.cat``."""

    in_features: int = 512
    hidden_size: int = 512
    num_layers: int = 4
    policy_rnn_dropout_p: float = 0.0
    adaptive_fusion: bool = False
    window_size: int = 8
    chunk_size: int = 10


class LSTMReconstruction(ActionHead):
    """``lstm-recon``: ``image (B, T, vision_dim)``, ``text (B, text_dim)`` -> ``(B, 10, action_dim)`` in (-1, 1).

    Modules: ``input_proj``, ``rnn`` (``nn.LSTM``, batch first), ``velocities`` (:class:`MLPTanhHead`).
    """

    head_name = "lstm-recon"
    config_class = LSTMReconConfig
    output_activation = "tanh"

    def __init__(self, config: LSTMReconConfig) -> None:
        super().__init__(config)
        self.fusion = (AdaptiveFeatureFusion(config.vision_dim, config.text_dim, config.in_features)
                       if config.adaptive_fusion else None)
        self.input_proj = nn.Sequential(nn.Linear(config.vision_dim + config.text_dim, config.in_features),
                                        nn.LayerNorm(config.in_features), nn.ReLU())
        self.rnn = nn.LSTM(config.in_features, config.hidden_size, config.num_layers, batch_first=True,
                           dropout=config.policy_rnn_dropout_p if config.num_layers > 1 else 0.0)
        self.velocities = MLPTanhHead(config.hidden_size, self.out_features)

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        text_seq = text.unsqueeze(1).expand(-1, vision.shape[1], -1)
        tokens = self.input_proj(concat_or_fuse(self.fusion, vision, text_seq))
        out, _ = self.rnn(tokens)
        return self.velocities(out[:, -1])


@dataclasses.dataclass
class CLIPLSTMReconConfig(HeadConfig):
    """Stream width 256, LSTM hidden 512 x 2 layers, window 8, chunk 10; ``clip_dim`` = CLIP image width."""

    clip_dim: int = 512
    stream_dim: int = 256
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.1
    window_size: int = 8
    chunk_size: int = 10


def _stream(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.GELU())


class CLIPLSTMReconstruction(ActionHead):
    """``clip-lstm-recon``: ``[image | clip_image] (B, T, vision_dim + clip_dim)``, ``text (B, text_dim)`` ->
    ``(B, 10, action_dim)`` in (-1, 1).

    Modules: ``kosmos_stream``, ``clip_stream``, ``text_proj``, ``fusion``, ``rnn``, ``velocities``.
    """

    head_name = "clip-lstm-recon"
    config_class = CLIPLSTMReconConfig
    output_activation = "tanh"

    @classmethod
    def frame_inputs(cls, config: HeadConfig) -> tuple[tuple[str, str], ...]:
        return (("image", "vision_dim"), ("clip_image", "clip_dim"))

    def __init__(self, config: CLIPLSTMReconConfig) -> None:
        super().__init__(config)
        s = config.stream_dim
        self.kosmos_stream = _stream(config.vision_dim, s)
        self.clip_stream = _stream(config.clip_dim, s)
        self.text_proj = _stream(config.text_dim, s)
        self.fusion = nn.Sequential(nn.Linear(3 * s, config.hidden_size), nn.LayerNorm(config.hidden_size),
                                    nn.ReLU(), nn.Dropout(config.dropout))
        self.rnn = nn.LSTM(config.hidden_size, config.hidden_size, config.num_layers, batch_first=True,
                           dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.velocities = MLPTanhHead(config.hidden_size, self.out_features)

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        d = self.config.vision_dim
        text_seq = self.text_proj(text).unsqueeze(1).expand(-1, vision.shape[1], -1)
        streams = [self.kosmos_stream(vision[..., :d]), self.clip_stream(vision[..., d:]), text_seq]
        out, _ = self.rnn(self.fusion(torch.cat(streams, dim=-1)))
        return self.velocities(out[:, -1])
