"""Evaluation throughput: episodes/min with 1 and 2 workers against the episode work measured alone.

``python bench/eval_throughput.py [--policy expert] [--episodes-per-combo 2]``

"Alone" runs the same episodes in this process with no orchestration (no pool, no JSONL, no progress bar, no
summary), so ``wall(1 worker) / alone - 1`` is the orchestration overhead (target <= 10 %). Recording is off.
Both go through the library (:func:`sim.evaluation.evaluate` and its worker functions).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import scenarios
from sim.evaluation import EvalConfig, evaluate, plan_tasks, worker
from sim.evaluation.config import policy_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="expert")
    parser.add_argument("--episodes-per-combo", type=int, default=2)
    args = parser.parse_args()

    def config(out: Path) -> EvalConfig:
        return EvalConfig(policies=[policy_spec(args.policy)],
                          sweep={"layouts": scenarios.names(), "distances": scenarios.DISTANCES,
                                 "episodes_per_combo": args.episodes_per_combo},
                          output={"out": out, "record": "none"})

    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp) / "alone")
        tasks = plan_tasks(cfg)
        start = time.perf_counter()
        worker.init_worker(cfg)
        for task in tasks:
            worker.run_task(task)
        alone = time.perf_counter() - start
        worker.close_worker()

        walls = {}
        for workers in (1, 2):
            start = time.perf_counter()
            evaluate(config(Path(tmp) / f"w{workers}"), workers=workers, progress=False)
            walls[workers] = time.perf_counter() - start

    n = len(tasks)
    print(f"{n} episodes of {args.policy} (all layouts x distances x {args.episodes_per_combo})")
    print(f"episode work alone:  {alone:7.1f} s  ({alone / n:.2f} s/episode, {60 * n / alone:.0f} episodes/min)")
    for workers, wall in walls.items():
        print(f"evaluate, {workers} worker(s): {wall:7.1f} s  ({60 * n / wall:.0f} episodes/min)")
    print(f"orchestration overhead (1 worker vs alone): {walls[1] / alone - 1:+.1%}  (target <= 10%)")
    print(f"speed-up with 2 workers: {walls[1] / walls[2]:.2f}x")


if __name__ == "__main__":
    main()
