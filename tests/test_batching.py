"""Batched inference: many environments' episodes through one forward give the actions of unbatched execution."""

from __future__ import annotations

import json
import re
import threading

import numpy as np
import pytest

from policies import make_policy
from policies.batching import BatchedPolicyClient, PolicyBatchServer, PolicyServerError, ServerLink
from policies.vla import VLAPolicy
from tests.conftest_vla import INSTRUCTION, batched, drive_clients, observation, unbatched

OTHER = "Navigate around obstacles and reach the front of the beverage bottle on the right"
ENVS, STEPS = 4, 6


def scripts(seed: int = 0) -> list[list[dict]]:
    """Per environment, its observations: two instructions, frames of two sizes (the last environment's are
    160 x 200), all different."""
    return [[observation(seed + 100 * env + step, size=(160, 200) if env == ENVS - 1 else (224, 224),
                         instruction=INSTRUCTION if env % 2 else OTHER)
             for step in range(STEPS)] for env in range(ENVS)]






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




def test_the_server_batches_concurrent_workers_and_their_actions_equal_unbatched():
    reference = make_policy("lstm-recon")
    obs = scripts(seed=7)
    expected = [unbatched(reference, s) for s in obs]
    with PolicyBatchServer(lambda name: make_policy(name), ("lstm-recon",), max_wait_ms=500) as server:
        got = drive_clients(server.address, obs, "lstm-recon")
        stats = server.stats["lstm-recon"]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)
    assert stats.requests == ENVS * STEPS
    assert stats.mean_batch > 1.5  # the workers' steps shared forwards


def test_server_errors_reach_the_caller_and_leave_the_other_episodes_running():
    with PolicyBatchServer(lambda name: make_policy(name), ("lstm-recon", "broken"), max_wait_ms=1) as server:
        good = BatchedPolicyClient(ServerLink(server.address), "lstm-recon")
        with pytest.raises(PolicyServerError, match="act before reset"):
            good.act(observation(0))
        good.reset(INSTRUCTION)
        with pytest.raises(PolicyServerError, match="images must be uint8"):
            good.act({"image": np.zeros((8, 8, 3), np.float32), "instruction": INSTRUCTION})
        unknown = BatchedPolicyClient(ServerLink(server.address), "case9")
        with pytest.raises(PolicyServerError, match="does not serve policy 'case9'"):
            unknown.reset(INSTRUCTION)
        broken = BatchedPolicyClient(ServerLink(server.address), "broken")
        with pytest.raises(PolicyServerError, match="building the policy: UnknownPolicyError"):
            broken.reset(INSTRUCTION)
        assert np.all(np.isfinite(good.act(observation(1))))
    with pytest.raises(PolicyServerError, match="server is gone"):
        good.act(observation(2))


def test_a_policy_that_cannot_batch_is_refused_with_its_type():
    with PolicyBatchServer(lambda name: make_policy(name), ("expert",)) as server:
        client = BatchedPolicyClient(ServerLink(server.address), "expert")
        with pytest.raises(PolicyServerError, match="ExpertPolicy, which cannot run batched"):
            client.reset(INSTRUCTION)


def test_a_call_cut_short_by_the_step_timeout_leaves_the_next_episode_clean():
    from sim.evaluation.worker import StepTimeout, step_deadline

    with PolicyBatchServer(lambda name: make_policy(name), ("lstm-recon",), max_wait_ms=3000) as server:
        waiting, idle = ServerLink(server.address), ServerLink(server.address)
        client, other = BatchedPolicyClient(waiting, "lstm-recon"), BatchedPolicyClient(idle, "lstm-recon")
        other.reset(INSTRUCTION)  # connected but silent: the server waits for its request up to 3 s
        client.reset(INSTRUCTION)
        with pytest.raises(StepTimeout), step_deadline(0.3, "act"):
            client.act(observation(0))
        idle.close()
        client.reset(INSTRUCTION)  # a new connection: no answer of the abandoned call can be read as this one's
        got = [client.act(observation(i)) for i in (1, 2)]
    reference = make_policy("lstm-recon")
    reference.reset(INSTRUCTION)
    np.testing.assert_allclose(got, [reference.act(observation(i)) for i in (1, 2)], atol=1e-5)


def test_bad_server_arguments_are_refused():
    from foundations.errors import ConfigError

    with pytest.raises(ConfigError, match="max_batch"):
        PolicyBatchServer(make_policy, ("x",), max_batch=0)
    with pytest.raises(ConfigError, match="max_wait_ms"):
        PolicyBatchServer(make_policy, ("x",), max_wait_ms=-1)


# ------------------------------------------------------------------------------------------ in the evaluation


def _sweep(out, *extra):
    from sim.eval import build_parser, config_from_args

    return config_from_args(build_parser().parse_args([
        "--policy", "lstm-recon", "--policy", "expert", "--layouts", "1box_vert_left", "2box_hori_right",
        "--distances", "close", "--episodes-per-combo", "2", "--image-size", "64x64", "--record", "none",
        "--out", str(out), *extra]))


TIMING = ("latency_p50_ms", "latency_p95_ms")


def outcomes(records: list[dict], policy: str | None = None) -> list[dict]:
    """Records without their wall-clock fields, in plan order."""
    key = lambda r: (r["policy"], r["layout"], r["distance"], r["episode"])  # noqa: E731
    return [{k: v for k, v in r.items() if k not in TIMING}
            for r in sorted(records, key=key) if policy is None or r["policy"] == policy]


def test_a_batched_evaluation_serves_every_vla_step_and_gives_the_unbatched_records(tmp_path):
    """One worker: every batch holds one environment, so the records are the unbatched ones bit for bit. Two
    workers: the VLA's steps share forwards; a batch of N rounds like N batches of one only to float tolerance
    (~1e-6), which a keypress threshold can amplify, so there only the expert's records (run in the workers) must be
    identical, and the VLA's episodes the same ones with the same seeds."""
    from sim.evaluation import evaluate

    plain = evaluate(_sweep(tmp_path / "off"), workers=1, batch="off", progress=False, plots=False)
    single = evaluate(_sweep(tmp_path / "on1"), workers=1, batch="on", progress=False, plots=False)
    assert outcomes(single.records) == outcomes(plain.records)
    two = evaluate(_sweep(tmp_path / "on2", "--batch-wait-ms", "50"), workers=2, batch="on", progress=False,
                   plots=False)
    assert two.errors == 0 and outcomes(two.records, "expert") == outcomes(plain.records, "expert")
    assert [(r["layout"], r["episode"], r["seed"]) for r in outcomes(two.records, "lstm-recon")] == \
        [(r["layout"], r["episode"], r["seed"]) for r in outcomes(plain.records, "lstm-recon")]
    inference = two.summary["policies"]["lstm-recon"]["provenance"]["inference"]
    steps = sum(r["steps"] for r in two.records if r["policy"] == "lstm-recon")
    served, forwards = map(int, re.match(r"batched: (\d+) steps in (\d+) forwards", inference).groups())
    assert served == steps and forwards < steps  # every VLA step went through the server, some of them together
    assert "inference" not in two.summary["policies"]["expert"]["provenance"]  # the expert ran in the workers
    assert "inference" not in plain.summary["policies"]["lstm-recon"]["provenance"]
    # where the post-processing's scale comes from, in the report and in config.json (a record, not read back)
    post = plain.summary["policies"]["lstm-recon"]["provenance"]["post-processing"]
    assert post.startswith("x1.15 (the head was trained on labels clamped to [-1, 1]), clip +-1.5")
    assert json.loads((tmp_path / "off" / "config.json").read_text())["built"]["lstm-recon"]["post-processing"] == post


def test_auto_batches_only_policies_on_cuda_with_more_than_one_worker():
    from sim.evaluation.runner import batched_policies

    assert batched_policies("auto", 2, {"a": "cpu", "b": "cuda:0"}) == [("b",)]
    assert batched_policies("auto", 1, {"b": "cuda:0"}) == [] and batched_policies("off", 4, {"b": "cuda"}) == []
    assert batched_policies("on", 1, {"a": "cpu"}) == [("a",)]
    # one server per device
    assert batched_policies("auto", 4, {"a": "cuda:0", "b": "cuda:1", "c": "cuda:0", "d": "cpu"}) == [("a", "c"), ("b",)]


def test_each_device_gets_its_own_policy_server(tmp_path, monkeypatch):
    """Two groups, as two devices would give (here both on the CPU): each policy is served by its own server."""
    import sim.evaluation.runner as runner
    from sim.evaluation import evaluate

    monkeypatch.setattr(runner, "batched_policies", lambda *args: [("lstm-recon",), ("case1",)])
    cfg = _sweep(tmp_path / "run", "--policy", "case1")
    result = evaluate(cfg, workers=1, batch="on", progress=False, plots=False)
    plain = evaluate(_sweep(tmp_path / "plain", "--policy", "case1"), workers=1, batch="off", progress=False,
                     plots=False)
    assert outcomes(result.records) == outcomes(plain.records)
    for name in ("lstm-recon", "case1"):
        steps = sum(r["steps"] for r in result.records if r["policy"] == name)
        inference = result.summary["policies"][name]["provenance"]["inference"]
        assert inference.startswith(f"batched: {steps} steps in {steps} forwards") and inference.endswith("of cpu")


def test_the_eval_command_checks_its_batch_flags(tmp_path, capsys):
    from sim.eval import main

    for flags, message in ((["--batch", "sometimes"], "invalid choice: 'sometimes'"),
                           (["--batch-wait-ms", "-1"], "--batch-wait-ms: must be a number in [0, 60000]")):
        assert main(["--policy", "lstm-recon", "--out", str(tmp_path / "x"), *flags]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_worker_that_vanishes_mid_request_costs_the_others_nothing():
    with PolicyBatchServer(lambda name: make_policy(name), ("lstm-recon",), max_wait_ms=200) as server:
        doomed, survivor = ServerLink(server.address), BatchedPolicyClient(ServerLink(server.address), "lstm-recon")
        doomed.call("reset", "lstm-recon", INSTRUCTION)
        doomed._conn.send(("act", "lstm-recon", observation(0)))  # ... and its process dies before the answer
        doomed.close()
        survivor.reset(INSTRUCTION)
        got = [survivor.act(observation(i)) for i in (1, 2)]
        assert server.stats["lstm-recon"].requests >= 2
    reference = make_policy("lstm-recon")
    reference.reset(INSTRUCTION)
    np.testing.assert_allclose(got, [reference.act(observation(i)) for i in (1, 2)], atol=1e-5)


def _returns_within(fn, seconds: float) -> BaseException | None:
    """Run ``fn`` in a thread; fail the test if it is still running after ``seconds``; return what it raised."""
    raised: list[BaseException] = []

    def run():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    return raised[0] if raised else None


def test_a_stopped_server_refuses_new_workers_at_once_and_closes_without_waiting():
    server = PolicyBatchServer(lambda name: make_policy(name), ("lstm-recon",)).__enter__()
    server._stop.set()  # as when its serving thread has died, or while close() runs
    first = _returns_within(lambda: ServerLink(server.address).call("reset", "lstm-recon", INSTRUCTION), 10)
    assert isinstance(first, PolicyServerError)
    assert _returns_within(server.close, 10) is None
    later = _returns_within(lambda: ServerLink(server.address).call("reset", "lstm-recon", INSTRUCTION), 10)
    assert isinstance(later, PolicyServerError) and "cannot reach" in str(later)


def test_a_server_that_stops_answering_is_given_up_after_the_answer_timeout():
    with PolicyBatchServer(lambda name: make_policy(name), ("lstm-recon",), max_wait_ms=1500) as server:
        client = BatchedPolicyClient(ServerLink(server.address, answer_timeout_s=0.3), "lstm-recon")
        client.reset(INSTRUCTION)
        silent = BatchedPolicyClient(ServerLink(server.address), "lstm-recon")
        silent.reset(INSTRUCTION)  # connected, then silent: the server waits up to 1.5 s for its next step
        with pytest.raises(PolicyServerError, match="did not answer within 0.3 s"):
            client.act(observation(0))


def test_the_policies_are_built_before_the_server_accepts_anyone():
    built = []

    def build(name):
        built.append(name)
        return make_policy(name)

    server = PolicyBatchServer(build, ("lstm-recon", "expert"))
    assert built == []
    with server:
        assert built == ["lstm-recon", "expert"]  # no worker's first step waits for a build
        client = BatchedPolicyClient(ServerLink(server.address), "lstm-recon")
        client.reset(INSTRUCTION)
        client.act(observation(0))
    assert built == ["lstm-recon", "expert"]
