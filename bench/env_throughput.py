"""Environment throughput: env.step in keypress mode against a raw PyBullet loop, per renderer.

``python bench/env_throughput.py [--steps 300] [--scenario 2box_hori_left] [--image-size 224x224]
[--renderers tiny egl]``

Each renderer of ``--renderers`` (:mod:`envs.rendering`; egl is left out, with the reason, when EGL cannot start)
is measured in the same run: env steps/s, the raw loop's, the render-only limit (the onboard camera alone) and the
ratios env/raw and env/render-only; the last line says which renderer ``auto`` picks at this size and whether it
is the faster.

The raw loop uses the same scene (bodies, textures), the same number of physics substeps per press and the same
onboard render call, with none of the environment's bookkeeping (velocity ramp, contacts, scoring, info); the
ratio env/raw is the environment's efficiency (target >= 0.9). Both are measured in this run.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import envs
from envs.bullet import p
from envs.keys import key_to_action
from envs.rendering import choose_renderer, egl_error
from envs.settings import ImageSize


def measure(args, renderer: str) -> dict[str, float]:
    """``{"env", "raw", "render"}`` steps (frames) per second with ``renderer``."""
    env = gym.make(envs.ENV_ID, scenario=args.scenario, distance="far", image_size=args.image_size, max_steps=10**6,
                   renderer=renderer)
    base = env.unwrapped
    # A closed loop of presses (forward, left, back, right, spin, stop) keeps the robot near its start.
    keys = [key_to_action(k) for k in ("w", "a", "s", "d", "r", "t", "SPACE")]

    # Environment: reset on episode end (counted in; should not happen with this key loop).
    env.reset(seed=0)
    resets = 0
    start = time.perf_counter()
    for i in range(args.steps):
        *_, terminated, truncated, _ = env.step(keys[i % len(keys)])
        if terminated or truncated:
            env.reset(seed=i)
            resets += 1
    env_rate = args.steps / (time.perf_counter() - start)

    # Raw loop on the same client and scene: the same motions as constant velocities (no ramp, no contact
    # checks, no scoring), the same substeps and the same render call.
    env.reset(seed=0)
    scene, spec, robot = base.scene, base.spec_scene, base.robot
    cid = scene.client
    v, w = robot.speed, robot.angular_speed
    motions = [((v, 0, 0), 0), ((0, v, 0), 0), ((-v, 0, 0), 0), ((0, -v, 0), 0), ((0, 0, 0), w), ((0, 0, 0), -w), ((0, 0, 0), 0)]
    start = time.perf_counter()
    for i in range(args.steps):
        linear, spin = motions[i % len(motions)]
        p.resetBaseVelocity(scene.robot_id, linear, (0, 0, spin), physicsClientId=cid)
        for _ in range(base._press_substeps):
            p.stepSimulation(physicsClientId=cid)
        p.resetBaseVelocity(scene.robot_id, (0, 0, 0), (0, 0, 0), physicsClientId=cid)
        for _ in range(base._brake_substeps):
            p.stepSimulation(physicsClientId=cid)
        scene.render_onboard(spec, base.image_size)
    raw_rate = args.steps / (time.perf_counter() - start)

    # Render alone, for reference.
    start = time.perf_counter()
    for _ in range(args.steps):
        scene.render_onboard(spec, base.image_size)
    render_rate = args.steps / (time.perf_counter() - start)
    env.close()

    return {"env": env_rate, "raw": raw_rate, "render": render_rate, "resets": resets,
            "substeps": base._press_substeps + base._brake_substeps, "step_duration": base.step_duration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--scenario", default="2box_hori_left")
    parser.add_argument("--image-size", default="224x224")
    parser.add_argument("--renderers", nargs="+", choices=("tiny", "egl"), default=["tiny", "egl"])
    args = parser.parse_args()
    renderers = [r for r in args.renderers if r != "egl" or egl_error() is None]
    if len(renderers) < len(args.renderers):
        print(f"egl left out: EGL cannot start here ({egl_error()})")
    rows = {r: measure(args, r) for r in renderers}
    first = next(iter(rows.values()))
    print(f"image {args.image_size}, {first['substeps']} physics substeps per press, {args.steps} steps")
    print(f"{'renderer':9} {'env steps/s':>12} {'raw steps/s':>12} {'render-only':>12} {'env/raw':>8} "
          f"{'env/render':>11} {'x real time':>12} {'resets':>7}")
    for name, row in rows.items():
        print(f"{name:9} {row['env']:12.1f} {row['raw']:12.1f} {row['render']:12.1f} {row['env'] / row['raw']:8.3f} "
              f"{row['env'] / row['render']:11.3f} {row['env'] * row['step_duration']:12.1f} {row['resets']:7d}")
    print("(target env/raw >= 0.9)")
    auto = choose_renderer("auto", ImageSize.parse(args.image_size))
    faster = max(rows, key=lambda name: rows[name]["env"])
    print(f"auto picks {auto} at {args.image_size}; the faster here: {faster}"
          f" -> {'OK' if auto == faster or len(rows) < 2 else 'AUTO PICKS THE SLOWER'}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
