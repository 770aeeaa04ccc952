"""Policy interface, registry, expert, replay and random policies."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import scenarios
from envs.keys import KEY_ACTIONS, action_to_key, key_to_action
from policies import PolicyOutputError, UnknownPolicyError, make_policy, names
from policies.base import Policy
from policies.replay import load_patterns


def run_episode(env, policy, seed):
    obs, info = env.reset(seed=seed)
    policy.reset(info["instruction"], info)
    keys = []
    while True:
        obs, _, terminated, truncated, info = env.step(policy.act(obs))
        keys.append(info["key"])
        if terminated or truncated:
            return info, keys


def test_key_table_round_trip():
    for key in KEY_ACTIONS:
        assert action_to_key(key_to_action(key)) == key
    assert action_to_key(np.array([0.9, 0.2, 0.0])) == "w"
    with pytest.raises(KeyError, match="unknown key"):
        key_to_action("x")


def test_registry():
    assert {"expert", "replay", "random", "case2", "remote", "sb3", "onnx"} <= set(names())
    with pytest.raises(UnknownPolicyError, match="registered"):
        make_policy("no_such_policy")
    assert make_policy("random").name == "random"


def test_base_class_validates_outputs():
    class Bad(Policy):
        def __init__(self, out):
            super().__init__()
            self.out = out

        def _act(self, observation):
            return self.out

    assert Bad([0.5, 0.5]).act({}).tolist() == [0.5, 0.5, 0.0]
    with pytest.raises(PolicyOutputError, match="non-finite"):
        Bad([np.nan, 0, 0]).act({})
    with pytest.raises(PolicyOutputError, match="shape"):
        Bad(np.zeros(4)).act({})
    good = Bad([0, 0, 0])
    good.act({})
    assert len(good.latencies_ms) == 1 and good.latencies_ms[0] >= 0


@pytest.mark.parametrize("layout", scenarios.names())
def test_expert_succeeds_on_the_instructed_side(make_env, layout):
    env = make_env(scenario=layout, obs_keys=("state",))
    expert = make_policy("expert")
    for distance, seed in zip(scenarios.DISTANCES, (11, 12, 13)):
        env.reset(options={"scenario": layout, "distance": distance})
        info, keys = run_episode(env, expert, seed)
        assert info["status"] == "success", (layout, distance, keys)
        assert info["side_ok"] is True and info["passed_side"] == layout.rsplit("_", 1)[1]
        assert set(keys) <= {"w", "q", "a", "z", "s", "c", "d", "e", "SPACE"} and keys[-1] == "SPACE"


def test_expert_variants_differ_but_still_succeed(make_env):
    env = make_env(scenario="1box_hori_right", obs_keys=("state",))
    _, core = run_episode(env, make_policy("expert"), 5)
    info, variant = run_episode(env, make_policy("expert", epsilon=0.5, seed=1), 5)
    assert info["status"] == "success" and variant != core


def test_expert_needs_the_scene():
    with pytest.raises(KeyError, match="scene"):
        make_policy("expert").reset("go", {})


def test_replay_keys_pattern_and_h5(make_env, tmp_path):
    patterns = load_patterns()
    assert len(patterns) == 13 and patterns["1box_hori_left__core__medium"][-1] == "SPACE"
    env = make_env(scenario="1box_hori_left", obs_keys=("state",), jitter=False)
    info, keys = run_episode(env, make_policy("replay", keys=["w", "w", "a", "SPACE"]), 0)
    assert keys[:4] == ["w", "w", "a", "SPACE"]
    state = info["state"]
    assert state[0] == pytest.approx(0.36, abs=0.01) and state[1] == pytest.approx(0.18, abs=0.01)

    actions = np.stack([np.zeros(3, np.float32), key_to_action("q"), key_to_action("d")])
    path = tmp_path / "episode.h5"
    with h5py.File(path, "w") as f:
        f["actions"] = actions
        f.create_dataset("action_event_types", data=["episode_start", "start_action", "start_action"], dtype=h5py.string_dtype())
    replay = make_policy("replay", path=str(path))
    assert np.array_equal(replay.actions, actions[1:])
    with pytest.raises(ValueError, match="exactly one"):
        make_policy("replay")
    with pytest.raises(ValueError, match="unknown pattern"):
        make_policy("replay", pattern="nope")


def test_random_policy_is_seeded_and_scores_worse(make_env):
    a, b = make_policy("random", seed=3), make_policy("random", seed=3)
    a.reset("x"), b.reset("x")
    seq_a = [a.act({}).tolist() for _ in range(10)]
    assert seq_a == [b.act({}).tolist() for _ in range(10)]
    env = make_env(obs_keys=("state",))
    statuses = [run_episode(env, make_policy("random", seed=s), s)[0]["status"] for s in range(3)]
    assert statuses.count("success") == 0


def test_policy_package_does_not_import_the_physics_engine():
    """``policies`` needs ``envs.keys`` only: PyBullet must stay out of the remote client / server processes."""
    import subprocess
    import sys

    code = "import sys, policies, policies.expert, envs.keys; print('pybullet' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
