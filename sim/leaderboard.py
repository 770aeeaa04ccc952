"""One leaderboard across evaluation runs: ``python -m sim.leaderboard RUN_DIR... [--out DIR] [--allow-mixed]``.

Reads each run folder's ``leaderboard_row.json`` (written by ``sim.eval``), ranks the rows by success rate then SPL
and prints one markdown table: policy, architecture, checkpoint, family, sweep, success with its 95 % CI, SPL, top
failure, latency. With ``--out DIR`` it also writes ``DIR/leaderboard.md`` and ``DIR/leaderboard.html``. Runs of
different sweeps are refused (exit 2) unless ``--allow-mixed``, which marks each row with its sweep.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from foundations.files import atomic_write_text
from sim.cli import command
from sim.evaluation.leaderboard import load_rows, rank, to_html, to_markdown


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Print (and with ``--out`` write) the leaderboard; returns 0 (errors: exit 2 through :func:`command`)."""
    parser = argparse.ArgumentParser(prog="python -m sim.leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="sim.eval run folders")
    parser.add_argument("--out", metavar="DIR", help="also write leaderboard.md and leaderboard.html here")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="list runs of different sweeps together, each row marked with its sweep")
    args = parser.parse_args(argv)
    ranked = rank(load_rows(args.runs), allow_mixed=args.allow_mixed)
    markdown = to_markdown(ranked)
    print(markdown, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "leaderboard.md", markdown)
        atomic_write_text(out / "leaderboard.html", to_html(ranked))
        print(f"\nwrote {out / 'leaderboard.md'} and {out / 'leaderboard.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
