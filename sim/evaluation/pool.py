"""Worker processes that survive the loss of a worker: the one pool every parallel tool uses (evaluation, data
generation).

``concurrent.futures.ProcessPoolExecutor`` (spawned processes) with at most ``workers`` tasks in flight. A worker
that dies (killed, out of memory, a native crash) breaks the pool: it is rebuilt, and the tasks that were in flight
run again one at a time, so the task that kills its worker is known; that task is retried at most ``max_retries``
times and then handed to ``failed`` with the cause, while the others finish normally. Whatever a task raises in
its worker is handed to ``failed`` too. Nothing here can wait for ever on a dead process (``multiprocessing.Pool``
does: it respawns a worker whose initializer raised, for ever, and waits for a result a killed worker never sends).
"""

from __future__ import annotations

import collections
import multiprocessing as mp
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Times a task is re-run after its worker process died before it is handed to ``failed``.
MAX_WORKER_RETRIES = 2


def run_tasks(fn: Callable[[T], R], tasks: Sequence[T], *, workers: int, failed: Callable[[T, str], R],
              initializer: Callable[..., None] | None = None, initargs: tuple = (),
              key: Callable[[T], Hashable] = lambda task: task, max_retries: int = MAX_WORKER_RETRIES
              ) -> Iterator[R]:
    """Yield ``fn(task)`` for every task (in completion order), computed on ``workers`` spawned processes (each set
    up by ``initializer(*initargs)``); a task whose worker keeps dying, or that raises in its worker, yields
    ``failed(task, cause)`` instead. Closing the iterator (or Ctrl-C) stops and terminates the workers."""
    context = mp.get_context("spawn")
    queue, isolated = collections.deque(tasks), collections.deque()
    deaths: collections.Counter = collections.Counter()

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs)

    pool, processes = new_pool(), {}
    in_flight: dict[Future, T] = {}
    try:
        while queue or isolated or in_flight:
            if isolated:
                if not in_flight:
                    task = isolated.popleft()
                    in_flight[pool.submit(fn, task)] = task
            else:
                while queue and len(in_flight) < workers:
                    task = queue.popleft()
                    in_flight[pool.submit(fn, task)] = task
            processes.update(getattr(pool, "_processes", None) or {})  # to read their exit codes after a break
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                try:
                    result = future.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                except BaseException as exc:  # noqa: BLE001 - whatever the task raised ends that task only
                    result = failed(in_flight[future], f"the worker raised {type(exc).__name__}: {exc}")
                del in_flight[future]
                yield result
            if not broken:
                continue
            pool.shutdown(wait=True, cancel_futures=True)
            codes = sorted({p.exitcode for p in processes.values() if p.exitcode not in (None, 0)})
            suspects = sorted(in_flight.values(), key=lambda t: str(key(t)))
            in_flight.clear()
            if len(suspects) == 1:  # alone in the pool: it killed its worker
                task = suspects[0]
                deaths[key(task)] += 1
                if deaths[key(task)] > max_retries:
                    yield failed(task, f"its worker process died {deaths[key(task)]} times while running it "
                                       f"(exit codes {codes}: killed, out of memory or a native crash)")
                else:
                    isolated.appendleft(task)
            else:
                isolated.extend(suspects)
            pool, processes = new_pool(), {}
    finally:
        processes.update(getattr(pool, "_processes", None) or {})
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes.values():
            if process.is_alive():
                process.terminate()


__all__ = ["MAX_WORKER_RETRIES", "run_tasks"]
