"""The team's own episodes as input: offline metrics on real H5 files and a simulated twin of every episode (the
library of ``python -m sim.offline``).

**Offline metrics.** Each real episode is played to the policy frame by frame, as the robot would: ``reset`` with
the episode's instruction (``language_instruction``, or the team's file-name rule when the file has none), then
``act`` on frame 0, 1, ... with the policy's own frame history, chunk execution and post-processing. Frame ``t``
pairs with the label ``actions[t]`` (the collector records the action taken after each image). Predictions and
labels are ``[linear_x, linear_y]`` clamped to [-1, 1] like the training labels, exactly as the closed-loop
evaluation records them, and scored with :func:`sim.evaluation.metrics.offline_metrics` (the team's definitions):
overall, per episode, layout, distance and core/variant.

**Sim twin.** Each file name names a scenario (``[basket_]{1box|2box}_{hori|vert}_{left|right}_{core|variant}_
{close|medium|far}``); the recorded presses (the key of each labelled action) are replayed in it, with pose
jitter from a seed derived from the file name. The twin's frame ``t`` is taken as the real one is: the image on
which press ``t`` was made. The policy then acts along the twin's frames as along the real ones, and per step the
**sim-real action gap** is its action on the real frame against its action on the twin's frame (MAE over
``[linear_x, linear_y]``; direction agreement = the share of steps where both map to the same robot key), and the
**image gap** is the cosine similarity of the policy's backbone features of the two frames. A twin that collides
before the recording ends is compared on the steps it has. A twin is played in its file's scenario family
(``basket_`` files in the ``basket`` family, the others in ``cup``), and so is the closed-loop sweep (one family:
the data's, or ``family``).
"""

from __future__ import annotations

import dataclasses
import shutil
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.keys import action_to_key, key_to_action
from foundations.errors import MobileVLAError
from foundations.files import atomic_write_json, read_json
from sim.data import h5format
from sim.data.h5format import EpisodeInfo
from sim.evaluation.episode import Episode
from sim.evaluation.metrics import offline_metrics

TWIN_STREAM = 0x7715  # seed-stream tag of the twins' jitter
#: Direction agreement at or above which a policy's sim-real gap counts as small in the comparison sentence.
SMALL_GAP_AGREEMENT = 0.8


class OfflinePolicyError(MobileVLAError, ValueError):
    """The policy cannot act on real frames (it reads the simulator's state or privileged scene)."""


@dataclasses.dataclass
class RealEpisode:
    """One real episode: its metadata, frames (uint8 RGB ``(H, W, 3)`` each, a lazy
    :class:`~sim.data.h5format.EpisodeFrames` read by windows) and labels (float32 ``(N, 3)``)."""

    info: EpisodeInfo
    frames: Sequence[np.ndarray]
    actions: np.ndarray

    @property
    def name(self) -> str:
        """The file's name without ``.h5``."""
        return self.info.path.stem

    @property
    def keys(self) -> list[str]:
        """The robot key of every labelled press (frames 1..N-1; frame 0 is the episode start)."""
        return [action_to_key(a) for a in self.actions[1:]]


def load_real_episode(path: str | Path) -> RealEpisode:
    """Read a validated episode file.

    Raises:
        InvalidEpisodeError: the file fails :func:`sim.data.h5format.check_episode` or its frames cannot be read.
    """
    h5format.validate_episode(path)
    try:
        info = h5format.read_info(path)
        actions, _ = h5format.read_actions(path)
        frames = h5format.EpisodeFrames(path)  # read by windows as they are used: never the whole array
    except (OSError, KeyError, ValueError) as exc:
        raise h5format.InvalidEpisodeError(path, [f"unreadable: {type(exc).__name__}: {exc}"]) from None
    return RealEpisode(info, frames, actions)


def clamp_xy(actions: np.ndarray) -> np.ndarray:
    """``[linear_x, linear_y]`` clamped to [-1, 1], float64 ``(N, 2)`` rounded to 4 decimals (as recorded)."""
    return np.clip(np.asarray(actions, np.float64)[:, :2], -1, 1).round(4)


def act_along(policy, frames: np.ndarray | Sequence[np.ndarray], instruction: str) -> np.ndarray:
    """The policy's actions, float32 ``(N, 3)``, acting on ``frames`` in order after a reset with ``instruction``
    (no simulator state, no privileged scene: what the robot's camera gives).

    Raises:
        OfflinePolicyError: the policy needs the simulator's ``state`` or scene.
    """
    try:
        policy.reset(instruction, {})
        return np.stack([policy.act({"image": frame, "instruction": instruction}) for frame in frames])
    except (KeyError, TypeError) as exc:
        raise OfflinePolicyError(f"{getattr(policy, 'name', policy)} cannot act on real frames: it reads "
                                 f"{exc} (the simulator's state or scene), which a camera frame does not carry") from None


def frame_features(policy, frames: np.ndarray | Sequence[np.ndarray], instruction: str,
                   cache: dict | None = None) -> np.ndarray | None:
    """The policy backbone's per-frame features ``(N, D)`` (its frame streams), or None for a policy without a
    backbone (the image gap is then not measured). ``cache`` (a dict kept per set of frames) shares them between
    policies on the same backbone and streams (the bundled heads all run on one ``lite``)."""
    member = getattr(policy, "first", policy)  # an ensemble: its first member's backbone
    backbone, streams = getattr(member, "backbone", None), getattr(member, "frame_streams", None)
    if backbone is None or not streams:
        return None
    key = (id(backbone), tuple(streams))
    if cache is not None and key in cache:
        return cache[key]
    parts = [backbone.encode_frames(np.stack(frames[i:i + 16]), streams, instruction).float().cpu().numpy()
             for i in range(0, len(frames), 16)]  # 16 frames decoded at a time
    features = np.concatenate(parts)
    if cache is not None:
        cache[key] = features
    return features


def twin_seed(base_seed: int, name: str) -> int:
    """Seed of an episode's twin (uint32), from the file name: the same file always gets the same twin."""
    return int(np.random.SeedSequence([base_seed, TWIN_STREAM, zlib.crc32(name.encode())]).generate_state(1)[0])


@dataclasses.dataclass
class Twin:
    """A real episode replayed in simulation: frames (the image each press was made on, ``frames[0]`` the reset
    image), poses ``(x, y, yaw)``, the final record, and the scenario (family, layout, distance) it was played in."""

    frames: list[np.ndarray]
    poses: list[tuple[float, float, float]]
    status: str | None
    layout: str
    distance: str
    seed: int
    family: str


def play_twin(env, real: RealEpisode, seed: int) -> Twin:
    """Replay ``real``'s presses in its scenario and family (``env`` must render the onboard ``image``).

    Raises:
        ConfigError: the file name names no scenario (layout and distance are needed).
    """
    from foundations.errors import ConfigError

    layout, distance = real.info.layout, real.info.distance
    if not (layout and distance and layout.count("_") == 2):
        raise ConfigError(f"{real.info.path.name}: the file name names no scenario (layout and distance)")
    keys = real.keys
    episode = Episode(env, seed, {"scenario": layout, "distance": distance, "family": real.info.family})
    frames = [episode.obs["image"]]
    presses = iter(keys)
    for step in episode.run(lambda obs: key_to_action(next(presses))) if keys else ():
        frames.append(step.obs["image"])
        if step.index == len(keys) - 1:
            break
    return Twin(frames, list(episode.poses), episode.status, layout, distance, seed, episode.reset_info["family"])


def twin_gap(real_actions: np.ndarray, sim_actions: np.ndarray, real_features: np.ndarray | None,
             sim_features: np.ndarray | None) -> list[dict[str, Any]]:
    """Per step (as far as both exist): the two actions' ``[linear_x, linear_y]``, their keys and the features'
    cosine similarity."""
    n = min(len(real_actions), len(sim_actions))
    real_xy, sim_xy = clamp_xy(real_actions[:n]), clamp_xy(sim_actions[:n])
    cosine = None
    if real_features is not None and sim_features is not None:
        a, b = real_features[:n], sim_features[:n]
        cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return [{"step": t, "real_x": real_xy[t, 0], "real_y": real_xy[t, 1], "sim_x": sim_xy[t, 0],
             "sim_y": sim_xy[t, 1], "real_key": action_to_key(real_actions[t]),
             "sim_key": action_to_key(sim_actions[t]),
             "image_cosine": None if cosine is None else round(float(cosine[t]), 5)} for t in range(n)]


def gap_stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sim-real gap of a group of twin steps: action MAE, direction agreement, mean image cosine."""
    if not rows:
        return {"steps": 0, "action_mae": None, "direction_agreement": None, "image_cosine": None}
    diff = [abs(r["real_x"] - r["sim_x"]) + abs(r["real_y"] - r["sim_y"]) for r in rows]
    cos = [r["image_cosine"] for r in rows if r["image_cosine"] is not None]
    return {"steps": len(rows), "action_mae": float(np.mean(diff) / 2),
            "direction_agreement": float(np.mean([r["real_key"] == r["sim_key"] for r in rows])),
            "image_cosine": float(np.mean(cos)) if cos else None}


def group_metrics(rows: Sequence[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    """:func:`offline_metrics` of the step ``rows`` grouped by ``row[key]``."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[str(row[key])].append(row)
    return {name: metrics_of(group) for name, group in sorted(groups.items())}


def metrics_of(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """:func:`offline_metrics` of step rows (``label_x, label_y, pred_x, pred_y``)."""
    pred = np.asarray([[r["pred_x"], r["pred_y"]] for r in rows], float).reshape(-1, 2)
    tgt = np.asarray([[r["label_x"], r["label_y"]] for r in rows], float).reshape(-1, 2)
    return offline_metrics(pred, tgt)


def step_rows(policy_name: str, real: RealEpisode, predictions: np.ndarray) -> list[dict[str, Any]]:
    """One row per labelled step: ``policy, episode, step, label_x, label_y, pred_x, pred_y`` plus the episode's
    layout, distance and kind (for grouping)."""
    labels, preds = clamp_xy(real.actions), clamp_xy(predictions)
    info = real.info
    return [{"policy": policy_name, "episode": real.name, "step": t, "label_x": labels[t, 0], "label_y": labels[t, 1],
             "pred_x": preds[t, 0], "pred_y": preds[t, 1], "layout": info.layout or "?",
             "distance": info.distance or "?", "kind": info.kind or "?", "family": info.family}
            for t in range(len(labels))]


def comparison_sentence(table: Sequence[dict[str, Any]]) -> str:
    """One sentence on what offline MAE, closed-loop success and the sim-real gap say together (``table`` rows:
    ``policy, mae, success_rate, direction_agreement``)."""
    rows = [r for r in table if r.get("mae") is not None]
    parts = []
    scored = [r for r in rows if r.get("success_rate") is not None]
    if len(scored) >= 2:
        by_mae = [r["policy"] for r in sorted(scored, key=lambda r: r["mae"])]
        by_success = [r["policy"] for r in sorted(scored, key=lambda r: -r["success_rate"])]
        if by_mae == by_success:
            parts.append(f"offline MAE and closed-loop success rank the policies the same way ({' > '.join(by_mae)})")
        else:
            parts.append(f"MAE ranks {' > '.join(by_mae)}; closed loop says {' > '.join(by_success)}")
    elif scored:
        r = scored[0]
        parts.append(f"{r['policy']}: offline MAE {r['mae']:.3f} on the real frames, {r['success_rate']:.0%} "
                     "success in closed loop")
    for r in rows:
        agreement = r.get("direction_agreement")
        if agreement is None:
            continue
        if agreement >= SMALL_GAP_AGREEMENT:
            parts.append(f"{r['policy']} acts alike on real and simulated frames ({agreement:.0%} of steps the same "
                         "key), so trust its closed-loop result")
        else:
            parts.append(f"{r['policy']} acts differently on real and simulated frames (the same key in only "
                         f"{agreement:.0%} of steps), so its closed-loop result says little about the robot")
    return ("; ".join(parts) + ".") if parts else "nothing to compare."


def episode_files(sources: Sequence[str | Path]) -> Iterator[Path]:
    """Every ``*.h5`` of the given folders and files, sorted per source.

    Raises:
        FileNotFoundError: a source that does not exist or holds no ``.h5`` file.
    """
    from sim.data.dataset import list_episode_files

    for source in sources:
        yield from list_episode_files(source)


# ---------------------------------------------------------------------------------------------- a whole run
@dataclasses.dataclass(frozen=True)
class OfflineConfig:
    """Settings of an offline run.

    Attributes:
        policies: the policies to score (:class:`~sim.evaluation.config.PolicySpec`).
        data: folders or files of real H5 episodes. out: the run folder.
        twins: replay every episode in simulation and measure the sim-real gap. videos: write each twin's video.
        seed: base seed of the twins' jitter and of the closed-loop sweep.
        skip_invalid: skip (and list) files that fail validation instead of stopping.
        closed_loop_episodes: episodes per layout x distance of the data for the closed-loop column (0: none).
        eval_run: an existing ``sim.eval`` run folder to take the closed-loop figures from instead.
        twin_image_size: the twins' camera image (16:9 like the robot's 1280x720).
        renderer: the twins' renderer (``tiny``, ``egl``, ``auto``: :func:`envs.rendering.choose_renderer`; ``auto``
            draws 640x360 with egl where EGL starts; the figures of the README's offline section were drawn by tiny).
        workers: processes of the closed-loop evaluation.
        family: scenario family of the closed-loop sweep; None: the data's (one family only).
    """

    policies: tuple
    data: tuple[Path, ...]
    out: Path
    twins: bool = True
    videos: bool = True
    seed: int = 0
    skip_invalid: bool = False
    closed_loop_episodes: int = 2
    eval_run: Path | None = None
    twin_image_size: tuple[int, int] = (640, 360)
    renderer: str = "auto"
    workers: int = 1
    family: str | None = None


def _twin_video(path: Path, real: RealEpisode, twin: Twin, env, gap: Sequence[dict[str, Any]], policy: str) -> Path:
    """Side-by-side video: real frame | twin frame | top-down path, with the recorded key and the policy's keys."""
    from PIL import Image, ImageDraw

    from sim.evaluation.video import _font, render_topdown_frames, write_video

    top = render_topdown_frames(env, twin.poses)
    w, h = 320, 180
    font = _font(13)
    out = []
    for t in range(len(real.frames)):
        canvas = Image.new("RGB", (3 * w, h + 40), (20, 20, 24))
        canvas.paste(Image.fromarray(real.frames[t]).resize((w, h), Image.BILINEAR), (0, 40))
        if t < len(twin.frames):
            canvas.paste(Image.fromarray(twin.frames[t]).resize((w, h), Image.BILINEAR), (w, 40))
            canvas.paste(Image.fromarray(top[min(t, len(top) - 1)]).resize((w, h), Image.BILINEAR), (2 * w, 40))
        draw = ImageDraw.Draw(canvas)
        recorded = action_to_key(real.actions[t])
        line = f"{real.name} | step {t} | recorded {recorded}"
        if t < len(gap):
            line += f" | {policy}: real {gap[t]['real_key']}  sim {gap[t]['sim_key']}"
        draw.text((6, 4), line, fill=(230, 230, 230), font=font)
        draw.text((6, 22), f"real | sim twin ({twin.layout} {twin.distance}, seed {twin.seed}, {twin.status or 'running'})"
                  " | top-down", fill=(180, 200, 255), font=font)
        out.append(np.asarray(canvas))
    return write_video(path, out)


def _closed_loop(cfg: OfflineConfig, layouts: list[str], distances: list[str], family: str | None,
                 progress: bool) -> dict[str, Any]:
    """Closed-loop success of each policy on the data's layouts x distances in ``family`` (or from
    ``cfg.eval_run``)."""

    from sim.evaluation.config import EnvSettings, EvalConfig, OutputSettings, Sweep
    from sim.evaluation.runner import evaluate

    if cfg.eval_run is not None:
        summary = read_json(Path(cfg.eval_run) / "summary.json")
    elif cfg.closed_loop_episodes > 0 and layouts:
        run = cfg.out / "closed_loop"
        resume = (run / "episodes.jsonl").exists()
        eval_cfg = EvalConfig.load(run) if resume else EvalConfig(
            policies=cfg.policies, env=EnvSettings(family=family),
            sweep=Sweep(layouts=layouts, distances=distances, episodes_per_combo=cfg.closed_loop_episodes,
                        seed=cfg.seed),
            output=OutputSettings(out=run, record="none"))
        summary = evaluate(eval_cfg, workers=cfg.workers, resume=resume, progress=progress).summary
    else:
        return {}
    return {name: p["overall"] for name, p in summary["policies"].items()}


def closed_loop_family(cfg: OfflineConfig, episodes: Sequence[RealEpisode]) -> str | None:
    """The scenario family of the closed-loop sweep: ``cfg.family``, else the data's; None when no sweep runs.

    Raises:
        ConfigError: a sweep runs, the data mixes families and ``cfg.family`` is None.
    """
    from foundations.errors import ConfigError

    if cfg.family is not None or cfg.eval_run is not None or cfg.closed_loop_episodes == 0:
        return cfg.family
    families = sorted({e.info.family for e in episodes})
    if len(families) > 1:
        raise ConfigError(f"the data mixes the {' and '.join(families)} families: choose the closed-loop sweep's "
                          "with --family")
    return families[0]


def evaluate_offline(cfg: OfflineConfig, *, progress: bool = True) -> dict[str, Any]:
    """Score ``cfg.policies`` on the real episodes of ``cfg.data``, play their twins, measure the closed loop, and
    write ``steps.csv``, ``twin_steps.csv``, ``summary.json``, ``summary.md``, ``index.html`` and
    ``twins/*.mp4`` into ``cfg.out``; returns ``summary.json``'s content.

    Raises:
        InvalidEpisodeError: a file fails validation (unless ``skip_invalid``).
        FileNotFoundError: a data source is missing or holds no episode.
        PolicyBuildError / OfflinePolicyError: a policy cannot be built or cannot act on camera frames.
        ConfigError: no valid episode at all.
    """
    import gymnasium as gym
    from tqdm import tqdm

    from envs import ENV_ID
    from foundations.errors import ConfigError
    from sim.evaluation.runner import PolicyBuildError

    files = list(episode_files(cfg.data))
    episodes, invalid = [], []
    for path in tqdm(files, desc="read", unit="file", disable=not progress):
        try:
            episodes.append(load_real_episode(path))
        except h5format.InvalidEpisodeError as exc:
            if not cfg.skip_invalid:
                raise
            invalid.append({"file": str(path), "problems": exc.problems})
            tqdm.write(f"warning: skipping {exc}")
    if not episodes:
        raise ConfigError(f"no valid episode in {', '.join(map(str, cfg.data))}")
    family = closed_loop_family(cfg, episodes)  # before the long part: a mixed data set without --family fails now
    policies = {}
    for spec in cfg.policies:
        if "num_threads" in spec.kwargs:  # one process here: let torch use every core (the closed loop keeps 1)
            spec = spec.model_copy(update={"kwargs": {**spec.kwargs, "num_threads": None}})
        try:
            policies[spec.name] = spec.build()
        except Exception as exc:  # noqa: BLE001
            raise PolicyBuildError(f"cannot build policy {spec.name!r}: {type(exc).__name__}: {exc}") from None

    created = not cfg.out.exists()
    cfg.out.mkdir(parents=True, exist_ok=True)
    env = gym.make(ENV_ID, image_size=cfg.twin_image_size, render_mode="rgb_array",
                   renderer=cfg.renderer) if cfg.twins else None
    rows: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    twins_info: dict[str, dict[str, Any]] = {}
    try:
        for real in tqdm(episodes, desc="episodes", unit="ep", disable=not progress):
            instruction = real.info.instruction
            twin = play_twin(env, real, twin_seed(cfg.seed, real.name)) if cfg.twins else None
            first_gap: list[dict[str, Any]] = []
            real_features: dict = {}
            twin_features: dict = {}
            for name, policy in policies.items():
                predictions = act_along(policy, real.frames, instruction)
                rows.extend(step_rows(name, real, predictions))
                if twin is None:
                    continue
                sim_predictions = act_along(policy, twin.frames, instruction)
                gap = twin_gap(predictions, sim_predictions,
                               frame_features(policy, real.frames, instruction, real_features),
                               frame_features(policy, twin.frames, instruction, twin_features))
                for g in gap:
                    g.update(policy=name, episode=real.name, layout=twin.layout, distance=twin.distance)
                gaps.extend(gap)
                first_gap = first_gap or gap
            if twin is not None:
                video = None
                if cfg.videos:
                    video = _twin_video(cfg.out / "twins" / f"{real.name}.mp4", real, twin, env, first_gap,
                                        next(iter(policies)))
                twins_info[real.name] = {"layout": twin.layout, "distance": twin.distance, "seed": twin.seed,
                                         "status": twin.status, "frames": len(twin.frames),
                                         "real_frames": len(real.frames), "family": twin.family,
                                         "video": str(video.relative_to(cfg.out)) if video else None}
    except OfflinePolicyError:  # found on the first episode, before anything is written: leave no empty folder
        if created and not any(p.is_file() for p in cfg.out.rglob("*")):
            shutil.rmtree(cfg.out, ignore_errors=True)
        raise
    finally:
        if env is not None:
            env.close()
        for policy in policies.values():
            policy.close()

    layouts = sorted({e.info.layout for e in episodes if e.info.layout and e.info.distance})
    distances = [d for d in ("close", "medium", "far") if any(e.info.distance == d for e in episodes)]
    closed = _closed_loop(cfg, layouts, distances, family, progress)
    summary = summarize_offline(cfg, rows, gaps, twins_info, closed, invalid, len(files))
    write_offline_outputs(cfg.out, rows, gaps, summary)
    return summary


def summarize_offline(cfg: OfflineConfig, rows: Sequence[dict[str, Any]], gaps: Sequence[dict[str, Any]],
                      twins: dict[str, dict[str, Any]], closed: dict[str, Any], invalid: list[dict[str, Any]],
                      files: int) -> dict[str, Any]:
    """``summary.json``: per policy the offline metrics (overall, per episode / layout / distance / kind), the
    sim-real gap (overall and per scenario), the closed-loop figures, and the comparison table with its sentence;
    with one policy also a top-level ``overall``."""
    policies: dict[str, Any] = {}
    table = []
    for spec in cfg.policies:
        name = spec.name
        mine = [r for r in rows if r["policy"] == name]
        gap = [g for g in gaps if g["policy"] == name]
        scenarios = defaultdict(list)
        for g in gap:
            scenarios[f"{g['layout']}/{g['distance']}"].append(g)
        loop = closed.get(name) or {}
        policies[name] = {
            "overall": metrics_of(mine),
            "per_episode": group_metrics(mine, "episode"),
            "per_layout": group_metrics(mine, "layout"),
            "per_distance": group_metrics(mine, "distance"),
            "per_kind": group_metrics(mine, "kind"),
            "sim_real_gap": {"overall": gap_stats(gap),
                             "per_scenario": {k: gap_stats(v) for k, v in sorted(scenarios.items())}},
            "closed_loop": loop,
        }
        overall_gap = policies[name]["sim_real_gap"]["overall"]
        table.append({"policy": name, "mae": policies[name]["overall"]["mae"], "steps": len(mine),
                      "success_rate": loop.get("success_rate"), "success_ci95": loop.get("success_ci95"),
                      "closed_loop_episodes": loop.get("episodes"),
                      "direction_agreement": overall_gap["direction_agreement"],
                      "action_gap": overall_gap["action_mae"], "image_cosine": overall_gap["image_cosine"]})
    summary: dict[str, Any] = {
        "config": {"policies": [s.model_dump(mode="json") for s in cfg.policies], "data": [str(d) for d in cfg.data],
                   "seed": cfg.seed, "twins": cfg.twins, "closed_loop_episodes": cfg.closed_loop_episodes,
                   "eval_run": str(cfg.eval_run) if cfg.eval_run else None},
        "files": files, "episodes": len({r["episode"] for r in rows}), "invalid": invalid,
        "families": sorted({r["family"] for r in rows}),
        "twins": twins, "policies": policies,
        "comparison": {"table": table, "sentence": comparison_sentence(table)},
    }
    if len(cfg.policies) == 1:
        summary["overall"] = policies[cfg.policies[0].name]["overall"]
    return summary


def offline_markdown(summary: dict[str, Any]) -> str:
    """``summary.md``: the comparison, the offline metrics, the sim-real gap per scenario."""
    from sim.evaluation.report import num, pct

    lines = [f"# Offline evaluation on real episodes: {', '.join(summary['policies'])}", "",
             f"- {summary['episodes']} episodes from {summary['files']} files ({len(summary['invalid'])} invalid, "
             f"skipped); families: {', '.join(summary['families'])}"]
    lines += ["", "## Comparison", "",
              "| policy | offline MAE (real) | closed-loop success (sim) [95% CI] | sim-real: same key | action gap | "
              "image cosine |", "|---|---|---|---|---|---|"]
    for r in summary["comparison"]["table"]:
        ci = r.get("success_ci95")
        success = "-" if r["success_rate"] is None else (
            f"{pct(r['success_rate'])} [{100 * ci[0]:.0f}-{100 * ci[1]:.0f}] of {r['closed_loop_episodes']}")
        lines.append(f"| {r['policy']} | {num(r['mae'], '.3f')} | {success} | {pct(r['direction_agreement'])} | "
                     f"{num(r['action_gap'], '.3f')} | {num(r['image_cosine'], '.3f')} |")
    lines += ["", summary["comparison"]["sentence"], "", "## Offline metrics (the team's definitions)", "",
              "| policy | group | MAE | RMSE | acc<0.3 | acc<0.2 | acc<0.15 | x dir acc | y dir acc | steps |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in summary["policies"].items():
        groups = {"overall": p["overall"], **{f"distance {k}": v for k, v in p["per_distance"].items()},
                  **{f"layout {k}": v for k, v in p["per_layout"].items()}, **{k: v for k, v in p["per_kind"].items()}}
        for group, m in groups.items():
            lines.append(f"| {name} | {group} | {num(m['mae'], '.3f')} | {num(m['rmse'], '.3f')} | "
                         f"{num(m['accuracy_0.3'], '.1f')} | {num(m['accuracy_0.2'], '.1f')} | "
                         f"{num(m['accuracy_0.15'], '.1f')} | "
                         f"{num(m['linear_x_direction_accuracy'], '.1f')} | "
                         f"{num(m['linear_y_direction_accuracy'], '.1f')} | {m['n']} |")
    lines += ["", "## Sim-real gap per scenario", "", "| policy | scenario | steps | same key | action gap | image cosine |",
              "|---|---|---|---|---|---|"]
    for name, p in summary["policies"].items():
        for scenario, g in p["sim_real_gap"]["per_scenario"].items():
            lines.append(f"| {name} | {scenario} | {g['steps']} | {pct(g['direction_agreement'])} | "
                         f"{num(g['action_mae'], '.3f')} | {num(g['image_cosine'], '.3f')} |")
    return "\n".join(lines) + "\n"


def write_offline_outputs(out: Path, rows: Sequence[dict[str, Any]], gaps: Sequence[dict[str, Any]],
                          summary: dict[str, Any]) -> None:
    """``steps.csv`` (``policy,episode,step,label_x,label_y,pred_x,pred_y``), ``twin_steps.csv``,
    ``summary.json``, ``summary.md`` and ``index.html`` (each written atomically)."""
    import csv
    import io

    from foundations.files import atomic_write_text
    from sim.evaluation.html_report import offline_page

    def table(columns: Sequence[str], items: Sequence[dict[str, Any]]) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(items)
        return buf.getvalue()

    atomic_write_text(out / "steps.csv", table(("policy", "episode", "step", "label_x", "label_y", "pred_x", "pred_y"),
                                               rows))
    atomic_write_text(out / "twin_steps.csv", table(("policy", "episode", "step", "layout", "distance", "real_x",
                                                     "real_y", "sim_x", "sim_y", "real_key", "sim_key",
                                                     "image_cosine"), gaps))
    atomic_write_json(out / "summary.json", summary, default=float)
    atomic_write_text(out / "summary.md", offline_markdown(summary))
    atomic_write_text(out / "index.html", offline_page(out, summary))
