"""Closed-loop evaluation: success rate with confidence intervals, offline metrics, latency, videos, plots.

``python -m sim.eval --policy NAME [--policy NAME2 ...] [--checkpoint PATH] [--backbone auto] [--backbone-path P]
[--clip-path P] [--key-map MAP.json] [--config ROBOVLMS.json] [--policy-arg [POLICY@]KEY=VALUE] [--layouts all]
[--distances all] [--episodes-per-combo 10] [--renderer tiny|egl|auto] [--seed 0] [--workers N] [--backend local|ray [--ray-address ADDR]]
[--device cpu|cuda|cuda:N] [--batch auto|on|off [--batch-wait-ms MS]] [--record failures|all|none] [--videos-per-combo N|all]
[--latency-ms X | --latency measured] [--step-timeout S] [--out runs/NAME-TIMESTAMP] [--resume RUN_DIR
[--retry-errors]] [--real-results CSV]``

The command builds an :class:`~sim.evaluation.config.EvalConfig` from its arguments (every value is checked
before anything is written: a bad one prints one line and exits 2) and runs :func:`sim.evaluation.evaluate`
(seeds, workers and resuming: :mod:`sim.evaluation.runner`; the Ray backend: :mod:`sim.evaluation.ray_backend`;
batched inference: :mod:`policies.batching`).
Exit 0: done; 1: an episode ended in ``error``;
2: bad arguments (a run folder in use, a new run in a folder with files, a flag ``--resume`` would ignore, a
resumed run whose records disagree with its config.json); 130: interrupted, 143: terminated by SIGTERM
(``--resume RUN_DIR`` completes the run).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from envs.cadence import PRESETS
from envs.settings import ACTUATIONS, ImageSize
from foundations.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ConfigError
from foundations.files import read_text_capped
from policies import describe
from policies import names as policy_names
from policies.batching import DEFAULT_MAX_WAIT_MS
from sim.cli import (
    MAX_EPISODES,
    MAX_SECONDS,
    MAX_SEED,
    MAX_STEPS,
    MAX_WORKERS,
    ArgumentParser,
    add_family_argument,
    add_model_source_arguments,
    add_policy_arg_argument,
    add_renderer_argument,
    add_sweep_arguments,
    cadence_from_arg,
    command,
    float_in,
    int_in,
    model_source_kwargs,
    parse_policy_args,
    sweep_from_args,
)
from sim.evaluation import EvalConfig, EvalResult, evaluate
from sim.evaluation.config import (
    DEFAULT_VIDEOS_PER_COMBO,
    MAX_LATENCY_S,
    RECORD_MODES,
    EnvSettings,
    Latency,
    OutputSettings,
    Sweep,
    default_run_dir,
    policy_spec,
)
from sim.evaluation.runner import BACKENDS, BATCH_MODES


def read_real_results(path: str | Path) -> dict[str, float]:
    """``policy,success_rate`` CSV (rates in [0, 1] or percentages) -> dict.

    Raises:
        ConfigError: unreadable file, larger than 16 MiB or not UTF-8, missing columns or a non-numeric rate
            (names the file and line).
    """
    out: dict[str, float] = {}
    try:
        with io.StringIO(read_text_capped(path), newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"policy", "success_rate"} <= set(reader.fieldnames):
                raise ConfigError(f"{path}: expected columns policy,success_rate, got {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                text = (row["success_rate"] or "").strip()
                try:
                    rate = float(text.rstrip("%"))
                    if not 0 <= rate <= 100:  # nan and inf too
                        raise ValueError
                except ValueError:
                    raise ConfigError(f"{path}:{line}: success_rate {row['success_rate']!r} is not a number in [0, 100]") from None
                out[(row["policy"] or "").strip()] = rate / 100 if rate > 1 or text.endswith("%") else rate
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--real-results {path}: {exc}") from None
    return out


def parse_latency_components(items: Sequence[str]) -> dict[str, float]:
    """``["grounder=1.9", "mlp=0.001"]`` -> ``{"grounder": 1.9, "mlp": 0.001}`` (s).

    Raises:
        ConfigError: an item that is not NAME=SECONDS with SECONDS a number in [0, 10] (one line naming it).
    """
    out: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            seconds = float(text)
        except ValueError:
            seconds = math.nan
        if not sep or not name or not 0.0 <= seconds <= MAX_LATENCY_S:
            raise ConfigError(f"--latency-component must be NAME=SECONDS with SECONDS in [0, {MAX_LATENCY_S:g}], "
                              f"got {item!r}")
        out[name] = seconds
    return out


def videos_per_combo(text: str) -> int | None:
    """``--videos-per-combo``: ``"all"`` -> None, ``"N"`` -> N >= 0 (else argparse's one-line error, exit 2)."""
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 or all, got {text!r}")
    return value


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The :class:`EvalConfig` the command line describes.

    Raises:
        ConfigError / ScenarioError: an invalid value (named).
    """
    checks = [("--episodes-per-combo", args.episodes_per_combo, 1, None), ("--seed", args.seed, 0, 2**32 - 1),
              ("--max-steps", args.max_steps, 1, None), ("--latency-ms", args.latency_ms, 0, round(MAX_LATENCY_S * 1e3))]
    for flag, value, low, high in checks:
        if value is not None and (value < low or (high is not None and value > high) or value != value):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ConfigError(f"{flag} must be {bound}, got {value}")
    names = list(dict.fromkeys(args.policy))
    source = model_source_kwargs(args)
    if source:
        from policies.registry import model_source_names

        if not any(name.partition(":")[0] in model_source_names() for name in names):
            raise ConfigError(f"--{next(iter(source)).replace('_', '-')} applies to the policies that load a model "
                              f"({', '.join(sorted(model_source_names()))}); none of {', '.join(names)} does")
    policy_args = parse_policy_args(args.policy_arg)
    out = Path(args.out) if args.out else default_run_dir(names, time.strftime("%Y%m%d-%H%M%S"))
    components = parse_latency_components(args.latency_component)
    if args.latency == "measured":
        if components:
            raise ConfigError("--latency measured and --latency-component exclude each other")
        latency = Latency(measured=True)
    else:
        latency = Latency(seconds=(args.latency_ms or 0.0) / 1e3, components=components)
    cadence = cadence_from_arg(args.cadence)
    if args.max_time is not None and not 0 < args.max_time <= 3600:
        raise ConfigError(f"--max-time must be in (0, 3600] s, got {args.max_time}")
    layouts, distances = sweep_from_args(args.family, args.layouts, args.distances)
    return EvalConfig(
        policies=[policy_spec(name, model_source=source, policy_args=policy_args) for name in names],
        env=EnvSettings(family=args.family, actuation=args.actuation, cadence=cadence,
                        image_size=ImageSize.parse(args.image_size, "--image-size"), max_steps=args.max_steps,
                        max_time=args.max_time, latency=latency, renderer=args.renderer),
        sweep=Sweep(layouts=layouts, distances=distances, episodes_per_combo=args.episodes_per_combo, seed=args.seed),
        output=OutputSettings(out=out, record=args.record, videos_per_combo=args.videos_per_combo,
                              real_results=args.real_results, inline_videos=args.inline_videos),
    )


#: What ``--resume`` may be given besides the run folder: how the rest of the run runs, not what it measures (the
#: run's settings are its ``config.json``'s).
RESUME_FLAGS = ("resume", "retry_errors", "workers", "step_timeout", "backend", "ray_address", "batch",
                "batch_wait_ms")


def given_flags(argv: Sequence[str] | None) -> list[str]:
    """The flags ``argv`` gives (``--seed``, ...), in the parser's order; those left at their defaults are not."""
    probe = build_parser()
    probe.set_defaults(**dict.fromkeys(vars(probe.parse_args([])), None))  # a flag on the command line is never None
    return [f"--{dest.replace('_', '-')}" for dest, value in vars(probe.parse_args(argv)).items() if value is not None]


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sim.eval`` argument parser (:class:`sim.cli.ArgumentParser`)."""
    parser = ArgumentParser(prog="python -m sim.eval", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", action="append", help="policy name (repeat to compare); see --list")
    parser.add_argument("--list", action="store_true", help="list the registered policies and exit")
    add_model_source_arguments(parser)
    add_policy_arg_argument(parser)
    add_family_argument(parser)
    add_sweep_arguments(parser)
    parser.add_argument("--episodes-per-combo", type=int_in(1, MAX_EPISODES), default=10)
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    parser.add_argument("--workers", type=int_in(1, MAX_WORKERS), default=os.cpu_count() or 1,
                        help="worker processes, or Ray actors with --backend ray (default: the CPUs here)")
    parser.add_argument("--backend", choices=BACKENDS, default="local",
                        help="local: worker processes on this machine; ray: actors on a Ray cluster (pip install -e "
                             "'.[ray]'); the same episodes and records")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="--backend ray: the cluster to join (e.g. auto, HOST:6379; default: a new local one)")
    parser.add_argument("--batch", choices=BATCH_MODES, default="auto",
                        help="on: the VLA policies run on one batched policy server that advances every waiting "
                             "environment in one forward; off: each worker runs its own; auto (default): on when "
                             "they run on CUDA with more than one worker")
    parser.add_argument("--batch-wait-ms", type=float_in(0, 60_000), default=DEFAULT_MAX_WAIT_MS, metavar="MS",
                        help=f"batched: longest wait for more environments once one is waiting (default "
                             f"{DEFAULT_MAX_WAIT_MS:g})")
    parser.add_argument("--record", choices=RECORD_MODES, default="failures", help="which episodes get a video")
    parser.add_argument("--inline-videos", type=int, default=12, metavar="N",
                        help="videos embedded in index.html (failures first, one per failure category, then "
                             "successes); the others are linked (default 12)")
    parser.add_argument("--videos-per-combo", type=videos_per_combo, default=DEFAULT_VIDEOS_PER_COMBO, metavar="N|all",
                        help=f"--record applies to the first N episodes of each policy x layout x distance (default "
                             f"{DEFAULT_VIDEOS_PER_COMBO}; all: every episode)")
    lat = parser.add_mutually_exclusive_group()
    lat.add_argument("--latency-ms", type=float_in(0, 1e4), help="apply every action this many ms late (simulated time)")
    lat.add_argument("--latency", choices=["measured"], help="apply each action as late as the policy took")
    parser.add_argument("--latency-component", action="append", default=[], metavar="NAME=SECONDS",
                        help="a latency component (e.g. grounder=1.9, mlp=0.001; repeat): each step pays those the "
                             "policy ran (all of them unless it says), on top of --latency-ms")
    parser.add_argument("--actuation", choices=ACTUATIONS, default=None,
                        help="keypress (2025 robot), velocity, or class (the eight classes of 2026; the corridor's "
                             "default)")
    parser.add_argument("--cadence", metavar="PRESET[,FIELD=VALUE...]",
                        help=f"class actuation: when decisions are taken and how long commands drive: "
                             f"{', '.join(PRESETS)} (default deployed), e.g. deployed,coast_s=1.2 (envs/cadence.py)")
    parser.add_argument("--max-time", type=float_in(0, 3600, low_open=True), metavar="S",
                        help="class actuation: episode length in simulated seconds (default 45)")
    parser.add_argument("--image-size", default="224x224", help="camera WIDTHxHEIGHT px")
    add_renderer_argument(parser)
    parser.add_argument("--max-steps", type=int_in(1, MAX_STEPS), default=None, help="steps before a timeout (default: the env's)")
    parser.add_argument("--out", help="run folder (default runs/<policies>-<timestamp>)")
    parser.add_argument("--resume", help="complete the run in this folder with its saved settings")
    parser.add_argument("--retry-errors", action="store_true",
                        help="with --resume: also re-run the episodes recorded as error (e.g. a server that was down)")
    parser.add_argument("--step-timeout", type=float_in(0, MAX_SECONDS, low_open=True), metavar="S",
                        help="seconds a policy's reset or act may take; over it the episode ends as error (default: "
                             "no limit)")
    parser.add_argument("--real-results", help="CSV policy,success_rate measured on the real robot")
    return parser


def print_result(result: EvalResult) -> None:
    """The console table and where the outputs are."""
    from sim.evaluation.report import console_table

    print(console_table(result.summary))
    print(f"\nrun folder: {result.out}\n  index.html (open it in a browser), episodes.jsonl, summary.json, summary.md, "
          f"{len(result.plots)} trajectories_*.png")
    videos = [r["video"] for r in result.records if r.get("video")]
    if videos:
        print(f"  {len(videos)} videos in {Path(videos[0]).parent}")
    if result.errors:
        print(f"{result.errors} episode(s) ended in an error: see summary.md", file=sys.stderr)


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0, 1 when an episode ended in an error, 2 for bad arguments or config, 130 when
    interrupted (finished episodes kept; ``--resume`` completes the run)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name in policy_names():
            print(f"{name:16} {describe(name)}")
        return EXIT_OK
    if not (args.resume or args.policy):
        parser.error("give --policy NAME (or --list, or --resume RUN_DIR)")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.resume:
        ignored = [flag for flag in given_flags(argv) if flag.removeprefix("--").replace("-", "_") not in RESUME_FLAGS]
        if ignored:
            raise ConfigError(f"--resume completes the run with the settings of its config.json: {', '.join(ignored)} "
                         f"would be ignored (resume takes only "
                         f"{', '.join('--' + f.replace('_', '-') for f in RESUME_FLAGS[1:])})")
    if args.retry_errors and not args.resume:
        parser.error("--retry-errors re-runs the errors of an existing run: give --resume RUN_DIR")
    if args.step_timeout is not None and not args.step_timeout > 0:
        parser.error(f"--step-timeout must be positive (s), got {args.step_timeout}")
    if args.ray_address and args.backend != "ray":
        parser.error("--ray-address is for --backend ray")
    if not args.batch_wait_ms >= 0:
        parser.error(f"--batch-wait-ms must be >= 0, got {args.batch_wait_ms}")
    cfg = EvalConfig.load(args.resume) if args.resume else config_from_args(args)
    real = read_real_results(cfg.output.real_results) if cfg.output.real_results else None
    result = evaluate(cfg, workers=args.workers, resume=bool(args.resume), retry_errors=args.retry_errors,
                      step_timeout=args.step_timeout, real_results=real, backend=args.backend,
                      ray_address=args.ray_address, batch=args.batch, batch_wait_ms=args.batch_wait_ms)
    if result.interrupted:
        print(f"\ninterrupted: finished episodes are in {result.out / 'episodes.jsonl'}; complete with "
              f"--resume {result.out}")
        return EXIT_INTERRUPTED
    print_result(result)
    return EXIT_FAILED if result.errors else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
