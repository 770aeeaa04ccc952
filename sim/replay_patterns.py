"""Replay the human operators' key guides in their scenarios and report what happens.

``python -m sim.replay_patterns [--patterns FILE ...] [--seeds N] [--family cup|basket] [--json]``

By default both guide files of ``scenarios/human/``: the 1-box guides and the 2-box ``medium``/``close`` ones
(``../shared/reference/core_patterns_{1box,2box}.json``). Each pattern is played open loop in its layout and distance
(:mod:`sim.calibration.guides`). Seed 0 is the nominal scene (no jitter); further seeds jitter poses. The ``cup``
layouts are calibrated to these guides by ``python -m sim.calibrate`` (README).

A guide without SPACE (17 presses) is a truncated episode: its status reads ``truncated``, and it passes when it runs
collision-free, on the instructed side of every box it reaches and ends nearer the goal than it started
(``progress``), never on where it stops (:func:`sim.calibration.guides.judge`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sim.calibration.guides import GUIDE_FILES, load_guides, passes, replay_all
from sim.cli import ArgumentParser, add_family_argument, command, int_in


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0 (2 for bad arguments, e.g. ``--family corridor``, which has no guides)."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", nargs="+", default=[str(f) for f in GUIDE_FILES],
                        help="JSON files of name -> key list (default: the 1-box and 2-box guides)")
    parser.add_argument("--seeds", type=int_in(1, 10_000), default=1, help="seed 0 = nominal scene, more seeds jitter poses")
    add_family_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.family == "corridor":
        parser.error("the corridor family has no operator key guides (they were driven around boxes: --family cup "
                     "or basket); its expert's decisions against the team's V5 frame counts: python "
                     "bench/expert_success.py --family corridor --cadence v5")
    rows = replay_all(load_guides(args.patterns), args.seeds, family=args.family)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'pattern':34} {'layout':16} {'dist':7} {'seed':>4} {'status':13} {'no-hit':6} {'side':6} {'ok':3} "
          f"{'d_goal':>6} {'progress':>8} {'pass':4}")
    for r in rows:
        print(
            f"{r['pattern']:34} {r['layout']:16} {r['distance']:7} {r['seed']:>4} {r['status']:13} "
            f"{'yes' if r['collision_free'] else 'NO':6} {str(r['passed_side']):6} {'yes' if r['side_ok'] else 'no':3} "
            f"{r['distance_to_goal']:6.2f} {r['start_distance'] - r['distance_to_goal']:8.2f} "
            f"{'yes' if passes(r) else 'NO':4}"
        )
    free = sum(r["collision_free"] for r in rows)
    truncated = [r for r in rows if not r["stops"]]
    print(f"\n{len(rows)} replays in the {args.family} family: {free} collision-free, {sum(map(passes, rows))} pass "
          f"(collision-free and on the instructed side; a truncated guide also nearer the goal); {len(truncated)} "
          f"replays of truncated guides (no SPACE), {sum(map(passes, truncated))} of them pass")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
