"""Train the team's grounder + MLP heads (exp73, exp49) on corridor episodes, as their training scripts do, with the
simulator's ``oracle`` grounder in place of their offline OWL-v2 annotation and the ``lite`` vision feature in place
of Kosmos-2's (what ``python -m sim.bundle`` ships).

Per episode file (``sim.generate --family corridor``: the V6 layout with ``sim_params`` holding the robot states and the
camera of every frame):

- **labels**: the class of each frame's action (:func:`envs.actions.action_class` of the joystick form: the
  injected stops are STOP, as in the team's V6 set);
- **boxes**: the oracle grounder (:class:`policies.goalnav.oracle.OracleGrounder`, its error model but no cold start)
  on the frames 0, 3, 6, ... and the last, each frame in between carrying the last result forward: the team's
  annotators (EdgeGroundVLA ``scripts/gen_v6_owl_annotation.py``: stride 3 with carry-forward);
- **vision**: the backbone's ``image_mean`` stream of each frame (cached per file in ``cache/``).

Models and recipes (EdgeGroundVLA ``scripts/train_exp73_trackA_heads.py`` ``build_windows``, ``main``; MoNaVLA
``scripts/train_v5_exp49_goal_nav.py``): exp73 = a Stage 1 ``image_proj`` (L2-normalised) + ``Exp73MLPHead`` over
windows of ``window`` consecutive frames (stride 1; bbox rows times 3.0), AdamW lr 5e-4; exp49 = ``GoalNavMLP`` over
``[bbox x 8, vision, goal]`` (the goal: frame 0's box, else ``[0.5, 0.5, 0]``), AdamW lr 1e-3; both weight decay
1e-4, a cosine schedule, batches of 128, class weights ``1/count`` normalised to sum 8, the episodes shuffled with
``default_rng(42)`` and the first 15% held out, the best validation accuracy kept. Our readings: ``image_proj`` is
trained with the head (the team pre-trains it contrastively against three or five text anchors of Kosmos-2's
text model, Stage 1, which the lite backbone has no counterpart of), and fewer epochs with early stopping (60,
patience 15; the team's 300).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from envs.actions import CLASS_NAMES, action_class
from foundations.errors import MobileVLAError
from foundations.files import atomic_write, atomic_write_json
from policies.goalnav.heads import (
    BBOX_FIELDS,
    BBOX_SCALE_EXP73,
    GOAL_DIM,
    NO_GOAL,
    NUM_CLASSES,
    PROJ_DIM,
    WINDOW_EXP73,
    WINDOW_GOALNAV,
    Exp73MLPHead,
    GoalNavMLP,
    Stage1ImageProj,
    window_indices,
)
from sim.data import h5format

#: The kinds this module trains, with their window and learning rate.
RECIPES = {"exp73": {"window": WINDOW_EXP73, "lr": 5e-4}, "exp49": {"window": WINDOW_GOALNAV, "lr": 1e-3}}
#: The annotators' grounding stride (frames 0, 3, 6, ... and the last are grounded).
ANNOTATION_STRIDE = 3
VAL_SHARE = 0.15
SPLIT_SEED = 42


class GoalNavTrainingError(MobileVLAError, ValueError):
    """The data cannot train a grounder + MLP head (no corridor files, files without the simulator's states)."""


@dataclass
class EpisodeData:
    """One episode's training arrays: ``vis`` (T, D) float32, ``bbox`` (T, 4) float32 ``[cx, cy, area, has]``,
    ``labels`` (T,) int64 class indices."""

    name: str
    vis: np.ndarray
    bbox: np.ndarray
    labels: np.ndarray


def annotate(path: Path, stride: int = ANNOTATION_STRIDE, grounder_args: dict[str, Any] | None = None) -> np.ndarray:
    """The oracle's boxes of every frame of a synthetic V6 file, ``(T, 4)`` float32, as the team's annotator:
    frames ``0, stride, 2 stride, ...`` and the last grounded (no cold start), the others carrying the last result.

    Raises:
        GoalNavTrainingError: the file has no ``sim_params`` states (not a simulator corridor file).
    """
    from policies.goalnav.oracle import OracleGrounder

    info = h5format.read_info(path)
    params = json.loads(info.attrs.get("sim_params", "{}"))
    if "states" not in params or "control" not in params:
        raise GoalNavTrainingError(f"{path}: no sim_params states: the oracle labels only simulator corridor files "
                                   "(python -m sim.generate --family corridor)")
    oracle = OracleGrounder(cold_start=False, **(grounder_args or {}))
    oracle.reset({"scene": params["scene"], "control": params["control"],
                  "episode_seed": int(info.attrs.get("sim_episode_index", 0))})
    states = np.asarray(params["states"], dtype=np.float64)
    rows, last = [], None
    for t, state in enumerate(states):
        if last is None or t % stride == 0 or t == len(states) - 1:
            g = oracle.ground(None, state, t)
            last = [g.cx, g.cy, g.area, float(g.has_bbox)]
        rows.append(last)
    return np.asarray(rows, dtype=np.float32)


def load_episodes(files: list[Path], backbone: Any, cache: Path, grounder_args: dict[str, Any] | None = None,
                  progress: bool = True) -> list[EpisodeData]:
    """:class:`EpisodeData` of each file; vision features cached in ``cache`` per file (``<name>.npy``)."""
    from tqdm import tqdm

    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for path in tqdm(files, desc="features", unit="file", disable=not progress):
        feature_file = cache / f"{path.stem}.npy"
        if feature_file.is_file():
            vis = np.load(feature_file)
        else:
            vis = np.concatenate([backbone.encode_frames(frames, ("image_mean",)).numpy()
                                  for frames in h5format.iter_episode_frames(path)]).astype(np.float32)
            with atomic_write(feature_file) as tmp, open(tmp, "wb") as fh:
                np.save(fh, vis)
        actions, _ = h5format.read_actions(path)
        labels = np.asarray([CLASS_NAMES.index(action_class(a)) for a in actions], dtype=np.int64)
        out.append(EpisodeData(path.stem, vis, annotate(path, grounder_args=grounder_args), labels))
    return out


def windows(kind: str, episodes: list[EpisodeData], window: int) -> tuple[torch.Tensor, ...]:
    """Training samples, one per frame (stride 1, windows padded by repeating the first frame): exp73
    ``(bbox (N, W, 4) * 3.0, vis (N, W, D), labels (N,))``; exp49 ``(features (N, W*4 + D + 3), labels (N,))``."""
    bbox_all, vis_all, labels = [], [], []
    for ep in episodes:
        for t in range(len(ep.labels)):
            idx = window_indices(t + 1, window)
            if kind == "exp73":
                bbox_all.append(ep.bbox[idx] * BBOX_SCALE_EXP73)
                vis_all.append(ep.vis[idx])
            else:
                goal = ep.bbox[0, :3] if ep.bbox[0, 3] else np.asarray(NO_GOAL, np.float32)
                bbox_all.append(np.concatenate([ep.bbox[idx].ravel(), ep.vis[t], goal]))
            labels.append(ep.labels[t])
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if kind == "exp73":
        return torch.as_tensor(np.stack(bbox_all)), torch.as_tensor(np.stack(vis_all)), y
    return torch.as_tensor(np.stack(bbox_all)), y


class Exp73Model(torch.nn.Module):
    """``image_proj`` (L2-normalised) + :class:`Exp73MLPHead`, trained together; ``forward(bbox (B, W, 4), vis
    (B, W, D)) -> (B, 8)``."""

    def __init__(self, vis_dim: int, window: int) -> None:
        super().__init__()
        self.image_proj = Stage1ImageProj(vis_dim, PROJ_DIM)
        self.head = Exp73MLPHead(BBOX_FIELDS + PROJ_DIM, window)

    def forward(self, bbox: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([bbox, F.normalize(self.image_proj(vis), dim=-1)], dim=-1))


class Exp49Model(torch.nn.Module):
    """:class:`GoalNavMLP` under ``head``; ``forward(features (B, d_in)) -> (B, 8)``."""

    def __init__(self, d_in: int) -> None:
        super().__init__()
        self.head = GoalNavMLP(d_in)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """``1/count`` per class (a missing class counts 1), normalised to sum to the number of classes (TR73)."""
    counts = torch.bincount(labels, minlength=NUM_CLASSES).float().clamp(min=1.0)
    weights = 1.0 / counts
    return weights / weights.sum() * NUM_CLASSES


def split(episodes: list[EpisodeData]) -> tuple[list[EpisodeData], list[EpisodeData]]:
    """``(train, val)``: the episodes shuffled with ``default_rng(42)``, the first 15% held out (TR73)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(episodes))
    n_val = max(1, int(VAL_SHARE * len(episodes)))
    return [episodes[i] for i in order[n_val:]], [episodes[i] for i in order[:n_val]]


def train_goalnav(kind: str, episodes: list[EpisodeData], out: Path, *, window: int | None = None,
                  epochs: int = 60, patience: int = 15, batch_size: int = 128, lr: float | None = None,
                  seed: int = 0, training_data: str = "", backbone: str = "lite", progress: bool = True
                  ) -> dict[str, Any]:
    """Train ``kind`` (``exp73`` or ``exp49``) and write ``out`` (``.safetensors``, float16, with its ``.json``
    sidecar: the bundled-weights layout of :func:`policies.goalnav.policy.bundled_checkpoint`).

    Returns ``{"val_acc", "train_acc", "epochs_run", "seconds", "samples", "class_counts"}``.

    Raises:
        GoalNavTrainingError: unknown kind, or too few episodes to hold some out.
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    if kind not in RECIPES:
        raise GoalNavTrainingError(f"unknown head {kind!r}; this trains {', '.join(RECIPES)}")
    if len(episodes) < 3:
        raise GoalNavTrainingError(f"{len(episodes)} episodes: give at least 3 (15% are held out)")
    window = window or RECIPES[kind]["window"]
    lr = lr or RECIPES[kind]["lr"]
    train_eps, val_eps = split(episodes)
    train_set, val_set = windows(kind, train_eps, window), windows(kind, val_eps, window)
    vis_dim = episodes[0].vis.shape[1]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Exp73Model(vis_dim, window) if kind == "exp73" else Exp49Model(window * BBOX_FIELDS + vis_dim + GOAL_DIM)
    labels = train_set[-1]
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weights(labels))
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)

    def accuracy(data: tuple[torch.Tensor, ...]) -> float:
        model.eval()
        with torch.no_grad():
            return float((model(*data[:-1]).argmax(-1) == data[-1]).float().mean())

    start, best, best_state, since, run = time.perf_counter(), -1.0, None, 0, 0
    for run in tqdm(range(1, epochs + 1), desc=f"train {kind}", unit="epoch", disable=not progress):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        for i in range(0, len(order), batch_size):
            batch = [t[order[i:i + batch_size]] for t in train_set]
            loss = loss_fn(model(*batch[:-1]), batch[-1])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        schedule.step()
        val = accuracy(val_set)
        if val >= best:
            best, since = val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                break
    model.load_state_dict(best_state)
    counts = {CLASS_NAMES[i]: int(c) for i, c in enumerate(torch.bincount(labels, minlength=NUM_CLASSES))}
    summary = {"val_acc": round(best, 4), "train_acc": round(accuracy(train_set), 4), "epochs_run": run,
               "seconds": round(time.perf_counter() - start, 1), "samples": int(len(labels)), "class_counts": counts}
    meta = {"kind": "exp73_mlp" if kind == "exp73" else "exp49", "window": window, "vis_dim": int(vis_dim),
            "proj_dim": PROJ_DIM, "bbox_scale": BBOX_SCALE_EXP73 if kind == "exp73" else 1.0,
            "goal_dim": 0 if kind == "exp73" else GOAL_DIM, "backbone": backbone, "training_data": training_data,
            "recipe": f"AdamW lr {lr:g}, wd 1e-4, cosine, batch {batch_size}, class weights 1/count, "
                      f"{run} of {epochs} epochs (patience {patience}), seed {seed}", **summary}
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    with atomic_write(out) as tmp:
        save_file(tensors, str(tmp))
    atomic_write_json(out.with_suffix(".json"), meta)
    return summary
