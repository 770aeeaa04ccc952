"""The VLA policy family behind the :class:`~policies.base.Policy` interface.

One :class:`VLAPolicy` = a frozen backbone (:mod:`policies.backbones`) + an action head
(:mod:`policies.heads`) + the deployed server's execution and post-processing:

1. **History.** Each step's RGB frame joins a window of the last ``window_size`` frames (default 8), encoded
   into the feature streams the head reads (``head.frame_streams``); at the start of an episode the window is
   padded by repeating the episode's first frame, except for heads that see only the episode's own frames
   (``robovlms``, ``pad_history = False``). Frames are encoded once (features are kept, not pixels) and only
   when a prediction needs them.
2. **Text.** The instruction's streams (``head.instruction_streams``) are encoded once per distinct string, kept for
   the most recent :data:`~foundations.lru.MAX_INSTRUCTIONS` strings (an LRU: memory stays bounded whatever a client
   sends).
3. **Action chunk execution** (``execution``):

   - ``"first"``: receding horizon: predict every step, execute the chunk's first action (the deployed
     inference server);
   - ``"all"``: execute the whole predicted chunk, one action per step, before predicting again (the
     on-robot node);
   - ``"ensemble"``: predict every step and average, for the current step, every still-overlapping chunk's
     prediction with weights ``exp(-ensemble_k * i)``, ``i = 0`` for the oldest prediction, normalised to sum
     to 1 (ACT's temporal ensembling; RoboVLMs' evaluation wrapper does the same with its own decay).

4. **Post-processing** as the deployed server, each step switchable: de-normalise, clip to +-``OUTPUT_CLIP``
   (1.5), dead-zone (components with ``|v| < DEAD_ZONE`` = 0.15 become 0), and the episode's first action forced
   to zero (the model still runs at step 0, so its latency and history are real). De-normalising is the source
   model's (:func:`output_scale`): x ``ACTION_LABEL`` = 1.15 for heads trained on labels clamped to [-1, 1] (the
   project's, the bundled weights) and for ``robovlms`` (the RoboVLMs server's ``unnoramalize_action``); x 1 for
   the team's single-frame heads loaded from the team's own files (:data:`RAW_LABEL_HEADS`: trained on the raw
   labels, +-1.15, and evaluated by the team on raw outputs). :meth:`PostProcessing.describe` says which, and the
   run's ``config.json`` and report record it.

Observations: ``{"image": uint8 (H, W, 3) RGB, "instruction": str, "state": float32 (6,)}``; ``state`` is not
used by the VLA heads (the robot's models never saw odometry). Actions: float32 ``[linear_x, linear_y]``
(padded with ``angular_z = 0`` by the base class) or ``[linear_x, linear_y, angular_z]`` with
``action_dim=3``, in label units (+-1.15).

**Execution backends.** The four steps above are :class:`VLAPolicy`'s, written once; only the forward pass (pending
frames + windows + instruction features -> action chunks) is a backend's: :class:`TorchForward` (the PyTorch
backbone and head, the default) or :class:`~policies.onnx_policy.OnnxForward` (a graph exported by ``sim.export``,
run by onnxruntime or TensorRT: :class:`~policies.onnx_policy.OnnxPolicy`). Both batch (:meth:`VLAPolicy.act_batch`).

:func:`build_vla_policy` assembles one from a head name and a checkpoint in any supported format; the factories
below (one per head, :func:`ensemble`) are what :mod:`policies.registry` points to.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.keys import ACTION_LABEL, DEAD_ZONE, OUTPUT_CLIP, apply_dead_zone
from foundations.errors import ConfigError
from foundations.lru import MAX_INSTRUCTIONS, LRUCache
from policies.backbones import Backbone, MissingStreamError, make_backbone, stream_widths
from policies.backbones.base import STREAM_REMEDIES, STREAMS, as_uint8_nhwc, autocast, device_key
from policies.base import BatchablePolicy
from policies.catalog import EXECUTION_MODES
from policies.checkpoints import (
    Checkpoint,
    CheckpointFormatError,
    CheckpointMismatchError,
    default_checkpoint,
    load_checkpoint,
    load_into_head,
)
from policies.heads import CONFIG_ALIASES, ActionHead, config_fields, config_from_dict, head_class

#: ACT's temporal-ensembling constant (weights ``exp(-k * i)``, ``i = 0`` the oldest prediction).
DEFAULT_ENSEMBLE_K = 0.01
#: Seed of randomly initialised heads (used when no checkpoint is given).
DEFAULT_SEED = 0


# ------------------------------------------------------------------------------------ post-processing


@dataclasses.dataclass(frozen=True)
class PostProcessing:
    """The deployed server's output pipeline, applied in this order; every step can be switched off.

    Attributes:
        denormalize: multiply by ``scale`` (model units [-1, 1] -> label units +-1.15).
        clip: clip every component to ``[-clip_value, clip_value]``.
        dead_zone: zero components with ``|v| < dead_zone_value``.
        zero_first_step: return zeros at the first step of an episode.
    """

    denormalize: bool = True
    clip: bool = True
    dead_zone: bool = True
    zero_first_step: bool = True
    scale: float = ACTION_LABEL
    clip_value: float = OUTPUT_CLIP
    dead_zone_value: float = DEAD_ZONE
    #: Why ``scale`` is what it is (where the source model applies it), for reports.
    scale_source: str = "the head was trained on labels clamped to [-1, 1]"

    def describe(self) -> str:
        """One line: the steps that run, in order, with the scale's source (``"x1.15 (the head was trained on labels
        clamped to [-1, 1]), clip +-1.5, dead-zone 0.15, first step zero"``)."""
        steps = []
        if self.denormalize:
            steps.append(f"x{self.scale:g} ({self.scale_source})")
        if self.clip:
            steps.append(f"clip +-{self.clip_value:g}")
        if self.dead_zone:
            steps.append(f"dead-zone {self.dead_zone_value:g}")
        if self.zero_first_step:
            steps.append("first step zero")
        return ", ".join(steps) or "none"

    def __call__(self, action: np.ndarray, step: int) -> np.ndarray:
        """Post-process one normalised action (float ``(action_dim,)``) at episode step ``step`` (0-based)."""
        out = np.asarray(action, dtype=np.float32).copy()
        if self.denormalize:
            out *= np.float32(self.scale)
        if self.clip:
            out = np.clip(out, -self.clip_value, self.clip_value).astype(np.float32)
        if self.dead_zone:
            out = apply_dead_zone(out, self.dead_zone_value)
        if self.zero_first_step and step == 0:
            out[:] = 0.0
        return out


# ------------------------------------------------------------------------------------------ history


class FrameHistory:
    """The last ``window_size`` frames of an episode, as backbone features.

    Frames are pushed as pixels (kept pending) or as ready features; :meth:`window` encodes whatever is
    pending in one batch, so ``execution="all"`` only runs the backbone when it predicts.

    Args:
        window_size: frames kept.
        pad: fill a window shorter than ``window_size`` by repeating the episode's first frame (else the window
            holds only the frames seen so far).
    """

    def __init__(self, window_size: int, pad: bool = True) -> None:
        if window_size < 1:
            raise ConfigError(f"window_size must be >= 1, got {window_size}")
        self.window_size = int(window_size)
        self.pad = bool(pad)
        self._features: collections.deque[torch.Tensor] = collections.deque(maxlen=self.window_size)
        self._pending: collections.deque[np.ndarray] = collections.deque(maxlen=self.window_size)
        self._first: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the episode."""
        self._features.clear()
        self._pending.clear()
        self._first = None

    def push_image(self, image: np.ndarray) -> None:
        """Queue one uint8 ``(H, W, 3)`` frame (copied) for encoding."""
        self._pending.append(as_uint8_nhwc(image)[0].copy())

    def push_feature(self, feature: torch.Tensor) -> None:
        """Append one already-encoded frame, float ``(frame_dim,)`` (only when nothing is pending)."""
        if self._pending:
            raise RuntimeError("push_feature with frames still pending: encode them first")
        self._append(feature.reshape(-1))

    def _append(self, feature: torch.Tensor) -> None:
        if self._first is None:
            self._first = feature
        self._features.append(feature)

    @property
    def pending(self) -> int:
        """Frames queued but not encoded yet."""
        return len(self._pending)

    def take_pending(self) -> np.ndarray:
        """The queued frames, uint8 ``(N, H, W, 3)`` (oldest first), no longer queued: encode them and hand the
        features to :meth:`extend`."""
        frames = np.stack(self._pending)
        self._pending.clear()
        return frames

    def extend(self, features: torch.Tensor) -> None:
        """Append encoded frames, float ``(N, frame_dim)``, oldest first."""
        for f in features:
            self._append(f)

    def recent(self, n: int) -> list[torch.Tensor]:
        """The newest ``n`` encoded frames, float ``(frame_dim,)`` each, oldest first, unpadded (fewer at the start of
        an episode; pending frames are not included)."""
        return list(self._features)[-n:] if n > 0 else []

    def features(self) -> torch.Tensor:
        """The window, float ``(T, frame_dim)``: ``T = window_size`` when padding, else the frames seen so far.

        Raises:
            RuntimeError: no frame was pushed yet, or frames are still pending (encode them first).
        """
        if self._pending:
            raise RuntimeError("frames still pending: encode them (take_pending / extend) first")
        if not self._features or self._first is None:
            raise RuntimeError("no frame in the history: push a frame before predicting")
        frames = list(self._features)
        if self.pad and len(frames) < self.window_size:
            frames = [self._first] * (self.window_size - len(frames)) + frames
        return torch.stack(frames)

    def window(self, encode: Callable[[np.ndarray], torch.Tensor]) -> tuple[torch.Tensor, float]:
        """Encode pending frames with ``encode`` (uint8 ``(N, H, W, 3)`` -> ``(N, frame_dim)``) and return
        ``(features (T, frame_dim), encode_ms)`` (see :meth:`features`).

        Raises:
            RuntimeError: no frame was pushed yet.
        """
        ms = 0.0
        if self._pending:
            start = time.perf_counter()
            feats = encode(self.take_pending())
            ms = (time.perf_counter() - start) * 1e3
            self.extend(feats)
        return self.features(), ms


# ------------------------------------------------------------------------------------- ensembling


class TemporalEnsembler:
    """Temporal ensembling of overlapping action chunks.

    Each step a new chunk ``(chunk_size, action_dim)`` arrives; the chunk predicted ``j`` steps ago
    contributes its ``j``-th action. With ``n`` contributions ordered oldest first (``i = 0 .. n-1``) the
    result is ``sum_i w_i a_i`` with ``w_i = exp(-k i) / sum_j exp(-k j)`` (ACT: ``k = 0.01``, so older
    predictions weigh slightly more; ``k < 0`` favours newer ones, ``k = 0`` is a plain mean).
    """

    def __init__(self, chunk_size: int, k: float = DEFAULT_ENSEMBLE_K) -> None:
        self.chunk_size = int(chunk_size)
        self.k = float(k)
        self._chunks: collections.deque[np.ndarray] = collections.deque(maxlen=self.chunk_size)

    def reset(self) -> None:
        """Forget past chunks."""
        self._chunks.clear()

    def weights(self, n: int) -> np.ndarray:
        """Normalised weights for ``n`` contributions, oldest first, float64 ``(n,)``."""
        w = np.exp(-self.k * np.arange(n, dtype=np.float64))
        return w / w.sum()

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        """Add this step's chunk and return the ensembled action for this step, float32 ``(action_dim,)``."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[0] != self.chunk_size:
            raise ConfigError(f"expected a chunk of shape ({self.chunk_size}, action_dim), got {chunk.shape}")
        self._chunks.append(chunk)
        n = len(self._chunks)
        preds = np.stack([c[n - 1 - i] for i, c in enumerate(self._chunks)])  # oldest chunk first
        return (self.weights(n)[:, None] * preds).sum(0).astype(np.float32)


class ChunkExecutor:
    """Turns the predicted action chunks into one action per step, as the deployment does (every
    :class:`VLAPolicy`, whatever its execution backend).

    ``"first"`` predicts every step and executes the chunk's first action; ``"all"`` executes a whole chunk
    open-loop before predicting again; ``"ensemble"`` predicts every step and ensembles the overlapping chunks
    (:class:`TemporalEnsembler`).
    """

    def __init__(self, chunk_size: int, ensemble_k: float = DEFAULT_ENSEMBLE_K) -> None:
        self.ensembler = TemporalEnsembler(chunk_size, ensemble_k)
        self._queue: collections.deque[np.ndarray] = collections.deque()

    def reset(self) -> None:
        """Forget queued actions and past chunks (new episode)."""
        self._queue.clear()
        self.ensembler.reset()

    def needs_chunk(self, execution: str) -> bool:
        """Whether this step needs a new chunk: always for ``"first"`` and ``"ensemble"``; for ``"all"`` when the
        previous chunk is used up."""
        return execution != "all" or not self._queue

    def take(self, execution: str, chunk: np.ndarray | None) -> np.ndarray:
        """This step's action, float32 ``(action_dim,)``, from this step's new chunk ``(chunk_size, action_dim)``
        (``None`` exactly when :meth:`needs_chunk` said no)."""
        if execution == "first":
            return np.array(chunk[0], dtype=np.float32)
        if execution == "all":
            if chunk is not None:
                self._queue.extend(chunk)
            return np.array(self._queue.popleft(), dtype=np.float32)
        return self.ensembler(chunk)

    def next_action(self, execution: str, predict_chunk: Callable[[], np.ndarray]) -> np.ndarray:
        """This step's action, float32 ``(action_dim,)``; ``predict_chunk()`` is called only when one is needed
        and returns ``(chunk_size, action_dim)``."""
        return self.take(execution, predict_chunk() if self.needs_chunk(execution) else None)


# ------------------------------------------------------------------------------------------ policy


@dataclasses.dataclass
class VLAEpisode:
    """The per-episode state of a :class:`VLAPolicy` in one environment: everything but the model.

    Attributes:
        history: the episode's frames as features (:class:`FrameHistory`).
        chunks: the chunk executor (:class:`ChunkExecutor`).
        instruction: the episode's instruction.
        step: actions returned so far (the first-step rule reads it).
        backbone_latencies_ms: per step, milliseconds spent encoding frames (0 when nothing was encoded; in a
            batch, the whole batch's time).
        head_latencies_ms: per step, milliseconds in the head's forward pass (0 on steps without a prediction).
        num_predictions: head calls this episode.
        last_chunk: the latest predicted chunk, float32 ``(chunk_size, action_dim)``, normalised units.
    """

    history: FrameHistory
    chunks: ChunkExecutor
    instruction: str = ""
    step: int = 0
    backbone_latencies_ms: list[float] = dataclasses.field(default_factory=list)
    head_latencies_ms: list[float] = dataclasses.field(default_factory=list)
    num_predictions: int = 0
    last_chunk: np.ndarray | None = None

    def reset(self, instruction: str) -> None:
        """Forget the previous episode; start one with ``instruction``."""
        self.history.reset()
        self.chunks.reset()
        self.instruction = instruction
        self.step = 0
        self.backbone_latencies_ms = []
        self.head_latencies_ms = []
        self.num_predictions = 0
        self.last_chunk = None


def _instruction(observation: Mapping[str, Any], episode_instruction: str) -> str:
    return str(observation.get("instruction", episode_instruction) or episode_instruction)


class TorchForward:
    """The forward pass of a :class:`VLAPolicy` in PyTorch, its default execution backend: the backbone encodes the
    pending frames (one call per instruction when the frame streams read it, else one per frame size), the head
    predicts from each episode's window (one forward per window length).

    A backend supplies only the forward pass; the history, chunk execution, first-step rule, instruction fallback and
    post-processing are :class:`VLAPolicy`'s, whatever the backend. Other backends (the exported ONNX graphs,
    :class:`policies.onnx_policy.OnnxForward`) subclass this one and replace :meth:`run_head` or :meth:`predict`.

    Args:
        head: the action head (the backbone must offer its streams at its widths); ``None`` in a subclass that
            brings its own forward pass.
        backbone: a frozen :class:`~policies.backbones.Backbone` (instruction features; frames unless the subclass
            encodes them itself).
        device: where the head runs (the backbone has its own device); float32 weights, run under bf16 autocast
            on CUDA (:func:`policies.backbones.base.autocast`), plain float32 elsewhere.

    Raises:
        ConfigError: a backbone whose stream widths differ from the head's. MissingStreamError: the backbone lacks
            a stream the head reads.
    """

    #: What runs the forward pass (reports, :func:`policies.onnx_policy.load_deployed_policy`).
    runtime = "pytorch"

    def __init__(self, head: ActionHead | None, backbone: Backbone, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.backbone = backbone
        self.head = head
        if head is not None:
            self.frame_streams, self.instruction_streams = head.frame_streams, head.instruction_streams
            got = (backbone.width(self.frame_streams), backbone.width(self.instruction_streams))
            if got != (head.frame_dim, head.instruction_dim):
                raise ConfigError(
                    f"head {head.head_name} was built for features ({head.frame_dim}, {head.instruction_dim}) of "
                    f"streams {self.frame_streams} / {self.instruction_streams} but backbone {backbone.name} gives "
                    f"{got}")
            self.head = head.to(self.device).float().eval().requires_grad_(False)
        self._text: LRUCache[str, torch.Tensor] = LRUCache(MAX_INSTRUCTIONS)

    @property
    def chunk_size(self) -> int:
        """Actions per prediction."""
        return self.head.chunk_size

    @property
    def action_dim(self) -> int:
        """2 (``linear_x, linear_y``) or 3 (+ ``angular_z``)."""
        return self.head.action_dim

    @property
    def pad_history(self) -> bool:
        """Whether a short window is padded with the episode's first frame (:class:`FrameHistory`)."""
        return getattr(self.head, "pad_history", True)

    def check_frame(self, image: Any) -> np.ndarray:
        """One observation's frame as uint8 ``(H, W, 3)``.

        Raises:
            BackboneInputError: not a uint8 ``(H, W, 3)`` RGB frame.
        """
        return as_uint8_nhwc(image)[0]

    def text_features(self, instruction: str) -> torch.Tensor:
        """The instruction's features, float32 ``(1, text_dim)`` on :attr:`device`, encoded once per distinct string
        (an LRU of :data:`~foundations.lru.MAX_INSTRUCTIONS`)."""
        feat = self._text.get(instruction)
        if feat is None:
            feat = self.backbone.encode_instruction([instruction], self.instruction_streams).to(self.device)
            self._text[instruction] = feat
        return feat

    def encode_frames(self, images: Any, instruction: str) -> torch.Tensor:
        """Per-frame features of uint8 ``(N, H, W, 3)`` frames: float32 ``(N, frame_dim)``."""
        return self.backbone.encode_frames(images, self.frame_streams, instruction)

    def encode_groups(self, frame_sets: list[np.ndarray], instructions: list[str]
                      ) -> tuple[list[torch.Tensor], list[float]]:
        """Encode several environments' frames with as few backbone calls as possible: one per instruction when
        the frame streams read it, else one per frame size.

        Args:
            frame_sets: per environment, uint8 ``(N_i, H, W, 3)``.
            instructions: per environment, its instruction.

        Returns:
            ``(features, ms)``: per environment float32 ``(N_i, frame_dim)``, and the milliseconds of the backbone
            call it was part of.
        """
        conditioned = any(STREAMS[s][0] == "frame+instruction" for s in self.frame_streams)
        groups: dict[tuple[str, tuple[int, ...]], list[int]] = collections.defaultdict(list)
        for i, (frames, instruction) in enumerate(zip(frame_sets, instructions)):
            groups[(instruction if conditioned else "", frames.shape[1:])].append(i)
        features: list[torch.Tensor] = [torch.empty(0)] * len(frame_sets)
        ms = [0.0] * len(frame_sets)
        for members in groups.values():
            start = time.perf_counter()
            feats = self.encode_frames(np.concatenate([frame_sets[i] for i in members]), instructions[members[0]])
            elapsed = (time.perf_counter() - start) * 1e3
            for i, part in zip(members, torch.split(feats, [len(frame_sets[i]) for i in members])):
                features[i], ms[i] = part, elapsed
        return features, ms

    def run_head(self, frames: torch.Tensor, text: torch.Tensor) -> np.ndarray:
        """The head on a batch of windows: ``frames`` float32 ``(B, T, frame_dim)``, ``text`` float32
        ``(B, text_dim)`` -> float32 ``(B, chunk_size, action_dim)`` normalised actions."""
        with torch.inference_mode(), autocast(self.device):
            out = self.head(frames, text)
        return out.float().cpu().numpy().astype(np.float32)

    def predict(self, episodes: list[VLAEpisode], instructions: list[str]) -> list[np.ndarray]:
        """Encode the episodes' pending frames and predict from their windows: per episode float32
        ``(chunk_size, action_dim)`` normalised actions; the milliseconds go to the episodes'
        ``backbone_latencies_ms[-1]`` / ``head_latencies_ms[-1]``. One head forward per window length (an unpadded
        history is shorter at the start of an episode)."""
        waiting = [i for i, ep in enumerate(episodes) if ep.history.pending]
        if waiting:
            feats, ms = self.encode_groups([episodes[i].history.take_pending() for i in waiting],
                                           [instructions[i] for i in waiting])
            for i, f, t in zip(waiting, feats, ms):
                episodes[i].history.extend(f)
                episodes[i].backbone_latencies_ms[-1] += t
        windows = [ep.history.features() for ep in episodes]
        by_length: dict[int, list[int]] = collections.defaultdict(list)
        for i, window in enumerate(windows):
            by_length[len(window)].append(i)
        chunks: list[np.ndarray] = [np.empty(0, np.float32)] * len(episodes)
        for members in by_length.values():
            frames = torch.stack([windows[i] for i in members]).to(self.device)
            text = torch.cat([self.text_features(instructions[i]) for i in members])
            start = time.perf_counter()
            out = self.run_head(frames, text)
            elapsed = (time.perf_counter() - start) * 1e3
            for j, i in enumerate(members):
                chunks[i] = out[j]
                episodes[i].head_latencies_ms[-1] += elapsed
        return chunks


class VLAPolicy(BatchablePolicy):
    """A frozen backbone + an action head, executed like the robot's deployment.

    The model (backbone, head, text cache: the execution backend :attr:`forward`) is shared; each environment's
    episode is a :class:`VLAEpisode`, so :meth:`act_batch` advances many environments with one backbone call per
    instruction and one head forward per window length (:mod:`policies.batching`); :meth:`act` is the batch of one
    on :attr:`episode`. The step (history, chunk execution, first-step rule, instruction fallback, post-processing)
    is this class's whatever runs the forward pass: PyTorch (:class:`TorchForward`, from ``head`` and ``backbone``)
    or an exported graph (:class:`policies.onnx_policy.OnnxPolicy`).

    Args:
        head: the action head (the backbone must offer its streams at its widths).
        backbone: a frozen :class:`~policies.backbones.Backbone`.
        execution: ``"first"``, ``"all"`` or ``"ensemble"`` (see the module docstring).
        window_size: frames kept in the history (the head reads its own ``window_size`` newest of them).
        postprocess: :class:`PostProcessing` (default: all four steps on).
        ensemble_k: temporal-ensembling constant for ``execution="ensemble"``.
        device: where the head runs (the backbone has its own device); float32 weights, run under bf16 autocast
            on CUDA (:func:`policies.backbones.base.autocast`), plain float32 elsewhere.
        forward: another execution backend (a :class:`TorchForward` subclass) instead of ``head`` + ``backbone``
            (then both are ``None`` and ``device`` is the backend's).

    Attributes:
        forward: the execution backend.
        episode: the :class:`VLAEpisode` that :meth:`reset` / :meth:`act` drive; its fields are readable here too
            (``history``, ``chunks``, ``backbone_latencies_ms``, ``head_latencies_ms``, ``num_predictions``,
            ``last_chunk``).
        checkpoint: the :class:`~policies.checkpoints.Checkpoint` the head was loaded from, or ``None``.
        settings: ``robovlms``: the :class:`~policies.backbones.robovlms.RoboVLMsSettings` it runs with.

    Raises:
        ConfigError: unknown ``execution``, ``window_size < 1``, or a backbone whose stream widths differ from the
            head's. MissingStreamError: the backbone lacks a stream the head reads. TypeError: neither ``head`` and
            ``backbone`` nor ``forward``.
    """

    def __init__(self, head: ActionHead | None = None, backbone: Backbone | None = None, *, execution: str = "first",
                 window_size: int = 8, postprocess: PostProcessing | None = None,
                 ensemble_k: float = DEFAULT_ENSEMBLE_K, device: str | torch.device = "cpu",
                 forward: TorchForward | None = None) -> None:
        if execution not in EXECUTION_MODES:
            raise ConfigError(f"execution must be one of {EXECUTION_MODES}, got {execution!r}")
        if forward is None:
            if head is None or backbone is None:
                raise TypeError("VLAPolicy needs a head and a backbone, or a forward= backend")
            forward = TorchForward(head, backbone, device)
        self.forward = forward
        self.execution = execution
        self.window_size = int(window_size)
        self.ensemble_k = float(ensemble_k)
        self.postprocess = postprocess or PostProcessing()
        self.checkpoint: Checkpoint | None = None
        self.settings: Any = None  # robovlms: the RoboVLMsSettings of its config JSON
        super().__init__()

    # the backend's model, as attributes of the policy
    head = property(lambda self: self.forward.head)
    backbone = property(lambda self: self.forward.backbone)
    device = property(lambda self: self.forward.device)
    frame_streams = property(lambda self: self.forward.frame_streams)
    instruction_streams = property(lambda self: self.forward.instruction_streams)
    # the single-environment episode's fields, as attributes of the policy
    history = property(lambda self: self.episode.history)
    chunks = property(lambda self: self.episode.chunks)
    backbone_latencies_ms = property(lambda self: self.episode.backbone_latencies_ms)
    head_latencies_ms = property(lambda self: self.episode.head_latencies_ms)
    num_predictions = property(lambda self: self.episode.num_predictions)
    last_chunk = property(lambda self: self.episode.last_chunk)

    @property
    def action_dim(self) -> int:
        """2 (``linear_x, linear_y``) or 3 (+ ``angular_z``)."""
        return self.forward.action_dim

    @property
    def chunk_size(self) -> int:
        """Actions per head call."""
        return self.forward.chunk_size

    def new_episode(self) -> VLAEpisode:
        """A fresh :class:`VLAEpisode` for one more environment."""
        return VLAEpisode(FrameHistory(self.window_size, pad=self.forward.pad_history),
                          ChunkExecutor(self.forward.chunk_size, self.ensemble_k))

    def start_episode(self, episode: VLAEpisode, instruction: str) -> None:
        """Reset ``episode`` for a new episode with ``instruction`` (its text features are encoded now)."""
        episode.reset(instruction)
        self.forward.text_features(instruction)

    def check_frame(self, image: Any) -> np.ndarray:
        """An observation's frame as the backend takes it, uint8 ``(H, W, 3)`` (the batch server checks each
        request's frame with it, so a bad frame fails its own request only).

        Raises:
            MobileVLAError (a ``ValueError``): a frame the backend cannot take (dtype, shape, size).
        """
        return self.forward.check_frame(image)

    def encode_frames(self, images: Any, instruction: str) -> torch.Tensor:
        """This policy's per-frame features of uint8 ``(N, H, W, 3)`` frames: float32 ``(N, frame_dim)``."""
        return self.forward.encode_frames(images, instruction)

    def encode_groups(self, frame_sets: list[np.ndarray], instructions: list[str]
                      ) -> tuple[list[torch.Tensor], list[float]]:
        """:meth:`TorchForward.encode_groups`: per environment float32 ``(N_i, frame_dim)`` and milliseconds."""
        return self.forward.encode_groups(frame_sets, instructions)

    def advance(self, episodes: list[VLAEpisode], observations: list[Mapping[str, Any]],
                frame_features: list[torch.Tensor | None] | None = None) -> list[np.ndarray]:
        """Advance each episode one step and return the actions to execute in normalised units (before
        post-processing).

        Args:
            episodes: the environments' :class:`VLAEpisode` (each at most once).
            observations: their observations, same order (``image`` is read unless a frame feature is given; the
                episode's instruction stands in for a missing or empty ``instruction``).
            frame_features: per episode, this step's frame already encoded into this policy's streams,
                ``(frame_dim,)``, or None.

        Returns:
            per episode float32 ``(action_dim,)``.

        Raises:
            MobileVLAError (a ``ValueError``): a frame the backend cannot take (:meth:`check_frame`).
        """
        features = frame_features or [None] * len(episodes)
        instructions = []
        for ep, obs, feat in zip(episodes, observations, features):
            ep.backbone_latencies_ms.append(0.0)
            ep.head_latencies_ms.append(0.0)
            if feat is not None and not ep.history.pending:
                ep.history.push_feature(feat)
            else:
                ep.history.push_image(self.forward.check_frame(obs["image"]))
            instructions.append(_instruction(obs, ep.instruction))
        needing = [i for i, ep in enumerate(episodes) if ep.chunks.needs_chunk(self.execution)]
        new = {}
        if needing:
            chunks = self.forward.predict([episodes[i] for i in needing], [instructions[i] for i in needing])
            for i, chunk in zip(needing, chunks):
                new[i] = episodes[i].last_chunk = chunk
                episodes[i].num_predictions += 1
        return [ep.chunks.take(self.execution, new.get(i)) for i, ep in enumerate(episodes)]

    def predict_normalized(self, observation: Mapping[str, Any], frame_feature: torch.Tensor | None = None
                           ) -> np.ndarray:
        """:meth:`advance` of :attr:`episode` alone: float32 ``(action_dim,)``."""
        return self.advance([self.episode], [observation], [frame_feature])[0]

    def act_batch(self, episodes: list[VLAEpisode], observations: list[Mapping[str, Any]]) -> list[np.ndarray]:
        """:meth:`advance`, then post-processing: per episode float32 ``(action_dim,)`` in label units."""
        actions = []
        for ep, action in zip(episodes, self.advance(episodes, observations)):
            actions.append(self.postprocess(action, ep.step))
            ep.step += 1
        return actions

    def backbone_share(self) -> float:
        """Fraction of this episode's ``act()`` time spent in the backbone (``nan`` before the first step)."""
        total = sum(self.latencies_ms)
        return sum(self.backbone_latencies_ms) / total if total > 0 else math.nan


@dataclasses.dataclass
class EnsembleEpisode:
    """The per-episode state of an :class:`EnsemblePolicy`: each member's :class:`VLAEpisode` and the step."""

    first: VLAEpisode
    second: VLAEpisode
    step: int = 0


class EnsemblePolicy(BatchablePolicy):
    """Weighted average of two separately trained VLA policies with a fixed weight (0.6 on the first, as seed 000's
    ``HybridEnsembleModel`` starts; its learnable-weight version is the head ``hybrid-ensemble-recon``).

    Each step both policies advance (each with its own history and execution mode) and return normalised
    actions ``a1``, ``a2``; the ensemble returns ``post(weight * s1 * a1 + (1 - weight) * s2 * a2)``, ``s1``, ``s2``
    the members' own de-normalisation (:func:`output_scale`; 1 when a member's is off), ``post`` the rest. When both share
    one backbone object and read the same streams, the frame is encoded once.

    Raises:
        ConfigError: ``weight`` outside [0, 1] or policies with different ``action_dim``.
    """

    def __init__(self, first: VLAPolicy, second: VLAPolicy, weight: float = 0.6,
                 postprocess: PostProcessing | None = None) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"ensemble weight must be in [0, 1], got {weight}")
        if first.action_dim != second.action_dim:
            raise ConfigError(f"ensemble members disagree on action_dim: {first.action_dim} vs {second.action_dim}")
        self.first, self.second, self.weight = first, second, float(weight)
        self.postprocess = postprocess or PostProcessing()
        super().__init__()

    @property
    def action_dim(self) -> int:
        """Shared ``action_dim`` of the members."""
        return self.first.action_dim

    @property
    def device(self) -> torch.device:
        """The first member's device (both are built with the same one)."""
        return self.first.device

    def new_episode(self) -> EnsembleEpisode:
        """A fresh :class:`EnsembleEpisode` (the members' own :attr:`VLAPolicy.episode` stay theirs)."""
        return EnsembleEpisode(self.first.new_episode(), self.second.new_episode())

    def start_episode(self, episode: EnsembleEpisode, instruction: str) -> None:
        """Reset both members' episodes."""
        self.first.start_episode(episode.first, instruction)
        self.second.start_episode(episode.second, instruction)
        episode.step = 0

    def act_batch(self, episodes: list[EnsembleEpisode], observations: list[Mapping[str, Any]]) -> list[np.ndarray]:
        """Per episode the post-processed mix of both members' normalised actions, float32 ``(action_dim,)``."""
        features: list[torch.Tensor | None] | None = None
        shared = (self.first.backbone is self.second.backbone and self.first.frame_streams == self.second.frame_streams
                  and self.first.execution != "all" and self.second.execution != "all")
        if shared:
            images = [as_uint8_nhwc(obs["image"]) for obs in observations]
            encoded, ms = self.first.encode_groups(images, [_instruction(o, ep.first.instruction)
                                                            for o, ep in zip(observations, episodes)])
            features = [f[0] for f in encoded]
        # each member in label units as its source model de-normalises (its own post-processing's scale)
        s1, s2 = (m.postprocess.scale if m.postprocess.denormalize else 1.0 for m in (self.first, self.second))
        a1 = self.first.advance([ep.first for ep in episodes], observations, features)
        a2 = self.second.advance([ep.second for ep in episodes], observations, features)
        actions = []
        for i, ep in enumerate(episodes):
            if shared:
                ep.first.backbone_latencies_ms[-1] += ms[i]
            actions.append(self.postprocess(self.weight * s1 * a1[i] + (1.0 - self.weight) * s2 * a2[i], ep.step))
            ep.step += 1
        return actions

    def close(self) -> None:
        """Close both members."""
        self.first.close()
        self.second.close()


# ----------------------------------------------------------------------------------------- factories

#: Heads that read one frame and share a parameter tree, so one's checkpoint fits the other.
SAME_TREE = ({"case1", "case3"},)


#: The team's single-frame heads whose source models were trained on the robot's raw labels (``linear_x``,
#: ``linear_y`` in ``{0, +-1.15}``: the team's loaders feed ``actions[:, :2]`` as stored) and evaluated on raw
#: outputs: loaded from the team's own files, their output is already in label units (no x1.15).
RAW_LABEL_HEADS = frozenset({"case1", "case1-v1", "case2", "case3", "hybrid", "pure-kosmos2"})


def output_scale(head: str, ckpt: Checkpoint | None, settings: Any = None) -> tuple[float, str]:
    """``(scale, source)``: the factor that turns head ``head``'s output into label units, as its source model's
    own inference does, and where that comes from.

    - ``robovlms``: the RoboVLMs config's (``norm_action``: ``unnoramalize_action(raw, -1.15, 1.15)``, else
      ``scale_factor``; default 1.15), as the team's server;
    - a :data:`RAW_LABEL_HEADS` head from a team file (``.pth`` or a bare state dict): 1, trained on raw labels;
    - every other head (the project's ``.safetensors``, the bundled weights, a fresh head): 1.15, trained on labels
      clamped to [-1, 1] (:class:`sim.data.dataset` ``clamp=1.0``).
    """
    if head == "robovlms":
        scale = settings.scale if settings is not None else ACTION_LABEL
        return float(scale), "the RoboVLMs server's de-normalisation"
    if ckpt is not None and ckpt.format in ("pth", "state_dict") and head in RAW_LABEL_HEADS:
        return 1.0, "none: the team's file, trained on raw labels +-1.15"
    return ACTION_LABEL, "the head was trained on labels clamped to [-1, 1]"


def robovlms_settings(ckpt: Checkpoint | None, config: str | Path | Mapping[str, Any] | None = None) -> Any:
    """The :class:`~policies.backbones.robovlms.RoboVLMsSettings` a ``robovlms`` policy runs with: from ``config``
    (the team's config JSON), else the checkpoint's Lightning ``hyper_parameters``, else the defaults with the
    head's sizes (``hidden_size``, ``num_layers``, ``chunk_size``) read from the checkpoint's tensors, so a
    ``.ckpt`` loads without its config when its widths say what it is (exp17: hidden 1024, chunk 1).

    Raises:
        RoboVLMsConfigError: an unusable config (named by file and field).
    """
    from policies.backbones.robovlms import RoboVLMsSettings

    hparams = (ckpt.meta.get("hyper_parameters") or {}) if ckpt is not None else {}
    team_config = config if config is not None else hparams.get("configs", hparams) or None
    if team_config and (not isinstance(team_config, Mapping) or "act_head" in team_config):
        return RoboVLMsSettings.from_config(team_config)
    settings = RoboVLMsSettings()
    if ckpt is None:
        return settings
    sizes = head_class("robovlms").config_from_state_dict(ckpt.state_dict, {"action_dim": settings.action_dim})
    found = {k: int(sizes[k]) for k in ("hidden_size", "num_layers", "chunk_size") if k in sizes}
    return dataclasses.replace(settings, **found, source="defaults; sizes read from the checkpoint's tensors"
                               if found else None)


def resolve_backbone(backbone: str, head: str, ckpt: Checkpoint | None) -> str:
    """The backbone name for ``backbone="auto"``: the one a project checkpoint records; ``kosmos2`` for a team
    checkpoint (its heads read Kosmos-2 features), for one carrying frozen Kosmos-2 weights and for ``robovlms``;
    else ``lite`` (the bundled weights)."""
    if backbone != "auto":
        return backbone
    if ckpt is not None and ckpt.backbone:
        return ckpt.backbone
    if head == "robovlms" or (ckpt is not None and (ckpt.format != "safetensors" or "kosmos2" in ckpt.frozen_weights())):
        return "kosmos2"
    return "lite"


def _check_head_name(head: str, ckpt: Checkpoint) -> None:
    found = ckpt.detected_head()
    if found is None or found == head or any({found, head} <= tree for tree in SAME_TREE):
        return
    from policies.heads import provenance

    raise CheckpointMismatchError(f"{ckpt.path}: holds a {found!r} head ({provenance(found)}), not {head!r}; "
                                  f"use --policy {found}")


def head_config_values(head: str, ckpt: Checkpoint | None, widths: Mapping[str, int],
                       fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Config values of head ``head``: the backbone's stream widths, then the checkpoint's config (sidecar or
    ``model_config``), then ``fixed`` (e.g. a RoboVLMs config's sizes), completed with what the checkpoint's
    tensor shapes imply (:meth:`~policies.heads.base.ActionHead.config_from_state_dict`)."""
    cls = head_class(head)
    saved = {CONFIG_ALIASES.get(k, k): v for k, v in ((ckpt.head_config or {}) if ckpt else {}).items()}
    fields = config_fields(head)
    provisional = config_from_dict(head, {k: v for k, v in saved.items() if k in fields})
    values: dict[str, Any] = {}
    for stream, field in (*cls.frame_inputs(provisional), *cls.instruction_inputs(provisional)):
        if stream in widths:
            values[field] = widths[stream]
    values.update(saved)
    values.update(fixed)
    if ckpt is not None:
        values = cls.config_from_state_dict(ckpt.state_dict, values)
    return values


def _check_widths(model: ActionHead, widths: Mapping[str, int], backbone: str, ckpt: Checkpoint | None) -> None:
    cfg = model.config
    inputs = (*model.frame_inputs(cfg), *model.instruction_inputs(cfg))
    missing = [stream for stream, _ in inputs if stream not in widths]
    if missing:
        needs = "; ".join(f"{s} needs {STREAM_REMEDIES.get(s, 'another backbone')}" for s in missing)
        raise MissingStreamError(f"head {model.head_name} reads {', '.join(missing)} features, which backbone "
                                 f"{backbone!r} cannot give: {needs}")
    for stream, field in inputs:
        if int(getattr(cfg, field)) != widths[stream]:
            where = f"{ckpt.path}: " if ckpt is not None else ""
            trained = f" ({ckpt.backbone!r})" if ckpt is not None and ckpt.backbone else ""
            raise CheckpointMismatchError(
                f"{where}head {model.head_name} reads {stream} features of width {getattr(cfg, field)} ({field}) but "
                f"backbone {backbone!r} gives {widths[stream]}; use the backbone it was trained with{trained}")


def _check_types(head: str, values: Mapping[str, Any], kind: type) -> None:
    """Refuse a policy argument of the wrong type (``--policy-arg dead_zone=maybe`` would otherwise switch the
    dead-zone on, as any non-empty string is true)."""
    for name, value in values.items():
        if value is None:
            continue
        ok = isinstance(value, bool) if kind is bool else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or value == int(value))
            if kind in (int, float) else isinstance(value, kind))
        if not ok:
            wanted = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[kind]
            raise ConfigError(f"{head}: {name} must be {wanted}, got {value!r}")


def build_vla_policy(head: str, *, backbone: str | Backbone = "auto", backbone_path: str | Path | None = None,
                     clip_path: str | Path | None = None, checkpoint: str | Path | None = None,
                     path: str | Path | None = None, key_map: str | Path | Mapping[str, str] | None = None,
                     config: str | Path | Mapping[str, Any] | None = None, device: str = "cpu",
                     execution: str = "first", window_size: int | None = None, action_dim: int | None = None,
                     seed: int = DEFAULT_SEED, ensemble_k: float = DEFAULT_ENSEMBLE_K, denormalize: bool = True,
                     clip: bool = True, dead_zone: bool = True, zero_first_step: bool = True,
                     head_overrides: Mapping[str, Any] | None = None, num_threads: int | None = None,
                     use_bundled: bool = True, compile_vision: str = "off", **head_fields: Any) -> VLAPolicy:
    """Build a :class:`VLAPolicy` for head ``head`` (a :data:`policies.heads.HEADS` name).

    The order matters for big team files: the checkpoint is memory-mapped, the head is built and loaded strictly,
    and its input widths are checked against the backbone's (from configs and shapes alone) **before** the
    backbone is built.

    Args:
        head: head registry name.
        backbone: ``"auto"`` (default: :func:`resolve_backbone`), ``"lite"``, ``"kosmos2"``, ``"tiny-kosmos2"``, or a
            built :class:`Backbone`.
        backbone_path: ``kosmos2``: local folder or cached hub id (the processor's source when the checkpoint
            carries the Kosmos-2 weights); ``lite``: EfficientNet-Lite0 ``.pth``.
        clip_path: CLIP weights for the ``clip_*`` streams when the checkpoint carries none (open_clip file or
            ``save_pretrained`` folder).
        checkpoint: head weights (``.safetensors`` + sidecar, team ``.pth``, Lightning ``.ckpt``); a head trained
            with ``sim.train --lora`` also carries its backbone's LoRA adapter, merged into a copy of the backbone
            built for it (:func:`policies.backbones.lora.merge_lora`). ``None`` = the
            bundled weights (:func:`policies.checkpoints.default_checkpoint`) on the ``lite`` backbone unless
            ``head_overrides`` asks for another architecture; otherwise a randomly initialised head seeded with
            ``seed`` (the global torch RNG is left untouched).
        path: alias of ``checkpoint`` (the registry passes ``"case1:FILE"`` as ``path=FILE``).
        key_map: key renames for a layout this project does not know (dict or JSON file,
            :func:`policies.checkpoints.load_key_map`).
        config: ``robovlms`` only: the team's RoboVLMs config JSON (path or dict) as their server gets it
            (``VLA_CONFIG_PATH``); default: the values of ``mobile_vla_left_chunk10_20251218.json``.
        device: torch device for backbone and head (``"cpu"``, ``"cuda"``, ``"cuda:N"``).
        execution: ``"first"``, ``"all"`` or ``"ensemble"``.
        window_size: history length in frames (default 8, or the RoboVLMs config's).
        action_dim: 2 (``linear_x, linear_y``) or 3 (the z-axis-weight-0.05 variant); ``None`` = the
            checkpoint's, else 2.
        seed: torch seed of a randomly initialised head.
        ensemble_k: temporal-ensembling constant.
        denormalize: post-processing switch: multiply by the output scale (model units -> label units).
        clip: post-processing switch: clip every component to the output clip.
        dead_zone: post-processing switch: zero components under the dead-zone.
        zero_first_step: post-processing switch: zeros at the first step of an episode.
        head_overrides: extra head config fields (e.g. ``{"chunk_size": 4}``) for a fresh head.
        num_threads: if given, ``torch.set_num_threads(num_threads)`` (process-wide!). On a busy 2-core
            machine (physics + other workers) ``1`` is often several times faster than torch's default.
        use_bundled: without ``checkpoint``, load the bundled weights (False: a fresh head, e.g. for training).
        compile_vision: ``torch.compile`` the backbone's frozen vision tower(s): ``"off"`` (default), ``"default"``
            (inductor), ``"reduce-overhead"`` (inductor + CUDA graphs on CUDA; plain inductor elsewhere) or
            ``"cuda-graph"`` (CUDA graphs without inductor; CUDA only) (:mod:`policies.backbones.compile`). The
            graphs are compiled while the policy is built (batch 1 and 2), and the compiled backbone is cached
            apart from eager ones. Only for a backbone given by name.
        head_fields: further head config fields, as ``head_overrides`` (so ``--policy-arg hidden_dim=64`` works on
            every command).

    Raises:
        UnknownHeadError / UnknownBackboneError: bad names.
        CheckpointError: unreadable or mismatching checkpoint (keys, shapes, head name, backbone, widths).
        MissingStreamError: the backbone cannot give a stream the head reads (the message says what to pass).
        RoboVLMsConfigError: an unusable RoboVLMs config.
        Kosmos2LoadError / ClipWeightsError / FileNotFoundError: the backbone's weights or processor are missing.
        TypeError: both ``checkpoint`` and ``path`` given, or ``config`` for another head than ``robovlms``.
        ConfigError: a head config field the head does not have; a bad ``compile_vision`` (unknown mode, a
            CUDA-only mode off CUDA, no C++ compiler for inductor on the CPU, or a built ``backbone``).
    """
    from policies.backbones.compile import check_compile_mode
    from policies.backbones.compile import compile_vision as compile_towers

    if checkpoint is not None and path is not None:
        raise TypeError("give either checkpoint= or path=, not both")
    checkpoint = checkpoint if checkpoint is not None else path
    cls = head_class(head)  # fail fast on an unknown head name
    if config is not None and head != "robovlms":
        raise TypeError(f"config= is the RoboVLMs config JSON of the robovlms policy, not of {head}")
    _check_types(head, {"denormalize": denormalize, "clip": clip, "dead_zone": dead_zone,
                        "zero_first_step": zero_first_step, "use_bundled": use_bundled}, bool)
    _check_types(head, {"window_size": window_size, "action_dim": action_dim, "seed": seed, "num_threads": num_threads},
                 int)
    _check_types(head, {"ensemble_k": ensemble_k}, float)
    _check_types(head, {"device": device, "compile_vision": compile_vision}, str)
    check_compile_mode(compile_vision, device, f"{head}: compile_vision")
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    overrides = {**(head_overrides or {}), **head_fields}
    unknown = sorted(set(overrides) - config_fields(head))
    if unknown:
        raise ConfigError(f"{head} has no argument or config field {', '.join(unknown)}; config fields: "
                          f"{', '.join(sorted(config_fields(head)))}")
    built = backbone if isinstance(backbone, Backbone) else None
    if built is not None and compile_vision != "off":
        raise ConfigError(f"{head}: compile_vision applies to a backbone given by name, not to a built one (compile "
                          "that with policies.backbones.compile.compile_vision)")
    if checkpoint is None and use_bundled and not overrides and built is None and backbone in ("auto", "lite"):
        checkpoint = default_checkpoint(head, "lite")  # bundled weights describe the lite backbone
    ckpt = load_checkpoint(checkpoint, key_map) if checkpoint is not None else None
    if ckpt is not None:
        _check_head_name(head, ckpt)
    bb_name = built.name if built is not None else resolve_backbone(str(backbone), head, ckpt)
    if ckpt is not None and ckpt.backbone is not None and ckpt.backbone != bb_name:
        raise CheckpointMismatchError(f"{ckpt.path}: head was trained on backbone {ckpt.backbone!r}, not {bb_name!r}")
    weights = ckpt.frozen_weights() if ckpt is not None else {}
    widths = built.stream_dims() if built is not None else stream_widths(bb_name, backbone_path, weights=weights,
                                                                        clip_path=clip_path)
    settings = None
    fixed: dict[str, Any] = {}
    if head == "robovlms":
        settings = robovlms_settings(ckpt, config)
        fixed = settings.head_config()
    try:
        values = head_config_values(head, ckpt, widths, fixed)
        config_from_dict(head, values).validate()  # what the file says must make a valid config by itself
    except (ConfigError, TypeError) as exc:
        if ckpt is None:
            raise
        raise CheckpointFormatError(f"{ckpt.config_file}: head config: {exc}") from None
    if action_dim is not None:
        saved = values.get("action_dim")
        if ckpt is not None and saved is not None and int(saved) != int(action_dim):
            raise CheckpointMismatchError(
                f"{ckpt.path}: checkpoint predicts action_dim={saved}, but action_dim={action_dim} was requested")
        values["action_dim"] = int(action_dim)
    values.update(overrides)
    head_config = config_from_dict(head, values)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(head_config)
    if ckpt is not None:
        load_into_head(model, ckpt)
    _check_widths(model, widths, bb_name, ckpt)
    lora = ckpt.backbone_lora if ckpt is not None else None
    if built is not None:
        if lora is not None:
            raise ConfigError(f"{ckpt.path}: carries a LoRA adapter for its backbone; give the backbone by name, "
                              "not as a built object (it is adapted when the policy is built)")
        bb = built
    elif head == "robovlms":
        bb = _robovlms_backbone(bb_name, backbone_path, ckpt, settings, device, compile_vision)
    else:
        def build_backbone(cache: bool = True, compile_mode: str = compile_vision) -> Backbone:
            return make_backbone(bb_name, backbone_path, device, streams=(*model.frame_streams,
                                                                         *model.instruction_streams),
                                 weights=weights, weights_id=ckpt.weights_id if weights else "", clip_path=clip_path,
                                 cache=cache, compile_vision=compile_mode)

        if lora is None:
            bb = build_backbone()
        else:  # its own adapted copy, shared by the policies of this checkpoint only
            from policies.backbones import shared_backbone
            from policies.backbones.lora import merge_lora

            key = ("lora", bb_name, str(backbone_path or ""), device_key(device), ckpt.weights_id,
                   model.frame_streams, model.instruction_streams, str(clip_path or ""), compile_vision)
            bb = shared_backbone(key, lambda: compile_towers(  # compiled after the merge: the merged weights
                merge_lora(build_backbone(cache=False, compile_mode="off"), lora), compile_vision,
                warmup=model.frame_streams))
    scale, scale_source = output_scale(head, ckpt, settings)
    post = PostProcessing(denormalize=denormalize, clip=clip, dead_zone=dead_zone, zero_first_step=zero_first_step,
                          scale=scale, scale_source=scale_source)
    window = window_size if window_size is not None else (settings.window_size if settings is not None else 8)
    policy = VLAPolicy(model, bb, execution=execution, window_size=window, postprocess=post,
                       ensemble_k=ensemble_k, device=device)
    policy.checkpoint = ckpt
    policy.settings = settings
    policy.name = head
    return policy


def _robovlms_backbone(name: str, path: str | Path | None, ckpt: Checkpoint | None, settings: Any,
                       device: str, compile_vision: str = "off") -> Backbone:
    """The :class:`~policies.backbones.robovlms.RoboVLMsBackbone`: Kosmos-2 from the checkpoint's ``backbone.*``
    tensors (or ``path`` / the hub cache / the toy model), and its learned ``action_token``; its ``vision_model``
    compiled with ``compile_vision`` (:func:`policies.backbones.compile.compile_vision`, cached apart from eager
    ones)."""
    from policies.backbones import shared_backbone
    from policies.backbones.compile import compile_vision as compile_towers
    from policies.backbones.kosmos2 import load_kosmos2_parts
    from policies.backbones.robovlms import RoboVLMsBackbone

    if name not in ("kosmos2", "tiny-kosmos2"):
        raise MissingStreamError(f"robovlms runs on a Kosmos-2 backbone (kosmos2 or tiny-kosmos2), not {name!r}")
    if ckpt is not None and "action_token" not in ckpt.extra:
        raise CheckpointMismatchError(f"{ckpt.path}: has no action_token (model.action_token in the team's "
                                      ".ckpt): it is not a RoboVLMs continuous-action checkpoint")

    def build() -> Backbone:
        weights = ckpt.frozen_weights().get("kosmos2") if ckpt is not None else None
        model, processor = load_kosmos2_parts(name, path, weights)
        token = (ckpt.extra["action_token"] if ckpt is not None
                 else torch.zeros(int(model.config.text_config.embed_dim)))  # RoboVLMs' initial value
        backbone = RoboVLMsBackbone(model, processor.tokenizer, token, settings, name=name, device=device)
        return compile_towers(backbone, compile_vision, warmup=("action_token",))

    key = ("robovlms", name, "" if path is None else str(path), device_key(device),
           ckpt.weights_id if ckpt is not None else "", settings, compile_vision)
    return shared_backbone(key, build)


def ensemble(first: str = "case2", second: str = "lstm-recon", weight: float = 0.6, *,
             first_checkpoint: str | Path | None = None, second_checkpoint: str | Path | None = None,
             **kwargs: Any) -> EnsemblePolicy:
    """Ensemble of two VLA heads, weight 0.6 on the first (default case2 + lstm-recon).

    ``kwargs`` are shared by both members (backbone, device, execution, window_size, action_dim, ...); the
    post-processing switches apply once, to the mixed action, except de-normalising, which each member does as its
    source model (:func:`output_scale`). Member checkpoints come from
    ``first_checkpoint`` / ``second_checkpoint``.

    Raises:
        TypeError: ``checkpoint``/``path`` given (ambiguous for two members).
    """
    if kwargs.get("checkpoint") is not None or kwargs.get("path") is not None:
        raise TypeError("ensemble takes first_checkpoint= and second_checkpoint=, not checkpoint=/path=")
    kwargs.pop("checkpoint", None)
    kwargs.pop("path", None)
    denormalize = kwargs.pop("denormalize", True)
    # each member de-normalises as its source model does (:func:`output_scale`); the mix is in label units
    post = PostProcessing(denormalize=False, clip=kwargs.pop("clip", True), dead_zone=kwargs.pop("dead_zone", True),
                          zero_first_step=kwargs.pop("zero_first_step", True))
    member_post = {"denormalize": denormalize, "clip": False, "dead_zone": False, "zero_first_step": False}
    one = build_vla_policy(first, checkpoint=first_checkpoint, **member_post, **kwargs)
    two = build_vla_policy(second, checkpoint=second_checkpoint, **member_post, **kwargs)
    policy = EnsemblePolicy(one, two, weight=weight, postprocess=post)
    policy.name = "ensemble"
    return policy


__all__ = [
    "EXECUTION_MODES", "RAW_LABEL_HEADS", "ChunkExecutor", "EnsembleEpisode", "EnsemblePolicy", "FrameHistory",
    "PostProcessing", "TemporalEnsembler", "TorchForward", "VLAEpisode", "VLAPolicy", "build_vla_policy", "ensemble",
    "output_scale", "resolve_backbone", "robovlms_settings",
]
