"""Where the main job's time goes: ``python -m sim.eval --policy case2`` on a part of its sweep, one worker, under
cProfile, its time split by what it does.

``python bench/main_job_profile.py [--layouts 1box_hori_left 2box_vert_right] [--videos-per-combo 1|all]``

One worker, so every part is measured in this process (the main job runs two: its wall time is about the sum of
the per-episode parts / 2 plus the start-up and the reports). Parts (cumulative times of the functions named):
policy forward (``Policy.act``), onboard rendering (``Scene.render_onboard``), physics (the env's substeps), the shadow expert's labels and shortest path, videos (top-down frames,
composing, encoding), start-up (building the policy, the worker's env), reports (summary, plots, page).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from sim.eval import main as eval_main

#: part -> (file suffix, function name) of the functions whose cumulative time is the part.
PARTS = {
    "policy forward (act)": [("policies/base.py", "act")],
    "onboard rendering": [("envs/scene.py", "render_onboard")],
    "physics (env substeps)": [("envs/box_avoid.py", "_simulate")],
    "shadow expert (labels, shortest path)": [("policies/expert.py", "label"), ("policies/expert.py", "reference")],
    "video: top-down frames": [("sim/evaluation/video.py", "render_topdown_frames")],
    "video: composing": [("sim/evaluation/video.py", "compose_frames")],
    "video: encoding (mp4)": [("sim/evaluation/video.py", "write_video")],
    "start-up (policy build, worker env)": [("sim/evaluation/runner.py", "preflight"),
                                            ("sim/evaluation/runner.py", "init_worker")],
    "reports (summary, plots, index.html)": [("sim/evaluation/report.py", "summarize"),
                                             ("sim/evaluation/report.py", "write_summary"),
                                             ("sim/evaluation/report.py", "plot_trajectories"),
                                             ("sim/evaluation/html_report.py", "eval_page")],
}


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    return sum(row[3] for (path, _, func), row in stats.stats.items() if path.endswith(suffix) and func == name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", default=["1box_hori_left", "2box_vert_right"])
    parser.add_argument("--videos-per-combo", default="1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        argv = ["--policy", "case2", "--workers", "1", "--layouts", *args.layouts, "--out", str(out),
                "--videos-per-combo", args.videos_per_combo]
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.runcall(eval_main, argv)
        total = time.perf_counter() - start
        for video in Path("videos", out.name).glob("*.mp4"):
            video.unlink()
    stats = pstats.Stats(profile)
    rows = {part: sum(cumulative(stats, *f) for f in funcs) for part, funcs in PARTS.items()}
    episodes = 30 * len(args.layouts)
    print(f"case2, {len(args.layouts)} layouts x 3 distances x 10 = {episodes} episodes, 1 worker, videos per combo "
          f"{args.videos_per_combo}: {total:.1f} s in all (under cProfile)")
    print(f"{'part':50} {'s':>7} {'share':>6}")
    for part, seconds in rows.items():
        print(f"{part:50} {seconds:7.1f} {seconds / total:6.1%}")
    rest = total - sum(rows.values())
    print(f"{'rest (imports, episode loop, records)':50} {rest:7.1f} {rest / total:6.1%}")


if __name__ == "__main__":
    main()
