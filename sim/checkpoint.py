"""What a checkpoint file holds, and whether ``sim.eval --checkpoint FILE`` loads it. A team member runs this first.

Usage::

    python -m sim.checkpoint FILE [--policy NAME] [--key-map MAP.json] [--backbone auto|lite|kosmos2|tiny-kosmos2]
        [--backbone-path DIR] [--clip-path P] [--config ROBOVLMS.json] [--json] [--build]

What is reported: :mod:`sim.deploy.checkpoint_report`. Exit status: 0 = the file loads (format, architecture, head
keys and widths); 1 = it does not (or ``--build`` failed); 2 = bad arguments (e.g. no such file).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from foundations.files import json_text
from policies.catalog import HEAD_NAMES
from sim.cli import ArgumentParser, add_model_source_arguments, command
from sim.deploy.checkpoint_report import format_report, inspect_checkpoint


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sim.checkpoint`` argument parser (:class:`sim.cli.ArgumentParser`)."""
    parser = ArgumentParser(prog="python -m sim.checkpoint", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="checkpoint (.pth, .ckpt, .pt, .safetensors + .json)")
    parser.add_argument("--policy", choices=HEAD_NAMES, help="check against this head (default: detected)")
    add_model_source_arguments(parser, checkpoint=False, backbone_default="auto")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--build", action="store_true", help="also build the policy and run one step")
    return parser


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (exit 0 loads, 1 does not, 2 bad arguments)."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from policies.backbones.robovlms import RoboVLMsSettings
    from policies.checkpoints import load_key_map

    # The arguments' own files: a bad one is a bad argument (exit 2), not a verdict on the checkpoint.
    if args.key_map:
        load_key_map(args.key_map)
    if args.config:
        RoboVLMsSettings.from_config(args.config)
    report = inspect_checkpoint(args.file, policy=args.policy, key_map=args.key_map, backbone=args.backbone,
                                backbone_path=args.backbone_path, clip_path=args.clip_path, config=args.config,
                                build=args.build)
    print(json_text(report, indent=1, default=str) if args.json else format_report(report))
    return 0 if report["loads"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
