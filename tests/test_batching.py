"""Batched inference: many environments' episodes through one forward give the actions of unbatched execution."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from policies import make_policy
from policies.batching import BatchedPolicyClient, PolicyBatchServer, PolicyServerError
from policies.vla import VLAPolicy
from tests.conftest_vla import INSTRUCTION, observation

OTHER = "Navigate around obstacles and reach the front of the beverage bottle on the right"
ENVS, STEPS = 4, 6


def scripts(seed: int = 0) -> list[list[dict]]:
    """Per environment, its observations: two instructions, frames of two sizes apart, all different."""
    return [[observation(seed + 100 * env + step, instruction=INSTRUCTION if env % 2 else OTHER)
             for step in range(STEPS)] for env in range(ENVS)]


def unbatched(policy, script: list[dict]) -> np.ndarray:
    policy.reset(script[0]["instruction"])
    return np.stack([policy.act(obs) for obs in script])


def batched(policy, obs_scripts: list[list[dict]]) -> np.ndarray:
    """Every environment in one batch per step; environment ``k`` starts ``k`` steps late (so windows of
    different lengths and instructions meet in one batch), and each runs ``STEPS`` steps."""
    episodes = [policy.new_episode() for _ in obs_scripts]
    actions = np.zeros((len(obs_scripts), STEPS, 3), np.float32)
    for t in range(STEPS + len(obs_scripts)):
        live = [k for k in range(len(obs_scripts)) if 0 <= t - k < STEPS]
        for k in live:
            if t == k:
                policy.start_episode(episodes[k], obs_scripts[k][0]["instruction"])
        out = policy.act_batch([episodes[k] for k in live], [obs_scripts[k][t - k] for k in live])
        for k, action in zip(live, out):
            actions[k, t - k, :len(action)] = action
    return actions


CASES = [
    pytest.param("lstm-recon", {}, id="lstm-recon-lite"),
    pytest.param("case2", {"execution": "ensemble"}, id="case2-ensemble-execution"),
    pytest.param("clip-lstm-recon", {"execution": "all", "zero_first_step": False}, id="clip-lstm-all"),
    pytest.param("robovlms", {"backbone": "tiny-kosmos2", "dead_zone": False}, id="robovlms-tiny-kosmos2"),
    pytest.param("ensemble", {"second": "case1"}, id="ensemble"),
]


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_batched_actions_equal_unbatched(name, kwargs):
    policy = make_policy(name, **kwargs)
    obs = scripts()
    reference = np.stack([unbatched(policy, s) for s in obs])
    assert np.abs(reference).max() > 0  # the comparison is not between zeros
    got = batched(policy, obs)
    np.testing.assert_allclose(got, reference, atol=1e-5, rtol=1e-5)


def test_a_batch_costs_one_backbone_call_per_instruction_and_one_head_call_per_window_length():
    policy = make_policy("lstm-recon")
    calls = {"backbone": 0, "head": 0}
    encode, head_forward = policy.backbone.encode_frames, policy.head.forward

    def count(kind, fn):
        def wrapped(*args, **kwargs):
            calls[kind] += 1
            return fn(*args, **kwargs)
        return wrapped

    policy.backbone.encode_frames = count("backbone", encode)
    policy.head.forward = count("head", head_forward)
    episodes = [policy.new_episode() for _ in range(4)]
    for ep in episodes:
        policy.start_episode(ep, INSTRUCTION)
    policy.act_batch(episodes, [observation(i) for i in range(4)])
    # lite's image stream does not read the instruction, and a padded window always has window_size frames
    assert calls == {"backbone": 1, "head": 1}
    assert [ep.num_predictions for ep in episodes] == [1, 1, 1, 1]


def test_robovlms_windows_of_different_lengths_run_as_separate_head_calls():
    policy = make_policy("robovlms", backbone="tiny-kosmos2")
    assert isinstance(policy, VLAPolicy) and policy.history.pad is False
    early, late = policy.new_episode(), policy.new_episode()
    policy.start_episode(early, INSTRUCTION)
    policy.act_batch([early], [observation(0)])
    policy.start_episode(late, INSTRUCTION)
    policy.act_batch([early, late], [observation(1), observation(2)])
    assert len(early.history.features()) == 2 and len(late.history.features()) == 1


# ------------------------------------------------------------------------------------------ the server


def drive_clients(address, scripts_, name: str) -> list[np.ndarray]:
    """Each environment's script run by its own thread through its own connection: the server batches them."""
    results: list[np.ndarray | None] = [None] * len(scripts_)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            client = BatchedPolicyClient(address.connect(), name)
            results[k] = unbatched(client, scripts_[k])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(scripts_))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_the_server_batches_concurrent_workers_and_their_actions_equal_unbatched():
    reference = make_policy("lstm-recon")
    obs = scripts(seed=7)
    expected = [unbatched(reference, s) for s in obs]
    with PolicyBatchServer(lambda name: make_policy(name), ("lstm-recon",), max_wait_ms=500) as server:
        got = drive_clients(server.address, obs, "lstm-recon")
        stats = server.stats
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)
    assert stats.requests == ENVS * STEPS
    assert stats.mean_batch > 1.5  # the workers' steps shared forwards


def test_server_errors_reach_the_caller_and_leave_the_other_episodes_running():
    with PolicyBatchServer(lambda name: make_policy(name), ("lstm-recon", "broken"), max_wait_ms=1) as server:
        good = BatchedPolicyClient(server.address.connect(), "lstm-recon")
        with pytest.raises(PolicyServerError, match="act before reset"):
            good.act(observation(0))
        good.reset(INSTRUCTION)
        with pytest.raises(PolicyServerError, match="images must be uint8"):
            good.act({"image": np.zeros((8, 8, 3), np.float32), "instruction": INSTRUCTION})
        unknown = BatchedPolicyClient(server.address.connect(), "case9")
        with pytest.raises(PolicyServerError, match="does not serve policy 'case9'"):
            unknown.reset(INSTRUCTION)
        broken = BatchedPolicyClient(server.address.connect(), "broken")
        with pytest.raises(PolicyServerError, match="building the policy: UnknownPolicyError"):
            broken.reset(INSTRUCTION)
        assert np.all(np.isfinite(good.act(observation(1))))
    with pytest.raises(PolicyServerError, match="server is gone"):
        good.act(observation(2))


def test_a_policy_that_cannot_batch_is_refused_with_its_type():
    with PolicyBatchServer(lambda name: make_policy(name), ("expert",)) as server:
        client = BatchedPolicyClient(server.address.connect(), "expert")
        with pytest.raises(PolicyServerError, match="ExpertPolicy, which cannot run batched"):
            client.reset(INSTRUCTION)


def test_an_answer_to_an_abandoned_call_is_not_read_as_the_next_one():
    with PolicyBatchServer(lambda name: make_policy(name), ("lstm-recon",), max_wait_ms=1) as server:
        client = BatchedPolicyClient(server.address.connect(), "lstm-recon")
        client.reset(INSTRUCTION)
        client._conn.send((client._seq + 1, "act", "lstm-recon", observation(0)))  # a call whose caller gave up
        client._seq += 1
        first = client.act(observation(1))  # the stale answer (to seq - 1) must be skipped
        reference = make_policy("lstm-recon")
        reference.reset(INSTRUCTION)
        reference.act(observation(0))
        np.testing.assert_allclose(first, reference.act(observation(1)), atol=1e-5)


def test_bad_server_arguments_are_refused():
    from scenarios.errors import ConfigError

    with pytest.raises(ConfigError, match="max_batch"):
        PolicyBatchServer(make_policy, ("x",), max_batch=0)
    with pytest.raises(ConfigError, match="max_wait_ms"):
        PolicyBatchServer(make_policy, ("x",), max_wait_ms=-1)
