"""Per-decision latency of the grounder + MLP policy ``exp73`` on this machine, against the robot's budget.

``python bench/goalnav_latency.py [--repeats 50] [--warmup 5] [--threads N] [--image-size 224x224] [--seed 0]
[--backbone auto|lite|kosmos2|tiny-kosmos2] [--checkpoint FILE --stage1 FILE --backbone-path DIR]``

On frames of the corridor env (``MobileVLA/Corridor-v0``, reset with ``--seed``, driven by the policy) it times, on
the CPU with ``--threads`` torch threads (default: every core), each part of one decision (median / p95 / mean ms
over ``--repeats`` calls after ``--warmup``): the vision feature (``backbone.encode_frames(image, ("image_mean",))``),
the head (``policy._classes()`` on a filled window), the grounder call (the oracle: no model) and a whole ``act`` with
``grounding_skip_n`` 1 (always grounds) and 3 (the robot's). It prints:

1. the table of components, each as a ratio to the baseline measured in the same run: a bare ``torch.nn.Linear``
   forward of the head's input width (and, with the bundled weights on ``lite``, the bundled ``exp49``'s ``act``);
2. per component: measured here ms | the robot's figure ms (``policy.component_latencies``: OWL-v2 1.902 s fp32 on
   the Jetson, Kosmos-2's vision 53.7 ms, MLP 1 ms; ``TEAM_STACK_2026.md`` section 3) | here/robot, and the ``act``
   rows against the deployed loop period (``Cadence.parse("deployed").period_s``);
3. the simulated time the evaluator charges per decision (sum of ``component_latencies``) for a grounding call and a
   cached one, and its mean over this run's skip-3 calls.

The header gives the load average: on a busy machine, more torch threads than free cores make the timings spiky.

Without ``--checkpoint`` it runs the bundled weights (``policies/weights/exp73_lite.safetensors``; missing: exit 2).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402

import envs  # noqa: E402
from envs.cadence import Cadence  # noqa: E402
from envs.settings import ImageSize  # noqa: E402
from foundations.errors import ConfigError, MobileVLAError  # noqa: E402
from policies.goalnav.policy import build_goalnav_policy, bundled_checkpoint  # noqa: E402
from sim.cli import BACKBONE_CHOICES, command  # noqa: E402

FRAMES = 8  # distinct corridor frames the timings cycle over


def timed(fn: Callable[[int], object], repeats: int, warmup: int) -> np.ndarray:
    """Milliseconds of ``fn(i)`` for ``i`` in ``range(repeats)``, after ``warmup`` unmeasured calls."""
    for i in range(warmup):
        fn(i)
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        out[i] = (time.perf_counter() - start) * 1e3
    return out


def corridor_frames(policy, image_size: str, seed: int) -> tuple[list[dict], str, dict]:
    """``FRAMES`` observations of the corridor env reset with ``seed`` and driven by ``policy``; its instruction and
    reset info (the oracle grounder reads the scene from the info)."""
    env = gym.make(envs.CORRIDOR_ENV_ID, image_size=image_size)
    obs, info = env.reset(seed=seed)
    instruction, frames = obs["instruction"], [obs]
    policy.reset(instruction, info)
    while len(frames) < FRAMES:
        obs, _, terminated, truncated, _ = env.step(policy.act(obs))
        if terminated or truncated:
            break
        frames.append(obs)
    env.close()
    return frames, instruction, info


def time_act(policy, frames: list[dict], instruction: str, info: dict, skip: int, args) -> tuple[np.ndarray, float]:
    """``act`` ms per call with ``grounding_skip_n = skip`` (one episode, frames in turn) and the share of calls that
    grounded."""
    policy.grounding_skip_n = skip
    policy.reset(instruction, info)
    grounded: list[bool] = []

    def call(i: int) -> None:
        policy.act(frames[i % len(frames)])
        grounded.append("grounder" in policy.step_components)

    ms = timed(call, args.repeats, args.warmup)
    return ms, float(np.mean(grounded[args.warmup:]))


def measure(args: argparse.Namespace) -> None:
    """Build the policy, time every component and the baseline, print the three tables."""
    policy = build_goalnav_policy("exp73", checkpoint=args.checkpoint, stage1=args.stage1, backbone=args.backbone,
                                  backbone_path=args.backbone_path)
    frames, instruction, info = corridor_frames(policy, args.image_size, args.seed)
    images = [f["image"] for f in frames]
    policy.reset(instruction, info)
    for f in frames[:policy.window]:  # fill the window for the head
        policy.act(f)
    width = policy.window * (4 + policy.proj_dim)
    linear, x = torch.nn.Linear(width, 8), torch.randn(1, width)
    grounder = policy.grounder
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
          f" ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}); {len(frames)} corridor frames {args.image_size} (seed {args.seed}); {args.repeats} repeats after "
          f"{args.warmup} warm-up\nexp73: {policy.provenance['weights']}, backbone {policy.backbone.name}, grounder "
          f"{type(grounder).__name__}, stop rule {policy.stop_mode}")
    rows: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        rows[f"baseline: nn.Linear({width}, 8)"] = timed(lambda i: linear(x), args.repeats, args.warmup)
        rows["vision (encode_frames)"] = timed(
            lambda i: policy.backbone.encode_frames(images[i % len(images)], ("image_mean",)), args.repeats,
            args.warmup)
        rows["mlp (_classes)"] = timed(lambda i: policy._classes(), args.repeats, args.warmup)
    rows["grounder (ground)"] = timed(lambda i: grounder.ground(images[i % len(images)], frames[i % len(frames)]
                                                                ["state"], i), args.repeats, args.warmup)
    shares = {}
    for skip in (1, 3):
        rows[f"act, skip {skip}"], shares[skip] = time_act(policy, frames, instruction, info, skip, args)
    if args.checkpoint is None and policy.backbone.name == "lite" and bundled_checkpoint("exp49") is not None:
        try:
            exp49 = build_goalnav_policy("exp49", backbone="lite")
            rows["exp49 act, skip 3"], _ = time_act(exp49, frames, instruction, info, 3, args)
        except MobileVLAError as exc:
            print(f"(exp49 left out: {exc})")
    base = float(np.median(rows[next(iter(rows))]))
    print(f"\n{'component':<28}{'median ms':>11}{'p95 ms':>10}{'mean ms':>10}{'x baseline':>12}")
    for name, ms in rows.items():
        print(f"{name:<28}{np.median(ms):>11.3f}{np.percentile(ms, 95):>10.3f}{ms.mean():>10.3f}"
              f"{np.median(ms) / base:>12.1f}")
    print(f"grounded calls: skip 1 {shares[1]:.0%}, skip 3 {shares[3]:.0%}")

    robot = policy.component_latencies
    period_ms = Cadence.parse("deployed").period_s * 1e3
    print(f"\n{'against the robot':<28}{'here ms':>10}{'robot ms':>10}{'here/robot':>12}")
    for comp, name in (("grounder", "grounder (ground)"), ("vision", "vision (encode_frames)"),
                       ("mlp", "mlp (_classes)")):
        here = float(np.median(rows[name]))
        print(f"{comp:<28}{here:>10.2f}{robot[comp] * 1e3:>10.1f}{here / (robot[comp] * 1e3):>12.3f}")
    for skip in (1, 3):
        here = float(rows[f"act, skip {skip}"].mean())
        print(f"{f'act skip {skip} (mean) / loop':<28}{here:>10.2f}{period_ms:>10.1f}{here / period_ms:>12.3f}")
    print(f"  (here: vision is {policy.backbone.name}, grounder {type(grounder).__name__}; the robot: Kosmos-2's "
          "vision tower, OWL-v2 fp32 on the Jetson)")

    full = sum(robot[c] for c in ("grounder", "vision", "mlp")) * 1e3
    cached = sum(robot[c] for c in ("vision", "mlp")) * 1e3
    print(f"\nsimulated time charged per decision: grounding {full:.1f} ms (grounder {robot['grounder'] * 1e3:.0f} ms "
          f"= {robot['grounder'] * 1e3 / full:.0%}), cached {cached:.1f} ms; deployed loop period {period_ms:.0f} ms; "
          f"this run's skip 3 calls ({shares[3]:.0%} grounded): mean {shares[3] * full + (1 - shares[3]) * cached:.1f} ms")


@command
def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, check the bundled weights, run :func:`measure`; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="measured calls per component (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured calls first (default 5)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch.set_num_threads (default: every core)")
    parser.add_argument("--image-size", default="224x224", help="camera frame WxH (default 224x224)")
    parser.add_argument("--seed", type=int, default=0, help="corridor env reset seed (default 0)")
    parser.add_argument("--backbone", default="auto", choices=BACKBONE_CHOICES,
                        help="the vision feature (auto: lite for the bundled weights, kosmos2 for a team file)")
    parser.add_argument("--checkpoint", default=None, help="the team's exp73 head file (default: bundled weights)")
    parser.add_argument("--stage1", default=None, help="the team's Stage 1 file (with --checkpoint)")
    parser.add_argument("--backbone-path", default=None, help="Kosmos-2 folder or hub id (kosmos2)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1, --warmup >= 0")
    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed must be in [0, 2**32), got {args.seed}")
    try:
        ImageSize.parse(args.image_size, "--image-size")
    except ConfigError as exc:
        parser.error(str(exc))
    if args.checkpoint is None and bundled_checkpoint("exp73") is None:
        raise ConfigError("no bundled exp73 weights (policies/weights/exp73_lite.safetensors): run "
                          "python -m sim.bundle --heads exp73 exp49")
    torch.set_num_threads(args.threads)
    measure(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
