"""The worker side of an evaluation: what one env worker does, whichever backend runs it.

A worker (a process of the local pool, the evaluating process itself with one worker, or a Ray actor of
:mod:`sim.evaluation.ray_backend`) is set up once by :func:`init_worker` (its environment, the shadow expert, its
policies built lazily or reached on batched policy servers) and then runs :class:`Task` after :class:`Task` with
:func:`run_task`, each returning the episode's ``episodes.jsonl`` record. :func:`run_policy_episode` is the
closed loop itself (also used by the replay and the benchmarks); :func:`failed_record` is the record of an
episode that could not run. The main side (planning, the run folder, the report) is :mod:`sim.evaluation.runner`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from envs.camera import TargetView
from foundations.errors import MobileVLAError
from policies.batching import BatchedPolicyClient, ServerAddress, ServerLink
from sim.evaluation.config import EvalConfig, safe_name
from sim.evaluation.episode import Episode, EpisodeRecord
from sim.evaluation.metrics import spl


@dataclasses.dataclass(frozen=True)
class Task:
    """One episode to run: a policy on a layout/distance with its seed."""

    policy: str
    layout: str
    distance: str
    episode: int
    seed: int

    @property
    def key(self) -> tuple[str, str, str, int]:
        """``(policy, layout, distance, episode)``: identifies the task (the backends count worker deaths per key)."""
        return self.policy, self.layout, self.distance, self.episode



def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class StepTimeout(MobileVLAError, TimeoutError):
    """A policy's ``reset`` or ``act`` took longer than the step timeout."""


@contextlib.contextmanager
def step_deadline(seconds: float | None, what: str) -> Iterator[None]:
    """Raise :class:`StepTimeout` inside the block if it runs longer than ``seconds`` (wall clock; None: no limit).

    Uses ``SIGALRM``, so it interrupts Python code and blocking calls that return to the interpreter on a signal
    (sleeps, sockets, locks); a native call that never returns to the interpreter is not interrupted. Main thread
    only (the evaluation's workers run episodes in their main thread).
    """
    if not seconds:
        yield
        return

    def expired(signum, frame):
        raise StepTimeout(f"{what} took longer than the {seconds:g} s step timeout")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_policy_episode(env, policy, seed: int, *, expert=None, latency=None, keep_frames: bool = False,
                       options: dict[str, Any] | None = None, fields: dict[str, Any] | None = None,
                       step_timeout: float | None = None) -> tuple[EpisodeRecord, Episode]:
    """One closed-loop episode of ``policy`` in ``env``; never raises for the policy's fault.

    Args:
        env: a ``MobileVLA/BoxAvoid-v0`` environment whose observations include ``"state"``.
        policy: the policy under test; ``reset(instruction, info)`` gets the reset info plus ``episode_seed``.
        seed: episode seed.
        expert: shadows the policy: its action at every visited state is the label for the offline metrics, and
            its plan from the start pose is the shortest path for SPL and the reference path of the trajectory
            deviation (``expert_keys``, ``expert_path``). None skips them.
        latency: a :class:`~sim.evaluation.config.Latency` (None: the env's own ``action_latency``); measured:
            each action takes effect as late as the policy took to compute it (wall clock, at most 10 s); per
            component: as late as the components the policy ran at that step (``policy.step_components``).
        keep_frames: keep the onboard frames, poses and actions (in the returned :class:`Episode`) for a video.
        options: ``env.reset`` options (``{"scenario": ..., "distance": ...}``).
        fields: further :class:`EpisodeRecord` fields (``{"policy": ..., "episode": ...}``).
        step_timeout: seconds a ``policy.reset`` or ``policy.act`` may take (:func:`step_deadline`); None: no limit.

    Returns:
        ``(record, episode)``. An exception in ``policy.reset``/``act`` (``SystemExit`` included), a step over the
        timeout, or an action the env refuses (NaN/inf, wrong shape), ends the episode with status ``"error"`` and
        the cause in ``record.error``.
    """
    base = env.unwrapped
    per_step = latency is not None and latency.per_step(policy)
    if latency is not None:  # before the reset, whose info reports it: nothing of the previous episode's remains
        base.set_action_latency(0.0 if per_step else latency.seconds)
    episode = Episode(env, seed, options, keep_frames=keep_frames)
    x, y, yaw = episode.poses[0]
    shortest, reference = math.nan, None
    if expert is not None:
        expert.reset(episode.instruction, episode.reset_info)
        length, reference = expert.reference((x, y, yaw))
        shortest = math.nan if length is None else length
    step_latencies: list[float] = []
    detections: list[bool] = []
    target_in_view: list[bool] = []
    view = TargetView.from_reset_info(episode.reset_info)

    def act(obs: dict[str, Any]) -> np.ndarray:
        with step_deadline(step_timeout, f"step {episode.steps}: act"):
            action = policy.act(obs)
        detection = getattr(policy, "step_detection", None)
        if detection is not None:
            detections.append(bool(detection))
            target_in_view.append(view.box(episode.poses[-1]) is not None)  # the pose the observation was taken at
        if per_step:
            seconds = latency.step_seconds(policy.latencies_ms[-1], getattr(policy, "step_components", None),
                                           getattr(policy, "component_latencies", None))
            base.set_action_latency(seconds)
            step_latencies.append(round(seconds, 4))
        return action

    status, error = None, None
    pred_xy: list[list[float]] = []
    expert_xy: list[list[float]] = []
    expert_keys: list[str] = []
    try:
        with step_deadline(step_timeout, "reset"):
            policy.reset(episode.instruction, {**episode.reset_info, "episode_seed": int(seed)})
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a policy's failure is an episode outcome, not a crash
        status, error = "error", f"reset: {type(exc).__name__}: {exc}"
    if status is None:
        try:
            for step in episode.run(act):
                if expert is not None:
                    label = expert.label(step.obs["state"])
                    expert_xy.append(np.clip(label[:2], -1, 1).round(4).tolist())
                    expert_keys.append(base.key_of(label))
                    pred_xy.append(np.clip(step.action[:2], -1, 1).round(4).tolist())
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            status = "error"
            error = f"step {episode.steps}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
    if status is None:
        status = episode.status
    latencies = list(policy.latencies_ms)
    path_length = float(episode.info["path_length"])
    record = episode.record(
        status=status,
        shortest_path_m=None if math.isnan(shortest) else round(shortest, 4),
        spl=round(spl(status == "success", shortest, path_length), 4) if not math.isnan(shortest) else None,
        latency_p50_ms=_percentile(latencies, 50), latency_p95_ms=_percentile(latencies, 95),
        latency_applied=latency.applied if latency is not None else base.action_latency,
        latency_steps_s=step_latencies, error=error, pred_xy=pred_xy, expert_xy=expert_xy, expert_keys=expert_keys,
        expert_path=[[round(px, 4), round(py, 4)] for px, py in reference or ()], detections=detections,
        target_in_view=target_in_view, **(fields or {}),
    )
    return record, episode


_WORKER: dict[str, Any] = {}


def init_worker(cfg: EvalConfig, step_timeout: float | None = None, subprocess: bool = False,
                servers: Sequence[ServerAddress] = ()) -> None:
    """Set up this process as an env worker: its environment, the expert, and (lazily) its policies.

    Args:
        cfg: the run's config.
        step_timeout: see :func:`evaluate`.
        subprocess: a pool's worker process (Ctrl-C is left to the main process).
        servers: batched policy servers (:mod:`policies.batching`, one per device): the policies each serves run
            there, through one connection of this worker to each; the others are built here.
    """
    import envs  # noqa: F401  (registers the environment)
    from policies import make_policy

    if subprocess:  # Ctrl-C is the main process's to handle: it stops the pool
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if "torch" in sys.modules:  # one intra-op thread per worker: the workers already fill the cores
        sys.modules["torch"].set_num_threads(1)
    _WORKER.clear()
    _WORKER.update(config=cfg, policies={}, step_timeout=step_timeout,
                   links={name: link for link in map(ServerLink, servers) for name in link.policies})
    try:
        _WORKER.update(env=cfg.env.make_env(cfg.sweep.layouts[0], cfg.sweep.distances[0]), expert=make_policy("expert"))
    except Exception as exc:  # noqa: BLE001 - reported on each episode: a worker that raises here would respawn forever
        _WORKER["start_error"] = f"the worker could not start: {type(exc).__name__}: {exc}"


def close_worker() -> None:
    """Close this worker's environment and its connections to batched policy servers."""
    if _WORKER.get("env") is not None:
        _WORKER["env"].close()
    for link in set(_WORKER.get("links", {}).values()):
        link.close()
    _WORKER.clear()


def _policy(name: str):
    policies, link = _WORKER["policies"], _WORKER["links"].get(name)
    if name not in policies:
        policies[name] = BatchedPolicyClient(link, name) if link is not None else _WORKER["config"].policy(name).build()
    return policies[name]


def run_task(task: Task) -> dict[str, Any]:
    """Run one episode in this worker; returns its ``episodes.jsonl`` record (never raises for a policy)."""
    cfg: EvalConfig = _WORKER["config"]
    if "start_error" in _WORKER:
        return failed_record(task, _WORKER["start_error"])
    env = _WORKER["env"]
    try:
        policy = _policy(task.policy)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a policy that cannot be built errors its episodes
        return failed_record(task, f"building the policy: {type(exc).__name__}: {exc}")
    record, episode = run_policy_episode(
        env, policy, task.seed, expert=_WORKER["expert"], latency=cfg.env.latency,
        keep_frames=cfg.output.may_record(task.episode),
        options={"scenario": task.layout, "distance": task.distance},
        fields={"policy": task.policy, "episode": task.episode}, step_timeout=_WORKER.get("step_timeout"))
    if cfg.output.records(task.episode, record.status):
        from sim.evaluation.video import compose_frames, render_topdown_frames, write_video

        top = render_topdown_frames(env, episode.poses)
        frames = compose_frames(
            episode.frames, top, episode.poses, episode.actions, spec=env.unwrapped.spec_scene,
            title=f"{task.policy} | {task.layout} {task.distance} | episode {task.episode} seed {task.seed}",
            instruction=record.instruction, status=record.status or "error", keys=episode.keys,
        )
        name = safe_name(f"{task.policy}_{task.layout}_{task.distance}_ep{task.episode:03d}_{record.status}") + ".mp4"
        record.video = str(write_video(cfg.output.video_dir / name, frames))
    return record.to_json()


def failed_record(task: Task, cause: str) -> dict[str, Any]:
    """The ``episodes.jsonl`` record of a task that could not run (its policy could not be built, its worker raised
    or died): :meth:`EpisodeRecord.failed`, status ``"error"``, ``cause`` as its ``error``. Raises nothing, so the
    backends can call it from their error paths."""
    return EpisodeRecord.failed(task.layout, task.distance, task.seed, policy=task.policy, episode=task.episode,
                                error=cause).to_json()


