"""Replay the human operators' key guides in their scenarios and report what happens.

``python -m sim.replay_patterns [--patterns FILE ...] [--seeds N] [--json]``

By default both guide files of ``scenarios/human/``: the 1-box guides and the 2-box ``medium``/``close`` ones
(``../shared/reference/core_patterns_{1box,2box}.json``). Each pattern name (``2box_hori_left__core__medium``; a bare
``1box_vert_left`` means medium) is played open loop with ``replay`` in its layout and distance. Names without an orientation (``1box_left__core__medium``)
are played in both the ``vert`` and the ``hori`` layout. Seed 0 is the nominal scene (no jitter); further
seeds jitter poses. This is how the robot speed and scenario geometry were calibrated (README).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence

import gymnasium as gym

from envs import ENV_ID
from policies import make_policy
from policies.replay import HUMAN_PATTERNS, load_patterns
from scenarios.errors import ConfigError
from sim.cli import command
from sim.evaluation.episode import Episode

_NAME = re.compile(r"^(?P<nbox>[12]box)_(?:(?P<orient>vert|hori)_)?(?P<side>left|right)"
                   r"(?:__(?P<kind>core|variant)__(?P<dist>close|medium|far))?$")
#: The operators' guide files (``{name: [key, ...]}``).
GUIDE_FILES = (HUMAN_PATTERNS, HUMAN_PATTERNS.with_name("core_patterns_2box.json"))


def pattern_scenarios(name: str) -> list[tuple[str, str]]:
    """``(layout, distance)`` pairs a pattern name refers to.

    Raises:
        ConfigError: a name that does not follow ``{1box|2box}_[vert|hori_]{left|right}[__core__{distance}]``.
    """
    m = _NAME.match(name)
    if m is None:
        raise ConfigError(f"cannot parse pattern name {name!r}")
    orients = [m["orient"]] if m["orient"] else ["vert", "hori"]
    return [(f"{m['nbox']}_{o}_{m['side']}", m["dist"] or "medium") for o in orients]


def replay(name: str, keys: list[str], layout: str, distance: str, seed: int) -> dict:
    """Play ``keys`` in ``layout``/``distance`` (seed 0: nominal scene) and return the final info summary."""
    env = gym.make(ENV_ID, scenario=layout, distance=distance, obs_keys=("state",), jitter=seed > 0,
                   max_steps=len(keys) + 1)
    policy = make_policy("replay", keys=keys)
    try:
        episode = Episode(env, seed)
        policy.reset(episode.instruction, episode.reset_info)
        for step in episode.run(policy.act) if keys else ():
            if step.index == len(keys) - 1:
                break
        record = episode.record()
    finally:
        env.close()
    return {
        "pattern": name, "layout": layout, "distance": distance, "seed": seed,
        "status": record.status or "running", "collision_free": record.collided_with is None,
        "passed_side": record.passed_side, "side_ok": bool(record.side_ok),
        "distance_to_goal": round(episode.info["distance_to_goal"], 3), "presses": record.steps,
    }


@command
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", nargs="+", default=[str(f) for f in GUIDE_FILES],
                        help="JSON files of name -> key list (default: the 1-box and 2-box guides)")
    parser.add_argument("--seeds", type=int, default=1, help="seed 0 = nominal scene, more seeds jitter poses")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    guides = {name: keys for path in args.patterns for name, keys in load_patterns(path).items()}

    rows = [
        replay(name, keys, layout, distance, seed)
        for name, keys in guides.items()
        for layout, distance in pattern_scenarios(name)
        for seed in range(args.seeds)
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'pattern':34} {'layout':16} {'dist':7} {'seed':>4} {'status':13} {'no-hit':6} {'side':6} {'ok':3} {'d_goal':>6}")
    for r in rows:
        print(
            f"{r['pattern']:34} {r['layout']:16} {r['distance']:7} {r['seed']:>4} {r['status']:13} "
            f"{'yes' if r['collision_free'] else 'NO':6} {str(r['passed_side']):6} {'yes' if r['side_ok'] else 'no':3} {r['distance_to_goal']:6.2f}"
        )
    free = sum(r["collision_free"] for r in rows)
    both = sum(r["collision_free"] and r["side_ok"] for r in rows)
    print(f"\n{len(rows)} replays: {free} collision-free, {both} collision-free and on the instructed side")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
