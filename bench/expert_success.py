"""Expert success rate over every layout x distance x seed (the README's figure); in the corridor, per position x
path, with the decisions per episode beside the team's V5 frame counts.

``python bench/expert_success.py [--family cup|basket|corridor] [--seeds 10] [--image-size 224x224] [--no-images]
[--cadence v5|v6-data|deployed] [--layouts ...]``

Images are rendered (as in evaluation) unless ``--no-images``; the expert only reads the true state. In the corridor,
``--layouts`` defaults to every position (V6 and V5); under ``--cadence v5`` the V5 path types are compared with
the frame counts of the team's V5 episodes (MoNaVLA ``scripts/sim/`` evaluation outputs, ``TEAM_STACK_2026.md``
section 1: one frame per decision, the final STOP included).
"""

from __future__ import annotations

import argparse
import collections
import time

import gymnasium as gym
import numpy as np

import envs
import scenarios
from policies import make_policy
from scenarios.corridor import v5_path_type
from sim.evaluation.episode import Episode

#: Frames per V5 episode by path type (a range where the team's outputs give one).
V5_FRAMES = {"center_straight": (15, 15), "left_straight": (19, 19), "right_straight": (19, 19),
             "center_left": (19, 19), "center_right": (19, 19), "left_right": (20, 20), "right_left": (20, 20),
             "left_left": (19, 20), "right_right": (17, 18)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--image-size", default="224x224")
    parser.add_argument("--no-images", action="store_true")
    parser.add_argument("--family", choices=scenarios.FAMILIES, default=scenarios.DEFAULT_FAMILY)
    parser.add_argument("--cadence", default=None, help="corridor: the cadence preset (default: deployed)")
    parser.add_argument("--layouts", nargs="+", default=None, help="default: every layout / position")
    args = parser.parse_args()

    keys = ("state",) if args.no_images else ("image", "instruction", "state")
    extra = {"cadence": args.cadence} if args.cadence else {}
    env = gym.make(envs.ENV_ID, obs_keys=keys, image_size=args.image_size, family=args.family, **extra)
    expert = make_policy("expert")
    outcomes, side_ok, steps, failures = collections.Counter(), 0, [], []
    per_combo: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    start = time.perf_counter()
    layouts = args.layouts or scenarios.names(family=args.family)
    distances = scenarios.distances(args.family)
    for layout in layouts:
        for distance in distances:
            for seed in range(args.seeds):
                episode = Episode(env, seed, {"scenario": layout, "distance": distance})
                expert.reset(episode.instruction, episode.reset_info)
                for _ in episode.run(expert.act):
                    pass
                record = episode.record()
                outcomes[record.status] += 1
                per_combo[layout, distance].append(record.steps)
                if record.success:
                    side_ok += bool(record.side_ok)
                    steps.append(record.steps)
                else:
                    failures.append(f"{layout}/{distance}/seed {seed}: {record.status}")
    total = sum(outcomes.values())
    elapsed = time.perf_counter() - start
    first, second = scenarios.axis_names(args.family)
    unit = "decisions" if args.family == "corridor" else "presses"
    timing = f", cadence {env.unwrapped.cadence}" if env.unwrapped.cadence is not None else ""
    print(f"{args.family} family{timing}: {total} episodes ({len(layouts)} {first}s x {len(distances)} {second}s x "
          f"{args.seeds} seeds) in {elapsed:.0f} s")
    print(f"success {outcomes['success']}/{total} = {outcomes['success'] / total:.1%}; outcomes {dict(outcomes)}")
    if args.family != "corridor":
        print(f"instructed side in {side_ok}/{outcomes['success']} successes")
    print(f"{unit} per success: mean {np.mean(steps):.1f}, min {min(steps, default=0)}, max {max(steps, default=0)}")
    if args.family == "corridor":
        print(f"\n{first}/{second}: success, mean {unit} (V5 path type: the team's frames, our deviation)")
        for (layout, distance), counts in per_combo.items():
            ok = sum(1 for f in failures if f.startswith(f"{layout}/{distance}/"))
            line = f"  {layout}/{distance}: {len(counts) - ok}/{len(counts)}, {np.mean(counts):.1f}"
            v5 = v5_path_type(layout, distance)
            if v5:
                lo, hi = V5_FRAMES[v5]
                mean = float(np.mean(counts))
                off = 0.0 if lo <= mean <= hi else (mean - lo if mean < lo else mean - hi) / (lo if mean < lo else hi)
                line += f"  ({v5}: {lo}{'' if lo == hi else f'-{hi}'} frames, {off:+.0%})"
            print(line)
    for line in failures:
        print("  failed:", line)


if __name__ == "__main__":
    main()
