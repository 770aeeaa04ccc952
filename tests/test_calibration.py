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
from sim.calibration.guides import Guide, judge, load_guides, passes, replay_all
from sim.calibration.kinematics import Placement, guide_paths, score_paths
from sim.calibration.search import (
    Geometry,
    Preset,
    calibrate_layout,
    derived_far,
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
    # no far guide in this layout: the writer derives the far preset from the calibrated medium one, rule and all
    medium, far = a.geometry.presets["medium"], scenarios.load("2box_vert_left", "far", scenario_dir=tmp_path)
    preset = far.layout.distances["far"]
    assert (preset.obstacle.low, preset.obstacle.high) == (round(medium.near + 1.5, 2),) * 2
    assert (preset.target.low, preset.target.high) == (round(medium.target + 1.75, 2),) * 2
    assert (preset.obstacle_y, preset.target_y) == (medium.obstacle_y, medium.target_y)
    assert "derived from the calibrated medium preset" in text and f"= {medium.near + 1.5:.2f} m" in text


def test_cli_dry_run_prints_the_table_and_writes_nothing(tmp_path, capsys):
    guide_file = tmp_path / "guides.json"
    by_name = {g.name: g.keys for g in load_guides()}
    guide_file.write_text(json.dumps({name: by_name[name] for name in
                                      ("1box_hori_left__core__close", "1box_vert_left__core__far")}))
    out = tmp_path / "layouts"
    assert main(["--guides", str(guide_file), "--samples", "2", "--maxiter", "2", "--seeds", "2", "--workers", "1",
                 "--out", str(out), "--dry-run", "--no-progress", "--report", str(tmp_path / "t.md")]) == 0
    printed = capsys.readouterr().out
    assert "| 1box_hori_left__core__close | 1box_hori_left | close |" in printed and not out.exists()
    far_row = next(line for line in printed.splitlines() if line.startswith("| 1box_vert_left__core__far |"))
    assert "truncated (no SPACE)" in far_row and "m nearer the goal" in far_row
    assert (tmp_path / "t.md").read_text().startswith("| guide |")
    assert main(["--press", "0.3"]) == 2
    assert "--press must be within" in capsys.readouterr().err


#: The calibration's verified result, as committed (the README's calibration table, "after: pass"): per guide and
#: layout, the replays of 5 (seed 0 nominal, 1-4 jittered) that run collision-free on the named side (a truncated
#: guide also nearer the goal at its end).
CALIBRATED = {
    ("1box_vert_left", "1box_vert_left"): 5, ("1box_vert_right__core__medium", "1box_vert_right"): 5,
    ("1box_vert_left__core__far", "1box_vert_left"): 5, ("1box_vert_right__core__far", "1box_vert_right"): 5,
    ("1box_vert_right__core__close", "1box_vert_right"): 5, ("1box_hori_left__core__medium", "1box_hori_left"): 4,
    ("1box_hori_right__core__medium", "1box_hori_right"): 5, ("1box_hori_left__core__close", "1box_hori_left"): 5,
    ("1box_hori_right__core__close", "1box_hori_right"): 0, ("1box_hori_left__core__far", "1box_hori_left"): 5,
    ("1box_hori_right__core__far", "1box_hori_right"): 5, ("1box_left__core__medium", "1box_vert_left"): 5,
    ("1box_left__core__medium", "1box_hori_left"): 3, ("1box_right__core__medium", "1box_vert_right"): 5,
    ("1box_right__core__medium", "1box_hori_right"): 0, ("2box_vert_left__core__medium", "2box_vert_left"): 5,
    ("2box_vert_right__core__medium", "2box_vert_right"): 5, ("2box_vert_left__core__close", "2box_vert_left"): 5,
    ("2box_vert_right__core__close", "2box_vert_right"): 5, ("2box_hori_left__core__medium", "2box_hori_left"): 5,
    ("2box_hori_right__core__medium", "2box_hori_right"): 5, ("2box_hori_left__core__close", "2box_hori_left"): 5,
}


def test_the_committed_cup_layouts_give_the_calibrations_verified_table():
    """What the calibration guarantees is its verified table, reproducibly (seeded jitter, the simulator's verdict),
    not a margin over the 90 % target: the committed cup layouts pass exactly the replays it reported, guide by
    guide (97/110 replays, 90.5 % of the guides: the target met, two guides of the 1-box ``hori_right`` layout
    never). A change of the physics, the judge or a layout that moves any guide fails here, naming it: re-run
    ``python -m sim.calibrate`` and update the table and the README."""
    table = verify(load_guides(), 5)
    assert {key: row["passed"] for key, row in table.items()} == CALIBRATED
    assert all(row["replays"] == 5 for row in table.values())
    assert guide_share(table) == pytest.approx(0.905, abs=5e-4)


def test_guide_stops_only_with_space():
    assert Guide("x", ("w", "SPACE"), "1box_vert_left", "medium").stops
    assert not Guide("x", ("w",), "1box_vert_left", "medium").stops


# ------------------------------------------------------------------------------------------------ 2-box far presets
#: The spec's far-minus-medium differences (ROBOT_AND_DATA.md section 4, between midpoints): obstacle 1.0-1.5 m ->
#: 2.5-3.0 m, target 2.5 m -> 4.0-4.5 m.
SPEC_FAR_MINUS_MEDIUM = (1.5, 1.75)


@pytest.mark.parametrize("layout", ["2box_hori_left", "2box_hori_right", "2box_vert_left", "2box_vert_right"])
def test_2box_far_presets_follow_the_stated_rule(layout):
    """No operator drove a 2-box ``far`` guide: the committed far preset is the calibrated medium one moved further
    by the spec's far-minus-medium differences, the boxes and sideways positions kept, and the file says so."""
    sc = scenarios.load(layout, "far", family="cup")
    medium, far = sc.layout.distances["medium"], sc.layout.distances["far"]
    d_obstacle, d_target = SPEC_FAR_MINUS_MEDIUM
    assert far.obstacle.low == far.obstacle.high == pytest.approx(medium.obstacle.mid + d_obstacle, abs=1e-9)
    assert far.target.low == far.target.high == pytest.approx(medium.target.mid + d_target, abs=1e-9)
    assert (far.obstacle_y, far.target_y) == (medium.obstacle_y, medium.target_y)
    assert sc.layout.obstacles == scenarios.load(layout, "medium", family="cup").layout.obstacles
    text = sc.path.read_text()
    assert "far-minus-medium differences" in text and "ROBOT_AND_DATA.md section 4" in text
    assert f"obstacle {medium.obstacle.mid:.2f} + 1.50 = {far.obstacle.low:.2f} m" in text
    assert f"target {medium.target.mid:.2f} + 1.75 = {far.target.low:.2f} m" in text
    assert derived_far(Preset(medium.obstacle.mid, medium.obstacle_y, medium.target.mid, medium.target_y)) == \
        Preset(far.obstacle.low, far.obstacle_y, far.target.low, far.target_y)
    # the scene is valid: the goal lies beyond both boxes, inside the arena
    scene = sc.sample(np.random.default_rng(0), jitter=False)
    assert all(scene.goal[0] > b.center[0] + b.size[0] / 2 for b in scene.obstacles)


# ------------------------------------------------------------------------------------------------ truncated guides
def test_judge_holds_a_truncated_guide_to_progress_never_to_a_stop():
    ok = dict(collision_free=True, in_bounds=True, side_ok=True)
    assert judge(False, **ok, start_distance=2.4, end_distance=1.5), "truncated, nearer the goal: passes"
    assert not judge(False, **ok, start_distance=2.4, end_distance=2.5), "truncated, no progress"
    assert judge(True, **ok, start_distance=2.4, end_distance=2.5), "a stop away from the goal is scored, not failed"
    assert not judge(False, collision_free=False, in_bounds=True, side_ok=True, start_distance=2.4, end_distance=1.0)
    assert not judge(False, collision_free=True, in_bounds=True, side_ok=False, start_distance=2.4, end_distance=1.0)
    assert not judge(True, collision_free=True, in_bounds=False, side_ok=True, start_distance=2.4, end_distance=0.1)
    verdicts = judge(np.array([False, True]), True, True, True, np.array([2.0, 2.0]), np.array([2.1, 2.1]))
    assert verdicts.tolist() == [False, True]


def test_model_judges_truncated_paths_on_what_they_reach():
    d = 0.18
    around_and_back = ("a", "a", "a") + ("w",) * 8 + ("s",) * 8  # passes the box on the left, then backs off
    cut = guide_paths(around_and_back, np.zeros((1, 3)), d)
    stopped = guide_paths(around_and_back + ("SPACE",), np.zeros((1, 3)), d)
    assert not cut.stops[0] and stopped.stops[0]
    outcome = score_paths(cut, _one_box(LEFT), 0.15)
    assert outcome.side_ok[0] and outcome.clearance[0] > 0 and outcome.end_distance[0] > outcome.start_distance[0]
    assert not outcome.passes[0], "a truncated guide must end nearer the goal"
    assert score_paths(stopped, _one_box(LEFT), 0.15).passes[0], "a guide that stops is scored on its stop apart"
    around = ("a", "a", "a") + ("w",) * 8  # cut before the goal, nearer it: passes
    assert score_paths(guide_paths(around, np.zeros((1, 3)), d), _one_box(LEFT), 0.15).passes[0]


#: In ``1box_vert_right`` at ``medium`` the box's near face is 1.30 m ahead, 0.16 m to the left (0.20 x 0.12 m).
RIGHT_OF_THE_BOX = ("d",) + ("w",) * 10


def test_truncated_guide_on_the_right_side_passes_without_stopping():
    guide = Guide("1box_vert_right__core__medium", RIGHT_OF_THE_BOX, "1box_vert_right", "medium")
    row = replay_all([guide], 1)[0]
    assert not guide.stops and not row["stops"]
    assert row["status"] == "truncated" and row["collision_free"] and row["passed_side"] == "right"
    assert row["distance_to_goal"] > 0.5, "it never reaches the goal, nor stops"
    assert row["distance_to_goal"] < row["start_distance"]
    assert passes(row) and row["passed"]
    stopped = replay_all([Guide(guide.name, RIGHT_OF_THE_BOX + ("SPACE",), guide.layout, guide.distance)], 1)[0]
    assert stopped["status"] == "missed_goal" and passes(stopped), "its stop away from the goal is scored apart"


def test_truncated_guide_that_collides_fails():
    guide = Guide("1box_vert_right__core__medium", ("w",) * 10, "1box_vert_right", "medium")
    row = replay_all([guide], 1)[0]
    assert not row["stops"] and row["status"] == "collision" and not row["collision_free"]
    assert not passes(row) and not row["passed"]


def test_replay_report_says_truncated(capsys):
    from sim.replay_patterns import main as replay_main

    assert replay_main(["--seeds", "1"]) == 0
    printed = capsys.readouterr().out
    far = [line for line in printed.splitlines() if line.startswith("1box_vert_left__core__far")]
    assert far and all(" truncated " in line and line.rstrip().endswith("yes") for line in far)
    assert "replays of truncated guides (no SPACE)" in printed
