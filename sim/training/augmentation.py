"""Distance-aware augmentation: the team's ``DistanceAwareAugmentation`` (``../shared/seeds/000_*.txt``, "4. 데이터
증강 최적화"), training copies of each episode, as many as its distance asks.

The notes fix the **factors** (:data:`DISTANCE_FACTORS`: close 8x, medium 5x, far 8x) and name one augmentation per
distance, without their code: ``precision_augmentation`` (close, "정밀도 중심"), ``balanced_augmentation`` (medium,
"균형잡힌") and ``speed_augmentation`` (far, "속도 중심"). **What each one does is our reconstruction**, built from
the augmentations the team lists elsewhere (seed 001: colour jitter, Gaussian noise, random crop & resize):

- ``precision`` (close): photometric only, small (brightness and contrast x[0.9, 1.1], Gaussian pixel noise sigma
  2 / 255): the geometry a close-range manoeuvre depends on is left exact;
- ``balanced`` (medium): brightness and contrast x[0.8, 1.2], per-channel gain x[0.95, 1.05], a random crop of
  90-100 % of the frame resized back, noise sigma 4 / 255;
- ``speed`` (far): every other frame (random phase; the final frame, the stop, always kept), so the robot seems to
  approach twice as fast, with brightness and contrast x[0.8, 1.2].

A copy is a pure function of ``(seed, episode file name, copy index)``, so the same seed gives the same copies
(their features are cached like the originals'). Copies join the **training** split only; the originals stay.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch
from torch.nn import functional as F

from foundations.errors import ConfigError

#: Copies per episode by distance preset (seed 000 ``DistanceAwareAugmentation.augmentation_factors``).
DISTANCE_FACTORS: dict[str, int] = {"close": 8, "medium": 5, "far": 8}
#: The augmentation each distance gets (seed 000 ``augment_by_distance``).
DISTANCE_KINDS: dict[str, str] = {"close": "precision", "medium": "balanced", "far": "speed"}
#: Bumped when what a kind does changes (part of the feature-cache key).
AUGMENTATION_VERSION = 1


def check_factors(factors: Mapping[str, int], where: str = "distance augmentation") -> dict[str, int]:
    """``factors`` as a plain dict after checking it names only known distances with counts in [0, 64].

    Raises:
        ConfigError: an unknown distance or a bad count (named with ``where``).
    """
    if not isinstance(factors, Mapping):
        raise ConfigError(f"{where}: expected a table distance -> copies, got {factors!r}")
    out = {}
    for distance, count in factors.items():
        if distance not in DISTANCE_KINDS:
            raise ConfigError(f"{where}: unknown distance {distance!r}; choose from {', '.join(DISTANCE_KINDS)}")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 64:
            raise ConfigError(f"{where}: copies for {distance} must be a whole number in [0, 64], got {count!r}")
        out[distance] = count
    return out


@dataclasses.dataclass(frozen=True)
class AugmentedCopy:
    """Copy ``index`` of one episode, augmented the ``kind`` way (``precision``, ``balanced``, ``speed``).

    Attributes:
        kind: see the module doc. episode: the episode's file name (seeds the copy). index: copy number.
        seed: the training seed.
    """

    kind: str
    episode: str
    index: int
    seed: int

    def __post_init__(self) -> None:
        if self.kind not in DISTANCE_KINDS.values():
            raise ConfigError(f"unknown augmentation kind {self.kind!r}")

    @property
    def tag(self) -> str:
        """Identifies the copy's content in the feature cache."""
        return f"aug-v{AUGMENTATION_VERSION}-{self.kind}-{self.index}-{self.seed}"

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(self.episode.encode()), self.index,
                                      zlib.crc32(self.kind.encode())])

    def frame_indices(self, num_frames: int) -> np.ndarray:
        """Which frames of the episode (and so which action labels) the copy keeps, int64 ``(M,)`` ascending."""
        if self.kind != "speed":
            return np.arange(num_frames)
        phase = int(self._rng().integers(2))
        kept = np.arange(phase, num_frames, 2)
        if num_frames and (not len(kept) or kept[-1] != num_frames - 1):
            kept = np.append(kept, num_frames - 1)  # the stop is never skipped
        return kept

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """The copy's frames: uint8 ``(N, H, W, 3)`` RGB (the whole episode) -> uint8 ``(M, H, W, 3)``,
        ``M = len(frame_indices(N))``; one set of random parameters per copy (the same for all its frames). The
        same frames as :meth:`apply_windows` over any split of the episode."""
        parts = list(self.apply_windows([frames], len(frames)))
        return np.concatenate(parts) if parts else np.empty((0, *frames.shape[1:]), np.uint8)

    def apply_windows(self, windows: Iterable[np.ndarray], num_frames: int) -> Iterator[np.ndarray]:
        """:meth:`apply` window by window: ``windows`` are the episode's ``num_frames`` frames in order, uint8
        ``(n, H, W, 3)`` RGB each (:func:`sim.data.h5format.iter_episode_frames`); yields the copy's frames of each
        (none for a window the copy skips entirely), so memory is one window, never the whole episode. The
        parameters are drawn once, the pixel noise window after window from the same stream: the frames are the
        same as :meth:`apply`'s of the whole episode."""
        rng = self._rng()
        rng.integers(2)  # the speed phase draw (keeps the streams of the kinds aligned)
        kept = self.frame_indices(num_frames)
        spread = 0.1 if self.kind == "precision" else 0.2
        brightness, contrast = rng.uniform(1 - spread, 1 + spread, size=2)
        gain = torch.from_numpy(rng.uniform(0.95, 1.05, size=3) if self.kind == "balanced" else np.ones(3)).float()
        sigma = {"precision": 2.0, "balanced": 4.0, "speed": 0.0}[self.kind]
        crop = None
        offset = 0
        for window in windows:
            n = len(window)
            rows = kept[(kept >= offset) & (kept < offset + n)] - offset
            offset += n
            if not len(rows):
                continue
            x = torch.from_numpy(np.ascontiguousarray(window[rows])).float()
            mean = x.mean(dim=(1, 2, 3), keepdim=True)  # per frame
            x = ((x - mean) * float(contrast) + mean * float(brightness)) * gain
            if self.kind == "balanced":
                if crop is None:  # drawn after the photometric parameters, before any noise (as apply always did)
                    crop = self._crop_box(x.shape[1], x.shape[2], rng)
                x = self._crop_resize(x, crop)
            if sigma:
                x = x + torch.from_numpy(rng.normal(0.0, sigma, size=tuple(x.shape)).astype(np.float32))
            yield x.round().clamp(0, 255).to(torch.uint8).numpy()

    @staticmethod
    def _crop_box(h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of a random crop of 90-100 % of an ``h`` x ``w`` frame."""
        scale = rng.uniform(0.9, 1.0)
        ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
        return int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1)), ch, cw

    @staticmethod
    def _crop_resize(x: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        h, w = x.shape[1:3]
        top, left, ch, cw = box
        crop = x[:, top:top + ch, left:left + cw].permute(0, 3, 1, 2)
        resized = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return resized.permute(0, 2, 3, 1)


def episode_copies(episode_name: str, distance: str | None, factors: Mapping[str, int], seed: int
                   ) -> list[AugmentedCopy]:
    """The copies of one episode: ``factors[distance]`` of its distance's kind; none for a distance the factors
    do not list or an episode whose file name names no distance (``distance=None``)."""
    if distance is None or distance not in factors:
        return []
    return [AugmentedCopy(DISTANCE_KINDS[distance], episode_name, i, seed) for i in range(factors[distance])]
