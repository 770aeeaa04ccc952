"""Reinforcement-learning baseline: train a stable-baselines3 PPO policy on ``MobileVLA/BoxAvoid-v0`` from state.

``python -m sim.train_rl --algo ppo --timesteps N --out PATH.zip [--layout 1box_hori_left] [--distance medium]
[--n-envs 2] [--seed 0] [--actuation keypress] [--action-dims 2|3] [--side-penalty 5] [--resume PATH.zip]``

then ``python -m sim.eval --policy sb3:PATH.zip --layouts LAYOUT --distances DISTANCE`` evaluates it unchanged.

What it is: a reference point for what a policy with *perfect state* (the ``state`` observation: ``x, y, yaw, vx,
vy, wz`` in the world frame, no camera, no instruction) can reach with the environment's own shaped reward.

**Limitation (read before comparing numbers):** ``state`` says where the robot is, not where the boxes, the goal
or the instructed side are. A state-only policy can therefore learn **one layout at one distance** only: it
memorises a path, and pose jitter (on, as in evaluation) makes it robust to the few centimetres the scene moves.
The model is trained on ``--layout``/``--distance`` and means nothing elsewhere. Making it layout-aware would
need an observation the environment does not give to an ``sb3:`` policy (``policies.sb3_policy`` feeds the
environment's ``state``/``image`` only), so it would not evaluate with ``sim.eval``; it is not attempted.

Design:

- Parallel environments: ``make_vec_env`` with ``SubprocVecEnv`` (``--n-envs``; ``DummyVecEnv`` for one), each
  built with ``obs_keys=("state",)`` and ``jitter=True``, seeded from ``--seed``. The policy is
  ``MultiInputPolicy`` on the ``Dict`` observation, exactly what the evaluation environment yields.
- Actions: keypress actuation by default (one step = one 0.4 s press in the direction of ``(linear_x,
  linear_y)``, as on the robot). ``--action-dims 2`` (default) trains on ``Box(-1.15, 1.15, (2,))`` =
  ``(linear_x, linear_y)``; the robot is holonomic so the spin keys are never needed, and a stop (success
  needs one) is then "both components inside the 0.15 dead zone" instead of all three. The training wrapper only
  appends ``angular_z = 0``, which ``policies`` does itself for any ``(2,)`` action, so evaluation is unchanged.
  ``--action-dims 3`` trains on the environment's full action space.
- Reward: the environment's (progress, step cost, +10 success, -10 collision/out of bounds), plus, in training
  only, ``-side_penalty`` once when the robot passes a box on the side the instruction does not ask for (the
  environment rewards either side; evaluation reports ``success_on_instructed_side``). ``--side-penalty 0``
  trains on the plain reward. ``--action-cost`` (off by default) charges the action's magnitude beyond the dead
  zone, see :class:`TrainingShaping`; it did not help in a short trial (the small means it produces make the
  sampled directions noisy), so it is only an option.
- Hard parts for PPO here: the box lies on the straight line to the goal (the progress reward leads into it and
  the -10 collision makes the policy stop short of it), and success needs an explicit stop, which a Gaussian
  policy samples only when its mean is near zero. Expect low success rates from short runs.
- Progress: SB3's progress bar when ``tqdm`` and ``rich`` import, and in any case a line every ``--log-every``
  steps (FPS, mean return, success rate of the recent episodes).
- The zip is saved atomically (temporary file in the same folder, then ``os.replace``), also on Ctrl-C;
  ``--resume`` continues training an existing zip. A small ``PATH.json`` next to it records the settings.
- After training, ``--check-episodes`` closed-loop episodes of the deterministic policy on its layout print the
  success rate (a quick sanity check, not an evaluation: use ``sim.eval``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import scenarios
from envs.keys import ACTION_LABEL, DEAD_ZONE

ENV_ID = "MobileVLA/BoxAvoid-v0"
ALGOS = ("ppo",)
DEFAULT_LAYOUT = "1box_hori_left"
DEFAULT_DISTANCE = "medium"


# ---------------------------------------------------------------------------------------------- wrappers
class TranslationOnly(gym.ActionWrapper):
    """Expose ``Box(-1.15, 1.15, (2,))`` = ``(linear_x, linear_y)``; the env receives ``angular_z = 0``.

    Evaluation needs no wrapper: ``policies.base.validate_action`` pads a ``(2,)`` action the same way.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        inner = env.action_space
        self.action_space = gym.spaces.Box(inner.low[:2], inner.high[:2], (2,), inner.dtype)

    def action(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        return np.array([a[0], a[1], 0.0], dtype=np.float32)


class TrainingShaping(gym.Wrapper):
    """Training-only reward terms (evaluation uses the plain environment reward).

    - ``side_penalty``: subtracted once when a box is passed on the side the instruction does not ask for.
    - ``action_cost``: ``action_cost * max(0, |(linear_x, linear_y)| - 0.15)`` per step. In keypress mode only the
      direction of the action moves the robot, so this changes no behaviour but keeps the Gaussian's mean close
      to the 0.15 dead zone, where a stop (needed for success) is one small sample away.
    """

    def __init__(self, env: gym.Env, side_penalty: float = 0.0, action_cost: float = 0.0) -> None:
        super().__init__(env)
        self.side_penalty = float(side_penalty)
        self.action_cost = float(action_cost)
        self._penalised = False

    def reset(self, **kwargs):
        self._penalised = False
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        reward = float(reward)
        if self.action_cost:
            a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[:2], -ACTION_LABEL, ACTION_LABEL)
            reward -= self.action_cost * max(0.0, float(np.hypot(a[0], a[1])) - DEAD_ZONE)
        if self.side_penalty and info.get("side_ok") is False and not self._penalised:
            self._penalised = True
            reward -= self.side_penalty
        return obs, reward, terminated, truncated, info


def make_env(
    layout: str = DEFAULT_LAYOUT,
    distance: str = DEFAULT_DISTANCE,
    actuation: str = "keypress",
    action_dims: int = 2,
    side_penalty: float = 0.0,
    max_steps: int | None = None,
    action_cost: float = 0.0,
) -> gym.Env:
    """One training environment: state observations, jitter on, the training-only wrappers."""
    import envs  # noqa: F401  (registers the environment; needed in spawned subprocesses)

    env = gym.make(
        ENV_ID, scenario=layout, distance=distance, obs_keys=("state",), actuation=actuation, jitter=True,
        max_steps=max_steps,
    )
    if side_penalty or action_cost:
        env = TrainingShaping(env, side_penalty=side_penalty, action_cost=action_cost)
    if action_dims == 2:
        env = TranslationOnly(env)
    return env


# ---------------------------------------------------------------------------------------------- callbacks
def _log_callback(log_every: int, stream=None):
    """A callback printing FPS, mean return and success rate of the last 100 episodes every ``log_every`` steps."""
    from stable_baselines3.common.callbacks import BaseCallback

    class LogCallback(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.statuses: deque[str] = deque(maxlen=100)
            self.returns: deque[float] = deque(maxlen=100)
            self.next_log = log_every
            self.start = time.perf_counter()
            self.start_steps = 0
            self.last_report = -1

        def _on_training_start(self) -> None:
            self.start, self.start_steps = time.perf_counter(), self.num_timesteps
            self.next_log = self.num_timesteps + log_every

        def _on_step(self) -> bool:
            for done, info in zip(self.locals["dones"], self.locals["infos"]):
                if done:
                    self.statuses.append(str(info.get("status")))
                    if "episode" in info:
                        self.returns.append(float(info["episode"]["r"]))
            if log_every > 0 and self.num_timesteps >= self.next_log:
                self.next_log += log_every
                self.report()
            return True

        def report(self) -> None:
            if self.num_timesteps == self.last_report:
                return
            self.last_report = self.num_timesteps
            elapsed = time.perf_counter() - self.start
            fps = (self.num_timesteps - self.start_steps) / max(elapsed, 1e-9)
            n = len(self.statuses)
            success = sum(s == "success" for s in self.statuses) / n if n else float("nan")
            ret = float(np.mean(self.returns)) if self.returns else float("nan")
            counts = ", ".join(f"{s} {list(self.statuses).count(s)}" for s in sorted(set(self.statuses)))
            print(
                f"[train_rl] {self.num_timesteps} steps, {elapsed:.0f} s, {fps:.0f} steps/s, last {n} episodes: "
                f"return {ret:.2f}, success {success:.0%} ({counts})",
                file=stream or sys.stdout, flush=True,
            )

    return LogCallback()


def progress_bar_available() -> bool:
    """SB3's progress bar needs both ``tqdm`` and ``rich``."""
    try:
        import rich  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- helpers
def atomic_save(model, path: Path) -> Path:
    """``model.save`` to a temporary zip in ``path``'s folder, then ``os.replace`` it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.zip")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def closed_loop_check(model, layout: str, distance: str, episodes: int, seed: int, actuation: str = "keypress",
                      max_steps: int | None = None) -> dict[str, Any]:
    """Run the deterministic policy on the plain environment (no training wrapper, state only).

    Returns ``{"episodes", "success_rate", "side_ok_rate", "statuses"}``. Seeds ``seed + 10_000 + i``, apart from
    the training seeds.
    """
    import envs  # noqa: F401

    env = gym.make(ENV_ID, scenario=layout, distance=distance, obs_keys=("state",), actuation=actuation,
                   jitter=True, max_steps=max_steps)
    statuses, side_ok = [], []
    try:
        for i in range(episodes):
            obs, info = env.reset(seed=seed + 10_000 + i)
            while True:
                action, _ = model.predict(obs, deterministic=True)
                action = np.asarray(action, dtype=np.float32).reshape(-1)
                if action.shape == (2,):
                    action = np.append(action, np.float32(0.0))
                obs, _, terminated, truncated, info = env.step(action)
                if terminated or truncated:
                    break
            statuses.append(info["status"])
            side_ok.append(info["side_ok"] is True)
    finally:
        env.close()
    n = max(len(statuses), 1)
    return {
        "episodes": len(statuses),
        "success_rate": sum(s == "success" for s in statuses) / n,
        "success_on_instructed_side": sum(s == "success" and ok for s, ok in zip(statuses, side_ok)) / n,
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
    }


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sim.train_rl",
        description=(
            "Train a stable-baselines3 PPO baseline on MobileVLA/BoxAvoid-v0 from the 'state' observation "
            "(x, y, yaw, vx, vy, wz). LIMITATION: the state does not say where the boxes, goal or instructed side "
            "are, so the policy learns ONE layout at ONE distance (--layout/--distance, with pose jitter); evaluate "
            "it only there: python -m sim.eval --policy sb3:PATH.zip --layouts LAYOUT --distances DISTANCE."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--algo", choices=ALGOS, default="ppo", help="RL algorithm")
    parser.add_argument("--timesteps", type=int, required=True, help="environment steps to train (this run)")
    parser.add_argument("--out", required=True, help="model zip to write (atomically), e.g. runs/ppo.zip")
    parser.add_argument("--layout", default=DEFAULT_LAYOUT, help="the one layout trained on (state-only policy)")
    parser.add_argument("--distance", default=DEFAULT_DISTANCE, help="the one distance preset trained on")
    parser.add_argument("--n-envs", type=int, default=2, help="parallel environments (SubprocVecEnv if > 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--actuation", choices=["keypress", "velocity"], default="keypress")
    parser.add_argument("--max-steps", type=int, default=None, help="episode length (default: the env's)")
    parser.add_argument("--action-dims", type=int, choices=[2, 3], default=2,
                        help="2: (linear_x, linear_y), angular_z = 0 (padded at evaluation too); 3: the full action")
    parser.add_argument("--side-penalty", type=float, default=5.0,
                        help="training-only penalty for passing a box on the side not instructed (0: off)")
    parser.add_argument("--action-cost", type=float, default=0.0,
                        help="training-only cost per unit of |(linear_x, linear_y)| beyond the 0.15 dead zone, "
                             "keeping a stop discoverable (keypress moves depend on the direction only; 0: off)")
    parser.add_argument("--resume", help="continue training this existing zip (its hyper-parameters are kept)")
    ppo = parser.add_argument_group("PPO hyper-parameters")
    ppo.add_argument("--n-steps", type=int, default=512, help="rollout steps per environment per update")
    ppo.add_argument("--batch-size", type=int, default=128)
    ppo.add_argument("--n-epochs", type=int, default=10)
    ppo.add_argument("--learning-rate", type=float, default=3e-4)
    ppo.add_argument("--gamma", type=float, default=0.99)
    ppo.add_argument("--gae-lambda", type=float, default=0.95)
    ppo.add_argument("--ent-coef", type=float, default=0.0)
    ppo.add_argument("--log-std-init", type=float, default=-0.5, help="initial log std of the Gaussian actions")
    ppo.add_argument("--net-arch", default="64,64", help="hidden layer sizes of the policy and value MLPs")
    parser.add_argument("--device", default="cpu", help="torch device (SB3 MLPs are fastest on CPU)")
    parser.add_argument("--log-every", type=int, default=10_000, help="print a progress line every N steps (0: off)")
    parser.add_argument("--no-progress-bar", action="store_true", help="no SB3 progress bar even if rich is there")
    parser.add_argument("--check-episodes", type=int, default=10, help="closed-loop check episodes after training")
    return parser


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.timesteps <= 0:
        parser.error(f"--timesteps must be positive, got {args.timesteps}")
    if args.n_envs < 1:
        parser.error(f"--n-envs must be at least 1, got {args.n_envs}")
    if args.n_steps < 2 or args.batch_size < 2 or args.n_epochs < 1:
        parser.error("--n-steps and --batch-size must be at least 2, --n-epochs at least 1")
    if args.batch_size > args.n_steps * args.n_envs:
        parser.error(f"--batch-size {args.batch_size} exceeds the rollout size --n-steps x --n-envs = "
                     f"{args.n_steps * args.n_envs}")
    if not 0.0 < args.gamma <= 1.0 or not 0.0 <= args.gae_lambda <= 1.0:
        parser.error("--gamma must be in (0, 1] and --gae-lambda in [0, 1]")
    if args.learning_rate <= 0:
        parser.error("--learning-rate must be positive")
    if args.side_penalty < 0 or args.action_cost < 0:
        parser.error("--side-penalty and --action-cost must be >= 0")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be at least 1")
    if args.check_episodes < 0:
        parser.error("--check-episodes must be >= 0")
    if args.layout not in scenarios.names():
        parser.error(f"unknown --layout {args.layout!r}; available: {', '.join(scenarios.names())}")
    if args.distance not in scenarios.DISTANCES:
        parser.error(f"unknown --distance {args.distance!r}; available: {', '.join(scenarios.DISTANCES)}")
    if not args.out.endswith(".zip"):
        parser.error(f"--out must name a .zip file, got {args.out!r}")
    if Path(args.out).is_dir():
        parser.error(f"--out {args.out!r} is a directory")
    if args.resume is not None and not Path(args.resume).is_file():
        parser.error(f"--resume {args.resume!r}: no such file")
    try:
        args.net_arch_list = [int(v) for v in args.net_arch.split(",") if v.strip()]
        if not args.net_arch_list or min(args.net_arch_list) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--net-arch must be comma-separated positive sizes like '64,64', got {args.net_arch!r}")


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Build the vectorised environments, train (or resume), save atomically, run the closed-loop check."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    torch.set_num_threads(1)  # the environment processes already use the cores; tiny MLPs gain nothing
    out = Path(args.out)
    env_kwargs = {
        "layout": args.layout, "distance": args.distance, "actuation": args.actuation, "action_dims": args.action_dims,
        "side_penalty": args.side_penalty, "max_steps": args.max_steps, "action_cost": args.action_cost,
    }
    vec_cls = SubprocVecEnv if args.n_envs > 1 else DummyVecEnv
    venv = make_vec_env(make_env, n_envs=args.n_envs, seed=args.seed, vec_env_cls=vec_cls, env_kwargs=env_kwargs)
    try:
        if args.resume:
            model = PPO.load(args.resume, env=venv, device=args.device)
            print(f"[train_rl] resuming {args.resume} at {model.num_timesteps} steps", flush=True)
        else:
            model = PPO(
                "MultiInputPolicy", venv, n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
                learning_rate=args.learning_rate, gamma=args.gamma, gae_lambda=args.gae_lambda,
                ent_coef=args.ent_coef, seed=args.seed, device=args.device, verbose=0,
                policy_kwargs={"log_std_init": args.log_std_init, "net_arch": args.net_arch_list},
            )
        start_steps = model.num_timesteps
        callback = _log_callback(args.log_every)
        use_bar = not args.no_progress_bar and progress_bar_available() and sys.stderr.isatty()
        started = time.perf_counter()
        interrupted = False
        try:
            model.learn(total_timesteps=args.timesteps, callback=callback, progress_bar=use_bar,
                        reset_num_timesteps=not args.resume)
        except KeyboardInterrupt:
            interrupted = True
            print("[train_rl] interrupted: saving what was learned", file=sys.stderr, flush=True)
        wall = time.perf_counter() - started
        if args.log_every:
            callback.report()
        atomic_save(model, out)
    finally:
        venv.close()
    trained = model.num_timesteps - start_steps
    print(f"[train_rl] saved {out} ({trained} steps this run, {model.num_timesteps} in all, {wall:.0f} s)", flush=True)
    meta: dict[str, Any] = {
        "algo": args.algo, "env": ENV_ID, "layout": args.layout, "distance": args.distance,
        "actuation": args.actuation, "action_dims": args.action_dims, "obs_keys": ["state"],
        "side_penalty": args.side_penalty, "action_cost": args.action_cost, "n_envs": args.n_envs, "seed": args.seed,
        "timesteps_this_run": int(trained), "timesteps_total": int(model.num_timesteps),
        "wall_time_s": round(wall, 1), "resumed_from": args.resume, "interrupted": interrupted,
    }
    if args.check_episodes and not interrupted:
        check = closed_loop_check(model, args.layout, args.distance, args.check_episodes, args.seed,
                                  args.actuation, args.max_steps)
        meta["check"] = check
        print(f"[train_rl] closed-loop check on {args.layout}/{args.distance}, {check['episodes']} episodes: "
              f"success {check['success_rate']:.0%} (on the instructed side {check['success_on_instructed_side']:.0%})"
              f", outcomes {check['statuses']}", flush=True)
    from sim.evaluation.report import atomic_write_text

    atomic_write_text(out.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")
    print(f"[train_rl] evaluate with: python -m sim.eval --policy sb3:{out} --layouts {args.layout} "
          f"--distances {args.distance}" + (f" --actuation {args.actuation}" if args.actuation != "keypress" else ""),
          flush=True)
    return meta


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    return train(args)


if __name__ == "__main__":
    main()
