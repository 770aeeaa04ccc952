"""The team's 2026 grounder + MLP navigation heads (exp46/exp49, Stage 1 v2 ``image_proj``, Stage 2 v2, exp73 mlp and
hybrid): modules that load their checkpoint files strictly, the S2V2 server's input assembly and decision rules
(:mod:`policies.goalnav.heads`), and recognition of their files (:mod:`policies.goalnav.checkpoints`)."""

from policies.goalnav.checkpoints import (
    KINDS,
    GoalNavCheckpoint,
    GoalNavCheckpointError,
    load_goalnav_checkpoint,
    recognise_goalnav_checkpoint,
)
from policies.goalnav.heads import (
    ACTION_2D,
    ACTION_3D,
    CLASS_NAMES,
    ActionMLP,
    Decision,
    DecisionRule,
    Exp73HybridHead,
    Exp73MLPHead,
    GoalNavMLP,
    HistoryFrame,
    Stage1ImageProj,
    argmax_classes,
    bbox_rows,
    blocks_rotation,
    exp49_goal,
    exp73_sequence,
    goalnav_features,
    hybrid_classes,
    learned_stop_latch,
    mean_vision_feature,
    pad_window,
    project_vision,
    proximity_stop,
    stage2_v2_features,
    strip_net_prefix,
    window_indices,
)

__all__ = [
    "ACTION_2D", "ACTION_3D", "CLASS_NAMES", "KINDS", "ActionMLP", "Decision", "DecisionRule", "Exp73HybridHead",
    "Exp73MLPHead", "GoalNavCheckpoint", "GoalNavCheckpointError", "GoalNavMLP", "HistoryFrame", "Stage1ImageProj",
    "argmax_classes", "bbox_rows", "blocks_rotation", "exp49_goal", "exp73_sequence", "goalnav_features",
    "hybrid_classes", "learned_stop_latch", "load_goalnav_checkpoint", "mean_vision_feature", "pad_window",
    "project_vision", "proximity_stop", "recognise_goalnav_checkpoint", "stage2_v2_features", "strip_net_prefix",
    "window_indices",
]
