"""Closed-loop evaluation: success rate with confidence intervals, offline metrics, latency, videos, plots.

``python -m sim.eval --policy NAME [--policy NAME2 ...] [--checkpoint PATH] [--backbone auto] [--backbone-path P]
[--clip-path P] [--key-map MAP.json] [--config ROBOVLMS.json] [--layouts all] [--distances all]
[--episodes-per-combo 10] [--seed 0] [--workers N] [--record failures|all|none] [--latency-ms X | --latency measured]
[--out runs/NAME-TIMESTAMP] [--resume RUN_DIR] [--real-results CSV]``

Every policy faces the same episodes: episode seeds derive from ``--seed``, the layout and distance names and the
episode index only (a stream separate from ``sim.generate``'s, so evaluation seeds are never training seeds).
Each worker process owns one environment and its policies; results are identical whatever ``--workers`` is
(wall-clock latencies aside). Finished episodes are appended to ``episodes.jsonl`` as they complete, so an
interrupted run loses nothing and ``--resume RUN_DIR`` completes it.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import multiprocessing as mp
import os
import re
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import scenarios
from policies import make_policy, vla_names
from policies import names as policy_names
from sim.cli_args import add_model_source_arguments

EVAL_STREAM = 0xE7A1  # seed-stream tag; sim.generate uses another one
RECORD_MODES = ("failures", "all", "none")


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
        return self.policy, self.layout, self.distance, self.episode


def episode_seed(base_seed: int, layout: str, distance: str, episode: int) -> int:
    """Seed of one evaluation episode (uint32), from names not indices, so adding a layout shifts nothing."""
    entropy = [base_seed, EVAL_STREAM, zlib.crc32(layout.encode()), zlib.crc32(distance.encode()), episode]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def plan_tasks(config: dict[str, Any]) -> list[Task]:
    """All episodes of a run, in a fixed order (policy, layout, distance, episode)."""
    return [
        Task(policy, layout, distance, ep, episode_seed(config["seed"], layout, distance, ep))
        for policy in config["policies"]
        for layout in config["layouts"]
        for distance in config["distances"]
        for ep in range(config["episodes_per_combo"])
    ]


def parse_policy_args(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["seed=3", "case2@execution=all"]`` -> ``{"*": {"seed": 3}, "case2": {"execution": "all"}}``.

    Raises:
        ValueError: an item that is not ``[POLICY@]KEY=VALUE``.
    """
    from sim.cli_args import parse_policy_kwargs

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, _, pair = item.rpartition("@") if "@" in item.partition("=")[0] else ("*", "", item)
        out.setdefault(target, {}).update(parse_policy_kwargs([pair]))
    return out


def policy_kwargs(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``make_policy(name)``: the VLA options for the VLA family, plus ``--policy-arg``
    (``KEY=VALUE`` for every policy, ``POLICY@KEY=VALUE`` for one)."""
    args = config.get("policy_args", {})
    kwargs = {**args.get("*", {}), **args.get(name, {})}
    base = name.partition(":")[0]
    if base in vla_names():
        for key in ("checkpoint", "backbone", "backbone_path", "clip_path", "key_map"):
            if config.get(key) is not None:
                kwargs[key] = config[key]
        if base == "robovlms" and config.get("config") is not None:
            kwargs["config"] = config["config"]
        kwargs.setdefault("num_threads", 1)
    return kwargs


def describe_policy(policy) -> dict[str, Any]:
    """Provenance for reports: backbone, weights file and training data, when the policy has them."""
    info: dict[str, Any] = {}
    members = [("", policy)] if not hasattr(policy, "first") else [("first ", policy.first), ("second ", policy.second)]
    for prefix, member in members:
        head = getattr(member, "head", None)
        if head is not None:
            from policies.heads import provenance

            info[f"{prefix}architecture"] = provenance(head.head_name)
        backbone = getattr(member, "backbone", None)
        if backbone is not None:
            info[f"{prefix}backbone"] = getattr(backbone, "name", str(backbone))
        if hasattr(member, "checkpoint"):
            ckpt = member.checkpoint
            info[f"{prefix}weights"] = str(ckpt.path) if ckpt is not None else "none: randomly initialised head"
            meta = getattr(ckpt, "meta", None) or {}
            if "training_data" in meta:
                info[f"{prefix}training data"] = meta["training_data"]
    return info


# ---------------------------------------------------------------------------------------------- worker side
_WORKER: dict[str, Any] = {}


def _init_worker(config: dict[str, Any]) -> None:
    import gymnasium as gym

    import envs  # noqa: F401  (registers the environment)

    if "torch" in sys.modules:  # one intra-op thread per worker: the workers already fill the cores
        sys.modules["torch"].set_num_threads(1)
    latency = config["latency"]
    env = gym.make(
        "MobileVLA/BoxAvoid-v0",
        scenario=config["layouts"][0],
        distance=config["distances"][0],
        image_size=config["image_size"],
        actuation=config["actuation"],
        max_steps=config.get("max_steps"),
        render_mode="rgb_array",
        action_latency=0.0 if latency == "measured" else float(latency),
    )
    _WORKER.clear()
    _WORKER.update(config=config, env=env, policies={}, expert=make_policy("expert"))


def _policy(name: str):
    policies = _WORKER["policies"]
    if name not in policies:
        policies[name] = make_policy(name, **policy_kwargs(name, _WORKER["config"]))
    return policies[name]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def run_task(task: Task) -> dict[str, Any]:
    """Run one episode in this worker; returns its ``episodes.jsonl`` record (never raises for a policy)."""
    from sim.rollout import run_episode

    config, env = _WORKER["config"], _WORKER["env"]
    try:
        policy = _policy(task.policy)
    except Exception as exc:  # noqa: BLE001 - a policy that cannot be built errors its episodes
        return {"policy": task.policy, "layout": task.layout, "distance": task.distance, "episode": task.episode,
                "seed": task.seed, "status": "error", "success": False, "steps": 0, "path_length_m": 0.0,
                "error": f"building the policy: {type(exc).__name__}: {exc}", "path": [], "scene": None}
    record_mode = config["record"]
    result = run_episode(env, policy, task.seed, expert=_WORKER["expert"], latency=config["latency"],
                         keep_frames=record_mode != "none", options={"scenario": task.layout, "distance": task.distance})
    record = {"policy": task.policy, "episode": task.episode, **result.record}
    if record_mode == "all" or (record_mode == "failures" and record["status"] != "success"):
        from sim.video import compose_frames, render_topdown_frames, write_video

        top = render_topdown_frames(env, result.poses)
        frames = compose_frames(
            result.frames, top, result.poses, result.actions, spec=env.unwrapped.spec_scene,
            title=f"{task.policy} | {task.layout} {task.distance} | episode {task.episode} seed {task.seed}",
            instruction=record["instruction"], status=record["status"] or "error",
        )
        name = _safe(f"{task.policy}_{task.layout}_{task.distance}_ep{task.episode:03d}_{record['status']}") + ".mp4"
        record["video"] = str(write_video(Path(config["video_dir"]) / name, frames))
    return record


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


def repair_records(path: Path) -> list[dict[str, Any]]:
    """Rewrite ``episodes.jsonl`` without a line cut short by a kill (atomic), so appends start clean."""
    from sim.report import atomic_write_text

    records = read_records(path)
    if path.exists():
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return records


def read_real_results(path: str | Path) -> dict[str, float]:
    """``policy,success_rate`` CSV (rates in [0, 1] or percentages) -> dict.

    Raises:
        ValueError: missing columns or a non-numeric rate (names the file and line).
    """
    out: dict[str, float] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"policy", "success_rate"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns policy,success_rate, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                rate = float(row["success_rate"].strip().rstrip("%"))
            except ValueError:
                raise ValueError(f"{path}:{line}: success_rate {row['success_rate']!r} is not a number") from None
            out[row["policy"].strip()] = rate / 100 if rate > 1 or row["success_rate"].strip().endswith("%") else rate
    return out


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    layouts = scenarios.names() if args.layouts in (["all"], None) else args.layouts
    distances = list(scenarios.DISTANCES) if args.distances in (["all"], None) else args.distances
    for layout in layouts:
        scenarios.load(layout, distances[0])  # fail fast, with the scenario error
    for distance in distances:
        if distance not in scenarios.DISTANCES:
            raise SystemExit(f"error: unknown distance {distance!r}; choose from {', '.join(scenarios.DISTANCES)}")
    latency: float | str = "measured" if args.latency == "measured" else (args.latency_ms or 0.0) / 1e3
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/{_safe('+'.join(args.policy))}-{stamp}")
    return {
        "policies": list(dict.fromkeys(args.policy)),
        "layouts": list(layouts),
        "distances": list(distances),
        "episodes_per_combo": args.episodes_per_combo,
        "seed": args.seed,
        "record": args.record,
        "latency": latency,
        "actuation": args.actuation,
        "image_size": args.image_size,
        "max_steps": args.max_steps,
        "checkpoint": args.checkpoint,
        "backbone": args.backbone,
        "backbone_path": args.backbone_path,
        "clip_path": args.clip_path,
        "key_map": args.key_map,
        "config": args.config,
        "policy_args": parse_policy_args(args.policy_arg or []),
        "out": str(out),
        "video_dir": str(Path("videos") / out.name),
        "real_results": args.real_results,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sim.eval", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", action="append", help="policy name (repeat to compare); see --list")
    parser.add_argument("--list", action="store_true", help="list the registered policies and exit")
    add_model_source_arguments(parser)
    parser.add_argument("--policy-arg", action="append", metavar="[POLICY@]KEY=VALUE",
                        help="extra keyword argument for every policy, or for one with POLICY@")
    parser.add_argument("--layouts", nargs="+", default=["all"])
    parser.add_argument("--distances", nargs="+", default=["all"])
    parser.add_argument("--episodes-per-combo", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--record", choices=RECORD_MODES, default="failures", help="which episodes get a video")
    lat = parser.add_mutually_exclusive_group()
    lat.add_argument("--latency-ms", type=float, help="apply every action this many ms late (simulated time)")
    lat.add_argument("--latency", choices=["measured"], help="apply each action as late as the policy took")
    parser.add_argument("--actuation", choices=["keypress", "velocity"], default="keypress")
    parser.add_argument("--image-size", default="224x224")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--out", help="run folder (default runs/<policies>-<timestamp>)")
    parser.add_argument("--resume", help="complete the run in this folder with its saved settings")
    parser.add_argument("--real-results", help="CSV policy,success_rate measured on the real robot")
    args = parser.parse_args(argv)
    if not (args.list or args.resume or args.policy):
        parser.error("give --policy NAME (or --list, or --resume RUN_DIR)")
    if args.episodes_per_combo < 1 or args.workers < 1:
        parser.error("--episodes-per-combo and --workers must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        from policies import describe

        for name in policy_names():
            print(f"{name:12} {describe(name)}")
        return 0
    if args.resume:
        out = Path(args.resume)
        try:
            config = json.loads((out / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"error: cannot resume {out}: {exc}", file=sys.stderr)
            return 2
    else:
        config = build_config(args)
        out = Path(config["out"])
        if (out / "episodes.jsonl").exists():
            print(f"error: {out} already holds a run; use --resume {out} or another --out", file=sys.stderr)
            return 2
        out.mkdir(parents=True, exist_ok=True)
        from sim.report import atomic_write_text

        atomic_write_text(out / "config.json", json.dumps(config, indent=1) + "\n")
    real = read_real_results(config["real_results"]) if config.get("real_results") else None

    episodes_file = out / "episodes.jsonl"
    done = {(r["policy"], r["layout"], r["distance"], r["episode"]) for r in repair_records(episodes_file)}
    pending = [t for t in plan_tasks(config) if t.key not in done]

    # Pre-flight: build every policy once here, so a bad name or checkpoint fails before any worker starts.
    provenance = config.setdefault("provenance", {})
    for name in config["policies"]:
        try:
            policy = make_policy(name, **policy_kwargs(name, config))
        except Exception as exc:  # noqa: BLE001
            print(f"error: cannot build policy {name!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        provenance[name] = describe_policy(policy)
        shared = getattr(policy, "shares_history", False)
        policy.close()
        if shared and args.workers > 1:
            print(f"error: {name}: the server keeps one global frame history for all clients; with --workers "
                  f"{args.workers} the episodes would interleave in it: use --workers 1", file=sys.stderr)
            return 2

    workers = max(1, min(args.workers, len(pending) or 1))
    interrupted = False
    if pending:
        print(f"evaluating {len(pending)} episodes ({len(done)} already done) with {workers} worker(s) -> {out}")
        successes = sum(1 for r in read_records(episodes_file) if r["status"] == "success")
        finished = len(done)
        pool = None
        try:
            with open(episodes_file, "a") as fh, tqdm(total=len(pending), unit="ep", dynamic_ncols=True) as bar:
                if workers == 1:
                    _init_worker(config)
                    results = map(run_task, pending)
                else:
                    pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(config,))
                    results = pool.imap_unordered(run_task, pending)
                for record in results:
                    fh.write(json.dumps(record) + "\n")
                    fh.flush()
                    finished += 1
                    successes += record["status"] == "success"
                    bar.set_postfix(success=f"{successes / finished:.0%}")
                    bar.update()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            if _WORKER.get("env") is not None:
                _WORKER["env"].close()
                _WORKER.clear()
    if interrupted:
        print(f"\ninterrupted: finished episodes are in {episodes_file}; complete with --resume {out}")
        return 130

    from sim.report import console_table, plot_trajectories, summarize, write_summary

    order = {t.key: i for i, t in enumerate(plan_tasks(config))}
    records = sorted(read_records(episodes_file), key=lambda r: order.get((r["policy"], r["layout"], r["distance"], r["episode"]), 0))
    summary = summarize(records, config, real)
    write_summary(out, summary)
    plots = plot_trajectories([r for r in records if r.get("scene")], out, config["policies"])
    videos = [r["video"] for r in records if r.get("video")]
    print(console_table(summary))
    print(f"\nrun folder: {out}\n  episodes.jsonl, summary.json, summary.md, {len(plots)} trajectories_*.png")
    if videos:
        print(f"  {len(videos)} videos in {Path(videos[0]).parent}")
    errors = sum(r["status"] == "error" for r in records)
    if errors:
        print(f"{errors} episode(s) ended in an error: see summary.md", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
