"""Throughput of synthetic-episode generation and of the training loader.

Usage (from the repository root)::

    python bench/generate_throughput.py                          # 1280x720 like the robot, all cores
    python bench/generate_throughput.py --image-size 224x224 --episodes 12 --workers 2 --repeats 1

Measures in one run, for each renderer of ``--renderers`` (default ``tiny egl``; :mod:`envs.rendering`; a renderer
whose EGL cannot start is reported and left out), with the same worker processes (spawned pool, one env pair per
worker) and resolution; the last line says which renderer ``auto`` picks at this size and whether it is the faster:

1. **generate**: :func:`sim.data.generation.generate` into a fresh temp folder (expert planning on the camera-less env,
   camera replay; each frame converted to BGR and gzip-compressed into its chunk by a thread of the worker while the
   next is rendered; atomic write of the chunks): frames written per second;
2. **render-only limit**: replaying exactly the same episodes (keys and scene seeds read back from the files'
   ``sim_params``) on the same camera env, with no planning, compression or writing: frames rendered per
   second. ``generate / render-only`` is the efficiency the issue asks for (aim >= 0.7);
3. **rollout-only**: the same episodes with planning + camera + BGR frames but no compression or writing, to
   separate the expert's planning cost (not part of writing) from the writer's cost;
4. **loader**: :class:`sim.data.dataset.MobileVLAH5Dataset` windows per second on the generated files (window 8,
   chunk 10, 224x224 CLIP-normalised output, random sampling), in-process and through a ``DataLoader`` with
   ``--workers`` processes.

Wall-clock rates include each pool's start-up. On a shared machine wall-clock rates are noisy, so the phases are
interleaved ``--repeats`` times and the best rate of each is kept; frames per worker-CPU-second (summed
``time.process_time`` of the tasks: immune to other processes) are printed as well.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import torch  # noqa: E402

import scenarios  # noqa: E402
from envs.rendering import choose_renderer, egl_error  # noqa: E402
from envs.settings import ImageSize  # noqa: E402
from sim.data import generation as gen  # noqa: E402
from sim.data.dataset import MobileVLAH5Dataset  # noqa: E402


def _pool_run(cfg, fn, jobs, workers):
    """``(frames, wall s, worker CPU s)`` of ``fn`` over ``jobs`` in a fresh spawned pool."""
    start = time.perf_counter()
    if workers == 1:
        gen._init_worker(cfg)
        results = list(map(fn, jobs))
    else:
        with mp.get_context("spawn").Pool(workers, gen._init_worker, (cfg,)) as pool:
            results = list(pool.imap_unordered(fn, jobs))
    return sum(r[0] for r in results), time.perf_counter() - start, sum(r[1] for r in results)


def measure(args, size, renderer):
    """Best ``{phase: (frames/s, frames/CPU-s)}`` of the three phases with ``renderer``, the loader's windows/s and
    the run's counts."""
    best = {"generate": (0.0, 0.0), "render_only": (0.0, 0.0), "rollout_only": (0.0, 0.0)}

    def keep(name, frames, wall, cpu):
        fps, cpu_fps = frames / wall, frames / max(cpu, 1e-9)
        best[name] = (max(best[name][0], fps), max(best[name][1], cpu_fps))

    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        for rep in range(args.repeats):
            cfg = gen.GenerateConfig(out=Path(tmp) / "episodes", episodes=args.episodes,
                                     layouts=tuple(scenarios.names()), distances=tuple(scenarios.DISTANCES),
                                     image_size=size, seed=args.seed, workers=args.workers, renderer=renderer)
            if rep:
                shutil.rmtree(cfg.out)
            res = gen.generate(cfg, progress=False)
            frames = res["frames_written"]
            keep("generate", frames, res["elapsed_s"], res["worker_cpu_s"])
            jobs = []
            for path in sorted(cfg.out.glob("episode_*.h5")):
                with h5py.File(path) as f:
                    sp = json.loads(f.attrs["sim_params"])
                jobs.append((sp["episode_index"], sp["keys"], sp["scene_seed"]))
            keep("render_only", *_pool_run(cfg, gen._replay_work, jobs, args.workers))
            keep("rollout_only", *_pool_run(cfg, gen._rollout_work, [j[0] for j in jobs], args.workers))

        ds = MobileVLAH5Dataset(cfg.out, sampling="random", num_samples=args.loader_samples)
        start = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        loader_1 = len(ds) / (time.perf_counter() - start)
        dl = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=args.workers)
        start = time.perf_counter()
        n = sum(len(b["episode_id"]) for b in dl)
        loader_n = n / (time.perf_counter() - start)
        total_bytes = sum(p.stat().st_size for p in cfg.out.glob("episode_*.h5"))
    return best, loader_1, loader_n, len(jobs), frames, total_bytes / max(len(jobs), 1) / 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", default="1280x720", help="WIDTHxHEIGHT px (default: the robot's)")
    p.add_argument("--renderers", nargs="+", choices=("tiny", "egl"), default=["tiny", "egl"])
    p.add_argument("--episodes", type=int, default=6)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="interleaved repetitions; the best rate is kept")
    p.add_argument("--loader-samples", type=int, default=40)
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = p.parse_args(argv)
    size = ImageSize.parse(args.image_size, "--image-size")
    renderers = [r for r in args.renderers if r != "egl" or egl_error() is None]
    if len(renderers) < len(args.renderers):
        print(f"egl left out: EGL cannot start here ({egl_error()})")

    rows = {}
    for renderer in renderers:
        best, loader_1, loader_n, episodes, frames, mb = measure(args, size, renderer)
        g, r, o = best["generate"], best["render_only"], best["rollout_only"]
        rows[renderer] = {
            "renderer": renderer, "image_size": f"{size[0]}x{size[1]}", "workers": args.workers, "episodes": episodes,
            "frames": frames, "repeats": args.repeats,
            "generate_frames_per_s": g[0], "render_only_frames_per_s": r[0], "rollout_only_frames_per_s": o[0],
            "ratio_generate_vs_render_only": g[0] / r[0], "ratio_generate_vs_rollout_only": g[0] / o[0],
            "cpu_ratio_generate_vs_render_only": g[1] / r[1], "cpu_ratio_generate_vs_rollout_only": g[1] / o[1],
            "loader_windows_per_s_in_process": loader_1, "loader_windows_per_s_dataloader": loader_n,
            "mean_file_mb": mb,
        }
    first = next(iter(rows.values()))
    print(f"resolution {first['image_size']}, {args.workers} workers, {first['episodes']} episodes, "
          f"{first['frames']} frames, best of {args.repeats}")
    print(f"{'renderer':9} {'generate':>9} {'render-only':>12} {'rollout-only':>13} {'gen/render':>11} "
          f"{'gen/render CPU':>15} {'gen/rollout':>12}   (frames/s; aim gen/render >= 0.8)")
    for name, row in rows.items():
        print(f"{name:9} {row['generate_frames_per_s']:9.2f} {row['render_only_frames_per_s']:12.2f} "
              f"{row['rollout_only_frames_per_s']:13.2f} {row['ratio_generate_vs_render_only']:11.2f} "
              f"{row['cpu_ratio_generate_vs_render_only']:15.2f} {row['ratio_generate_vs_rollout_only']:12.2f}")
    for name, row in rows.items():
        print(f"{name}: {row['mean_file_mb']:.2f} MB per file; loader (window 8 x chunk 10 -> 224x224) "
              f"{row['loader_windows_per_s_in_process']:.1f} windows/s in-process, "
              f"{row['loader_windows_per_s_dataloader']:.1f} with DataLoader(num_workers={args.workers})")
    auto = choose_renderer("auto", size)
    faster = max(rows, key=lambda name: rows[name]["generate_frames_per_s"])
    print(f"auto picks {auto} at {first['image_size']}; the faster here: {faster}"
          f" -> {'OK' if auto == faster or len(rows) < 2 else 'AUTO PICKS THE SLOWER'}")
    if args.json:
        print(json.dumps(list(rows.values())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
