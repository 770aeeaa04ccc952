"""``python -m sim.train_rl``: a tiny PPO run gives a zip that ``sb3:PATH`` loads and drives the env with."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401 - registers the environment
from envs import ENV_ID
from envs.keys import key_to_action
from policies import make_policy
from sim import train_rl as train_rl_cli
from sim.training import rl as train_rl

TINY = ["--n-envs", "1", "--n-steps", "32", "--batch-size", "32", "--n-epochs", "1", "--max-steps", "8",
        "--log-every", "0", "--no-progress-bar", "--check-episodes", "1"]


@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("rl") / "ppo_tiny.zip"
    assert train_rl_cli.main(["--algo", "ppo", "--timesteps", "64", "--out", str(out), *TINY]) == 0
    return out, json.loads(out.with_suffix(".json").read_text())


def test_tiny_run_writes_a_loadable_zip_that_acts(tiny_zip):
    out, meta = tiny_zip
    assert out.is_file() and [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp left
    assert meta["timesteps_total"] >= 64 and meta["layout"] == "1box_hori_left" and meta["distance"] == "medium"
    assert meta["check"]["episodes"] == 1 and 0.0 <= meta["check"]["success_rate"] <= 1.0
    assert json.loads(out.with_suffix(".json").read_text())["action_dims"] == 2

    policy = make_policy(f"sb3:{out}")
    assert policy.algo == "PPO" and policy.obs_keys == ("state",)
    # The evaluation environment (all observation keys, as sim.eval builds it) feeds the model unchanged.
    env = gym.make(ENV_ID, image_size=(32, 24), max_steps=3)
    try:
        policy.check_observation_space(env.observation_space)
        obs, info = env.reset(seed=1)
        policy.reset(info["instruction"], info)
        for _ in range(3):
            action = policy.act(obs)
            assert action.shape == (3,) and action.dtype == np.float32 and action[2] == 0.0  # (2,) padded
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    finally:
        env.close()


def test_resume_continues_the_step_count(tiny_zip, tmp_path):
    out, meta = tiny_zip
    resumed = tmp_path / "resumed.zip"
    assert train_rl_cli.main(["--timesteps", "32", "--out", str(resumed), "--resume", str(out),
                              *TINY[:-2], "--check-episodes", "0"]) == 0
    meta2 = json.loads(resumed.with_suffix(".json").read_text())
    assert resumed.is_file() and "check" not in meta2
    assert meta2["timesteps_total"] >= meta["timesteps_total"] + 32 and meta2["resumed_from"] == str(out)


def test_translation_only_pads_and_side_penalty_applies_once():
    plain = train_rl.make_env(side_penalty=0.0, action_dims=3)
    shaped = train_rl.make_env(side_penalty=5.0, action_dims=2)
    assert shaped.action_space.shape == (2,)
    totals = []
    try:
        for env, dims in ((plain, 3), (shaped, 2)):
            env.reset(seed=3)
            total, sides = 0.0, []
            for key in ["d"] * 5 + ["w"] * 12:  # sidestep right, then drive past the box: the wrong side
                _, reward, terminated, truncated, info = env.step(key_to_action(key)[:dims])
                total += reward
                sides.append(info["side_ok"])
                if terminated or truncated:
                    break
            assert False in sides and info["status"] != "collision"
            totals.append(total)
    finally:
        plain.close()
        shaped.close()
    assert totals[1] == pytest.approx(totals[0] - 5.0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--timesteps", "0", "--out", "m.zip"], "--timesteps: must be an integer in [1, 1000000000]"),
        (["--timesteps", "10", "--out", "m.zip", "--layout", "nope"], "--layout: 'nope' is not a layout of the cup family"),
        (["--timesteps", "10", "--out", "m.zip", "--distance", "near"], "--distance: 'near' is not a distance of the cup family"),
        (["--timesteps", "10", "--out", "model"], "--out must name a .zip file"),
        (["--timesteps", "10", "--out", "m.zip", "--resume", "missing.zip"], "--resume 'missing.zip': no such file"),
        (["--timesteps", "10", "--out", "m.zip", "--n-envs", "0"], "--n-envs: must be an integer in [1, 256]"),
        (["--timesteps", "10", "--out", "m.zip", "--n-steps", "16", "--n-envs", "1"], "exceeds the rollout size"),
        (["--timesteps", "10", "--out", "m.zip", "--net-arch", "64,x"], "--net-arch must be"),
        (["--timesteps", "10", "--out", "m.zip", "--algo", "sac"], "invalid choice: 'sac'"),
        (["--out", "m.zip"], "the following arguments are required: --timesteps"),
    ],
)
def test_bad_arguments_exit_with_a_clear_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_rl_cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.zip").exists()


def test_action_cost_charges_only_the_magnitude_beyond_the_dead_zone():
    plain = train_rl.make_env(action_dims=2)
    costly = train_rl.make_env(action_dims=2, action_cost=0.1)
    try:
        rewards = []
        for env in (plain, costly):
            env.reset(seed=4)
            rewards.append([env.step(np.array(a, np.float32))[1] for a in ([1.15, 0.0], [0.3, 0.0], [0.1, 0.1])])
    finally:
        plain.close()
        costly.close()
    np.testing.assert_allclose(np.subtract(rewards[0], rewards[1]), [0.1, 0.015, 0.0], atol=1e-6)
