"""Regenerate the bundled weights from scratch: synthetic episodes -> one trained head per VLA variant.

``python -m sim.bundle [--episodes 400] [--seed 0] [--data data/pretrain] [--work runs/bundle] [--heads ...]``

1. :func:`sim.data.generation.generate` writes ``--episodes`` expert episodes (224x224, domain randomisation on;
   resumable).
2. :func:`sim.training.supervised.train` trains each head on the ``lite`` backbone (one shared feature cache: the first head
   caches every stream the others read, the team's recipe with ``--lr``).
3. The best checkpoint of each head is copied to ``policies/weights/<head>_lite.safetensors`` (+ ``.json``),
   stored in float16 (cast back to float32 on load), which :func:`policies.checkpoints.default_checkpoint` loads
   when no ``--checkpoint`` is given.

The team's heads keep the team's hidden sizes (only their input widths are the lite streams'); our
reconstructions (``*-recon``) use slimmed sizes (:data:`BUNDLED_HEAD_CONFIGS`) so that all of them stay under
25 MB together.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from policies.checkpoints import WEIGHTS_DIR, load_checkpoint, save_checkpoint, sidecar_path
from sim.cli import command

#: Config overrides of the bundled heads (empty: the team's sizes; feature widths come from the backbone).
BUNDLED_HEAD_CONFIGS: dict[str, dict[str, int]] = {
    "case1": {},
    "case1-v1": {},
    "case2": {},
    "case3": {},
    "hybrid": {},
    "pure-kosmos2": {},
    "case4-recon": {"hidden_dim": 128, "resampler_depth": 1},
    "lstm-recon": {"in_features": 128, "hidden_size": 128, "num_layers": 2},
    "clip-lstm-recon": {"stream_dim": 128, "hidden_size": 128, "num_layers": 1},
}


def _store(best: Path, target: Path) -> None:
    """Rewrite checkpoint ``best`` as ``target`` with float16 tensors (atomic, like every checkpoint write)."""
    from policies.heads import head_from_config

    ckpt = load_checkpoint(best)
    head = head_from_config(ckpt.head_name, ckpt.head_config)
    head.load_state_dict(ckpt.state_dict)
    save_checkpoint(target, head, ckpt.meta, backbone=ckpt.backbone, dtype=torch.float16)


@command
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="data/pretrain", help="episode folder (generated if incomplete)")
    parser.add_argument("--work", default="runs/bundle", help="training outputs")
    parser.add_argument("--heads", nargs="+", default=list(BUNDLED_HEAD_CONFIGS), choices=list(BUNDLED_HEAD_CONFIGS))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="learning rate (1e-3: the team's 1e-4 underfits 400 episodes; README)")
    parser.add_argument("--patience", type=int, default=12)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--weights-dir", default=str(WEIGHTS_DIR))
    args = parser.parse_args(argv)
    if args.episodes < 2 or args.workers < 1:
        parser.error("--episodes must be >= 2 and --workers >= 1")

    import scenarios
    from policies.heads import head_class
    from sim.data.generation import GenerateConfig, generate
    from sim.training.supervised import train

    start = time.perf_counter()
    res = generate(GenerateConfig(out=Path(args.data), episodes=args.episodes, layouts=tuple(scenarios.names()),
                                  distances=tuple(scenarios.DISTANCES), image_size=(224, 224), seed=args.seed,
                                  workers=args.workers))
    if res["failed"]:
        print(f"error: {len(res['failed'])} episode(s) could not be generated", flush=True)
        return 1
    generated = time.perf_counter() - start
    prefetch = tuple(dict.fromkeys(s for head in args.heads for s, _ in
                                   head_class(head).frame_inputs(head_class(head).config_class())))
    weights_dir = Path(args.weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for head in args.heads:
        t0 = time.perf_counter()
        summary = train(head, [args.data], Path(args.work) / head, backbone="lite", epochs=args.epochs, lr=args.lr,
                        patience=args.patience, seed=args.seed, head_overrides=BUNDLED_HEAD_CONFIGS[head],
                        resume=True, prefetch=prefetch)
        target = weights_dir / f"{head}_lite.safetensors"
        _store(Path(summary["checkpoint"]), target)
        size = target.stat().st_size + sidecar_path(target).stat().st_size
        results[head] = {**summary["best"], "epochs_run": summary["epochs_run"],
                         "seconds": round(time.perf_counter() - t0, 1), "size_mb": round(size / 1e6, 2)}
    total = time.perf_counter() - start
    print(json.dumps({"episodes": args.episodes, "seed": args.seed, "generate_seconds": round(generated, 1),
                      "total_seconds": round(total, 1), "heads": results,
                      "bundle_mb": round(sum(r["size_mb"] for r in results.values()), 2)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
