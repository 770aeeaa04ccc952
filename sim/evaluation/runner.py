"""Closed-loop evaluation as a library call: :func:`evaluate` runs an :class:`~sim.evaluation.config.EvalConfig`.

Every policy faces the same episodes: episode seeds derive from the sweep's ``seed``, the layout and distance
names and the episode index only (a stream separate from data generation's, so evaluation seeds are never
training seeds). Each worker process owns one environment and its policies; results are identical whatever the
number of workers (wall-clock latencies aside). With batched inference (``batch``, :mod:`policies.batching`) the VLA
policies run instead on policy servers in this process (one per device), each advancing every waiting worker's
episode in one forward; their actions equal unbatched ones to float tolerance, so such a run is reproducible to that
tolerance. Finished episodes are appended to ``episodes.jsonl`` as they complete, so an interrupted run loses nothing
and ``evaluate(EvalConfig.load(run_dir), resume=True)`` completes it.

A run is counted once: one evaluation at a time holds its run folder (a lock, :func:`claim_run_folder`); a new run
starts only in a new or empty folder; a resumed run's records are checked against its ``config.json`` before any
episode runs (:func:`check_records`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from foundations.errors import ConfigError, MobileVLAError
from foundations.files import atomic_write_text, is_temp_file, json_text
from policies.batching import DEFAULT_MAX_WAIT_MS, BatchStats, PolicyBatchServer, ServerAddress
from sim.evaluation.config import CONFIG_FILE, EvalConfig
from sim.evaluation.episode import STATUSES, EpisodeRecord
from sim.evaluation.pool import run_tasks
from sim.evaluation.worker import Task, close_worker, failed_record, init_worker, run_task

EVAL_STREAM = 0xE7A1  # seed-stream tag; data generation uses another one
EPISODES_FILE = "episodes.jsonl"
#: The run folder's lock file (:func:`claim_run_folder`).
LOCK_FILE = ".lock"
#: Where the episodes run: worker processes on this machine, or actors on a Ray cluster (:mod:`.ray_backend`).
BACKENDS = ("local", "ray")
#: When the VLA policies run batched on policy servers (one per device) (:func:`batched_policies`).
BATCH_MODES = ("auto", "on", "off")


class PolicyBuildError(MobileVLAError, ValueError):
    """A policy of the config cannot be built (unknown name, bad checkpoint, missing weights)."""


@dataclasses.dataclass
class EvalResult:
    """What :func:`evaluate` returns: the run folder, every record (plan order), ``summary.json``'s content, the
    trajectory plots written, and whether the run was interrupted (then ``summary`` is None)."""

    out: Path
    records: list[dict[str, Any]]
    summary: dict[str, Any] | None
    plots: list[Path]
    interrupted: bool = False

    @property
    def errors(self) -> int:
        """Episodes that ended in ``error``."""
        return sum(r["status"] == "error" for r in self.records)


def episode_seed(base_seed: int, layout: str, distance: str, episode: int) -> int:
    """Seed of one evaluation episode (uint32), from names not indices, so adding a layout shifts nothing."""
    entropy = [base_seed, EVAL_STREAM, zlib.crc32(layout.encode()), zlib.crc32(distance.encode()), episode]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def plan_tasks(cfg: EvalConfig) -> list[Task]:
    """All episodes of a run, in a fixed order (policy, layout, distance, episode)."""
    sweep = cfg.sweep
    return [
        Task(policy, layout, distance, ep, episode_seed(sweep.seed, layout, distance, ep))
        for policy in cfg.policy_names
        for layout in sweep.layouts
        for distance in sweep.distances
        for ep in range(sweep.episodes_per_combo)
    ]


# ---------------------------------------------------------------------------------------------- main side
def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of ``episodes.jsonl``; a truncated last line (a killed run) is ignored."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def check_records(path: Path, cfg: EvalConfig) -> list[dict[str, Any]]:
    """The records of the run's ``episodes.jsonl`` at ``path``, each checked against the run's ``cfg``: a JSON object
    with the fields of :class:`EpisodeRecord`, a status of :data:`STATUSES` (``success`` true exactly for
    ``"success"``), an episode of the plan (:func:`plan_tasks`: a policy, layout, distance and index of the
    config) with that episode's seed, and no episode recorded twice. Only the last line may be cut short (a kill
    while it was written): it is left out.

    Raises:
        ConfigError: the first line that breaks a rule, as ``<path>:<line>: <rule>``.
    """
    if not path.exists():
        return []
    seeds = {task.key: task.seed for task in plan_tasks(cfg)}
    required = {f.name for f in dataclasses.fields(EpisodeRecord)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    records, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the last line, without its newline: cut short by a kill
                continue
            raise ConfigError(f"{path}:{number}: not a JSON record") from None
        problem = _record_problem(record, required, seeds, seen)
        if problem:
            raise ConfigError(f"{path}:{number}: {problem}; this run cannot be resumed (start a new one)")
        seen.add(_record_key(record))
        records.append(record)
    return records


def _record_key(record: dict[str, Any]) -> tuple:
    return record["policy"], record["layout"], record["distance"], record["episode"]


def _record_problem(record: Any, required: set[str], seeds: dict[tuple, int], seen: set[tuple]) -> str | None:
    """What is wrong with one record of a resumed run (:func:`check_records`), or None."""
    if not isinstance(record, dict):
        return f"a record must be a JSON object, got {type(record).__name__}"
    missing = sorted((required | {"policy", "episode"}) - set(record))
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if record["status"] not in STATUSES:
        return f"status {record['status']!r} is not one of {', '.join(STATUSES)}"
    if record["success"] is not (record["status"] == "success"):
        return f"success {record['success']!r} disagrees with status {record['status']!r}"
    key = tuple(record[k] for k in ("policy", "layout", "distance")) + (record["episode"],)
    if not all(isinstance(k, str) for k in key[:3]) or type(key[3]) is not int or key not in seeds:
        return (f"episode {key} (policy, layout, distance, index) is not one of this run's (config.json: its "
                "policies, layouts, distances and episodes_per_combo)")
    if record["seed"] != seeds[key]:
        return f"seed {record['seed']!r} of episode {key} is not the config's seed for it ({seeds[key]})"
    if key in seen:
        return f"episode {key} is recorded twice"
    return None


def remove_temp_files(run_dir: Path, cfg: EvalConfig) -> None:
    """Remove the temporary files a stopped writer left in the run folder and its video folder
    (:func:`foundations.files.is_temp_file`); call it only while holding the run folder (:func:`claim_run_folder`)
    with no worker running."""
    for folder in (run_dir, cfg.output.video_dir):
        if folder.is_dir():
            for path in folder.iterdir():
                if is_temp_file(path):
                    path.unlink(missing_ok=True)


@contextlib.contextmanager
def claim_run_folder(out: Path, *, resume: bool) -> Iterator[None]:
    """Hold the run folder ``out`` for the block: an exclusive lock on ``out/.lock`` (``filelock``; the kernel
    releases it when the process ends, however it ends), so two evaluations never write one run. A new run
    (``resume`` False) needs a folder that does not exist or is empty (it is created).

    Raises:
        ConfigError: another evaluation holds the folder; a new run in a folder that holds a run (resume it) or
            files of its own. Nothing is written then.
    """
    from filelock import FileLock, Timeout

    if not resume:
        _check_new_run_folder(out)
        out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"{out} is in use by another evaluation (locked: {out / LOCK_FILE}); wait for it to end "
                          "or choose another output folder") from None
    try:
        if not resume:
            _check_new_run_folder(out)  # again, holding the lock: another evaluation may have started it since
        yield
    finally:
        lock.release()


def _check_new_run_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder: choose another output folder")
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) if out.is_dir() else []
    if CONFIG_FILE in entries or EPISODES_FILE in entries:
        raise ConfigError(f"{out} already holds a run; resume it or choose another output folder")
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ConfigError(f"{out} holds files of its own ({shown}): a new run needs a new or empty folder")


def describe_policy(policy) -> dict[str, Any]:
    """Provenance for reports and ``config.json``: backbone, weights file, training data, post-processing (with
    where its scale comes from: :func:`policies.vla.output_scale`) and the robot's latency of each component, when
    the policy has them."""
    from policies.vla import PostProcessing

    latencies = getattr(policy, "component_latencies", None)
    extra = {"component latencies (s)": dict(latencies)} if latencies else {}
    if isinstance(getattr(policy, "provenance", None), dict):  # a policy that describes itself (grounder + MLP)
        return {**policy.provenance, **extra}
    info: dict[str, Any] = {}
    if hasattr(policy, "first") and isinstance(getattr(policy, "postprocess", None), PostProcessing):
        info["post-processing"] = policy.postprocess.describe()
    members = [("", policy)] if not hasattr(policy, "first") else [("first ", policy.first), ("second ", policy.second)]
    for prefix, member in members:
        head = getattr(member, "head", None)
        if head is not None:
            from policies.heads import provenance

            info[f"{prefix}architecture"] = provenance(head.head_name)
        backbone = getattr(member, "backbone", None)
        if backbone is not None:
            info[f"{prefix}backbone"] = getattr(backbone, "name", str(backbone))
        if isinstance(getattr(member, "postprocess", None), PostProcessing):
            info[f"{prefix}post-processing"] = member.postprocess.describe()
        if hasattr(member, "checkpoint"):
            ckpt = member.checkpoint
            info[f"{prefix}weights"] = str(ckpt.path) if ckpt is not None else "none: randomly initialised head"
            meta = getattr(ckpt, "meta", None) or {}
            if "training_data" in meta:
                info[f"{prefix}training data"] = meta["training_data"]
    return {**info, **extra}


def preflight(cfg: EvalConfig, workers: int) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Build every policy once in this process, so a bad name or checkpoint fails before anything is written or
    any worker starts.

    Returns:
        ``(provenance, batchable)``: each policy's provenance (:func:`describe_policy`), and the policies that can
        run batched (:class:`~policies.base.BatchablePolicy`) with the device each runs on (``"cpu"``,
        ``"cuda:0"``, ...).

    Raises:
        PolicyBuildError: a policy cannot be built, or one that shares state across clients (the robot's server,
            ``remote``) with ``workers > 1``.
    """
    from policies.base import BatchablePolicy

    provenance, batchable = {}, {}
    for spec in cfg.policies:
        try:
            policy = spec.build()
        except Exception as exc:  # noqa: BLE001
            raise PolicyBuildError(f"cannot build policy {spec.name!r}: {type(exc).__name__}: {exc}") from None
        provenance[spec.name] = describe_policy(policy)
        if isinstance(policy, BatchablePolicy):
            batchable[spec.name] = str(policy.device)
        shared = getattr(policy, "shares_history", False)
        policy.close()
        if shared and workers > 1:
            raise PolicyBuildError(
                f"{spec.name}: the server keeps one global frame history for all clients; with {workers} workers "
                "the episodes would interleave in it: use 1 worker")
    return provenance, batchable


def batched_policies(batch: str, workers: int, batchable: dict[str, str]) -> list[tuple[str, ...]]:
    """The policies that run on batched policy servers, one group (one server) per device: ``batch="on"``: every
    batchable one; ``"off"``: none; ``"auto"``: those on a CUDA device when there is more than one worker (on a
    CPU the workers' own policies already fill the cores, and batching gains little: see the README's scaling
    figures).

    Args:
        batchable: ``policy -> device`` (:func:`preflight`).
    """
    if batch == "on":
        chosen = list(batchable)
    elif batch == "auto" and workers > 1:
        chosen = [name for name, device in batchable.items() if device.startswith("cuda")]
    else:
        chosen = []
    groups: dict[str, list[str]] = {}
    for name in chosen:
        groups.setdefault(batchable[name], []).append(name)
    return [tuple(names) for names in groups.values()]


def _run_in_process(cfg: EvalConfig, tasks: list[Task], step_timeout: float | None,
                    servers: tuple[ServerAddress, ...]) -> Iterator[dict[str, Any]]:
    if step_timeout and threading.current_thread() is not threading.main_thread():
        raise ConfigError("step_timeout uses SIGALRM: call evaluate() from the main thread, or with workers > 1")
    init_worker(cfg, step_timeout, servers=servers)
    try:
        yield from map(run_task, tasks)
    finally:
        close_worker()


def _run_in_pool(cfg: EvalConfig, tasks: list[Task], workers: int, step_timeout: float | None,
                 servers: tuple[ServerAddress, ...]) -> Iterator[dict[str, Any]]:
    """Records of ``tasks`` run on ``workers`` processes that survive worker loss (:func:`~sim.evaluation.pool.
    run_tasks`): an episode whose worker keeps dying, or that raises in its worker (e.g. a policy's
    ``KeyboardInterrupt``), is recorded as ``error`` with the cause."""
    return run_tasks(run_task, tasks, workers=workers, failed=failed_record, initializer=init_worker,
                     initargs=(cfg, step_timeout, True, servers), key=lambda task: task.key)


def _run_locally(cfg: EvalConfig, tasks: list[Task], workers: int, step_timeout: float | None,
                 groups: list[tuple[str, ...]], batch_wait_ms: float, stats: dict[str, BatchStats]
                 ) -> Iterator[dict[str, Any]]:
    """Records of ``tasks`` on this machine; each group of policies (:func:`batched_policies`: one per device) runs
    on a batched policy server in threads of this process (their stats are copied into ``stats`` at the end)."""
    servers: list[PolicyBatchServer] = []
    try:
        for group in groups:
            servers.append(PolicyBatchServer(lambda name: cfg.policy(name).build(), group, max_wait_ms=batch_wait_ms))
            servers[-1].start()
        addresses = tuple(server.address for server in servers)
        yield from (_run_in_process(cfg, tasks, step_timeout, addresses) if workers == 1
                    else _run_in_pool(cfg, tasks, workers, step_timeout, addresses))
    finally:
        for server in servers:
            server.close()
            stats.update(server.stats)


def evaluate(cfg: EvalConfig, *, workers: int = 1, resume: bool = False, retry_errors: bool = False,
             step_timeout: float | None = None, progress: bool = True, real_results: dict[str, float] | None = None,
             plots: bool = True, backend: str = "local", ray_address: str | None = None, batch: str = "auto",
             batch_wait_ms: float = DEFAULT_MAX_WAIT_MS) -> EvalResult:
    """Run (or, with ``resume``, complete) the evaluation ``cfg`` in ``cfg.output.out``.

    Writes ``config.json`` (a new run), appends each finished episode to ``episodes.jsonl``, then writes
    ``summary.json``, ``summary.md``, the team's four benchmark files (:mod:`sim.evaluation.benchmark`),
    ``index.html`` and (``plots``) one ``trajectories_<layout>_<distance>.png`` per combo.

    Args:
        workers: processes (spawned), or Ray actors, each with its own env and policies; the records do not
            depend on it.
        resume: complete the run already in ``cfg.output.out`` (episodes recorded there are not re-run).
        retry_errors: with ``resume``, also re-run the episodes recorded as ``error`` (e.g. a server that was down).
        step_timeout: seconds a policy's ``reset``/``act`` may take before its episode ends as ``error``
            (:func:`~sim.evaluation.worker.step_deadline`); None: no limit.
        progress: show a progress bar.
        real_results: ``policy -> success rate`` on the robot, for the sim-vs-real figures.
        backend: ``"local"`` (worker processes here) or ``"ray"`` (actors on a Ray cluster:
            :func:`~sim.evaluation.ray_backend.run_tasks_on_ray`); the same episodes, seeds and records.
        ray_address: ``backend="ray"``: the cluster to join (None: the one this process joined, else a new local
            one).
        batch: ``"on"``: the VLA policies run on batched policy servers, one per device (:mod:`policies.batching`:
            threads of this process, or Ray actors with a GPU when they run on CUDA), each advancing all waiting
            environments in one forward; ``"off"``: each worker runs its own; ``"auto"``: on for policies on CUDA with more
            than one worker (:func:`batched_policies`). The actions equal unbatched ones to float tolerance.
        batch_wait_ms: the server's longest wait for more requests once one arrived (ms).

    Raises:
        ConfigError: another evaluation holds the run folder (:func:`claim_run_folder`); a new run in a folder that
            already holds one or holds files of its own; a resumed run whose ``episodes.jsonl`` breaks a rule of
            :func:`check_records` (named by line); ``retry_errors`` without ``resume``; a
            ``step_timeout`` that is not positive; an unknown ``backend`` or ``batch``, a negative
            ``batch_wait_ms``, ``ray_address`` without the Ray backend, or the Ray backend without Ray installed.
        PolicyBuildError: see :func:`preflight` (nothing is written).
    """
    from tqdm import tqdm

    out = Path(cfg.output.out)
    episodes_file = out / EPISODES_FILE
    if retry_errors and not resume:
        raise ConfigError("retry_errors re-runs the errors of an existing run: use it with resume")
    if step_timeout is not None and not step_timeout > 0:
        raise ConfigError(f"step_timeout must be positive (s), got {step_timeout}")
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if ray_address is not None and backend != "ray":
        raise ConfigError("a Ray address is for the ray backend: use it with backend ray")
    if batch not in BATCH_MODES:
        raise ConfigError(f"batch must be one of {', '.join(BATCH_MODES)}, got {batch!r}")
    if not batch_wait_ms >= 0:
        raise ConfigError(f"batch_wait_ms must be >= 0 (ms), got {batch_wait_ms}")
    if not resume:
        _check_new_run_folder(out)
    if backend == "ray":
        from sim.evaluation.ray_backend import import_ray, run_tasks_on_ray

        import_ray()  # fails before anything is written
    provenance, batchable = preflight(cfg, workers)
    with claim_run_folder(out, resume=resume):
        records = check_records(episodes_file, cfg) if resume else []
        if not resume:
            cfg.save(out, provenance)
        remove_temp_files(out, cfg)  # left by a run that was killed
        if retry_errors:
            records = [r for r in records if r["status"] != "error"]
        if resume:  # without a line cut short by a kill, or the errors to retry, so appends start clean
            atomic_write_text(episodes_file, "".join(json_text(r) + "\n" for r in records))
        done = {_record_key(r) for r in records}
        pending = [t for t in plan_tasks(cfg) if t.key not in done]

        workers = max(1, min(workers, len(pending) or 1))
        interrupted = False
        stats: dict[str, BatchStats] = {}
        if pending:
            if progress:
                where = "Ray actor(s)" if backend == "ray" else "worker(s)"
                print(f"evaluating {len(pending)} episodes ({len(done)} already done) with {workers} {where} -> {out}")
            successes = sum(1 for r in records if r["status"] == "success")
            finished = len(done)
            groups = batched_policies(batch, workers, batchable)
            if backend == "ray":
                results = run_tasks_on_ray(cfg, pending, workers=workers, step_timeout=step_timeout,
                                           address=ray_address, batched=groups, batch_wait_ms=batch_wait_ms,
                                           batch_stats=stats)
            else:
                results = _run_locally(cfg, pending, workers, step_timeout, groups, batch_wait_ms, stats)
            try:
                with open(episodes_file, "a") as fh, tqdm(total=len(pending), unit="ep", dynamic_ncols=True,
                                                          disable=not progress) as bar:
                    for record in results:
                        fh.write(json_text(record) + "\n")
                        fh.flush()
                        finished += 1
                        successes += record["status"] == "success"
                        bar.set_postfix(success=f"{successes / finished:.0%}")
                        bar.update()
            except KeyboardInterrupt:  # Ctrl-C, or SIGTERM in a command (sim.cli.Terminated)
                interrupted = True
            finally:
                results.close()  # the workers have ended when it returns
                remove_temp_files(out, cfg)  # a video a stopped worker was writing
        if interrupted:
            return EvalResult(out, read_records(episodes_file), None, [], interrupted=True)
        return _report(cfg, out, episodes_file, provenance, batchable, stats, real_results, plots)


def _report(cfg: EvalConfig, out: Path, episodes_file: Path, provenance: dict[str, dict[str, Any]],
            batchable: dict[str, str], stats: dict[str, BatchStats], real_results: dict[str, float] | None,
            plots: bool) -> EvalResult:
    """Write the finished run's summary, the team's benchmark files, plots and ``index.html``; its
    :class:`EvalResult`."""
    from sim.evaluation.benchmark import episode_results, write_benchmark_files
    from sim.evaluation.html_report import eval_page
    from sim.evaluation.report import plot_trajectories, summarize, write_summary

    order = {t.key: i for i, t in enumerate(plan_tasks(cfg))}
    records = sorted(read_records(episodes_file),
                     key=lambda r: order.get((r["policy"], r["layout"], r["distance"], r["episode"]), 0))
    for name, st in stats.items():
        provenance[name]["inference"] = (f"batched: {st.requests} steps in {st.batches} forwards (mean batch "
                                         f"{st.mean_batch:.2f}) on the policy server of {batchable[name]}")
    results = episode_results(records)
    summary = summarize(records, cfg, real_results, provenance, results)
    write_summary(out, summary)
    write_benchmark_files(out, summary, results)
    written = plot_trajectories([r for r in records if r.get("scene")], out, cfg.policy_names) if plots else []
    atomic_write_text(out / "index.html", eval_page(out, summary, results, cfg.output.inline_videos))
    return EvalResult(out, records, summary, written)
