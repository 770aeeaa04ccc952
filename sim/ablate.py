"""Train and evaluate in closed loop every variant of an ablation spec file, and write one table.

Every variant is trained on the same synthetic data with the same seed and evaluated on the same sweep (the team's
training ideas: ``ablations/ideas.toml``).

``python -m sim.ablate SPEC.toml [--out runs/ablation-NAME] [--workers N] [--no-progress]``

The spec file, the output folder and resuming (run the same command again): :mod:`sim.training.ablation`; the
README's table: ``ablations/ideas.toml``. Prints the table (variant | offline validation MAE | closed-loop success
[95% CI] | SPL | collision | side compliance | train time), also written to ``OUT/table.md``. Exit 0: done; 1: some
evaluation episodes ended in ``error``; 2: a bad spec file or argument (one line naming it; nothing run); 130:
interrupted (run the command again to complete it).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

from foundations.errors import EXIT_FAILED, EXIT_OK
from sim.cli import MAX_WORKERS, ArgumentParser, command, int_in
from sim.training.ablation import load_spec, run_ablation


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sim.ablate`` argument parser (:class:`sim.cli.ArgumentParser`)."""
    parser = ArgumentParser(prog="python -m sim.ablate", description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="spec file (TOML), e.g. ablations/ideas.toml")
    parser.add_argument("--out", type=Path, help="output folder (default runs/ablation-<spec file name>)")
    parser.add_argument("--workers", type=int_in(1, MAX_WORKERS), default=os.cpu_count() or 1,
                        help="processes for generation and evaluation, torch threads for training (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0, 1 when an evaluation episode ended in an error, 2 for bad arguments or spec."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    spec = load_spec(args.spec)
    out = args.out or Path("runs") / f"ablation-{args.spec.stem}"
    start = time.perf_counter()
    result = run_ablation(spec, out, workers=args.workers, progress=not args.no_progress)
    print(result.table)
    print(f"{len(result.rows)} variants in {result.out} ({time.perf_counter() - start:.0f} s this run): table.md, "
          "results.json, variants/<name>/eval/index.html")
    if result.errors:
        print(f"{result.errors} evaluation episode(s) ended in an error: see variants/<name>/eval/summary.md")
    return EXIT_FAILED if result.errors else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
