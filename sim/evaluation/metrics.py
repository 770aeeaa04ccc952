"""Evaluation statistics: Wilson intervals, SPL, sim-vs-real agreement, the team's offline action metrics and the
geometry of its closed-loop metrics (overshoot, deviation from a reference path, direction reversals).

The offline metrics follow the team's ``evaluate_performance`` and ``evaluate_robot_control_metrics``
(``shared/seeds/002_500378145bf88d21.txt``) exactly: MAE over all elements; accuracy = percentage of rows whose
absolute error is strictly below the threshold on all axes (and per axis); R^2 per axis as scikit-learn's
``r2_score`` (1 - SS_res / SS_tot; a constant target scores 1.0 if predicted exactly, else 0.0); Pearson
correlation per axis (``np.corrcoef``; NaN -> 0.0); direction accuracy = percentage of equal ``np.sign``.
RMSE (over all elements) is added as the notes report it beside MAE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

AXES = ("linear_x", "linear_y")
THRESHOLDS = (0.3, 0.2, 0.15)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (default 95 %); ``(0.0, 1.0)`` when ``n == 0``.

    Raises:
        ValueError: ``successes`` outside ``[0, n]``.
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def spl(success: bool, shortest: float, path: float) -> float:
    """Success weighted by Path Length (Anderson et al. 2018) of one episode: ``S * l / max(p, l)``."""
    if not success:
        return 0.0
    return shortest / max(path, shortest) if shortest > 0 else 1.0


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation; NaN when fewer than two points or a constant series."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def mmrv(sim: Sequence[float], real: Sequence[float]) -> float:
    """Mean Maximum Rank Violation between simulated and real success rates (SimplerEnv, Li et al. 2024).

    For each policy i: the largest ``|real_i - real_j|`` over the policies j whose order differs between sim
    and real; averaged over policies. 0 = same ranking.

    Raises:
        ValueError: sequences of different lengths.
    """
    if len(sim) != len(real):
        raise ValueError("sim and real must have the same length")
    n = len(sim)
    if n == 0:
        return float("nan")
    total = 0.0
    for i in range(n):
        worst = 0.0
        for j in range(n):
            if (sim[i] < sim[j]) != (real[i] < real[j]):
                worst = max(worst, abs(real[i] - real[j]))
        total += worst
    return total / n


def overshoot_distance(path: np.ndarray, start: Sequence[float], goal: Sequence[float]) -> float:
    """How far (m) a path went past the goal along the start -> goal direction: ``max(0, max_t (p_t - goal) . u)``,
    ``u`` the unit vector from ``start`` to ``goal``; 0.0 when they coincide.

    Args:
        path: ``(N, 2)`` float positions (m).
        start: ``(x, y)`` (m).
        goal: ``(x, y)`` (m).
    """
    p, s, g = np.asarray(path, float).reshape(-1, 2), np.asarray(start, float)[:2], np.asarray(goal, float)[:2]
    length = float(np.linalg.norm(g - s))
    if length < 1e-9 or len(p) == 0:
        return 0.0
    return max(0.0, float(np.max((p - g) @ ((g - s) / length))))


def path_deviation(path: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Distance (m) of each point of ``path`` to the polyline ``reference``: ``(N,)`` float64.

    Args:
        path: ``(N, 2)`` positions (m).
        reference: ``(M, 2)`` polyline vertices (m), ``M >= 1``.

    Raises:
        ValueError: an empty reference.
    """
    p, r = np.asarray(path, float).reshape(-1, 2), np.asarray(reference, float).reshape(-1, 2)
    if len(r) == 0:
        raise ValueError("the reference path is empty")
    if len(r) == 1:
        return np.linalg.norm(p - r[0], axis=1)
    a, b = r[:-1], r[1:]                                        # (M-1, 2) segments
    ab = b - a
    t = np.einsum("nmk,mk->nm", p[:, None, :] - a[None], ab) / np.maximum(np.einsum("mk,mk->m", ab, ab), 1e-12)
    nearest = a[None] + np.clip(t, 0.0, 1.0)[..., None] * ab[None]  # (N, M-1, 2)
    return np.linalg.norm(p[:, None, :] - nearest, axis=2).min(axis=1)


def sign_reversals(signs: Sequence[int]) -> int:
    """Direction reversals in a sequence of signs (-1, 0, +1): changes of sign between consecutive non-zero
    entries (``[1, 0, -1, -1, 1]`` -> 2)."""
    nonzero = [s for s in signs if s]
    return sum(a != b for a, b in zip(nonzero, nonzero[1:]))


def _r2(target: np.ndarray, pred: np.ndarray) -> float:
    ss_res = float(np.sum((target - pred) ** 2))
    ss_tot = float(np.sum((target - target.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def offline_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The team's offline metrics on ``(N, 2)`` arrays of ``[linear_x, linear_y]`` (accuracies in percent).

    Returns a flat dict: ``mae, rmse, accuracy_0.3, linear_x_0.3, ..., linear_x_r2, linear_x_correlation,
    linear_x_direction_accuracy, ..., n``. Empty input gives NaNs.

    Raises:
        ValueError: shapes differ or are not ``(N, 2)``.
    """
    pred, tgt = np.asarray(predictions, float), np.asarray(targets, float)
    if pred.shape != tgt.shape or pred.ndim != 2 or pred.shape[1] != len(AXES):
        raise ValueError(f"expected two (N, 2) arrays, got {pred.shape} and {tgt.shape}")
    keys = ["mae", "rmse"] + [f"accuracy_{t}" for t in THRESHOLDS]
    keys += [f"{a}_{t}" for t in THRESHOLDS for a in AXES]
    keys += [f"{a}_{m}" for a in AXES for m in ("r2", "correlation", "direction_accuracy")]
    if len(pred) == 0:
        return {**{k: float("nan") for k in keys}, "n": 0}
    err = np.abs(pred - tgt)
    out: dict[str, float] = {"mae": float(err.mean()), "rmse": float(np.sqrt(np.mean(err**2)))}
    for t in THRESHOLDS:
        out[f"accuracy_{t}"] = float(np.mean(np.all(err < t, axis=1)) * 100)
        for i, a in enumerate(AXES):
            out[f"{a}_{t}"] = float(np.mean(err[:, i] < t) * 100)
    for i, a in enumerate(AXES):
        out[f"{a}_r2"] = _r2(tgt[:, i], pred[:, i])
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.corrcoef(tgt[:, i], pred[:, i])[0, 1] if len(pred) > 1 else float("nan")
        out[f"{a}_correlation"] = 0.0 if np.isnan(corr) else float(corr)
        out[f"{a}_direction_accuracy"] = float(np.mean(np.sign(pred[:, i]) == np.sign(tgt[:, i])) * 100)
    out["n"] = len(pred)
    return out
