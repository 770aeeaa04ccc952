"""Contact sheet of every layout x distance (the corridor: every basket position x path): first onboard frame and
a top-down view with the expert's path.

``python -m sim.preview --out preview.png [--family cup|basket|corridor] [--seed 0] [--domain-randomization] [--dpi 110]``
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import scenarios  # noqa: E402
from envs import ENV_ID  # noqa: E402
from envs.scene import Scene  # noqa: E402
from foundations.files import atomic_write  # noqa: E402
from policies import make_policy  # noqa: E402
from sim.cli import MAX_SEED, ArgumentParser, add_family_argument, add_renderer_argument, command, int_in  # noqa: E402
from sim.evaluation.episode import Episode, EpisodeRecord  # noqa: E402
from sim.evaluation.report import OUTCOME_COLOURS  # noqa: E402


def expert_rollout(env: gym.Env, seed: int, options: dict | None = None
                   ) -> tuple[dict, list[tuple[float, float]], EpisodeRecord]:
    """Run the expert once from ``env.reset(seed=seed, options=options)``; returns (first observation, path of
    (x, y) in m, the episode's record)."""
    episode = Episode(env, seed, options)
    first = episode.obs
    expert = make_policy("expert")
    expert.reset(episode.instruction, episode.reset_info)
    for _ in episode.run(expert.act):
        pass
    return first, [(x, y) for x, y, _ in episode.poses], episode.record()


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0 (2 for bad arguments, through :func:`sim.cli.command`)."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="preview.png", help="PNG to write")
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    parser.add_argument("--domain-randomization", action="store_true", help="randomise colours, floor, light")
    parser.add_argument("--scenario-dir", default=None, help="extra folder of layout TOML files")
    parser.add_argument("--dpi", type=int_in(20, 600), default=110, help="resolution of the PNG (default 110)")
    add_family_argument(parser)
    add_renderer_argument(parser)
    args = parser.parse_args(argv)
    if not 20 <= args.dpi <= 600:
        parser.error(f"--dpi must be in [20, 600], got {args.dpi}")

    layouts, distances = scenarios.names(args.scenario_dir, args.family), scenarios.distances(args.family)
    unit = "decisions" if args.family == "corridor" else "presses"
    top_size = (480, 270)
    env = gym.make(
        ENV_ID, scenario=layouts[0], render_mode="rgb_array", render_size=top_size,
        domain_randomization=args.domain_randomization, scenario_dir=args.scenario_dir, family=args.family,
        renderer=args.renderer,
    )
    fig, axes = plt.subplots(len(layouts), 2 * len(distances), figsize=(4.2 * len(distances), 1.75 * len(layouts)),
                             gridspec_kw={"width_ratios": [1, 1.78] * len(distances)})
    for row, layout in enumerate(layouts):
        for col, distance in enumerate(distances):
            first, path, record = expert_rollout(env, args.seed, {"scenario": layout, "distance": distance})
            top = env.render()
            project = Scene.topdown_projection(env.unwrapped.spec_scene, top_size)
            ax_cam, ax_top = axes[row, 2 * col], axes[row, 2 * col + 1]
            ax_cam.imshow(first["image"])
            ax_top.imshow(top)
            u, v = zip(*(project(x, y) for x, y in path))
            ax_top.plot(u, v, "-o", ms=2, lw=1.2, color=OUTCOME_COLOURS.get(record.status, "k"))
            gx, gy = project(*env.unwrapped.spec_scene.goal)
            ax_top.plot([gx], [gy], "x", color="yellow", ms=6, mew=2)
            side = "" if record.passed_side is None else f", side {record.passed_side}"
            ax_top.set_title(f"{layout} {distance}: {record.status}, {record.steps} {unit}{side}", fontsize=6)
            ax_cam.set_title(f"{layout} {distance}", fontsize=6)
            for ax in (ax_cam, ax_top):
                ax.set_xticks([])
                ax.set_yticks([])
    env.close()
    fig.suptitle(f"mobile-vla-sim preview, {args.family} family (seed {args.seed}): onboard camera at reset | "
                 "top-down with the expert's path", fontsize=9)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=args.dpi)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
