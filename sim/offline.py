"""The team's own episodes as input: offline metrics on real H5 files, a sim twin of every episode, one comparison.

``python -m sim.offline --policy P [--policy P2 ...] [--checkpoint FILE] [model-source flags] [--policy-arg
[POLICY@]KEY=VALUE] --data REAL_DIR [--data ...] --out DIR [--no-twins] [--no-videos] [--seed 0]
[--closed-loop-episodes 2 | --eval-run RUN_DIR] [--workers N] [--skip-invalid]``

Writes ``DIR/steps.csv`` (one row per labelled step: ``policy,episode,step,label_x,label_y,pred_x,pred_y``, so
every figure can be recomputed), ``DIR/twin_steps.csv`` (each step's action on the real and on the twin's frame),
``DIR/summary.json`` (with ``overall.mae`` for a single policy), ``DIR/summary.md``, ``DIR/index.html`` and
``DIR/twins/<episode>.mp4``. What is measured and how: :mod:`sim.evaluation.offline`. Exit 0: done; 2: bad
arguments, an invalid file (without ``--skip-invalid``) or a policy that cannot act on camera frames.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import scenarios
from envs.settings import ImageSize
from foundations.errors import ConfigError
from sim.cli import (
    MAX_EPISODES,
    MAX_SEED,
    MAX_WORKERS,
    ArgumentParser,
    add_model_source_arguments,
    add_policy_arg_argument,
    add_renderer_argument,
    command,
    int_in,
    model_source_kwargs,
    parse_policy_args,
)
from sim.data import h5format
from sim.evaluation.config import policy_spec
from sim.evaluation.offline import OfflineConfig, evaluate_offline


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sim.offline`` argument parser (:class:`sim.cli.ArgumentParser`)."""
    parser = ArgumentParser(prog="python -m sim.offline", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", action="append", required=True, help="policy to score (repeat to compare)")
    add_model_source_arguments(parser)
    add_policy_arg_argument(parser)
    parser.add_argument("--data", action="append", required=True, help="folder (or file) of real H5 episodes")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--no-twins", action="store_true", help="offline metrics only (no simulated twins)")
    parser.add_argument("--no-videos", action="store_true", help="no twin videos")
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="seed of the twins' jitter and of the closed-loop sweep")
    parser.add_argument("--closed-loop-episodes", type=int_in(0, MAX_EPISODES), default=2,
                        help="closed-loop episodes per layout x distance of the data, for the comparison (0: none)")
    parser.add_argument("--eval-run", help="take the closed-loop figures from this sim.eval run folder instead")
    add_renderer_argument(parser)
    parser.add_argument("--twin-image-size", default="640x360", help="the twins' camera WIDTHxHEIGHT (16:9 as the "
                                                                     "robot's)")
    parser.add_argument("--workers", type=int_in(1, MAX_WORKERS), default=os.cpu_count() or 1, help="processes of the closed loop")
    parser.add_argument("--family", choices=scenarios.FAMILIES, default=None,
                        help="scenario family of the closed-loop sweep (default: the data's; twins always play in "
                             "their file's family)")
    parser.add_argument("--skip-invalid", action="store_true", help="skip invalid files (listed in the summary)")
    parser.add_argument("--cadence", default=None, metavar="PRESET[,FIELD=VALUE...]",
                        help="corridor data: the closed loop's cadence (default deployed)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def corridor_data(sources: Sequence[Path]) -> list[Path]:
    """The episode files of ``sources`` when they are all corridor (V6-layout) files, else ``[]``.

    Raises:
        ConfigError: corridor files mixed with the box families' (one run reads one kind).
    """
    from sim.evaluation.offline import episode_files

    def corridor(path: Path) -> bool:
        try:
            return h5format.read_info(path).family == "corridor"
        except (OSError, KeyError, ValueError):  # not readable as an episode: the offline path names the problem
            return False

    files = list(episode_files(sources))
    v6 = [p for p in files if corridor(p)]
    if v6 and len(v6) != len(files):
        raise ConfigError("the data mix corridor (V6) files with box-family files: give one kind per run")
    return v6


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0 (2 for bad arguments or an error of the project, e.g. a policy that cannot be
    built, printed as one line by :func:`sim.cli.command`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32 or args.closed_loop_episodes < 0 or args.workers < 1:
        parser.error("--seed must be in [0, 2**32), --closed-loop-episodes >= 0, --workers >= 1")
    if args.eval_run and not (Path(args.eval_run) / "summary.json").is_file():
        parser.error(f"--eval-run {args.eval_run}: no summary.json there (a finished sim.eval run folder)")
    names = list(dict.fromkeys(args.policy))
    policy_args = parse_policy_args(args.policy_arg)
    cfg = OfflineConfig(
        policies=tuple(policy_spec(n, model_source=model_source_kwargs(args), policy_args=policy_args) for n in names),
        data=tuple(Path(d) for d in args.data), out=Path(args.out), twins=not args.no_twins,
        videos=not args.no_videos, seed=args.seed, skip_invalid=args.skip_invalid,
        closed_loop_episodes=args.closed_loop_episodes, eval_run=Path(args.eval_run) if args.eval_run else None,
        twin_image_size=tuple(ImageSize.parse(args.twin_image_size, "--twin-image-size")), renderer=args.renderer,
        workers=args.workers,
        family=args.family)
    corridor = corridor_data(cfg.data)
    if corridor:  # the corridor's V6 files: their replay beside our closed loop
        from sim.evaluation.replay import evaluate_replay, to_markdown
        from sim.evaluation.runner import PolicyBuildError

        try:
            policies = {spec.name: spec.build() for spec in cfg.policies}
        except Exception as exc:  # noqa: BLE001
            raise PolicyBuildError(f"cannot build a policy: {type(exc).__name__}: {exc}") from None
        summary = evaluate_replay(policies, corridor, cfg.out, cadence=args.cadence,
                                  progress=not args.no_progress)
        print(to_markdown(summary["policies"], summary["cadence"]["name"]).rstrip())
        print(f"\nrun folder: {cfg.out}\n  summary.json, summary.md, replay.jsonl")
        return 0
    summary = evaluate_offline(cfg, progress=not args.no_progress)
    from sim.evaluation.offline import offline_markdown

    print(offline_markdown(summary).split("## Offline metrics")[0].rstrip())
    print(f"\nrun folder: {cfg.out}\n  index.html (open it in a browser), summary.json, summary.md, steps.csv, "
          f"twin_steps.csv" + (f", {len(summary['twins'])} twins/*.mp4" if cfg.videos and cfg.twins else ""))
    if summary["invalid"]:
        print(f"{len(summary['invalid'])} invalid file(s) skipped: see summary.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
