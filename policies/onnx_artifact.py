"""The exported-policy artifact (``python -m sim.export``): its files, its sidecar and the runtimes that run its graph.

Artifact = ``DIR/model.onnx`` + JSON sidecar ``DIR/model.json`` (same stem). Two kinds:

``"full"`` (lite backbone, heads whose frame streams come from pixels alone (``image``, ``clip_image``):
EfficientNet-Lite0 image encoder + head in one graph, one run per prediction)
    inputs  ``frames``  uint8  ``(B, K, H, W, 3)`` RGB, the ``K >= 1`` frames not encoded yet (``H = W = 224``);
            ``history`` float32 ``(B, P, vision_dim)``, features of earlier frames, oldest first, ``P >= 0``
            (``P = 0`` at an episode's first step);
            ``text``    float32 ``(B, text_dim)`` instruction features.
    outputs ``actions`` float32 ``(B, chunk_size, action_dim)`` normalised actions (before post-processing);
            ``features`` float32 ``(B, K, vision_dim)``, the new frames' features, fed back as ``history``.
    The graph forms ``seq = [history ; features]`` and feeds the head ``[seq[0] * E ; seq][-E:]`` with
    ``E = min(window_size, head window)``: exactly :class:`policies.vla.FrameHistory`'s window (the episode's
    first frame repeated while the history is short), so image features are computed once per frame.

``"head-only"`` (Kosmos-2 / tiny-kosmos2, whose HF processor cannot go into a graph, and lite heads reading the
instruction-dependent ``multimodal`` stream: the backbone stays in PyTorch)
    inputs ``vision`` float32 ``(B, E, vision_dim)`` (the padded window; for ``robovlms``, which sees only the
    episode's own frames, ``(B, T, vision_dim)`` with ``1 <= T <= E``), ``text`` float32 ``(B, text_dim)``;
    output ``actions`` float32 ``(B, chunk_size, action_dim)``.

``vision_dim`` / ``text_dim`` are the widths of the head's concatenated frame / instruction streams
(``frame_streams`` / ``instruction_streams`` in the sidecar). Every batch dimension ``B`` is dynamic, and so are
``K`` and ``P``: one run advances many environments (:meth:`policies.vla.VLAPolicy.act_batch`).

Runners (:class:`OrtRunner`, :class:`TensorRTRunner`) share one interface, ``run(feeds) -> {name: array}``; the
policy that executes an artifact is :class:`policies.onnx_policy.OnnxPolicy`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.settings import ImageSize
from foundations.errors import MobileVLAError
from foundations.files import read_json

#: ``format`` of the artifact sidecar.
ARTIFACT_FORMAT = "mobile-vla-sim.onnx-policy"
ARTIFACT_FORMAT_VERSION = 1
#: Artifact kinds.
KIND_FULL = "full"
KIND_HEAD_ONLY = "head-only"
#: Graph input / output names per kind.
FULL_INPUTS = ("frames", "history", "text")
FULL_OUTPUTS = ("actions", "features")
HEAD_INPUTS = ("vision", "text")
HEAD_OUTPUTS = ("actions",)
#: Default model file name inside an artifact folder.
MODEL_NAME = "model.onnx"
#: TensorRT engine names looked for next to the ONNX file (same stem).
ENGINE_SUFFIXES = (".engine", ".plan")


class ArtifactError(MobileVLAError, ValueError):
    """Base class of exported-artifact problems (a ``ValueError``)."""


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    """The model file or its JSON sidecar does not exist."""


class ArtifactMismatchError(ArtifactError):
    """The sidecar and the model disagree (inputs, outputs, shapes, checksum), or a request contradicts them."""


class ArtifactInputError(ArtifactError):
    """An observation the exported graph cannot take (wrong dtype or frame size)."""


# ----------------------------------------------------------------------------------------------- files


def resolve_model_path(path: str | Path) -> Path:
    """``DIR`` -> ``DIR/model.onnx``; a file path is returned as is (``~`` expanded)."""
    p = Path(path).expanduser()
    return p / MODEL_NAME if p.is_dir() else p


def sidecar_path(model_path: str | Path) -> Path:
    """The JSON sidecar of ``model_path``: same folder and stem, suffix ``.json``."""
    return Path(model_path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class ArtifactSpec:
    """What the sidecar says about an exported policy (the fields :class:`~policies.onnx_policy.OnnxPolicy` needs).

    Attributes:
        kind: :data:`KIND_FULL` or :data:`KIND_HEAD_ONLY`.
        head: head registry name (``"case2"`` ...).
        backbone: backbone registry name (``"lite"``, ``"kosmos2"``, ``"tiny-kosmos2"``).
        precision: ``"fp32"`` or ``"fp16"`` (weights and compute; inputs/outputs are float32/uint8 always).
        window_size: the source policy's history length in frames.
        effective_window: frames the head reads, ``min(window_size, head window)`` (``E``).
        chunk_size, action_dim, vision_dim, text_dim: head / backbone sizes.
        image_size: the :class:`~envs.settings.ImageSize` of ``frames`` (full kind), else ``None``; the sidecar
            stores it as ``image.size`` = ``[height, width]``, the graph's own dimension order.
        frame_streams, instruction_streams: the backbone streams behind ``vision_dim`` / ``text_dim``.
        pad_history: the window is padded to ``E`` frames (False: the episode's frames only, ``robovlms``).
        execution, ensemble_k, postprocess: the source policy's execution defaults
            (``postprocess``: the :class:`~policies.vla.PostProcessing` fields).
        sha256: checksum of the model file written at export (``None``: not recorded).
        raw: the whole sidecar dict.
    """

    kind: str
    head: str
    backbone: str
    precision: str
    window_size: int
    effective_window: int
    chunk_size: int
    action_dim: int
    vision_dim: int
    text_dim: int
    image_size: ImageSize | None
    frame_streams: tuple[str, ...]
    instruction_streams: tuple[str, ...]
    pad_history: bool
    execution: str
    ensemble_k: float
    postprocess: dict[str, Any]
    sha256: str | None
    raw: dict[str, Any]

    @property
    def input_names(self) -> tuple[str, ...]:
        """Graph inputs; ``text`` is absent for heads that read no instruction feature (the exporter drops an
        unused zero-width input)."""
        names = FULL_INPUTS if self.kind == KIND_FULL else HEAD_INPUTS
        return tuple(n for n in names if n != "text" or self.text_dim > 0)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Graph outputs: ``("actions", "features")`` for the full kind, ``("actions",)`` head-only."""
        return FULL_OUTPUTS if self.kind == KIND_FULL else HEAD_OUTPUTS

    def source_text(self) -> str:
        """The source policy in words: ``"case2 on lite (checkpoint PATH)"`` or ``"... (seed 0)"``."""
        src = self.raw.get("source") or {}
        weights = f"checkpoint {src['checkpoint']}" if src.get("checkpoint") else f"seed {src.get('seed', 0)}"
        return f"{self.head} on {self.backbone} ({weights})"

    def check_frame(self, image: Any, source: str = "") -> np.ndarray:
        """One observation's frame as the graph takes it, uint8 ``(H, W, 3)``; ``source`` prefixes the messages.

        Raises:
            ArtifactInputError: not uint8 ``(H, W, 3)``, or (full kind) not the graph's frame size.
        """
        from policies.backbones.base import as_uint8_nhwc

        try:
            frame = as_uint8_nhwc(image)[0]
        except ValueError as exc:
            raise ArtifactInputError(f"{source}: {exc}") from exc
        size = self.image_size
        if size is not None and frame.shape[:2] != (size.height, size.width):
            raise ArtifactInputError(f"{source}: the exported graph takes {size} frames (W x H), got "
                                     f"{frame.shape[1]}x{frame.shape[0]}; render at --image-size {size}")
        return frame

    def postprocess_fields(self, **switches: bool | None) -> dict[str, Any]:
        """The :class:`~policies.vla.PostProcessing` fields of the sidecar, with the switches that are not ``None``
        (``denormalize``, ``clip``, ``dead_zone``, ``zero_first_step``) overriding them."""
        from policies.vla import PostProcessing

        fields = {f.name for f in dataclasses.fields(PostProcessing)}
        merged = {**self.postprocess, **{k: bool(v) for k, v in switches.items() if v is not None}}
        return {k: v for k, v in merged.items() if k in fields}

    @classmethod
    def from_dict(cls, info: Mapping[str, Any], source: str = "sidecar") -> ArtifactSpec:
        """Validate a sidecar dict.

        Raises:
            ArtifactError: not an artifact sidecar, a newer format version, or missing/ill-typed fields.
        """
        if not isinstance(info, Mapping) or info.get("format") != ARTIFACT_FORMAT:
            got = info.get("format") if isinstance(info, Mapping) else type(info).__name__
            raise ArtifactError(f"{source}: not a {ARTIFACT_FORMAT} sidecar (format={got!r})")
        if int(info.get("format_version", 0)) > ARTIFACT_FORMAT_VERSION:
            raise ArtifactError(f"{source}: format_version {info['format_version']} is newer than this code "
                                f"({ARTIFACT_FORMAT_VERSION})")
        try:
            kind = str(info["kind"])
            if kind not in (KIND_FULL, KIND_HEAD_ONLY):
                raise ArtifactError(f"{source}: unknown kind {kind!r}")
            image = info.get("image") or {}
            size = image.get("size")
            return cls(
                kind=kind, head=str(info["head"]), backbone=str(info["backbone"]),
                precision=str(info["precision"]), window_size=int(info["window_size"]),
                effective_window=int(info["effective_window"]), chunk_size=int(info["chunk_size"]),
                action_dim=int(info["action_dim"]), vision_dim=int(info["vision_dim"]),
                text_dim=int(info["text_dim"]),
                image_size=ImageSize(width=int(size[1]), height=int(size[0])) if size else None,
                frame_streams=tuple(info.get("frame_streams") or ("image",)),
                instruction_streams=tuple(info.get("instruction_streams", ("text",))),
                pad_history=bool(info.get("pad_history", True)),
                execution=str(info.get("execution", "first")), ensemble_k=float(info.get("ensemble_k", 0.01)),
                postprocess=dict(info.get("postprocess") or {}), sha256=info.get("sha256"), raw=dict(info))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(f"{source}: missing or ill-typed field ({type(exc).__name__}: {exc})") from exc


def read_spec(model_path: str | Path) -> ArtifactSpec:
    """Read and validate the sidecar of ``model_path`` (a ``.onnx`` file or its folder).

    Raises:
        ArtifactNotFoundError: the sidecar is missing. ArtifactError: unreadable or invalid sidecar.
    """
    side = sidecar_path(resolve_model_path(model_path))
    if not side.is_file():
        raise ArtifactNotFoundError(f"{side}: sidecar not found (export writes it next to the model; it holds the "
                                    "window, chunk, normalisation and post-processing the graph needs)")
    try:
        info = read_json(side)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{side}: unreadable sidecar ({exc})") from exc
    return ArtifactSpec.from_dict(info, str(side))


# --------------------------------------------------------------------------------------------- runners


def expected_io(spec: ArtifactSpec) -> dict[str, tuple[str, tuple[int | None, ...]]]:
    """Graph tensors the sidecar implies: name -> (numpy dtype name, shape with ``None`` for dynamic dims)."""
    e, dv, dt = spec.effective_window, spec.vision_dim, spec.text_dim
    actions = ("float32", (None, spec.chunk_size, spec.action_dim))
    if spec.kind == KIND_FULL:
        w, h = spec.image_size or (None, None)
        io = {"frames": ("uint8", (None, None, h, w, 3)), "history": ("float32", (None, None, dv)),
              "text": ("float32", (None, dt)), "actions": actions, "features": ("float32", (None, None, dv))}
    else:
        io = {"vision": ("float32", (None, e if spec.pad_history else None, dv)), "text": ("float32", (None, dt)),
              "actions": actions}
    return {k: v for k, v in io.items() if k in spec.input_names or k in spec.output_names}


_ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16",
              "tensor(int64)": "int64"}


class OrtRunner:
    """An onnxruntime session with a ``run(feeds) -> {name: array}`` interface.

    Args:
        model_path: the ``.onnx`` file.
        num_threads: ``intra_op_num_threads`` (``None``: onnxruntime's default, all cores).
        providers: execution providers (default ``["CPUExecutionProvider"]``).

    Raises:
        ArtifactError: onnxruntime cannot load the file.
    """

    runtime = "onnx"

    def __init__(self, model_path: str | Path, num_threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = int(num_threads)
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model_path), opts,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:
            raise ArtifactError(f"{model_path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from exc
        self.path = Path(model_path)

    def io(self) -> dict[str, tuple[str, tuple[int | None, ...]]]:
        """Graph inputs and outputs: name -> (numpy dtype name, shape with ``None`` for symbolic dims)."""
        out = {}
        for arg in [*self.session.get_inputs(), *self.session.get_outputs()]:
            shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
            out[arg.name] = (_ORT_TYPES.get(arg.type, arg.type), shape)
        return out

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph; returns every output by name."""
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, dict(feeds))))


class TensorRTRunner:
    """A serialized TensorRT engine (TensorRT >= 8.5 tensor-name API) with the :class:`OrtRunner` interface.

    Buffers are CUDA torch tensors; inputs are copied to the GPU and outputs back to numpy each call. Written for
    the Jetson Orin NX; not exercised here (no TensorRT in this environment: the fallback order is tested with a
    stand-in). Build the engine from the FP32 ONNX with e.g. ``trtexec --onnx=model.onnx --fp16
    --saveEngine=model.engine --minShapes=frames:1x1x224x224x3,history:1x0x1280,text:1x384
    --optShapes=frames:1x1x224x224x3,history:1x8x1280,text:1x384 --maxShapes=...``.

    Raises:
        ArtifactError: the engine cannot be deserialised.
    """

    runtime = "tensorrt"

    def __init__(self, engine_path: str | Path, trt: Any | None = None) -> None:
        import torch

        trt = trt or importlib.import_module("tensorrt")
        self._torch = torch
        self._trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise ArtifactError(f"{engine_path}: TensorRT could not deserialise the engine")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.path = Path(engine_path)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine on numpy feeds; returns every output as numpy."""
        torch, trt = self._torch, self._trt
        keep, outputs = [], {}
        for name in self.names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                t = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda()
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
                keep.append(t)
        for name in self.names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                dtype = torch.float16 if self.engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32
                t = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype, device="cuda")
                self.context.set_tensor_address(name, t.data_ptr())
                outputs[name] = t
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        stream.synchronize()
        return {k: v.float().cpu().numpy() for k, v in outputs.items()}


def check_runner_matches(runner: Any, spec: ArtifactSpec, source: str) -> None:
    """Compare the graph's inputs/outputs with what the sidecar implies (names, dtypes, fixed dims).

    Raises:
        ArtifactMismatchError: listing every difference.
    """
    if not hasattr(runner, "io"):
        return
    have, want = runner.io(), expected_io(spec)
    problems = []
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing:
        problems.append(f"graph lacks {missing}")
    if extra:
        problems.append(f"graph has unexpected tensors {extra}")
    for name in sorted(set(want) & set(have)):
        (wd, ws), (hd, hs) = want[name], have[name]
        if wd != hd:
            problems.append(f"{name}: dtype {hd}, sidecar implies {wd}")
        elif len(ws) != len(hs) or any(w is not None and h is not None and w != h for w, h in zip(ws, hs)):
            problems.append(f"{name}: shape {list(hs)}, sidecar implies {list(ws)}")
    if problems:
        raise ArtifactMismatchError(f"{source}: model and sidecar disagree: " + "; ".join(problems))


@dataclasses.dataclass
class Artifact:
    """An opened artifact (:func:`open_artifact`): the model file, its sidecar, the runner of its graph and the
    PyTorch backbone of its instruction (head-only: and frame) features."""

    path: Path
    spec: ArtifactSpec
    runner: Any
    backbone: Any


def open_artifact(path: str | Path, *, window_size: int | None = None, runner: Any | None = None,
                  check_sha256: bool = True, num_threads: int | None = None, providers: Sequence[str] | None = None,
                  text_backbone: Any | None = None, backbone_path: str | Path | None = None,
                  spec: ArtifactSpec | None = None) -> Artifact:
    """Open and check an artifact: its files, its sidecar (unless ``spec`` is given), the requested window, the
    checksum, the graph's inputs/outputs against the sidecar, and the backbone's widths.

    Args:
        path: ``DIR/model.onnx`` or ``DIR``.
        window_size: must equal the exported window (baked into the graph); ``None``: the sidecar's.
        runner: ``run(feeds) -> {name: array}`` instead of an :class:`OrtRunner` (``num_threads``, ``providers``).
        check_sha256: verify the model file against the sidecar's checksum (not with ``runner``).
        text_backbone: a built backbone; default: the source policy's (:func:`build_source_policy`, loading from
            ``backbone_path``).

    Raises:
        ArtifactNotFoundError: missing model or sidecar.
        ArtifactMismatchError: model/sidecar disagreement, a checksum mismatch, another ``window_size``, or a
            backbone of other widths.
        ArtifactError: an invalid sidecar, or onnxruntime cannot load the model.
    """
    model = resolve_model_path(path)
    if not model.is_file():
        raise ArtifactNotFoundError(f"exported model not found: {model}")
    spec = spec or read_spec(model)
    if window_size is not None and int(window_size) != spec.window_size:
        raise ArtifactMismatchError(f"{model}: exported with window_size={spec.window_size} (baked into the "
                                    f"graph), window_size={window_size} was requested; re-export instead")
    if check_sha256 and runner is None and spec.sha256 and file_sha256(model) != spec.sha256:
        raise ArtifactMismatchError(f"{model}: file checksum differs from the sidecar's (the model was "
                                    "modified or replaced after export); re-export, or pass check_sha256=False")
    runner = runner if runner is not None else OrtRunner(model, num_threads, providers)
    check_runner_matches(runner, spec, str(model))
    if text_backbone is None:
        text_backbone = build_source_policy(spec, backbone_path=backbone_path).backbone
    got = (text_backbone.width(spec.frame_streams), text_backbone.width(spec.instruction_streams))
    if got != (spec.vision_dim, spec.text_dim):
        raise ArtifactMismatchError(f"{model}: exported for features ({spec.vision_dim}, {spec.text_dim}) but "
                                    f"backbone {text_backbone.name} gives {got}")
    return Artifact(model, spec, runner, text_backbone)


def find_engine(model_path: Path, spec: ArtifactSpec | None) -> Path | None:
    """The TensorRT engine of an artifact: the sidecar's ``tensorrt_engine`` (relative to the model's folder) or
    ``model.engine`` / ``model.plan`` next to the model; ``None`` if none exists."""
    candidates = []
    if spec is not None and spec.raw.get("tensorrt_engine"):
        candidates.append(model_path.parent / str(spec.raw["tensorrt_engine"]))
    candidates += [model_path.with_suffix(s) for s in ENGINE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), None)


def build_source_policy(spec: ArtifactSpec, **kwargs: Any) -> Any:
    """The PyTorch :class:`~policies.vla.VLAPolicy` an artifact was exported from, rebuilt from the sidecar
    (``source``: head, backbone, checkpoint or seed, head config, window, post-processing); ``kwargs`` override.

    Raises:
        CheckpointError: the source checkpoint is gone or no longer fits.
    """
    from policies.heads import config_from_dict, head_class
    from policies.vla import build_vla_policy

    src = spec.raw.get("source") or {}
    pp = spec.postprocess
    args: dict[str, Any] = {
        "clip_path": src.get("clip_path"), "key_map": src.get("key_map"), "config": src.get("config"),
        "backbone": spec.backbone, "execution": spec.execution, "window_size": spec.window_size,
        "action_dim": spec.action_dim, "ensemble_k": spec.ensemble_k,
        "denormalize": pp.get("denormalize", True), "clip": pp.get("clip", True),
        "dead_zone": pp.get("dead_zone", True), "zero_first_step": pp.get("zero_first_step", True),
    }
    if src.get("checkpoint"):
        args["checkpoint"] = src["checkpoint"]
    else:
        args["seed"] = int(src.get("seed", 0))
        cfg = dict(spec.raw.get("head_config") or {})
        widths = {field for _, field in (*head_class(spec.head).frame_inputs(config_from_dict(spec.head, cfg)),
                                         *head_class(spec.head).instruction_inputs(config_from_dict(spec.head, cfg)))}
        args["head_overrides"] = {k: v for k, v in cfg.items() if k not in widths | {"action_dim"}}
    if spec.head != "robovlms":
        args.pop("config")
    args.update({k: v for k, v in kwargs.items() if v is not None})
    return build_vla_policy(spec.head, **args)


__all__ = [
    "ARTIFACT_FORMAT", "ARTIFACT_FORMAT_VERSION", "ENGINE_SUFFIXES", "FULL_INPUTS", "FULL_OUTPUTS", "HEAD_INPUTS",
    "HEAD_OUTPUTS", "KIND_FULL", "KIND_HEAD_ONLY", "MODEL_NAME", "ArtifactError", "ArtifactInputError",
    "Artifact", "ArtifactMismatchError", "ArtifactNotFoundError", "ArtifactSpec", "OrtRunner", "TensorRTRunner",
    "build_source_policy", "check_runner_matches", "expected_io", "file_sha256", "find_engine", "open_artifact",
    "read_spec", "resolve_model_path", "sidecar_path",
]
