"""Command-line arguments shared by the CLIs: ``KEY=VALUE`` policy arguments (``sim.serve``, ``sim.eval``,
``sim.train``) and the flags naming where a VLA policy's weights come from (``sim.eval``, ``sim.serve``,
``sim.export``, ``sim.checkpoint``)."""

from __future__ import annotations

import argparse
import ast
import json
from collections.abc import Sequence
from typing import Any

#: ``--backbone`` choices (``policies.backbones.BACKBONE_NAMES`` and ``auto``).
BACKBONE_CHOICES = ("auto", "lite", "kosmos2", "tiny-kosmos2")
#: Destinations of :func:`add_model_source_arguments`, in the order :func:`model_source_argv` writes them.
MODEL_SOURCE_FLAGS = ("checkpoint", "backbone", "backbone_path", "clip_path", "key_map", "config")


def add_model_source_arguments(parser: argparse.ArgumentParser, *, checkpoint: bool = True,
                               backbone_default: str | None = None) -> None:
    """Add ``--checkpoint`` (unless ``checkpoint`` is False), ``--backbone``, ``--backbone-path``, ``--clip-path``,
    ``--key-map`` and ``--config``: the :func:`policies.vla.build_vla_policy` arguments of the same names.

    Args:
        backbone_default: ``--backbone``'s default (``None``: not passed on, so the policy's own default, ``auto``).
    """
    if checkpoint:
        parser.add_argument("--checkpoint", help="VLA head weights: project .safetensors, team .pth or RoboVLMs .ckpt "
                                                 "(default: the bundled weights)")
    parser.add_argument("--backbone", default=backbone_default, choices=BACKBONE_CHOICES,
                        help="VLA backbone (default auto: the checkpoint's; kosmos2 for a team file; lite for the "
                             "bundled weights)")
    parser.add_argument("--backbone-path", help="Kosmos-2 folder or cached hub id (weights and/or processor); lite: "
                                                "an EfficientNet-Lite0 .pth")
    parser.add_argument("--clip-path", help="CLIP weights (open_clip file or save_pretrained folder) when the "
                                            "checkpoint carries none")
    parser.add_argument("--key-map", help="JSON {old prefix: new prefix} for a checkpoint layout not known here")
    parser.add_argument("--config", help="robovlms: the team's RoboVLMs config JSON (their VLA_CONFIG_PATH)")


def model_source_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :data:`MODEL_SOURCE_FLAGS` given in ``args`` (``None`` ones left out), as policy keyword arguments."""
    return {flag: getattr(args, flag) for flag in MODEL_SOURCE_FLAGS if getattr(args, flag, None) is not None}


def model_source_argv(args: argparse.Namespace) -> list[str]:
    """The same flags as command-line arguments (``["--checkpoint", FILE, ...]``), to hand on to another CLI."""
    return [item for flag, value in model_source_kwargs(args).items()
            for item in (f"--{flag.replace('_', '-')}", str(value))]


def parse_policy_kwargs(pairs: Sequence[str]) -> dict[str, Any]:
    """``["seed=3", "mode=uniform", "device=cpu"]`` -> ``{"seed": 3, "mode": "uniform", "device": "cpu"}``.

    Values are Python literals (``3``, ``0.5``, ``True``, ``None``, ``[1, 2]``) or JSON (``true``, ``null``) when
    they parse as such, otherwise strings.

    Raises:
        ValueError: an item without ``=`` or with an empty or non-identifier key.
    """
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"policy arguments must look like KEY=VALUE, got {pair!r}")
        value: Any = text
        for parse in (ast.literal_eval, json.loads):
            try:
                value = parse(text)
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
        kwargs[key] = value
    return kwargs
