"""Expert success rate and side compliance over every layout x distance x seed (the README's figure).

``python bench/expert_success.py [--family cup|basket] [--seeds 10] [--image-size 224x224]``

Images are rendered (as in evaluation) unless ``--no-images``; the expert only reads the true state.
"""

from __future__ import annotations

import argparse
import collections
import time

import gymnasium as gym

import envs
import scenarios
from policies import make_policy
from sim.evaluation.episode import Episode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--image-size", default="224x224")
    parser.add_argument("--no-images", action="store_true")
    parser.add_argument("--family", choices=scenarios.FAMILIES, default=scenarios.DEFAULT_FAMILY)
    args = parser.parse_args()

    keys = ("state",) if args.no_images else ("image", "instruction", "state")
    env = gym.make(envs.ENV_ID, obs_keys=keys, image_size=args.image_size, family=args.family)
    expert = make_policy("expert")
    outcomes, side_ok, presses, failures = collections.Counter(), 0, [], []
    start = time.perf_counter()
    layouts = scenarios.names(family=args.family)
    for layout in layouts:
        for distance in scenarios.DISTANCES:
            for seed in range(args.seeds):
                episode = Episode(env, seed, {"scenario": layout, "distance": distance})
                expert.reset(episode.instruction, episode.reset_info)
                for _ in episode.run(expert.act):
                    pass
                record = episode.record()
                outcomes[record.status] += 1
                if record.success:
                    side_ok += bool(record.side_ok)
                    presses.append(record.steps)
                else:
                    failures.append(f"{layout}/{distance}/seed {seed}: {record.status}")
    total = sum(outcomes.values())
    elapsed = time.perf_counter() - start
    print(f"{args.family} family: {total} episodes ({len(layouts)} layouts x {len(scenarios.DISTANCES)} distances x {args.seeds} seeds) in {elapsed:.0f} s")
    print(f"success {outcomes['success']}/{total} = {outcomes['success'] / total:.1%}; outcomes {dict(outcomes)}")
    print(f"instructed side in {side_ok}/{outcomes['success']} successes; presses per success: "
          f"mean {sum(presses) / max(1, len(presses)):.1f}, min {min(presses, default=0)}, max {max(presses, default=0)}")
    for line in failures:
        print("  failed:", line)


if __name__ == "__main__":
    main()
