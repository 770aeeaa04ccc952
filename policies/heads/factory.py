"""Building a head by its registry name: :func:`make_head` for given feature widths, :func:`head_from_config` from a
saved config (the team's ``model_config`` spellings accepted), :func:`head_class` for the class itself.

The classes are found through :data:`policies.catalog.HEADS` (``"module:Class"``) and imported on first use, so a
head that holds other heads (``hybrid-ensemble-recon``) builds its members here without importing the package
that lists every head.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Mapping
from typing import Any

from foundations.errors import ConfigError, MobileVLAError
from policies import catalog
from policies.heads.base import ActionHead, HeadConfig

#: Alternative spellings found in the team's saved configs.
CONFIG_ALIASES = {"language_dim": "text_dim", "fwd_pred_next_n": "chunk_size", "max_sequence_length": "chunk_size"}


class UnknownHeadError(MobileVLAError, ValueError):
    """A head name outside :data:`policies.catalog.HEADS`."""


@functools.cache
def head_class(name: str) -> type[ActionHead]:
    """The class registered as ``name`` in :data:`policies.catalog.HEADS` (its module imported on first use).

    Raises:
        UnknownHeadError: a name outside the catalog.
        ImportError: a catalog entry naming a class whose ``head_name`` is another (a programming error).
    """
    target = catalog.HEADS.get(name)
    if target is None:
        raise UnknownHeadError(f"unknown head {name!r}; choose one of {', '.join(catalog.HEADS)}")
    module, _, attribute = target.partition(":")
    cls = getattr(importlib.import_module(module), attribute)
    if cls.head_name != name:  # pragma: no cover - a catalog entry pointing at the wrong class
        raise ImportError(f"policies.catalog.HEADS[{name!r}] names {target}, whose head_name is {cls.head_name!r}")
    return cls


def provenance(name: str) -> str:
    """``"team architecture (CLASS)"`` or ``"our reconstruction"`` for head ``name``."""
    cls = head_class(name)
    return f"team architecture ({cls.team_class})" if cls.team_class else "our reconstruction"


def config_fields(name: str) -> set[str]:
    """Field names of head ``name``'s config dataclass."""
    return {f.name for f in dataclasses.fields(head_class(name).config_class)}


def config_from_dict(name: str, values: Mapping[str, Any], *, strict: bool = False) -> HeadConfig:
    """Build head ``name``'s config from a dict, mapping :data:`CONFIG_ALIASES`.

    Args:
        strict: raise ``ValueError`` on keys the config does not have; otherwise they are ignored (the team's
            configs carry extra fields such as ``clip_model_name``).

    Raises:
        ConfigError: an unknown key (``strict``) or a value of the wrong type for its field.
    """
    cls = head_class(name).config_class
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    unknown = []
    for key, value in values.items():
        key = CONFIG_ALIASES.get(key, key)
        if key not in fields:
            unknown.append(key)
            continue
        default = fields[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{cls.__name__}.{key} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise ConfigError(f"{cls.__name__}.{key} must be an integer, got {value!r}")
            value = int(value)
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{cls.__name__}.{key} must be a number, got {value!r}")
            value = float(value)
        kwargs[key] = value
    if strict and unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    return cls(**kwargs)


def make_head(name: str, vision_dim: int, text_dim: int, action_dim: int = 2, **overrides: Any) -> ActionHead:
    """Build head ``name`` for features of the given widths (randomly initialised by torch's global RNG).

    ``overrides`` set any other config field (``window_size``, ``chunk_size``, ``hidden_dim``, ``clip_dim``...).

    Raises:
        UnknownHeadError: unknown name. ValueError: an unknown override or an invalid size.
    """
    values = {"vision_dim": vision_dim, "text_dim": text_dim, "action_dim": action_dim, **overrides}
    return head_class(name)(config_from_dict(name, values, strict=True))


def head_from_config(name: str, config: Mapping[str, Any] | HeadConfig) -> ActionHead:
    """Rebuild head ``name`` from a config (dataclass or dict; unknown dict keys are ignored)."""
    if isinstance(config, HeadConfig):
        return head_class(name)(config)
    return head_class(name)(config_from_dict(name, dict(config)))
