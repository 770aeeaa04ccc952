"""Per-step latency of the VLA policies (run by hand; not part of the tests).

For every head on the ``lite`` backbone it prints p50/p95 milliseconds per ``act()`` step, the part of
that step spent in the backbone and in the head, next to the backbone's forward pass alone on one frame,
all measured in the same run. With ``--backbone-path`` (a local Kosmos-2 folder or hub id) the full-size
``kosmos2`` backbone is measured too. Example::

    python bench/policy_latency.py --steps 50 --threads 1
    python bench/policy_latency.py --backbone-path ~/models/kosmos-2-patch14-224 --device cuda
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.backbones import make_backbone
from policies.catalog import EXECUTION_MODES
from policies.heads import HEADS as HEAD_CLASSES
from policies.vla import build_vla_policy

HEADS = tuple(h for h in HEAD_CLASSES if h != "robovlms")  # robovlms: bench/robovlms_latency.py
INSTRUCTION = "Navigate around obstacles and reach the front of the beverage bottle on the left"


def frames(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` random uint8 RGB frames ``(size, size, 3)``."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def pct(values: list[float]) -> tuple[float, float]:
    """(p50, p95) of ``values`` in the same unit."""
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def backbone_alone(backbone, images: list[np.ndarray], warmup: int) -> list[float]:
    """Milliseconds of ``encode_images`` on one frame, per call."""
    for img in images[:warmup]:
        backbone.encode_images(img[None])
    out = []
    for img in images:
        start = time.perf_counter()
        backbone.encode_images(img[None])
        out.append((time.perf_counter() - start) * 1e3)
    return out


def run_head(head: str, backbone, images: list[np.ndarray], warmup: int, execution: str, device: str) -> dict:
    """Step one policy through ``images`` after ``warmup`` steps; per-step timings of the measured part."""
    policy = build_vla_policy(head, backbone=backbone, execution=execution, device=device,
                              use_bundled=backbone.name == "lite")
    policy.reset(INSTRUCTION)
    for img in images[:warmup]:
        policy.act({"image": img, "instruction": INSTRUCTION, "state": np.zeros(6, np.float32)})
    policy.reset(INSTRUCTION)
    for img in images:
        policy.act({"image": img, "instruction": INSTRUCTION, "state": np.zeros(6, np.float32)})
    params = sum(p.numel() for p in policy.head.parameters())
    return {"step": policy.latencies_ms, "backbone": policy.backbone_latencies_ms,
            "head": policy.head_latencies_ms, "params": params, "calls": policy.num_predictions}


def report(backbone, heads: list[str], args: argparse.Namespace) -> None:
    images = frames(args.steps, args.image_size)
    alone = pct(backbone_alone(backbone, images, args.warmup))
    print(f"\nbackbone {backbone.name} (vision {backbone.vision_dim}-d, text {backbone.text_dim}-d) "
          f"on {backbone.device}: "
          f"forward alone, 1 frame {args.image_size}x{args.image_size}: p50 {alone[0]:.1f} ms  p95 {alone[1]:.1f} ms")
    print(f"{'head':<16}{'params':>10}{'calls':>7}{'step p50':>10}{'step p95':>10}"
          f"{'backbone p50':>14}{'head p50':>10}{'head p95':>10}")
    for head in heads:
        r = run_head(head, backbone, images, args.warmup, args.execution, args.device)
        step, bb, hd = pct(r["step"]), pct(r["backbone"]), pct([h for h in r["head"] if h > 0] or [0.0])
        print(f"{head:<16}{r['params'] / 1e6:>9.2f}M{r['calls']:>7}{step[0]:>10.1f}{step[1]:>10.1f}"
              f"{bb[0]:>14.1f}{hd[0]:>10.2f}{hd[1]:>10.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="measured steps per head (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured warm-up steps (default 5)")
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    parser.add_argument("--execution", default="first", choices=EXECUTION_MODES)
    parser.add_argument("--image-size", type=int, default=224, help="camera frame side in pixels (default 224)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--backbone-path", default=None,
                        help="also measure full-size kosmos2 from this local folder or hub id")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, "
          f"execution={args.execution}, {args.steps} steps after {args.warmup} warm-up")
    report(make_backbone("lite", device=args.device), args.heads, args)
    if args.backbone_path:
        report(make_backbone("kosmos2", path=args.backbone_path, device=args.device), args.heads, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
