"""The evaluation's episodes on a Ray cluster (``sim.eval --backend ray [--ray-address ADDR]``).

Each env worker is a Ray actor (``num_cpus=1``) set up as a local worker process is
(:func:`~sim.evaluation.worker.init_worker`) and running episodes with the same
:func:`~sim.evaluation.worker.run_task`, so the records are the local backend's (timing fields aside) and
:func:`~sim.evaluation.runner.evaluate` writes, resumes and shows progress the same way. An actor holds one
episode at a time, so an actor that dies (its process killed, out of memory, its node lost) names its episode:
that episode is re-run on a new actor at most ``max_retries`` times, then recorded as ``error`` with the cause;
nothing waits on a dead actor. With batched inference the VLA policies run in one more actor per device,
:class:`PolicyServer` (``num_gpus=1`` when they run on CUDA), which every env actor reaches over TCP. Ray is
imported only here, and only when this backend is used (``pip install -e ".[ray]"``).
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from foundations.errors import ConfigError
from policies.batching import DEFAULT_MAX_WAIT_MS, BatchStats, PolicyBatchServer, ServerAddress
from sim.evaluation.config import EvalConfig
from sim.evaluation.pool import MAX_WORKER_RETRIES
from sim.evaluation.worker import Task, failed_record, init_worker, run_task

#: CPUs each env actor reserves (one environment and its policies, one torch thread).
ACTOR_NUM_CPUS = 1
#: Seconds to wait for the batched policy server to start: a node to take it (a cluster without a free GPU never
#: does) and its policies to be built.
SERVER_START_TIMEOUT_S = 300
_ROOT = Path(__file__).resolve().parents[2]  # this checkout: what the actors import


def import_ray():
    """The ``ray`` module.

    Raises:
        ConfigError: Ray is not installed (one line saying how to install it).
    """
    try:
        import ray
    except ImportError:
        raise ConfigError('--backend ray needs Ray: pip install -e ".[ray]"') from None
    return ray


class EpisodeWorker:
    """One env worker: the state of a local worker process (env, expert, policies), in a Ray actor; the policies
    ``servers`` serve run there (:class:`PolicyServer`)."""

    def __init__(self, cfg: EvalConfig, step_timeout: float | None, servers: tuple[ServerAddress, ...] = ()) -> None:
        init_worker(cfg, step_timeout, servers=servers)

    def run(self, task: Task) -> dict[str, Any]:
        """:func:`~sim.evaluation.worker.run_task`: the episode's record."""
        return run_task(task)

    def pid(self) -> int:
        """The actor's process id (to kill it in tests)."""
        return os.getpid()


class PolicyServer:
    """The batched policy server (:class:`~policies.batching.PolicyBatchServer`) in a Ray actor, listening on its
    node's address so that env actors on every node reach it."""

    def __init__(self, cfg: EvalConfig, policies: tuple[str, ...], max_wait_ms: float, gpu: bool) -> None:
        import ray

        def build(name: str):
            spec = cfg.policy(name)
            # the actor sees only the GPU Ray gave it, as cuda:0, whatever cuda:N the spec names
            return spec.model_copy(update={"kwargs": {**spec.kwargs, "device": "cuda"}}).build() if gpu else spec.build()

        self.server = PolicyBatchServer(build, policies, max_wait_ms=max_wait_ms,
                                        address=(ray.util.get_node_ip_address(), 0))
        self.server.start()

    def address(self) -> ServerAddress:
        """Where env actors connect."""
        return self.server.address

    def stats(self) -> dict[str, BatchStats]:
        """Per served policy, what it answered so far."""
        return self.server.stats


def run_tasks_on_ray(cfg: EvalConfig, tasks: Sequence[Task], *, workers: int, step_timeout: float | None = None,
                     address: str | None = None, max_retries: int = MAX_WORKER_RETRIES, batched: Sequence[tuple[str, ...]] = (),
                     batch_wait_ms: float = DEFAULT_MAX_WAIT_MS, batch_stats: dict[str, BatchStats] | None = None
                     ) -> Iterator[dict[str, Any]]:
    """Yield the record of every task (completion order), computed on ``workers`` Ray actors.

    Args:
        workers: actors at once (each reserves :data:`ACTOR_NUM_CPUS` CPU; more than the cluster has wait).
        address: the cluster to join (``ray.init(address=...)``, e.g. ``"auto"`` or ``"10.0.0.1:6379"``); None:
            the Ray instance this process already joined, else a new local one. A Ray instance started here is
            shut down when the iterator ends.
        max_retries: times an episode is re-run after its actor died before it is recorded as ``error``.
        batched: groups of policies (one per device: :func:`~sim.evaluation.runner.batched_policies`), each served by
            one :class:`PolicyServer` actor instead of each env actor's own copy. A server reserves ``num_gpus=1``
            when its policies run on CUDA, and no CPU: its thread mostly waits on the env actors, which keep every
            CPU (on a CPU-only cluster it shares a core with them).
        batch_wait_ms: the server's longest wait for more requests (ms).
        batch_stats: filled with the servers' per-policy stats when the iterator ends.

    Raises:
        ConfigError: Ray is not installed, the cluster at ``address`` cannot be joined, or no node takes the batched
            policy server within :data:`SERVER_START_TIMEOUT_S`.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        from policies.registry import REGISTERED_ENV

        env_vars = {"PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
        if os.environ.get(REGISTERED_ENV):  # policies registered here exist in the actors too
            env_vars[REGISTERED_ENV] = os.environ[REGISTERED_ENV]
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": env_vars})
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"--ray-address {address}: cannot join the Ray cluster: {exc}") from None
        started = True
    remote_worker = ray.remote(num_cpus=ACTOR_NUM_CPUS, max_restarts=0)(EpisodeWorker)
    servers: list[tuple[Any, int]] = []  # (actor, GPUs it asked for)
    for group in batched:
        gpus = 1 if str(cfg.policy(group[0]).kwargs.get("device", "cpu")).startswith("cuda") else 0
        actor = ray.remote(num_cpus=0, num_gpus=gpus, max_restarts=0)(PolicyServer)
        servers.append((actor.remote(cfg, group, batch_wait_ms, bool(gpus)), gpus))
    queue = collections.deque(tasks)
    deaths: collections.Counter = collections.Counter()
    idle: list[Any] = []
    in_flight: dict[Any, tuple[Any, Task]] = {}  # ObjectRef -> (actor, task)
    try:
        addresses = []
        for server, gpus in servers:
            try:
                addresses.append(ray.get(server.address.remote(), timeout=SERVER_START_TIMEOUT_S))
            except ray.exceptions.GetTimeoutError:
                raise ConfigError(f"a batched policy server did not start within {SERVER_START_TIMEOUT_S} s: no node "
                                  f"with {gpus} free GPU, or its policies took longer to build; or run with "
                                  "--batch off") from None
            except ray.exceptions.RayError as exc:
                raise ConfigError(f"a batched policy server could not start: {exc}") from None
        served = tuple(addresses)
        idle = [remote_worker.remote(cfg, step_timeout, served) for _ in range(max(1, min(workers, len(queue))))]
        while queue or in_flight:
            while queue and idle:
                actor, task = idle.pop(), queue.popleft()
                in_flight[actor.run.remote(task)] = (actor, task)
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            actor, task = in_flight.pop(ref)
            try:
                record = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # the actor's process is gone: a new one, same episode
                ray.kill(actor)
                idle.append(remote_worker.remote(cfg, step_timeout, served))
                deaths[task.key] += 1
                if deaths[task.key] > max_retries:
                    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    yield failed_record(task, f"its Ray actor died {deaths[task.key]} times while running it "
                                               f"(killed, out of memory, a native crash or a lost node: "
                                               f"{type(exc).__name__}: {cause})")
                else:
                    queue.appendleft(task)
                continue
            except ray.exceptions.RayTaskError as exc:  # whatever the task raised ends that task only
                record = failed_record(task, f"the worker raised {type(exc.cause).__name__}: {exc.cause}")
            idle.append(actor)
            yield record
    finally:
        for actor in [*idle, *(a for a, _ in in_flight.values())]:
            ray.kill(actor)
        for server, _ in servers:
            if batch_stats is not None:
                with contextlib.suppress(ray.exceptions.RayError):
                    batch_stats.update(ray.get(server.stats.remote(), timeout=30))
            ray.kill(server)
        if started:
            ray.shutdown()


__all__ = ["ACTOR_NUM_CPUS", "EpisodeWorker", "PolicyServer", "import_ray", "run_tasks_on_ray"]
