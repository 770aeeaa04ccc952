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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm import tqdm

from scenarios.errors import ConfigError, MobileVLAError
from scenarios.files import atomic_write
from sim.data import h5format
from sim.data.dataset import Episode, list_episode_files, load_episodes, split_episodes
from sim.data.h5format import InvalidEpisodeError


class InvalidTrainingStateError(MobileVLAError, ValueError):
    """``--resume``'s ``last.pt`` is not a training state this code wrote (nothing in it is run)."""


DEFAULT_CACHE = Path(os.environ.get("MOBILE_VLA_SIM_CACHE", Path.home() / ".cache" / "mobile-vla-sim")) / "features"


# ------------------------------------------------------------------------------------------- feature cache
class FeatureCache:
    """Per-episode frame features of a frozen backbone, one float32 ``(N, width)`` ``.npy`` per file and stream.

    The key hashes the backbone name, the stream, the instruction (for streams that read it) and the episode
    file's resolved path, size and modification time, so an edited or regenerated file is encoded again. Streams
    missing for a file are computed in one backbone call (``prefetch`` adds streams other heads will need, so a
    backbone that derives several streams from one pass, like ``lite``, runs once per file). Files are written
    atomically.
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

    def _path(self, episode: Path, stream: str, instruction: str) -> Path:
        stat = episode.stat()
        key = f"{self.backbone.name}|{episode.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stream}"
        if stream in self._conditioned:
            key += f"|{instruction}"
        return self.root / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}.npy"

    def _read(self, path: Path) -> np.ndarray | None:
        if path.exists():
            try:
                return np.load(path)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a corrupt cache entry is recomputed
        return None

    def vision(self, episode: Path, instruction: str = "", batch_size: int = 32) -> np.ndarray:
        """The concatenated :attr:`streams` of every frame of ``episode`` (``instruction``: for streams that read
        it), ``(N, width)``, computed on a miss and cached."""
        found = {s: self._read(self._path(episode, s, instruction)) for s in self.streams}
        missing = [s for s, v in found.items() if v is None]
        if not missing:
            self.hits += 1
        else:
            todo = [*missing, *(s for s in self.prefetch if not self._path(episode, s, instruction).exists())]
            frames = h5format.read_episode_frames(episode)
            parts = [self.backbone.encode_frames(frames[i:i + batch_size], todo, instruction).float().cpu().numpy()
                     for i in range(0, len(frames), batch_size)]
            feats = np.concatenate(parts).astype(np.float32)
            dims = self.backbone.stream_dims()
            offset = 0
            for stream in todo:
                part = feats[:, offset:offset + dims[stream]]
                offset += dims[stream]
                with atomic_write(self._path(episode, stream, instruction)) as tmp:
                    np.save(tmp, part)
                if stream in found:
                    found[stream] = part
            self.misses += 1
        return np.concatenate([found[s] for s in self.streams], axis=1)


# ------------------------------------------------------------------------------------------- windows
class FeatureWindows(Dataset):
    """Training samples over cached features: for frame ``t`` of an episode, the ``window`` most recent frame
    features (the episode's first frame repeated before its start, as :class:`policies.vla.FrameHistory` pads),
    the instruction's text feature, and the next ``chunk`` actions with a mask.

    Items: ``vision`` float32 ``(window, Dv)``, ``text`` ``(Dt,)``, ``actions`` ``(chunk, action_dim)`` in
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


def masked_huber(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, delta: float = 0.1,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """HuberLoss(delta) averaged over unmasked chunk steps and action axes, samples weighted by ``weight``."""
    loss = torch.nn.functional.huber_loss(pred, target, reduction="none", delta=delta).mean(-1)
    mask = mask if weight is None else mask * weight[:, None]
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


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


def evaluate(head, loader) -> tuple[float, float]:
    """Validation (loss, MAE over unmasked elements)."""
    head.eval()
    total, mae_sum, count = 0.0, 0.0, 0.0
    with torch.no_grad():
        for batch in loader:
            pred = head(batch["vision"], batch["text"])
            total += float(masked_huber(pred, batch["actions"], batch["mask"])) * len(pred)
            err = (pred - batch["actions"]).abs().mean(-1) * batch["mask"]
            mae_sum += float(err.sum())
            count += float(batch["mask"].sum())
    n = len(loader.dataset)
    return total / max(1, n), mae_sum / max(1.0, count)


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
) -> dict[str, Any]:
    """Train ``policy``'s head by behaviour cloning; returns a summary (best epoch, losses, files, cache stats).

    ``prefetch``: frame streams to cache alongside the head's own (for heads trained next on the same data).

    Raises:
        ValueError: unknown sampling mode, fewer than two episodes, or a ``--resume`` state that does not match.
        sim.data.h5format.InvalidEpisodeError: a bad episode file (unless ``skip_invalid``).
    """
    from policies.checkpoints import save_checkpoint
    from policies.vla import build_vla_policy

    if sampling not in ("random", "stratified", "sequential"):
        raise ConfigError(f"sampling must be random, stratified or sequential, got {sampling!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    files = [f for source in data for f in list_episode_files(source)]
    episodes: list[Episode] = load_episodes(files, skip_invalid=skip_invalid)
    if len(episodes) < 2:
        raise ConfigError(f"need at least two episodes to split train/validation, found {len(episodes)}")

    vla = build_vla_policy(policy, backbone=backbone, backbone_path=backbone_path, seed=seed,
                           head_overrides=head_overrides or {}, use_bundled=False)
    bb, head = vla.backbone, vla.head
    cache = FeatureCache(cache_dir, bb, head.frame_streams, prefetch)
    vision, readable = [], []
    for ep in tqdm(episodes, desc=f"features ({bb.name}: {'+'.join(head.frame_streams)})", unit="ep",
                   disable=not progress):
        try:  # the check reads the first and last frames only: a corrupt chunk in between shows up here
            vision.append(cache.vision(ep.path, ep.instruction))
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

    def windows(idx: list[int]) -> FeatureWindows:
        return FeatureWindows([vision[i] for i in idx], [text[i] for i in idx], [actions[i] for i in idx],
                              head.window_size, head.chunk_size, head.action_dim, stop_weight)

    train_set, val_set = windows(train_idx), windows(val_idx)
    generator = torch.Generator().manual_seed(seed)
    if sampling == "stratified":
        strata = [episodes[train_idx[e]].stratum for e, _ in train_set.index]
        counts = Counter(strata)
        weights = torch.tensor([1.0 / counts[s] for s in strata], dtype=torch.double)
        sampler = WeightedRandomSampler(weights, num_samples=len(train_set), replacement=True, generator=generator)
        train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler)
    else:
        train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=sampling == "random", generator=generator)
    val_loader = DataLoader(val_set, batch_size=256)

    head.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    total_steps = epochs * max(1, len(train_loader))
    scheduler = cosine_with_warmup(optimizer, max(1, int(warmup_fraction * total_steps)), total_steps)
    history: list[dict[str, Any]] = []
    best = {"val_loss": math.inf, "epoch": -1}
    start_epoch, stale = 0, 0
    state_path = out / "last.pt"
    if resume and state_path.exists():
        try:
            state = torch.load(state_path, weights_only=True)
            if not isinstance(state, dict) or not {"policy", "backbone", "head", "epoch"} <= set(state):
                raise ValueError("not a training state written by sim.train")
        except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidTrainingStateError(f"{state_path}: refused to resume from it ({reason[:200]}); remove it "
                                            "to train from scratch") from None
        if state["policy"] != policy or state["backbone"] != bb.name:
            raise ConfigError(f"{state_path}: was training {state['policy']} on {state['backbone']}, not {policy} on {bb.name}")
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        start_epoch, stale, best, history = state["epoch"] + 1, state["stale"], state["best"], json.loads(state["history"])

    meta = {
        "training_data": [str(Path(d)) for d in data],
        "episodes": {"train": len(train_idx), "val": len(val_idx)},
        "recipe": {"optimizer": "AdamW", "lr": lr, "weight_decay": weight_decay, "loss": "HuberLoss(delta=0.1)",
                   "schedule": "cosine with warm-up", "grad_clip": 1.0, "batch_size": batch_size,
                   "sampling": sampling, "seed": seed, "max_epochs": epochs, "patience": patience,
                   "stop_weight": stop_weight},
    }
    t0 = time.perf_counter()
    bar = tqdm(range(start_epoch, epochs), desc=f"train {policy}", unit="epoch", disable=not progress)
    for epoch in bar:
        head.train()
        train_loss, seen = 0.0, 0
        for batch in train_loader:
            pred = head(batch["vision"], batch["text"])
            loss = masked_huber(pred, batch["actions"], batch["mask"], weight=batch["weight"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            train_loss += loss.item() * len(pred)
            seen += len(pred)
        val_loss, val_mae = evaluate(head, val_loader)
        row = {"epoch": epoch, "train_loss": train_loss / max(1, seen), "val_loss": val_loss, "val_mae": val_mae,
               "lr": scheduler.get_last_lr()[0]}
        history.append(row)
        _write_csv(out / "metrics.csv", history)
        if val_loss < best["val_loss"]:
            best, stale = {"val_loss": val_loss, "val_mae": val_mae, "epoch": epoch}, 0
            save_checkpoint(out / "best.safetensors", head, {**meta, "best": best}, backbone=bb.name)
        else:
            stale += 1
        with atomic_write(state_path) as tmp:
            torch.save({"policy": policy, "backbone": bb.name, "head": head.state_dict(),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "generator": generator.get_state(), "epoch": epoch,
                        "stale": stale, "best": best, "history": json.dumps(history)}, tmp)
        bar.set_postfix(train=f"{row['train_loss']:.4f}", val=f"{val_loss:.4f}", mae=f"{val_mae:.3f}")
        if stale >= patience:
            break
    return {"policy": policy, "backbone": bb.name, "best": best, "epochs_run": len(history),
            "checkpoint": str(out / "best.safetensors"), "metrics": str(out / "metrics.csv"),
            "train_windows": len(train_set), "val_windows": len(val_set), "cache_hits": cache.hits,
            "cache_misses": cache.misses, "train_seconds": round(time.perf_counter() - t0, 1)}
