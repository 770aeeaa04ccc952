"""The team's 2026 "grounder + MLP" navigation heads, their inputs and their decision rules.

Re-implemented from the team's code (research notes ``/work/research/grounder_mlp_facts.md``); module and
parameter names equal theirs, so their checkpoint files load with ``load_state_dict(strict=True)``:

- :class:`GoalNavMLP`: exp46 / exp49 ``build_mlp`` (MoNaVLA ``scripts/train_v5_exp46_improved_step2.py``,
  ``scripts/train_v5_exp49_goal_nav.py``); (B, 1056) or (B, 1059) -> (B, 8).
- :class:`Stage1ImageProj`: Stage 1 ``image_proj`` (MoNaVLA ``scripts/train_exp54_stage1_v2_frame_level.py``;
  v3 has the same layout); (B, 1024) -> (B, 256), L2-normalised by :func:`project_vision`.
- :class:`ActionMLP`: Stage 2 v2 (EdgeGroundVLA ``scripts/train_exp54_stage2_v2_action.py``);
  (B, window*4 + 256) -> (B, 8).
- :class:`Exp73MLPHead`: exp73 ``MLPActionHead`` (EdgeGroundVLA ``scripts/train_exp73_trackA_heads.py``);
  (B, window, 260) -> (B, 8).
- :class:`Exp73HybridHead`: exp73 ``HybridHead`` (same file); (B, window, 260) -> ((B, 6), (B,)).

Inputs are float32, assembled as the S2V2 server does (EdgeGroundVLA
``robovlm_nav/serve/stage2_v2_inference_server.py``: ``_build_flat_feature``, ``_build_seq_feature_trans``) from a
history of :class:`HistoryFrame` (oldest first, one per call, the current frame last). Decisions follow the same
server's ``Stage2V2Model.predict``: argmax or the hybrid decode, the consecutive-rotation block, then the proximity
or learned STOP rule (:class:`DecisionRule`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from envs.actions import CLASS_ACTIONS, CLASS_NAMES, ROTATION_LABEL
from envs.keys import ACTION_LABEL

#: Class index -> label (S2V2 server, TR46, TR49 ``CLASS_NAMES``): :data:`envs.actions.CLASS_NAMES`.
STOP, FORWARD, LEFT, RIGHT, FWD_L, FWD_R, ROT_L, ROT_R = range(8)
NUM_CLASSES = len(CLASS_NAMES)
#: Discrete (lx, ly) classes of the hybrid head: STOP, FORWARD, LEFT, RIGHT, FWD+L, FWD+R.
NUM_HYBRID_CLASSES = 6

#: The joystick maximum (m/s), the magnitude of every translation command.
LINEAR_SPEED = ACTION_LABEL
#: Rotation command (rad/s) of ROT_L (+) and ROT_R (-).
ANGULAR_SPEED = ROTATION_LABEL

#: Class -> ``(linear_x, linear_y)``, exactly the S2V2 server's ``ACTION_2D`` (EdgeGroundVLA
#: ``robovlm_nav/serve/stage2_v2_inference_server.py``; PROXY ``proxy_inference_server.py`` has the same table).
#: Rotations are (0, 0) in 2-D.
ACTION_2D: dict[int, tuple[float, float]] = {
    STOP: (0.0, 0.0), FORWARD: (LINEAR_SPEED, 0.0), LEFT: (0.0, LINEAR_SPEED), RIGHT: (0.0, -LINEAR_SPEED),
    FWD_L: (LINEAR_SPEED, LINEAR_SPEED), FWD_R: (LINEAR_SPEED, -LINEAR_SPEED), ROT_L: (0.0, 0.0), ROT_R: (0.0, 0.0),
}
#: Class -> ``(linear_x, linear_y, angular_z)``, exactly the S2V2 server's ``ACTION_3D`` (same file as
#: :data:`ACTION_2D`): :data:`envs.actions.CLASS_ACTIONS` by index.
ACTION_3D: dict[int, tuple[float, float, float]] = {i: CLASS_ACTIONS[name] for i, name in enumerate(CLASS_NAMES)}

#: Kosmos-2 vision width (mean over the 257 tokens of ``last_hidden_state``).
VIS_DIM = 1024
#: Stage 1 projection width.
PROJ_DIM = 256
#: Per-frame bbox fields ``[cx, cy, area, has_bbox]``.
BBOX_FIELDS = 4
#: exp49's goal ``[cx0, cy0, area0]``.
GOAL_DIM = 3
#: Per-frame width of the exp73 heads: bbox(4) + proj(256).
FRAME_DIM = BBOX_FIELDS + PROJ_DIM
#: Windows of the team's files: exp46/exp49 and Stage 2 v2 (server ``WINDOW_DEFAULT``) / exp73.
WINDOW_GOALNAV = 8
WINDOW_EXP73 = 6
#: bbox_scale of the exp73 heads (all four bbox fields are multiplied by it); older heads use 1.0.
BBOX_SCALE_EXP73 = 3.0
#: Hybrid decode: ``EXP73_AZ_THRESH`` (rad/s) and the az normalisation (the joystick maximum).
EXP73_AZ_THRESH = 0.1
AZ_SCALE = 1.15
#: exp49's goal when the first frame has no bbox.
NO_GOAL = (0.5, 0.5, 0.0)


# ------------------------------------------------------------------------------------------------ heads


class GoalNavMLP(nn.Sequential):
    """exp46 / exp49 ``build_mlp``: a bare ``nn.Sequential``, keys ``0.weight`` .. ``11.bias``.

    ``Linear(d_in,512) ReLU Dropout(0.25) Linear(512,256) ReLU Dropout(0.2) Linear(256,128) ReLU Dropout(0.1)
    Linear(128,64) ReLU Linear(64,8)``. Team source: MoNaVLA ``scripts/train_v5_exp46_improved_step2.py``
    (d_in 1056 = bbox 8*4 + vis 1024; 714,184 parameters) and ``scripts/train_v5_exp49_goal_nav.py`` (d_in 1059 =
    + goal 3; 715,720 parameters). The file stores the bare Sequential's state dict under ``model_state_dict``;
    servers that wrap it as ``net`` save ``net.``-prefixed keys, which :func:`strip_net_prefix` accepts.

    Input (B, d_in) float32 (:func:`goalnav_features`); output (B, 8) logits.
    """

    def __init__(self, d_in: int = WINDOW_GOALNAV * BBOX_FIELDS + VIS_DIM) -> None:
        super().__init__(
            nn.Linear(d_in, 512), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, NUM_CLASSES),
        )
        self.d_in = d_in


def strip_net_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A :class:`GoalNavMLP` state dict from either layout: keys ``net.0.weight`` (a wrapper's, as
    ``GoalNavMLPInference`` in EdgeGroundVLA ``robovlm_nav/serve/inference_server.py`` strips them) become
    ``0.weight``; a bare Sequential's keys are returned unchanged."""
    if not any(key.startswith("net.") for key in state):
        return dict(state)
    return {key.removeprefix("net."): value for key, value in state.items()}


class Stage1ImageProj(nn.Linear):
    """Stage 1 ``image_proj``: ``nn.Linear(1024, 256)``, fp32, keys ``weight`` / ``bias``.

    Team source: MoNaVLA ``scripts/train_exp54_stage1_v2_frame_level.py`` (Stage 1 v2; EdgeGroundVLA
    ``scripts/train_stage1_v3_5cls_owl_fastloss.py`` for v3). The Stage 1 file is
    ``{"image_proj": {"weight", "bias"}, "text_proj": {...}, "anchor_raw": (3 or 5, 2048), "val_acc"}``; only
    ``image_proj`` is used at inference (its state dict is the file's ``image_proj`` entry; 262,400 parameters).
    Use it through :func:`project_vision`. Input (B, 1024) float32; output (B, 256).
    """

    def __init__(self, in_features: int = VIS_DIM, out_features: int = PROJ_DIM) -> None:
        super().__init__(in_features, out_features)


class ActionMLP(nn.Module):
    """Stage 2 v2 ``ActionMLP``: ``net.0`` .. ``net.9``.

    ``Linear(d_in,256) ReLU Dropout(0.25) Linear(256,128) ReLU Dropout(0.2) Linear(128,64) ReLU Dropout(0.1)
    Linear(64,8)`` with ``d_in = window*4 + 256`` (288 at window 8: 115,656 parameters). Team source:
    EdgeGroundVLA ``scripts/train_exp54_stage2_v2_action.py`` (and the S2V2 server's copy); the file stores it
    under ``mlp``.

    Input (B, d_in) float32 (:func:`stage2_v2_features`); output (B, 8) logits.
    """

    def __init__(self, d_in: int = WINDOW_GOALNAV * BBOX_FIELDS + PROJ_DIM) -> None:
        super().__init__()
        self.d_in = d_in
        self.net = nn.Sequential(
            nn.Linear(d_in, 256), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(64, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d_in) float32 -> (B, 8) logits."""
        return self.net(x)


class Exp73MLPHead(nn.Module):
    """exp73 ``MLPActionHead``: ``net.0`` / ``net.3`` / ``net.6`` over the frame-major flattened window.

    ``Linear(window*frame_dim,512) ReLU Dropout(0.25) Linear(512,128) ReLU Dropout(0.1) Linear(128,8)``
    (865,928 parameters at window 6, frame_dim 260). Team source: EdgeGroundVLA
    ``scripts/train_exp73_trackA_heads.py`` / ``scripts/train_exp73_stage1v3_heads.py`` (the deployed
    ``exp73_owl_stage1v3_v6_mlp.pt``); the server copy ``Exp73MLPHead`` has Dropout(0.2) in the second slot,
    identical at eval. The file stores it under ``model``.

    Input (B, window, frame_dim) float32 (:func:`exp73_sequence`), flattened oldest frame first; output (B, 8).
    """

    def __init__(self, frame_dim: int = FRAME_DIM, window: int = WINDOW_EXP73) -> None:
        super().__init__()
        self.frame_dim, self.window = frame_dim, window
        self.net = nn.Sequential(
            nn.Linear(frame_dim * window, 512), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(512, 128), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(128, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, window, frame_dim) float32 -> (B, 8) logits."""
        return self.net(x.flatten(1))


class Exp73HybridHead(nn.Module):
    """exp73 ``HybridHead``: shared ``trunk``, 6-way (lx, ly) ``disc_head`` and a tanh ``az_head``.

    ``trunk = Linear(window*frame_dim,512) ReLU Dropout(0.25) Linear(512,128) ReLU``;
    ``disc_head = Linear(128,6)`` (STOP, FORWARD, LEFT, RIGHT, FWD+L, FWD+R);
    ``az_head = Linear(128,32) ReLU Linear(32,1) Tanh`` (az / 1.15). 869,831 parameters at window 6, frame_dim 260.
    Team source: EdgeGroundVLA ``scripts/train_exp73_trackA_heads.py`` (identical to the S2V2 server's
    ``Exp73HybridHead`` and ``inference_server.py``'s ``_HybridHead``). Decode with :func:`hybrid_classes`.

    Input (B, window, frame_dim) float32; output ``(disc_logits (B, 6), az (B,))``.
    """

    def __init__(self, frame_dim: int = FRAME_DIM, window: int = WINDOW_EXP73) -> None:
        super().__init__()
        self.frame_dim, self.window = frame_dim, window
        self.trunk = nn.Sequential(
            nn.Linear(frame_dim * window, 512), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(512, 128), nn.ReLU(),
        )
        self.disc_head = nn.Linear(128, NUM_HYBRID_CLASSES)
        self.az_head = nn.Sequential(nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, window, frame_dim) float32 -> ``(disc_logits (B, 6), az (B,) in [-1, 1])``."""
        h = self.trunk(x.flatten(1))
        return self.disc_head(h), self.az_head(h).squeeze(-1)


# ------------------------------------------------------------------------------------------------ inputs


class HistoryFrame(NamedTuple):
    """One call's entry of the server's history (``{cx, cy, area, has_bbox, vis_feat}``).

    ``cx``, ``cy``, ``area`` are the grounder's output in [0, 1] (before ``bbox_scale``; OWL-v2's served area is
    already ``min(3*raw, 1)``); ``has_bbox`` is False for a miss (whose fill values the grounder chooses).
    ``vis_feat`` is that frame's vision feature: (1024,) raw Kosmos-2 mean for exp46/exp49, (256,) L2-normalised
    projection (:func:`project_vision`) for Stage 2 v2 / exp73, or ``None`` (exp73 then uses zeros, as the
    server).
    """

    cx: float
    cy: float
    area: float
    has_bbox: bool
    vis_feat: torch.Tensor | None = None


def window_indices(history_len: int, window: int) -> list[int]:
    """History indices of a window, oldest first: ``min(max(0, n-1-(window-1-k)), n-1)`` for k in 0..window-1.

    The last ``window`` entries, the oldest repeated at the front while the history is shorter (the server's
    ``_build_flat_feature`` / ``_build_seq_feature_trans``; training's ``max(0, t-(window-1-k))`` is the same with
    ``n = t+1``).

    Raises:
        ValueError: an empty history or a window below 1.
    """
    if history_len < 1 or window < 1:
        raise ValueError(f"window_indices needs a non-empty history and window >= 1, got {history_len}, {window}")
    return [min(max(0, history_len - 1 - (window - 1 - k)), history_len - 1) for k in range(window)]


def pad_window(history: Sequence[HistoryFrame], window: int) -> list[HistoryFrame]:
    """The last ``window`` frames, padded at the front by repeating the oldest (:func:`window_indices`)."""
    return [history[i] for i in window_indices(len(history), window)]


def bbox_rows(frames: Sequence[HistoryFrame], bbox_scale: float = 1.0,
              device: torch.device | str | None = None) -> torch.Tensor:
    """(len(frames), 4) float32 rows ``[cx, cy, area, float(has_bbox)] * bbox_scale``.

    All four fields are scaled, has_bbox included (0 or ``bbox_scale``): exp73 uses 3.0, Stage 2 v2 and
    exp46/exp49 1.0. Computed as the server does (a float32 tensor times the scale).
    """
    rows = [[f.cx, f.cy, f.area, float(f.has_bbox)] for f in frames]
    return torch.tensor(rows, dtype=torch.float32, device=device) * bbox_scale


def _current_vis(history: Sequence[HistoryFrame], expected: int) -> torch.Tensor:
    if not history:
        raise ValueError("the history is empty")
    vis = history[-1].vis_feat
    if vis is None or vis.shape != (expected,):
        shape = None if vis is None else tuple(vis.shape)
        raise ValueError(f"the current frame's vis_feat must have shape ({expected},), got {shape}")
    return vis.to(torch.float32)


def exp49_goal(first: HistoryFrame) -> torch.Tensor:
    """exp49's episode goal, (3,) float32: ``[cx, cy, area]`` of the episode's first frame if it has a bbox, else
    ``[0.5, 0.5, 0.0]``; fixed for the whole episode (TR49 ``build_dataset``; PROXY captures it on the first
    ``predict`` call)."""
    goal = (first.cx, first.cy, first.area) if first.has_bbox else NO_GOAL
    return torch.tensor(goal, dtype=torch.float32)


def goalnav_features(history: Sequence[HistoryFrame], window: int = WINDOW_GOALNAV,
                     goal: torch.Tensor | None = None, vis_dim: int = VIS_DIM) -> torch.Tensor:
    """exp46 / exp49 input, (1, d_in) float32: ``[bbox(window*4), vis(vis_dim: 1024) of the current frame,
    goal(3)]``.

    bbox rows are unscaled (:func:`bbox_rows`), oldest first, padded by repeating the oldest frame (TR46 / TR49
    ``build_dataset``); ``goal`` (:func:`exp49_goal`) is appended for exp49 only (d_in 1059; exp46 1056).
    """
    vis = _current_vis(history, vis_dim)
    parts = [bbox_rows(pad_window(history, window), 1.0, vis.device).flatten(), vis]
    if goal is not None:
        parts.append(goal.to(device=vis.device, dtype=torch.float32))
    return torch.cat(parts).unsqueeze(0)


def stage2_v2_features(history: Sequence[HistoryFrame], window: int = WINDOW_GOALNAV,
                       bbox_scale: float = 1.0, proj_dim: int = PROJ_DIM) -> torch.Tensor:
    """Stage 2 v2 input, (1, window*4 + proj_dim) float32: ``[bbox(window*4) * bbox_scale, proj(256)]``.

    Only the current (last) frame's projected vision feature is used (S2V2 ``_build_flat_feature``); the bbox
    window is padded by repeating the oldest frame. The team's Stage 2 v2 files carry no ``bbox_scale``, so 1.0.
    """
    vis = _current_vis(history, proj_dim)
    return torch.cat([bbox_rows(pad_window(history, window), bbox_scale, vis.device).flatten(), vis]).unsqueeze(0)


def exp73_sequence(history: Sequence[HistoryFrame], window: int = WINDOW_EXP73,
                   bbox_scale: float = BBOX_SCALE_EXP73, proj_dim: int = PROJ_DIM) -> torch.Tensor:
    """exp73 input, (1, window, 4 + proj_dim) float32: per frame ``[bbox(4) * bbox_scale, proj(256) of that
    frame]``, oldest frame first (S2V2 ``_build_seq_feature_trans``; TR73 ``build_windows``).

    Each frame keeps its own vision feature (a frame without one gets zeros, as the server); the window is padded by
    repeating the oldest frame, so frame 0 alone gives ``window`` copies of itself.
    """
    if not history:
        raise ValueError("the history is empty")
    frames = pad_window(history, window)
    device = next((f.vis_feat.device for f in frames if f.vis_feat is not None), None)
    vis = torch.stack([torch.zeros(proj_dim, device=device) if f.vis_feat is None
                       else f.vis_feat.to(device=device, dtype=torch.float32) for f in frames])
    return torch.cat([bbox_rows(frames, bbox_scale, device), vis], dim=1).unsqueeze(0)


def mean_vision_feature(last_hidden_state: torch.Tensor) -> torch.Tensor:
    """Kosmos-2 vision feature, (B, 1024) float32: the mean of ``last_hidden_state`` (B, 257, 1024; fp16 in the
    team's code) over all tokens, CLS included, cast to float32 (S2V2 ``Stage1Encoder.encode_image``; TR46
    ``extract_vision_features``). No post-layernorm, no L2 norm: exp46/exp49 take it as is."""
    return last_hidden_state.mean(dim=1).float()


def project_vision(image_proj: nn.Module, mean_feature: torch.Tensor) -> torch.Tensor:
    """``F.normalize(image_proj(mean_feature), dim=-1)``: (B, 1024) float32 -> (B, 256) float32, unit L2 norm
    (eps 1e-12), as the S2V2 server's ``Stage1Encoder.encode_image`` and the exp73 training caches."""
    return F.normalize(image_proj(mean_feature), dim=-1)


# ------------------------------------------------------------------------------------------------ decisions


def argmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """(B, 8) logits -> (B,) int64 class indices (``logits.argmax(dim=-1)``; ties go to the lowest index)."""
    return logits.argmax(dim=-1)


def hybrid_classes(disc_logits: torch.Tensor, az: torch.Tensor, az_thresh: float = EXP73_AZ_THRESH,
                   az_scale: float = AZ_SCALE) -> torch.Tensor:
    """Hybrid decode, (B, 6) logits and (B,) tanh az -> (B,) int64 classes 0..7.

    The discrete argmax gives classes 0..5; a STOP becomes ROT_L (6) when ``az > az_thresh/az_scale`` and ROT_R
    (7) when ``az < -az_thresh/az_scale`` (strictly; 0.1/1.15 in tanh units). az is never used as a velocity.
    Team source: the S2V2 server's exp73_hybrid branch of ``predict`` (TR73 ``hybrid_combine`` is the same).
    """
    classes = disc_logits.argmax(dim=-1)
    is_stop = classes == STOP
    out = classes.clone()
    out[is_stop & (az > az_thresh / az_scale)] = ROT_L
    out[is_stop & (az < -az_thresh / az_scale)] = ROT_R
    return out


def proximity_stop(history: Sequence[HistoryFrame], area_threshold: float = 0.25, cx_tolerance: float = 0.35,
                   consec_frames: int = 3) -> bool:
    """The server's proximity STOP: the last ``consec_frames`` history frames all have a bbox with
    ``area >= area_threshold`` and ``|cx - 0.5| <= cx_tolerance``; False while the history is shorter.

    The area tested is the history's (the grounder's output, before ``bbox_scale``). Defaults: ``VLA_STOP_AREA``
    0.25, ``VLA_STOP_CX_TOL`` 0.35, ``VLA_STOP_CONSEC`` 3.
    """
    if consec_frames < 1:
        raise ValueError(f"consec_frames must be >= 1, got {consec_frames}")
    last_n = history[-consec_frames:]
    return len(last_n) >= consec_frames and all(
        f.has_bbox and f.area >= area_threshold and abs(f.cx - 0.5) <= cx_tolerance for f in last_n)


def learned_stop_latch(pred_class: int, has_bbox: bool, step: int, latched: bool,
                       min_steps: int = 3) -> tuple[int, bool]:
    """The server's learned STOP, -> ``(class, latched)``.

    Once latched, every call is STOP. A STOP prediction latches when the current frame has a bbox and
    ``step >= min_steps`` (``step`` = the 0-based call index, ``VLA_STOP_LEARNED_MIN_STEPS`` 3); otherwise the
    class is left as predicted (a STOP stays STOP for that call, without latching).
    """
    if latched:
        return STOP, True
    return pred_class, pred_class == STOP and has_bbox and step >= min_steps


def blocks_rotation(pred_class: int, last_pred_class: int | None) -> bool:
    """The newest server's consecutive-rotation block: a rotation right after a rotation (the previous call's
    final class) is not executed (zero action; the class is reported unchanged)."""
    return pred_class in (ROT_L, ROT_R) and last_pred_class in (ROT_L, ROT_R)


@dataclasses.dataclass(frozen=True)
class Decision:
    """One call's outcome (the S2V2 ``/predict`` fields).

    Attributes:
        pred_class: final class 0..7 (after the STOP rule; unchanged by the rotation block).
        label: ``CLASS_NAMES[pred_class]``.
        action: ``(lx, ly)`` from :data:`ACTION_2D`, zeros when the rotation was blocked.
        action_3d: ``(lx, ly, az)`` from :data:`ACTION_3D`, zeros when the rotation was blocked.
        blocked_second_rotation: the rotation block fired.
        proximity_override: proximity mode turned the call into STOP.
        stop_latched: learned mode's latch after this call (False in proximity mode).
    """

    pred_class: int
    label: str
    action: tuple[float, float]
    action_3d: tuple[float, float, float]
    blocked_second_rotation: bool
    proximity_override: bool
    stop_latched: bool


class DecisionRule:
    """The S2V2 server's rules after the head, per episode (``Stage2V2Model.predict``, newest version).

    Order: rotation block (:func:`blocks_rotation`) against the previous call's final class; the STOP rule
    (``stop_mode="proximity"``, the code default: :func:`proximity_stop`; ``"learned"``, the deployed one:
    :func:`learned_stop_latch`); then bookkeeping (call count, last class). :meth:`reset` starts an episode.

    Args:
        stop_mode: ``"proximity"`` or ``"learned"``.
        area_threshold, cx_tolerance, consec_frames: :func:`proximity_stop`'s thresholds.
        learned_min_steps: :func:`learned_stop_latch`'s cold-start guard.
    """

    STOP_MODES = ("proximity", "learned")

    def __init__(self, stop_mode: str = "proximity", area_threshold: float = 0.25, cx_tolerance: float = 0.35,
                 consec_frames: int = 3, learned_min_steps: int = 3) -> None:
        if stop_mode not in self.STOP_MODES:
            raise ValueError(f"stop_mode must be one of {self.STOP_MODES}, got {stop_mode!r}")
        self.stop_mode = stop_mode
        self.area_threshold, self.cx_tolerance, self.consec_frames = area_threshold, cx_tolerance, consec_frames
        self.learned_min_steps = learned_min_steps
        self.reset()

    def reset(self) -> None:
        """Forget the episode: call count 0, no previous class, latch released (the server's ``reset``)."""
        self.inference_count = 0
        self.last_pred_class: int | None = None
        self.stop_latched = False

    def step(self, pred_class: int, history: Sequence[HistoryFrame]) -> Decision:
        """Apply the rules to the head's class for this call; ``history`` ends with this call's frame."""
        if not history:
            raise ValueError("the history is empty (it must end with this call's frame)")
        blocked = blocks_rotation(pred_class, self.last_pred_class)
        proximity = False
        if self.stop_mode == "learned":
            pred_class, self.stop_latched = learned_stop_latch(
                pred_class, history[-1].has_bbox, self.inference_count, self.stop_latched, self.learned_min_steps)
        elif proximity_stop(history, self.area_threshold, self.cx_tolerance, self.consec_frames):
            pred_class, proximity = STOP, True
        self.inference_count += 1
        self.last_pred_class = pred_class
        return Decision(
            pred_class=pred_class, label=CLASS_NAMES[pred_class],
            action=(0.0, 0.0) if blocked else ACTION_2D[pred_class],
            action_3d=(0.0, 0.0, 0.0) if blocked else ACTION_3D[pred_class],
            blocked_second_rotation=blocked, proximity_override=proximity, stop_latched=self.stop_latched)
