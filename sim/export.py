"""Export a VLA policy to ONNX (FP32 or FP16) for the Jetson, check the artifact against PyTorch, and give a
latency-budget verdict.

Usage::

    python -m sim.export --policy case2 [--checkpoint FILE] [--backbone lite] --format onnx [--fp16] --out DIR
    python -m sim.export --policy lstm-recon --out out/lstm --latency-budget-ms 100 --threads 1
    python -m sim.export --policy robovlms --checkpoint RUN.ckpt --config CONFIG.json --backbone-path DIR --head-only --out out/rv
    python -m sim.export --policy case2 --backbone tiny-kosmos2 --head-only --out out/k2
    python -m sim.export --check-only out/lstm/model.onnx           # re-run the numerical check of an artifact
    python -m sim.export --policy case2 --out out/case2 --verify    # and the closed-loop parity in the simulator

What is written and checked: :mod:`sim.deploy.onnx_export`; ``--verify``: :mod:`sim.deploy.closed_loop`. Exit 0:
written (and every check passed); 1: a numerical, latency or closed-loop check failed; 2: bad arguments or input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import torch

import scenarios
from foundations.errors import EXIT_FAILED, EXIT_OK
from policies.catalog import EXECUTION_MODES, HEAD_NAMES
from sim.cli import (
    MAX_EPISODES,
    MAX_SEED,
    MAX_STEPS,
    MAX_WORKERS,
    ArgumentParser,
    add_family_argument,
    add_model_source_arguments,
    add_policy_arg_argument,
    command,
    float_in,
    int_in,
    model_source_kwargs,
    parse_policy_args,
)
from sim.deploy.closed_loop import format_verify, verify_closed_loop
from sim.deploy.onnx_export import (
    DEFAULT_CHECK_STEPS,
    DEFAULT_LATENCY_STEPS,
    DEFAULT_OPSET,
    ParityError,
    export_policy,
    load_observations,
    resolve_model_path,
    verify_artifact,
)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's parser (kept separate so callers can add flags)."""
    parser = ArgumentParser(prog="python -m sim.export", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="case2", choices=HEAD_NAMES, help="head to export (default case2)")
    add_model_source_arguments(parser, backbone_default="auto")
    add_policy_arg_argument(parser)
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="artifact format (onnx)")
    parser.add_argument("--fp16", action="store_true", help="half-precision weights and compute")
    parser.add_argument("--head-only", action="store_true",
                        help="export the head alone; the backbone stays in PyTorch (needed for Kosmos-2)")
    parser.add_argument("--out", default=None, help="output folder (model.onnx + model.json)")
    parser.add_argument("--window-size", type=int_in(1, 1024), default=None,
                        help="history window in frames (default 8, or the RoboVLMs config's)")
    parser.add_argument("--execution", default="first", choices=EXECUTION_MODES,
                        help="default execution recorded in the sidecar")
    parser.add_argument("--action-dim", type=int, default=None, choices=[2, 3])
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0,
                        help="seed of a random head (no bundled weights, no --checkpoint) and base seed of --verify")
    parser.add_argument("--opset", type=int_in(7, 100), default=DEFAULT_OPSET)
    parser.add_argument("--observations", default=None, help=".npz with images (N,H,W,3) uint8 for the check")
    parser.add_argument("--check-steps", type=int_in(1, MAX_STEPS), default=DEFAULT_CHECK_STEPS)
    parser.add_argument("--no-check", action="store_true", help="skip the numerical check (not recommended)")
    parser.add_argument("--latency-budget-ms", type=float_in(0, 1e6, low_open=True), default=None,
                        help="measure p50/p95 per step (PyTorch and onnxruntime CPU) and give a verdict")
    parser.add_argument("--latency-steps", type=int_in(1, MAX_STEPS), default=DEFAULT_LATENCY_STEPS)
    parser.add_argument("--threads", type=int_in(1, MAX_WORKERS), default=None, help="torch / onnxruntime intra-op threads")
    parser.add_argument("--verify", action="store_true",
                        help="also run the original and the exported policy in closed loop on the same seeds")
    parser.add_argument("--verify-episodes", type=int_in(0, MAX_EPISODES), default=4,
                        help="episodes per layout x distance for --verify (default 4, at least 2: with one episode "
                             "per combo the 'within one episode' criterion cannot fail)")
    parser.add_argument("--verify-latency-ms", type=float_in(0, 1e4), default=None,
                        help="latency in the loop of both --verify policies, the same fixed value for both so that "
                             "the comparison is deterministic (default: the artifact's measured onnxruntime p95 "
                             "with --latency-budget-ms, else 0)")
    add_family_argument(parser)
    parser.add_argument("--verify-layouts", nargs="+", default=["all"], help="layouts for --verify (default all)")
    parser.add_argument("--verify-distances", nargs="+", default=["all"], help="distances for --verify (default all)")
    parser.add_argument("--check-only", default=None, metavar="MODEL",
                        help="only re-run the numerical check of an existing artifact")
    return parser


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 check/latency failure, 2 bad arguments or input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.check_only:
            obs = load_observations(args.observations) if args.observations else None
            report = verify_artifact(args.check_only, obs, num_threads=args.threads)
            print(f"{resolve_model_path(args.check_only)}: {report.summary()}")
            return 0
        if not args.out:
            parser.error("--out is required (unless --check-only)")
        source = model_source_kwargs(args)  # checks --device
        policy_args = parse_policy_args(args.policy_arg)
        unknown = sorted(set(policy_args) - {"*", args.policy})
        if unknown:
            parser.error(f"--policy-arg names {unknown[0]}, but this command exports {args.policy}")
        policy_args = {**policy_args.get("*", {}), **policy_args.get(args.policy, {})}
        if args.verify and args.verify_episodes < 2:
            parser.error("--verify-episodes must be at least 2: parity allows one episode of difference per combo")
        result = export_policy(
            args.policy, out=args.out, checkpoint=args.checkpoint, backbone=args.backbone,
            backbone_path=args.backbone_path, clip_path=args.clip_path, key_map=args.key_map, config=args.config,
            fp16=args.fp16, head_only=args.head_only,
            window_size=args.window_size, execution=args.execution, action_dim=args.action_dim, seed=args.seed,
            opset=args.opset, check=not args.no_check, observations=args.observations,
            check_steps=args.check_steps, latency_budget_ms=args.latency_budget_ms,
            latency_steps=args.latency_steps, num_threads=args.threads, policy_args=policy_args,
            device=source.get("device", "cpu"))
    except ParityError as exc:
        print(f"numerical check FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {result.model_path} ({result.size_mb:.1f} MB, {result.kind}, {result.precision}, "
          f"export {result.export_s:.1f} s) + {result.sidecar_path.name}")
    if result.parity is not None:
        print(f"numerical check {result.parity.summary()}")
    status = 0
    for stats in result.latency.values():
        print(f"latency {stats.runtime:<22} p50 {stats.p50_ms:7.1f} ms  p95 {stats.p95_ms:7.1f} ms over "
              f"{stats.steps} steps: {stats.verdict} (budget {stats.budget_ms:g} ms)")
    if result.latency and result.latency["onnx"].verdict == "FAIL":
        status = 1
    if args.verify:
        latency_ms = args.verify_latency_ms
        if latency_ms is None:
            latency_ms = result.latency["onnx"].p95_ms if result.latency else 0.0
        report = verify_closed_loop(
            args.policy, result.model_path, args.out, latency_ms=latency_ms, episodes=args.verify_episodes,
            seed=args.seed, family=args.family,
            layouts=scenarios.names(family=args.family) if args.verify_layouts == ["all"] else args.verify_layouts,
            distances=scenarios.distances(args.family) if args.verify_distances == ["all"] else args.verify_distances,
            model_source=source, policy_args=policy_args, threads=args.threads)
        print(format_verify(report))
        status = max(status, EXIT_FAILED if report["verdict"] == "FAIL" else EXIT_OK)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
