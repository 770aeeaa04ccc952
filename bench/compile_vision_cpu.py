"""CPU cost and gain of ``compile_vision`` (:mod:`policies.backbones.compile`) on the offline backbones.

``python bench/compile_vision_cpu.py [--backbones tiny-kosmos2 lite] [--mode default] [--threads 1] [--repeats 50]``

For each backbone: the build time eager and with ``compile_vision=MODE`` (the difference is the compile + warm-up
overhead; a second run of the script hits inductor's on-disk cache, set ``TORCHINDUCTOR_CACHE_DIR`` to a fresh
folder for a cold compile), then the median milliseconds of ``encode_frames(frame, ("image",))`` at batch 1 for
both (the whole stream: preprocessing + tower), and the largest difference between them. Prints one line per
backbone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    from policies.backbones import make_backbone
    from policies.backbones.compile import COMPILE_MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["tiny-kosmos2", "lite"])
    parser.add_argument("--mode", default="default", choices=COMPILE_MODES[1:])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    frame = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    for name in args.backbones:
        start = time.perf_counter()
        eager = make_backbone(name, streams=("image",), cache=False)
        eager_build = time.perf_counter() - start
        start = time.perf_counter()
        compiled = make_backbone(name, streams=("image",), cache=False, compile_vision=args.mode)
        compiled_build = time.perf_counter() - start
        eager_ms = median_ms(lambda: eager.encode_frames(frame, ("image",)), args.repeats)
        compiled_ms = median_ms(lambda: compiled.encode_frames(frame, ("image",)), args.repeats)
        diff = float((compiled.encode_frames(frame, ("image",)) - eager.encode_frames(frame, ("image",))).abs().max())
        print(f"{name}: build eager {eager_build:.1f} s, with compile_vision={args.mode} {compiled_build:.1f} s "
              f"(compile + warm-up {compiled_build - eager_build:.1f} s); image stream at batch 1, {args.threads} "
              f"thread(s): eager {eager_ms:.2f} ms, compiled {compiled_ms:.2f} ms ({eager_ms / compiled_ms:.2f}x); "
              f"max abs diff {diff:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
