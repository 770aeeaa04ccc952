"""Summarise and validate a folder of H5 episodes (``python -m sim.inspect DIR``).

Usage::

    python -m sim.inspect data/synth            # human-readable summary
    python -m sim.inspect data/synth --json     # the same as JSON
    python -m sim.inspect data/robot --strict   # also the synthetic-file checks (labels, names, instruction)

What is reported and checked: :mod:`sim.data.inspection`. Exit code: 0 all valid, 1 any invalid file, 2 bad
usage (no such folder, or no ``.h5`` file in it: one line, no report).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from foundations.files import json_text
from sim.cli import ArgumentParser, command
from sim.data.inspection import format_report, inspect_folder


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0 when every file is valid, 1 when one is not, 2 for a missing or empty folder."""
    p = ArgumentParser(prog="python -m sim.inspect", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="folder of episode_*.h5 files")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--strict", action="store_true",
                   help="also apply the synthetic-file checks (key labels, file names, language_instruction)")
    args = p.parse_args(argv)
    try:
        report = inspect_folder(args.folder, strict=args.strict)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report["files"] == 0:
        print(f"error: {args.folder}: no .h5 files in this folder", file=sys.stderr)
        return 2
    print(json_text(report, indent=2, sort_keys=True) if args.json else format_report(report))
    return 1 if report["invalid"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
