"""Synthetic H5 episodes in the robot collector's exact format (the library of ``python -m sim.generate``).

Each successful episode of the privileged expert (:mod:`policies.expert`) in ``MobileVLA/BoxAvoid-v0`` becomes
one file written by :func:`sim.data.h5format.write_episode`: in the 2025 collector's layout (format:
``ROBOT_AND_DATA.md`` section 3) for the box families, in the team's V6 layout for the ``corridor`` family (one
frame per decision at the cadence, ``v6-data`` by default: the joystick data's ~6 Hz; the joystick form of the
classes; consecutive stops as one frame; five injected stop frames: :mod:`sim.data.h5format`). The folder also gets
``dataset_index.csv`` (``episode_path,instruction``; paths relative to the folder) and ``dataset_statistics.json``
(see :func:`sim.data.inspection.dataset_statistics`), rebuilt from every episode file in the folder at the end of
each run; with ``output_format="lerobot"``, also ``lerobot/``: every episode of the folder as a LeRobot v3.0 dataset
(:func:`export_lerobot`), rebuilt the same way.

Determinism rule: episode ``i`` depends only on ``(settings, --seed, i)``, never on the worker that runs it or
on the order of completion:

- layout/distance: round-robin over ``layouts x distances`` (``combos[i % len(combos)]``, layouts outer);
- core/variant: with ``r`` the ``--variant-ratio``, round ``k = i // len(combos)`` of combo ``c = i % len(combos)``
  is a variant iff ``floor((k + 1) r + phi_c) > floor(k r + phi_c)``, ``phi_c = frac(c * 0.618...)``: every
  combo gets its share ``r`` of variants over the rounds (Bresenham), and the golden-ratio phases spread the
  variants of one round over the combos (the dataset's share is ``r`` up to one episode per combo);
- seeds: attempt ``k`` of episode ``i`` uses ``SeedSequence([seed, i, k])`` for the scene (``env.reset``) and the
  expert's perturbation generator. An attempt is retried (``k + 1``) if the expert fails, if it presses a
  backward key (``s``/``z``/``c``: the real data's linear_x is only ever 0 or 1.15; used anyway as a last
  resort when no attempt avoids them), or, for a variant, if its keys equal the canonical expert's on the same
  scene (it would not be a variant);
- the file name's timestamp is synthetic: day ``BASE_DATE + i // 3600``, hour from the scene's ``time_period``
  (:data:`PERIOD_HOURS`), minute/second ``= divmod(i % 3600, 60)``: unique per index, so names never collide
  within a run or across many written in the same wall-clock second, and consistent with ``time_period``.
  The wall-clock time of generation is not stored, so re-running gives byte-identical files.

Resuming: every file stores ``sim_episode_index`` and ``sim_fingerprint`` (a hash of the settings that shape
content). On start, files of the same fingerprint are skipped; a file from other settings stops the run with an
error (use another ``--out``). Files are written atomically (temp + rename); stale temp files of a killed run are
removed. Growing ``--episodes`` later adds episodes ``N..M-1`` without touching the others.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

import scenarios
from envs import ENV_ID
from envs.cadence import DEFAULT_MAX_TIME, Cadence
from envs.rendering import choose_renderer
from envs.settings import default_actuation
from foundations.errors import MobileVLAError
from foundations.files import atomic_write_json, atomic_write_text
from sim.data import h5format
from sim.evaluation.episode import Episode
from sim.evaluation.pool import run_tasks

#: Date of episode 0's synthetic timestamp (see the module doc); the corridor's: when V6 was collected.
BASE_DATE = datetime(2025, 12, 1)
BASE_DATES = {"corridor": datetime(2026, 7, 15)}
#: The corridor data's cadence unless told otherwise: the V6 joystick data's.
CORRIDOR_CADENCE = "v6-data"
#: Output formats: the H5 files alone, or also the LeRobot v3.0 dataset of them.
OUTPUT_FORMATS = ("h5", "lerobot")
#: Hour written for each ``time_period`` of the scene (collection_hour), chosen inside each period.
PERIOD_HOURS = {"dawn": 5, "morning": 9, "evening": 18, "night": 22}
#: Name of this generator in ``sim_generator``.
GENERATOR = "mobile-vla-sim sim.generate v1"


@dataclass(frozen=True)
class GenerateConfig:
    """Settings of a generation run; everything except ``out``/``workers``/``episodes`` shapes file content.

    Attributes:
        out: output folder. episodes: number of episodes (indices ``0..episodes-1``).
        layouts / distances: scenario names (``scenarios.names(family=family)``) and presets (``scenarios.DISTANCES``).
        family: the scenario family (``scenarios.FAMILIES``); ``basket`` files are named ``basket_...``.
        image_size: ``(width, height)`` px of the stored frames (robot: 1280x720).
        variant_ratio: share of variant episodes in [0, 1].
        seed: master seed. randomize: the env's ``domain_randomization``.
        epsilon / slack: the expert's perturbation for variants (probability per press / extra presses allowed).
        max_attempts: attempts per episode before it is reported as failed.
        max_steps: the env's truncation (presses) during generation; the ``class`` actuation's episodes (the
            corridor) end at the env's ``max_time`` instead.
        cadence: the corridor's decision cadence (:mod:`envs.cadence`; default ``v6-data``); None elsewhere.
        workers: processes (one env each).
        collector_format: write exactly what the robot's collector writes: no ``language_instruction`` and none of
            the ``sim_*`` attributes (so such a folder cannot be resumed: start it empty).
        output_format: ``h5``, or ``lerobot``: the H5 files and their LeRobot v3.0 dataset in ``out/lerobot``.
        renderer: ``tiny`` or ``egl`` (``auto`` is resolved on construction: :func:`envs.rendering.choose_renderer`);
            part of the content (the frames differ), so of the fingerprint; stored in ``sim_params["env"]`` and
            ``sim_renderer``.
    """

    out: Path
    episodes: int
    layouts: tuple[str, ...]
    distances: tuple[str, ...]
    family: str = scenarios.DEFAULT_FAMILY
    image_size: tuple[int, int] = (1280, 720)
    variant_ratio: float = 0.4
    seed: int = 0
    randomize: bool = True
    epsilon: float = 0.2
    slack: float = 1.0
    max_attempts: int = 8
    max_steps: int = 60
    cadence: str | None = None
    workers: int = 1
    collector_format: bool = False
    output_format: str = "h5"
    renderer: str = "auto"

    def __post_init__(self) -> None:
        """Resolve ``renderer``, and refuse a cadence the episodes could not end under before anything is written.

        Raises:
            ConfigError: a bad cadence, or a hold longer than the episode (:meth:`envs.cadence.Cadence.check_fits`).
        """
        object.__setattr__(self, "renderer", choose_renderer(self.renderer, self.image_size))
        if self.cadence is not None:
            Cadence.parse(self.cadence).check_fits(DEFAULT_MAX_TIME)

    @property
    def actuation(self) -> str:
        """The family's actuation (``class`` for the corridor, keypress otherwise)."""
        return default_actuation(self.family)

    def content_settings(self) -> dict[str, Any]:
        """The settings that determine episode ``i``'s content (JSON-serialisable)."""
        d = asdict(self)
        for k in ("out", "episodes", "workers", "collector_format", "output_format"):
            d.pop(k)
        if d["cadence"] is None:  # files of before the corridor have no such setting: same fingerprint
            d.pop("cadence")
        if d["renderer"] == "tiny":  # files of before the renderer setting were drawn by tiny: same fingerprint
            d.pop("renderer")
        d["layouts"], d["distances"], d["image_size"] = list(self.layouts), list(self.distances), list(self.image_size)
        return d

    def fingerprint(self) -> str:
        """Short hash of :meth:`content_settings` (stored in every file as ``sim_fingerprint``)."""
        blob = json.dumps(self.content_settings(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class EpisodePlan:
    """What episode ``index`` is: layout, distance, ``"core"``/``"variant"`` (from the index alone)."""

    index: int
    layout: str
    distance: str
    kind: str


_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def plan_episode(cfg: GenerateConfig, index: int) -> EpisodePlan:
    """Assignment of episode ``index`` (see the module doc's determinism rule)."""
    combos = [(lay, dist) for lay in cfg.layouts for dist in cfg.distances]
    rnd, c = divmod(index, len(combos))
    layout, distance = combos[c]
    r, phase = cfg.variant_ratio, (c * _GOLDEN) % 1.0
    variant = math.floor((rnd + 1) * r + phase + 1e-9) > math.floor(rnd * r + phase + 1e-9)
    return EpisodePlan(index, layout, distance, "variant" if variant else "core")


def attempt_seeds(seed: int, index: int, attempt: int) -> tuple[int, int]:
    """``(scene_seed, expert_seed)`` of attempt ``attempt`` of episode ``index`` (uint32 each)."""
    a, b = np.random.SeedSequence([seed, index, attempt]).generate_state(2)
    return int(a), int(b)


def episode_datetime(index: int, time_period: str, family: str = scenarios.DEFAULT_FAMILY) -> datetime:
    """Synthetic collection time of episode ``index`` (unique per index, hour matching ``time_period``)."""
    minute, second = divmod(index % 3600, 60)
    day = BASE_DATES.get(family, BASE_DATE) + timedelta(days=index // 3600)
    return day.replace(hour=PERIOD_HOURS.get(time_period, 12), minute=minute, second=second)


# --------------------------------------------------------------------------------------------- rollouts
class DatasetFolderError(MobileVLAError, RuntimeError):
    """The output folder holds an episode file of other settings, or one that cannot be read."""


class EpisodeFailed(MobileVLAError, RuntimeError):
    """No attempt of an episode succeeded (the message lists each attempt's outcome)."""


@dataclass
class Rollout:
    """One expert rollout: ``keys`` pressed (the last ``"SPACE"`` on success), final ``status``, the reset
    ``info`` (with ``"scene"``), the seeds used and, for a rendered replay, ``images`` RGB uint8 following the
    collector's frame semantics (``N = 1 + len(keys)``: the reset image, then the image each press was made on).
    """

    keys: list[str]
    status: str | None
    info: dict[str, Any]
    scene_seed: int
    expert_seed: int
    images: list[np.ndarray] = field(default_factory=list)
    duration_s: float = 0.0
    states: list[list[float]] = field(default_factory=list)


#: What a rollout's final key is on success: the collector's SPACE, the class actuation's STOP.
STOP_KEYS = frozenset({"SPACE", "STOP"})


def key_action(key: str) -> np.ndarray:
    """The action that executes ``key`` again: a robot key (:mod:`envs.keys`) or an action class
    (:mod:`envs.actions`); float32 ``(3,)``."""
    from envs.actions import CLASS_ACTIONS, class_action
    from envs.keys import key_to_action

    return class_action(key) if key in CLASS_ACTIONS else key_to_action(key)


#: Keys that drive backwards: the real data never has them (linear_x only takes 0 and 1.15, spec section 3).
BACKWARD_KEYS = frozenset({"s", "z", "c"})


def make_envs(cfg: GenerateConfig):
    """``(plan_env, render_env)`` of a worker: the expert is run on the camera-less ``plan_env`` (fast: retries
    cost no rendering), then its keys are replayed open-loop on ``render_env`` (same settings plus the camera)."""
    import gymnasium as gym

    common = dict(scenario=cfg.layouts[0], distance=cfg.distances[0], family=cfg.family, image_size=cfg.image_size,
                  domain_randomization=cfg.randomize)
    if cfg.actuation == "class":
        common.update(cadence=cfg.cadence or CORRIDOR_CADENCE)
    else:
        common.update(max_steps=cfg.max_steps)
    plan_env = gym.make(ENV_ID, obs_keys=("instruction", "state"), renderer="tiny", **common)  # draws nothing
    render_env = gym.make(ENV_ID, obs_keys=("image", "instruction", "state"), renderer=cfg.renderer, **common)
    return plan_env, render_env


def _options(plan: EpisodePlan) -> dict[str, str]:
    return {"scenario": plan.layout, "distance": plan.distance}


def expert_rollout(env, cfg: GenerateConfig, plan: EpisodePlan, attempt: int, perturb: bool) -> Rollout:
    """Run the expert once (no images needed) with attempt ``attempt``'s seeds; ``perturb`` uses the variant
    settings (``epsilon``, ``slack``), otherwise the canonical expert (``epsilon = 0``)."""
    from policies import make_policy

    scene_seed, expert_seed = attempt_seeds(cfg.seed, plan.index, attempt)
    episode = Episode(env, scene_seed, _options(plan))
    expert = make_policy("expert", epsilon=cfg.epsilon if perturb else 0.0, slack=cfg.slack, seed=expert_seed)
    expert.reset(episode.instruction, episode.reset_info)
    for _ in episode.run(expert.act):
        pass
    record = episode.record()
    return Rollout(record.keys, record.status, episode.reset_info, scene_seed, expert_seed,
                   duration_s=record.sim_time_s)


def render_rollout(env, cfg: GenerateConfig, plan: EpisodePlan, planned: Rollout,
                   on_frame: Callable[[int, np.ndarray], None] | None = None) -> Rollout:
    """Replay ``planned.keys`` open-loop on the camera env and collect the frames; ``on_frame(i, image)`` is called
    with each frame as soon as it is rendered (``i`` its index in ``images``; the writer compresses it meanwhile).

    Raises:
        RuntimeError: the replay diverged from the plan (other scene or outcome): the simulation must be
            deterministic for a given seed, so this is a bug, never silently written.
    """
    episode = Episode(env, planned.scene_seed, _options(plan))
    if planned.info and episode.scene != planned.info["scene"]:
        raise RuntimeError(f"episode {plan.index}: the camera env sampled another scene than the planning env")
    images = [episode.obs["image"]]
    if on_frame is not None:
        on_frame(0, images[0])
    presses = iter(planned.keys)
    for step in episode.run(lambda obs: key_action(next(presses))):
        images.append(step.obs["image"])
        if on_frame is not None:
            on_frame(len(images) - 1, images[-1])
        if step.index == len(planned.keys) - 1:
            break
    status = episode.status
    if status != planned.status or len(images) != len(planned.keys) + 1:
        raise RuntimeError(f"episode {plan.index}: replaying the expert's keys gave {status!r} after "
                           f"{len(images) - 1} presses, the plan {planned.status!r} after {len(planned.keys)}")
    return Rollout(planned.keys, status, episode.reset_info, planned.scene_seed, planned.expert_seed, images,
                   planned.duration_s, episode.states)


def run_episode(env, cfg: GenerateConfig, index: int) -> tuple[EpisodePlan, Rollout, int]:
    """Find the first qualifying attempt of episode ``index`` (no rendering); returns ``(plan, rollout, attempt)``.

    An attempt qualifies if the expert succeeds with a final SPACE, presses no backward key
    (:data:`BACKWARD_KEYS`), and, for a variant, its keys differ from the canonical expert's on the same scene.
    If no attempt qualifies, the first one that fails only the backward-key rule is used (``sim_params``
    records its ``attempt`` and ``keys``).

    Raises:
        EpisodeFailed: after ``cfg.max_attempts`` attempts.
    """
    plan = plan_episode(cfg, index)
    outcomes = []
    fallback: tuple[Rollout, int] | None = None
    for attempt in range(cfg.max_attempts):
        ro = expert_rollout(env, cfg, plan, attempt, perturb=plan.kind == "variant")
        if ro.status != "success" or ro.keys[-1] not in STOP_KEYS:
            outcomes.append(f"attempt {attempt}: {ro.status}")
        elif plan.kind == "variant" and ro.keys == expert_rollout(env, cfg, plan, attempt, perturb=False).keys:
            outcomes.append(f"attempt {attempt}: same keys as the canonical expert")
        elif BACKWARD_KEYS.intersection(ro.keys):
            outcomes.append(f"attempt {attempt}: backward key")
            fallback = fallback or (ro, attempt)
        else:
            return plan, ro, attempt
    if fallback is not None:  # rare (close obstacles): better a backward press than a missing episode
        return plan, fallback[0], fallback[1]
    raise EpisodeFailed(f"episode {index} ({plan.layout} {plan.distance} {plan.kind}): " + ", ".join(outcomes))


def episode_arrays(ro: Rollout) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images_bgr (N,H,W,3) uint8, actions (N,3) float32, events)`` in the collector's frame semantics."""
    return np.stack(ro.images)[..., ::-1], *episode_labels(ro)


def episode_labels(ro: Rollout) -> tuple[np.ndarray, list[str]]:
    """``(actions (N,3) float32, events)`` of :func:`episode_arrays` (the file stores all ``N`` images in order)."""
    from envs.keys import key_to_action

    actions = np.zeros((len(ro.keys) + 1, 3), np.float32)
    events = [h5format.EVENT_START]
    for i, key in enumerate(ro.keys, start=1):
        actions[i] = key_to_action(key)
        events.append(h5format.EVENT_STOP if key == "SPACE" else h5format.EVENT_PRESS)
    return actions, events


def v6_arrays(ro: Rollout) -> tuple[np.ndarray, np.ndarray, list[str], list[list[float]]]:
    """``(images_bgr (N,H,W,3) uint8, actions (N,3) float32, events, states)`` in the V6 dashboard's frame semantics:
    one frame per decision (the image it was made on) with the class in the joystick's form (:func:`envs.actions.
    joystick_action`), a STOP as ``joystick_neutral`` and consecutive STOPs as one frame (the dashboard
    de-duplicates them), then the last image :data:`~sim.data.h5format.STOP_INJECT_N` times with zeros and
    ``stop_inject``. ``states``: the robot's ``[x, y, yaw, vx, vy, wz]`` when each frame was taken (for ``sim_params``:
    the oracle grounder labels frames with them)."""
    indices, actions, events, states = v6_labels(ro)
    return np.stack([ro.images[i] for i in indices])[..., ::-1], actions, events, states


def v6_labels(ro: Rollout) -> tuple[list[int], np.ndarray, list[str], list[list[float]]]:
    """``(image indices, actions, events, states)`` of :func:`v6_arrays`: the file's frames are ``ro.images[i]`` for
    ``i`` in the indices (:func:`v6_frame_indices`)."""
    from envs.actions import joystick_action

    indices = v6_frame_indices(ro.keys)
    decisions = indices[:-h5format.STOP_INJECT_N]
    actions = [joystick_action(ro.keys[i]) for i in decisions] + [np.zeros(3, np.float32)] * h5format.STOP_INJECT_N
    events = [h5format.V6_EVENT_NEUTRAL if ro.keys[i] == "STOP" else h5format.V6_EVENT_JOYSTICK for i in decisions]
    events += [h5format.V6_EVENT_INJECT] * h5format.STOP_INJECT_N
    states = [[round(float(v), 5) for v in ro.states[i]] for i in indices]
    return indices, np.stack(actions).astype(np.float32), events, states


def v6_frame_indices(keys: list[str]) -> list[int]:
    """Which of a rollout's ``1 + len(keys)`` images the V6 file stores, in order (:func:`v6_arrays`): the image of
    each decision but a STOP right after a STOP, then the last image :data:`~sim.data.h5format.STOP_INJECT_N` times."""
    kept = [i for i, key in enumerate(keys) if not (key == "STOP" and i and keys[i - 1] == "STOP")]
    return kept + [len(keys)] * h5format.STOP_INJECT_N


def generate_one(envs_pair, cfg: GenerateConfig, index: int) -> dict[str, Any]:
    """Generate and atomically write episode ``index`` into ``cfg.out`` using ``(plan_env, render_env)`` from
    :func:`make_envs`; returns ``{"index", "file", "frames", "attempt"}``.

    Raises:
        EpisodeFailed: no qualifying attempt.
    """
    plan_env, env = envs_pair
    plan, planned, attempt = run_episode(plan_env, cfg, index)
    # The file's frames are known from the keys: each is compressed into its chunk while the next is rendered.
    order = (v6_frame_indices(planned.keys) if cfg.actuation == "class" else list(range(len(planned.keys) + 1)))
    needed = set(order)
    with h5format.FrameEncoder() as encoder:
        ro = render_rollout(env, cfg, plan, planned,
                            on_frame=lambda i, image: encoder.add(i, image) if i in needed else None)
        images_bgr = encoder.frames(order)
    scene = ro.info["scene"]
    when = episode_datetime(index, scene["time_period"], cfg.family)
    step_duration = float(env.unwrapped.step_duration)
    if cfg.actuation == "class":  # the corridor: the V6 layout
        name = h5format.v6_filename(when, plan.layout, plan.distance)
        _, actions, events, states = v6_labels(ro)
        attrs = h5format.v6_attributes(Path(name).stem, ro.duration_s, len(events), plan.layout, plan.distance,
                                       scene["time_period"], when)
    else:
        name = h5format.episode_filename(when, plan.layout, plan.kind, plan.distance, cfg.family)
        actions, events = episode_labels(ro)
        attrs = h5format.collector_attributes(
            episode_name=Path(name).stem, total_duration=len(ro.keys) * step_duration, num_frames=len(events),
            obstacle_layout_type=plan.layout.split("_")[1], time_period=scene["time_period"], when=when,
        )
    sim_params = {
        "scene": scene,
        "scene_seed": ro.scene_seed,
        "expert": {"name": "expert", "epsilon": cfg.epsilon if plan.kind == "variant" else 0.0,
                   "slack": cfg.slack, "seed": ro.expert_seed},
        "env": {"id": ENV_ID, "scenario": plan.layout, "distance": plan.distance, "family": cfg.family,
                "image_size": list(cfg.image_size), "renderer": env.unwrapped.renderer,
                "domain_randomization": cfg.randomize,
                "max_steps": cfg.max_steps, "step_duration_s": step_duration,
                "cadence": ro.info["control"]["cadence"] if cfg.actuation == "class" else None},
        "episode_index": index, "attempt": attempt, "kind": plan.kind, "keys": ro.keys,
        "settings": cfg.content_settings(),
    }
    if cfg.actuation == "class":  # what the oracle grounder needs to label the frames: states and the camera
        sim_params.update(states=states, control=ro.info["control"])
    extra = {
        "sim_params": sim_params,
        "sim_episode_index": index,
        "sim_fingerprint": cfg.fingerprint(),
        "sim_generator": GENERATOR,
        "sim_seed": cfg.seed,
        "sim_kind": plan.kind,
        "sim_renderer": env.unwrapped.renderer,
    }
    if cfg.collector_format:
        h5format.write_episode(cfg.out / name, images_bgr, actions, events, attrs)
    else:
        h5format.write_episode(cfg.out / name, images_bgr, actions, events, attrs,
                               instruction=ro.info["instruction"], extra_attrs=extra)
    return {"index": index, "file": name, "frames": len(events), "attempt": attempt}


# --------------------------------------------------------------------------------------------- workers
_WORKER: dict[str, Any] = {}


def _init_worker(cfg: GenerateConfig) -> None:
    _WORKER["cfg"] = cfg
    _WORKER["env"] = make_envs(cfg)


def _work(index: int) -> dict[str, Any]:
    cpu = time.process_time()
    try:
        res = generate_one(_WORKER["env"], _WORKER["cfg"], index)
    except EpisodeFailed as exc:
        res = {"index": index, "error": str(exc)}
    res["cpu_s"] = time.process_time() - cpu
    return res


def _rollout_work(index: int) -> tuple[int, float]:
    """Everything :func:`generate_one` does except compressing and writing (plan, camera replay, BGR frames).
    Returns ``(frames, worker CPU s)``; used by ``bench/generate_throughput.py``."""
    cpu = time.process_time()
    cfg = _WORKER["cfg"]
    plan, planned, _ = run_episode(_WORKER["env"][0], cfg, index)
    ro = render_rollout(_WORKER["env"][1], cfg, plan, planned)
    images_bgr = (v6_arrays(ro) if cfg.actuation == "class" else episode_arrays(ro))[0]
    return len(images_bgr), time.process_time() - cpu


def _replay_work(job: tuple[int, list[str], int]) -> tuple[int, float]:
    """Render-only replay of a finished episode (``index, keys, scene_seed``) on the worker's camera env: no
    planning, compression or writing. Returns the frames rendered (``1 + len(keys)``, as stored). Used by
    ``bench/generate_throughput.py`` to measure the render-only limit with the same workers."""
    index, keys, scene_seed = job
    cpu = time.process_time()
    cfg = _WORKER["cfg"]
    plan = plan_episode(cfg, index)
    planned = Rollout(list(keys), "success", {}, scene_seed, 0)
    env = _WORKER["env"][1]
    return len(render_rollout(env, cfg, plan, planned).images), time.process_time() - cpu


def existing_episodes(cfg: GenerateConfig) -> dict[int, Path]:
    """Finished episodes in ``cfg.out`` by index; removes stale temp files.

    Raises:
        DatasetFolderError: a file in the folder comes from other settings (another fingerprint) or cannot be read.
    """
    import h5py

    done: dict[int, Path] = {}
    if not cfg.out.exists():
        return done
    fp = cfg.fingerprint()
    for p in sorted(cfg.out.iterdir()):
        if h5format.is_temp_file(p):
            p.unlink(missing_ok=True)
            continue
        if not (p.name.startswith("episode_") and p.suffix == ".h5"):
            continue
        try:
            with h5py.File(p, "r") as f:
                file_fp, index = f.attrs.get("sim_fingerprint"), f.attrs.get("sim_episode_index")
        except OSError as exc:
            raise DatasetFolderError(f"{p}: cannot be read ({exc}); remove it or use another --out") from exc
        if file_fp != fp or index is None:
            raise DatasetFolderError(
                f"{p}: was generated with other settings (sim_fingerprint {file_fp!r}, this run {fp!r}); "
                "use another --out or the same settings to resume"
            )
        done[int(index)] = p
    return done


def write_index_and_statistics(out: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """(Re)write ``dataset_index.csv`` and ``dataset_statistics.json`` from every episode file in ``out``
    (atomically); returns the statistics dict."""
    from sim.data.inspection import dataset_statistics

    paths = sorted(p for p in out.glob("episode_*.h5"))
    stats = dataset_statistics(paths)
    stats.update(extra or {})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["episode_path", "instruction"])
    for p in paths:
        writer.writerow([p.name, h5format.read_info(p).instruction])
    atomic_write_text(out / "dataset_index.csv", buf.getvalue())
    atomic_write_json(out / "dataset_statistics.json", stats, indent=2, sort_keys=True)
    return stats


#: Where :func:`export_lerobot` writes in a generation folder.
LEROBOT_DIR = "lerobot"


def export_lerobot(folder: Path, fps: int, root: Path | None = None) -> Path:
    """Every episode file of ``folder`` (in name order) as one LeRobot v3.0 dataset (:mod:`sim.data.
    lerobot_format`) at ``root`` (default ``folder/lerobot``), rebuilt from scratch: the team converts its H5
    episodes the same way (EdgeGroundVLA ``scripts/convert/h5_v6_to_lerobot.py``: ``observation.images.cam_front``
    RGB, ``action``, ``action.event_type``, ``robot_type`` ``mobile_base``). Frames are stored losslessly (PNG); the
    task of an episode is its instruction (a V6 file without one: the team's converter sentence).

    Raises:
        DatasetFolderError: no episode file in ``folder``, or files of different image sizes.
    """
    import shutil

    from sim.data.lerobot_format import LeRobotV3Writer, mobile_base_features

    paths = sorted(folder.glob("episode_*.h5"))
    if not paths:
        raise DatasetFolderError(f"{folder}: no episode_*.h5 file to export")
    sizes = {h5format.read_info(p).image_hw for p in paths}
    if len(sizes) > 1:
        raise DatasetFolderError(f"{folder}: episodes of several image sizes {sorted(sizes)}: one LeRobot dataset "
                                 "holds one")
    (height, width), = sizes
    root = root or folder / LEROBOT_DIR
    if root.exists():  # derived from the H5 files, which stay: rebuilt whole
        shutil.rmtree(root)
    with LeRobotV3Writer(root, fps=fps, features=mobile_base_features(height, width),
                         robot_type="mobile_base") as writer:
        for path in paths:
            actions, events = h5format.read_actions(path)
            writer.add_episode(h5format.read_info(path).instruction, {
                "observation.images.cam_front": h5format.EpisodeFrames(path), "action": actions,  # by windows
                "action.event_type": events})
    return root


def generate(cfg: GenerateConfig, progress: bool = True) -> dict[str, Any]:
    """Generate the missing episodes of ``cfg`` and rewrite the index and statistics (and, with
    ``output_format="lerobot"``, the LeRobot dataset of the folder: :func:`export_lerobot`, at ``fps`` =
    1 / the cadence's decision period, 6 for the V6 data).

    Returns ``{"written": [...], "skipped": n, "failed": [...], "statistics": {...}, "lerobot": path or None}``.
    """
    from tqdm import tqdm

    cfg.out.mkdir(parents=True, exist_ok=True)
    done = existing_episodes(cfg)
    todo = [i for i in range(cfg.episodes) if i not in done]
    written, failed = [], []
    bar = tqdm(total=cfg.episodes, initial=cfg.episodes - len(todo), unit="ep", disable=not progress,
               desc="generate", dynamic_ncols=True)
    start = time.perf_counter()
    frames = 0
    if todo:
        workers = max(1, min(cfg.workers, len(todo)))
        if workers == 1:
            _init_worker(cfg)
            results = map(_work, todo)
        else:  # a worker that dies never hangs the run: its episode is retried, then reported failed
            results = run_tasks(_work, todo, workers=workers, initializer=_init_worker, initargs=(cfg,),
                                failed=lambda index, cause: {"index": index, "error": f"episode {index}: {cause}"})
        try:
            for res in results:
                if "error" in res:
                    failed.append(res)
                    tqdm.write(f"warning: {res['error']}", file=sys.stderr)
                else:
                    written.append(res)
                    frames += res["frames"]
                bar.update(1)
                bar.set_postfix(frames_per_s=f"{frames / max(time.perf_counter() - start, 1e-9):.1f}")
        finally:
            if workers > 1:
                results.close()  # the workers have ended when it returns: remove a file one was writing
                for path in cfg.out.iterdir():
                    if h5format.is_temp_file(path):
                        path.unlink(missing_ok=True)
            else:
                for env in _WORKER.pop("env", ()):
                    env.close()
    bar.close()
    elapsed = time.perf_counter() - start
    stats = write_index_and_statistics(cfg.out, {"generation": {
        "settings": cfg.content_settings(), "fingerprint": cfg.fingerprint(),
        "failed_indices": sorted(r["index"] for r in failed),
    }})
    lerobot = export_lerobot(cfg.out, fps=lerobot_fps(cfg)) if cfg.output_format == "lerobot" else None
    return {"written": sorted(written, key=lambda r: r["index"]), "skipped": len(done), "failed": failed,
            "statistics": stats, "frames_written": frames, "elapsed_s": elapsed,
            "worker_cpu_s": sum(r.get("cpu_s", 0.0) for r in written + failed), "lerobot": lerobot}


def lerobot_fps(cfg: GenerateConfig) -> int:
    """Frames per second of the exported dataset: one frame per decision (the cadence's period; a press and its
    brake for the keypress families), rounded, at least 1."""
    if cfg.actuation == "class":
        from envs.cadence import Cadence

        period = Cadence.parse(cfg.cadence or CORRIDOR_CADENCE).period_s
    else:
        from envs.robot import RobotConfig

        robot = RobotConfig()
        period = robot.press_duration + robot.brake_time
    return max(1, round(1.0 / period))
