"""Name -> policy factory registry.

Entries are ``"module:attribute"`` strings imported on first use, so listing policies or building the expert
never imports torch or transformers. A name may carry an argument after a colon (``"sb3:run/ppo.zip"``,
``"onnx:out/model.onnx"``): it is passed to the factory as ``path=``.
"""

from __future__ import annotations

import importlib
from typing import Any

from policies.base import Policy

_REGISTRY: dict[str, str] = {
    "expert": "policies.expert:ExpertPolicy",
    "replay": "policies.replay:ReplayPolicy",
    "random": "policies.random_policy:RandomPolicy",
    # the team's architectures (policies.heads), then our reconstructions, then the ensemble
    "case1": "policies.vla:case1",
    "case1-v1": "policies.vla:case1_v1",
    "case2": "policies.vla:case2",
    "case3": "policies.vla:case3",
    "hybrid": "policies.vla:hybrid",
    "pure-kosmos2": "policies.vla:pure_kosmos2",
    "robovlms": "policies.vla:robovlms",
    "case4-recon": "policies.vla:case4_recon",
    "lstm-recon": "policies.vla:lstm_recon",
    "clip-lstm-recon": "policies.vla:clip_lstm_recon",
    "ensemble": "policies.vla:ensemble",
    "remote": "policies.remote:RemotePolicy",
    "sb3": "policies.sb3_policy:SB3Policy",
    "onnx": "policies.onnx_policy:OnnxPolicy",
}


class UnknownPolicyError(KeyError):
    """Raised for a policy name that is not registered."""


def register(name: str, target: str, *, overwrite: bool = False) -> None:
    """Register ``target`` (``"module:attribute"``, a callable returning a :class:`Policy`) under ``name``.

    Raises:
        ValueError: if ``name`` is taken and ``overwrite`` is False, or ``target`` lacks a colon.
    """
    if ":" not in target:
        raise ValueError(f"target must look like 'module:attribute', got {target!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"policy {name!r} is already registered as {_REGISTRY[name]}")
    _REGISTRY[name] = target


def names() -> list[str]:
    """Registered policy names, sorted."""
    return sorted(_REGISTRY)


def vla_names() -> list[str]:
    """Registered names built by :mod:`policies.vla` (the heads and the ensemble), in registry order."""
    return [name for name, target in _REGISTRY.items() if target.startswith("policies.vla:")]


def _resolve(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def describe(name: str) -> str:
    """First line of the factory's docstring, or why it cannot be imported."""
    try:
        factory = _resolve(_REGISTRY[name])
    except Exception as exc:  # noqa: BLE001 - listing must survive a missing optional dependency
        return f"(unavailable: {type(exc).__name__}: {exc})"
    return (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else ""


def make_policy(name: str, **kwargs: Any) -> Policy:
    """Build a policy by registry name.

    ``"sb3:PATH"`` style names pass ``PATH`` as ``path=``. Raises :class:`UnknownPolicyError` for an unknown
    name (the message lists the known ones).
    """
    base, sep, arg = name.partition(":")
    if base not in _REGISTRY:
        raise UnknownPolicyError(f"unknown policy {name!r}; registered: {', '.join(names())}")
    if sep:
        kwargs.setdefault("path", arg)
    policy = _resolve(_REGISTRY[base])(**kwargs)
    if not isinstance(policy, Policy):
        raise TypeError(f"factory for {base!r} returned {type(policy).__name__}, not a Policy")
    policy.name = name
    return policy
