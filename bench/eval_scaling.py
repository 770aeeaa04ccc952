"""How the closed-loop evaluation scales (run by hand; not part of the tests).

1. Episodes per minute of one sweep run with 1 and 2 local workers and on the Ray backend (a local Ray instance
   with ``--ray-workers`` actors), each unbatched and with batched inference (``--batch on``: the VLA policies on
   one policy server), each as a ratio to 1 local worker measured in the same run (wall clock, from the first
   episode's setup to the last record; a fresh run folder each time).
2. Policy forwards per second of one VLA head on its backbone at batch 1, 4 and 16: one ``act_batch`` of ``B``
   environments' episodes (one new frame each through the backbone, then the head on each window: what the
   batched server does per batch), each as a ratio to batch 1.

Example::

    python bench/eval_scaling.py --policy expert --episodes-per-combo 2 --head lstm-recon --threads 1
    python bench/eval_scaling.py --head case1 --device cuda --skip-eval
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.vla import build_vla_policy
from sim.eval import build_parser, config_from_args
from sim.evaluation import evaluate

INSTRUCTION = "Navigate around obstacles and reach the front of the beverage bottle on the left"
BATCHES = (1, 4, 16)


def episodes_per_minute(argv: list[str], **kwargs) -> tuple[float, int, str]:
    """``(episodes/min, episodes, mean batch)`` of one fresh run of the sweep ``argv`` (``sim.eval`` flags); the
    mean batch of the batched policy server over the served policies ("-" without one)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_from_args(build_parser().parse_args([*argv, "--out", str(Path(tmp) / "run")]))
        start = time.perf_counter()
        result = evaluate(cfg, progress=False, plots=False, **kwargs)
        elapsed = time.perf_counter() - start
    batches = [re.search(r"mean batch ([\d.]+)", pol["provenance"].get("inference", ""))
               for pol in result.summary["policies"].values()]
    mean = ", ".join(m.group(1) for m in batches if m) or "-"
    return len(result.records) / elapsed * 60, len(result.records), mean


def forwards_per_second(head: str, batch: int, steps: int, device: str, seed: int = 0) -> float:
    """Closed-loop steps per second of ``batch`` environments sharing one ``head`` on the ``lite`` backbone: each
    step is one :meth:`~policies.vla.VLAPolicy.act_batch` of every environment's episode (one new frame each
    through the backbone, then the head on every window), as the batched policy server runs it."""
    policy = build_vla_policy(head, backbone="lite", device=device, use_bundled=False, seed=seed)
    rng = np.random.default_rng(seed)
    episodes = [policy.new_episode() for _ in range(batch)]
    for episode in episodes:
        policy.start_episode(episode, INSTRUCTION)
    timings = []
    for _ in range(steps + 2):  # two warm-up steps
        observations = [{"image": image, "instruction": INSTRUCTION}
                        for image in rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)]
        start = time.perf_counter()
        policy.act_batch(episodes, observations)
        timings.append(time.perf_counter() - start)
    return batch / float(np.median(timings[2:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", action="append", help="policies of the sweep (default expert)")
    parser.add_argument("--layouts", nargs="+", default=["1box_vert_left", "2box_hori_right"])
    parser.add_argument("--distances", nargs="+", default=["close"])
    parser.add_argument("--episodes-per-combo", type=int, default=2)
    parser.add_argument("--image-size", default="64x64")
    parser.add_argument("--ray-workers", type=int, default=2, help="actors of the Ray backend")
    parser.add_argument("--head", default="lstm-recon")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per batch size")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the forward pass")
    parser.add_argument("--skip-eval", action="store_true", help="forwards only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, device {args.device}\n")
    if not args.skip_eval:
        sweep = [*(f"--policy={p}" for p in args.policy or ["expert"]), "--layouts", *args.layouts,
                 "--distances", *args.distances, "--episodes-per-combo", str(args.episodes_per_combo),
                 "--image-size", args.image_size, "--record", "none"]
        rows = [("local, 1 worker", {"workers": 1}), ("local, 2 workers", {"workers": 2}),
                ("local, 2 workers, batched", {"workers": 2, "batch": "on"}),
                (f"ray, {args.ray_workers} actors", {"workers": args.ray_workers, "backend": "ray"}),
                (f"ray, {args.ray_workers} actors, batched", {"workers": args.ray_workers, "backend": "ray",
                                                              "batch": "on"})]
        base = None
        print("| backend | episodes | episodes/min | ratio to 1 local worker | mean batch |\n|---|---|---|---|---|")
        for label, kwargs in rows:
            rate, n, mean = episodes_per_minute(sweep, **kwargs)
            base = base or rate
            print(f"| {label} | {n} | {rate:.1f} | {rate / base:.2f} | {mean} |", flush=True)
        print()
    base = None
    print(f"| {args.head} on lite: batch | forwards/s | ratio to batch 1 |\n|---|---|---|")
    for batch in BATCHES:
        rate = forwards_per_second(args.head, batch, args.steps, args.device)
        base = base or rate
        print(f"| {batch} | {rate:.1f} | {rate / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
