"""Generate synthetic H5 episodes in the robot collector's exact format (``python -m sim.generate``).

Usage::

    python -m sim.generate --out data/synth --episodes 48 --image-size 224x224 --workers 2 --seed 0
    python -m sim.generate --out data/synth --episodes 480                      # 1280x720 like the robot
    python -m sim.generate --out D --episodes 8 --layouts 1box_hori_left 2box_vert_right --distances medium far
    python -m sim.generate --family basket --out data/basket --episodes 24   # basket_... files, the 2026 set-up
    python -m sim.generate --family corridor --out data/corridor --episodes 30 --format lerobot   # V6 H5 + LeRobot

What each episode is, the determinism rule and resuming: :mod:`sim.data.generation`. Exit 0: every episode
written; 1: some episodes failed (listed); 2: bad arguments, or a folder holding files of other settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from envs.rendering import choose_renderer
from envs.settings import ImageSize, default_actuation
from sim.cli import (
    MAX_EPISODES,
    MAX_SEED,
    MAX_WORKERS,
    ArgumentParser,
    add_family_argument,
    add_renderer_argument,
    add_sweep_arguments,
    cadence_from_arg,
    command,
    float_in,
    int_in,
    sweep_from_args,
)
from sim.data import h5format
from sim.data.generation import OUTPUT_FORMATS, GenerateConfig, generate


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sim.generate`` argument parser (:class:`sim.cli.ArgumentParser`)."""
    p = ArgumentParser(prog="python -m sim.generate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output folder (created; resumable)")
    p.add_argument("--episodes", required=True, type=int_in(1, MAX_EPISODES), help="number of episodes (indices 0..N-1)")
    add_family_argument(p)
    add_sweep_arguments(p)
    p.add_argument("--cadence", metavar="PRESET[,FIELD=VALUE...]",
                   help="corridor: the decision cadence of the data (default v6-data: the joystick data's ~6 Hz; "
                        "v5: 1.35 s steps)")
    p.add_argument("--format", dest="output_format", choices=OUTPUT_FORMATS, default="h5",
                   help="h5: the episode files; lerobot: also a LeRobot v3.0 dataset of them in OUT/lerobot")
    p.add_argument("--image-size", default="1280x720", help="WIDTHxHEIGHT px (default 1280x720 like the robot)")
    add_renderer_argument(p)
    p.add_argument("--variant-ratio", type=float_in(0, 1), default=0.4, help="share of variant episodes in [0, 1]")
    p.add_argument("--workers", type=int_in(1, MAX_WORKERS), default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    p.add_argument("--randomize", action=argparse.BooleanOptionalAction, default=True,
                   help="domain randomisation (colours, textures, light, camera jitter)")
    p.add_argument("--epsilon", type=float_in(0, 1), default=0.2, help="expert perturbation probability of variants")
    p.add_argument("--slack", type=float_in(0, 1000), default=1.0, help="extra presses a variant perturbation may cost")
    p.add_argument("--max-attempts", type=int_in(1, 1000), default=8)
    p.add_argument("--collector-format", action="store_true",
                   help="files exactly as the robot's collector writes them: no language_instruction, no sim_* "
                        "attributes (not resumable: give an empty --out)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0, 1 when an episode could not be generated, 2 for bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    layouts, distances = sweep_from_args(args.family, args.layouts, args.distances)
    corridor = default_actuation(args.family) == "class"
    bad = [lay for lay in layouts if not corridor and
           not h5format.FILENAME_RE.match(f"episode_20250101_000000_{lay}_core_medium.h5")]
    if bad:
        parser.error(f"layouts {bad} cannot be named in the collector's file-name pattern "
                     "({1box|2box}_{hori|vert}_{left|right})")
    if args.cadence is not None and not corridor:
        parser.error(f"--cadence is for the corridor family's class actuation (the {args.family} family presses "
                     "keys)")
    cadence = cadence_from_arg(args.cadence)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    if not 0.0 <= args.variant_ratio <= 1.0:
        parser.error("--variant-ratio must be in [0, 1]")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed must be in [0, 2**32), got {args.seed}")
    if not 0.0 <= args.epsilon <= 1.0 or args.slack < 0 or args.max_attempts < 1:
        parser.error("--epsilon must be in [0, 1], --slack >= 0 and --max-attempts >= 1")
    size = ImageSize.parse(args.image_size, "--image-size")
    cfg = GenerateConfig(
        out=args.out, episodes=args.episodes, layouts=layouts, distances=distances, family=args.family,
        image_size=size, variant_ratio=args.variant_ratio, seed=args.seed, randomize=args.randomize,
        epsilon=args.epsilon, slack=args.slack, max_attempts=args.max_attempts, workers=args.workers,
        collector_format=args.collector_format, output_format=args.output_format,
        cadence=None if cadence is None else args.cadence, renderer=choose_renderer(args.renderer, size),
    )
    res = generate(cfg, progress=not args.no_progress)
    s = res["statistics"]
    print(f"{cfg.out}: wrote {len(res['written'])} episodes ({res['frames_written']} frames, {cfg.renderer}: "
          f"{res['frames_written'] / max(res['elapsed_s'], 1e-9):.1f} frames/s), skipped {res['skipped']} "
          f"finished, {len(res['failed'])} failed; folder holds {s['num_episodes']} episodes")
    if res["lerobot"] is not None:
        print(f"LeRobot v3.0 dataset of the folder's {s['num_episodes']} episodes: {res['lerobot']}")
    for r in res["failed"]:
        print(f"failed: {r['error']}", file=sys.stderr)
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
