"""Environment throughput: env.step in keypress mode at 224x224 against a raw PyBullet loop.

``python bench/env_throughput.py [--steps 300] [--scenario 2box_hori_left]``

The raw loop uses the same scene (bodies, textures), the same number of physics substeps per press and the same
onboard render call, with none of the environment's bookkeeping (velocity ramp, contacts, scoring, info); the
ratio env/raw is the environment's efficiency (target >= 0.9). Both are measured in this run.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import pybullet as p

import envs
from envs.keys import key_to_action


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--scenario", default="2box_hori_left")
    parser.add_argument("--image-size", default="224x224")
    args = parser.parse_args()

    env = gym.make(envs.ENV_ID, scenario=args.scenario, distance="far", image_size=args.image_size, max_steps=10**6)
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

    substeps = base._press_substeps + base._brake_substeps
    print(f"image {args.image_size}, {substeps} physics substeps per press, {args.steps} steps, {resets} resets")
    print(f"env.step (keypress):  {env_rate:8.1f} steps/s")
    print(f"raw PyBullet loop:    {raw_rate:8.1f} steps/s")
    print(f"render only:          {render_rate:8.1f} frames/s")
    print(f"ratio env/raw:        {env_rate / raw_rate:8.3f}  (target >= 0.9)")
    print(f"simulated speed-up:   {env_rate * base.step_duration:8.1f}x real time")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
