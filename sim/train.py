"""Behaviour cloning of a VLA head on H5 episodes, with the frozen backbone's features cached on disk.

``python -m sim.train --policy case2 --backbone lite --data DIR [--data DIR2 ...] --out CKPT_DIR [--epochs N]
[--batch-size B] [--lr LR] [--sampling random|stratified|sequential] [--policy-arg KEY=VALUE] [--resume]``

The recipe, the cache and the outputs: :mod:`sim.training.supervised`. ``--policy-arg KEY=VALUE`` sets a head
config field (``hidden_dim=256``, ``final_norm=false``; ``--head-arg`` is the older spelling). Exit 0: trained;
2: bad arguments or data.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from policies.catalog import BACKBONE_NAMES, HEAD_NAMES
from sim.cli import add_policy_arg_argument, command, parse_policy_args
from sim.training.supervised import DEFAULT_CACHE, train


@command
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.train", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True, choices=[h for h in HEAD_NAMES if h != "robovlms"],
                        help="head to train (robovlms reads the language model's action token: not cacheable here)")
    parser.add_argument("--backbone", default="lite", choices=BACKBONE_NAMES)
    parser.add_argument("--backbone-path")
    parser.add_argument("--data", action="append", required=True, help="folder of H5 episodes (repeatable)")
    parser.add_argument("--out", required=True, help="checkpoint folder")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=5, help="early stopping: epochs without a better val loss")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--sampling", choices=["random", "stratified", "sequential"], default="random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    parser.add_argument("--stop-weight", type=float, default=1.0,
                        help="loss weight of the final stop frame (one per episode; 1 = the team's recipe)")
    add_policy_arg_argument(parser, "--head-arg")
    parser.add_argument("--skip-invalid", action="store_true", help="skip bad episode files with a warning")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    args = parser.parse_args(argv)
    policy_args = parse_policy_args(args.policy_arg)
    head_overrides = {**policy_args.pop("*", {}), **policy_args.pop(args.policy, {})}
    if policy_args:
        parser.error(f"--policy-arg names {sorted(policy_args)}, but this command trains {args.policy}")
    summary = train(args.policy, args.data, args.out, backbone=args.backbone, backbone_path=args.backbone_path,
                    epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                    patience=args.patience, val_fraction=args.val_fraction, sampling=args.sampling,
                    seed=args.seed, cache_dir=args.cache_dir, resume=args.resume, stop_weight=args.stop_weight,
                    head_overrides=head_overrides, skip_invalid=args.skip_invalid)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
