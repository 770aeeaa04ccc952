"""An exported ONNX policy is a batchable ``VLAPolicy``: ``act_batch`` over many environments (full kind and
head-only), the batched policy server and ``sim.eval --batch on`` give the actions of unbatched execution."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from policies import make_policy
from policies import onnx_policy as op
from policies.base import BatchablePolicy
from policies.batching import BatchedPolicyClient, PolicyBatchServer, PolicyServerError, ServerLink
from policies.vla import VLAPolicy, build_vla_policy
from sim.deploy import onnx_export as ex

try:
    from tests.conftest_vla import INSTRUCTION, batched, drive_clients, observation, single_torch_thread, unbatched
except ImportError:  # tests/ is not a package
    from conftest_vla import INSTRUCTION, batched, drive_clients, observation, single_torch_thread, unbatched  # noqa: F401

OTHER = "Navigate around obstacles and reach the front of the beverage bottle on the right"
ENVS, STEPS = 3, 7
HEAD = "clip-lstm-recon"
SMALL = {"chunk_size": 3, "hidden_size": 64, "stream_dim": 32}


def scripts(seed: int = 0) -> list[list[dict]]:
    """Per environment its observations (224 x 224, as the full graph takes them), two instructions."""
    return [[observation(seed + 100 * env + step, instruction=INSTRUCTION if env % 2 else OTHER)
             for step in range(STEPS)] for env in range(ENVS)]








@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A windowed lite head with a 3-action chunk, exported whole (encoder + head in one graph)."""
    out = tmp_path_factory.mktemp("full")
    source = build_vla_policy(HEAD, head_overrides=SMALL)
    obs = [observation(i) for i in range(3)]
    return ex.export_policy(HEAD, out=out, source_policy=source, observations=obs, check_steps=3).model_path


@pytest.fixture(scope="module")
def head_only(tmp_path_factory):
    out = tmp_path_factory.mktemp("head_only")
    obs = [observation(i) for i in range(3)]
    return ex.export_policy("lstm-recon", backbone="tiny-kosmos2", head_only=True, out=out, observations=obs,
                            check_steps=3).model_path


@pytest.mark.parametrize("execution", ["first", "all", "ensemble"])
def test_full_graph_batched_equals_unbatched_and_the_pytorch_policy(full, execution):
    policy = op.OnnxPolicy(full, execution=execution, dead_zone=False)  # a random small head acts inside it
    assert isinstance(policy, VLAPolicy) and isinstance(policy, BatchablePolicy)
    obs = scripts()
    reference = np.stack([unbatched(policy, s) for s in obs])
    assert np.abs(reference).max() > 0  # the comparison is not between zeros
    np.testing.assert_allclose(batched(policy, obs), reference, atol=1e-5, rtol=1e-5)
    torch_policy = build_vla_policy(HEAD, head_overrides=SMALL, execution=execution, dead_zone=False)
    np.testing.assert_allclose(batched(torch_policy, obs), reference, atol=1e-4)


def test_full_graph_runs_once_per_group_of_new_and_past_frames(full):
    policy = op.OnnxPolicy(full)
    runs = []
    run = policy.runner.run
    policy.runner.run = lambda feeds: runs.append({k: v.shape for k, v in feeds.items()}) or run(feeds)
    early, late, other = (policy.new_episode() for _ in range(3))
    for ep in (early, late, other):
        policy.start_episode(ep, INSTRUCTION)
    policy.act_batch([early], [observation(0)])
    runs.clear()
    policy.act_batch([early, late, other], [observation(1), observation(2), observation(3)])
    # early has one past frame, late and other none: two runs, the second with a batch of two
    assert sorted((r["frames"][0], r["history"][1]) for r in runs) == [(1, 1), (2, 0)]
    assert [ep.num_predictions for ep in (early, late, other)] == [2, 1, 1]


def test_head_only_graph_batched_equals_unbatched(head_only):
    policy = op.OnnxPolicy(head_only, execution="ensemble", dead_zone=False)
    obs = scripts(seed=5)
    reference = np.stack([unbatched(policy, s) for s in obs])
    assert np.abs(reference).max() > 0
    np.testing.assert_allclose(batched(policy, obs), reference, atol=1e-5, rtol=1e-5)


def test_the_server_batches_onnx_workers_and_refuses_a_bad_frame_alone(full):
    name = f"onnx:{full}"
    obs = scripts(seed=9)
    reference = make_policy(name, dead_zone=False)
    expected = [unbatched(reference, s) for s in obs]
    with PolicyBatchServer(lambda n: make_policy(n, dead_zone=False), (name,), max_wait_ms=500) as server:
        got = drive_clients(server.address, obs, name)
        stats = server.stats[name]
        client = BatchedPolicyClient(ServerLink(server.address), name)
        client.reset(INSTRUCTION)
        with pytest.raises(PolicyServerError, match="ArtifactInputError: .*takes 224x224 frames"):
            client.act(observation(0, size=(160, 200)))
        assert client.act(observation(1)).shape == (3,)
    assert np.abs(np.stack(expected)).max() > 0
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)
    assert stats.mean_batch > 1.2  # the workers' steps shared graph runs


def test_sim_eval_runs_an_exported_policy_batched_with_two_workers(full, tmp_path):
    from sim import eval as sim_eval

    out = tmp_path / "run"
    code = sim_eval.main(["--policy", f"onnx:{full.parent}", "--batch", "on", "--workers", "2",
                          "--episodes-per-combo", "1", "--layouts", "1box_vert_left", "2box_hori_right",
                          "--distances", "close", "--max-steps", "6", "--record", "none", "--out", str(out)])
    assert code == 0
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["status"] != "error" for r in records)
    provenance = json.loads((out / "summary.json").read_text())["policies"][f"onnx:{full.parent}"]["provenance"]
    served = int(re.match(r"batched: (\d+) steps", provenance["inference"]).group(1))
    assert served == sum(r["steps"] for r in records)
    assert provenance["artifact"].endswith("(full, fp32, onnx)") and provenance["source"] == f"{HEAD} on lite (seed 0)"
