"""Per-step latency of the ``robovlms`` policy (Kosmos-2 action token + LSTM) against the robot's 100 ms loop.

``python bench/robovlms_latency.py [--size tiny|full] [--device cpu|cuda] [--steps 20] [--batch 1 8]``

- ``--size tiny``: the toy Kosmos-2 (``tiny-kosmos2``) with the team's sequence layout (prompt padded to 256
  tokens, 4 image tokens);
- ``--size full``: a full-size ``Kosmos2ForConditionalGeneration`` built from transformers' default config
  (= ``microsoft/kosmos-2-patch14-224``: 1.66 B parameters) with **random weights**, the toy tokenizer (its ids are
  valid in the real vocabulary; only the prompt's length matters for time), images 224 x 224, 64 image tokens,
  ``max_text_len`` 256: the same amount of work per step as the team's model.

Prints p50 / p95 of a whole ``act()`` step (image preprocessing, the language model over image + prompt + action
token, the LSTM over the history, post-processing) over ``--steps`` steps after a warm-up, its share in the
backbone, and the 100 ms verdict; then, for each ``--batch`` size, the backbone's forward time per call (several
frames in one call: the batching the policy uses with ``execution="all"`` / several environments). fp32 on CPU,
bf16 on CUDA (the LSTM head stays fp32).
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

from policies.backbones.robovlms import RoboVLMsBackbone, RoboVLMsSettings  # noqa: E402
from policies.heads import make_head  # noqa: E402
from policies.vla import PostProcessing, VLAPolicy  # noqa: E402

INSTRUCTION = "Navigate around obstacles and reach the front of the beverage bottle on the left"
BUDGET_MS = 100.0


def build(size: str, device: str) -> VLAPolicy:
    """The robovlms policy at ``size`` with random weights (head hidden 512 x 4 layers, chunk 10)."""
    from policies.backbones.tiny_kosmos2 import build_tiny_kosmos2, tiny_kosmos2_processor

    if size == "tiny":
        model, processor = build_tiny_kosmos2()
        settings = RoboVLMsSettings()
    else:
        from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

        start = time.perf_counter()
        with torch.device(device if device.startswith("cuda") else "cpu"):
            model = Kosmos2ForConditionalGeneration(Kosmos2Config())
        print(f"built a random full-size Kosmos-2 ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B "
              f"parameters) in {time.perf_counter() - start:.0f} s", flush=True)
        processor = tiny_kosmos2_processor()
        settings = RoboVLMsSettings()
    hidden = int(model.config.text_config.embed_dim)
    backbone = RoboVLMsBackbone(model, processor.tokenizer, torch.zeros(hidden), settings,
                                name=f"{size}-kosmos2", device=device)
    head = make_head("robovlms", hidden, 0, **settings.head_config())
    return VLAPolicy(head, backbone, window_size=settings.window_size, device=device,
                     postprocess=PostProcessing(dead_zone=False))


def pct(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, np.float64)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed act() steps (default 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="*", default=[1, 8], help="backbone batch sizes to time")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else (
        platform.processor() or platform.machine())
    policy = build(args.size, args.device)
    bb = policy.backbone
    print(f"robovlms {args.size} on {args.device} ({device_name}), torch {torch.__version__}, backbone "
          f"{bb.dtype}, {torch.get_num_threads()} CPU threads, prompt {bb.settings.max_text_len} tokens + "
          f"{bb.model.config.latent_query_num} image tokens + 1 action token", flush=True)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(args.steps + args.warmup)]
    obs = [{"image": f, "instruction": INSTRUCTION} for f in frames]
    policy.reset(INSTRUCTION)
    for o in obs[:args.warmup]:
        policy.act(o)
    sync()
    policy.reset(INSTRUCTION)
    for o in obs[args.warmup:]:
        policy.act(o)
    sync()
    p50, p95 = pct(policy.latencies_ms)
    share = sum(policy.backbone_latencies_ms) / sum(policy.latencies_ms)
    print(f"act() per step over {args.steps} steps: p50 {p50:.1f} ms, p95 {p95:.1f} ms "
          f"({share:.0%} in the backbone): {'PASS' if p95 <= BUDGET_MS else 'FAIL'} against the robot's "
          f"{BUDGET_MS:g} ms loop", flush=True)
    ids, mask = bb.tokenize(INSTRUCTION)
    for batch in args.batch:
        pixels = bb.preprocess(np.stack(frames[:batch]))
        times = []
        with torch.inference_mode():
            for i in range(args.warmup + 5):
                sync()
                start = time.perf_counter()
                bb.action_token_states(pixels, ids, mask)
                sync()
                if i >= args.warmup:
                    times.append((time.perf_counter() - start) * 1e3)
        b50, _ = pct(times)
        print(f"backbone forward, batch {batch}: p50 {b50:.1f} ms per call, {b50 / batch:.1f} ms per frame",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
