"""``case3``: ``SimpleCase3Model``, the team's "medium-term" model.

The team's case 3 file re-used case 1's stable structure (seed 002: "Case 1의 안정적인 구조 사용"): same
adapters and 4-layer MLP, with its own (identical-valued) hyper-parameters ``hidden_dim = 256``,
``dropout = 0.4``, ``use_vision_resampler = False``; only its training differed (5 epochs, dummy data).
So this head *is* case 1's network under its own name and config class, which keeps case-3 checkpoints
distinguishable from case-1 ones.
"""

from __future__ import annotations

import dataclasses

from policies.heads.case1 import Case1Config, Simplified2DActionModelV2


@dataclasses.dataclass
class Case3Config(Case1Config):
    """Seed 002's case-3 hyper-parameters: hidden 256, dropout 0.4, no resampler; window 1, chunk 1."""


class SimpleCase3Model(Simplified2DActionModelV2):
    """Case 3: case 1's architecture (``vision_adapter``, ``text_adapter``, ``action_head``). Linear output."""

    head_name = "case3"
    config_class = Case3Config
