"""Calibrate the cup family's layouts to the operators' key guides (``python -m sim.calibrate``).

Usage::

    python -m sim.calibrate                        # search, verify in the simulator, write scenarios/cup/layouts/
    python -m sim.calibrate --dry-run              # the before/after table only; nothing written
    python -m sim.calibrate --press 0.15 0.16 0.17 0.18 0.19 0.20   # also search the press length

For every layout with a guide, the free geometry (box sizes, second-box offset, per distance: box and target
positions) is searched so that the guides run collision-free, pass on the named side and stop near the target
under pose jitter (:mod:`sim.calibration.search`); a guide without SPACE is a truncated episode, judged on what it
reaches (collision-free, on the named side, nearer the goal at its end: :func:`sim.calibration.guides.judge`), and a
layout without a ``far`` guide gets a ``far`` preset derived from its calibrated ``medium`` one (written with its
rule). Each guide is then replayed in the simulator with the present files and with the new ones (seed 0
nominal, ``--seeds - 1`` jittered) and the per-guide table is printed (and written as Markdown with ``--report``).
The layout files are written only if the simulator confirms that at least as many replays pass as before.
Exit 0: written (or ``--dry-run``); 1: the new geometry is not better (nothing written); 2: bad arguments.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import scenarios
from envs.robot import RobotConfig
from foundations.errors import EXIT_FAILED, EXIT_OK
from foundations.files import atomic_write_text
from sim.calibration.guides import GUIDE_FILES, load_guides
from sim.calibration.search import PRESS_RANGE, calibrate, guide_share, verify, write_layouts
from sim.cli import MAX_SEED, MAX_WORKERS, ArgumentParser, command, float_in, int_in


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sim.calibrate`` argument parser (:class:`sim.cli.ArgumentParser`)."""
    parser = ArgumentParser(prog="python -m sim.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--guides", nargs="+", default=[str(f) for f in GUIDE_FILES],
                        help="JSON files of name -> key list (default: scenarios/human/ 1-box and 2-box guides)")
    parser.add_argument("--press", nargs="+", type=float_in(0, 10), default=[RobotConfig().press_distance],
                        help="press lengths to search (m, within the spec's 0.15-0.2); default: the robot's "
                             "%(default)s")
    parser.add_argument("--samples", type=int_in(1, 100_000), default=40, help="pose-jitter draws per guide in the search")
    parser.add_argument("--maxiter", type=int_in(1, 100_000), default=150, help="differential-evolution generations per layout")
    parser.add_argument("--seeds", type=int_in(1, 10_000), default=5, help="simulator replays per guide in the table (0 nominal)")
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    parser.add_argument("--workers", type=int_in(1, MAX_WORKERS), default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=scenarios.family_dir("cup") / "layouts",
                        help="folder of the layout files to write (default: the cup family's)")
    parser.add_argument("--report", type=Path, help="also write the before/after table as Markdown here")
    parser.add_argument("--dry-run", action="store_true", help="print the table, write no layout file")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def table_markdown(guides, before, after, press: float, seeds: int) -> str:
    """The per-guide before/after table (Markdown)."""
    lines = ["| guide | layout | distance | before: pass | after: pass | after: end of the guide |",
             "|---|---|---|---|---|---|"]
    for g in guides:
        b, a = before[(g.name, g.layout)], after[(g.name, g.layout)]
        end = (f"stops {a['end_distance']:.2f} m from the goal" if g.stops else
               f"truncated (no SPACE): {a['progress']:.2f} m nearer the goal")
        lines.append(f"| {g.name} | {g.layout} | {g.distance} | {b['passed']}/{b['replays']} | "
                     f"{a['passed']}/{a['replays']} | {end} |")
    lines += ["", f"Guides collision-free on the named side, a truncated one (no SPACE) also nearer the goal at its "
              f"end (every name once, a name played in both orientations half in each; {seeds} replays per guide, "
              f"the first nominal): before {guide_share(before):.1%}, after "
              f"{guide_share(after):.1%}; replays: before {passed(before)}, after {passed(after)}. Press length "
              f"{press:.2f} m."]
    return "\n".join(lines)


def passed(table) -> str:
    """``"passed/replays"`` summed over a calibration table's guides (``{name: {"passed", "replays", ...}}``)."""
    return f"{sum(v['passed'] for v in table.values())}/{sum(v['replays'] for v in table.values())}"


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0 (layouts written, or ``--dry-run``), 1 when the simulator does not confirm the
    new geometry (nothing written), 2 for bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if any(not PRESS_RANGE[0] <= p <= PRESS_RANGE[1] for p in args.press):
        parser.error(f"--press must be within the spec's {PRESS_RANGE[0]}-{PRESS_RANGE[1]} m, got {args.press}")
    if args.samples < 1 or args.maxiter < 1 or args.seeds < 1 or args.workers < 1:
        parser.error("--samples, --maxiter, --seeds and --workers must be >= 1")
    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed must be in [0, 2**32), got {args.seed}")
    guides = load_guides(args.guides)
    robot = RobotConfig()
    press = round(robot.press_distance, 4)
    presses = sorted({round(p, 4) for p in args.press} | {press})  # the robot's is always searched
    results = calibrate(guides, presses, samples=args.samples, seed=args.seed, maxiter=args.maxiter,
                        workers=args.workers, robot=robot, progress=not args.no_progress)
    if len(presses) > 1:
        print("press length (m) | kinematic model: replays passing | objective")
        for p, rs in results.items():
            print(f"{p:.2f} | {sum(r.model_share for r in rs) / len(rs):.1%} | {sum(r.score for r in rs):.3f}")
        best = max(results, key=lambda p: sum(r.score for r in results[p]))
        print(f"best fit: {best:.2f} m; the layouts are written for the robot's {press:.2f} m "
              "(envs.robot.RobotConfig: speed x press_duration)")
    chosen = results[press]

    before = verify(guides, args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        write_layouts(chosen, guides, Path(tmp))
        after = verify(guides, args.seeds, scenario_dir=tmp)
    report = table_markdown(guides, before, after, press, args.seeds)
    print(report)
    if args.report:
        atomic_write_text(args.report, report + "\n")
    better = guide_share(after) >= guide_share(before)
    if args.dry_run:
        return EXIT_OK
    if not better:
        print("the simulator does not confirm the new geometry: nothing written")
        return EXIT_FAILED
    for path in write_layouts(chosen, guides, args.out):
        print(f"wrote {path}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
