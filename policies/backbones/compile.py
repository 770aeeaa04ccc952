"""Optional ``torch.compile`` of a backbone's frozen vision tower(s): :func:`compile_vision`.

Modes (:data:`COMPILE_MODES`; ``compile_vision=`` of :func:`~policies.backbones.make_backbone` and
:func:`~policies.vla.build_vla_policy`, ``--policy-arg compile_vision=MODE`` on the command line):

===================  ==============================================================================================
mode                 what runs
===================  ==============================================================================================
``off``              nothing is compiled (the default)
``default``          ``torch.compile`` default mode: inductor (C++/OpenMP kernels on CPU, which needs a C++
                     compiler; Triton kernels on CUDA)
``reduce-overhead``  ``torch.compile(mode="reduce-overhead")``: inductor + CUDA graphs (cudagraph trees) on CUDA;
                     on any other device it is plain inductor, the same as ``default``
``cuda-graph``       ``torch.compile(backend="cudagraphs")``: the traced graph captured as CUDA graphs and replayed,
                     without inductor code generation (eager's kernels, so no Triton/C++ compile and eager's
                     numerics); CUDA only: any other device is a :class:`~foundations.errors.ConfigError`
===================  ==============================================================================================

What is compiled: the modules :meth:`Backbone.vision_modules() <policies.backbones.base.Backbone.vision_modules>`
names (Kosmos-2's ``vision_model``, the CLIP image model when attached, the lite backbone's EfficientNet-Lite0
feature extractor), in place, with ``nn.Module.compile``: the module objects, their weights, state dicts, LoRA
splits and exports are untouched; only calls of those modules go through compiled code. Instruction encoders and
language models stay eager. A compiled backbone must not be shared with a caller that asked for an eager one:
:func:`~policies.backbones.make_backbone` and the ``robovlms`` backbone cache put the mode in their cache keys.

Batch sizes (``dynamic=None``, torch's automatic dynamic shapes): the first call compiles a graph specialised to
its batch size; the first call at another batch size recompiles once with the batch dimension symbolic, and that
graph serves every batch size >= 2; batch 1 keeps its own graph (torch specialises sizes 0 and 1). A sweep over
batch sizes 1..N therefore compiles at most three graphs, two when batch 1 comes first, which is what the warm-up
does (batch 1, then 2), so no ``act()`` pays a compile. On CUDA, the CUDA-graph modes also record one graph per
distinct batch size on its first use (a capture, not a compile). The multimodal stream calls ``vision_model``
with other arguments, so it compiles its own graphs (in the warm-up when it is asked for).

Outputs: inductor fuses and reorders floating-point operations, so outputs equal eager ones up to rounding
(float32 on CPU: ~1e-6 absolute on the toy models and lite; bf16 on CUDA: within bf16 rounding). ``cuda-graph``
replays eager's kernels. Actions then differ by ~1e-6 for the same frames, which a closed-loop episode can grow
(another pose, other frames): a compiled run is close to an eager one, not bit-identical.

Cost: compiling happens once per process (each evaluation worker compiles its own; inductor's on-disk cache,
``TORCHINDUCTOR_CACHE_DIR``, makes later ones a few seconds). Measured on 2 busy CPU cores, one thread
(``bench/compile_vision_cpu.py``): compile + warm-up ~26 s for tiny-kosmos2 and ~50 s for lite with a cold cache,
2-4 s with a warm one; the ``image`` stream at batch 1 then takes ~0.85x (tiny-kosmos2) and ~0.75x (lite) of
eager's time.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from foundations.errors import ConfigError
from policies.backbones.base import STREAMS, Backbone

#: The accepted ``compile_vision`` modes (module doc).
COMPILE_MODES = ("off", "default", "reduce-overhead", "cuda-graph")
#: Modes that only exist on CUDA (a ConfigError elsewhere).
CUDA_ONLY_MODES = ("cuda-graph",)
#: ``torch.compile`` keyword arguments of each mode (``dynamic=None``: automatic dynamic batch, module doc).
_COMPILE_KWARGS: dict[str, dict[str, Any]] = {
    "default": {"mode": "default"},
    "reduce-overhead": {"mode": "reduce-overhead"},
    "cuda-graph": {"backend": "cudagraphs"},
}
#: Instruction used to warm up ``frame+instruction`` streams.
WARMUP_INSTRUCTION = "warm up"


def check_compile_mode(mode: Any, device: str | torch.device = "cpu", argument: str = "compile_vision", *,
                       backend: str | None = None) -> str:
    """``mode`` if it is one of :data:`COMPILE_MODES` and usable on ``device`` (cheap: checked before any model is
    built).

    Args:
        backend: the ``torch.compile`` backend replacing the mode's (:func:`compile_vision`), if any.

    Raises:
        ConfigError: not a string, an unknown mode (the message lists the valid ones), a CUDA-only mode
            (:data:`CUDA_ONLY_MODES`) for a non-CUDA device, or an inductor mode on the CPU where no C++ compiler
            is found (:func:`cpp_compiler`); one line naming ``argument``.
    """
    if not isinstance(mode, str) or mode not in COMPILE_MODES:
        raise ConfigError(f"{argument} must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if mode == "off":
        return mode
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{argument}={mode}: unusable device {device!r}") from None
    if mode in CUDA_ONLY_MODES and dev.type != "cuda":
        raise ConfigError(f"{argument}={mode} captures CUDA graphs and needs a CUDA device, not {dev} "
                          f"(reduce-overhead runs plain inductor off CUDA)")
    inductor = (backend or _COMPILE_KWARGS[mode].get("backend", "inductor")) == "inductor"
    if inductor and dev.type == "cpu" and cpp_compiler() is None:
        raise ConfigError(f"{argument}={mode}: inductor needs a C++ compiler on the CPU and none was found (install "
                          f"g++ or set CXX), or use {argument}=off")
    return mode


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would use on the CPU (``torch._inductor.config.cpp.cxx``, ``$CXX``, ``g++``), or
    ``None`` when there is none (inductor's CPU kernels then cannot be built)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # noqa: BLE001 - a private API: any failure means "not found", checked by hand below
        import os

        return shutil.which(os.environ.get("CXX") or "g++")


def compile_vision(backbone: Backbone, mode: str = "off", *, warmup: bool | Sequence[str] = True,
                   backend: str | None = None) -> Backbone:
    """Compile ``backbone``'s frozen vision tower(s) in place (module doc) and return ``backbone``.

    Args:
        backbone: a backbone whose :meth:`~policies.backbones.base.Backbone.vision_modules` names at least one
            module. Never a shared eager one (e.g. from ``make_backbone(...)`` without ``compile_vision``): every
            user of that object would run compiled code; ask ``make_backbone(..., compile_vision=mode)`` instead.
        mode: one of :data:`COMPILE_MODES`; ``"off"`` does nothing (it does not undo an earlier compile).
        warmup: frame streams to encode once at batch 1 and once at batch 2 right after compiling, so the graphs
            are compiled here rather than in the first ``act()`` (module doc); ``True``: every ``frame`` /
            ``frame+instruction`` stream the backbone offers (the latter with :data:`WARMUP_INSTRUCTION`, whose
            instruction features are then cached); ``False`` or ``()``: none (compiled on first use).
        backend: for tests: a ``torch.compile`` backend replacing the mode's (e.g. ``"aot_eager"``: no code
            generation, so no C++ compile); the device check of ``mode`` still applies.

    Raises:
        ConfigError: an unknown mode, a CUDA-only mode off CUDA, a backbone with no vision tower to compile,
            one already compiled with another mode, inductor on the CPU without a C++ compiler, or a ``warmup``
            stream the backbone does not offer.
    """
    check_compile_mode(mode, backbone.device, backend=backend)
    if mode == "off":
        return backbone
    done = getattr(backbone, "vision_compile", "off")
    if done != "off":
        if done == mode:
            return backbone
        raise ConfigError(f"compile_vision: backbone {backbone.name!r} is already compiled with {done!r}, not {mode!r}")
    modules = backbone.vision_modules()
    if not modules:
        raise ConfigError(f"compile_vision={mode}: backbone {backbone.name!r} has no vision tower to compile")
    kwargs = {"backend": backend} if backend is not None else dict(_COMPILE_KWARGS[mode])
    streams = _warmup_streams(backbone, warmup)
    for module in modules.values():
        module.compile(dynamic=None, **kwargs)
    backbone.vision_compile = mode
    if streams:
        needs_text = any(STREAMS[s][0] == "frame+instruction" for s in streams)
        frames = np.zeros((2, 224, 224, 3), dtype=np.uint8)
        for n in (1, 2):
            backbone.encode_frames(frames[:n], streams, WARMUP_INSTRUCTION if needs_text else None)
    return backbone


def frame_streams(backbone: Backbone) -> tuple[str, ...]:
    """The ``frame`` and ``frame+instruction`` streams ``backbone`` offers (those that run its vision tower)."""
    return tuple(s for s in backbone.stream_dims() if s in STREAMS and STREAMS[s][0] != "instruction")


def _warmup_streams(backbone: Backbone, warmup: bool | Sequence[str]) -> tuple[str, ...]:
    offered = frame_streams(backbone)
    if warmup is True:
        return offered
    if warmup is False:
        return ()
    streams = (warmup,) if isinstance(warmup, str) else tuple(warmup)
    unknown = [s for s in streams if s not in offered]
    if unknown:
        raise ConfigError(f"compile_vision: cannot warm up {', '.join(unknown)}: backbone {backbone.name!r} has the "
                          f"frame streams {', '.join(offered)}")
    return streams


__all__ = ["COMPILE_MODES", "CUDA_ONLY_MODES", "WARMUP_INSTRUCTION", "check_compile_mode", "compile_vision",
           "cpp_compiler", "frame_streams"]
