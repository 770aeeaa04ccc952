"""The team's three training strategies (``../shared/seeds/000_*.txt``, "실제 구현 전략") as presets of
``sim.train``: ``--strategy final-fixed | balanced-hybrid | advanced``.

================  ===================================  =======  ======  ============  ======  ==============
preset            the notes' name                      dropout  lr      weight decay  epochs  early stopping
================  ===================================  =======  ======  ============  ======  ==============
final-fixed       전략 1: Final Fixed 스타일 최적화      0.2      1e-3    1e-5          6       none
balanced-hybrid   전략 2: 균형잡힌 하이브리드           0.3      1e-4    1e-4          15      none
advanced          전략 3: 고급 기능 최적화              0.4      5e-5    1e-3          20      patience 7
================  ===================================  =======  ======  ============  ======  ==============

Every strategy keeps ``z_axis_weight`` 0.05, so each preset also makes the head 3-DoF (``action_dim`` 3,
``z_axis_weight`` 0.05). The notes' ``use_advanced_features`` and strategy 2's ``ensemble_weight`` 0.6 are not part
of the presets: they are the heads and options of their own (``hybrid-ensemble-recon``, ``adaptive_fusion``).
A preset sets the head's ``dropout`` config field, so the head must have one. Values given explicitly (a flag, a
spec-file key) win over the preset's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from foundations.errors import ConfigError

#: Preset name -> training values and head config values (seed 000, the three ``config`` dicts).
STRATEGIES: dict[str, dict[str, Any]] = {
    "final-fixed": {"lr": 1e-3, "weight_decay": 1e-5, "epochs": 6, "patience": None,
                    "head": {"dropout": 0.2, "action_dim": 3, "z_axis_weight": 0.05}},
    "balanced-hybrid": {"lr": 1e-4, "weight_decay": 1e-4, "epochs": 15, "patience": None,
                        "head": {"dropout": 0.3, "action_dim": 3, "z_axis_weight": 0.05}},
    "advanced": {"lr": 5e-5, "weight_decay": 1e-3, "epochs": 20, "patience": 7,
                 "head": {"dropout": 0.4, "action_dim": 3, "z_axis_weight": 0.05}},
}


def apply_strategy(strategy: str | None, policy: str, explicit: Mapping[str, Any], head_overrides: Mapping[str, Any],
                   *, defaults: Mapping[str, Any] | None = None, head_defaults: Mapping[str, Any] | None = None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training values (``lr``, ``weight_decay``, ``epochs``, ``patience``, ...) and head config values of a
    run: ``defaults`` < ``strategy``'s preset < ``explicit`` for the former, ``head_defaults`` < the preset's head
    values < ``head_overrides`` for the latter (the ``explicit`` / ``head_overrides`` values are those the user gave
    for this run; the defaults, e.g. a spec file's shared ``[train]`` table, give way to the preset).

    A preset's ``patience: None`` (no early stopping) becomes the run's number of epochs.

    Raises:
        ConfigError: an unknown strategy, or a head without a config field the preset sets (``dropout``).
    """
    kwargs = {**(defaults or {}), **explicit}
    head = {**(head_defaults or {}), **head_overrides}
    if strategy is None:
        return kwargs, head
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    from policies.heads import config_fields

    preset = STRATEGIES[strategy]
    missing = sorted(set(preset["head"]) - config_fields(policy))
    if missing:
        raise ConfigError(f"strategy {strategy} sets {', '.join(missing)}, which head {policy} does not have")
    kwargs = {**(defaults or {}), **{k: preset[k] for k in ("lr", "weight_decay", "epochs")}, **explicit}
    if "patience" not in explicit:
        kwargs["patience"] = preset["patience"] if preset["patience"] is not None else kwargs["epochs"]
    return kwargs, {**(head_defaults or {}), **preset["head"], **head_overrides}
