"""The frozen vision-language backbone interface shared by ``lite``, ``kosmos2`` and ``tiny-kosmos2``.

A backbone turns camera frames and instructions into pooled feature vectors; the action heads
(:mod:`policies.heads`) only ever see those vectors, so backbone features can be cached on disk for
training. Backbones are frozen: eval mode, ``requires_grad`` off, every call under ``torch.inference_mode``.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F


class BackboneInputError(ValueError):
    """Images or texts passed to a backbone have the wrong type, dtype or shape."""


def as_uint8_nhwc(images: Any) -> np.ndarray:
    """Validate a batch of frames and return it as a C-contiguous uint8 ``(N, H, W, 3)`` RGB numpy array.

    Accepts a numpy array or torch tensor of shape ``(N, H, W, 3)`` or a single frame ``(H, W, 3)``
    (promoted to ``N = 1``), dtype uint8.

    Raises:
        BackboneInputError: wrong dtype (not uint8) or shape (not ``(N, H, W, 3)``).
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise BackboneInputError(f"images must be uint8 RGB, got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise BackboneInputError(f"images must have shape (N, H, W, 3) RGB, got {arr.shape}")
    return np.ascontiguousarray(arr)


def to_float_nchw(images: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float],
                  device: torch.device | str) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` RGB -> normalised float32 ``(N, 3, size, size)`` on ``device``.

    Resizes with antialiased bilinear interpolation when the frame is not already ``size x size`` (no crop:
    the robot's frames are resized, not cropped, to 224 x 224), then applies ``(x - mean) / std`` with
    ``mean``/``std`` in 0..255 pixel units.
    """
    if not images.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. np.asarray(PIL image))
        images = images.copy()
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Put ``module`` in eval mode with every parameter's ``requires_grad`` off; returns it."""
    module.eval()
    module.requires_grad_(False)
    return module


class Backbone(abc.ABC):
    """A frozen image + text encoder.

    Attributes:
        name: registry name (``"lite"``, ``"kosmos2"``, ``"tiny-kosmos2"``).
        vision_dim: width of :meth:`encode_images` features.
        text_dim: width of :meth:`encode_text` features.
        device: torch device the networks run on.

    Text features are cached per instruction string (:meth:`encode_text` runs the text encoder once per
    distinct string for the backbone's lifetime); image features are never cached here.
    """

    name: str = "backbone"
    vision_dim: int = 0
    text_dim: int = 0

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    def encode_images(self, images: Any) -> torch.Tensor:
        """Encode frames.

        Args:
            images: uint8 RGB ``(N, H, W, 3)`` (numpy or torch; ``(H, W, 3)`` is treated as ``N = 1``), any
                ``H, W``: the backbone resizes to its own input size and normalises itself.

        Returns:
            float32 ``(N, vision_dim)`` on CPU.

        Raises:
            BackboneInputError: wrong dtype or shape.
        """
        arr = as_uint8_nhwc(images)
        with torch.inference_mode():
            out = self._encode_images(arr)
        # clone outside inference mode: a plain tensor can feed a trainable head (inference tensors cannot)
        return out.float().cpu().clone()

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Encode instructions, float32 ``(N, text_dim)`` on CPU; cached per distinct string.

        Raises:
            BackboneInputError: ``texts`` is a bare string or holds a non-string.
        """
        if isinstance(texts, str):
            raise BackboneInputError("encode_text expects a list of strings, not a single str")
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise BackboneInputError(f"instructions must be str, got {type(t).__name__}")
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
            if missing:
                with torch.inference_mode():
                    feats = self._encode_text(missing).detach().float().cpu()
                for t, f in zip(missing, feats):
                    self._text_cache[t] = f.clone()  # outside inference mode: a plain tensor
            if not texts:
                return torch.zeros(0, self.text_dim)
            return torch.stack([self._text_cache[t] for t in texts])  # a copy: callers may modify it

    @property
    def text_cache_size(self) -> int:
        """Number of distinct instruction strings encoded so far."""
        return len(self._text_cache)

    @abc.abstractmethod
    def _encode_images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` -> ``(N, vision_dim)`` (called under ``inference_mode``)."""

    @abc.abstractmethod
    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        """Distinct strings -> ``(N, text_dim)`` (called under ``inference_mode``)."""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, vision_dim={self.vision_dim}, "
                f"text_dim={self.text_dim}, device={self.device})")
