"""Action heads, one module per model family.

The team's architectures (parameter names, shapes and forward pass as in ``minuum/vla``;
``../shared/reference/TEAM_MODELS.md``):

========================  ==================================  =========================================
registry name             the team's class                    reads
========================  ==================================  =========================================
``case1``                 ``Simplified2DActionModelV2``       image + text, one frame, one action
``case1-v1``              ``Simplified2DActionModel``         image + text, one frame, one action
``case2``                 ``CLIPNormalized2DActionModelV2``   image + clip_image + text, one frame
``case3``                 ``SimpleCase3Model``                image + text, one frame (case 1 V2's tree)
``hybrid``                ``Kosmos2CLIPHybridModel``          multimodal + clip_text, one frame
``pure-kosmos2``          ``PureKosmos2Model``                multimodal, one frame
``robovlms``              ``MobileVLALSTMDecoder`` (act_head) action_token, window 8, chunk 10
========================  ==================================  =========================================

Our reconstructions of models whose source is not public (names end in ``-recon``): ``case4-recon``
(``RoboVLMsCompleteModel``), ``lstm-recon`` ("Simple LSTM", MAE 0.222), ``clip-lstm-recon`` ("Simple CLIP-LSTM
hybrid", MAE 0.212), and the optimisation notes' (seed 000) ``final-fixed-recon`` (``FinalFixedOptimizedModel``)
and ``hybrid-ensemble-recon`` (``HybridEnsembleModel``). :mod:`policies.heads.fusion` holds the notes'
``AdaptiveFeatureFusion``, a switch (``adaptive_fusion``) of the heads that concatenate vision and language.

:func:`make_head` builds one for given feature widths; :func:`head_from_config` rebuilds one from a saved config
dict (the team's ``model_config`` spellings are accepted); :func:`detect_head` names the architecture of a team
state dict from its keys.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from policies import catalog
from policies.heads.base import ActionHead, HeadConfig, HeadInputError
from policies.heads.case1 import Case1Config, Simplified2DActionModel, Simplified2DActionModelV2
from policies.heads.case2 import Case2Config, CLIPNormalized2DActionModelV2
from policies.heads.case3 import Case3Config, SimpleCase3Model
from policies.heads.case4_recon import Case4Config, Case4Reconstruction
from policies.heads.factory import (
    CONFIG_ALIASES,
    UnknownHeadError,
    config_fields,
    config_from_dict,
    head_class,
    head_from_config,
    make_head,
    provenance,
)
from policies.heads.final_fixed import (
    FinalFixedConfig,
    FinalFixedReconstruction,
    HybridEnsembleConfig,
    HybridEnsembleReconstruction,
)
from policies.heads.fusion import AdaptiveFeatureFusion
from policies.heads.hybrid import HybridConfig, Kosmos2CLIPHybridModel, PureKosmos2Config, PureKosmos2Model
from policies.heads.lstm_recon import CLIPLSTMReconConfig, CLIPLSTMReconstruction, LSTMReconConfig, LSTMReconstruction
from policies.heads.robovlms import RoboVLMsConfig, RoboVLMsHead

#: Head name -> class, from :data:`policies.catalog.HEADS` (the team's architectures first, then our
#: reconstructions).
HEADS: dict[str, type[ActionHead]] = {name: head_class(name) for name in catalog.HEADS}


def detect_head(state: Mapping[str, torch.Tensor], *, has_model_config: bool = False,
                frozen_prefixes: tuple[str, ...] = ()) -> str | None:
    """The registry name of the team architecture a head state dict belongs to, from its key set, or ``None``.

    Args:
        state: the head's tensors (backbone keys removed, Lightning's ``model.`` prefix stripped).
        has_model_config: the file stored a ``model_config`` (case 1 files do, case 3 files do not: same tree).
        frozen_prefixes: prefixes of the frozen models the file carried (``clip_text.`` marks the hybrid).
    """
    keys = set(state)
    if "act_head.rnn.weight_ih_l0" in keys:
        return "robovlms"
    if "fusion.0.weight" in keys and "action_head.3.weight" in keys and len(keys) == 6:
        width = int(state["fusion.0.weight"].shape[1])
        if any(p.startswith("clip_") for p in frozen_prefixes) or width > HybridConfig.vision_dim:
            return "hybrid"
        return "pure-kosmos2"
    if "feature_adapter.weight" in keys and "final_norm.weight" in keys:
        if any(k.startswith(("clip_norm_vision.", "vision_resampler.")) for k in keys):
            return "case2"
        if "action_head.9.weight" in keys:
            return "case1" if has_model_config else "case3"
        if "action_head.3.weight" in keys:
            return "case1-v1"
    return None


__all__ = [
    "CONFIG_ALIASES", "HEADS", "ActionHead", "AdaptiveFeatureFusion", "CLIPLSTMReconConfig", "CLIPLSTMReconstruction",
    "CLIPNormalized2DActionModelV2", "Case1Config", "Case2Config", "Case3Config", "Case4Config",
    "Case4Reconstruction", "FinalFixedConfig", "FinalFixedReconstruction", "HeadConfig", "HeadInputError",
    "HybridConfig", "HybridEnsembleConfig", "HybridEnsembleReconstruction", "Kosmos2CLIPHybridModel",
    "LSTMReconConfig", "LSTMReconstruction", "PureKosmos2Config", "PureKosmos2Model", "RoboVLMsConfig",
    "RoboVLMsHead", "SimpleCase3Model", "Simplified2DActionModel", "Simplified2DActionModelV2", "UnknownHeadError",
    "config_fields", "config_from_dict", "detect_head", "head_class", "head_from_config", "make_head", "provenance",
]
