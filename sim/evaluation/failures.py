"""Why an episode failed: the team's failure taxonomy and closed-loop metrics, computed from an episode's record.

The names are the team's (MoNaVLA ``docs/BENCHMARK_PIPELINE_DESIGN.md``, layer D: ``../shared/reference/
TEAM_STACK_2026.md`` section 4); the definitions and thresholds below are ours (the design names the categories but
does not define them). Every rule reads an :class:`~sim.evaluation.episode.EpisodeRecord` JSON line: the policy's
key (or class) per step ``keys``, the shadow expert's at the same states ``expert_keys``, the path and the expert's
own path ``expert_path``, the scene, the grounder's ``detections`` and the latencies. A category whose fields the
record lacks (an older run, a policy without a grounder) is ``"unknown"``, never an error.

Keys are read as motions: their ``[linear_x, linear_y, angular_z]`` label (``envs.keys.KEY_ACTIONS`` for the robot
keys, ``envs.actions.CLASS_ACTIONS`` for the eight classes) gives a forward sign, a lateral sign (+ left), a rotation
sign (+ counter-clockwise) and stop (all zero). "Steps" are decisions (one per ``env.step``).

The definitions are :data:`DEFINITIONS` (shown on every run page), the thresholds :class:`Thresholds`.

An episode's **primary** label is the first category that applies in :data:`CATEGORIES` order (our reading of the
most explanatory first: a collapsed head or a wrong side explains everything downstream; then what ended the
episode (a stop, a missed stop, an overshoot) before the way there (a late turn, a missing rotation, oscillation);
a latency is the primary label only when no behaviour is); the others are kept as secondary labels. When none applies, the outcome names it: :data:`CAUSES`
(``collision``, ``timeout``, ``out_of_bounds``, ``error``: a policy that raised is always ``error``). Successful
episodes get no label.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.actions import CLASS_ACTIONS
from envs.keys import KEY_ACTIONS
from sim.evaluation.metrics import overshoot_distance, path_deviation, sign_reversals

#: The team's categories, in the order the primary label is chosen.
CATEGORIES = ("forward_collapse", "left_right_confusion", "perception_miss", "false_stop", "missed_stop", "overshoot",
              "late_turn", "rotation_missing", "oscillation", "latency_exceeded")
#: What each category means (failed episodes; thresholds: :class:`Thresholds`).
DEFINITIONS: dict[str, str] = {
    "forward_collapse": (
        "the policy drives straight forward (forward, no lateral, no rotation) at >= collapse_share of the "
        "steps it moves (at least 2), while the expert at the same states turned (a lateral or a rotation) at >= "
        "collapse_expert_other of them: the head emits one class whatever it sees"),
    "perception_miss": (
        "the grounder found no target at >= miss_share of the decisions after the first at which the target was "
        "in the camera's view (of all decisions after the first in a record without target_in_view; the first is "
        "the robot's cold start: it misses in all 47 sessions the team checked). A target out of view is not a "
        "perception miss: the policy lost it"),
    "left_right_confusion": (
        "a box passed on the side the instruction forbids (side_ok false), or, on the steps where both turn (a "
        "lateral or a rotation: its sign is the way), opposite ways at >= confusion_share of at least "
        "confusion_min_steps steps"),
    "rotation_missing": (
        "the expert rotated at >= rotation_min_steps states, and the policy rotated the same way at fewer than "
        "rotation_follow_share of them"),
    "late_turn": (
        "the policy first turned the expert's way (a lateral or a rotation of the same sign) >= late_turn_steps "
        "steps after the expert first turned, or not before the episode ended"),
    "false_stop": (
        "the policy stopped where the expert drove on, at >= false_stop_steps steps (the corridor's 'stopped "
        "short': a STOP outside the band is not terminal and ends in a timeout)"),
    "missed_stop": (
        "the expert stopped at a visited state within overshoot_m of the goal (its stop at the goal, not the "
        "'no safe plan' stop), and the policy drove on"),
    "overshoot": (
        "the corridor's overshoot status, or the path went more than overshoot_m past the goal along the "
        "start -> goal direction"),
    "oscillation": (
        "the policy's direction reversals (lateral or rotation sign changes) exceed the expert's on the same "
        "states by >= oscillation_excess"),
    "latency_exceeded": (
        "the mean applied latency per decision exceeds latency_budget_s: the command misses the robot's 10 Hz "
        "loop and the robot drives blind"),
}
#: Primary labels of failed episodes no category explains: their outcome.
CAUSES = ("collision", "timeout", "out_of_bounds", "error")
#: A category a record lacks the fields for.
UNKNOWN = "unknown"
#: Deviation (m) from the expert's path that counts as leaving it, for ``recovered`` (our reading: twice the robot's
#: footprint radius, 0.15 m in ``envs.robot.RobotConfig``: the robot no longer overlaps the expert's swept path).
DEVIATION_TOLERANCE_M = 0.3


@dataclass(frozen=True)
class Thresholds:
    """The taxonomy's thresholds (our readings; the team's design names the categories only). Shares are of
    steps in [0, 1]; steps are decisions."""

    collapse_share: float = 0.9
    collapse_expert_other: float = 0.15
    miss_share: float = 0.5
    confusion_share: float = 0.5
    confusion_min_steps: int = 3
    rotation_min_steps: int = 2
    rotation_follow_share: float = 0.5
    late_turn_steps: int = 3
    false_stop_steps: int = 2
    #: m past the goal: the box families' success radius (0.3 m), past which the robot cannot stop inside it.
    overshoot_m: float = 0.3
    oscillation_excess: int = 3
    #: s: one tick of the robot's 10 Hz command loop (``envs.cadence`` ``loop_hz``).
    latency_budget_s: float = 0.1


THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Motion:
    """A key as motion: signs of forward, lateral (+ left) and rotation (+ counter-clockwise); ``stop``: all 0."""

    forward: int
    lateral: int
    rotation: int

    @property
    def stop(self) -> bool:
        """No motion at all (``SPACE``, ``STOP``)."""
        return self.forward == 0 and self.lateral == 0 and self.rotation == 0

    @property
    def straight(self) -> bool:
        """Forward only: no lateral or rotation component (``w``, ``FORWARD``)."""
        return self.forward > 0 and self.lateral == 0 and self.rotation == 0


def _sign(value: float) -> int:
    return 0 if abs(value) < 1e-6 else (1 if value > 0 else -1)


_MOTIONS = {key: Motion(*(_sign(v) for v in label)) for key, label in {**KEY_ACTIONS, **CLASS_ACTIONS}.items()}


def motion(key: str) -> Motion:
    """The :class:`Motion` of a robot key (``"w"``, ``"SPACE"``, ...) or class (``"FWD+L"``, ``"ROT_R"``, ...).

    Raises:
        KeyError: a key of neither vocabulary.
    """
    try:
        return _MOTIONS[key]
    except KeyError:
        raise KeyError(f"unknown key or class {key!r}") from None


@dataclass
class EpisodeFailure:
    """What the taxonomy says of one episode.

    Attributes:
        primary: the primary label (a category or a cause); None for a success.
        labels: every category that applies (primary first when it is a category).
        categories: each category -> True, False or ``"unknown"`` (the record lacks its fields).
        metrics: the team's closed-loop metrics of the episode (:func:`episode_metrics`).
    """

    primary: str | None
    labels: list[str]
    categories: dict[str, bool | str]
    metrics: dict[str, Any]


def _keys(record: dict[str, Any]) -> tuple[list[Motion], list[Motion]] | None:
    """The policy's and the expert's motions at the same states; None when the record lacks either."""
    keys, expert = record.get("keys") or [], record.get("expert_keys") or []
    if not keys or len(expert) != len(keys):
        return None
    try:
        return [motion(k) for k in keys], [motion(k) for k in expert]
    except (KeyError, TypeError):
        return None


def _reversals(motions: Sequence[Motion]) -> int:
    return sign_reversals([m.lateral for m in motions]) + sign_reversals([m.rotation for m in motions])


def _way(m: Motion) -> int:
    """The way a motion turns: its lateral sign, else its rotation sign (+ left); 0 for none."""
    return m.lateral or m.rotation


def episode_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """The team's layer-D metrics of one episode (None where the record lacks the fields):

    - ``overshoot_m``: how far the path went past the goal along the start -> goal direction (m);
    - ``terminal_distance_m``: distance to the goal at the end (m);
    - ``deviation_mean_m`` / ``deviation_max_m``: distance of the path's points to the expert's path (m);
    - ``recovered``: after leaving the expert's path by more than :data:`DEVIATION_TOLERANCE_M`, came back within
      it (None: never left it);
    - ``oscillations``: the policy's direction reversals (lateral and rotation sign changes).
    """
    path = np.asarray(record.get("path") or [], float).reshape(-1, 2)
    scene = record.get("scene") or {}
    out: dict[str, Any] = {"overshoot_m": None, "terminal_distance_m": record.get("final_distance_m"),
                           "deviation_mean_m": None, "deviation_max_m": None, "recovered": None, "oscillations": None}
    if len(path) and "start" in scene and "goal" in scene:
        out["overshoot_m"] = round(overshoot_distance(path, scene["start"][:2], scene["goal"][:2]), 4)
    reference = np.asarray(record.get("expert_path") or [], float).reshape(-1, 2)
    if len(path) and len(reference):
        deviation = path_deviation(path, reference)
        out["deviation_mean_m"] = round(float(deviation.mean()), 4)
        out["deviation_max_m"] = round(float(deviation.max()), 4)
        off = np.flatnonzero(deviation > DEVIATION_TOLERANCE_M)
        if len(off):
            out["recovered"] = bool(np.any(deviation[off[0]:] <= DEVIATION_TOLERANCE_M))
    if record.get("keys"):
        try:
            out["oscillations"] = _reversals([motion(k) for k in record["keys"]])
        except (KeyError, TypeError):
            pass
    return out


def _near_goal(record: dict[str, Any], n: int, radius: float) -> list[bool] | None:
    """Whether the robot was within ``radius`` m of the goal at each of the ``n`` decision states (``path[i]`` is
    the pose step ``i`` answered); None without a path of ``n + 1`` poses and a goal."""
    path, goal = record.get("path") or [], (record.get("scene") or {}).get("goal")
    if len(path) < n or goal is None:
        return None
    xy = np.asarray(path[:n], float).reshape(-1, 2)
    return list(np.linalg.norm(xy - np.asarray(goal[:2], float), axis=1) <= radius)


def _mean_latency_s(record: dict[str, Any]) -> float | None:
    steps = record.get("latency_steps_s") or []
    if steps:
        return float(np.mean(steps))
    applied = record.get("latency_applied")
    return float(applied) if isinstance(applied, (int, float)) and not isinstance(applied, bool) else None


def categories(record: dict[str, Any], metrics: dict[str, Any] | None = None,
               thresholds: Thresholds = THRESHOLDS) -> dict[str, bool | str]:
    """Each category of :data:`CATEGORIES` -> True / False / ``"unknown"`` for one record (module doc)."""
    t = thresholds
    metrics = episode_metrics(record) if metrics is None else metrics
    out: dict[str, bool | str] = {}
    pair = _keys(record)
    if pair is None:
        for name in ("forward_collapse", "rotation_missing", "late_turn", "false_stop", "missed_stop", "oscillation"):
            out[name] = UNKNOWN
        out["left_right_confusion"] = True if record.get("side_ok") is False else UNKNOWN
    else:
        policy, expert = pair
        n = len(policy)
        moving = [(p, e) for p, e in zip(policy, expert) if not p.stop]
        out["forward_collapse"] = len(moving) >= 2 and (
            sum(p.straight for p, _ in moving) / len(moving) >= t.collapse_share
            and sum(bool(_way(e)) for _, e in moving) / len(moving) >= t.collapse_expert_other)

        both = [(_way(p), _way(e)) for p, e in zip(policy, expert) if _way(p) and _way(e)]
        opposite = sum(p != e for p, e in both)
        out["left_right_confusion"] = record.get("side_ok") is False or (
            len(both) >= t.confusion_min_steps and opposite / len(both) >= t.confusion_share)

        rotating = [(p, e) for p, e in zip(policy, expert) if e.rotation]
        followed = sum(p.rotation == e.rotation for p, e in rotating)
        out["rotation_missing"] = (len(rotating) >= t.rotation_min_steps
                                   and followed / len(rotating) < t.rotation_follow_share)

        first_expert = next((i for i, e in enumerate(expert) if _way(e)), None)
        late = False
        if first_expert is not None:
            wanted = _way(expert[first_expert])
            follow = next((i for i in range(first_expert, n) if _way(policy[i]) == wanted), None)
            late = follow is None or follow - first_expert >= t.late_turn_steps
        out["late_turn"] = late

        out["false_stop"] = sum(p.stop and not e.stop for p, e in zip(policy, expert)) >= t.false_stop_steps
        near = _near_goal(record, n, t.overshoot_m)
        out["missed_stop"] = UNKNOWN if near is None else any(
            e.stop and not p.stop and close for p, e, close in zip(policy, expert, near))
        out["oscillation"] = _reversals(policy) - _reversals(expert) >= t.oscillation_excess

    if record.get("status") == "overshoot":
        out["overshoot"] = True
    elif metrics.get("overshoot_m") is None:
        out["overshoot"] = UNKNOWN
    else:
        out["overshoot"] = metrics["overshoot_m"] > t.overshoot_m

    out["perception_miss"] = _perception_miss(record, t.miss_share)

    latency = _mean_latency_s(record)
    out["latency_exceeded"] = UNKNOWN if latency is None else latency > t.latency_budget_s
    return {name: out[name] for name in CATEGORIES}


def _perception_miss(record: dict[str, Any], miss_share: float) -> bool | str:
    """``perception_miss`` of a record: the share of misses among the decisions after the first that had the target
    in view (``target_in_view``; all of them in an older record without it). UNKNOWN without detections; False when
    the target was never in view after the first decision."""
    detections = record.get("detections") or []
    if len(detections) < 2:
        return UNKNOWN
    in_view = record.get("target_in_view") or [True] * len(detections)
    if len(in_view) != len(detections):
        return UNKNOWN
    visible = [found for found, seen in zip(detections[1:], in_view[1:]) if seen]
    return bool(visible) and sum(not found for found in visible) / len(visible) >= miss_share


def classify(record: dict[str, Any], thresholds: Thresholds = THRESHOLDS) -> EpisodeFailure:
    """The :class:`EpisodeFailure` of one ``episodes.jsonl`` record (a dict; fields may be missing).

    Never raises for a record's content: a missing or malformed field makes the categories that need it
    ``"unknown"``.
    """
    try:
        metrics = episode_metrics(record)
        cats = categories(record, metrics, thresholds)
    except (TypeError, ValueError, KeyError, IndexError):  # a malformed field: nothing can be said of the episode
        metrics = dict.fromkeys(("overshoot_m", "terminal_distance_m", "deviation_mean_m", "deviation_max_m",
                                 "recovered", "oscillations"))
        cats = dict.fromkeys(CATEGORIES, UNKNOWN)
    status = record.get("status")
    if status == "success":
        return EpisodeFailure(None, [], cats, metrics)
    labels = [name for name in CATEGORIES if cats[name] is True]
    if status not in ("collision", "timeout", "out_of_bounds", "overshoot"):  # "error", or no status at all
        primary = "error"
    else:
        primary = labels[0] if labels else status
    return EpisodeFailure(primary, labels, cats, metrics)


def thresholds_json(thresholds: Thresholds = THRESHOLDS) -> dict[str, Any]:
    """The thresholds as written in ``failure_summary.json``."""
    return {**dataclasses.asdict(thresholds), "deviation_tolerance_m": DEVIATION_TOLERANCE_M}

