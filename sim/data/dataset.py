"""Training loader for H5 episodes, real (robot collector) and synthetic alike: :class:`MobileVLAH5Dataset`.

Format: :mod:`sim.data.h5format` (``ROBOT_AND_DATA.md`` section 3). Windowing as the team trains (RoboVLMs style,
``window_size = 8``, ``fwd_pred_next_n = 10``): a sample starting at frame ``s`` holds frames ``s .. s+7`` and,
for each of those frames ``t``, the action chunk ``actions[t : t+10]`` (the label of frame ``t`` is the press
made on that image, so the chunk starts with the frame's own action). Chunk steps past the episode's end are
zero-padded and masked out; windows that run past the end (episodes shorter than 8 frames) repeat the last
frame, masked out in ``frame_mask``.

Sampling modes (seed 001's analysis of the team's sequential sampler):

- ``"sequential"``: every start ``s = 0 .. max(N - window_size, 0)`` of every episode, in order (the team's
  original sampler); ``len`` = number of such windows.
- ``"random"``: random episode, then random start (the proposed fix): sample ``i`` of epoch ``e`` is drawn from
  ``np.random.default_rng([seed, e, i])``, so it is reproducible and identical in every DataLoader worker.
- ``"stratified"``: sample ``i`` belongs to stratum ``i % S`` (strata = scenario ``{nbox}_{hori|vert}_{side}``
  from the file name), then a random episode of that stratum and a random start: balanced across layouts
  and sides.

For ``random``/``stratified``, ``len`` = ``num_samples`` (default: the number of sequential windows); call
:meth:`MobileVLAH5Dataset.set_epoch` each epoch for fresh draws.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from foundations.errors import ConfigError
from sim.data import h5format
from sim.data.h5format import InvalidEpisodeError, read_episode_frames  # noqa: F401  (re-exported)

#: CLIP / Kosmos-2 image normalisation (RGB, [0, 1] scale).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SAMPLING_MODES = ("sequential", "random", "stratified")


@dataclass(frozen=True)
class Episode:
    """One episode of a dataset: ``path``, ``length`` (frames ``N``), ``instruction``, ``episode_id`` (file stem),
    ``stratum`` (``"1box_hori_left"``-style scenario from the name, or the layout type / ``"unknown"``),
    ``image_hw`` (stored ``(H, W)`` px)."""

    path: Path
    length: int
    instruction: str
    episode_id: str
    stratum: str
    image_hw: tuple[int, int]


def list_episode_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """``source`` = a folder (its ``*.h5``, sorted, temp files excluded), one file, or a list of files.

    Raises:
        FileNotFoundError: a path that does not exist, or a folder without ``.h5`` files.
    """
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            files = sorted(f for f in p.glob("*.h5") if not h5format.is_temp_file(f))
            if not files:
                raise FileNotFoundError(f"{p}: no .h5 episode files")
            return files
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        return [p]
    files = [Path(f) for f in source]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"no such files: {missing}")
    return files


def load_episodes(files: Sequence[Path], skip_invalid: bool = False) -> list[Episode]:
    """Validate every file (:func:`sim.data.h5format.check_episode`) and read its metadata.

    Raises:
        InvalidEpisodeError: the first bad file (naming it and its problems) unless ``skip_invalid``, which
            skips it with a ``UserWarning``.
    """
    episodes = []
    for path in files:
        problems = h5format.check_episode(path)
        if problems:
            err = InvalidEpisodeError(path, problems)
            if not skip_invalid:
                raise err
            warnings.warn(f"skipping invalid episode: {err}", UserWarning, stacklevel=3)
            continue
        info = h5format.read_info(path)
        fields = h5format.parse_filename(path)
        stratum = fields["layout"] if fields else f"{info.layout or 'unknown'}_{info.side or 'unknown'}"
        episodes.append(Episode(path, info.num_frames, info.instruction, info.episode_id, stratum, info.image_hw))
    return episodes


class MobileVLAH5Dataset(Dataset):
    """Windows of H5 episodes for training VLA heads.

    Args:
        source: folder of ``*.h5`` episodes, one file, or a list of files (real and synthetic files can mix).
        window_size: frames per sample (8, as the team trains).
        fwd_pred_next_n: actions predicted per frame (chunk, 10).
        sampling: ``"sequential"``, ``"random"`` or ``"stratified"`` (module doc).
        num_samples: length of an epoch for ``random``/``stratified`` (default: the sequential count).
        image_size: output side (px) of the square frames (224 for Kosmos-2 / CLIP).
        mean, std: per-channel RGB normalisation on the [0, 1] scale (CLIP's by default); ``None`` keeps [0, 1].
        action_dims: leading action components returned (2 = ``linear_x, linear_y``; models use only these).
        clamp: clamp actions to ``[-clamp, clamp]`` (1.0: the label 1.15 becomes 1.0, as the team's loaders).
        seed: seed of the random modes.
        skip_invalid: skip bad files with a warning instead of raising :class:`InvalidEpisodeError`.
        episodes: already validated :class:`Episode` records to use instead of reading ``source`` (how
            :meth:`subset` and :meth:`split` build their datasets; may be empty).

    A sample (``__getitem__``) is a dict:

    - ``"images"``: float32 ``(window_size, 3, image_size, image_size)``, RGB, normalised (stored BGR is
      converted; resize with ``F.interpolate(mode="bilinear", antialias=True)``);
    - ``"actions"``: float32 ``(window_size, fwd_pred_next_n, action_dims)`` clamped labels;
    - ``"action_mask"``: bool ``(window_size, fwd_pred_next_n)``, False for padding past the episode's end;
    - ``"frame_mask"``: bool ``(window_size,)``, False for frames repeated past the end (short episodes);
    - ``"instruction"``: str; ``"episode_id"``: str (file stem); ``"start"``: int first frame index.

    Raises:
        FileNotFoundError: missing source. InvalidEpisodeError: a bad file (unless ``skip_invalid``).
        ValueError: bad arguments, or no valid episode.
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str | os.PathLike],
        window_size: int = 8,
        fwd_pred_next_n: int = 10,
        sampling: str = "sequential",
        num_samples: int | None = None,
        image_size: int = 224,
        mean: Sequence[float] | None = CLIP_MEAN,
        std: Sequence[float] | None = CLIP_STD,
        action_dims: int = 2,
        clamp: float | None = 1.0,
        seed: int = 0,
        skip_invalid: bool = False,
        episodes: Sequence[Episode] | None = None,
    ) -> None:
        if sampling not in SAMPLING_MODES:
            raise ConfigError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
        if window_size < 1 or fwd_pred_next_n < 1 or image_size < 1 or not 1 <= action_dims <= 3:
            raise ConfigError("window_size, fwd_pred_next_n, image_size must be >= 1 and action_dims in 1..3")
        if (mean is None) != (std is None):
            raise ConfigError("give both mean and std, or neither")
        self.window_size, self.fwd_pred_next_n = int(window_size), int(fwd_pred_next_n)
        self.sampling, self.seed, self.epoch = sampling, int(seed), 0
        self.image_size, self.action_dims, self.clamp = int(image_size), int(action_dims), clamp
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        if episodes is None:
            episodes = load_episodes(list_episode_files(source), skip_invalid=skip_invalid)
            if not episodes:
                raise ConfigError(f"{source}: no valid episodes")
        # Given ``episodes`` (a subset/split) may be empty, e.g. a validation set with ``val_fraction=0``.
        self.episodes: list[Episode] = list(episodes)
        self._windows = [(e, s) for e, ep in enumerate(self.episodes) for s in range(self._num_starts(ep))]
        strata: dict[str, list[int]] = defaultdict(list)
        for i, ep in enumerate(self.episodes):
            strata[ep.stratum].append(i)
        self.strata = dict(sorted(strata.items()))
        self._strata_keys = list(self.strata)
        self.num_samples = int(num_samples) if num_samples is not None else len(self._windows)
        self._actions_cache: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ structure
    def _num_starts(self, ep: Episode) -> int:
        return max(ep.length - self.window_size, 0) + 1

    def __len__(self) -> int:
        return len(self._windows) if self.sampling == "sequential" else self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws of ``random``/``stratified`` (call once per epoch)."""
        self.epoch = int(epoch)

    def window_index(self, idx: int) -> tuple[int, int]:
        """``(episode index, start frame)`` of sample ``idx`` under the sampling mode.

        Raises:
            IndexError: ``idx`` outside ``[-len, len)``.
        """
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"sample {idx} out of range for {n} samples")
        idx %= n
        if self.sampling == "sequential":
            return self._windows[idx]
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        if self.sampling == "random":
            e = int(rng.integers(len(self.episodes)))
        else:
            members = self.strata[self._strata_keys[idx % len(self._strata_keys)]]
            e = members[int(rng.integers(len(members)))]
        return e, int(rng.integers(self._num_starts(self.episodes[e])))

    # ------------------------------------------------------------------ data
    def episode_actions(self, e: int) -> np.ndarray:
        """``actions`` float32 ``(N, 3)`` of episode ``e`` (raw labels, cached)."""
        if e not in self._actions_cache:
            with h5py.File(self.episodes[e].path, "r") as f:
                self._actions_cache[e] = np.asarray(f["actions"][()], dtype=np.float32)
        return self._actions_cache[e]

    def read_episode_frames(self, e: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames of episode ``e`` as uint8 RGB ``(n, H, W, 3)`` (for feature caching)."""
        return read_episode_frames(self.episodes[e].path, start, stop)

    def preprocess(self, frames_rgb: np.ndarray) -> torch.Tensor:
        """uint8 RGB ``(n, H, W, 3)`` -> float32 ``(n, 3, S, S)`` resized (bilinear, antialias) and normalised."""
        x = torch.from_numpy(np.ascontiguousarray(frames_rgb)).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def __getitem__(self, idx: int) -> dict[str, Any]:
        e, start = self.window_index(idx)
        ep = self.episodes[e]
        stop = min(start + self.window_size, ep.length)
        frames = self.read_episode_frames(e, start, stop)
        n_real = frames.shape[0]
        if n_real < self.window_size:
            frames = np.concatenate([frames, np.repeat(frames[-1:], self.window_size - n_real, axis=0)])
        frame_mask = torch.zeros(self.window_size, dtype=torch.bool)
        frame_mask[:n_real] = True

        acts = self.episode_actions(e)[:, : self.action_dims]
        t = start + np.arange(self.window_size)[:, None] + np.arange(self.fwd_pred_next_n)[None, :]
        mask = t < ep.length
        chunk = np.where(mask[..., None], acts[np.minimum(t, ep.length - 1)], 0.0).astype(np.float32)
        mask &= frame_mask.numpy()[:, None]
        chunk[~mask] = 0.0
        if self.clamp is not None:
            chunk = np.clip(chunk, -self.clamp, self.clamp)
        return {
            "images": self.preprocess(frames),
            "actions": torch.from_numpy(chunk),
            "action_mask": torch.from_numpy(mask),
            "frame_mask": frame_mask,
            "instruction": ep.instruction,
            "episode_id": ep.episode_id,
            "start": int(start),
        }

    # ------------------------------------------------------------------ splits
    def subset(self, episode_indices: Sequence[int], **overrides: Any) -> "MobileVLAH5Dataset":
        """A dataset over some of this one's episodes (same settings unless overridden; no re-validation)."""
        kwargs = dict(
            window_size=self.window_size, fwd_pred_next_n=self.fwd_pred_next_n, sampling=self.sampling,
            image_size=self.image_size, mean=None if self.mean is None else self.mean.flatten().tolist(),
            std=None if self.std is None else self.std.flatten().tolist(), action_dims=self.action_dims,
            clamp=self.clamp, seed=self.seed,
        )
        kwargs.update(overrides)
        chosen = [self.episodes[i] for i in episode_indices]
        return MobileVLAH5Dataset(None, episodes=chosen, **kwargs)

    def split(self, val_fraction: float = 0.1, seed: int = 0, **val_overrides: Any
              ) -> tuple["MobileVLAH5Dataset", "MobileVLAH5Dataset"]:
        """``(train, val)`` datasets split **by episode** (:func:`split_episodes`); ``val_overrides`` e.g.
        ``sampling="sequential"`` for a deterministic validation pass."""
        train_idx, val_idx = split_episodes(self.episodes, val_fraction, seed)
        return self.subset(train_idx), self.subset(val_idx, **val_overrides)


def split_episodes(episodes: Sequence[Episode], val_fraction: float = 0.1, seed: int = 0
                   ) -> tuple[list[int], list[int]]:
    """Seeded train/val split of episode indices, never splitting an episode's frames.

    Stratified by :attr:`Episode.stratum`: each stratum gives ``round(val_fraction * size)`` episodes to
    validation (at least one when it has two or more and ``val_fraction > 0``), so both sides hold every
    scenario when possible. Returns two sorted, disjoint lists covering all episodes.

    Raises:
        ValueError: ``val_fraction`` outside ``[0, 1)``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ep in enumerate(episodes):
        groups[ep.stratum].append(i)
    val: list[int] = []
    for key in sorted(groups):
        members = groups[key]
        k = int(round(val_fraction * len(members)))
        if val_fraction > 0 and k == 0 and len(members) >= 2:
            k = 1
        k = min(k, len(members) - 1) if len(members) > 1 else k
        val += [members[j] for j in rng.permutation(len(members))[:k]]
    val_set = set(val)
    return [i for i in range(len(episodes)) if i not in val_set], sorted(val_set)


__all__ = [
    "CLIP_MEAN", "CLIP_STD", "Episode", "InvalidEpisodeError", "MobileVLAH5Dataset", "SAMPLING_MODES",
    "list_episode_files", "load_episodes", "read_episode_frames", "split_episodes",
]
