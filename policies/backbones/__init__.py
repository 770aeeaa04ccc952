"""Frozen vision-language backbones behind one interface (:class:`Backbone`) and :func:`make_backbone`.

========================  ==========  ========  ======================================================
name                      vision_dim  text_dim  what
========================  ==========  ========  ======================================================
``lite``                  1280        384       EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2, offline
``kosmos2``               1024        2048      ``microsoft/kosmos-2-patch14-224`` (or a local copy)
``tiny-kosmos2``          32          32        same code path, toy random config, offline (tests)
========================  ==========  ========  ======================================================
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from policies.backbones.base import Backbone, BackboneInputError

#: Names accepted by :func:`make_backbone`.
BACKBONE_NAMES = ("lite", "kosmos2", "tiny-kosmos2")

_CACHE: dict[tuple[str, str, str], Backbone] = {}
_CACHE_LOCK = threading.Lock()


class UnknownBackboneError(ValueError):
    """A backbone name outside :data:`BACKBONE_NAMES`."""


def _build(name: str, path: str | Path | None, device: torch.device) -> Backbone:
    if name == "lite":
        from policies.backbones.lite import LiteBackbone

        return LiteBackbone(device=device, image_weights=path)
    if name == "kosmos2":
        from policies.backbones.kosmos2 import load_kosmos2

        return load_kosmos2(path, device=device)
    from policies.backbones.tiny_kosmos2 import load_tiny_kosmos2

    return load_tiny_kosmos2(device=device)


def make_backbone(name: str = "lite", path: str | Path | None = None, device: str | torch.device = "cpu",
                  *, cache: bool = True) -> Backbone:
    """Build (or reuse) a frozen backbone.

    Args:
        name: one of :data:`BACKBONE_NAMES`.
        path: ``kosmos2``: local folder or hub id (``None`` = ``microsoft/kosmos-2-patch14-224``);
            ``lite``: an EfficientNet-Lite0 ``.pth`` (``None`` = the packaged weights); ignored by ``tiny-kosmos2``.
        device: torch device.
        cache: reuse one instance per ``(name, path, device)`` in this process (backbones are frozen and
            stateless apart from their instruction-feature cache, so sharing is safe).

    Raises:
        UnknownBackboneError: unknown ``name``. FileNotFoundError / ModuleNotFoundError: missing weights.
    """
    if name not in BACKBONE_NAMES:
        raise UnknownBackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
    dev = torch.device(device)
    key = (name, "" if path is None or name == "tiny-kosmos2" else str(path), str(dev))
    if not cache:
        return _build(name, path, dev)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _build(name, path, dev)
        return _CACHE[key]


__all__ = ["BACKBONE_NAMES", "Backbone", "BackboneInputError", "UnknownBackboneError", "make_backbone"]
