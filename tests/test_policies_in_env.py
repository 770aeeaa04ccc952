"""Every in-process policy name builds and drives the real environment (remote and sb3 have their own tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies import make_policy, vla_names

VLA = [name for name in vla_names() if name != "robovlms"]  # robovlms: tests/test_robovlms.py


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def drive(env, policy, steps=3):
    obs, info = env.reset(seed=4)
    policy.reset(info["instruction"], info)
    actions = []
    for _ in range(steps):
        action = policy.act(obs)
        assert action.shape == (3,) and action.dtype == np.float32 and np.all(np.isfinite(action))
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    assert len(policy.latencies_ms) == len(actions)
    return np.stack(actions)


@pytest.mark.parametrize("backbone", ["tiny-kosmos2", "lite"])
@pytest.mark.parametrize("name", VLA)
def test_vla_policies_act_on_real_observations(make_env, name, backbone):
    env = make_env(scenario="1box_vert_right")
    actions = drive(env, make_policy(name, backbone=backbone, use_bundled=False))
    assert np.all(actions[0] == 0.0), "the first step of an episode is forced to zero, as on the robot"
    assert np.all(np.abs(actions) <= 1.5)


@pytest.mark.parametrize("name, kwargs", [("expert", {}), ("random", {"seed": 1}), ("replay", {"keys": ["w", "q", "a"]})])
def test_scripted_policies_act_on_real_observations(make_env, name, kwargs):
    env = make_env(scenario="2box_hori_left")
    actions = drive(env, make_policy(name, **kwargs))
    if name == "replay":
        assert np.allclose(actions[:, :2], [[1.15, 0.0], [1.15, 1.15], [0.0, 1.15]])
