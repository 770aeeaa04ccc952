"""The team's deployed kind of policy in the loop: a grounder, a frozen vision feature and a small MLP over a window of
frames, deciding among the eight classes with the S2V2 server's rules (EdgeGroundVLA
``robovlm_nav/serve/stage2_v2_inference_server.py``, ``Stage2V2Model.predict``).

Registry names (each the team's file layout and input assembly, :mod:`policies.goalnav.heads`):

==============  ==================  ======  ==========  ==================================================================
name            head (file)         window  bbox scale  per frame
==============  ==================  ======  ==========  ==================================================================
``exp46``       ``GoalNavMLP``      8       1           ``[bbox x 8, vision 1024]`` (raw Kosmos-2 token mean)
``exp49``       ``GoalNavMLP``      8       1           ``[bbox x 8, vision 1024, goal cx0 cy0 area0]``
``stage2-v2``   ``ActionMLP``       8       1           ``[bbox x 8, Stage 1 projection 256]``
``exp73``       ``Exp73MLPHead``    6       3           ``[bbox * 3, projection 256]`` per frame of the window
``exp73-hybrid``  ``Exp73HybridHead``  6    3           as exp73; a STOP becomes a rotation by its az output
==============  ==================  ======  ==========  ==================================================================

One decision (:meth:`GoalNavPolicy.act`): ground the frame, or reuse the last grounding (``grounding_skip_n``: the
server grounds calls 0, 3, 6, ...; always after a rotation, and after a miss with ``reground_on_miss``); encode the
frame's vision feature (``image_mean``: Kosmos-2's ``last_hidden_state.mean(1)``, or lite's stand-in) and project
it (Stage 1 ``image_proj`` + L2 norm) where the head wants it; append ``[cx, cy, area, has_bbox, vision]`` to the
history; run the head on the window; apply the rules (the consecutive-rotation block, then the ``learned`` STOP latch
or the ``proximity`` rule: area >= ``stop_area`` with ``|cx - 0.5| <= 0.35`` on the last three frames; ``none``:
argmax, as the exp46/exp49 server); act ``ACTION_3D[class]`` (``envs.actions.CLASS_ACTIONS``).

In the cadence model (:class:`sim.evaluation.config.Latency`) a decision costs its components
(:attr:`GoalNavPolicy.step_components`): ``grounder`` only when it grounds (the grounder's own figure: OWL-v2 1.902 s
fp32 on the Jetson), ``vision`` (Kosmos-2's vision tower, 53.7 ms) and ``mlp`` (< 1 ms: 1 ms); ``--latency-component``
overrides any of them (:attr:`GoalNavPolicy.component_latencies`).

Without a checkpoint, ``exp73`` and ``exp49`` load the bundled weights (:func:`bundled_checkpoint`: trained by
``python -m sim.bundle`` on the corridor family with the ``oracle`` grounder and the ``lite`` vision feature); a team
file runs on Kosmos-2 (``--backbone-path``) and, for Stage 2 v2 and exp73, needs its Stage 1 file
(``stage1=FILE``: ``stage1_v2_projs.pt`` or ``stage1_v3_5cls_owl_projs.pt``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foundations.errors import ConfigError
from foundations.files import read_json
from policies.backbones import make_backbone, stream_widths
from policies.base import Policy
from policies.catalog import GOALNAV_VARIANTS
from policies.checkpoints import CheckpointError
from policies.goalnav.checkpoints import GoalNavCheckpoint, load_goalnav_checkpoint, recognise_goalnav_checkpoint
from policies.goalnav.grounders import Grounder, build_grounder
from policies.goalnav.heads import (
    ACTION_3D,
    PROJ_DIM,
    ROT_L,
    ROT_R,
    DecisionRule,
    HistoryFrame,
    argmax_classes,
    exp49_goal,
    exp73_sequence,
    goalnav_features,
    hybrid_classes,
    project_vision,
    stage2_v2_features,
)

#: Registry name -> the checkpoint kind it runs (:data:`policies.goalnav.checkpoints.KINDS`).
VARIANTS = GOALNAV_VARIANTS
#: One line per variant (``python -m sim.policies``): the team's class and file.
DESCRIPTIONS = {
    "exp46": "team architecture: exp46 GoalNavMLP over 8 frames of [cx, cy, area, has_bbox] + Kosmos-2 vision",
    "exp49": "team architecture: exp49 GoalNavMLP, exp46 + the episode's goal (cx0, cy0, area0); bundled on lite",
    "stage2-v2": "team architecture: Stage 2 v2 ActionMLP over 8 boxes + the Stage 1 projection",
    "exp73": "team architecture: exp73 MLPActionHead over 6 frames of [box x 3, projection] (deployed 2026-08); "
             "bundled on lite",
    "exp73-hybrid": "team architecture: exp73 HybridHead, 6-way lx/ly + az (a STOP becomes a rotation)",
}
#: The kinds whose frames carry the Stage 1 projection (the others the raw vision feature).
PROJECTED = frozenset({"stage2_v2", "exp73_mlp", "exp73_hybrid"})
#: Default STOP rule per kind: exp46/exp49 were served by argmax alone (PROXY ``GoalNavInferenceModel``); the S2V2
#: server's deployment runs the learned latch (``go.sh`` sets ``VLA_STOP_MODE=learned``).
STOP_MODES = {"exp46": "none", "exp49": "none", "stage2_v2": "learned", "exp73_mlp": "learned",
              "exp73_hybrid": "learned"}
#: The robot's latency of the non-grounder components (s): Kosmos-2's vision tower (53.7 ms,
#: ``TEAM_STACK_2026.md`` section 3; measured on a desktop GPU [?]) and the MLP (< 1 ms).
VISION_LATENCY_S = 0.0537
MLP_LATENCY_S = 0.001
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def bundled_checkpoint(name: str) -> tuple[Path, dict[str, Any]] | None:
    """``(weights file, sidecar)`` of the bundled weights of ``name`` (``policies/weights/<name>_lite.*``), or None.

    The safetensors file holds the head under ``head.`` and the Stage 1 projection under ``image_proj.``; the JSON
    sidecar the file fields of the team's layout (``window``, ``bbox_scale``, ``vis_dim``, ``goal_dim``) and the
    provenance (``backbone``, ``training_data``, ``val_acc``).
    """
    path = WEIGHTS_DIR / f"{name}_lite.safetensors"
    sidecar = path.with_suffix(".json")
    if not path.is_file() or not sidecar.is_file():
        return None
    return path, json.loads(sidecar.read_text())


def _trained(path: Path) -> tuple[Path, dict[str, Any]]:
    """A head trained by :func:`sim.training.goalnav.train_goalnav` (the bundled layout): ``(file, sidecar)``.

    Raises:
        CheckpointError: no such file, or no readable ``.json`` sidecar beside it.
    """
    sidecar = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return path, read_json(sidecar)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: its sidecar {sidecar.name} (window, vis_dim, kind) cannot be read: "
                              f"{type(exc).__name__}") from None


def team_layout(kind: str, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> tuple[dict, dict | None]:
    """A bundled (or trained) head in the team's file layouts: ``(head dict, stage1 dict or None)``, as their
    training scripts save them (:mod:`policies.goalnav.checkpoints`)."""
    head = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    proj = {k.removeprefix("image_proj."): v for k, v in state.items() if k.startswith("image_proj.")}
    fields = {k: meta[k] for k in ("window", "bbox_scale", "vis_dim", "goal_dim") if k in meta}
    if kind in ("exp46", "exp49"):
        return {"model_state_dict": head, "d_in": int(head["0.weight"].shape[1]), **fields}, None
    if kind == "stage2_v2":
        return {"mlp": head, "head": "mlp", **fields}, {"image_proj": proj}
    return {"model": head, "head": "mlp" if kind == "exp73_mlp" else "hybrid", "exp": "exp73", **fields}, \
        {"image_proj": proj}


class GoalNavPolicy(Policy):
    """A grounder + MLP policy (module doc).

    Args:
        checkpoint: the head (:class:`~policies.goalnav.checkpoints.GoalNavCheckpoint`).
        image_proj: the Stage 1 projection for the projected kinds (None otherwise).
        backbone: gives the ``image_mean`` stream (width ``image_proj.in_features`` or the head's ``vis_dim``).
        grounder: a :class:`~policies.goalnav.grounders.Grounder`.
        grounding_skip_n: ground every ``n``-th call (3 on the robot; 1: every call).
        reground_on_miss: ground again on the call after a miss (``force_reground_on_miss``: off in the server's
            code, on in the OWL-v2 deployment doc; on here, as the robot's 50.8% cache reuse over 1,088 decisions
            of 2026-08-07 suggests: a skip of 3 alone would reuse ~2/3).
        stop_mode: ``"learned"``, ``"proximity"`` or ``"none"`` (argmax only).
        stop_area, stop_cx_tolerance, stop_consec, learned_min_steps: the STOP rules' thresholds
            (``VLA_STOP_AREA`` 0.25, ``VLA_STOP_CX_TOL`` 0.35, ``VLA_STOP_CONSEC`` 3, ``VLA_STOP_LEARNED_MIN_STEPS``
            3).
        rotation_block: the newest server's block of a second consecutive rotation.
        latencies: component -> seconds on the robot (:attr:`component_latencies`).
    """

    def __init__(self, checkpoint: GoalNavCheckpoint, image_proj: torch.nn.Module | None, backbone: Any,
                 grounder: Grounder, *, grounding_skip_n: int = 3, reground_on_miss: bool = True,
                 stop_mode: str | None = None, stop_area: float = 0.25, stop_cx_tolerance: float = 0.35,
                 stop_consec: int = 3, learned_min_steps: int = 3, rotation_block: bool = True,
                 latencies: Mapping[str, float] | None = None) -> None:
        super().__init__()
        if isinstance(grounding_skip_n, bool) or not isinstance(grounding_skip_n, int) or grounding_skip_n < 1:
            raise ConfigError(f"grounding_skip_n must be a whole number >= 1, got {grounding_skip_n!r}")
        self.checkpoint, self.kind, self.head = checkpoint, checkpoint.kind, checkpoint.head
        self.image_proj = image_proj
        self.backbone, self.grounder = backbone, grounder
        self.window, self.bbox_scale = checkpoint.window, checkpoint.bbox_scale
        self.grounding_skip_n, self.reground_on_miss, self.rotation_block = grounding_skip_n, reground_on_miss, \
            rotation_block
        mode = stop_mode or STOP_MODES[self.kind]
        self.rule = DecisionRule("proximity" if mode == "none" else mode, stop_area, stop_cx_tolerance, stop_consec,
                                 learned_min_steps)
        self.stop_mode = mode
        self.component_latencies = {"grounder": grounder.default_latency_s, "vision": VISION_LATENCY_S,
                                    "mlp": MLP_LATENCY_S, **(latencies or {})}
        self._reset_episode()

    def _reset_episode(self) -> None:
        self.history: list[HistoryFrame] = []
        self.cache = None
        self.goal = None
        self.step_index = 0
        self.last_decision = None
        self.rule.reset()

    def _reset(self, instruction: str, info: dict[str, Any]) -> None:
        self._reset_episode()
        self.grounder.reset(info)  # the oracle reads the true scene here; a real grounder ignores it

    def _grounding(self, observation: Mapping[str, Any]):
        """This call's grounding: fresh, or the cached one (the server's ``use_cache`` rule)."""
        just_rotated = self.rule.last_pred_class in (ROT_L, ROT_R)
        missed = self.reground_on_miss and self.cache is not None and not self.cache.has_bbox
        cached = (self.grounding_skip_n > 1 and self.step_index > 0 and self.step_index % self.grounding_skip_n != 0
                  and self.cache is not None and not just_rotated and not missed)
        if not cached:
            self.cache = self.grounder.ground(np.asarray(observation["image"]), observation.get("state"),
                                              self.step_index)
        return self.cache, cached

    @torch.inference_mode()
    def _act(self, observation: Mapping[str, Any]) -> np.ndarray:
        if "image" not in observation:
            raise KeyError(f"{self.name} needs observation['image'] (the onboard camera)")
        grounding, cached = self._grounding(observation)
        feature = self.backbone.encode_frames(observation["image"], ("image_mean",))
        vis = project_vision(self.image_proj, feature)[0] if self.image_proj is not None else feature[0]
        self.history.append(HistoryFrame(grounding.cx, grounding.cy, grounding.area, grounding.has_bbox, vis))
        self.history = self.history[-max(self.window, self.rule.consec_frames):]
        pred = int(self._classes()[0])
        if self.stop_mode == "none":  # argmax alone (the exp46/exp49 server): no STOP rule, no rotation block
            self.rule.inference_count += 1
            self.rule.last_pred_class = pred
            action = ACTION_3D[pred]
        else:
            self.last_decision = decision = self.rule.step(pred, self.history)
            action = decision.action_3d if self.rotation_block else ACTION_3D[decision.pred_class]
        self.step_components = ("vision", "mlp") if cached else ("grounder", "vision", "mlp")
        self.step_detection = bool(grounding.has_bbox)
        self.step_index += 1
        return np.asarray(action, dtype=np.float32)

    def _classes(self) -> torch.Tensor:
        """The head's class for the current window, (1,) int64."""
        if self.kind in ("exp46", "exp49"):
            if self.kind == "exp49" and self.goal is None:
                self.goal = exp49_goal(self.history[0])
            x = goalnav_features(self.history, self.window, self.goal if self.kind == "exp49" else None,
                                 vis_dim=self.checkpoint.d_in - self.window * 4 - self.checkpoint.goal_dim)
            return argmax_classes(self.head(x))
        if self.kind == "stage2_v2":
            return argmax_classes(self.head(stage2_v2_features(self.history, self.window, self.bbox_scale,
                                                               self.proj_dim)))
        x = exp73_sequence(self.history, self.window, self.bbox_scale, self.proj_dim)
        if self.kind == "exp73_hybrid":
            return hybrid_classes(*self.head(x))
        return argmax_classes(self.head(x))

    @property
    def proj_dim(self) -> int:
        """Width of the image projection: the checkpoint's ``image_proj`` output, else :data:`PROJ_DIM` (256)."""
        return int(self.image_proj.out_features) if self.image_proj is not None else PROJ_DIM


def policy_options() -> set[str]:
    """The :class:`GoalNavPolicy` options ``build_goalnav_policy`` passes through (``grounding_skip_n``,
    ``stop_mode``, ``stop_area``, ..., ``latencies``)."""
    return {p.name for p in inspect.signature(GoalNavPolicy).parameters.values() if p.kind == p.KEYWORD_ONLY}


def describe_variant(variant: str) -> str:
    """One line on a grounder + MLP variant (its team class)."""
    return DESCRIPTIONS[variant]


def _load_pair(variant: str, kind: str, checkpoint: str | Path | None, stage1: str | Path | None,
               window: int | None, vis_dim: int) -> tuple[GoalNavCheckpoint, torch.nn.Module | None, dict[str, Any]]:
    """The head and its Stage 1 projection, from the bundled weights or the team's files; and provenance."""
    if checkpoint is None or Path(checkpoint).suffix == ".safetensors":
        bundled = bundled_checkpoint(variant) if checkpoint is None else _trained(Path(checkpoint))
        if bundled is None:
            raise ConfigError(f"{variant}: no bundled weights (exp73 and exp49 have some): give --checkpoint FILE "
                              "(the team's file)")
        path, meta = bundled
        if meta.get("kind") != kind:
            raise CheckpointError(f"{path}: kind {meta.get('kind')} (its .json): not the head of {variant} ({kind})")
        from safetensors.torch import load_file

        head_dict, stage1_dict = team_layout(kind, load_file(str(path)), meta)
        head = recognise_goalnav_checkpoint(head_dict, path, expect="head", window=window,
                                            vis_dim=int(meta["vis_dim"]), proj_dim=int(meta.get("proj_dim", PROJ_DIM)))
        proj = None if stage1_dict is None else recognise_goalnav_checkpoint(
            stage1_dict, path, expect="stage1", vis_dim=int(meta["vis_dim"])).head
        return head, proj, {"weights": str(path), "backbone": meta["backbone"],
                            "training data": meta.get("training_data", "?")}
    head = load_goalnav_checkpoint(checkpoint, expect="head", window=window, vis_dim=vis_dim)
    if head.kind != kind:
        other = next(n for n, k in VARIANTS.items() if k == head.kind)
        raise CheckpointError(f"{checkpoint}: kind {head.kind}: the head of --policy {other}, not of {variant} "
                              f"({kind})")
    proj = None
    if kind in PROJECTED:
        if stage1 is None:
            raise ConfigError(f"{checkpoint}: a {kind} head reads the Stage 1 projection: give its Stage 1 file "
                              "with --policy-arg stage1=FILE (the team's stage1_v2_projs.pt or "
                              "stage1_v3_5cls_owl_projs.pt)")
        proj = load_goalnav_checkpoint(stage1, expect="stage1", vis_dim=vis_dim).head
    return head, proj, {"weights": str(checkpoint), "backbone": "kosmos2"}


def build_goalnav_policy(variant: str, *, checkpoint: str | Path | None = None, path: str | Path | None = None,
                         stage1: str | Path | None = None, backbone: str = "auto",
                         backbone_path: str | Path | None = None, device: str = "cpu", grounder: str = "oracle",
                         grounder_path: str | Path | None = None, grounder_args: Mapping[str, Any] | None = None,
                         window: int | None = None, num_threads: int | None = None, **options: Any) -> GoalNavPolicy:
    """Build the grounder + MLP policy ``variant`` (a :data:`VARIANTS` name).

    Args:
        checkpoint: the team's head file, or a ``.safetensors`` head of :func:`sim.training.goalnav.train_goalnav`
            (with its ``.json``); ``path``: the same, from ``"exp73:FILE"``; None: the bundled weights.
        stage1: the team's Stage 1 file (Stage 2 v2, exp73 team files).
        backbone: ``"auto"`` (``lite`` for the bundled weights, ``kosmos2`` for a team file), ``"lite"``,
            ``"kosmos2"``, ``"tiny-kosmos2"``: where the ``image_mean`` feature comes from (``auto``: ``lite`` for our
            weights, ``kosmos2`` for a team file).
        backbone_path: Kosmos-2 folder (a team file's vision feature).
        device: torch device of the backbone (the heads are small and stay on the CPU).
        grounder: ``"oracle"`` (default), ``"owlv2"`` or ``"paligemma2"`` (:func:`build_grounder`);
            ``grounder_path``: the real grounder's local folder; ``grounder_args``: its keyword arguments (the oracle's
            error model: ``miss``, ``cold_start``, ``false_positive``, ``centre_noise``, ``size_noise``, ``owl``).
        window: frames per window instead of the file's (must fit the head's input width).
        num_threads: ``torch.set_num_threads`` (process-wide).
        options: :class:`GoalNavPolicy` keyword arguments (``grounding_skip_n``, ``stop_mode``, ``stop_area``, ...,
            ``latencies``).

    Raises:
        ConfigError: unknown variant or option, no bundled weights and no checkpoint, a missing Stage 1 file.
        CheckpointError: a file of another variant or role, or that does not fit (one line naming file and field).
        GrounderError: a grounder folder without weights.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown grounder + MLP policy {variant!r}; known: {', '.join(VARIANTS)}")
    if checkpoint is not None and path is not None:
        raise ConfigError("give the head file once (--checkpoint or NAME:FILE)")
    checkpoint = checkpoint if checkpoint is not None else path
    known = policy_options()
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"{variant}: unknown option(s) {', '.join(unknown)}; options: {', '.join(sorted(known))}, "
                          "stage1, grounder, grounder_path, grounder_args, window")
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    kind = VARIANTS[variant]
    ours = checkpoint is None or Path(checkpoint).suffix == ".safetensors"  # bundled or sim.training.goalnav's
    name = ("lite" if ours else "kosmos2") if backbone == "auto" else backbone
    vis_dim = stream_widths(name, backbone_path)["image_mean"]  # from the config: the file is checked first
    head, proj, provenance = _load_pair(variant, kind, checkpoint, stage1, window, vis_dim)
    want = proj.in_features if proj is not None else head.d_in - head.window * 4 - head.goal_dim
    encoder = make_backbone(name, backbone_path, device, streams=("image_mean",))
    have = encoder.stream_dims()["image_mean"]
    if have != want:
        raise CheckpointError(f"{provenance['weights']}: the head reads a {want}-d vision feature, backbone {name!r} "
                              f"gives {have} (team files: --backbone kosmos2; bundled weights: lite)")
    policy = GoalNavPolicy(head, proj, encoder, build_grounder(grounder, grounder_path, **dict(grounder_args or {})),
                           **options)
    policy.provenance = {"architecture": DESCRIPTIONS[variant].split(";")[0], **provenance, "grounder": grounder,
                         "stop rule": policy.stop_mode, "grounding_skip_n": policy.grounding_skip_n}
    return policy
