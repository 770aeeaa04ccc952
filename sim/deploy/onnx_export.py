"""Export a VLA policy to ONNX (FP32 or FP16) for the Jetson, check the artifact against PyTorch, and give a
latency-budget verdict (the library of ``python -m sim.export``).

Writes ``DIR/model.onnx`` and its sidecar ``DIR/model.json`` (see :mod:`policies.onnx_artifact` for the graph's
inputs/outputs), each atomically (:func:`foundations.files.atomic_write`; model first, sidecar last), only
after the numerical check passed. The sidecar records the inputs, outputs, image normalisation, window, chunk,
action scale and post-processing settings, backbone name, source checkpoint (or seed of a random head), the
parity figures and, with ``--latency-budget-ms``, the latency verdicts.

**Numerical check** (:func:`check_parity`): the exported graph and the PyTorch policy run on the same recorded
observations (an expert episode in the simulator, or ``--observations FILE.npz``), step by step exactly as
deployed (history window, padding at the episode start); every predicted chunk is compared, and so is every
frame's image feature (full kind). A dynamic-batch call (batch 3, two new frames, a history of 3) is compared
with the wrapped PyTorch module too. Bounds (max abs difference, normalised action units; features in backbone
units): FP32 actions 1e-4, features 1e-3; FP16 actions 5e-2, features 0.25 (FP16 is reported against the FP32
PyTorch policy). A failure raises :class:`ParityError` and nothing is written.

**Latency** (:func:`measure_latency`): p50/p95 milliseconds per ``act()`` step (everything the policy does per
step: image encoding, head, post-processing; the instruction's text feature is computed at reset, once per
episode) of the PyTorch policy and of the artifact with onnxruntime on CPU; the verdict is ``PASS`` when p95 is
within the budget (the robot's loop: 10 Hz = 100 ms).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import logging
import time
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from envs import ENV_ID
from envs.settings import ImageSize
from foundations.errors import ConfigError, MobileVLAError
from foundations.files import atomic_write, atomic_write_json
from policies.onnx_artifact import (
    ARTIFACT_FORMAT,
    ARTIFACT_FORMAT_VERSION,
    FULL_INPUTS,
    FULL_OUTPUTS,
    HEAD_INPUTS,
    HEAD_OUTPUTS,
    KIND_FULL,
    KIND_HEAD_ONLY,
    MODEL_NAME,
    ArtifactSpec,
    OrtRunner,
    build_source_policy,
    file_sha256,
    read_spec,
    resolve_model_path,
    sidecar_path,
)
from policies.onnx_policy import OnnxPolicy
from sim.evaluation.episode import Episode

logger = logging.getLogger(__name__)

#: Max abs difference bounds ``(actions, features)`` per precision; actions in normalised units (action / 1.15).
#: FP32 must match to rounding error (the issue's 1e-4). FP16 only has to stay below the robot's key dead-zone
#: (0.15 of 1.15 = 0.13 normalised, :data:`envs.keys.DEAD_ZONE`): 0.1. The bundled hybrid head, which
#: differences consecutive frames' features, turns the FP16 rounding of the image features (about 0.02) into
#: 0.06 on its actions; ``--verify`` shows whether such a difference changes behaviour in closed loop.
PARITY_BOUNDS = {"fp32": (1e-4, 1e-3), "fp16": (0.1, 0.25)}
#: ONNX opset of the exported graphs.
DEFAULT_OPSET = 17
#: Observations recorded for the numerical check / latency when none are given.
DEFAULT_CHECK_STEPS = 12
DEFAULT_LATENCY_STEPS = 30
#: Backbones whose image encoder goes into the graph.
FULL_EXPORT_BACKBONES = ("lite",)


class ExportError(MobileVLAError, RuntimeError):
    """The policy could not be exported (unsupported backbone, exporter failure)."""


class ParityError(MobileVLAError, RuntimeError):
    """The exported artifact's outputs differ from PyTorch's beyond the bound."""


# ------------------------------------------------------------------------------------------- graphs


class PerStepGraph(nn.Module):
    """Lite frame encoder + head as one per-step graph (the :data:`~policies.onnx_artifact.KIND_FULL` layout).

    ``forward(frames uint8 (B, K, H, W, 3), history float32 (B, P, Dv), text float32 (B, Dt))`` ->
    ``(actions float32 (B, chunk, action_dim), features float32 (B, K, Dv))``, ``Dv`` the head's frame streams
    (:class:`~policies.backbones.lite.LiteFrameEncoder`). Preprocessing is the lite backbone's (``(x - mean) /
    std`` in pixel units, no resize: ``H, W`` must be the encoder's size). ``dtype=torch.float16`` computes in
    half precision (inputs/outputs stay float32/uint8).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, effective_window: int, mean: Sequence[float],
                 std: Sequence[float], dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.encoder, self.head, self.window, self.compute_dtype = encoder, head, int(effective_window), dtype
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor, history: torch.Tensor, text: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        b, k = frames.shape[0], frames.shape[1]
        x = frames.reshape(-1, frames.shape[2], frames.shape[3], frames.shape[4]).permute(0, 3, 1, 2).float()
        x = (x - self.mean.float()) / self.std.float()
        feats = self.encoder(x.to(self.compute_dtype)).reshape(b, k, -1)
        seq = torch.cat([history.to(self.compute_dtype), feats], dim=1)
        window = torch.cat([seq[:, :1].expand(-1, self.window, -1), seq], dim=1)[:, -self.window:]
        actions = self.head(window, text.to(self.compute_dtype))
        return actions.float(), feats.float()


class HeadGraph(nn.Module):
    """The head alone (``KIND_HEAD_ONLY``): ``(vision (B, E, Dv), text (B, Dt))`` -> ``actions (B, chunk, A)``;
    a head that reads no instruction feature (``Dt = 0``) takes ``vision`` alone."""

    def __init__(self, head: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.head, self.compute_dtype = head, dtype

    def forward(self, vision: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        if text is None:
            text = vision.new_zeros(vision.shape[0], 0)
        return self.head(vision.to(self.compute_dtype), text.to(self.compute_dtype)).float()


def _effective_window(policy: Any) -> int:
    return min(int(policy.window_size), int(policy.head.window_size))


def build_graph(policy: Any, *, head_only: bool, fp16: bool) -> nn.Module:
    """The module to export for a :class:`~policies.vla.VLAPolicy` (a copy: the policy is left untouched).

    Raises:
        ExportError: a full export of a backbone whose preprocessing cannot go into a graph.
    """
    import copy

    from policies.backbones import efficientnet_lite as effnet

    dtype = torch.float16 if fp16 else torch.float32
    head = copy.deepcopy(policy.head).float().eval()
    if head_only:
        graph: nn.Module = HeadGraph(head, dtype)
    else:
        if policy.backbone.name not in FULL_EXPORT_BACKBONES:
            raise ExportError(f"backbone {policy.backbone.name!r} cannot go into the graph (its Hugging Face "
                              "processor is Python); export the head alone with --head-only")
        try:
            encoder = copy.deepcopy(policy.backbone.frame_encoder(policy.frame_streams)).float().eval()
        except ValueError as exc:
            raise ExportError(f"{policy.head.head_name}: {exc}; export the head alone with --head-only") from None
        graph = PerStepGraph(encoder, head, _effective_window(policy), effnet.INPUT_MEAN, effnet.INPUT_STD, dtype)
    graph = graph.to("cpu", dtype).eval().requires_grad_(False)  # traced on the CPU whatever the policy's device
    return graph


def _example_inputs(policy: Any, head_only: bool, batch: int = 1, new: int = 1, past: int = 2,
                    seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    dv, dt = policy.head.frame_dim, policy.head.instruction_dim
    text = torch.randn(batch, dt, generator=gen)
    if head_only:
        frames = _effective_window(policy) - (0 if policy.history.pad else 1)  # an unpadded window varies in length
        vision = torch.rand(batch, frames, dv, generator=gen) * 6
        return (vision, text) if dt else (vision,)
    from policies.backbones import efficientnet_lite as effnet

    size = effnet.INPUT_SIZE
    frames = torch.randint(0, 256, (batch, new, size, size, 3), dtype=torch.uint8, generator=gen)
    return frames, torch.rand(batch, past, dv, generator=gen) * 6, text


@contextlib.contextmanager
def _export_context() -> Iterator[None]:
    """Quiet the legacy exporter and keep attention layers off their fused (non-exportable) fast path."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def export_graph(graph: nn.Module, example: tuple[torch.Tensor, ...], head_only: bool, path: Path,
                 opset: int = DEFAULT_OPSET, pad_history: bool = True) -> None:
    """Write ``graph`` to ``path`` as ONNX (TorchScript exporter, constant folding, dynamic batch/K/P, and the
    window length of an unpadded head-only graph).

    Raises:
        ExportError: the exporter failed.
    """
    if head_only:
        names_in, names_out = HEAD_INPUTS[:len(example)], HEAD_OUTPUTS
        vision_axes = {0: "batch"} if pad_history else {0: "batch", 1: "frames"}
        dynamic = {"vision": vision_axes, "text": {0: "batch"}, "actions": {0: "batch"}}
    else:
        names_in, names_out = FULL_INPUTS, FULL_OUTPUTS
        dynamic = {"frames": {0: "batch", 1: "new_frames"}, "history": {0: "batch", 1: "past_frames"},
                   "text": {0: "batch"}, "actions": {0: "batch"}, "features": {0: "batch", 1: "new_frames"}}
    dynamic = {k: v for k, v in dynamic.items() if k in (*names_in, *names_out)}
    buf = io.BytesIO()
    try:
        with _export_context(), contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(graph, example, buf, dynamo=False, opset_version=opset, input_names=list(names_in),
                              output_names=list(names_out), dynamic_axes=dynamic, do_constant_folding=True)
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:500]}") from exc
    path.write_bytes(buf.getvalue())


# -------------------------------------------------------------------------------------- observations


def record_observations(steps: int = DEFAULT_CHECK_STEPS, seed: int = 0, scenario: str | None = None,
                        image_size: ImageSize = ImageSize(224, 224)) -> list[dict[str, Any]]:
    """Record ``steps`` observations of the expert driving in the simulator (deterministic for a seed).

    Returns:
        A list of observations ``{"image": uint8 (H, W, 3), "instruction": str, "state": float32 (6,)}`` from
        one episode (the next seed's episode continues if it ends early).
    """
    import gymnasium as gym

    from policies.registry import make_policy

    kwargs: dict[str, Any] = {"image_size": ImageSize.parse(image_size)}
    if scenario:
        kwargs["scenario"] = scenario
    env = gym.make(ENV_ID, **kwargs)
    expert = make_policy("expert")
    out: list[dict[str, Any]] = []
    try:
        for episode_index in itertools.count():
            episode = Episode(env, seed + episode_index)
            expert.reset(episode.instruction, episode.reset_info)
            for step in episode.run(expert.act):
                out.append({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in step.obs.items()})
                if len(out) >= steps:
                    return out
    finally:
        env.close()
    return out


def load_observations(path: str | Path) -> list[dict[str, Any]]:
    """Observations from an ``.npz`` with ``images`` uint8 ``(N, H, W, 3)`` and optional ``instructions`` (N,) str.

    Raises:
        FileNotFoundError: no file. ValueError: missing ``images`` or a wrong dtype/shape.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"observations file not found: {path}")
    if not zipfile.is_zipfile(path):  # np.load would take any other bytes for a pickle and say so
        raise ConfigError(f"{path}: not an .npz file (np.savez of an 'images' array (N, H, W, 3) uint8)")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "keys"):  # a bare .npy array
                raise ConfigError(f"{path}: must be an .npz with an 'images' array (N, H, W, 3) uint8")
            if "images" not in data:
                raise ConfigError(f"{path}: needs an 'images' array (N, H, W, 3) uint8; has {list(data.keys())}")
            images = data["images"]
            instr = data.get("instructions")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # not an .npz, truncated, pickled objects
        raise ConfigError(f"{path}: not a readable .npz of observations ({type(exc).__name__}: {exc})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError(f"{path}: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    default = "Navigate around obstacles and reach the front of the beverage bottle on the left"
    return [{"image": images[i], "instruction": str(instr[i]) if instr is not None else default,
             "state": np.zeros(6, np.float32)} for i in range(len(images))]


# -------------------------------------------------------------------------------------------- parity


@dataclasses.dataclass
class ParityReport:
    """Result of :func:`check_parity`. Differences are max abs over every step and component.

    Attributes:
        precision: ``"fp32"`` / ``"fp16"``.
        steps: observations stepped through.
        max_abs_diff_actions: predicted chunks, normalised action units.
        max_abs_diff_features: per-frame image features (full kind; ``None`` for head-only).
        max_abs_diff_batch: the dynamic-batch call against the wrapped PyTorch module.
        bound_actions, bound_features: the bounds applied.
        passed: every difference within its bound.
    """

    precision: str
    steps: int
    max_abs_diff_actions: float
    max_abs_diff_features: float | None
    max_abs_diff_batch: float
    bound_actions: float
    bound_features: float
    passed: bool

    def summary(self) -> str:
        """One line: the differences against their bounds and ``PASS`` / ``FAIL``."""
        feat = ("" if self.max_abs_diff_features is None else
                f", features {self.max_abs_diff_features:.3g} (bound {self.bound_features:g})")
        return (f"{self.precision}: max abs diff actions {self.max_abs_diff_actions:.3g} "
                f"(bound {self.bound_actions:g}){feat}, batch call "
                f"{self.max_abs_diff_batch:.3g} over {self.steps} steps: {'PASS' if self.passed else 'FAIL'}")


def check_parity(model_path: str | Path, reference: Any, observations: Sequence[dict[str, Any]], *,
                 spec: ArtifactSpec | None = None, bounds: tuple[float, float] | None = None,
                 raise_on_failure: bool = True, num_threads: int | None = None) -> ParityReport:
    """Compare an exported graph with the PyTorch policy it came from.

    Both run ``execution="first"`` without post-processing over ``observations`` (one episode, from its first
    step); every step's predicted chunk (float32 ``(chunk, action_dim)``) is compared, and for the full kind
    every frame's image feature (the graph's ``features`` vs ``backbone.encode_images``). A dynamic-batch call
    (batch 3) is compared with the wrapped PyTorch module (FP32) too. ``reference`` is reset (its episode state
    is lost); its execution mode is restored afterwards.

    Args:
        model_path: the ``.onnx`` file (its sidecar is read unless ``spec`` is given).
        reference: the source :class:`~policies.vla.VLAPolicy` (FP32 PyTorch).
        observations: at least one observation dict.
        bounds: ``(actions, features)`` max abs differences; default :data:`PARITY_BOUNDS` for the precision.
        raise_on_failure: raise :class:`ParityError` when a bound is exceeded.

    Raises:
        ParityError: a difference above its bound (or a non-finite output), with the figures.
        ConfigError: no observations.
    """
    if not observations:
        raise ConfigError("check_parity needs at least one observation")
    model_path = Path(model_path)
    spec = spec or read_spec(model_path)
    bound_a, bound_f = bounds or PARITY_BOUNDS.get(spec.precision, PARITY_BOUNDS["fp16"])
    runner = OrtRunner(model_path, num_threads=num_threads)
    exported = OnnxPolicy(model_path, spec=spec, runner=runner, execution="first", text_backbone=reference.backbone,
                          check_sha256=False)
    saved = (reference.execution, reference.postprocess)
    reference.execution = "first"
    instruction = str(observations[0].get("instruction", ""))
    diff_a, diff_f = 0.0, 0.0
    try:
        reference.reset(instruction)
        exported.reset(instruction)
        for obs in observations:
            reference.predict_normalized(obs)
            exported.predict_normalized(obs)
            ref_chunk, got_chunk = reference.last_chunk, exported.last_chunk
            diff_a = max(diff_a, _max_abs(ref_chunk, got_chunk))
            if spec.kind == KIND_FULL:
                ref_feat = reference.encode_frames(obs["image"], instruction).numpy()[0]
                diff_f = max(diff_f, _max_abs(ref_feat, exported.history.features()[-1].numpy()))
    finally:
        reference.execution, reference.postprocess = saved
    graph = build_graph(reference, head_only=spec.kind == KIND_HEAD_ONLY, fp16=False)
    example = _example_inputs(reference, spec.kind == KIND_HEAD_ONLY, batch=3, new=2, past=3, seed=1)
    with torch.inference_mode():
        ref_out = graph(*example)
    ref_out = ref_out if isinstance(ref_out, tuple) else (ref_out,)
    got = runner.run(dict(zip(spec.input_names, (t.numpy() for t in example))))
    diff_b = max(_max_abs(r.numpy(), got[name]) for r, name in zip(ref_out, spec.output_names))
    batch_bound = bound_a if spec.kind == KIND_HEAD_ONLY else max(bound_a, bound_f)
    passed = diff_a <= bound_a and diff_f <= bound_f and diff_b <= batch_bound
    report = ParityReport(spec.precision, len(observations), diff_a,
                          diff_f if spec.kind == KIND_FULL else None, diff_b, bound_a, bound_f, passed)
    if not passed and raise_on_failure:
        raise ParityError(f"{model_path}: exported graph does not match PyTorch: {report.summary()}")
    return report


def _max_abs(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    d = np.abs(a - b)
    return float(d.max()) if np.all(np.isfinite(d)) else float("inf")


def verify_artifact(model_path: str | Path, observations: Sequence[dict[str, Any]] | None = None, *,
                    bounds: tuple[float, float] | None = None, reference: Any | None = None,
                    num_threads: int | None = None) -> ParityReport:
    """Re-run the numerical check of an existing artifact against its source policy rebuilt from the sidecar.

    Raises:
        ParityError: outputs differ beyond the bound (e.g. the file was modified after export).
        ArtifactError: missing or invalid sidecar / model.
    """
    from policies.onnx_artifact import ArtifactNotFoundError

    model_path = resolve_model_path(model_path)
    if not model_path.is_file():
        raise ArtifactNotFoundError(f"exported model not found: {model_path}")
    spec = read_spec(model_path)
    reference = reference or build_source_policy(spec)
    if observations is None:
        observations = record_observations(DEFAULT_CHECK_STEPS, image_size=spec.image_size or ImageSize(224, 224))
    return check_parity(model_path, reference, observations, spec=spec, bounds=bounds, num_threads=num_threads)


# ------------------------------------------------------------------------------------------- latency


@dataclasses.dataclass
class LatencyStats:
    """Per-step latency of one runtime: p50/p95 ms over ``steps`` ``act()`` calls, and the budget verdict."""

    runtime: str
    p50_ms: float
    p95_ms: float
    steps: int
    budget_ms: float | None = None

    @property
    def verdict(self) -> str:
        """``"PASS"`` (p95 within budget), ``"FAIL"``, or ``"n/a"`` without a budget."""
        if self.budget_ms is None:
            return "n/a"
        return "PASS" if self.p95_ms <= self.budget_ms else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        """The fields and the :attr:`verdict`, JSON-serialisable."""
        return {**dataclasses.asdict(self), "verdict": self.verdict}


def measure_latency(policy: Any, observations: Sequence[dict[str, Any]], *, warmup: int = 3,
                    budget_ms: float | None = None, runtime: str = "") -> LatencyStats:
    """Step ``policy`` through ``observations`` (after ``warmup`` unmeasured steps, then a reset) and return
    p50/p95 of its per-step ``act()`` wall time in milliseconds.

    Raises:
        ConfigError: no observations.
    """
    if not observations:
        raise ConfigError("measure_latency needs at least one observation")
    instruction = str(observations[0].get("instruction", ""))
    policy.reset(instruction)
    for obs in list(observations)[:warmup]:
        policy.act(obs)
    policy.reset(instruction)
    for obs in observations:
        policy.act(obs)
    arr = np.asarray(policy.latencies_ms, dtype=np.float64)
    return LatencyStats(runtime or getattr(policy, "runtime", type(policy).__name__), float(np.percentile(arr, 50)),
                        float(np.percentile(arr, 95)), len(arr), budget_ms)


# -------------------------------------------------------------------------------------------- export


@dataclasses.dataclass
class ExportResult:
    """What :func:`export_policy` wrote and measured.

    Attributes:
        model_path, sidecar_path: the artifact.
        kind: ``"full"`` or ``"head-only"``. precision: ``"fp32"`` / ``"fp16"``.
        size_mb: model file size in MB (10^6 bytes).
        parity: the numerical check (``None`` if skipped).
        latency: runtime (``"pytorch"``, ``"onnx"``) -> :class:`LatencyStats` (empty unless measured).
        sidecar: the sidecar dict written.
        export_s: seconds spent in the exporter.
    """

    model_path: Path
    sidecar_path: Path
    kind: str
    precision: str
    size_mb: float
    parity: ParityReport | None
    latency: dict[str, LatencyStats]
    sidecar: dict[str, Any]
    export_s: float


def make_sidecar(policy: Any, *, kind: str, precision: str, opset: int, checkpoint: str | None, seed: int,
                 sha256: str, observations_source: str, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The artifact sidecar for a :class:`~policies.vla.VLAPolicy` (see :mod:`policies.onnx_artifact`)."""
    from policies.backbones import efficientnet_lite as effnet

    head, bb = policy.head, policy.backbone
    e = _effective_window(policy)
    dv, dt = head.frame_dim, head.instruction_dim
    full = kind == KIND_FULL
    inputs = ({"frames": {"dtype": "uint8", "shape": ["batch", "new_frames", effnet.INPUT_SIZE, effnet.INPUT_SIZE, 3],
                          "layout": "NKHWC RGB, frames not encoded yet, oldest first"},
               "history": {"dtype": "float32", "shape": ["batch", "past_frames", dv],
                           "layout": "features output by earlier calls, oldest first; past_frames may be 0"},
               "text": {"dtype": "float32", "shape": ["batch", dt], "layout": "instruction features"}}
              if full else
              {"vision": {"dtype": "float32", "shape": ["batch", e, dv],
                          "layout": "the padded window of backbone features, oldest first"},
               "text": {"dtype": "float32", "shape": ["batch", dt], "layout": "instruction features"}})
    if not dt:
        inputs.pop("text")  # a head that reads no instruction feature takes vision alone
    outputs = {"actions": {"dtype": "float32", "shape": ["batch", head.chunk_size, head.action_dim],
                           "units": "normalised (before post-processing)"}}
    if full:
        outputs["features"] = {"dtype": "float32", "shape": ["batch", "new_frames", dv],
                               "layout": "features of the input frames: append to history"}
    ckpt = policy.checkpoint
    return {
        "format": ARTIFACT_FORMAT, "format_version": ARTIFACT_FORMAT_VERSION, "kind": kind,
        "precision": precision, "opset": opset, "head": head.head_name, "head_class": type(head).__name__,
        "head_config": head.config.to_dict(), "output_activation": head.output_activation,
        "backbone": bb.name, "vision_dim": dv, "text_dim": dt, "frame_streams": list(policy.frame_streams),
        "instruction_streams": list(policy.instruction_streams), "pad_history": bool(policy.history.pad),
        "window_size": int(policy.window_size), "head_window": int(head.window_size), "effective_window": e,
        "chunk_size": head.chunk_size, "action_dim": head.action_dim,
        "execution": policy.execution, "ensemble_k": float(policy.chunks.ensembler.k),
        "postprocess": dataclasses.asdict(policy.postprocess), "action_scale": float(policy.postprocess.scale),
        "image": ({"size": [effnet.INPUT_SIZE, effnet.INPUT_SIZE], "dtype": "uint8", "channels": "RGB",
                   "normalisation": {"mean": list(effnet.INPUT_MEAN), "std": list(effnet.INPUT_STD),
                                     "units": "0..255 pixels, in the graph"},
                   "resize": "none: frames must already be 224x224"} if full else None),
        "text_encoder": {"runtime": "pytorch", "backbone": bb.name,
                         "when": "once per distinct instruction, at reset (cached): nothing per step"},
        "image_encoder": ({"runtime": "in graph", "model": "EfficientNet-Lite0", "streams": list(policy.frame_streams)}
                          if full else {"runtime": "pytorch", "backbone": bb.name,
                                        "streams": list(policy.frame_streams)}),
        "inputs": inputs, "outputs": outputs,
        "source": {"checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
                   "checkpoint_format": ckpt.format if ckpt is not None else None,
                   "seed": None if checkpoint else int(seed), **(source or {})},
        "sha256": sha256, "size_bytes": None, "observations": observations_source,
        "exported_with": {"torch": torch.__version__, "exporter": "torch.onnx (TorchScript)"},
    }


def export_policy(policy: str = "case2", *, out: str | Path, checkpoint: str | Path | None = None,
                  backbone: str = "auto", backbone_path: str | Path | None = None, clip_path: str | Path | None = None,
                  key_map: str | Path | None = None, config: str | Path | None = None, fp16: bool = False,
                  head_only: bool = False, window_size: int | None = None, execution: str = "first",
                  action_dim: int | None = None, seed: int = 0, opset: int = DEFAULT_OPSET, check: bool = True,
                  observations: Sequence[dict[str, Any]] | str | Path | None = None,
                  check_steps: int = DEFAULT_CHECK_STEPS, bounds: tuple[float, float] | None = None,
                  latency_budget_ms: float | None = None, latency_steps: int = DEFAULT_LATENCY_STEPS,
                  num_threads: int | None = None, model_name: str = MODEL_NAME,
                  source_policy: Any | None = None, policy_args: Mapping[str, Any] | None = None,
                  device: str = "cpu") -> ExportResult:
    """Export a VLA policy to ``out/model.onnx`` + ``out/model.json`` and check it.

    Args:
        policy: head name (``"case1"`` ... ``"hybrid"``).
        out: output folder (created).
        checkpoint: head weights; ``None`` = the bundled weights of ``policy`` on ``backbone`` if they exist
            (:func:`policies.checkpoints.default_checkpoint`), else a random head seeded with ``seed`` (recorded
            in the sidecar).
        backbone, backbone_path, clip_path, key_map, config: as :func:`policies.vla.build_vla_policy` (recorded
            in the sidecar, so the source policy can be rebuilt).
        fp16: half-precision weights and compute (inputs/outputs stay float32/uint8).
        head_only: export the head alone (required for ``kosmos2`` / ``tiny-kosmos2``).
        window_size, execution, action_dim, seed: the source policy's settings (window baked into the graph).
        device: torch device of the source policy (the parity reference and the torch latency); the graph is
            always traced on the CPU, so the artifact does not depend on it.
        opset: ONNX opset.
        check: run :func:`check_parity` before writing (a failure raises and writes nothing).
        observations: observation dicts, an ``.npz`` (:func:`load_observations`) or ``None`` (record
            ``check_steps`` expert steps in the simulator).
        bounds: ``(actions, features)`` max abs diff bounds (default :data:`PARITY_BOUNDS`).
        latency_budget_ms: if given, measure p50/p95 per step (PyTorch and onnxruntime CPU) over
            ``latency_steps`` observations and give a verdict each.
        num_threads: torch and onnxruntime intra-op threads for the check and the timing (``None``: defaults).
        source_policy: an already built :class:`~policies.vla.VLAPolicy` to export instead of building one
            (its checkpoint path, if any, is recorded).
        policy_args: further :func:`~policies.vla.build_vla_policy` keyword arguments (``--policy-arg``: head config
            overrides such as ``hidden_dim``, post-processing switches); they end up in the sidecar's head config
            and post-processing, so ``--check-only`` rebuilds the same policy.

    Returns:
        :class:`ExportResult`.

    Raises:
        ExportError: unsupported combination or exporter failure. ParityError: the numerical check failed.
        CheckpointError / UnknownHeadError / UnknownBackboneError: as :func:`~policies.vla.build_vla_policy`.
    """
    from policies.vla import build_vla_policy

    if num_threads:
        torch.set_num_threads(int(num_threads))
    if source_policy is None:
        if not head_only and backbone not in ("auto", *FULL_EXPORT_BACKBONES):
            raise ExportError(f"backbone {backbone!r} cannot go into the graph (its Hugging Face processor is "
                              "Python); export the head alone with --head-only")
        explicit = {"backbone": backbone, "backbone_path": backbone_path, "checkpoint": checkpoint,
                    "clip_path": clip_path, "key_map": key_map, "config": config, "window_size": window_size,
                    "execution": execution, "action_dim": action_dim, "seed": seed, "device": device}
        clash = sorted(set(policy_args or {}) & set(explicit))
        if clash:
            raise ConfigError(f"--policy-arg {clash[0]}: use the --{clash[0].replace('_', '-')} flag")
        source_policy = build_vla_policy(policy, **explicit, **(policy_args or {}))
    source = {"clip_path": str(Path(clip_path).expanduser().resolve()) if clip_path else None,
              "key_map": str(Path(key_map).expanduser().resolve()) if isinstance(key_map, (str, Path)) else None,
              "config": str(Path(config).expanduser().resolve()) if isinstance(config, (str, Path)) else None}
    ref = source_policy
    ckpt_path = str(ref.checkpoint.path) if ref.checkpoint is not None else None
    kind = KIND_HEAD_ONLY if head_only else KIND_FULL
    precision = "fp16" if fp16 else "fp32"
    out = Path(out).expanduser()
    model_path = out / model_name
    side_path = sidecar_path(model_path)

    if isinstance(observations, (str, Path)):
        obs_source, observations = f"file {observations}", load_observations(observations)
    elif observations is None:
        needed = max(check_steps, latency_steps if latency_budget_ms is not None else 0)
        obs_source, observations = f"expert episode, seed 0, {needed} steps", record_observations(needed)
    else:
        obs_source = f"{len(observations)} given observations"
    observations = list(observations)
    out.mkdir(parents=True, exist_ok=True)  # once the inputs are read: a bad one leaves no empty folder

    graph = build_graph(ref, head_only=head_only, fp16=fp16)
    example = _example_inputs(ref, head_only)
    with atomic_write(model_path) as tmp:
        start = time.perf_counter()
        export_graph(graph, example, head_only, tmp, opset, pad_history=ref.history.pad)
        export_s = time.perf_counter() - start
        side = make_sidecar(ref, kind=kind, precision=precision, opset=opset, checkpoint=ckpt_path, seed=seed,
                            sha256=file_sha256(tmp), observations_source=obs_source, source=source)
        side["size_bytes"] = tmp.stat().st_size
        spec = ArtifactSpec.from_dict(side, str(side_path))
        parity = None
        if check:
            parity = check_parity(tmp, ref, observations[:check_steps], spec=spec, bounds=bounds,
                                  num_threads=num_threads)
            side["parity"] = dataclasses.asdict(parity)
            logger.info("parity %s", parity.summary())
        latency: dict[str, LatencyStats] = {}
        if latency_budget_ms is not None:
            timed = observations[:latency_steps]
            latency["pytorch"] = measure_latency(ref, timed, budget_ms=latency_budget_ms, runtime="pytorch")
            onnx_policy = OnnxPolicy(tmp, spec=spec, execution=ref.execution, text_backbone=ref.backbone,
                                     num_threads=num_threads, check_sha256=False)
            latency["onnx"] = measure_latency(onnx_policy, timed, budget_ms=latency_budget_ms,
                                              runtime=f"onnxruntime-cpu-{precision}")
            side["latency"] = {k: v.as_dict() for k, v in latency.items()}
    atomic_write_json(side_path, side, indent=2, sort_keys=True)
    return ExportResult(model_path, side_path, kind, precision, model_path.stat().st_size / 1e6, parity, latency,
                        side, export_s)
