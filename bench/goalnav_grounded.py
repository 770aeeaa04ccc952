"""Share of a grounder + MLP policy's decisions that carry a box (``has_bbox``), in closed loop in the corridor at
the deployed cadence with the oracle grounder's default error model, against the robot's 90.5% (985/1088 decisions
of its 100-run test, ``TEAM_STACK_2026.md`` section 3); and why the others carry none, from the episode records
(``detections``, ``target_in_view``): the share of decisions with the basket in the camera's view, the box rate of
those after each episode's first (the cold start), and the box rate of the others (the server's false positives).

``python bench/goalnav_grounded.py [--policy exp73] [--episodes-per-position 6] [--path straight]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROBOT_SHARE = 985 / 1088
V6_POSITIONS = ("center", "weak_left", "strong_left", "weak_right", "strong_right")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="exp73", help="a grounder + MLP policy with bundled weights")
    parser.add_argument("--episodes-per-position", type=int, default=6)
    parser.add_argument("--path", default="straight", help="the corridor path of every episode")
    args = parser.parse_args()
    if args.episodes_per_position < 1:
        parser.error("--episodes-per-position must be >= 1")

    import gymnasium as gym

    import envs  # noqa: F401 - registers the environments
    from foundations.errors import MobileVLAError
    from policies.registry import make_policy
    from sim.evaluation.config import Latency
    from sim.evaluation.worker import run_policy_episode

    try:
        policy = make_policy(args.policy)
    except MobileVLAError as exc:
        parser.error(str(exc))
    if not hasattr(policy, "history"):
        parser.error(f"{args.policy} is not a grounder + MLP policy")
    records = []
    env = gym.make("MobileVLA/Corridor-v0")
    try:
        for seed, position in enumerate(V6_POSITIONS * args.episodes_per_position):
            record, _ = run_policy_episode(env, policy, seed, latency=Latency(),
                                           options={"scenario": position, "distance": args.path})
            records.append(record)
    finally:
        env.close()
    boxes = [found for r in records for found in r.detections]
    pairs = [(found, seen) for r in records for found, seen in zip(r.detections[1:], r.target_in_view[1:])]
    in_view = [found for found, seen in pairs if seen]
    out_of_view = [found for found, seen in pairs if not seen]
    share = sum(boxes) / len(boxes)
    print(f"{args.policy}: {sum(boxes)}/{len(boxes)} = {100 * share:.1f}% of decisions with a box "
          f"({len(records)} episodes, deployed cadence, oracle defaults); "
          f"the robot: {100 * ROBOT_SHARE:.1f}%, ratio {share / ROBOT_SHARE:.2f}")
    seen = sum(seen for r in records for seen in r.target_in_view)
    print(f"basket in the camera's view at {seen}/{len(boxes)} = {100 * seen / len(boxes):.1f}% of decisions; "
          f"after each episode's first: a box at {sum(in_view)}/{len(in_view)} of those in view, "
          f"{sum(out_of_view)}/{len(out_of_view)} of those out of view")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
