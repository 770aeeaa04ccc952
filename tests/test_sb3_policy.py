"""The ``sb3`` policy: load a (tiny, freshly trained) stable-baselines3 zip and drive the environment."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3 import A2C, PPO, SAC

import envs  # noqa: F401 - registers the environment
from envs import ENV_ID
from policies import make_policy
from policies.sb3_policy import SB3Policy, SB3PolicyError, detect_algo


@pytest.fixture(scope="module")
def state_env():
    env = gym.make(ENV_ID, obs_keys=("state",), max_steps=10)
    yield env
    env.close()


@pytest.fixture(scope="module")
def ppo_zip(tmp_path_factory, state_env):
    model = PPO(
        "MultiInputPolicy",
        state_env,
        n_steps=64,
        batch_size=32,
        n_epochs=1,
        seed=0,
        device="cpu",
    )
    model.learn(total_timesteps=128)
    path = tmp_path_factory.mktemp("sb3") / "ppo_state.zip"
    model.save(path)
    return path


def test_ppo_zip_drives_the_environment(ppo_zip, state_env):
    policy = make_policy(f"sb3:{ppo_zip}")
    assert isinstance(policy, SB3Policy) and policy.algo == "PPO" and policy.obs_keys == ("state",)
    policy.check_observation_space(state_env.observation_space)
    reference = PPO.load(ppo_zip, device="cpu")
    obs, info = state_env.reset(seed=0)
    policy.reset(info["instruction"], info)
    for _ in range(3):
        action = policy.act(obs)
        assert action.dtype == np.float32 and action.shape == (3,)
        assert np.all(np.abs(action) <= 1.15 + 1e-6)
        np.testing.assert_allclose(action, reference.predict(obs, deterministic=True)[0], rtol=0, atol=1e-6)
        obs, _, terminated, truncated, _ = state_env.step(action)
        if terminated or truncated:
            break
    assert len(policy.latencies_ms) >= 1


def test_full_observation_feeds_only_the_trained_keys(ppo_zip):
    policy = make_policy(f"sb3:{ppo_zip}", algo="ppo")
    state = np.array([0.1, -0.2, 0.3, 0, 0, 0], np.float32)
    full = {
        "image": np.zeros((224, 224, 3), np.uint8),
        "instruction": "go",
        "state": state,
    }
    np.testing.assert_array_equal(policy.act(full), policy.act({"state": state}))


def test_missing_key_is_a_clear_error(ppo_zip):
    policy = make_policy(f"sb3:{ppo_zip}")
    image_env_space = spaces.Dict({"image": spaces.Box(0, 255, (224, 224, 3), np.uint8)})
    with pytest.raises(
        SB3PolicyError,
        match="needs observation key 'state'.*obs_keys including 'state'",
    ):
        policy.check_observation_space(image_env_space)
    with pytest.raises(SB3PolicyError, match="needs observation key 'state'"):
        policy.act({"image": np.zeros((224, 224, 3), np.uint8), "instruction": "go"})
    with pytest.raises(SB3PolicyError, match=r"shape \(7,\), the model was trained on \(6,\)"):
        policy.act({"state": np.zeros(7, np.float32)})


class SevenEnv(gym.Env):
    """A Box (7,) observation: does not fit the simulator's observations."""

    observation_space = spaces.Box(-1, 1, (7,), np.float32)
    action_space = spaces.Box(-1.15, 1.15, (3,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(7, np.float32), {}

    def step(self, action):
        return np.zeros(7, np.float32), 0.0, True, False, {}


def test_box_models(tmp_path, state_env):
    flat = gym.wrappers.FlattenObservation(state_env)
    PPO("MlpPolicy", flat, n_steps=8, batch_size=8, device="cpu").save(tmp_path / "flat.zip")
    policy = make_policy(f"sb3:{tmp_path / 'flat.zip'}", deterministic=False)
    obs, _ = state_env.reset(seed=0)
    assert policy.act({"instruction": "go", **obs}).shape == (3,)

    PPO("MlpPolicy", SevenEnv(), n_steps=8, batch_size=8, device="cpu").save(tmp_path / "seven.zip")
    policy = make_policy(f"sb3:{tmp_path / 'seven.zip'}")
    with pytest.raises(SB3PolicyError, match=r"Box observation of shape \(7,\).*state \(6,\)"):
        policy.act(obs)


def test_algo_detection(tmp_path, ppo_zip, state_env):
    assert detect_algo(ppo_zip) == "ppo"
    A2C("MultiInputPolicy", state_env, device="cpu").save(tmp_path / "a2c.zip")
    SAC("MultiInputPolicy", state_env, buffer_size=10, device="cpu").save(tmp_path / "sac.zip")
    assert detect_algo(tmp_path / "a2c.zip") == "a2c"
    assert detect_algo(tmp_path / "sac.zip") == "sac"
    assert make_policy(f"sb3:{tmp_path / 'sac.zip'}").algo == "SAC"


def test_bad_files_are_clear_errors(tmp_path, ppo_zip):
    with pytest.raises(SB3PolicyError, match="not found"):
        make_policy(f"sb3:{tmp_path / 'missing.zip'}")
    (tmp_path / "junk.zip").write_text("not a zip")
    with pytest.raises(SB3PolicyError, match="not a stable-baselines3 model zip"):
        make_policy(f"sb3:{tmp_path / 'junk.zip'}")
    with pytest.raises(SB3PolicyError, match="unknown algo"):
        make_policy(f"sb3:{ppo_zip}", algo="trpo")
