"""``case3``: the team's ``SimpleCase3Model`` (``minuum/vla`` ``models/medium_term/simple_case3_model.py``;
``../shared/reference/team_models/case3_SimpleCase3Model.json``).

Its parameter tree and forward pass are identical to ``Simplified2DActionModelV2`` (case 1 V2); only its
training differed, and its trainer writes no ``model_config`` into the checkpoint. A separate class keeps case-3
checkpoints and reports distinguishable from case-1 ones.
"""

from __future__ import annotations

import dataclasses

from policies.heads.case1 import Case1Config, Simplified2DActionModelV2


@dataclasses.dataclass
class Case3Config(Case1Config):
    """Hidden 256, dropout 0.4 (the team's defaults); one frame, one action."""


class SimpleCase3Model(Simplified2DActionModelV2):
    """Case 3: case 1 V2's parameters and forward pass under the team's case-3 name."""

    head_name = "case3"
    config_class = Case3Config
    team_class = "SimpleCase3Model"
