"""``robovlms``: the policy head of the model the robot's server runs, RoboVLMs' ``MobileVLALSTMDecoder`` inside
``RoboKosMos`` (``minuum/vla`` ``RoboVLMs/robovlms/model/policy_head/mobile_vla_policy.py``,
``RoboVLMs/robovlms/model/backbone/base_backbone.py``;
``../shared/reference/team_models/robovlms_MobileVLALSTMDecoder_*.json``).

Per frame, the Kosmos-2 language model's last hidden state at a learned **action token** appended to the
prompt (the ``action_token`` stream, :class:`policies.backbones.robovlms.RoboVLMsBackbone`, 2048-d) is one LSTM
input. The head ``act_head`` (parameter names as the team's: ``act_head.rnn.*``, ``act_head.velocities.mlp.*``)
is ``LSTM(in_features, hidden_size, num_layers)`` (batch first) over the history of those tokens, then
RoboVLMs' ``MLPTanhHead`` ``hidden -> 1024 -> 512 -> 256 -> fwd_pred_next_n * action_dim`` with ``tanh``, on the
newest step: a chunk of ``fwd_pred_next_n`` actions.

History as the team's inference keeps it (``history_memory``): the first ``window_size`` tokens of an episode
go through the LSTM one at a time with the hidden state carried over; from the ``window_size + 1``-th on, the
oldest is dropped and the last ``window_size`` tokens are re-run from a zero state. Both amount to running the
LSTM from a zero state over the last ``min(t, window_size)`` tokens, which is what :meth:`RoboVLMsHead._forward`
does on the window :class:`policies.vla.VLAPolicy` passes (without padding: ``pad_history = False``);
``tests/test_robovlms.py`` checks the equivalence against a step-by-step replica of theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from policies.heads.base import ActionHead, HeadConfig, linear_in_out
from policies.heads.layers import MLPTanhHead


@dataclasses.dataclass
class RoboVLMsConfig(HeadConfig):
    """The team's ``act_head`` config (``Mobile_VLA/configs/mobile_vla_left_chunk10_20251218.json``).

    Attributes:
        vision_dim: ``in_features`` = the language model's hidden size (Kosmos-2 ``embed_dim`` 2048).
        hidden_size: LSTM hidden size (512 in the deployed config; the class default is 1024).
        num_layers: LSTM layers (4).
        policy_rnn_dropout_p: LSTM dropout between layers (0).
        window_size: ``window_size`` (8): LSTM inputs kept.
        chunk_size: ``fwd_pred_next_n`` (10): actions per prediction.
    """

    vision_dim: int = 2048
    text_dim: int = 0
    hidden_size: int = 512
    num_layers: int = 4
    policy_rnn_dropout_p: float = 0.0
    window_size: int = 8
    chunk_size: int = 10


class MobileVLALSTMDecoder(nn.Module):
    """The team's ``act_head``: ``rnn`` (``nn.LSTM``, batch first) and ``velocities`` (:class:`MLPTanhHead`).

    ``forward(tokens (B, T, in_features))`` -> ``(B, chunk * action_dim)`` from the newest step, the LSTM starting
    from a zero state.
    """

    def __init__(self, in_features: int, hidden_size: int, num_layers: int, out_features: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_features, hidden_size, num_layers, batch_first=True, dropout=dropout)
        self.velocities = MLPTanhHead(hidden_size, out_features)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(tokens)
        return self.velocities(out[:, -1])


class RoboVLMsHead(ActionHead):
    """``action_token (B, T, vision_dim)`` -> ``(B, chunk, action_dim)`` in (-1, 1). Parameters ``act_head.*``.

    The learned ``action_token`` vector itself (``model.action_token`` in the team's ``.ckpt``) is an input of the
    language model, so it lives in the backbone (:class:`policies.backbones.robovlms.RoboVLMsBackbone`).
    """

    head_name = "robovlms"
    config_class = RoboVLMsConfig
    output_activation = "tanh"
    team_class = "MobileVLALSTMDecoder"
    #: The LSTM sees only the frames of this episode: no padding of the history at the start.
    pad_history: ClassVar[bool] = False

    @classmethod
    def frame_inputs(cls, config: HeadConfig) -> tuple[tuple[str, str], ...]:
        return (("action_token", "vision_dim"),)

    @classmethod
    def instruction_inputs(cls, config: HeadConfig) -> tuple[tuple[str, str], ...]:
        return ()

    def __init__(self, config: RoboVLMsConfig) -> None:
        super().__init__(config)
        dropout = config.policy_rnn_dropout_p if config.num_layers > 1 else 0.0
        self.act_head = MobileVLALSTMDecoder(config.vision_dim, config.hidden_size, config.num_layers,
                                             self.out_features, dropout)

    @classmethod
    def config_from_state_dict(cls, state: Mapping[str, torch.Tensor], values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with ``vision_dim``, ``hidden_size`` and ``num_layers`` read off ``act_head.rnn``, and
        ``chunk_size`` (unless given) off the last ``velocities`` layer's width / ``action_dim`` (default 2)."""
        out = dict(values)
        rnn = state.get("act_head.rnn.weight_ih_l0")
        if rnn is not None:
            out["vision_dim"] = int(rnn.shape[1])
            out["hidden_size"] = int(rnn.shape[0]) // 4
            out["num_layers"] = sum(1 for key in state if key.startswith("act_head.rnn.weight_ih_l"))
        last = linear_in_out(state, "act_head.velocities.mlp.6.weight")
        if last:
            action_dim = int(values.get("action_dim", 2))
            out["action_dim"] = action_dim
            if "chunk_size" not in values and last[1] % action_dim == 0:
                out["chunk_size"] = last[1] // action_dim
        return out

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.act_head(vision)
