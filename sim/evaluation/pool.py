"""Worker processes that survive the loss of a worker: the one pool every parallel tool uses (evaluation, data
generation).

``concurrent.futures.ProcessPoolExecutor`` (spawned processes) with at most ``workers`` tasks in flight. A worker
that dies (killed, out of memory, a native crash) breaks the pool: it is rebuilt, and the tasks that were in flight
run again one at a time, so the task that kills its worker is known; that task is retried at most ``max_retries``
times and then handed to ``failed`` with the cause, while the others finish normally. Whatever a task raises in
its worker is handed to ``failed`` too. Nothing here can wait for ever on a dead process (``multiprocessing.Pool``
does: it respawns a worker whose initializer raised, for ever, and waits for a result a killed worker never sends).

No worker outlives the process that started it: each arms a parent-death signal (:func:`die_with_parent`), so a
``kill -9`` of the main process ends its workers too, and with them the ``multiprocessing`` resource tracker (it
exits once every process holding its pipe has), and a caller reading the command's output (``communicate()``,
``| tee``) sees it end. The workers are found with the public ``multiprocessing.active_children()``.
"""

from __future__ import annotations

import collections
import ctypes
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Times a task is re-run after its worker process died before it is handed to ``failed``.
MAX_WORKER_RETRIES = 2
#: Seconds a worker has to end after SIGTERM before it is sent SIGKILL.
TERMINATE_GRACE_S = 5.0
#: ``prctl`` option that sends this process a signal when its parent dies (``<linux/prctl.h>``).
PR_SET_PDEATHSIG = 1


def die_with_parent(poll_s: float = 1.0) -> None:
    """End this process (SIGKILL) as soon as the process that started it ends, whatever ended it (``kill -9``
    included). On Linux the kernel does it (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere a daemon thread
    checks ``os.getppid()`` every ``poll_s`` seconds. A parent that died before this call ends this process at once.
    Does nothing in a process that was not started by ``multiprocessing``. On Linux the signal comes when the
    *thread* that started this process ends: :func:`run_tasks` starts its workers in the thread that iterates it,
    and ends them before that iteration returns."""
    parent = mp.parent_process()
    if parent is None:
        return
    try:
        armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        armed = False
    if not armed:
        def watch() -> None:
            while os.getppid() == parent.pid:
                time.sleep(poll_s)
            os._exit(1)

        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
    if os.getppid() != parent.pid:
        os._exit(1)


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    """A pool worker's set-up: it ends with its parent (:func:`die_with_parent`) and leaves Ctrl-C to it (the
    terminal sends SIGINT to every process of the group; the main process stops the pool), then ``initializer``."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def end_processes(processes: Iterable[mp.process.BaseProcess], grace_s: float = TERMINATE_GRACE_S) -> None:
    """Terminate ``processes`` (SIGTERM), wait up to ``grace_s`` seconds for each, kill (SIGKILL) those still alive
    and reap them all: none is left running or a zombie when this returns."""
    processes = list(processes)
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def run_tasks(fn: Callable[[T], R], tasks: Sequence[T], *, workers: int, failed: Callable[[T, str], R],
              initializer: Callable[..., None] | None = None, initargs: tuple = (),
              key: Callable[[T], Hashable] = lambda task: task, max_retries: int = MAX_WORKER_RETRIES
              ) -> Iterator[R]:
    """Yield ``fn(task)`` for every task (in completion order), computed on ``workers`` spawned processes (each set
    up by ``initializer(*initargs)``); a task whose worker keeps dying, or that raises in its worker, yields
    ``failed(task, cause)`` instead. Closing the iterator (or Ctrl-C) stops the workers and waits until they have
    ended (:func:`end_processes`); every worker also ends when this process ends (:func:`die_with_parent`)."""
    context = mp.get_context("spawn")
    queue, isolated = collections.deque(tasks), collections.deque()
    deaths: collections.Counter = collections.Counter()
    others = set(mp.active_children())  # children that are not this pool's workers

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                   initargs=(initializer, initargs))

    pool, processes = new_pool(), set()
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
            processes.update(set(mp.active_children()) - others)  # to read their exit codes after a break
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
            codes = sorted({p.exitcode for p in processes if p.exitcode not in (None, 0)})
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
            pool, processes = new_pool(), set()
    finally:
        processes.update(set(mp.active_children()) - others)
        pool.shutdown(wait=False, cancel_futures=True)
        end_processes(processes)


__all__ = ["MAX_WORKER_RETRIES", "die_with_parent", "end_processes", "run_tasks"]
