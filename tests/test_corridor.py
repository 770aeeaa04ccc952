"""The corridor family: positions placed through the camera, the eight classes, the robot's cadence, the stop band,
the expert, and the commands that take ``--family corridor``."""

from __future__ import annotations

import dataclasses
import json
import math

import gymnasium as gym
import h5py
import numpy as np
import pybullet as p
import pytest

import scenarios
from envs import CORRIDOR_ENV_ID
from envs.actions import action_class, class_action, joystick_action, server_action_2d
from envs.cadence import PRESETS, Cadence, Command, CommandSchedule
from envs.camera import TargetView, camera_frame, project
from envs.robot import RobotConfig
from foundations.errors import ConfigError
from policies import make_policy
from scenarios import ScenarioError
from scenarios.corridor import v5_path_type
from scenarios.spec import target_half_extents
from sim import eval as eval_cli
from sim import generate as gen_cli
from sim import inspect as inspect_cli
from sim.data import h5format
from sim.evaluation.episode import Episode

V6 = ("center", "weak_left", "strong_left", "weak_right", "strong_right")


@pytest.fixture
def corridor(make_env):
    """Factory for corridor environments (``MobileVLA/Corridor-v0``'s settings), closed after the test."""

    def make(**kwargs):
        kwargs.setdefault("obs_keys", ("instruction", "state"))
        return make_env(family="corridor", **kwargs)

    return make


def drive(env, seed, options, act, limit=1000):
    """Run ``act(obs) -> action`` to the end; returns the final info and the keys."""
    obs, info = env.reset(seed=seed, options=options)
    keys = []
    for _ in range(limit):
        obs, _, terminated, truncated, info = env.step(act(obs))
        keys.append(info["key"])
        if terminated or truncated:
            break
    return info, keys


# ------------------------------------------------------------------------------------------------ the classes
def test_classes_follow_the_team_tables():
    assert [action_class(class_action(n)) for n in ("STOP", "FORWARD", "LEFT", "RIGHT", "FWD+L", "FWD+R", "ROT_L",
                                                     "ROT_R")] == ["STOP", "FORWARD", "LEFT", "RIGHT", "FWD+L",
                                                                   "FWD+R", "ROT_L", "ROT_R"]
    assert class_action("ROT_L").tolist() == [0.0, 0.0, 0.25] and server_action_2d("ROT_R").tolist() == [0.0, 0.0]
    np.testing.assert_array_equal(joystick_action("ROT_R"), np.float32([0.0, 0.0, -1.15]))
    # rollout_core.continuous_to_class: translation wins, |az| > 0.1 rotates, backwards is STOP
    assert action_class([1.15, 0.0, 1.15]) == "FORWARD" and action_class([0.4, 0.0, 0.05]) == "STOP"
    assert action_class([0.0, 0.0, 0.11]) == "ROT_L" and action_class([-1.15, 0.0, 0.0]) == "STOP"
    assert action_class([0.6, -0.6, 0.0]) == "FWD+R"


# ------------------------------------------------------------------------------------------------ the cadence
def test_presets_and_their_errors():
    assert PRESETS["v5"].period_s == 1.35 and PRESETS["v5"].move_s == 0.4 and PRESETS["v5"].mode == "sync"
    assert PRESETS["deployed"].coast_s == 4.0 and PRESETS["deployed"].rotation_move_s == 0.4
    assert PRESETS["v6-data"].stop_hold_s == 0.3 and abs(PRESETS["v6-data"].period_s - 1 / 6) < 1e-12
    changed = Cadence.parse("deployed,coast_s=1.2,loop_hz=none")
    assert changed.coast_s == 1.2 and changed.loop_hz is None and changed.name == "deployed+"
    assert Cadence.parse(changed.to_dict()) == changed
    for bad, match in (("warp", "unknown cadence 'warp'"), ("deployed,speed=3", "FIELD=VALUE"),
                       ("deployed,coast_s=soon", "not a number"), ("deployed,period_s=0.001", "physics step"),
                       ("v5,move_s=2", "fit in period_s"), ("deployed,coast_s=-1", ">= 0")):
        with pytest.raises(ConfigError, match=match):
            Cadence.parse(bad)
    with pytest.raises(ValueError, match="longer than the episode"):
        Cadence.parse("deployed,coast_s=100").check_fits(45.0)


def test_effects_land_on_the_loop_ticks_and_stops_wait_for_the_hold():
    v6 = PRESETS["v6-data"]  # 10 Hz loop = every 24 substeps; hold 0.3 s = 72 substeps
    assert v6.effect_substep(40, 0, stop=False) == 48 and v6.effect_substep(48, 0, stop=False) == 48
    assert v6.effect_substep(40, 0, stop=True) == 48 + 72
    assert v6.next_frame(40, 0) == 80 and v6.next_frame(40, 240) == 280  # a slow decision delays the next frame
    v5 = PRESETS["v5"]
    assert v5.next_frame(0, 24) == 24 + 324 and v5.drive_substeps(rotation=False) == 96


def test_schedule_holds_coasts_and_replaces_commands():
    s = CommandSchedule()
    s.add(Command(0, 100, (0.45, 0.0), 0.0))  # held until its coast ends at 100
    assert s.phases(0, 150) == [(100, (0.45, 0.0), 0.0), (50, (0.0, 0.0), 0.0)]
    s.add(Command(200, None, (0.0, 0.0), 0.0))  # a STOP held back by the hold...
    s.add(Command(180, None, (0.3, 0.3), 0.0))  # ...is replaced by a newer command taking effect earlier
    assert s.phases(150, 240) == [(30, (0.0, 0.0), 0.0), (60, (0.3, 0.3), 0.0)]


# ------------------------------------------------------------------------------------------------ positions
@pytest.mark.parametrize("position", scenarios.names(family="corridor"))
def test_every_position_loads_on_every_path_and_fits_the_corridor(corridor, position):
    env = corridor(scenario=position)
    lay = scenarios.load(position, "straight", family="corridor").layout
    for path in scenarios.distances("corridor"):
        for seed in range(3):
            _, info = env.reset(seed=seed, options={"scenario": position, "distance": path})
            scene = info["scene"]
            assert lay.image_x.low <= scene["target_image_x"] <= lay.image_x.high
            assert scene["side"] is None and not scene["obstacles"] and len(scene["walls"]) == 2
            tx, ty = scene["target_position"]
            half = target_half_extents(scene["target_kind"])
            assert abs(ty) + half[1] < scene["arena"][3]
            assert scene["goal"][1] == ty and scene["goal"][0] < tx - half[0] - 0.40
            assert scene["route_bulge"] == lay.paths[path].bulge


def test_the_start_frame_shows_the_basket_at_its_image_x(corridor):
    """The position's placement (the camera model) and the renderer agree: paint the basket red, find it."""
    env = corridor(scenario="strong_left", obs_keys=("image",), image_size=(320, 180), domain_randomization=True)
    for position in ("strong_left", "weak_right", "v5_left"):
        obs, info = env.reset(seed=3, options={"scenario": position})
        scene = env.unwrapped.scene
        p.changeVisualShape(scene._active_target, -1, rgbaColor=(1, 0, 0, 1), physicsClientId=scene.client)
        image = scene.render_onboard(env.unwrapped.spec_scene, (320, 180)).astype(int)
        red = (image[..., 0] > image[..., 1] + 60) & (image[..., 0] > image[..., 2] + 60)
        cols = np.flatnonzero(red.any(axis=0))
        assert cols.size, position
        seen = (cols.min() + cols.max() + 1) / 2 / 320
        assert abs(seen - info["scene"]["target_image_x"]) < 0.005, position
        # the pinhole model's box (what the oracle grounder and the record's target_in_view read) is the rendered one
        spec = env.unwrapped.spec_scene
        view = TargetView.from_reset_info(info)
        x1, y1, x2, y2 = view.box(spec.start, aspect=320 / 180)
        x, y, yaw = spec.start
        assert view.box((x, y, yaw + math.pi), aspect=320 / 180) is None  # turned away: out of view
        rows = np.flatnonzero(red.any(axis=1))
        assert abs(x1 - cols.min() / 320) < 0.01 and abs(x2 - (cols.max() + 1) / 320) < 0.01
        assert abs(y1 - rows.min() / 180) < 0.02 and abs(y2 - (rows.max() + 1) / 180) < 0.02


def test_projection_of_a_point_straight_ahead():
    robot = RobotConfig()
    frame = camera_frame(robot, (0.0, 0.0, 0.0))
    ahead = frame.eye + 2.0 * frame.forward
    uv, depth = project(frame, ahead[None], 16 / 9)
    assert np.allclose(uv, [[0.5, 0.5]]) and depth[0] == pytest.approx(2.0)


def test_axes_and_names_of_the_family():
    assert scenarios.axis_names("corridor") == ("position", "path")
    assert scenarios.default_sweep("corridor") == (V6, ("left_curve", "straight", "right_curve"))
    assert v5_path_type("v5_left", "right_curve") == "left_right" and v5_path_type("center", "straight") is None
    with pytest.raises(ScenarioError, match="'medium' is not a path of the corridor family"):
        scenarios.check_distances("corridor", ["medium"])
    with pytest.raises(ScenarioError, match="'straight' is not a distance of the cup family"):
        scenarios.check_distances("cup", ["straight"])


# ------------------------------------------------------------------------------------------------ motion
def test_v5_pulses_move_a_press_length_and_rotations_turn_in_place(corridor):
    env = corridor(cadence="v5")
    env.reset(seed=0)
    start = env.unwrapped._pose
    _, _, _, _, info = env.step(class_action("FORWARD"))
    x, y, yaw = info["state"][:3]
    assert info["sim_time"] == pytest.approx(1.35) and info["key"] == "FORWARD"
    assert math.hypot(x - start[0], y - start[1]) == pytest.approx(0.18, abs=0.002)
    _, _, _, _, info = env.step(class_action("ROT_L"))
    assert math.hypot(info["state"][0] - x, info["state"][1] - y) < 1e-4  # in place
    assert info["state"][2] - yaw == pytest.approx(0.25 * 0.4, abs=0.003)  # 0.25 rad/s for 0.4 s


def test_deployed_commands_are_held_and_coast_out(corridor):
    env = corridor(cadence="deployed,coast_s=0.5", action_latency=2.0)
    env.reset(seed=0)
    env.step(class_action("FORWARD"))  # decided at 0, in force at 2.0 s, next frame at 2.0 s
    _, _, _, _, info = env.step(class_action("FORWARD"))  # in force from 4.0 s; the first coasts out at 2.5 s
    assert info["sim_time"] == pytest.approx(4.0)
    moved = info["state"][0] - env.unwrapped.spec_scene.start[0]
    assert moved == pytest.approx(0.45 * 0.5, abs=0.01)  # 0.5 s at 0.45 m/s (the ramps up and down cancel)
    assert env.unwrapped.rest_time == pytest.approx(4.0 - 2.5 - 0.18, abs=0.03)  # braked at 2.5 s


def test_v6_stop_is_held_back_by_the_joystick_hold(corridor):
    env = corridor(cadence="v6-data")
    env.reset(seed=0)
    for _ in range(6):
        env.step(class_action("FORWARD"))
    x0 = env.unwrapped._pose[0]
    _, _, _, _, info = env.step(class_action("STOP"))  # 1/6 s later: still driving (hold 0.3 s)
    assert info["state"][3] == pytest.approx(0.45, abs=1e-3) and info["state"][0] - x0 > 0.07


# ------------------------------------------------------------------------------------------------ outcomes
def test_statuses_of_the_corridor(corridor):
    env = corridor()
    forward = lambda obs: class_action("FORWARD")  # noqa: E731
    info, _ = drive(env, 0, {"scenario": "center"}, forward)
    assert info["status"] == "overshoot" and info["stop_distance"] < 0.40
    info, _ = drive(env, 0, {"scenario": "strong_left"}, forward)
    assert info["status"] == "overshoot" and info["stop_distance"] > 0.5  # drove past the basket
    info, _ = drive(env, 0, {"scenario": "center"}, lambda obs: class_action("LEFT"))
    assert info["status"] == "collision" and info["collided_with"] == "wall"
    short = corridor(max_time=5.0)
    info, keys = drive(short, 0, {"scenario": "center"}, lambda obs: class_action("STOP"))
    assert info["status"] == "timeout" and info["sim_time"] == pytest.approx(5.0) and set(keys) == {"STOP"}


def test_a_stop_counts_after_the_dwell_without_a_stop_decision(corridor):
    """In the band and facing, at rest for ``stop_dwell`` s (the robot waited for a slow decision): success."""
    env = corridor(action_latency=2.5)
    env.reset(seed=0)
    base = env.unwrapped
    spec = base.spec_scene
    env.reset(options={"scene": dataclasses.replace(spec, start=(spec.goal[0], spec.goal[1], 0.0))})
    _, _, terminated, _, info = env.step(class_action("FORWARD"))  # still at rest when the next frame is taken
    assert terminated and info["status"] == "success" and base.rest_time >= 2.0


def test_facing_is_required(corridor):
    env = corridor()
    env.reset(seed=0)
    spec = env.unwrapped.spec_scene
    turned = (spec.goal[0], spec.goal[1], math.radians(30))
    env.reset(options={"scene": dataclasses.replace(spec, start=turned)})
    _, _, terminated, truncated, info = env.step(class_action("STOP"))
    assert not terminated and info["stop_distance"] == pytest.approx(0.45, abs=0.05)
    assert abs(info["heading_error"]) > math.radians(20)


# ------------------------------------------------------------------------------------------------ the expert
@pytest.mark.parametrize("cadence", ["deployed", "v6-data", "v5"])
def test_the_expert_reaches_every_v6_position_on_every_path(corridor, cadence):
    env = corridor(cadence=cadence)
    expert = make_policy("expert")
    for position in V6:
        for path in scenarios.distances("corridor"):
            episode = Episode(env, 11, {"scenario": position, "distance": path})
            expert.reset(episode.instruction, episode.reset_info)
            for _ in episode.run(expert.act):
                pass
            assert episode.status == "success", (cadence, position, path)
            if path == "straight" and position != "center":
                assert episode.keys[0].startswith("ROT"), "turns to face an off-centre basket first"


def test_v5_decisions_match_the_team_frame_counts(corridor):
    """Under the v5 cadence the expert's decisions per V5 path type are within 20 % of the team's frames."""
    frames = {"center_straight": 15, "left_straight": 19, "right_straight": 19, "center_left": 19,
              "center_right": 19, "left_right": 20, "right_left": 20, "left_left": 19.5, "right_right": 17.5}
    env = corridor(cadence="v5")
    expert = make_policy("expert")
    for position in ("v5_left", "v5_center", "v5_right"):
        for path in scenarios.distances("corridor"):
            counts = []
            for seed in range(2):
                episode = Episode(env, seed, {"scenario": position, "distance": path})
                expert.reset(episode.instruction, episode.reset_info)
                for _ in episode.run(expert.act):
                    pass
                assert episode.status == "success"
                counts.append(episode.steps)
            team = frames[v5_path_type(position, path)]
            assert abs(np.mean(counts) - team) <= 0.2 * team, (position, path, counts)


def test_the_corridor_passes_gymnasium_checks():
    from gymnasium.utils.env_checker import check_env

    env = gym.make(CORRIDOR_ENV_ID, image_size=(64, 48))
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert "바구니" in obs["instruction"] and env.observation_space.contains(obs)
    env.close()


# ------------------------------------------------------------------------------------------------ commands
def test_eval_in_the_corridor_records_the_cadence_and_the_stop(tmp_path):
    out = tmp_path / "run"
    rc = eval_cli.main(["--policy", "expert", "--family", "corridor", "--layouts", "strong_right", "--distances",
                        "straight", "--episodes-per-combo", "1", "--workers", "1", "--image-size", "64x48",
                        "--record", "none", "--cadence", "v6-data", "--out", str(out)])
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert config["env"]["actuation"] == "class" and config["env"]["cadence"]["name"] == "v6-data"
    record = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert record["status"] == "success" and 0.40 <= record["stop_distance_m"] <= 0.50
    assert record["keys"][0] == "ROT_R" and record["scene"]["stop_band"] == [0.4, 0.5]
    assert "## Per position x path" in (out / "summary.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--layouts", "1box_hori_left"], "'1box_hori_left' is not a position of the corridor family"),
    (["--distances", "far"], "'far' is not a path of the corridor family"),
    (["--cadence", "warp"], "unknown cadence 'warp'"),
    (["--cadence", "deployed,period_s=0.001"], "faster than the physics step"),
    (["--cadence", "deployed,stop_hold_s=60"], "longer than the episode"),
    (["--cadence", "v6-data", "--max-time", "0.1"], "longer than the episode"),
    (["--actuation", "keypress", "--cadence", "v5"], "a cadence is for the class actuation"),
    (["--latency-component", "grounder"], "NAME=SECONDS"),
    (["--latency-component", "grounder=99"], "NAME=SECONDS"),
])
def test_bad_corridor_arguments_exit_2_naming_them(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    rc = eval_cli.main(["--policy", "expert", "--family", "corridor", "--episodes-per-combo", "1", "--out", str(out),
                        *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_cup_distance_names_its_family_too(tmp_path, capsys):
    rc = eval_cli.main(["--policy", "expert", "--distances", "straight", "--out", str(tmp_path / "r")])
    assert rc == 2 and "'straight' is not a distance of the cup family" in capsys.readouterr().err


def test_generate_writes_v6_files_and_their_lerobot_dataset(tmp_path, capsys):
    from sim.data.lerobot_format import read_lerobot_dataset

    out = tmp_path / "data"
    rc = gen_cli.main(["--family", "corridor", "--out", str(out), "--episodes", "2", "--image-size", "64x48",
                       "--layouts", "weak_left", "--distances", "straight", "right_curve", "--workers", "1",
                       "--format", "lerobot", "--no-progress", "--seed", "3"])
    assert rc == 0
    files = sorted(out.glob("episode_*.h5"))
    assert sorted(f.name.split("_", 3)[3] for f in files) == ["weak_left_right_curve.h5", "weak_left_straight.h5"]
    assert inspect_cli.main([str(out), "--strict"]) == 0
    contents = read_lerobot_dataset(out / "lerobot")
    assert contents.info["fps"] == 6 and contents.info["total_episodes"] == 2
    for path, episode in zip(files, contents.episodes):
        with h5py.File(path) as f:
            assert f.attrs["cx_position"] == "weak_left" and f.attrs["stop_inject_n"] == 5
            events = [e.decode() if isinstance(e, bytes) else e for e in f["action_event_types"][()]]
            actions = f["actions"][()]
            assert events[-5:] == ["stop_inject"] * 5 and events[-6] == "joystick_neutral"
            assert np.isin(actions[:, :2], np.float32([0.0, 1.15, -1.15])).all() and not actions[-5:].any()
            assert f.attrs["num_frames"] == len(actions) and f.attrs["total_duration"] > 0
            frames = h5format.read_episode_frames(path)
        np.testing.assert_array_equal(np.stack(episode.values["observation.images.cam_front"]), frames)
        np.testing.assert_array_equal(np.stack(episode.values["action"]), actions)
        assert list(episode.values["action.event_type"]) == events


def test_generate_refuses_the_other_familys_axes(tmp_path, capsys):
    rc = gen_cli.main(["--family", "corridor", "--out", str(tmp_path / "d"), "--episodes", "1", "--distances",
                       "close", "--no-progress"])
    assert rc == 2 and "'close' is not a path of the corridor family" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    rc = gen_cli.main(["--out", str(tmp_path / "d"), "--episodes", "1", "--cadence", "v5", "--no-progress"])
    assert rc == 2 and "--cadence is for the corridor" in capsys.readouterr().err
    # a cadence the episodes could not end under: refused before the folder is made
    rc = gen_cli.main(["--family", "corridor", "--out", str(tmp_path / "d"), "--episodes", "1", "--cadence",
                       "v6-data,stop_hold_s=600", "--no-progress"])
    assert rc == 2 and "stop_hold_s = 600 s is longer than the episode" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
