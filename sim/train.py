"""Behaviour cloning of a VLA head on H5 episodes, with the frozen backbone's features cached on disk.

``python -m sim.train --policy case2 --backbone lite --data DIR [--data DIR2 ...] --out CKPT_DIR [--epochs N]
[--batch-size B] [--lr LR] [--sampling random|stratified|sequential|hard-negative] [--policy-arg KEY=VALUE]
[--strategy final-fixed|balanced-hybrid|advanced] [--loss huber|final-fixed] [--distance-augmentation [FACTORS]]
[--lora [--lora-r R --lora-alpha A --lora-dropout P --lora-layers L]] [--device cpu|cuda|cuda:N] [--resume]``

The recipe, the cache and the outputs: :mod:`sim.training.supervised`. ``--policy-arg KEY=VALUE`` sets a head
config field (``hidden_dim=256``, ``final_norm=false``, ``adaptive_fusion=true``; ``--head-arg`` is the older
spelling). The team's training ideas (``../shared/seeds/000``, ``001``): ``--strategy`` (the three strategies'
dropout / lr / weight decay / epochs: :mod:`sim.training.recipes`), ``--loss final-fixed``, ``--sampling
hard-negative``, ``--distance-augmentation``, ``--lora``; the heads ``final-fixed-recon`` and
``hybrid-ensemble-recon``. Exit 0: trained; 1: no epoch gave a finite validation loss (one line; no checkpoint
written); 2: bad arguments or data.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from foundations.errors import EXIT_FAILED, EXIT_OK, ConfigError
from foundations.files import json_text
from policies.catalog import BACKBONE_NAMES, HEAD_NAMES
from sim.cli import (
    MAX_SEED,
    ArgumentParser,
    add_device_argument,
    add_policy_arg_argument,
    check_device,
    command,
    float_in,
    int_in,
    parse_policy_args,
)
from sim.training.augmentation import DISTANCE_FACTORS, check_factors
from sim.training.recipes import STRATEGIES, apply_strategy
from sim.training.sampling import DEFAULT_FRACTION, DEFAULT_POOL
from sim.training.supervised import DEFAULT_CACHE, LOSSES, SAMPLING_MODES, train

#: ``--distance-augmentation`` without a value: the notes' factors.
DEFAULT_FACTORS_TEXT = ",".join(f"{d}={n}" for d, n in DISTANCE_FACTORS.items())


def parse_factors(text: str) -> dict[str, int]:
    """``"close=8,medium=5,far=8"`` -> ``{"close": 8, "medium": 5, "far": 8}``.

    Raises:
        ConfigError: an item that is not ``DISTANCE=COUNT`` or a bad distance / count (naming the flag).
    """
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        distance, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise ConfigError(f"--distance-augmentation must look like close=8,medium=5,far=8, got {text!r}")
        out[distance.strip()] = int(count)
    return check_factors(out, "--distance-augmentation")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sim.train`` argument parser (:class:`sim.cli.ArgumentParser`)."""
    parser = ArgumentParser(prog="python -m sim.train", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True, choices=[h for h in HEAD_NAMES if h != "robovlms"],
                        help="head to train (robovlms reads the language model's action token: not cacheable here)")
    parser.add_argument("--backbone", default="lite", choices=BACKBONE_NAMES)
    parser.add_argument("--backbone-path")
    add_device_argument(parser)
    parser.add_argument("--data", action="append", required=True, help="folder of H5 episodes (repeatable)")
    parser.add_argument("--out", required=True, help="checkpoint folder")
    parser.add_argument("--epochs", type=int_in(1, 100_000), help="default 30 (or the strategy's)")
    parser.add_argument("--batch-size", type=int_in(1, 1_000_000), default=64)
    parser.add_argument("--lr", type=float_in(0, 1, low_open=True), help="default 1e-4 (or the strategy's)")
    parser.add_argument("--weight-decay", type=float_in(0, 10), help="default 1e-3 (or the strategy's)")
    parser.add_argument("--patience", type=int_in(0, 100_000),
                        help="early stopping: epochs without a better val loss (default 5, or the strategy's)")
    parser.add_argument("--val-fraction", type=float_in(0, 1), default=0.15)
    parser.add_argument("--sampling", choices=SAMPLING_MODES, default="random")
    parser.add_argument("--hard-negative-fraction", type=float_in(0, 1), default=DEFAULT_FRACTION,
                        help="--sampling hard-negative: share of draws from the high-loss windows (seed 001: 0.3)")
    parser.add_argument("--hard-negative-pool", type=float_in(0, 1), default=DEFAULT_POOL,
                        help="--sampling hard-negative: share of the windows, highest loss first, that are 'hard'")
    parser.add_argument("--loss", choices=LOSSES, default="huber",
                        help="huber: HuberLoss(0.1); final-fixed: MSE + 0.1 L1 on z-weighted actions (seed 000)")
    parser.add_argument("--strategy", choices=list(STRATEGIES),
                        help="the notes' strategy presets (dropout, lr, weight decay, epochs, patience; 3-DoF with "
                             "z weight 0.05); explicit flags win")
    parser.add_argument("--distance-augmentation", nargs="?", const=DEFAULT_FACTORS_TEXT, metavar="FACTORS",
                        help=f"augmented copies per training episode by distance (default {DEFAULT_FACTORS_TEXT}: "
                             "seed 000)")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) on the backbone's vision "
                                                            "tower with the head")
    parser.add_argument("--lora-r", type=int_in(1, 4096), default=32)
    parser.add_argument("--lora-alpha", type=int_in(1, 65536), default=16)
    parser.add_argument("--lora-dropout", type=float_in(0, 1), default=0.1)
    parser.add_argument("--lora-layers", type=int_in(1, 1024), default=1, help="top layers of the vision tower adapted")
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    parser.add_argument("--stop-weight", type=float_in(0, 1e6), default=1.0,
                        help="loss weight of the final stop frame (one per episode; 1 = the team's recipe)")
    add_policy_arg_argument(parser, "--head-arg")
    parser.add_argument("--skip-invalid", action="store_true", help="skip bad episode files with a warning")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (which must exist)")
    return parser


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0, 1 when training wrote no checkpoint (the reason is printed), 2 for bad arguments."""
    from policies.backbones.lora import LoraSettings

    parser = build_parser()
    args = parser.parse_args(argv)
    device = check_device(args.device or "cpu")
    if args.resume and not (Path(args.out).expanduser() / "last.pt").is_file():  # a mistyped --out never retrains
        parser.error(f"--resume: {Path(args.out) / 'last.pt'} not found: nothing to continue (drop --resume to start "
                     "a new training)")
    policy_args = parse_policy_args(args.policy_arg)
    head_overrides = {**policy_args.pop("*", {}), **policy_args.pop(args.policy, {})}
    if policy_args:
        parser.error(f"--policy-arg names {sorted(policy_args)}, but this command trains {args.policy}")
    explicit = {k: getattr(args, k) for k in ("epochs", "lr", "weight_decay", "patience") if getattr(args, k) is not None}
    recipe, head_overrides = apply_strategy(args.strategy, args.policy, explicit, head_overrides)
    lora = LoraSettings(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                        layers=args.lora_layers) if args.lora else None
    factors = parse_factors(args.distance_augmentation) if args.distance_augmentation is not None else None
    summary = train(args.policy, args.data, args.out, backbone=args.backbone, backbone_path=args.backbone_path,
                    batch_size=args.batch_size, val_fraction=args.val_fraction, sampling=args.sampling,
                    seed=args.seed, cache_dir=args.cache_dir, resume=args.resume, stop_weight=args.stop_weight,
                    head_overrides=head_overrides, skip_invalid=args.skip_invalid, loss=args.loss,
                    hard_negative_fraction=args.hard_negative_fraction, hard_negative_pool=args.hard_negative_pool,
                    distance_augmentation=factors, lora=lora, device=device, **recipe)
    print(json_text(summary, indent=1))
    if summary["checkpoint"] is None:
        print(f"error: {args.policy}: {summary['best']['reason']} in {summary['epochs_run']} epoch(s): no checkpoint "
              f"written (see {summary['metrics']})", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
