"""Exported VLA policies (``python -m sim.export``; artifact, sidecar, runners: :mod:`policies.onnx_artifact`) as an
execution backend of :class:`~policies.vla.VLAPolicy`, and the deployment loader (TensorRT -> ONNX -> PyTorch).

:class:`OnnxPolicy` **is** a :class:`~policies.vla.VLAPolicy` whose forward pass is the graph (:class:`OnnxForward`):
history, chunk execution, first-step rule, instruction fallback and post-processing are VLAPolicy's. Batched
(``act_batch``, ``sim.eval --batch on``), the graph runs once per group of episodes with the same numbers of new and
past frames (full kind: the graph encodes the pixels, its ``features`` join the history) or the same window length
(head-only: the PyTorch backbone encodes frames). Defaults (execution, window, post-processing) are the sidecar's.

**Text features stay in PyTorch (decision).** The backbone (MiniLM for ``lite``) encodes each instruction once, at
reset: nothing per step, no tokenizer to export (ONNX cannot express it), no ~90 MB of MiniLM in the graph.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foundations.errors import ConfigError
from policies import onnx_artifact as artifact
from policies.base import Policy
from policies.onnx_artifact import ArtifactError, ArtifactSpec, TensorRTRunner
from policies.vla import PostProcessing, TorchForward, VLAEpisode, VLAPolicy

logger = logging.getLogger(__name__)

#: Runtimes of :func:`load_deployed_policy`, in the team's fallback order.
RUNTIMES = ("tensorrt", "onnx", "pytorch")


class OnnxForward(TorchForward):
    """A :class:`~policies.vla.VLAPolicy` forward pass run by an exported graph.

    Args:
        runner: ``run(feeds) -> {name: array}`` (:class:`OrtRunner`, :class:`TensorRTRunner`); feeds and outputs
            as :mod:`policies.onnx_artifact` says for ``spec.kind``.
        spec: the artifact's :class:`ArtifactSpec`.
        backbone: PyTorch backbone of the instruction features (head-only: of the frame features too), at the
            sidecar's widths (the caller checks).
        path: the model file, for error messages.
    """

    def __init__(self, runner: Any, spec: ArtifactSpec, backbone: Any, path: Path) -> None:
        super().__init__(None, backbone)
        self.runner, self.spec, self.path = runner, spec, path
        self.runtime = getattr(runner, "runtime", "onnx")
        self.frame_streams, self.instruction_streams = spec.frame_streams, spec.instruction_streams

    chunk_size = property(lambda self: self.spec.chunk_size)
    action_dim = property(lambda self: self.spec.action_dim)
    pad_history = property(lambda self: self.spec.pad_history)

    def check_frame(self, image: Any) -> np.ndarray:
        """:meth:`ArtifactSpec.check_frame`: uint8 ``(H, W, 3)``; raises ArtifactInputError (dtype, shape, size)."""
        return self.spec.check_frame(image, str(self.path))

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.runner.run({k: v for k, v in feeds.items() if k in self.spec.input_names})
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}

    def run_head(self, frames: torch.Tensor, text: torch.Tensor) -> np.ndarray:
        """Head-only: the graph on windows float32 ``(B, T, vision_dim)`` (their newest ``effective_window``
        frames) and ``text`` ``(B, text_dim)`` -> float32 ``(B, chunk_size, action_dim)``."""
        vision = frames[:, -self.spec.effective_window:].to(torch.float32).numpy()
        return self._run({"vision": vision, "text": text.to(torch.float32).numpy()})["actions"]

    def predict(self, episodes: list[VLAEpisode], instructions: list[str]) -> list[np.ndarray]:
        """As :meth:`TorchForward.predict`; the full kind runs the graph once per group of episodes with the same
        number of new frames and of past features (the graph time counts as head time)."""
        if self.spec.kind != artifact.KIND_FULL:
            return super().predict(episodes, instructions)
        e, dv = self.spec.effective_window, self.spec.vision_dim
        frames = [ep.history.take_pending() for ep in episodes]
        past = [ep.history.recent(e) for ep in episodes]
        groups: dict[tuple[Any, ...], list[int]] = collections.defaultdict(list)
        for i, (new, old) in enumerate(zip(frames, past)):
            groups[(new.shape, len(old))].append(i)
        chunks: list[np.ndarray] = [np.empty(0, np.float32)] * len(episodes)
        for members in groups.values():
            history = np.stack([torch.stack(past[i]).numpy() if past[i] else np.zeros((0, dv), np.float32)
                                for i in members])
            text = torch.cat([self.text_features(instructions[i]) for i in members]).to(torch.float32).numpy()
            start = time.perf_counter()
            out = self._run({"frames": np.stack([frames[i] for i in members]), "history": history, "text": text})
            elapsed = (time.perf_counter() - start) * 1e3
            for j, i in enumerate(members):
                episodes[i].history.extend(torch.from_numpy(out["features"][j].copy()))
                episodes[i].head_latencies_ms[-1] += elapsed
                chunks[i] = out["actions"][j]
        return chunks


class OnnxPolicy(VLAPolicy):
    """An exported VLA policy: a :class:`~policies.vla.VLAPolicy` (same step, batchable; same observations and
    actions, full kind: frames of the exported size only) whose forward pass is the graph, run by onnxruntime.

    Args:
        path: ``DIR/model.onnx`` or ``DIR`` (the registry passes ``"onnx:DIR/model.onnx"`` as ``path=``).
        execution: ``"first"``, ``"all"``, ``"ensemble"`` (default: the sidecar's).
        ensemble_k: temporal-ensembling constant (default: the sidecar's).
        denormalize: post-processing switch, as :func:`policies.vla.build_vla_policy`'s (default: the sidecar's).
        clip: post-processing switch (default: the sidecar's).
        dead_zone: post-processing switch (default: the sidecar's).
        zero_first_step: post-processing switch (default: the sidecar's).
        window_size: must equal the exported window (baked into the graph); ``None``: the sidecar's.
        backbone_path: where the PyTorch backbone (text encoder; head-only: also the image encoder) loads from.
        num_threads: onnxruntime ``intra_op_num_threads`` (``None``: its default).
        providers: onnxruntime execution providers (default CPU).
        runner: an object with ``run(feeds) -> {name: array}`` to use instead of onnxruntime (e.g. a
            :class:`TensorRTRunner`).
        check_sha256: verify the model file against the sidecar's checksum.
        text_backbone: a built backbone for the text (and head-only frame) features; default: the source
            policy's (:func:`~policies.onnx_artifact.build_source_policy`).
        spec: an already read :class:`ArtifactSpec` (default: read from the sidecar), as ``open_artifact``.

    Attributes:
        spec: the :class:`ArtifactSpec`. path: the model file. runner: the graph's runner.
        runtime: ``"onnx"`` or the runner's ``runtime``. window: frames the graph reads (``effective_window``).
        runtime_latencies_ms: per step, milliseconds inside the graph (0 on steps without a prediction).

    Raises:
        ArtifactError: as :func:`~policies.onnx_artifact.open_artifact` (missing files, model/sidecar disagreement,
        checksum, another ``window_size``). ConfigError (a ``ValueError``): bad ``execution``.
    """

    def __init__(self, path: str | Path, *, execution: str | None = None, window_size: int | None = None,
                 ensemble_k: float | None = None, denormalize: bool | None = None, clip: bool | None = None,
                 dead_zone: bool | None = None, zero_first_step: bool | None = None,
                 backbone_path: str | Path | None = None, num_threads: int | None = None,
                 providers: Sequence[str] | None = None, runner: Any | None = None, check_sha256: bool = True,
                 text_backbone: Any | None = None, spec: ArtifactSpec | None = None) -> None:
        opened = artifact.open_artifact(path, window_size=window_size, runner=runner, check_sha256=check_sha256,
                                        num_threads=num_threads, providers=providers, text_backbone=text_backbone,
                                        backbone_path=backbone_path, spec=spec)
        self.path, self.spec = opened.path, opened.spec
        switches = {"denormalize": denormalize, "clip": clip, "dead_zone": dead_zone, "zero_first_step": zero_first_step}
        super().__init__(execution=execution or self.spec.execution, window_size=self.spec.window_size,
                         postprocess=PostProcessing(**self.spec.postprocess_fields(**switches)),
                         ensemble_k=self.spec.ensemble_k if ensemble_k is None else ensemble_k,
                         forward=OnnxForward(opened.runner, self.spec, opened.backbone, self.path))
        self.runtime = self.forward.runtime

    runner = property(lambda self: self.forward.runner)
    window = property(lambda self: self.spec.effective_window)
    runtime_latencies_ms = property(lambda self: self.episode.head_latencies_ms)

    @property
    def provenance(self) -> dict[str, str]:
        """For reports (:func:`sim.evaluation.runner.describe_policy`): artifact, source, backbone, post-processing."""
        return {"artifact": f"{self.path} ({self.spec.kind}, {self.spec.precision}, {self.runtime})",
                "source": self.spec.source_text(), "backbone": self.backbone.name,
                "post-processing": self.postprocess.describe()}


# ------------------------------------------------------------------------------------ fallback loader


@dataclasses.dataclass
class DeployedPolicy:
    """What :func:`load_deployed_policy` chose: the ready ``policy``, its ``runtime`` (``"tensorrt"``, ``"onnx"`` or
    ``"pytorch"``) and the ``reasons``, one line per runtime tried, in order (why skipped, or what was taken)."""

    policy: Policy
    runtime: str
    reasons: list[str]


def _import_tensorrt() -> Any:
    """``import tensorrt`` (a hook so tests can stand one in)."""
    return importlib.import_module("tensorrt")


def load_deployed_policy(path: str | Path, *, order: Sequence[str] = RUNTIMES, engine: str | Path | None = None,
                         **kwargs: Any) -> DeployedPolicy:
    """Load an exported policy with the team's fallback order: TensorRT engine -> ONNX -> PyTorch.

    - ``tensorrt``: taken if an engine exists (``engine``, the sidecar's ``tensorrt_engine``, or ``model.engine`` /
      ``model.plan`` next to the model) **and** ``tensorrt`` imports; the ONNX sidecar still describes it.
    - ``onnx``: taken if the model file and its sidecar exist and onnxruntime loads it.
    - ``pytorch``: the source policy rebuilt from the sidecar (:func:`build_source_policy`).

    Each decision is logged (``logging`` INFO for the one taken, the others' reasons too) and returned.

    Args:
        path: ``DIR/model.onnx`` or ``DIR``.
        order: the runtimes to try, in order (a subset of :data:`RUNTIMES`).
        engine: an explicit engine file.
        kwargs: passed to :class:`OnnxPolicy` (tensorrt / onnx) or :func:`build_source_policy` (pytorch);
            ``execution`` and the post-processing switches apply to all three.

    Raises:
        ConfigError: an unknown runtime in ``order``.
        ArtifactError: every runtime failed (the message lists why each one did).
    """
    unknown = [r for r in order if r not in RUNTIMES]
    if unknown:
        raise ConfigError(f"unknown runtime(s) {unknown}; choose from {RUNTIMES}")
    model = artifact.resolve_model_path(path)
    reasons: list[str] = []
    try:
        spec: ArtifactSpec | None = artifact.read_spec(model)
    except ArtifactError as exc:
        spec = None
        reasons.append(f"sidecar: {exc}")
    shared = {k: kwargs[k] for k in ("execution", "denormalize", "clip", "dead_zone", "zero_first_step",
                                     "ensemble_k") if kwargs.get(k) is not None}
    for runtime in order:
        try:
            if spec is None:
                raise artifact.ArtifactNotFoundError("no readable sidecar")
            if runtime == "tensorrt":
                eng = Path(engine).expanduser() if engine is not None else artifact.find_engine(model, spec)
                if eng is None or not eng.is_file():
                    names = ", ".join("model" + s for s in artifact.ENGINE_SUFFIXES)
                    raise artifact.ArtifactNotFoundError(f"no engine ({names} next to {model.name}, none named in "
                                                         "the sidecar)")
                try:
                    trt = _import_tensorrt()
                except ImportError as exc:
                    raise ArtifactError(f"engine {eng.name} found but tensorrt is not importable ({exc})") from exc
                policy: Policy = OnnxPolicy(model, runner=TensorRTRunner(eng, trt), spec=spec, **kwargs)
                why = f"engine {eng}"
            elif runtime == "onnx":
                policy = OnnxPolicy(model, spec=spec, **kwargs)
                why = f"{model} with onnxruntime"
            else:
                policy = artifact.build_source_policy(spec, **shared)
                why = f"source {spec.source_text()}"
        except Exception as exc:  # noqa: BLE001 - every failure falls through to the next runtime
            reasons.append(f"{runtime}: skipped: {type(exc).__name__}: {exc}")
            logger.info("policy runtime %s skipped: %s", runtime, exc)
            continue
        reasons.append(f"{runtime}: taken: {why}")
        logger.info("policy runtime: %s (%s); earlier: %s", runtime, why, reasons[:-1] or "none")
        policy.runtime = runtime  # type: ignore[attr-defined]
        return DeployedPolicy(policy, runtime, reasons)
    raise ArtifactError(f"{model}: no runtime could load it: " + " | ".join(reasons))


__all__ = ["RUNTIMES", "DeployedPolicy", "OnnxForward", "OnnxPolicy", "load_deployed_policy"]
