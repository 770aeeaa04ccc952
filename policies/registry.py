"""Name -> policy factory registry.

Entries are ``"module:attribute"`` strings imported on first use, so listing policies or building the expert
never imports torch or transformers. A name may carry an argument after a colon (``"sb3:run/ppo.zip"``,
``"onnx:out/model.onnx"``): it is passed to the factory as ``path=``.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from typing import Any

from foundations.errors import ConfigError, MobileVLAError
from policies.base import Policy
from policies.catalog import GOALNAV_NAMES, HEAD_NAMES

_VLA_FACTORY = "policies.vla:build_vla_policy"
_GOALNAV_FACTORY = "policies.goalnav.policy:build_goalnav_policy"

#: Name -> ``"module:attribute"`` of its factory. A VLA head's policy is ``build_vla_policy(head=name)``, one
#: entry per head of :data:`policies.catalog.HEADS` (``"policies.vla:build_vla_policy@case2"``).
_REGISTRY: dict[str, str] = {
    "expert": "policies.expert:ExpertPolicy",
    "replay": "policies.replay:ReplayPolicy",
    "random": "policies.random_policy:RandomPolicy",
    **{name: f"{_VLA_FACTORY}@{name}" for name in HEAD_NAMES},
    "ensemble": "policies.vla:ensemble",
    **{name: f"{_GOALNAV_FACTORY}@{name}" for name in GOALNAV_NAMES},
    "remote": "policies.remote:RemotePolicy",
    "sb3": "policies.sb3_policy:SB3Policy",
    "onnx": "policies.onnx_policy:OnnxPolicy",
}


class UnknownPolicyError(MobileVLAError, KeyError):
    """Raised for a policy name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


#: Environment variable carrying the policies registered at run time (JSON ``{name: target}``) to the processes
#: this one starts (evaluation workers are spawned: they import the registry afresh).
REGISTERED_ENV = "MOBILE_VLA_SIM_REGISTERED"


def register(name: str, target: str, *, overwrite: bool = False) -> None:
    """Register ``target`` (``"module:attribute"``, a callable returning a :class:`Policy`) under ``name``; the
    registration also holds in the worker processes started afterwards (:data:`REGISTERED_ENV`).

    Raises:
        ConfigError: if ``name`` is taken and ``overwrite`` is False, or ``target`` lacks a colon.
    """
    if ":" not in target:
        raise ConfigError(f"target must look like 'module:attribute', got {target!r}")
    if name in _REGISTRY and not overwrite and _REGISTRY[name] != target:
        raise ConfigError(f"policy {name!r} is already registered as {_REGISTRY[name]}")
    _REGISTRY[name] = target
    registered = json.loads(os.environ.get(REGISTERED_ENV) or "{}")
    os.environ[REGISTERED_ENV] = json.dumps({**registered, name: target})


def _inherited() -> None:
    try:
        registered = json.loads(os.environ.get(REGISTERED_ENV) or "{}")
    except json.JSONDecodeError:
        raise ConfigError(f"${REGISTERED_ENV} is not JSON: {os.environ[REGISTERED_ENV][:80]!r}") from None
    for name, target in registered.items():
        register(str(name), str(target), overwrite=True)


_inherited()


def names() -> list[str]:
    """Registered policy names, sorted."""
    return sorted(_REGISTRY)


def vla_names() -> list[str]:
    """Registered names built by :mod:`policies.vla` (the heads and the ensemble), in registry order."""
    return [name for name, target in _REGISTRY.items() if target.startswith("policies.vla:")]


def model_source_names() -> list[str]:
    """Registered names that take the model-source flags (``--checkpoint``, ``--backbone``, ``--device`` ...): the
    VLA policies and the team's grounder + MLP policies (:mod:`policies.goalnav.policy`)."""
    return vla_names() + [name for name, target in _REGISTRY.items() if target.startswith(_GOALNAV_FACTORY)]


def _resolve(target: str) -> Any:
    """The factory of a registry target; ``"module:attr@head"`` binds the first argument (the head name)."""
    target, _, head = target.partition("@")
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return functools.partial(factory, head) if head else factory


def describe(name: str) -> str:
    """One line on policy ``name``: its head class's docstring for a VLA head, else its factory's; or why it
    cannot be imported."""
    try:
        target = _REGISTRY[name]
        if target.startswith(_GOALNAV_FACTORY):
            from policies.goalnav.policy import describe_variant

            return describe_variant(target.partition("@")[2])
        if "@" in target:
            from policies.heads import HEADS, provenance

            head = target.partition("@")[2]
            return f"{provenance(head)}: {(HEADS[head].__doc__ or '').strip().splitlines()[0]}"
        else:
            factory = _resolve(target)
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
