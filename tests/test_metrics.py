"""Statistics against hand-computed values and the team's metric code (seed 002)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.evaluation.metrics import mmrv, offline_metrics, pearson, spl, wilson_interval


def test_wilson_interval_hand_computed():
    # 8/10: centre (0.8 + 1.96^2/20) / (1 + 1.96^2/10) = 0.7156, half-width 0.2253 (z = 1.959964)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 24) == pytest.approx((0.0, 0.1380), abs=1e-4)
    assert wilson_interval(24, 24)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_mmrv_hand_computed():
    assert mmrv([0.1, 0.5, 0.9], [0.2, 0.4, 0.8]) == 0.0  # same ranking
    # policy 0 and 1 swapped in sim: each gets |0.2-0.4| = 0.2; policy 2 none -> 0.4/3
    assert mmrv([0.5, 0.1, 0.9], [0.2, 0.4, 0.8]) == pytest.approx(0.4 / 3)
    with pytest.raises(ValueError):
        mmrv([0.1], [0.1, 0.2])


def test_spl_and_pearson():
    assert spl(True, 2.0, 4.0) == 0.5 and spl(True, 2.0, 1.9) == 1.0 and spl(False, 2.0, 2.0) == 0.0
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def team_evaluate(predictions, targets):
    """Transcription of evaluate_performance / evaluate_robot_control_metrics in seed 002."""
    from sklearn.metrics import r2_score

    out = {"mae": np.mean(np.abs(predictions - targets))}
    for t in (0.3, 0.2, 0.15):
        out[f"accuracy_{t}"] = np.mean(np.all(np.abs(predictions - targets) < t, axis=1)) * 100
        for i, axis in enumerate(("linear_x", "linear_y")):
            out[f"{axis}_{t}"] = np.mean(np.abs(predictions[:, i] - targets[:, i]) < t) * 100
    for i, axis in enumerate(("linear_x", "linear_y")):
        out[f"{axis}_r2"] = r2_score(targets[:, i], predictions[:, i])
        c = np.corrcoef(targets[:, i], predictions[:, i])[0, 1]
        out[f"{axis}_correlation"] = c if not np.isnan(c) else 0.0
        out[f"{axis}_direction_accuracy"] = np.mean(np.sign(predictions[:, i]) == np.sign(targets[:, i])) * 100
    return out


def test_offline_metrics_match_the_team_code():
    rng = np.random.default_rng(0)
    targets = rng.choice([-1.0, 0.0, 1.0], size=(200, 2))
    predictions = np.clip(targets + rng.normal(0, 0.25, size=targets.shape), -1, 1)
    ours = offline_metrics(predictions, targets)
    for key, value in team_evaluate(predictions, targets).items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    assert ours["rmse"] == pytest.approx(np.sqrt(np.mean((predictions - targets) ** 2)))
    assert ours["n"] == 200


def test_offline_metrics_edge_cases():
    perfect = offline_metrics(np.ones((5, 2)), np.ones((5, 2)))
    assert perfect["mae"] == 0.0 and perfect["linear_x_r2"] == 1.0 and perfect["accuracy_0.15"] == 100.0
    assert math.isnan(offline_metrics(np.zeros((0, 2)), np.zeros((0, 2)))["mae"])
    with pytest.raises(ValueError):
        offline_metrics(np.zeros((3, 3)), np.zeros((3, 3)))
