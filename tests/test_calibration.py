"""``sim.calibrate``: the kinematic model agrees with the simulator, the search is deterministic and writes loadable
layouts, and the committed cup layouts let the operators' guides pass (the calibration's acceptance figure)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import scenarios
from envs.geometry import LEFT, NOT_PASSED, RIGHT, passing_side
from envs.robot import RobotConfig
from sim.calibrate import main
from sim.calibration.guides import Guide, load_guides, passes, replay_all
from sim.calibration.kinematics import Placement, guide_paths, score_paths
from sim.calibration.search import (
    Geometry,
    calibrate_layout,
    draw_replays,
    guide_share,
    placement,
    verify,
    write_layouts,
)

ROBOT = RobotConfig()


def test_passing_side_rule():
    assert passing_side(0.0, 0.3, 1.0, 0.3, 0.4, 0.6, 0.0) == LEFT
    assert passing_side(0.0, -0.3, 1.0, -0.3, 0.4, 0.6, 0.0) == RIGHT
    assert passing_side(0.0, 0.3, 0.3, 0.3, 0.4, 0.6, 0.0) == NOT_PASSED
    # judged in the middle of the overlap: a diagonal crossing the centre line there counts on its side then
    assert passing_side(0.4, 0.2, 0.6, -0.1, 0.4, 0.6, 0.0) == LEFT
    sides = passing_side(np.zeros(3), np.array([0.3, -0.3, 0.3]), np.array([1.0, 1.0, 0.2]), 0.0, 0.4, 0.6, 0.0)
    assert sides.tolist() == [LEFT, RIGHT, NOT_PASSED]


def test_paths_follow_the_keys_in_the_body_frame():
    d = ROBOT.press_distance
    paths = guide_paths(("w", "w", "a", "SPACE"), np.array([[0.0, 0.0, 0.0], [0.0, 0.0, math.pi / 2]]), d)
    np.testing.assert_allclose(paths.ends[0, -1], [2 * d, d], atol=1e-12)
    np.testing.assert_allclose(paths.ends[1, -1], [-d, 2 * d], atol=1e-12)  # facing +y: forward is +y, left is -x
    turned = guide_paths(("r", "w"), np.zeros((1, 3)), d, ROBOT)
    angle = ROBOT.angular_speed * ROBOT.press_duration
    np.testing.assert_allclose(turned.ends[0, -1], [d * math.cos(angle), d * math.sin(angle)], atol=1e-12)


def _one_box(side: int = LEFT) -> Placement:
    return Placement(obstacle_centres=np.array([[[1.0, 0.0]]]), obstacle_halves=np.array([[0.1, 0.2]]),
                     obstacle_round=np.array([False]), target=np.array([[3.0, 0.0]]), target_half=np.array([0.05, 0.05]),
                     target_round=True, goal=np.array([[2.65, 0.0]]), arena=np.array([[-1.0, 4.0, -1.5, 1.5]]), side=side)


def test_model_scores_collisions_sides_and_the_stop():
    d = 0.18
    straight = guide_paths(("w",) * 8, np.zeros((1, 3)), d)
    around = guide_paths(("a", "a", "a") + ("w",) * 8 + ("d", "d", "d", "w", "w", "w", "w"), np.zeros((1, 3)), d)
    assert score_paths(straight, _one_box(), 0.15).clearance[0] < 0
    ok = score_paths(around, _one_box(LEFT), 0.15)
    assert ok.passes[0] and ok.clearance[0] == pytest.approx(3 * d - 0.2 - 0.15, abs=0.01)
    assert ok.end_distance[0] == pytest.approx(abs(12 * d - 2.65), abs=1e-9)
    assert not score_paths(around, _one_box(RIGHT), 0.15).passes[0], "passed on the left, told right"
    pot = _one_box()
    pot = Placement(**{**pot.__dict__, "obstacle_round": np.array([True])})
    assert score_paths(straight, pot, 0.15).clearance[0] < 0


def test_model_agrees_with_the_simulator_on_every_guide():
    """Nominal scenes of the committed cup layouts: the kinematic model and PyBullet give the same verdict."""
    guides = load_guides()
    for guide in guides:
        scenario = scenarios.load(guide.layout, guide.distance)
        reps = draw_replays([guide], scenario, ROBOT.press_distance, 0, 0, ROBOT)
        outcome = score_paths(reps.paths, placement(Geometry.of(scenario), scenario, reps), ROBOT.radius)
        sim = replay_all([guide], 1)[0]
        assert bool(outcome.passes[0]) == passes(sim), guide.name
        if guide.stops and sim["collision_free"]:
            assert outcome.end_distance[0] == pytest.approx(sim["distance_to_goal"], abs=0.02), guide.name


def test_search_is_deterministic_and_writes_loadable_layouts(tmp_path):
    guides = [g for g in load_guides() if g.layout == "2box_vert_left"]
    kwargs = dict(family="cup", samples=3, seed=1, maxiter=3, robot=ROBOT)
    a = calibrate_layout("2box_vert_left", guides, ROBOT.press_distance, **kwargs)
    b = calibrate_layout("2box_vert_left", guides, ROBOT.press_distance, **kwargs)
    assert a == b and set(a.geometry.presets) == {g.distance for g in guides}
    (path,) = write_layouts([a], guides, tmp_path)
    text = path.read_text()
    assert "calibrated by `python -m sim.calibrate`" in text and "2box_vert_left__core__close" in text
    for d in scenarios.DISTANCES:
        sc = scenarios.load("2box_vert_left", d, scenario_dir=tmp_path)
        if d in a.geometry.presets:
            assert sc.layout.distances[d].obstacle.low == a.geometry.presets[d].near
    depth, width = a.geometry.sizes[0]
    assert depth >= width, "a vert box stays lengthwise"


def test_cli_dry_run_prints_the_table_and_writes_nothing(tmp_path, capsys):
    guide_file = tmp_path / "guides.json"
    guide_file.write_text(json.dumps({"1box_hori_left__core__close": load_guides()[7].keys}))
    out = tmp_path / "layouts"
    assert main(["--guides", str(guide_file), "--samples", "2", "--maxiter", "2", "--seeds", "2", "--workers", "1",
                 "--out", str(out), "--dry-run", "--no-progress", "--report", str(tmp_path / "t.md")]) == 0
    printed = capsys.readouterr().out
    assert "| 1box_hori_left__core__close | 1box_hori_left | close |" in printed and not out.exists()
    assert (tmp_path / "t.md").read_text().startswith("| guide |")
    assert main(["--press", "0.3"]) == 2
    assert "--press must be within" in capsys.readouterr().err


def test_the_operators_guides_pass_in_the_cup_family():
    """The issue's acceptance figure: with pose jitter (5 seeds per guide, seed 0 nominal), at least 90 % of the
    guides run collision-free on the named side in the committed cup layouts (a name played in both orientations
    counts half in each)."""
    share = guide_share(verify(load_guides(), 5))
    assert share >= 0.9, f"{share:.1%} of the guides pass"


def test_guide_stops_only_with_space():
    assert Guide("x", ("w", "SPACE"), "1box_vert_left", "medium").stops
    assert not Guide("x", ("w",), "1box_vert_left", "medium").stops
