"""Behaviour cloning of a VLA head on H5 episodes, with the frozen backbone's features cached on disk (the
library of ``python -m sim.train``).

Phase 1 encodes every frame once with the frozen backbone and caches the features under ``--cache-dir``, keyed by
backbone, file (path, size, modification time) and frame; later runs and epochs read the cache. Phase 2 trains the
head alone on windows of cached features, with the team's recipe (``shared/seeds/002``, ``000``): AdamW, cosine
schedule with linear warm-up, HuberLoss(delta=0.1), gradient clipping 1.0, early stopping on validation loss,
train/validation split by episode. Outputs in ``--out``: ``best.safetensors`` + ``best.json`` (the project's
checkpoint format, loadable with ``make_policy(NAME, checkpoint=...)``), ``metrics.csv`` (one row per epoch) and
``last.pt`` (the resumable state, read back with ``torch.load(weights_only=True)``).

Labels: frame ``t`` of an episode pairs with the chunk of actions ``t, t+1, ...`` (the collector records the action
taken after each image), clamped to [-1, 1] like the team's loaders, first ``action_dim`` axes; steps past the end
of the episode are masked.

The team's training ideas, each an option (``../shared/seeds/000_*.txt``, ``001_*.txt``):

- ``loss="final-fixed"``: seed 000's ``compute_optimized_loss``, MSE + 0.1 L1 on actions weighted by
  ``[1, 1, 0.05]`` (:func:`step_losses`);
- ``sampling="hard-negative"``: seed 001's Option 3, 30 % of the draws from the highest-loss windows
  (:mod:`sim.training.sampling`);
- ``distance_augmentation``: seed 000's ``DistanceAwareAugmentation``, close 8x / medium 5x / far 8x copies of each
  training episode (:mod:`sim.training.augmentation`), their features cached like the originals';
- ``lora``: LoRA adapters (``peft``) on the top layers of the backbone's vision tower, trained with the head
  (:mod:`policies.backbones.lora`): the frozen layers below them are cached per frame instead of the ``image``
  feature, and the adapter is saved in the head's checkpoint;
- the three strategies' dropout / lr / weight decay / epochs: :mod:`sim.training.recipes`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import pickle
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm import tqdm

from foundations.errors import ConfigError, MobileVLAError
from foundations.files import atomic_write
from sim.data import h5format
from sim.data.dataset import Episode, list_episode_files, load_episodes, split_episodes
from sim.data.h5format import InvalidEpisodeError
from sim.training.augmentation import AugmentedCopy, check_factors, episode_copies
from sim.training.sampling import DEFAULT_FRACTION, DEFAULT_POOL, HardNegativeSampler


class InvalidTrainingStateError(MobileVLAError, ValueError):
    """``--resume``'s ``last.pt`` is not a training state this code wrote (nothing in it is run)."""


DEFAULT_CACHE = Path(os.environ.get("MOBILE_VLA_SIM_CACHE", Path.home() / ".cache" / "mobile-vla-sim")) / "features"
#: Training losses: the project's HuberLoss(delta=0.1) (seed 002's recipe) and seed 000's Final-Fixed loss.
LOSSES = ("huber", "final-fixed")
#: Window sampling modes of :func:`train`.
SAMPLING_MODES = ("random", "stratified", "sequential", "hard-negative")
#: Axis weights of seed 000's ``compute_optimized_loss`` (``z_weight = [1.0, 1.0, 0.05]``).
FINAL_FIXED_LOSS_WEIGHTS = (1.0, 1.0, 0.05)


# ------------------------------------------------------------------------------------------- feature cache
class FeatureCache:
    """Per-episode frame features of a frozen backbone, one float32 ``(N, width)`` ``.npy`` per file and stream.

    The key hashes the backbone name, the stream, the instruction (for streams that read it), the episode
    file's resolved path, size and modification time, and the augmented copy (:class:`~sim.training.augmentation.
    AugmentedCopy`) if any, so an edited or regenerated file is encoded again; features computed in another dtype
    than float32 (a Kosmos-2 backbone in bf16 on CUDA) are keyed apart from the CPU's float32 ones. Streams missing for a file are
    computed in one backbone call (``prefetch`` adds streams other heads will need, so a backbone that derives
    several streams from one pass, like ``lite``, runs once per file). :meth:`activations` caches any other frozen
    function of the frames the same way (a LoRA trunk). Files are written atomically.
    """

    def __init__(self, root: str | Path, backbone, streams: tuple[str, ...] = ("image",),
                 prefetch: tuple[str, ...] = ()) -> None:
        from policies.backbones import STREAMS

        self.backbone, self.streams = backbone, tuple(streams)
        available = backbone.stream_dims()
        self.prefetch = tuple(s for s in dict.fromkeys(prefetch) if s in available and s not in self.streams)
        self._conditioned = {s for s in STREAMS if STREAMS[s][0] == "frame+instruction"}
        self.root = Path(root) / backbone.name
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def _path(self, episode: Path, stream: str, instruction: str, copy: AugmentedCopy | None = None) -> Path:
        stat = episode.stat()
        key = f"{self.backbone.name}|{episode.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stream}"
        if stream in self._conditioned:
            key += f"|{instruction}"
        if copy is not None:
            key += f"|{copy.tag}"
        dtype = getattr(self.backbone, "dtype", torch.float32)
        if dtype != torch.float32:
            key += f"|{dtype}"
        return self.root / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}.npy"

    def _read(self, path: Path) -> np.ndarray | None:
        if path.exists():
            try:
                return np.load(path)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a corrupt cache entry is recomputed
        return None

    @staticmethod
    def _windows(episode: Path, copy: AugmentedCopy | None, batch_size: int) -> Iterator[np.ndarray]:
        """The episode's frames (or ``copy``'s), uint8 RGB windows of at most ``batch_size``, read by windows: never
        the whole decompressed episode, augmented copies included (:meth:`AugmentedCopy.apply_windows`)."""
        windows = h5format.iter_episode_frames(episode, batch_size)
        if copy is None:
            yield from windows
            return
        yield from copy.apply_windows(windows, len(h5format.EpisodeFrames(episode)))

    def vision(self, episode: Path, instruction: str = "", batch_size: int = 32,
               copy: AugmentedCopy | None = None) -> np.ndarray:
        """The concatenated :attr:`streams` of every frame of ``episode`` (``instruction``: for streams that read
        it; ``copy``: of that augmented copy's frames instead), ``(N, width)``, computed on a miss and cached."""
        found = {s: self._read(self._path(episode, s, instruction, copy)) for s in self.streams}
        missing = [s for s, v in found.items() if v is None]
        if not missing:
            self.hits += 1
        else:
            todo = [*missing, *(s for s in self.prefetch if not self._path(episode, s, instruction, copy).exists())]
            parts = [self.backbone.encode_frames(w, todo, instruction).float().cpu().numpy()
                     for w in self._windows(episode, copy, batch_size)]
            feats = np.concatenate(parts).astype(np.float32)
            dims = self.backbone.stream_dims()
            offset = 0
            for stream in todo:
                part = feats[:, offset:offset + dims[stream]]
                offset += dims[stream]
                with atomic_write(self._path(episode, stream, instruction, copy)) as tmp:
                    np.save(tmp, part)
                if stream in found:
                    found[stream] = part
            self.misses += 1
        return np.concatenate([found[s] for s in self.streams], axis=1)

    def activations(self, episode: Path, name: str, encode, batch_size: int = 32,
                    copy: AugmentedCopy | None = None) -> np.ndarray:
        """``encode`` (uint8 ``(n, H, W, 3)`` -> float ``(n, ...)``, frozen) of every frame of ``episode`` (or of
        ``copy``'s frames), float32 ``(N, ...)``, cached under ``name``, which must identify ``encode``."""
        path = self._path(episode, name, "", copy)
        found = self._read(path)
        if found is not None:
            self.hits += 1
            return found
        out = np.concatenate([encode(w).float().cpu().numpy()
                              for w in self._windows(episode, copy, batch_size)]).astype(np.float32)
        with atomic_write(path) as tmp:
            np.save(tmp, out)
        self.misses += 1
        return out


# ------------------------------------------------------------------------------------------- windows
class FeatureWindows(Dataset):
    """Training samples over cached features: for frame ``t`` of an episode, the ``window`` most recent frame
    features (the episode's first frame repeated before its start, as :class:`policies.vla.FrameHistory` pads),
    the instruction's text feature, and the next ``chunk`` actions with a mask.

    Items: ``vision`` float32 ``(window, Dv)`` (or ``(window, ...)`` for per-frame activations of any shape),
    ``text`` ``(Dt,)``, ``actions`` ``(chunk, action_dim)`` in
    [-1, 1], ``mask`` ``(chunk,)``, ``weight`` (scalar: ``stop_weight`` for a window whose next action is the
    final stop, 1 otherwise: there is one stop per episode against ~20 presses).
    """

    def __init__(self, vision: list[np.ndarray], text: list[np.ndarray], actions: list[np.ndarray],
                 window: int, chunk: int, action_dim: int, stop_weight: float = 1.0) -> None:
        self.vision, self.text = vision, text
        self.actions = [np.clip(a[:, :action_dim], -1.0, 1.0).astype(np.float32) for a in actions]
        self.window, self.chunk, self.stop_weight = window, chunk, stop_weight
        self.index = [(e, t) for e, feats in enumerate(vision) for t in range(len(feats))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, t = self.index[i]
        feats, acts = self.vision[e], self.actions[e]
        rows = np.clip(np.arange(t - self.window + 1, t + 1), 0, None)
        steps = np.arange(t, t + self.chunk)
        mask = steps < len(acts)
        target = np.zeros((self.chunk, acts.shape[1]), np.float32)
        target[mask] = acts[steps[mask]]
        is_stop = t > 0 and t == len(acts) - 1 and not acts[t].any()
        return {"vision": torch.from_numpy(feats[rows]), "text": torch.from_numpy(self.text[e]),
                "actions": torch.from_numpy(target), "mask": torch.from_numpy(mask.astype(np.float32)),
                "weight": torch.tensor(self.stop_weight if is_stop else 1.0)}


def step_losses(pred: torch.Tensor, target: torch.Tensor, loss: str = "huber") -> torch.Tensor:
    """Loss per sample and chunk step, float ``(B, chunk)``, averaged over the action axes.

    Args:
        pred, target: float ``(B, chunk, action_dim)``, normalised units.
        loss: ``"huber"``: HuberLoss(delta=0.1) (the project's recipe, seed 002); ``"final-fixed"``: seed 000's
            ``compute_optimized_loss``, MSE + 0.1 * L1 on ``pred`` and ``target`` multiplied by
            :data:`FINAL_FIXED_LOSS_WEIGHTS` (``[1, 1, 0.05]``; its first ``action_dim`` entries).

    Raises:
        ConfigError: an unknown ``loss``.
    """
    if loss == "huber":
        return torch.nn.functional.huber_loss(pred, target, reduction="none", delta=0.1).mean(-1)
    if loss == "final-fixed":
        z = torch.tensor(FINAL_FIXED_LOSS_WEIGHTS[:pred.shape[-1]], dtype=pred.dtype, device=pred.device)
        diff = pred * z - target * z
        return (diff.pow(2) + 0.1 * diff.abs()).mean(-1)
    raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def masked_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, loss: str = "huber",
                weight: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`step_losses` averaged over unmasked chunk steps (``mask`` ``(B, chunk)``), samples weighted by
    ``weight`` ``(B,)``."""
    mask = mask if weight is None else mask * weight[:, None]
    return (step_losses(pred, target, loss) * mask).sum() / mask.sum().clamp(min=1.0)


def masked_huber(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """HuberLoss(delta=0.1) averaged over unmasked chunk steps and action axes, samples weighted by ``weight``."""
    return masked_loss(pred, target, mask, "huber", weight)


def sample_losses(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, loss: str = "huber"
                  ) -> torch.Tensor:
    """One loss per sample, float ``(B,)``: :func:`step_losses` averaged over its unmasked chunk steps."""
    return (step_losses(pred, target, loss) * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def cosine_with_warmup(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` optimizer steps, then cosine decay to 0 at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def on_device(batch: dict[str, torch.Tensor], device: str | torch.device) -> dict[str, torch.Tensor]:
    """The tensors of a :class:`FeatureWindows` batch on ``device`` (the same objects on their own device)."""
    return {key: value.to(device) for key, value in batch.items()}


def _device_of(head) -> torch.device:
    return next(head.parameters()).device


def predict(head, vision: torch.Tensor, text: torch.Tensor, split=None) -> torch.Tensor:
    """The head's chunk for a batch: ``vision`` are cached features ``(B, T, frame_dim)``, or, with a LoRA
    ``split`` (:class:`policies.backbones.lora.ImageSplit`), its trunk activations ``(B, T, ...)`` that the
    adapted top turns into ``image`` features first."""
    if split is not None:
        b, t = vision.shape[:2]
        vision = split.top(vision.flatten(0, 1)).reshape(b, t, -1)
    return head(vision, text)


def _set_training(head, split, training: bool) -> None:
    head.train(training)
    if split is not None:
        from policies.backbones.lora import set_adapter_training

        set_adapter_training(split, training)


def evaluate(head, loader, loss: str = "huber", split=None) -> tuple[float, float]:
    """Validation ``(loss, MAE)``: the mean ``loss`` per window and the mean absolute error over the unmasked
    chunk steps and the ``linear_x``, ``linear_y`` axes only (the axes the robot drives by, so 2- and 3-DoF heads
    compare), normalised units."""
    _set_training(head, split, False)
    total, mae_sum, count = 0.0, 0.0, 0.0
    with torch.no_grad():
        for batch in loader:
            batch = on_device(batch, _device_of(head))
            pred = predict(head, batch["vision"], batch["text"], split)
            total += float(masked_loss(pred, batch["actions"], batch["mask"], loss)) * len(pred)
            err = (pred[..., :2] - batch["actions"][..., :2]).abs().mean(-1) * batch["mask"]
            mae_sum += float(err.sum())
            count += float(batch["mask"].sum())
    n = len(loader.dataset)
    return total / max(1, n), mae_sum / max(1.0, count)


def window_losses(head, dataset: Dataset, loss: str = "huber", split=None, batch_size: int = 256) -> torch.Tensor:
    """Each window's loss under the current model (eval mode, unweighted), float ``(len(dataset),)``: what hard-
    negative sampling ranks."""
    _set_training(head, split, False)
    out = []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size):
            batch = on_device(batch, _device_of(head))
            pred = predict(head, batch["vision"], batch["text"], split)
            out.append(sample_losses(pred, batch["actions"], batch["mask"], loss).cpu())
    return torch.cat(out)


# ------------------------------------------------------------------------------------------- training
def train(
    policy: str,
    data: Sequence[str | Path],
    out: str | Path,
    *,
    backbone: str = "lite",
    backbone_path: str | None = None,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-4,
    weight_decay: float = 1e-3,
    warmup_fraction: float = 0.05,
    patience: int = 5,
    val_fraction: float = 0.15,
    sampling: str = "random",
    seed: int = 0,
    cache_dir: str | Path = DEFAULT_CACHE,
    stop_weight: float = 1.0,
    resume: bool = False,
    head_overrides: dict[str, Any] | None = None,
    skip_invalid: bool = False,
    progress: bool = True,
    prefetch: Sequence[str] = (),
    loss: str = "huber",
    hard_negative_fraction: float = DEFAULT_FRACTION,
    hard_negative_pool: float = DEFAULT_POOL,
    distance_augmentation: dict[str, int] | None = None,
    lora: Any = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train ``policy``'s head by behaviour cloning; returns a summary (best epoch, losses, files, cache stats).

    Args:
        prefetch: frame streams to cache alongside the head's own (for heads trained next on the same data).
        loss: ``"huber"`` or ``"final-fixed"`` (:func:`step_losses`); also the validation loss early stopping reads.
        sampling: ``"random"``, ``"stratified"`` (equal weight per scenario), ``"sequential"`` or ``"hard-negative"``
            (:class:`~sim.training.sampling.HardNegativeSampler` with ``hard_negative_fraction`` of the draws from
            the top ``hard_negative_pool`` share of the windows by loss).
        distance_augmentation: copies per training episode by distance (``{"close": 8, "medium": 5, "far": 8}``:
            :data:`sim.training.augmentation.DISTANCE_FACTORS`); ``None``: no augmentation.
        lora: :class:`policies.backbones.lora.LoraSettings` to train LoRA adapters on the backbone's vision tower
            with the head (the head must read the ``image`` frame stream only); ``None``: the backbone stays frozen.
        device: torch device of the backbone (feature extraction) and of the head's training (float32 on any
            device; the cached features are device-independent float32).

    Returns:
        ``best`` (``epoch``, ``val_loss``, ``val_mae``: MAE over linear_x/linear_y, :func:`evaluate`; ``epoch`` and
        ``val_loss`` None with a ``reason`` when no epoch gave a finite validation loss), ``checkpoint`` (the path of
        ``best.safetensors``, or None when none was written for that reason),
        ``epochs_run``, file paths, window and cache counts, ``augmented_copies``, ``train_seconds`` (the
        epochs) and ``prepare_seconds`` (features, copies, trunk activations).

    Raises:
        ConfigError: ``epochs`` or ``batch_size`` < 1, ``lr`` not a finite number > 0, ``weight_decay`` /
            ``warmup_fraction`` not finite and >= 0; an unknown loss or sampling mode, a bad augmentation table, LoRA on a head reading other
            streams than ``image``, fewer than two episodes, or a ``--resume`` state that does not match.
        InvalidTrainingStateError: ``last.pt`` is not a training state written here.
        sim.data.h5format.InvalidEpisodeError: a bad episode file (unless ``skip_invalid``).
    """
    from policies.checkpoints import save_checkpoint
    from policies.vla import build_vla_policy

    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("patience", patience, 0)):
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    for name, value in (("lr", lr), ("weight_decay", weight_decay), ("warmup_fraction", warmup_fraction)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0) or (name == "lr" and not lr):
            raise ConfigError(f"{name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, got {value!r}")
    if sampling not in SAMPLING_MODES:
        raise ConfigError(f"sampling must be one of {', '.join(SAMPLING_MODES)}, got {sampling!r}")
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    factors = check_factors(distance_augmentation) if distance_augmentation is not None else None
    t_prepare = time.perf_counter()
    out = Path(out)
    torch.manual_seed(seed)
    files = [f for source in data for f in list_episode_files(source)]
    episodes: list[Episode] = load_episodes(files, skip_invalid=skip_invalid)
    if len(episodes) < 2:
        raise ConfigError(f"need at least two episodes to split train/validation, found {len(episodes)}")
    out.mkdir(parents=True, exist_ok=True)  # once the data is known good: a bad one leaves no empty folder

    vla = build_vla_policy(policy, backbone=backbone, backbone_path=backbone_path, seed=seed,
                           head_overrides=head_overrides or {}, use_bundled=False, device=device)
    bb, head = vla.backbone, vla.head
    split, lora_params = None, []
    if lora is not None:
        from policies.backbones import make_backbone
        from policies.backbones.lora import add_lora

        if head.frame_streams != ("image",):
            raise ConfigError(f"LoRA adapts the backbone's image stream; head {policy} reads "
                              f"{'+'.join(head.frame_streams)} frames (use a head that reads image + instruction)")
        bb = make_backbone(bb.name, backbone_path, device, streams=(*head.frame_streams, *head.instruction_streams),
                           cache=False)  # adapted in place: never the shared instance
        split = bb.image_split(lora.layers)
        lora_params = add_lora(split, lora, seed)
    cache = FeatureCache(cache_dir, bb, head.frame_streams, prefetch)
    # the activations entering the adapted modules, named by them (another split is another cache entry)
    trunk_name = f"lora-trunk-below:{','.join(split.targets)}" if split is not None else ""

    def frame_inputs(ep: Episode, copy: AugmentedCopy | None = None) -> np.ndarray:
        if split is not None:
            return cache.activations(ep.path, trunk_name, split.trunk, copy=copy)
        return cache.vision(ep.path, ep.instruction, copy=copy)

    vision, readable = [], []
    for ep in tqdm(episodes, desc=f"features ({bb.name}: {'LoRA trunk' if split else '+'.join(head.frame_streams)})",
                   unit="ep",
                   disable=not progress):
        try:  # the check reads the first and last frames only: a corrupt chunk in between shows up here
            vision.append(frame_inputs(ep))
        except (OSError, ValueError, RuntimeError) as exc:
            error = InvalidEpisodeError(ep.path, [f"frames unreadable: {type(exc).__name__}: {exc}"])
            if not skip_invalid:
                raise error from None
            tqdm.write(f"warning: skipping {error}", file=sys.stderr)
            continue
        readable.append(ep)
    episodes = readable
    if len(episodes) < 2:
        raise ConfigError(f"need at least two readable episodes to split train/validation, found {len(episodes)}")
    texts = {text: bb.encode_instruction([text], head.instruction_streams)[0].float().cpu().numpy()
             for text in sorted({ep.instruction for ep in episodes})}
    text = [texts[ep.instruction] for ep in episodes]
    actions = [h5format.read_actions(ep.path)[0] for ep in episodes]

    train_idx, val_idx = split_episodes(episodes, val_fraction, seed)
    train_parts = ([vision[i] for i in train_idx], [text[i] for i in train_idx], [actions[i] for i in train_idx],
                   [episodes[i].stratum for i in train_idx])
    copies = [(i, c) for i in train_idx for c in episode_copies(
        episodes[i].path.name, (h5format.parse_filename(episodes[i].path) or {}).get("distance"), factors or {}, seed)]
    for i, copy in tqdm(copies, desc="augmented copies", unit="copy", disable=not progress or not copies):
        train_parts[0].append(frame_inputs(episodes[i], copy))
        train_parts[1].append(text[i])
        train_parts[2].append(actions[i][copy.frame_indices(len(actions[i]))])
        train_parts[3].append(episodes[i].stratum)

    train_set = FeatureWindows(*train_parts[:3], head.window_size, head.chunk_size, head.action_dim, stop_weight)
    val_set = FeatureWindows([vision[i] for i in val_idx], [text[i] for i in val_idx], [actions[i] for i in val_idx],
                             head.window_size, head.chunk_size, head.action_dim, stop_weight)
    generator = torch.Generator().manual_seed(seed)
    hard_sampler = None
    if sampling == "stratified":
        strata = [train_parts[3][e] for e, _ in train_set.index]
        counts = Counter(strata)
        weights = torch.tensor([1.0 / counts[s] for s in strata], dtype=torch.double)
        sampler = WeightedRandomSampler(weights, num_samples=len(train_set), replacement=True, generator=generator)
        train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler)
    elif sampling == "hard-negative":
        hard_sampler = HardNegativeSampler(len(train_set), hard_negative_fraction, hard_negative_pool, generator)
        train_loader = DataLoader(train_set, batch_size=batch_size, sampler=hard_sampler)
    else:
        train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=sampling == "random", generator=generator)
    val_loader = DataLoader(val_set, batch_size=256)

    head.train().requires_grad_(True)
    optimizer = torch.optim.AdamW([*head.parameters(), *lora_params], lr=lr, weight_decay=weight_decay)
    total_steps = epochs * max(1, len(train_loader))
    scheduler = cosine_with_warmup(optimizer, max(1, int(warmup_fraction * total_steps)), total_steps)
    history: list[dict[str, Any]] = []
    best = {"val_loss": math.inf, "epoch": -1}
    start_epoch, stale = 0, 0
    state_path = out / "last.pt"
    if resume and state_path.exists():
        state = _read_state(state_path)
        if state["policy"] != policy or state["backbone"] != bb.name:
            raise ConfigError(f"{state_path}: was training {state['policy']} on {state['backbone']}, not {policy} on {bb.name}")
        if bool(state.get("lora")) != (split is not None):
            raise ConfigError(f"{state_path}: was training {'with' if state.get('lora') else 'without'} LoRA, "
                              f"this run is {'with' if split is not None else 'without'} LoRA")
        head.load_state_dict(state["head"])
        if split is not None:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(split.root, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        start_epoch, stale, best, history = state["epoch"] + 1, state["stale"], state["best"], json.loads(state["history"])

    meta = {
        "training_data": [str(Path(d)) for d in data],
        "episodes": {"train": len(train_idx), "val": len(val_idx), "augmented_copies": len(copies)},
        "recipe": {"optimizer": "AdamW", "lr": lr, "weight_decay": weight_decay,
                   "loss": "HuberLoss(delta=0.1)" if loss == "huber" else "final-fixed: MSE + 0.1 L1, z weight 0.05",
                   "schedule": "cosine with warm-up", "grad_clip": 1.0, "batch_size": batch_size,
                   "sampling": sampling, "seed": seed, "max_epochs": epochs, "patience": patience,
                   "stop_weight": stop_weight, "distance_augmentation": factors,
                   "lora": lora.to_dict() if lora is not None else None,
                   **({"hard_negative_fraction": hard_negative_fraction, "hard_negative_pool": hard_negative_pool}
                      if sampling == "hard-negative" else {})},
    }
    prepare_seconds = time.perf_counter() - t_prepare
    t0 = time.perf_counter()
    bar = tqdm(range(start_epoch, epochs), desc=f"train {policy}", unit="epoch", disable=not progress)
    for epoch in bar:
        if hard_sampler is not None and epoch > 0:  # the first epoch has no losses to rank yet
            hard_sampler.set_losses(window_losses(head, train_set, loss, split))
        _set_training(head, split, True)
        train_loss, seen = 0.0, 0
        for batch in train_loader:
            batch = on_device(batch, device)
            pred = predict(head, batch["vision"], batch["text"], split)
            batch_loss = masked_loss(pred, batch["actions"], batch["mask"], loss, weight=batch["weight"])
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            torch.nn.utils.clip_grad_norm_([*head.parameters(), *lora_params], 1.0)
            optimizer.step()
            scheduler.step()
            train_loss += batch_loss.item() * len(pred)
            seen += len(pred)
        val_loss, val_mae = evaluate(head, val_loader, loss, split)
        row = {"epoch": epoch, "train_loss": train_loss / max(1, seen), "val_loss": val_loss, "val_mae": val_mae,
               "lr": scheduler.get_last_lr()[0]}
        history.append(row)
        _write_csv(out / "metrics.csv", history)
        adapter = _adapter(split, lora)
        if math.isfinite(val_loss) and val_loss < best["val_loss"]:
            best, stale = {"val_loss": val_loss, "val_mae": val_mae, "epoch": epoch}, 0
            save_checkpoint(out / "best.safetensors", head, {**meta, "best": best}, backbone=bb.name,
                            backbone_lora=adapter)
        else:
            stale += 1
        with atomic_write(state_path) as tmp:
            torch.save({"policy": policy, "backbone": bb.name, "head": head.state_dict(),
                        "lora": adapter.tensors if adapter is not None else None,
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "generator": generator.get_state(), "epoch": epoch,
                        "stale": stale, "best": best, "history": json.dumps(history)}, tmp)
        bar.set_postfix(train=f"{row['train_loss']:.4f}", val=f"{val_loss:.4f}", mae=f"{val_mae:.3f}")
        if stale >= patience:
            break
    written = best["epoch"] >= 0  # no epoch with a finite validation loss: no best.safetensors
    return {"policy": policy, "backbone": bb.name,
            "best": best if written else {"val_loss": None, "epoch": None,
                                          "reason": "no epoch gave a finite validation loss"},
            "epochs_run": len(history),
            "checkpoint": str(out / "best.safetensors") if written else None, "metrics": str(out / "metrics.csv"),
            "train_windows": len(train_set), "val_windows": len(val_set), "augmented_copies": len(copies),
            "cache_hits": cache.hits, "cache_misses": cache.misses,
            "prepare_seconds": round(prepare_seconds, 1), "train_seconds": round(time.perf_counter() - t0, 1)}


def _adapter(split, settings):
    """The LoRA adapter to save with the head (:class:`policies.backbones.lora.LoraAdapter`), or None."""
    if split is None:
        return None
    from policies.backbones.lora import LoraAdapter, adapter_state

    return LoraAdapter(settings, split.targets, adapter_state(split))


def _read_state(path: Path) -> dict[str, Any]:
    """``last.pt`` read with ``weights_only=True``.

    Raises:
        InvalidTrainingStateError: unreadable, or not a training state written by :func:`train`.
    """
    try:
        state = torch.load(path, weights_only=True)
        if not isinstance(state, dict) or not {"policy", "backbone", "head", "epoch"} <= set(state):
            raise ValueError("not a training state written by sim.train")
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidTrainingStateError(f"{path}: refused to resume from it ({reason[:200]}); remove it "
                                        "to train from scratch") from None
    return state
