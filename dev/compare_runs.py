"""The refactor check: are two evaluation runs the same, record for record?

``python dev/compare_runs.py RUN_A RUN_B`` compares the ``episodes.jsonl`` of two run folders field by field, in plan
order (policy, layout, distance, episode), leaving out what a clock measures (the policy's wall-clock latencies)
and where the video was written. It prints one line per differing record and ``N/N records identical``; exit 0
when all are, 1 otherwise, 2 for a folder without ``episodes.jsonl``.

Used before and after a refactor that must not change behaviour: the same ``sim.eval`` command run on the old and
the new tree (the command and its result are in the docs' development page).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Fields measured by a clock or naming an output path: they differ between two identical runs.
VOLATILE = {"latency_p50_ms", "latency_p95_ms", "video"}


def records(run: Path) -> dict[tuple, dict]:
    """``episodes.jsonl`` of ``run`` keyed by (policy, layout, distance, episode), volatile fields removed."""
    path = run / "episodes.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path}: no such file (not a run folder)")
    out = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out[(record["policy"], record["layout"], record["distance"], record["episode"])] = {
            k: v for k, v in record.items() if k not in VOLATILE}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args(argv)
    try:
        a, b = records(args.run_a), records(args.run_b)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    same = 0
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            print(f"{key}: only in {'RUN_A' if key in a else 'RUN_B'}")
        elif a[key] != b[key]:
            fields = sorted(f for f in set(a[key]) | set(b[key]) if a[key].get(f) != b[key].get(f))
            print(f"{key}: differ in {', '.join(fields)}")
        else:
            same += 1
    total = len(set(a) | set(b))
    print(f"{same}/{total} records identical")
    return 0 if same == total else 1


if __name__ == "__main__":
    sys.exit(main())
