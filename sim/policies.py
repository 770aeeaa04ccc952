"""List the registered policies: ``python -m sim.policies [--json]``.

Prints one line per policy: its registry name and :func:`policies.describe` (for a VLA head: the team's class or
"our reconstruction" and the head's shapes; else the first line of its factory's docstring; or why it cannot
be imported, e.g. a missing optional dependency). Names taking a path are shown as ``NAME:PATH``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from policies import describe, names
from sim.cli import ArgumentParser, command

#: Policies whose registry name takes a file argument (``make_policy("sb3:PATH")``).
PATH_POLICIES = {"sb3": "sb3:PATH.zip", "onnx": "onnx:PATH.onnx"}


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Print the registry; returns 0."""
    parser = ArgumentParser(prog="python -m sim.policies", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print a JSON object name -> description")
    args = parser.parse_args(argv)
    table = {name: describe(name) for name in names()}
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    width = max(len(PATH_POLICIES.get(n, n)) for n in table)
    for name, text in table.items():
        print(f"{PATH_POLICIES.get(name, name):<{width}}  {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
