"""``case4-recon``: **our reconstruction** of the team's case 4 ``RoboVLMsCompleteModel`` ("long-term"
hierarchical model, only ever measured on dummy data). Its source file is not public
(``../shared/reference/team_models/case4_RoboVLMsCompleteModel.json``), so its parameter names are unknown and a
team case-4 checkpoint needs ``--key-map`` (and may still not fit).

Seed 002 hyper-parameters: hidden 512, state_dim 64, dropout 0.1, vision resampler on, hierarchical
planning on, state prediction on, num_tasks 10, max_plan_length 5, max_sequence_length 5,
prediction_horizon 5. This reconstruction follows the registry text:

1. ``vision_adapter`` / ``text_adapter`` to 512; an "advanced" :class:`VisionResampler` (16 latents, 8 heads,
   2 layers) over the window's frames; ``context = fuse([resampled ; text])`` (512).
2. **Task planner** (``task_planner``): task logits over ``num_tasks`` from the context; the soft task
   embedding plus ``max_plan_length`` learned step queries, refined by one transformer layer, give the plan
   ``(B, max_plan_length, 512)``.
3. **Action sequencer** (``action_sequencer``): ``max_sequence_length`` queries cross-attend to the plan
   -> one token per future action. The chunk size is ``max_sequence_length`` (5).
4. **State predictor** (``state_predictor``): predicts ``prediction_horizon`` future latent states
   (``state_dim`` 64) from the context; each predicted state is projected back and added to the matching
   action token ("hierarchical plan integration").
5. ``action_head``: 4-layer MLP ``[token ; context] (1024) -> 512 -> 256 -> 128 -> action_dim`` per token.
   Linear output.

:meth:`Case4Reconstruction.forward_hierarchical` also returns task logits, plan and predicted states (the
auxiliary losses' targets in training).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from policies.heads.base import ActionHead, HeadConfig
from policies.heads.layers import VisionResampler, adapter, ln_mlp


@dataclasses.dataclass
class Case4Config(HeadConfig):
    """Seed 002's case-4 hyper-parameters; ``chunk_size`` is the team's ``max_sequence_length``."""

    hidden_dim: int = 512
    state_dim: int = 64
    dropout: float = 0.1
    num_tasks: int = 10
    max_plan_length: int = 5
    prediction_horizon: int = 5
    attention_heads: int = 8
    resampler_latents: int = 16
    resampler_depth: int = 2
    window_size: int = 8
    chunk_size: int = 5


class TaskPlanner(nn.Module):
    """Context ``(B, H)`` -> task logits ``(B, num_tasks)`` and plan ``(B, max_plan_length, H)``."""

    def __init__(self, hidden: int, num_tasks: int, plan_length: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.classifier = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, num_tasks))
        self.task_embedding = nn.Embedding(num_tasks, hidden)
        self.step_queries = nn.Parameter(torch.randn(plan_length, hidden) * 0.02)
        self.refine = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=dropout,
                                                 batch_first=True, norm_first=True)

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(context)
        task = logits.softmax(-1) @ self.task_embedding.weight
        plan = self.step_queries.unsqueeze(0) + (task + context).unsqueeze(1)
        return logits, self.refine(plan)


class ActionSequencer(nn.Module):
    """Plan ``(B, P, H)`` -> one token per future action ``(B, sequence_length, H)``."""

    def __init__(self, hidden: int, sequence_length: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(sequence_length, hidden) * 0.02)
        self.norm_q = nn.LayerNorm(hidden)
        self.norm_plan = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(2 * hidden, hidden))

    def forward(self, plan: torch.Tensor) -> torch.Tensor:
        q = self.queries.unsqueeze(0).expand(plan.shape[0], -1, -1)
        kv = self.norm_plan(plan)
        x = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        return x + self.ff(self.norm_ff(x))


class StatePredictor(nn.Module):
    """Context ``(B, H)`` -> predicted latent states ``(B, horizon, state_dim)`` and their ``(B, horizon, H)``
    projections."""

    def __init__(self, hidden: int, state_dim: int, horizon: int) -> None:
        super().__init__()
        self.horizon, self.state_dim = horizon, state_dim
        self.predict = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, horizon * state_dim))
        self.embed = nn.Linear(state_dim, hidden)

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.predict(context).view(-1, self.horizon, self.state_dim)
        return states, self.embed(states)


class Case4Reconstruction(ActionHead):
    """Case 4 reconstruction: ``(B, T, vision_dim)``, ``(B, text_dim)`` -> ``(B, 5, action_dim)``.

    Modules: ``vision_adapter``, ``text_adapter``, ``vision_resampler``, ``fuse``, ``task_planner``,
    ``action_sequencer``, ``state_predictor``, ``action_head``.
    """

    head_name = "case4-recon"
    config_class = Case4Config
    output_activation = "linear"

    def __init__(self, config: Case4Config) -> None:
        super().__init__(config)
        h, p = config.hidden_dim, config.dropout
        self.vision_adapter = adapter(config.vision_dim, h, p)
        self.text_adapter = adapter(config.text_dim, h, p)
        self.vision_resampler = VisionResampler(h, config.resampler_latents, config.attention_heads,
                                                depth=config.resampler_depth, max_frames=config.window_size,
                                                dropout=p)
        self.fuse = nn.Sequential(nn.Linear(2 * h, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(p))
        self.task_planner = TaskPlanner(h, config.num_tasks, config.max_plan_length, config.attention_heads, p)
        self.action_sequencer = ActionSequencer(h, config.chunk_size, config.attention_heads, p)
        self.state_predictor = StatePredictor(h, config.state_dim, config.prediction_horizon)
        self.action_head = ln_mlp([2 * h, h, h // 2, h // 4], config.action_dim, p)

    def forward_hierarchical(self, vision: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """All outputs: ``actions (B, chunk, action_dim)`` (before the z-axis weight), ``task_logits
        (B, num_tasks)``, ``plan (B, max_plan_length, H)``, ``predicted_states (B, horizon, state_dim)``."""
        frames = self.vision_adapter(vision)
        visual = self.vision_resampler(frames).mean(dim=1)
        context = self.fuse(torch.cat([visual, self.text_adapter(text)], dim=-1))
        task_logits, plan = self.task_planner(context)
        tokens = self.action_sequencer(plan)
        states, state_tokens = self.state_predictor(context)
        n = min(tokens.shape[1], state_tokens.shape[1])
        tokens = torch.cat([tokens[:, :n] + state_tokens[:, :n], tokens[:, n:]], dim=1)
        ctx = context.unsqueeze(1).expand(-1, tokens.shape[1], -1)
        actions = self.action_head(torch.cat([tokens, ctx], dim=-1))
        return {"actions": actions, "task_logits": task_logits, "plan": plan, "predicted_states": states}

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.forward_hierarchical(vision, text)["actions"]
