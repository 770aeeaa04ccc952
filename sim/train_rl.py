"""Reinforcement-learning baseline: train a stable-baselines3 PPO policy on ``MobileVLA/BoxAvoid-v0`` from state.

``python -m sim.train_rl --algo ppo --timesteps N --out PATH.zip [--layout 1box_hori_left] [--distance medium]
[--n-envs 2] [--seed 0] [--actuation keypress] [--action-dims 2|3] [--side-penalty 5] [--resume PATH.zip]``

then ``python -m sim.eval --policy sb3:PATH.zip --layouts LAYOUT --distances DISTANCE`` evaluates it unchanged.
What it is, its limitation (one layout at one distance) and its design: :mod:`sim.training.rl`. Exit 0: trained
(``PATH.zip`` and ``PATH.json`` written); 2: bad arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from envs.settings import ACTUATIONS
from sim.cli import (
    MAX_EPISODES,
    MAX_SEED,
    MAX_STEPS,
    MAX_WORKERS,
    ArgumentParser,
    add_family_argument,
    command,
    float_in,
    int_in,
    sweep_from_args,
)
from sim.training.rl import ALGOS, DEFAULT_DISTANCE, DEFAULT_LAYOUT, train


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sim.train_rl`` argument parser (:class:`sim.cli.ArgumentParser`)."""
    parser = ArgumentParser(
        prog="python -m sim.train_rl",
        description=(
            "Train a stable-baselines3 PPO baseline on MobileVLA/BoxAvoid-v0 from the 'state' observation "
            "(x, y, yaw, vx, vy, wz). LIMITATION: the state does not say where the boxes, goal or instructed side "
            "are, so the policy learns ONE layout at ONE distance (--layout/--distance, with pose jitter); evaluate "
            "it only there: python -m sim.eval --policy sb3:PATH.zip --layouts LAYOUT --distances DISTANCE."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--algo", choices=ALGOS, default="ppo", help="RL algorithm")
    parser.add_argument("--timesteps", type=int_in(1, MAX_STEPS), required=True, help="environment steps to train (this run)")
    parser.add_argument("--out", required=True, help="model zip to write (atomically), e.g. runs/ppo.zip")
    add_family_argument(parser)
    parser.add_argument("--layout", default=None, help=f"the one layout (corridor: basket position) trained on "
                                                       f"(state-only policy; default {DEFAULT_LAYOUT}, center)")
    parser.add_argument("--distance", default=None, help=f"the one distance preset (corridor: path) trained on "
                                                         f"(default {DEFAULT_DISTANCE}, straight)")
    parser.add_argument("--n-envs", type=int_in(1, MAX_WORKERS), default=2, help="parallel environments (SubprocVecEnv if > 1)")
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    parser.add_argument("--actuation", choices=ACTUATIONS, default=None,
                        help="default: the family's (keypress; the corridor's eight classes at the deployed cadence)")
    parser.add_argument("--max-steps", type=int_in(1, MAX_STEPS), default=None, help="episode length (default: the env's)")
    parser.add_argument("--action-dims", type=int, choices=[2, 3], default=2,
                        help="2: (linear_x, linear_y), angular_z = 0 (padded at evaluation too); 3: the full action")
    parser.add_argument("--side-penalty", type=float_in(0, 1e6), default=5.0,
                        help="training-only penalty for passing a box on the side not instructed (0: off)")
    parser.add_argument("--action-cost", type=float_in(0, 1e6), default=0.0,
                        help="training-only cost per unit of |(linear_x, linear_y)| beyond the 0.15 dead zone, "
                             "keeping a stop discoverable (keypress moves depend on the direction only; 0: off)")
    parser.add_argument("--resume", help="continue training this existing zip (its hyper-parameters are kept)")
    ppo = parser.add_argument_group("PPO hyper-parameters")
    ppo.add_argument("--n-steps", type=int_in(2, MAX_STEPS), default=512, help="rollout steps per environment per update")
    ppo.add_argument("--batch-size", type=int_in(2, MAX_STEPS), default=128)
    ppo.add_argument("--n-epochs", type=int_in(1, 100_000), default=10)
    ppo.add_argument("--learning-rate", type=float_in(0, 1, low_open=True), default=3e-4)
    ppo.add_argument("--gamma", type=float_in(0, 1, low_open=True), default=0.99)
    ppo.add_argument("--gae-lambda", type=float_in(0, 1), default=0.95)
    ppo.add_argument("--ent-coef", type=float_in(0, 1e3), default=0.0)
    ppo.add_argument("--log-std-init", type=float_in(-20, 20), default=-0.5, help="initial log std of the Gaussian actions")
    ppo.add_argument("--net-arch", default="64,64", help="hidden layer sizes of the policy and value MLPs")
    parser.add_argument("--device", default="cpu", help="torch device (SB3 MLPs are fastest on CPU)")
    parser.add_argument("--log-every", type=int_in(0, MAX_STEPS), default=10_000, help="print a progress line every N steps (0: off)")
    parser.add_argument("--no-progress-bar", action="store_true", help="no SB3 progress bar even if rich is there")
    parser.add_argument("--check-episodes", type=int_in(0, MAX_EPISODES), default=10, help="closed-loop check episodes after training")
    return parser


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.timesteps <= 0:
        parser.error(f"--timesteps must be positive, got {args.timesteps}")
    if args.n_envs < 1:
        parser.error(f"--n-envs must be at least 1, got {args.n_envs}")
    if args.n_steps < 2 or args.batch_size < 2 or args.n_epochs < 1:
        parser.error("--n-steps and --batch-size must be at least 2, --n-epochs at least 1")
    if args.batch_size > args.n_steps * args.n_envs:
        parser.error(f"--batch-size {args.batch_size} exceeds the rollout size --n-steps x --n-envs = "
                     f"{args.n_steps * args.n_envs}")
    if not 0.0 < args.gamma <= 1.0 or not 0.0 <= args.gae_lambda <= 1.0:
        parser.error("--gamma must be in (0, 1] and --gae-lambda in [0, 1]")
    if args.learning_rate <= 0:
        parser.error("--learning-rate must be positive")
    if args.side_penalty < 0 or args.action_cost < 0:
        parser.error("--side-penalty and --action-cost must be >= 0")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be at least 1")
    if args.check_episodes < 0:
        parser.error("--check-episodes must be >= 0")
    corridor = args.family == "corridor"
    args.layout = args.layout or ("center" if corridor else DEFAULT_LAYOUT)
    args.distance = args.distance or ("straight" if corridor else DEFAULT_DISTANCE)
    sweep_from_args(args.family, [args.layout], [args.distance], flags=("--layout", "--distance"))  # one line
    if not args.out.endswith(".zip"):
        parser.error(f"--out must name a .zip file, got {args.out!r}")
    if Path(args.out).is_dir():
        parser.error(f"--out {args.out!r} is a directory")
    if args.resume is not None and not Path(args.resume).is_file():
        parser.error(f"--resume {args.resume!r}: no such file")
    try:
        args.net_arch_list = [int(v) for v in args.net_arch.split(",") if v.strip()]
        if not args.net_arch_list or min(args.net_arch_list) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--net-arch must be comma-separated positive sizes like '64,64', got {args.net_arch!r}")


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0 after training (2 for bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
