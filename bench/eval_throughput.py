"""Evaluation throughput: episodes/min with 1 and 2 workers against the episode work measured alone.

``python bench/eval_throughput.py [--policy expert] [--episodes-per-combo 2]``

"Alone" runs the same episodes in this process with no orchestration (no pool, no JSONL, no progress bar, no
summary), so ``wall(1 worker) / alone - 1`` is the orchestration overhead (target <= 10 %). Recording is off.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

from sim import eval as sim_eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="expert")
    parser.add_argument("--episodes-per-combo", type=int, default=2)
    args = parser.parse_args()
    common = ["--policy", args.policy, "--episodes-per-combo", str(args.episodes_per_combo), "--record", "none"]

    with tempfile.TemporaryDirectory() as tmp:
        config = sim_eval.build_config(sim_eval.parse_args([*common, "--out", str(Path(tmp) / "alone")]))
        tasks = sim_eval.plan_tasks(config)
        start = time.perf_counter()
        sim_eval._init_worker(config)
        for task in tasks:
            sim_eval.run_task(task)
        alone = time.perf_counter() - start
        sim_eval._WORKER["env"].close()

        walls = {}
        for workers in (1, 2):
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                sim_eval.main([*common, "--workers", str(workers), "--out", str(Path(tmp) / f"w{workers}")])
            walls[workers] = time.perf_counter() - start

    n = len(tasks)
    print(f"{n} episodes of {args.policy} (all layouts x distances x {args.episodes_per_combo})")
    print(f"episode work alone:  {alone:7.1f} s  ({alone / n:.2f} s/episode, {60 * n / alone:.0f} episodes/min)")
    for workers, wall in walls.items():
        print(f"sim.eval {workers} worker(s): {wall:7.1f} s  ({60 * n / wall:.0f} episodes/min)")
    print(f"orchestration overhead (1 worker vs alone): {walls[1] / alone - 1:+.1%}  (target <= 10%)")
    print(f"speed-up with 2 workers: {walls[1] / walls[2]:.2f}x")


if __name__ == "__main__":
    main()
