"""``sim.eval --backend ray``: on a two-node local Ray cluster (loopback), the same records as the local backend,
resumable, and a killed actor that never hangs the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from ray.cluster_utils import Cluster

from policies import register
from policies.base import Policy
from policies.registry import REGISTERED_ENV
from sim.eval import build_parser, config_from_args
from sim.evaluation import evaluate, read_records
from sim.evaluation.config import EvalConfig
from sim.evaluation.pool import MAX_WORKER_RETRIES
from sim.evaluation.runner import episode_seed

SWEEP = ["--policy", "expert", "--policy", "random", "--layouts", "1box_vert_left", "2box_hori_right", "--distances",
         "close", "--episodes-per-combo", "2", "--image-size", "48x48", "--record", "none"]
TIMING = ("latency_p50_ms", "latency_p95_ms")  # wall-clock fields: the only ones allowed to differ


class KillerPolicy(Policy):
    """Drives forward; on the episode seeded ``seed`` it SIGKILLs its own process at its second step."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.target, self.seed, self.t = seed, None, 0

    def _reset(self, instruction, info):
        self.t, self.seed = 0, info.get("episode_seed")

    def _act(self, observation):
        self.t += 1
        if self.t == 2 and self.seed == self.target:
            os.kill(os.getpid(), signal.SIGKILL)
        return np.array([1.15, 0.0, 0.0]) if self.t < 3 else np.zeros(3)


register("test_killer", "tests.test_ray_backend:KillerPolicy", overwrite=True)


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node, one CPU each, on this machine (Ray binds them to its node address: a 127.0.0.1
    cluster cannot be joined, as ``ray.init`` rewrites a loopback address to that one)."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def _config(out) -> EvalConfig:
    return config_from_args(build_parser().parse_args([*SWEEP, "--out", str(out)]))


def _outcomes(records):
    return sorted((json.dumps({k: v for k, v in r.items() if k not in TIMING}, sort_keys=True) for r in records))


def test_ray_records_equal_local_ones_and_a_ray_run_resumes(cluster, tmp_path):
    local = evaluate(_config(tmp_path / "local"), workers=1, progress=False, plots=False)
    remote = evaluate(_config(tmp_path / "ray"), workers=2, backend="ray", ray_address=cluster.address,
                      progress=False, plots=False)
    assert len(remote.records) == 8 and remote.errors == 0
    assert _outcomes(remote.records) == _outcomes(local.records)
    # an interrupted Ray run: three episodes lost; --resume completes it, on Ray, to the same records
    episodes = tmp_path / "ray" / "episodes.jsonl"
    episodes.write_text("".join(line + "\n" for line in episodes.read_text().splitlines()[:5]))
    resumed = evaluate(EvalConfig.load(tmp_path / "ray"), workers=2, resume=True, backend="ray",
                       ray_address=cluster.address, progress=False, plots=False)
    assert _outcomes(resumed.records) == _outcomes(local.records)
    assert len(read_records(episodes)) == 8


def test_a_killed_ray_actor_never_hangs_the_run_and_its_episode_says_why(cluster, tmp_path):
    victim = episode_seed(0, "2box_hori_right", "close", 1)
    args = ["--policy", "test_killer", "--policy-arg", f"seed={victim}", *SWEEP[4:], "--workers", "2",
            "--backend", "ray", "--ray-address", cluster.address, "--out", str(tmp_path / "run")]
    done = subprocess.run([sys.executable, "-m", "sim.eval", *args], capture_output=True, text=True, timeout=240,
                          env={**os.environ, REGISTERED_ENV: os.environ[REGISTERED_ENV]})
    records = read_records(tmp_path / "run" / "episodes.jsonl")
    assert done.returncode == 1 and "ended in an error" in done.stderr and "Traceback" not in done.stderr
    assert len(records) == 4, "every episode is recorded once"
    errors = [r for r in records if r["status"] == "error"]
    assert [(r["layout"], r["episode"]) for r in errors] == [("2box_hori_right", 1)]
    assert f"Ray actor died {MAX_WORKER_RETRIES + 1} times" in errors[0]["error"]


def test_the_ray_backend_without_ray_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    from sim.eval import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    assert main([*SWEEP, "--backend", "ray", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: --backend ray needs Ray: pip install -e ".[ray]"']
    assert not (tmp_path / "run").exists()


def test_batched_inference_on_ray_serves_the_vla_from_one_actor(cluster, tmp_path):
    from tests.test_batching import _sweep, outcomes

    local = evaluate(_sweep(tmp_path / "local"), workers=1, batch="off", progress=False, plots=False)
    remote = evaluate(_sweep(tmp_path / "ray", "--batch-wait-ms", "50"), workers=2, backend="ray",
                      ray_address=cluster.address, batch="on", progress=False, plots=False)
    assert remote.errors == 0 and outcomes(remote.records, "expert") == outcomes(local.records, "expert")
    assert [r["seed"] for r in outcomes(remote.records, "lstm-recon")] == \
        [r["seed"] for r in outcomes(local.records, "lstm-recon")]
    steps = sum(r["steps"] for r in remote.records if r["policy"] == "lstm-recon")
    assert remote.summary["policies"]["lstm-recon"]["provenance"]["inference"].startswith(f"batched: {steps} steps")


def test_the_step_timeout_bounds_a_blocking_policy_inside_ray_actors(cluster, tmp_path):
    import time

    from tests.test_robustness import FaultyPolicy  # noqa: F401  (registers test_faulty, which blocks a minute)

    cfg = config_from_args(build_parser().parse_args([
        "--policy", "test_faulty", "--policy-arg", "mode=block", "--layouts", "1box_vert_left", "--distances", "close",
        "--episodes-per-combo", "2", "--image-size", "48x48", "--record", "none", "--out", str(tmp_path / "run")]))
    start = time.perf_counter()
    result = evaluate(cfg, workers=2, backend="ray", ray_address=cluster.address, step_timeout=0.5, progress=False,
                      plots=False)
    assert time.perf_counter() - start < 45
    assert len(result.records) == 2 and all("step 1: act took longer than the 0.5 s step timeout" in r["error"]
                                            for r in result.records)
