"""Action heads, one module each, named as the team names them.

- ``case1`` ``Simplified2DActionModelV2``: adapters 256 + 256 -> MLP 512-512-256-128; window 1, chunk 1, linear.
- ``case2`` ``CLIPNormalized2DActionModelV2``: + "CLIP normalisation" + vision resampler; window 8, chunk 1,
  linear.
- ``case3`` ``SimpleCase3Model``: case 1's structure under its own config; window 1, chunk 1, linear.
- ``case4`` ``RoboVLMsCompleteModel``: hierarchical planner, hidden 512; window 8, chunk 5, linear.
- ``lstm`` ``MobileVLALSTMDecoder``: LSTM 512 x 4 + RoboVLMs ``MLPTanhHead``; window 8, chunk 10, tanh.
- ``hybrid`` ``Kosmos2CLIPHybridModel``: two visual streams + LSTM; window 8, chunk 10, tanh.

:func:`make_head` builds one for given feature widths; :func:`head_from_config` rebuilds one from a saved
config dict (the team's ``model_config`` spelling ``language_dim`` is accepted for ``text_dim``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from policies.heads.base import ActionHead, HeadConfig, HeadInputError
from policies.heads.case1 import Case1Config, Simplified2DActionModelV2
from policies.heads.case2 import Case2Config, CLIPNormalized2DActionModelV2
from policies.heads.case3 import Case3Config, SimpleCase3Model
from policies.heads.case4 import Case4Config, RoboVLMsCompleteModel
from policies.heads.hybrid import HybridConfig, Kosmos2CLIPHybridModel
from policies.heads.lstm import LSTMConfig, MobileVLALSTMDecoder

#: Head name -> class.
HEADS: dict[str, type[ActionHead]] = {
    "case1": Simplified2DActionModelV2,
    "case2": CLIPNormalized2DActionModelV2,
    "case3": SimpleCase3Model,
    "case4": RoboVLMsCompleteModel,
    "lstm": MobileVLALSTMDecoder,
    "hybrid": Kosmos2CLIPHybridModel,
}

#: Alternative spellings found in the team's saved configs.
CONFIG_ALIASES = {"language_dim": "text_dim", "fwd_pred_next_n": "chunk_size", "max_sequence_length": "chunk_size"}


class UnknownHeadError(ValueError):
    """A head name outside :data:`HEADS`."""


def head_class(name: str) -> type[ActionHead]:
    """The class registered as ``name``; raises :class:`UnknownHeadError`."""
    try:
        return HEADS[name]
    except KeyError:
        raise UnknownHeadError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}") from None


def config_from_dict(name: str, values: dict[str, Any], *, strict: bool = False) -> HeadConfig:
    """Build head ``name``'s config from a dict, mapping :data:`CONFIG_ALIASES`.

    Args:
        strict: raise ``ValueError`` on keys the config does not have; otherwise they are ignored (the team's
            configs carry extra fields such as ``clip_model_name`` or ``use_vision_resampler``).
    """
    cls = head_class(name).config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    unknown = []
    for key, value in values.items():
        key = CONFIG_ALIASES.get(key, key)
        if key in fields:
            kwargs[key] = value
        else:
            unknown.append(key)
    if strict and unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    return cls(**kwargs)


def make_head(name: str, vision_dim: int, text_dim: int, action_dim: int = 2, **overrides: Any) -> ActionHead:
    """Build head ``name`` for features of the given widths (randomly initialised by torch's global RNG).

    ``overrides`` set any other config field (``window_size``, ``chunk_size``, ``hidden_dim``, ...).

    Raises:
        UnknownHeadError: unknown name. ValueError: an unknown override or an invalid size.
    """
    values = {"vision_dim": vision_dim, "text_dim": text_dim, "action_dim": action_dim, **overrides}
    return head_class(name)(config_from_dict(name, values, strict=True))


def head_from_config(name: str, config: dict[str, Any] | HeadConfig) -> ActionHead:
    """Rebuild head ``name`` from a config (dataclass or dict; unknown dict keys are ignored)."""
    if isinstance(config, HeadConfig):
        return head_class(name)(config)
    return head_class(name)(config_from_dict(name, dict(config)))


__all__ = [
    "HEADS", "ActionHead", "CLIPNormalized2DActionModelV2", "Case1Config", "Case2Config", "Case3Config",
    "Case4Config", "HeadConfig", "HeadInputError", "HybridConfig", "Kosmos2CLIPHybridModel", "LSTMConfig",
    "MobileVLALSTMDecoder", "RoboVLMsCompleteModel", "SimpleCase3Model", "Simplified2DActionModelV2",
    "UnknownHeadError", "config_from_dict", "head_class", "head_from_config", "make_head",
]
