"""The names the policy registries use, each listed once, in a module that imports nothing heavy (no torch), so
command-line choices and ``--list`` cost no model import. Everything else derives from these lists: the head
classes (:data:`policies.heads.HEADS`), the registry's VLA policies (:func:`policies.registry.vla_names`), the
backbone factory, the ``--policy``/``--backbone``/``--execution`` choices of every command.

Adding a head: its module in ``policies/heads/`` (a class with ``head_name``) and one line in :data:`HEADS`.
"""

from __future__ import annotations

from typing import Literal, get_args

#: Head name -> ``"module:Class"``: the team's architectures first, then our reconstructions (``-recon``).
HEADS: dict[str, str] = {
    "case1": "policies.heads.case1:Simplified2DActionModelV2",
    "case1-v1": "policies.heads.case1:Simplified2DActionModel",
    "case2": "policies.heads.case2:CLIPNormalized2DActionModelV2",
    "case3": "policies.heads.case3:SimpleCase3Model",
    "hybrid": "policies.heads.hybrid:Kosmos2CLIPHybridModel",
    "pure-kosmos2": "policies.heads.hybrid:PureKosmos2Model",
    "robovlms": "policies.heads.robovlms:RoboVLMsHead",
    "case4-recon": "policies.heads.case4_recon:Case4Reconstruction",
    "lstm-recon": "policies.heads.lstm_recon:LSTMReconstruction",
    "clip-lstm-recon": "policies.heads.lstm_recon:CLIPLSTMReconstruction",
    "final-fixed-recon": "policies.heads.final_fixed:FinalFixedReconstruction",
    "hybrid-ensemble-recon": "policies.heads.final_fixed:HybridEnsembleReconstruction",
}
HEAD_NAMES: tuple[str, ...] = tuple(HEADS)

#: The team's grounder + MLP policies of 2026 (:mod:`policies.goalnav.policy`): registry name -> the checkpoint kind it
#: runs (:data:`policies.goalnav.checkpoints.KINDS`).
GOALNAV_VARIANTS: dict[str, str] = {"exp46": "exp46", "exp49": "exp49", "stage2-v2": "stage2_v2",
                                    "exp73": "exp73_mlp", "exp73-hybrid": "exp73_hybrid"}
GOALNAV_NAMES: tuple[str, ...] = tuple(GOALNAV_VARIANTS)
#: The grounder + MLP heads this project trains (:mod:`sim.training.goalnav`) and bundles (``sim.bundle``).
TRAINABLE_GOALNAV: tuple[str, ...] = ("exp73", "exp49")

#: Frozen feature extractors :func:`policies.backbones.make_backbone` builds.
BACKBONE_NAMES: tuple[str, ...] = ("lite", "kosmos2", "tiny-kosmos2")

#: How a predicted action chunk is executed (:class:`policies.vla.ChunkExecutor`): its first action then predict
#: again (the robot's server), all its actions in turn, or temporal ensembling of overlapping chunks.
ExecutionMode = Literal["first", "all", "ensemble"]
EXECUTION_MODES: tuple[str, ...] = get_args(ExecutionMode)
