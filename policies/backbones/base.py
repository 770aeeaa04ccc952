"""The frozen feature-extractor interface shared by ``lite``, ``kosmos2``, ``tiny-kosmos2`` and the RoboVLMs
backbone.

A backbone turns camera frames and instructions into feature vectors, organised in named **streams**
(:data:`STREAMS`); an action head (:mod:`policies.heads`) names the streams it reads and only ever sees those
vectors, so features can be cached on disk for training. Backbones are frozen: eval mode, ``requires_grad`` off,
every call under ``torch.inference_mode``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from foundations.errors import MobileVLAError
from foundations.lru import MAX_INSTRUCTIONS, LRUCache

#: Feature streams: name -> (kind, what the team's models read). ``frame`` streams are per camera frame,
#: ``frame+instruction`` ones per frame given the instruction, ``instruction`` ones per instruction string.
STREAMS: dict[str, tuple[str, str]] = {
    "image": ("frame", "Kosmos-2 vision_model(pixel_values).pooler_output (1024-d)"),
    "image_mean": ("frame", "Kosmos-2 vision_model(pixel_values).last_hidden_state.mean(1), no post-layernorm "
                            "(1024-d): the grounder + MLP policies' vision feature (EdgeGroundVLA Stage1Encoder)"),
    "clip_image": ("frame", "open_clip ViT-B-32 encode_image (512-d)"),
    "multimodal": ("frame+instruction", "Kosmos-2 language model over image + instruction, mean over tokens (2048-d)"),
    "action_token": ("frame+instruction", "Kosmos-2 language model hidden state at RoboVLMs' action token (2048-d)"),
    "text": ("instruction", "Kosmos-2 text_model(input_ids).last_hidden_state.mean(1) (2048-d)"),
    "clip_text": ("instruction", "CLIP text tower pooler_output (openai/clip-vit-base-patch32, 512-d)"),
}


#: How to obtain a stream a backbone lacks (error messages).
STREAM_REMEDIES = {
    "clip_image": "open_clip ViT-B-32 weights (a checkpoint with clip_model.* tensors, or clip_path=FILE|DIR)",
    "clip_text": "CLIP text weights (a checkpoint with clip_text.* tensors, or clip_path=DIR)",
    "action_token": "the robovlms policy on a Kosmos-2 backbone (kosmos2 or tiny-kosmos2)",
}


class BackboneInputError(MobileVLAError, ValueError):
    """Images, texts or stream names passed to a backbone are unusable (wrong type, dtype, shape or name)."""


class MissingStreamError(MobileVLAError, ValueError):
    """A head needs a feature stream this backbone does not provide (the message says how to provide it)."""


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


def inference_dtype(device: str | torch.device) -> torch.dtype:
    """Inference dtype on ``device``: float32 off CUDA; bfloat16 on CUDA where supported, else float16."""
    if torch.device(device).type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def device_key(device: str | torch.device) -> str:
    """``"cuda:0/torch.bfloat16"``: the device and inference dtype that every backbone cache key includes, so one
    model object is never shared across devices or dtypes."""
    return f"{torch.device(device)}/{inference_dtype(device)}"


def autocast(device: str | torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for inference on ``device``: ``torch.autocast`` to :func:`inference_dtype` on CUDA; on any
    other device nothing (float32, bit-identical to running without it)."""
    device = torch.device(device)
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=inference_dtype(device))


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Put ``module`` in eval mode with every parameter's ``requires_grad`` off; returns it."""
    module.eval()
    module.requires_grad_(False)
    return module


class Backbone:
    """A frozen image + text encoder offering named feature streams.

    Attributes:
        name: registry name (``"lite"``, ``"kosmos2"``, ``"tiny-kosmos2"``).
        device: torch device the networks run on.

    Subclasses either set ``vision_dim`` / ``text_dim`` and implement :meth:`_encode_images` /
    :meth:`_encode_text` (the ``image`` and ``text`` streams), or override :meth:`stream_dims`,
    :meth:`_encode_frames` and :meth:`_encode_instruction` for more streams. Instruction features are cached per
    (stream, string) in an LRU of ``4 x`` :data:`~foundations.lru.MAX_INSTRUCTIONS` entries (an instruction per
    stream each); frame features are never cached here.
    """

    name: str = "backbone"
    vision_dim: int = 0
    text_dim: int = 0
    #: How the vision tower(s) were compiled (:func:`policies.backbones.compile.compile_vision`); ``"off"``: eager.
    vision_compile: str = "off"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self._text_cache: LRUCache[tuple[str, str], torch.Tensor] = LRUCache(MAX_INSTRUCTIONS * 4)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ streams
    def stream_dims(self) -> dict[str, int]:
        """Widths of the streams this backbone provides (stream name -> int)."""
        return {"image": int(self.vision_dim), "text": int(self.text_dim)}

    def width(self, streams: Sequence[str]) -> int:
        """Width of the concatenation of ``streams``.

        Raises:
            MissingStreamError: a stream this backbone does not provide.
        """
        dims = self.stream_dims()
        missing = [s for s in streams if s not in dims]
        if missing:
            raise MissingStreamError(self.missing_stream_message(missing))
        return sum(dims[s] for s in streams)

    def missing_stream_message(self, streams: Sequence[str]) -> str:
        """Why ``streams`` are unavailable and how to provide them (:data:`STREAM_REMEDIES`)."""
        needs = "; ".join(f"{s} needs {STREAM_REMEDIES[s]}" for s in streams if s in STREAM_REMEDIES)
        return (f"backbone {self.name!r} has no {', '.join(streams)} feature stream (it offers "
                f"{', '.join(self.stream_dims())})" + (f"; {needs}" if needs else ""))

    def _check_streams(self, streams: Sequence[str], kind: str) -> tuple[str, ...]:
        if isinstance(streams, str):
            raise BackboneInputError("streams must be a sequence of stream names, not a single str")
        streams = tuple(streams)
        for s in streams:
            if s not in STREAMS:
                raise BackboneInputError(f"unknown feature stream {s!r}; streams: {', '.join(STREAMS)}")
            if (STREAMS[s][0] == "instruction") != (kind == "instruction"):
                raise BackboneInputError(f"{s!r} is a{'n' if kind == 'instruction' else ''} "
                                         f"{STREAMS[s][0]} stream, not a{'n' if kind == 'instruction' else ''} "
                                         f"{kind} stream")
        self.width(streams)
        return streams

    # ------------------------------------------------------------------ frames
    def encode_frames(self, images: Any, streams: Sequence[str] = ("image",), instruction: str | None = None
                      ) -> torch.Tensor:
        """Encode frames into the concatenation of ``streams``.

        Args:
            images: uint8 RGB ``(N, H, W, 3)`` (numpy or torch; ``(H, W, 3)`` is treated as ``N = 1``), any
                ``H, W``: the backbone resizes to its own input size and normalises itself.
            streams: per-frame stream names (:data:`STREAMS` kinds ``frame`` / ``frame+instruction``).
            instruction: the episode's instruction; required by ``frame+instruction`` streams.

        Returns:
            float32 ``(N, width(streams))`` on CPU.

        Raises:
            BackboneInputError: wrong dtype or shape, an unknown stream, or a missing instruction.
            MissingStreamError: a stream this backbone does not provide.
        """
        streams = self._check_streams(streams, "frame")
        arr = as_uint8_nhwc(images)
        if instruction is None and any(STREAMS[s][0] == "frame+instruction" for s in streams):
            raise BackboneInputError(f"streams {streams} depend on the instruction: pass instruction=")
        if instruction is not None and not isinstance(instruction, str):
            raise BackboneInputError(f"instruction must be str, got {type(instruction).__name__}")
        if not streams:
            return torch.zeros(len(arr), 0)
        with torch.inference_mode(), autocast(self.device):
            parts = self._encode_frames(arr, streams, instruction)
            out = torch.cat([parts[s].float().cpu() for s in streams], dim=-1)
        # clone outside inference mode: a plain tensor can feed a trainable head (inference tensors cannot)
        return out.clone()

    def encode_images(self, images: Any) -> torch.Tensor:
        """The ``image`` stream: float32 ``(N, vision_dim)`` on CPU (see :meth:`encode_frames`)."""
        return self.encode_frames(images, ("image",))

    def _encode_frames(self, images: np.ndarray, streams: tuple[str, ...], instruction: str | None
                       ) -> dict[str, torch.Tensor]:
        """uint8 ``(N, H, W, 3)`` -> ``{stream: (N, width)}`` (under ``inference_mode``). Default: ``image``."""
        return {"image": self._encode_images(images)}

    def _encode_images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` -> ``(N, vision_dim)`` (called under ``inference_mode``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ instructions
    def encode_instruction(self, texts: Sequence[str], streams: Sequence[str] = ("text",)) -> torch.Tensor:
        """Encode instructions into the concatenation of ``streams``, float32 ``(N, width(streams))`` on CPU;
        cached per (stream, distinct string), bounded (:attr:`text_cache_size`).

        Raises:
            BackboneInputError: ``texts`` is a bare string or holds a non-string; an unknown stream.
            MissingStreamError: a stream this backbone does not provide.
        """
        if isinstance(texts, str):
            raise BackboneInputError("encode_text expects a list of strings, not a single str")
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise BackboneInputError(f"instructions must be str, got {type(t).__name__}")
        streams = self._check_streams(streams, "instruction")
        with self._lock:
            found: dict[tuple[str, str], torch.Tensor] = {}  # this call's, whatever the LRU drops meanwhile
            for stream in streams:
                missing = []
                for t in dict.fromkeys(texts):
                    cached = self._text_cache.get((stream, t))
                    if cached is None:
                        missing.append(t)
                    else:
                        found[(stream, t)] = cached
                if missing:
                    with torch.inference_mode():
                        feats = self._encode_instruction(stream, missing).detach().float().cpu()
                    with torch.inference_mode(False):  # a plain tensor, even when called from encode_frames
                        for t, f in zip(missing, feats):
                            found[(stream, t)] = self._text_cache[(stream, t)] = f.clone()
            if not texts or not streams:
                return torch.zeros(len(texts), self.width(streams))
            # a copy: callers may modify it
            return torch.stack([torch.cat([found[(s, t)] for s in streams]) for t in texts])

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """The ``text`` stream: float32 ``(N, text_dim)`` on CPU, cached per distinct string."""
        return self.encode_instruction(texts, ("text",))

    @property
    def text_cache_size(self) -> int:
        """Number of (stream, instruction) features held (at most ``4 x`` :data:`~foundations.lru.MAX_INSTRUCTIONS`)."""
        return len(self._text_cache)

    def _encode_instruction(self, stream: str, texts: list[str]) -> torch.Tensor:
        """Distinct strings -> ``(N, width)`` for one instruction stream. Default: ``text``."""
        return self._encode_text(texts)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        """Distinct strings -> ``(N, text_dim)`` (called under ``inference_mode``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ compilation
    def vision_modules(self) -> dict[str, torch.nn.Module]:
        """The frozen vision tower(s) the frame streams run through, name -> module, each invoked as a module call
        (``module(x)``, so ``nn.Module.compile`` takes effect): what
        :func:`~policies.backbones.compile.compile_vision` compiles. Default: none."""
        return {}

    # ------------------------------------------------------------------ LoRA
    def image_split(self, layers: int) -> Any:
        """The ``image`` stream cut below its top ``layers`` layers, for LoRA training
        (:class:`policies.backbones.lora.ImageSplit`).

        Raises:
            ConfigError: this backbone offers no such split, or ``layers`` is out of range.
        """
        from foundations.errors import ConfigError

        raise ConfigError(f"backbone {self.name!r} cannot be LoRA-adapted (lite, kosmos2 and tiny-kosmos2 can)")

    def __repr__(self) -> str:
        compiled = f", vision_compile={self.vision_compile!r}" if self.vision_compile != "off" else ""
        return (f"{type(self).__name__}(name={self.name!r}, streams={self.stream_dims()}, device={self.device}"
                f"{compiled})")
