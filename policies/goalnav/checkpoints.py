"""Recognise and load the team's goal-navigation checkpoint files (see :mod:`policies.goalnav.heads`).

Layouts (``torch.save`` dicts, as their training scripts write them):

==================  ===================================================================================
kind                file dict
==================  ===================================================================================
``exp46``           ``{"model_state_dict", "d_in": 1056, "window": 8, "vis_dim": 1024, "overall_acc",
                    "confusion"}`` (bare-Sequential keys ``0.weight`` ..; ``net.`` prefix accepted)
``exp49``           same plus ``"goal_dim": 3`` (``d_in`` 1059)
``stage1``          ``{"image_proj": {"weight", "bias"}, "text_proj": {...}, "anchor_raw", "val_acc"}``
                    (v3 adds ``"dir_idx"``)
``stage2_v2``       ``{"mlp", "val_acc", "d_in", "head": "mlp", "window", "augment", "noise_scale",
                    "aug_params"}``; no ``bbox_scale`` (1.0)
``exp73_mlp``       ``{"model", "val_acc", "head": "mlp", "arm", "window": 6, "bbox_scale": 3.0,
                    "exp": "exp73"}``; the hold-aware files keep only ``{"model", "held_success", "head",
                    "stride"[, "grounder"]}`` (window 6 and bbox_scale 3.0 then, as the S2V2 server)
``exp73_hybrid``    as ``exp73_mlp`` with ``"head": "hybrid"``
==================  ===================================================================================

The kind follows the S2V2 server's rule (EdgeGroundVLA ``robovlm_nav/serve/stage2_v2_inference_server.py``,
``Stage2V2Model.__init__``): a ``model`` entry with head ``mlp``/``hybrid`` (or ``exp == "exp73"``) is exp73, an
``mlp`` entry is Stage 2 v2; plus ``model_state_dict`` (exp46/exp49, PROXY ``GoalNavInferenceModel``) and
``image_proj`` (Stage 1). Files are read by the project's safe loader (:func:`policies.checkpoints.torch_load`:
``weights_only=True`` with a narrow allow-list, which the team's numpy-scalar ``overall_acc`` needs); the head is
built at the file's sizes and loaded with ``strict=True`` after every name and shape is checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from policies.checkpoints import CheckpointError, CheckpointNotFoundError, compare_state_dicts, torch_load
from policies.goalnav.heads import (
    BBOX_FIELDS,
    BBOX_SCALE_EXP73,
    GOAL_DIM,
    PROJ_DIM,
    VIS_DIM,
    WINDOW_EXP73,
    WINDOW_GOALNAV,
    ActionMLP,
    Exp73HybridHead,
    Exp73MLPHead,
    GoalNavMLP,
    Stage1ImageProj,
    strip_net_prefix,
)

#: Every kind :func:`recognise_goalnav_checkpoint` returns.
KINDS = ("exp46", "exp49", "stage1", "stage2_v2", "exp73_mlp", "exp73_hybrid")
#: The file entry holding each kind's tensors.
STATE_KEYS = {"exp46": "model_state_dict", "exp49": "model_state_dict", "stage1": "image_proj",
              "stage2_v2": "mlp", "exp73_mlp": "model", "exp73_hybrid": "model"}
#: Each kind's first layer, whose input width is the head's d_in.
FIRST_LAYER = {"exp46": "0.weight", "exp49": "0.weight", "stage1": "weight", "stage2_v2": "net.0.weight",
               "exp73_mlp": "net.0.weight", "exp73_hybrid": "trunk.0.weight"}
#: Accepted ``head`` values of ``model`` files (the training scripts' and the mirror-augmented files').
EXP73_HEADS = {"mlp": "exp73_mlp", "hybrid": "exp73_hybrid", "exp73_mlp": "exp73_mlp",
               "exp73_hybrid": "exp73_hybrid"}
#: How many key names an error lists per category.
MAX_KEYS_IN_MESSAGE = 8


class GoalNavCheckpointError(CheckpointError):
    """A goal-nav checkpoint is of the wrong role, inconsistent, or does not fit its head.

    The message is one line, ``<file>: <field>: <problem>``. Attributes: ``path`` (the file) and ``field`` (the
    dict entry or state-dict key at fault).
    """

    def __init__(self, path: str | Path, field: str, problem: str) -> None:
        self.path, self.field = str(path), field
        super().__init__(f"{path}: {field}: {problem}")


@dataclasses.dataclass(frozen=True)
class GoalNavCheckpoint:
    """A recognised goal-nav checkpoint with its head built and loaded (strict, eval mode, CPU float32).

    Attributes:
        path: the file (as given).
        kind: one of :data:`KINDS`.
        window: frames per input window (``None`` for ``stage1``).
        bbox_scale: factor on all four bbox fields (3.0 for exp73, 1.0 for exp46/exp49 and Stage 2 v2; ``None``
            for ``stage1``).
        d_in: the head's input width (exp73: ``window * frame_dim``; stage1: 1024).
        goal_dim: 3 for exp49, else 0.
        head: the loaded module (:class:`~policies.goalnav.heads.GoalNavMLP`, ``Stage1ImageProj``, ``ActionMLP``,
            ``Exp73MLPHead`` or ``Exp73HybridHead``).
        fallbacks: fields absent from the file and filled with the S2V2 server's defaults (``window``,
            ``bbox_scale``).
        meta: the file's plain scalar entries (``val_acc``, ``overall_acc``, ``held_success``, ``stride``, ...).
    """

    path: str
    kind: str
    window: int | None
    bbox_scale: float | None
    d_in: int
    goal_dim: int
    head: nn.Module
    fallbacks: tuple[str, ...] = ()
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def _kind(ckpt: Mapping[str, Any], path: str | Path, expect: str | None) -> str:
    """The file's kind, checked against the role the caller expects (``"head"``, ``"stage1"`` or ``None``)."""
    if "image_proj" in ckpt:
        if expect == "head":
            raise GoalNavCheckpointError(path, "image_proj", "this is a Stage 1 projection file (image_proj, "
                                         "text_proj, anchor_raw), not a navigation head; give it as the Stage 1 file")
        return "stage1"
    if "model_state_dict" in ckpt:
        kind = "exp46"  # or exp49: told apart by the goal (recognise_goalnav_checkpoint)
    elif "mlp" in ckpt:
        head = ckpt.get("head", "mlp")
        if not isinstance(head, str) or head != "mlp":
            raise GoalNavCheckpointError(path, "head", f"Stage 2 v2 head {head!r} is not supported (only 'mlp')")
        kind = "stage2_v2"
    elif "model" in ckpt:
        head = ckpt.get("head", "mlp")
        if not isinstance(head, str) or head not in EXP73_HEADS:
            raise GoalNavCheckpointError(path, "head", f"head {head!r} is not an exp73 head (expected one of "
                                         f"{sorted(EXP73_HEADS)})")
        kind = EXP73_HEADS[head]
    else:
        raise GoalNavCheckpointError(path, "keys", "not a goal-nav checkpoint: expected one of image_proj, "
                                     f"model_state_dict, mlp, model; found {sorted(map(str, ckpt))[:12]}")
    if expect == "stage1":
        shown = "exp46/exp49" if kind == "exp46" else kind
        raise GoalNavCheckpointError(path, STATE_KEYS[kind], f"a head file ({shown}), not a Stage 1 projection "
                                     "file (which holds image_proj)")
    return kind


def _number(ckpt: Mapping[str, Any], path: str | Path, field: str, as_type: type, default: Any,
            fallbacks: list[str] | None = None) -> Any:
    """``ckpt[field]`` as a positive ``as_type`` (int or float; numpy and 0-d tensor scalars accepted), or
    ``default`` (recorded in ``fallbacks``) when absent."""
    if field not in ckpt:
        if fallbacks is not None:
            fallbacks.append(field)
        return default
    value = _scalar(ckpt[field])
    allowed = (int,) if as_type is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed) or value <= 0:
        raise GoalNavCheckpointError(path, field, f"must be a positive {as_type.__name__}, got {value!r}"[:160])
    return as_type(value)


def _state(ckpt: Mapping[str, Any], path: str | Path, key: str) -> dict[str, torch.Tensor]:
    state = ckpt[key]
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise GoalNavCheckpointError(path, key, "must be a non-empty state dict (names -> tensors)")
    return dict(state)


def _listing(items: list[str]) -> str:
    more = len(items) - MAX_KEYS_IN_MESSAGE
    return ", ".join(items[:MAX_KEYS_IN_MESSAGE]) + (f", ... (+{more} more)" if more > 0 else "")


def _load_strict(head: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, key: str) -> nn.Module:
    """``head.load_state_dict(state, strict=True)`` after a name/shape check that names every difference."""
    missing, unexpected, mismatched = compare_state_dicts(head.state_dict(), state)
    problems = []
    if missing:
        problems.append(f"missing keys {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listing(unexpected)}")
    if mismatched:
        problems.append("wrong shapes " + _listing([f"{k} file {list(a)} vs {type(head).__name__} {list(b)}"
                                                    for k, a, b in mismatched]))
    if problems:
        raise GoalNavCheckpointError(path, key, "; ".join(problems))
    head.load_state_dict(state, strict=True)
    return head.eval()


def _scalar(value: Any) -> Any:
    """A numpy scalar or 0-d tensor as its Python number; anything else unchanged."""
    return value.item() if hasattr(value, "item") and getattr(value, "shape", None) == () else value


def _meta(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The file's plain scalar entries (numbers, strings, booleans)."""
    meta = {str(key): _scalar(value) for key, value in ckpt.items()}
    return {key: value for key, value in meta.items() if isinstance(value, (str, int, float, bool))}


def recognise_goalnav_checkpoint(ckpt: Mapping[str, Any], path: str | Path, *, expect: str | None = None,
                                 window: int | None = None, vis_dim: int = VIS_DIM,
                                 proj_dim: int = PROJ_DIM) -> GoalNavCheckpoint:
    """Recognise a loaded team checkpoint dict, build its head and load it strictly.

    Args:
        ckpt: the file's dict (``torch.load(path, weights_only=True, map_location="cpu")`` or
            :func:`policies.checkpoints.torch_load`).
        path: the file, for messages.
        expect: ``"head"`` (a Stage 1 file is refused), ``"stage1"`` (a head file is refused) or ``None``.
        window: the window to use instead of the file's ``window`` (it must fit the weights); ignored for Stage 1.
        vis_dim: Kosmos-2 feature width the exp46/exp49 and Stage 1 inputs have (1024).
        proj_dim: Stage 1 projection width of Stage 2 v2 / exp73 inputs (256; exp73 frames are ``4 + proj_dim``).

    Returns:
        A :class:`GoalNavCheckpoint`. Window and bbox_scale come from the file, else the S2V2 server's fallbacks:
        exp73 6 / 3.0, Stage 2 v2 8 / 1.0, exp46/exp49 8 / (no scale) 1.0.

    Raises:
        GoalNavCheckpointError: wrong role, unknown layout or head, a bad metadata value, a window (or goal_dim,
            d_in, vis_dim) that does not fit the weights, missing/unexpected keys or wrong shapes; one line naming
            the file and the field.
    """
    if not isinstance(ckpt, Mapping):
        raise GoalNavCheckpointError(path, "file", f"expected a dict, got {type(ckpt).__name__}")
    kind = _kind(ckpt, path, expect)
    key = STATE_KEYS[kind]
    state = _state(ckpt, path, key)
    meta = _meta(ckpt)
    if kind == "stage1":
        head = _load_strict(Stage1ImageProj(vis_dim, proj_dim), state, path, key)
        return GoalNavCheckpoint(str(path), kind, None, None, vis_dim, 0, head, (), meta)

    if kind == "exp46":  # exp46 or exp49, told apart by the goal below
        state = strip_net_prefix(state)
    fallbacks: list[str] = []
    file_window = _number(ckpt, path, "window", int, WINDOW_EXP73 if kind.startswith("exp73") else WINDOW_GOALNAV,
                          fallbacks)
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise GoalNavCheckpointError(path, "window", f"requested window must be a positive int, got {window!r}")
        fallbacks = [f for f in fallbacks if f != "window"]
    use_window = file_window if window is None else window
    first = FIRST_LAYER[kind]
    weight = state.get(first)
    file_d_in = int(weight.shape[1]) if weight is not None and weight.dim() == 2 else None

    goal_dim = 0
    if kind.startswith("exp73"):
        bbox_scale = _number(ckpt, path, "bbox_scale", float, BBOX_SCALE_EXP73, fallbacks)
        per_window, fixed, formula = BBOX_FIELDS + proj_dim, 0, f"{use_window}*{BBOX_FIELDS + proj_dim}"
        head_cls = Exp73MLPHead if kind == "exp73_mlp" else Exp73HybridHead
        head: nn.Module = head_cls(frame_dim=per_window, window=use_window)
    elif kind == "stage2_v2":
        bbox_scale = _number(ckpt, path, "bbox_scale", float, 1.0, fallbacks)
        per_window, fixed, formula = BBOX_FIELDS, proj_dim, f"{use_window}*{BBOX_FIELDS}+{proj_dim}"
        head = ActionMLP(use_window * per_window + fixed)
    else:
        bbox_scale = 1.0
        file_vis = _number(ckpt, path, "vis_dim", int, vis_dim)
        if file_vis != vis_dim:
            raise GoalNavCheckpointError(path, "vis_dim", f"the file says {file_vis}, the features given are "
                                         f"{vis_dim} wide")
        with_goal = use_window * BBOX_FIELDS + vis_dim + GOAL_DIM
        goal_dim = _number(ckpt, path, "goal_dim", int, GOAL_DIM if file_d_in == with_goal else 0)
        if goal_dim not in (0, GOAL_DIM):
            raise GoalNavCheckpointError(path, "goal_dim", f"must be {GOAL_DIM} (cx0, cy0, area0), got {goal_dim}")
        kind = "exp49" if goal_dim else "exp46"
        per_window, fixed = BBOX_FIELDS, vis_dim + goal_dim
        formula = f"{use_window}*{BBOX_FIELDS}+{vis_dim}" + (f"+{goal_dim}" if goal_dim else "")
        head = GoalNavMLP(use_window * per_window + fixed)
    d_in = use_window * per_window + fixed
    if file_d_in is not None:
        if file_d_in != d_in:
            fits = (file_d_in - fixed) / per_window
            hint = f" (window {int(fits)})" if fits.is_integer() and fits >= 1 else ""
            raise GoalNavCheckpointError(path, "window", f"{'requested ' if window is not None else ''}window "
                                         f"{use_window} needs {first} to take {formula}={d_in} inputs, the file's "
                                         f"takes {file_d_in}{hint}")
        stated = _number(ckpt, path, "d_in", int, d_in)
        if stated != d_in:
            raise GoalNavCheckpointError(path, "d_in", f"the file says {stated}, its weights take {d_in}")
    head = _load_strict(head, state, path, key)
    return GoalNavCheckpoint(str(path), kind, use_window, bbox_scale, d_in, goal_dim, head, tuple(fallbacks), meta)


def is_goalnav_layout(ckpt: Any) -> bool:
    """Whether a loaded file dict has one of the goal-nav layouts (module doc) rather than a VLA head's: a Stage 1
    ``image_proj`` dict, or a head state dict whose first layer is a bare ``0.weight`` / ``net.0.weight`` (exp46/49,
    Stage 2 v2, exp73) or ``trunk.0.weight`` (the hybrid)."""
    if not isinstance(ckpt, Mapping):
        return False
    if isinstance(ckpt.get("image_proj"), Mapping) and "weight" in ckpt["image_proj"]:
        return True
    for key in ("model_state_dict", "mlp", "model"):
        state = ckpt.get(key)
        if isinstance(state, Mapping) and any(k in state for k in ("0.weight", "net.0.weight", "trunk.0.weight")):
            return key != "model_state_dict" or "0.weight" in state or "net.11.weight" in state
    return False


def load_goalnav_checkpoint(path: str | Path, *, expect: str | None = None, window: int | None = None,
                            vis_dim: int = VIS_DIM, proj_dim: int = PROJ_DIM) -> GoalNavCheckpoint:
    """Read a team goal-nav file with ``torch.load(weights_only=True, map_location="cpu")`` (the project's
    :func:`policies.checkpoints.torch_load`, whose allow-list admits the numpy scalars their files hold) and
    :func:`recognise_goalnav_checkpoint` it (same keyword arguments).

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointFormatError: corrupt, truncated, or holding objects ``weights_only`` refuses.
        GoalNavCheckpointError: as :func:`recognise_goalnav_checkpoint`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    return recognise_goalnav_checkpoint(torch_load(path), path, expect=expect, window=window, vis_dim=vis_dim,
                                        proj_dim=proj_dim)
