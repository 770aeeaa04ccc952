"""Reinforcement-learning baseline: a stable-baselines3 PPO policy on ``MobileVLA/BoxAvoid-v0`` from state (the
library of ``python -m sim.train_rl``).

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
- The zip is saved atomically (:func:`foundations.files.atomic_write`), also on Ctrl-C;
  ``--resume`` continues training an existing zip. A small ``PATH.json`` next to it records the settings.
- After training, ``--check-episodes`` closed-loop episodes of the deterministic policy on its layout print the
  success rate (a quick sanity check, not an evaluation: use ``sim.eval``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs import ENV_ID
from envs.keys import ACTION_LABEL, DEAD_ZONE
from foundations.files import atomic_write, atomic_write_json
from sim.evaluation.episode import Episode

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
    actuation: str | None = None,
    family: str = "cup",
    action_dims: int = 2,
    side_penalty: float = 0.0,
    max_steps: int | None = None,
    action_cost: float = 0.0,
) -> gym.Env:
    """One training environment of scenario ``family``: state observations, jitter on, the training-only
    wrappers; ``actuation`` None: the family's."""
    import envs  # noqa: F401  (registers the environment; needed in spawned subprocesses)

    env = gym.make(
        ENV_ID, scenario=layout, distance=distance, family=family, obs_keys=("state",), actuation=actuation,
        jitter=True, max_steps=max_steps,
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
    """``model.save`` through :func:`foundations.files.atomic_write` (the temporary file ends in ``.zip``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, suffix=".zip") as tmp:
        model.save(tmp)
    return path


def closed_loop_check(model, layout: str, distance: str, episodes: int, seed: int, actuation: str | None = None,
                      max_steps: int | None = None, family: str = "cup") -> dict[str, Any]:
    """Run the deterministic policy on the plain environment (no training wrapper, state only).

    Returns ``{"episodes", "success_rate", "side_ok_rate", "statuses"}``. Seeds ``seed + 10_000 + i``, apart from
    the training seeds.
    """
    env = gym.make(ENV_ID, scenario=layout, distance=distance, family=family, obs_keys=("state",),
                   actuation=actuation, jitter=True, max_steps=max_steps)

    def act(obs: dict[str, Any]) -> np.ndarray:
        action, _ = model.predict(obs, deterministic=True)
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        return np.append(action, np.float32(0.0)) if action.shape == (2,) else action

    statuses, side_ok = [], []
    try:
        for i in range(episodes):
            episode = Episode(env, seed + 10_000 + i)
            for _ in episode.run(act):
                pass
            record = episode.record()
            statuses.append(record.status)
            side_ok.append(record.side_ok is True)
    finally:
        env.close()
    n = max(len(statuses), 1)
    return {
        "episodes": len(statuses),
        "success_rate": sum(s == "success" for s in statuses) / n,
        "success_on_instructed_side": sum(s == "success" and ok for s, ok in zip(statuses, side_ok)) / n,
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
    }


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Build the vectorised environments, train (or resume), save atomically, run the closed-loop check."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    torch.set_num_threads(1)  # the environment processes already use the cores; tiny MLPs gain nothing
    out = Path(args.out)
    env_kwargs = {
        "layout": args.layout, "distance": args.distance, "actuation": args.actuation, "family": args.family,
        "action_dims": args.action_dims, "side_penalty": args.side_penalty, "max_steps": args.max_steps, "action_cost": args.action_cost,
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
        "algo": args.algo, "env": ENV_ID, "family": args.family, "layout": args.layout, "distance": args.distance,
        "actuation": args.actuation, "action_dims": args.action_dims, "obs_keys": ["state"],
        "side_penalty": args.side_penalty, "action_cost": args.action_cost, "n_envs": args.n_envs, "seed": args.seed,
        "timesteps_this_run": int(trained), "timesteps_total": int(model.num_timesteps),
        "wall_time_s": round(wall, 1), "resumed_from": args.resume, "interrupted": interrupted,
    }
    if args.check_episodes and not interrupted:
        check = closed_loop_check(model, args.layout, args.distance, args.check_episodes, args.seed,
                                  args.actuation, args.max_steps, args.family)
        meta["check"] = check
        print(f"[train_rl] closed-loop check on {args.layout}/{args.distance}, {check['episodes']} episodes: "
              f"success {check['success_rate']:.0%} (on the instructed side {check['success_on_instructed_side']:.0%})"
              f", outcomes {check['statuses']}", flush=True)
    atomic_write_json(out.with_suffix(".json"), meta)
    print(f"[train_rl] evaluate with: python -m sim.eval --policy sb3:{out} --family {args.family} "
          f"--layouts {args.layout} --distances {args.distance}" + (f" --actuation {args.actuation}" if args.actuation else ""),
          flush=True)
    return meta
