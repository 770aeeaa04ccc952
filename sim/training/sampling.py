"""Hard-negative mining: the team's "Option 3" of seed ``001_*.txt`` ("Hard Negative Mining": with probability 0.3
a sample is drawn from the windows whose loss was high, otherwise as usual).

:class:`HardNegativeSampler` draws an epoch of ``n`` window indices: each draw is, with probability ``fraction``
(0.3, theirs), a uniform pick among the **hard pool**, otherwise a uniform pick among all windows (their
``np.random.randint``). The notes do not say how many windows count as "high-loss": the pool is the top
``pool`` share (default :data:`DEFAULT_POOL` = 10 %, our choice) of the training windows ranked by the current
model's loss, recomputed before every epoch but the first (which has no losses yet and samples uniformly). All
draws come from one ``torch.Generator``, so the same seed gives the same epochs.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from foundations.errors import ConfigError

#: Share of draws taken from the hard pool (seed 001, Option 3: ``np.random.rand() < 0.3``).
DEFAULT_FRACTION = 0.3
#: Share of the training windows that form the hard pool (ours; the notes do not give one).
DEFAULT_POOL = 0.1


class HardNegativeSampler(Sampler[int]):
    """Indices ``0..n-1``, ``n`` per epoch, a ``fraction`` of them from the hard pool once it is set.

    Args:
        n: number of training windows (and draws per epoch).
        fraction: probability that a draw comes from the hard pool, in [0, 1].
        pool: share of the windows, in (0, 1], that :meth:`set_losses` puts in the pool.
        generator: the source of every draw.

    Raises:
        ConfigError: ``fraction`` or ``pool`` out of range, or ``n < 1``.
    """

    def __init__(self, n: int, fraction: float = DEFAULT_FRACTION, pool: float = DEFAULT_POOL,
                 generator: torch.Generator | None = None) -> None:
        if n < 1:
            raise ConfigError("hard-negative sampling needs at least one training window")
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"hard-negative fraction must be in [0, 1], got {fraction}")
        if not 0.0 < pool <= 1.0:
            raise ConfigError(f"hard-negative pool must be in (0, 1], got {pool}")
        self.n, self.fraction, self.pool = int(n), float(fraction), float(pool)
        self.generator = generator
        self.hard: torch.Tensor | None = None

    def set_losses(self, losses: torch.Tensor) -> torch.Tensor:
        """Rank the windows by ``losses`` (float ``(n,)``) and keep the top :attr:`pool` share (at least one) as the
        hard pool; returns its indices (ties broken by index, so the pool is deterministic)."""
        if losses.shape != (self.n,):
            raise ValueError(f"expected {self.n} losses, got shape {tuple(losses.shape)}")
        k = max(1, round(self.pool * self.n))
        order = torch.argsort(losses.double(), descending=True, stable=True)
        self.hard = order[:k].sort().values
        return self.hard

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        uniform = torch.randint(self.n, (self.n,), generator=self.generator)
        if self.hard is None or self.fraction == 0.0:
            return iter(uniform.tolist())
        take_hard = torch.rand(self.n, generator=self.generator) < self.fraction
        hard = self.hard[torch.randint(len(self.hard), (self.n,), generator=self.generator)]
        return iter(torch.where(take_hard, hard, uniform).tolist())
