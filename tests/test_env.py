"""The BoxAvoid environment: API conformance, actuation semantics, episode ends, determinism, resets."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import resource
import warnings

import numpy as np
import pybullet as p
import pytest
from gymnasium.utils.env_checker import check_env

from envs import rendering
from envs.camera import camera_frame, project
from envs.keys import key_to_action
from envs.rendering import choose_renderer, egl_error
from envs.robot import RobotConfig, body_velocity_from_wheels, wheel_speeds
from foundations.errors import ConfigError
from policies import make_policy

W = key_to_action("w")


def rollout_hashes(env, seed, policy_name="expert"):
    obs, info = env.reset(seed=seed)
    policy = make_policy(policy_name)
    policy.reset(info["instruction"], info)
    digests = [hashlib.sha1(obs["image"].tobytes()).hexdigest()]
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs))
        digests.append(hashlib.sha1(obs["image"].tobytes() + obs["state"].tobytes()).hexdigest() + f"{reward:.9f}")
        if terminated or truncated:
            return digests, info


def test_gymnasium_check_env(make_env):
    env = make_env(image_size=(64, 48))
    check_env(env.unwrapped, skip_render_check=True)


def test_sb3_check_env_on_image_and_state(make_env):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = make_env(obs_keys=("image", "state"), image_size=(64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(env.unwrapped, warn=False)
    assert set(env.observation_space.spaces) == {"image", "state"}


def test_observation_layout(make_env):
    env = make_env(image_size="96x64")
    obs, info = env.reset(seed=1)
    assert obs["image"].shape == (64, 96, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (6,) and obs["state"].dtype == np.float32
    assert obs["instruction"] == info["instruction"]
    assert "left" in info["instruction"]
    assert obs in env.observation_space


def test_same_seed_same_episode_image_for_image(make_env):
    kwargs = dict(scenario="2box_vert_right", distance="close", image_size=(64, 64), domain_randomization=True)
    a, info_a = rollout_hashes(make_env(**kwargs), seed=7)
    b, info_b = rollout_hashes(make_env(**kwargs), seed=7)
    c, _ = rollout_hashes(make_env(**kwargs), seed=8)
    assert a == b
    assert a[0] != c[0]
    assert info_a["status"] == info_b["status"] == "success"


def test_forward_press_moves_one_press_length_then_stops(make_env):
    env = make_env(obs_keys=("state",), jitter=False)
    obs, _ = env.reset(seed=0)
    obs2, *_ , info = env.step(W)
    robot = RobotConfig()
    dx, dy = obs2["state"][:2] - obs["state"][:2]
    assert dx == pytest.approx(robot.press_distance, abs=0.005)
    assert abs(dy) < 1e-4
    assert np.allclose(obs2["state"][3:], 0.0, atol=1e-6), "the robot stops after a press"
    assert info["key"] == "w"
    assert np.allclose(info["wheel_speeds"], wheel_speeds(robot, robot.speed, 0.0, 0.0))


@pytest.mark.parametrize(
    "action, expected_angle",
    [([1.15, 1.15, 0], 45.0), ([0.3, 0.3, 0], 45.0), ([0.0, -0.9, 0], -90.0), ([-1.0, 0.5, 0], 180.0 - 26.565)],
)
def test_keypress_uses_direction_only(make_env, action, expected_angle):
    env = make_env(obs_keys=("state",), jitter=False)
    obs, _ = env.reset(seed=0)
    obs2, *_ = env.step(np.array(action, np.float32))
    dx, dy = obs2["state"][:2] - obs["state"][:2]
    assert math.hypot(dx, dy) == pytest.approx(RobotConfig().press_distance, abs=0.005)
    assert math.degrees(math.atan2(dy, dx)) == pytest.approx(expected_angle, abs=0.5)


def test_dead_zone_zero_vector_and_spin(make_env):
    env = make_env(obs_keys=("state",), jitter=False)
    obs, _ = env.reset(seed=0)
    obs1, *_, info = env.step(np.array([0.1, -0.14, 0.0], np.float32))
    assert info["key"] == "SPACE"
    assert np.allclose(obs1["state"], obs["state"], atol=1e-6)
    obs2, *_, info = env.step(key_to_action("r"))
    assert info["key"] == "r"
    assert np.allclose(obs2["state"][:2], obs["state"][:2], atol=1e-4), "angular_z alone spins in place"
    assert obs2["state"][2] - obs["state"][2] > 0.3


def test_velocity_mode_holds_velocity_for_a_control_period(make_env):
    env = make_env(obs_keys=("state",), jitter=False, actuation="velocity", control_hz=10)
    obs, _ = env.reset(seed=0)
    for _ in range(10):
        obs, *_ = env.step(np.array([0.3, 0.0, 0.0], np.float32))
    assert obs["state"][3] == pytest.approx(0.3, abs=1e-3)
    # 1 s at 0.3 m/s after a 0.12 s ramp at 2.5 m/s^2
    assert obs["state"][0] == pytest.approx(0.3 * 1.0 - 0.3**2 / (2 * 2.5), abs=0.01)
    obs, *_ = env.step(np.array([5.0, 0.0, 0.0], np.float32))  # clipped to the action space, then to the robot speed
    assert obs["state"][3] <= RobotConfig().speed + 1e-6


def test_collision_terminates_with_penalty(make_env):
    env = make_env(scenario="1box_vert_left", distance="close", obs_keys=("state",), jitter=False)
    env.reset(seed=0)
    for _ in range(10):
        _, reward, terminated, truncated, info = env.step(W)
        if terminated:
            break
    assert terminated and not truncated
    assert info["status"] == "collision" and info["collided"] and info["collided_with"] == "obstacle_0"
    assert reward < -5
    with pytest.raises(RuntimeError, match="already ended"):
        env.step(W)


def test_leaving_the_arena_and_timeout(make_env):
    env = make_env(obs_keys=("state",), jitter=False)
    env.reset(seed=0)
    for _ in range(10):
        *_, terminated, _, info = env.step(key_to_action("s"))
        if terminated:
            break
    assert info["status"] == "out_of_bounds"

    env = make_env(obs_keys=("state",), max_steps=3)
    env.reset(seed=0)
    results = [env.step(np.zeros(3, np.float32)) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert results[-1][4]["status"] == "timeout"


def test_success_needs_a_stop_inside_the_radius(make_env):
    env = make_env(obs_keys=("state",), jitter=False, success_radius=0.3)
    obs, info = env.reset(seed=0)
    expert = make_policy("expert")
    expert.reset(info["instruction"], info)
    keys = []
    while True:
        obs, reward, terminated, truncated, info = env.step(expert.act(obs))
        keys.append(info["key"])
        if terminated or truncated:
            break
    assert info["status"] == "success" and keys[-1] == "SPACE"
    assert info["distance_to_goal"] <= 0.3 and reward > 5
    assert info["passed_side"] == "left" and info["side_ok"] is True
    assert info["path_length"] > 2.0


def test_invalid_actions_raise(make_env):
    env = make_env(obs_keys=("state",))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0, 0], np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(2, np.float32))


def test_reset_switches_layout_and_reuses_bodies(make_env):
    env = make_env(obs_keys=("state",), domain_randomization=True)
    env.reset(seed=0, options={"scenario": "2box_hori_right", "distance": "far"})
    assert env.unwrapped.spec_scene.scenario == "2box_hori_right" and len(env.unwrapped.spec_scene.obstacles) == 2
    client = env.unwrapped.scene.client
    bodies_before = None
    rss_before = None
    layouts = ["1box_hori_left", "2box_vert_left", "2box_hori_right", "1box_vert_right"]
    for i in range(1000):
        env.reset(seed=i, options={"scenario": layouts[i % 4], "distance": ("close", "medium", "far")[i % 3]})
        if i == 200:
            bodies_before = p.getNumBodies(physicsClientId=client)
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Box bodies are cached per quantised size (5 scales x 2 box shapes x at most 2 boxes), so the body count is
    # bounded whatever the number of resets; the other bodies are floor, robot, 4 walls and 3 targets.
    assert bodies_before <= p.getNumBodies(physicsClientId=client) <= 9 + 5 * 2 * 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 20_000  # KiB


def test_kinematics_round_trip_and_urdf_matches_config():
    robot = RobotConfig()
    for v in ([0.45, 0.0, 0.0], [0.0, -0.3, 0.0], [0.2, 0.1, 1.0]):
        assert np.allclose(body_velocity_from_wheels(robot, wheel_speeds(robot, *v)), v, atol=1e-5)
    forward = wheel_speeds(robot, robot.speed, 0, 0)
    assert forward[1] == pytest.approx(0.0, abs=1e-6), "the rear wheel idles when driving straight ahead"
    assert forward[0] == pytest.approx(-forward[2])

    from envs.scene import ROBOT_URDF

    cid = p.connect(p.DIRECT)
    try:
        body = p.loadURDF(str(ROBOT_URDF), flags=p.URDF_USE_IMPLICIT_CYLINDER, physicsClientId=cid)
        shape = p.getCollisionShapeData(body, -1, physicsClientId=cid)[0]
        assert shape[2] == p.GEOM_CYLINDER
        assert shape[3][1] == pytest.approx(robot.radius)  # (length, radius, ...)
        assert p.getNumJoints(body, physicsClientId=cid) == 4  # three wheels + mast
    finally:
        p.disconnect(cid)


def test_render_topdown(make_env):
    env = make_env(render_mode="rgb_array", render_size=(160, 90), image_size=(32, 32))
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (90, 160, 3) and frame.dtype == np.uint8 and frame.std() > 5


def test_egl_renders_a_frame_or_falls_back_with_a_warning(make_env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        egl = make_env(renderer="egl", image_size=(32, 32))
        obs, _ = egl.reset(seed=0)
    assert obs["image"].shape == (32, 32, 3)
    if egl_error() is not None:
        assert egl.unwrapped.renderer == "tiny"
        assert any("EGL renderer unavailable" in str(w.message) for w in caught)
        pytest.skip(f"EGL cannot start here ({egl_error()}): .ci/run installs libegl1 libgl1-mesa-dri")
    assert egl.unwrapped.renderer == "egl" and egl.unwrapped.scene.renderer == p.ER_BULLET_HARDWARE_OPENGL
    assert obs["image"].std() > 5  # a scene, not a blank frame


def test_auto_picks_the_renderer_by_image_size(monkeypatch, capsys):
    assert choose_renderer("auto", (224, 224)) == "tiny" and choose_renderer("egl", (8, 8)) == "egl"
    assert choose_renderer("auto", (1280, 720)) == ("tiny" if egl_error() else "egl")
    monkeypatch.setattr(rendering, "egl_error", lambda: "no libEGL")
    assert choose_renderer("auto", (1280, 720)) == "tiny"
    assert capsys.readouterr().err.strip() == "renderer auto: EGL cannot start (no libEGL); rendering with tiny"
    with pytest.raises(ConfigError, match="renderer must be one of tiny, egl, auto"):
        choose_renderer("vulkan", (224, 224))


def test_egl_draws_the_randomised_floor_texture(make_env):
    """PyBullet's EGL plugin applies a changed texture by its public id as its own (bullet3 pull request #4805); the
    scene loads its textures before any URDF so that the two agree: a wood floor is drawn as wood (brown), not as
    the plane's own blue and white checker."""
    if egl_error() is not None:
        pytest.skip(f"EGL cannot start here ({egl_error()})")
    env = make_env(scenario="1box_hori_left", distance="medium", image_size=(160, 90), renderer="egl",
                   domain_randomization=True)
    obs, info = env.reset(seed=1)
    assert info["scene"]["floor_texture"] == "wood"
    r, g, b = obs["image"][75:].reshape(-1, 3).mean(axis=0)
    assert r > b + 40 and g > b, (r, g, b)


@pytest.mark.parametrize("renderer", ["tiny", "egl"])
def test_both_renderers_draw_a_point_where_the_camera_model_projects_it(make_env, renderer):
    """The same intrinsics and pose in both renderers: a small magenta sphere 1.5 m ahead and 0.3 m to the left of the
    camera is drawn where :func:`envs.camera.project` puts it (within a pixel)."""
    if renderer == "egl" and egl_error() is not None:
        pytest.skip(f"EGL cannot start here ({egl_error()})")
    size = (320, 180)
    env = make_env(scenario="1box_hori_left", distance="far", image_size=size, renderer=renderer, jitter=False)
    env.reset(seed=0)
    base = env.unwrapped
    scene = base.scene
    frame = camera_frame(base.robot, scene.robot_pose(), base.spec_scene.camera_offset)
    point = frame.eye + 1.5 * frame.forward - 0.3 * frame.right
    vis = p.createVisualShape(p.GEOM_SPHERE, radius=0.02, rgbaColor=(1, 0, 1, 1), physicsClientId=scene.client)
    p.createMultiBody(0, -1, vis, basePosition=point.tolist(), physicsClientId=scene.client)
    image = scene.render_onboard(base.spec_scene, size).astype(int)
    magenta = (image[..., 0] > 150) & (image[..., 1] < 80) & (image[..., 2] > 150)
    rows, cols = np.nonzero(magenta)
    assert rows.size, renderer
    uv, _ = project(frame, point[None], size[0] / size[1])
    u, v = uv[0] * size
    assert abs(cols.mean() + 0.5 - u) < 1.0 and abs(rows.mean() + 0.5 - v) < 1.0, (cols.mean(), rows.mean(), u, v)


def test_bad_options_are_rejected(make_env):
    with pytest.raises(ValueError, match="at most 1280x720"):
        make_env(image_size=(1920, 1080))
    with pytest.raises(ValueError, match="obs_keys"):
        make_env(obs_keys=("depth",))
    with pytest.raises(ValueError, match="actuation"):
        make_env(actuation="torque")


def test_an_episode_does_not_depend_on_the_episodes_before_it(make_env):
    """Bullet keeps solver state per body pair; the scene renews the colliding bodies every episode, so a collision
    ends the same in a fresh env and in one that has just run another collision (what makes evaluation results
    independent of the worker that ran them)."""
    from envs.keys import key_to_action
    from sim.evaluation.episode import Episode
    from sim.evaluation.runner import episode_seed

    options = {"scenario": "1box_hori_left", "distance": "close"}
    first, second = (episode_seed(3, "1box_hori_left", "close", i) for i in (0, 1))  # a pair that showed it

    def drive_into_the_box(env, seed):
        episode = Episode(env, seed, options)
        for _ in episode.run(lambda obs: key_to_action("w")):
            pass
        return episode.status, episode.poses[-1]

    fresh = drive_into_the_box(make_env(obs_keys=("state",), action_latency=0.1), second)
    used = make_env(obs_keys=("state",), action_latency=0.1)
    drive_into_the_box(used, first)
    assert fresh[0] == "collision"
    assert drive_into_the_box(used, second) == fresh  # before the fix: 0.3 mm further, another end pose


def test_basket_family_pot_is_round_and_solid(make_env):
    """A pot collides as a cylinder: driving straight at it collides; passing its bounding square's corner does
    not (a box of the same size would be hit there)."""
    from sim.evaluation.episode import Episode

    env = make_env(family="basket", scenario="1box_vert_left", distance="medium", obs_keys=("state",), jitter=False)
    episode = Episode(env, 0)
    pot = episode.reset_info["scene"]["obstacles"][0]
    assert pot["shape"] == "pot" and episode.info["family"] == "basket"
    for _ in episode.run(lambda obs: key_to_action("w")):
        pass
    assert episode.status == "collision" and episode.info["collided_with"] == "obstacle_0"
    # Drive diagonally (q) along a line 0.33 m from the pot's centre: beyond the pot's radius plus the robot's
    # (0.15 + 0.15 m), yet 0.12 m from the corner of the pot's bounding square, which a box would have there.
    cx = pot["center"][0]
    start = (cx - 0.33 * math.sqrt(2), 0.0, 0.0)
    corner = Episode(env, 0, {"scene": dataclasses.replace(env.unwrapped.spec_scene, start=start)})
    for step in corner.run(lambda obs: key_to_action("q")):
        if step.info["state"][1] > 0.8:
            break
    assert corner.info["collided_with"] is None and corner.info["state"][0] > cx
