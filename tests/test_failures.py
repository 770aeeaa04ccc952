"""The failure taxonomy and the team's closed-loop metrics: one constructed record per category, the causes, old and
malformed records, and the geometry they use."""

from __future__ import annotations

import numpy as np
import pytest

from sim.evaluation.failures import CATEGORIES, UNKNOWN, categories, classify, episode_metrics, motion
from sim.evaluation.metrics import overshoot_distance, path_deviation, sign_reversals


def record(keys: str | list[str], expert: str | list[str] | None = None, *, status: str = "collision",
           path: list[list[float]] | None = None, **fields) -> dict:
    """A box-family record driving along +x from (0, 0) to the goal (2, 0); keys as a space-separated string."""
    keys = keys.split() if isinstance(keys, str) else keys
    expert = keys if expert is None else expert.split() if isinstance(expert, str) else expert
    if path is None:
        path = [[0.1 * i, 0.0] for i in range(len(keys) + 1)]
    out = {"policy": "p", "episode": 0, "layout": "1box_hori_left", "distance": "close", "seed": 1,
           "status": status, "success": status == "success", "steps": len(keys), "keys": keys,
           "expert_keys": expert, "path": path, "expert_path": [[0.0, 0.0], [2.0, 0.0]],
           "scene": {"start": [0.0, 0.0, 0.0], "goal": [2.0, 0.0]}, "final_distance_m": 1.0, "side_ok": None,
           "latency_applied": 0.0}
    out.update(fields)
    return out


def test_forward_collapse_is_a_head_that_drives_straight_whatever_the_expert_asks():
    failure = classify(record("SPACE w w w w", "q q a w w"))
    assert failure.primary == "forward_collapse" and failure.categories["forward_collapse"] is True
    # the expert also drives straight: nothing collapsed
    assert classify(record("SPACE w w w w", "w w w w w")).categories["forward_collapse"] is False


def test_left_right_confusion_from_the_side_or_from_opposite_turns():
    assert classify(record("w a a a", "w d d d")).primary == "left_right_confusion"
    assert classify(record("w w", "w w", side_ok=False)).primary == "left_right_confusion"
    # a lateral one way against a rotation the other way is the wrong way too (the corridor's classes)
    corridor = record(["RIGHT"] * 4, ["ROT_L"] * 4)
    assert classify(corridor).categories["left_right_confusion"] is True
    assert classify(record("w a d a", "w a d a")).categories["left_right_confusion"] is False


def test_perception_miss_counts_the_decisions_after_the_cold_start():
    seen = record("w w w w", status="timeout", detections=[False, False, False, True])
    assert classify(seen).primary == "perception_miss"
    cold_start_only = record("w w w w", status="timeout", detections=[False, True, True, True])
    assert classify(cold_start_only).categories["perception_miss"] is False


def test_perception_miss_counts_only_the_decisions_with_the_target_in_view():
    # the same misses: at decisions where the basket was in view (the grounder's fault) ...
    blind = record("w w w w", status="timeout", detections=[False, False, False, True],
                   target_in_view=[True, True, True, True])
    assert classify(blind).primary == "perception_miss"
    # ... or where the policy had driven it out of view (not perception: the policy lost it)
    lost = record("w w w w", status="timeout", detections=[False, False, False, True],
                  target_in_view=[True, False, False, True])
    assert classify(lost).categories["perception_miss"] is False
    never = record("w w w", status="timeout", detections=[False, False, False], target_in_view=[True, False, False])
    assert classify(never).categories["perception_miss"] is False
    # one miss in the two visible decisions after the first: half, at the threshold
    half = record("w w w w", status="timeout", detections=[False, False, True, False],
                  target_in_view=[True, True, True, False])
    assert classify(half).categories["perception_miss"] is True
    mismatched = record("w w w", status="timeout", detections=[False, False, False], target_in_view=[True])
    assert classify(mismatched).categories["perception_miss"] == UNKNOWN


def test_rotation_missing_when_the_policy_translates_where_the_expert_rotates():
    failure = classify(record(["FWD+L"] * 3, ["ROT_L"] * 3, status="timeout"))
    assert failure.primary == "rotation_missing"
    assert classify(record(["ROT_L"] * 3, ["ROT_L"] * 3)).categories["rotation_missing"] is False


def test_late_turn_when_the_policy_turns_three_steps_after_the_expert_or_never():
    late = classify(record("w w w w w q", "w w q q q q"))
    assert late.primary == "late_turn" and late.categories["forward_collapse"] is False
    assert classify(record("w w w q q q", "w w q q q q")).categories["late_turn"] is False
    assert classify(record("w w w w w w w w w w e", "w w w w w w w w w w q")).categories["late_turn"] is True


def test_false_stop_is_a_policy_stopping_where_the_expert_drives_on():
    failure = classify(record("w SPACE SPACE SPACE", "w w w w", status="timeout"))
    assert failure.primary == "false_stop"
    assert classify(record("w SPACE w w", "w w w w", status="timeout")).categories["false_stop"] is False


def test_missed_stop_only_counts_the_experts_stop_at_the_goal():
    near = [[1.6, 0.0], [1.8, 0.0], [1.95, 0.0], [2.1, 0.0]]
    assert classify(record("w w w", "w SPACE SPACE", path=near)).primary == "missed_stop"
    far = [[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [0.3, 0.0]]  # the expert's "no safe plan" stop, far from the goal
    assert classify(record("w w w", "w SPACE SPACE", path=far)).categories["missed_stop"] is False


def test_overshoot_from_the_corridor_status_or_the_path_past_the_goal():
    corridor = record(["FORWARD"] * 3, status="overshoot")
    assert classify(corridor).primary == "overshoot"
    past = [[1.0, 0.0], [2.0, 0.0], [2.5, 0.0]]
    failure = classify(record("w w", path=past, status="collision"))
    assert failure.primary == "overshoot" and failure.metrics["overshoot_m"] == pytest.approx(0.5)


def test_oscillation_counts_reversals_beyond_the_experts():
    failure = classify(record("a d a d a d", "w w w w w w", status="timeout"))
    assert failure.primary == "oscillation" and failure.metrics["oscillations"] == 5
    assert classify(record("a d a d", "a d a d")).categories["oscillation"] is False


def test_latency_exceeded_from_the_applied_latencies():
    failure = classify(record("w w w", status="timeout", latency_steps_s=[1.9567, 0.0547, 0.0547]))
    assert failure.primary == "latency_exceeded"
    assert classify(record("w w w", latency_applied=0.05)).categories["latency_exceeded"] is False
    assert classify(record("w w w", latency_applied=0.25)).categories["latency_exceeded"] is True


def test_the_outcome_names_what_no_category_explains_and_a_success_has_no_label():
    assert classify(record("w w w")).primary == "collision"
    assert classify(record("w w w", status="timeout")).primary == "timeout"
    assert classify(record("w w", status="error")).primary == "error"
    assert classify(record("SPACE w w w w", "q q a w w", status="error")).primary == "error"
    success = classify(record("w w w", status="success"))
    assert success.primary is None and success.labels == []


def test_secondary_labels_are_kept_in_priority_order():
    failure = classify(record("SPACE w w w w", "q q a w w", latency_steps_s=[0.5] * 5))
    assert failure.labels[0] == failure.primary == "forward_collapse"
    assert "latency_exceeded" in failure.labels and "late_turn" in failure.labels
    assert failure.labels == [c for c in CATEGORIES if c in failure.labels]


def test_an_old_record_gets_unknown_not_a_traceback():
    old = {"status": "collision", "keys": ["w", "w"], "path": [[0, 0], [0.1, 0], [0.2, 0]], "side_ok": None}
    failure = classify(old)
    assert failure.categories["forward_collapse"] == UNKNOWN and failure.categories["perception_miss"] == UNKNOWN
    assert failure.categories["overshoot"] == UNKNOWN and failure.primary == "collision"
    assert failure.metrics["deviation_mean_m"] is None and failure.metrics["oscillations"] == 0
    assert classify({**old, "side_ok": False}).primary == "left_right_confusion"


@pytest.mark.parametrize("broken", [{"path": "not a path"}, {"keys": [["w"]]}, {"expert_path": [[1, 2, 3]]},
                                    {"scene": {"start": "x", "goal": [1]}}, {"latency_steps_s": ["slow"]},
                                    {"keys": ["jump", "w"]}])
def test_a_malformed_field_makes_categories_unknown_not_an_error(broken):
    failure = classify({**record("w w w"), **broken})
    assert failure.primary in CATEGORIES + ("collision",)
    assert set(failure.categories) == set(CATEGORIES)


def test_recovery_and_deviation_from_the_experts_path():
    out_and_back = [[0.0, 0.0], [0.5, 0.5], [1.0, 0.1], [1.5, 0.0]]
    metrics = episode_metrics(record("w w w", path=out_and_back))
    assert metrics["deviation_max_m"] == pytest.approx(0.5) and metrics["recovered"] is True
    stays_out = episode_metrics(record("w w", path=[[0.0, 0.0], [0.5, 0.5], [1.0, 0.6]]))
    assert stays_out["recovered"] is False
    on_path = episode_metrics(record("w w"))
    assert on_path["recovered"] is None and on_path["deviation_max_m"] == 0.0


def test_the_geometry():
    assert overshoot_distance(np.array([[0, 0], [3, 1]]), (0, 0), (2, 0)) == pytest.approx(1.0)
    assert overshoot_distance(np.array([[0, 0], [1, 0]]), (0, 0), (2, 0)) == 0.0
    assert overshoot_distance(np.array([[1, 1]]), (2, 0), (2, 0)) == 0.0
    np.testing.assert_allclose(path_deviation([[0, 1], [1, 0], [3, 0]], [[0, 0], [2, 0]]), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(path_deviation([[3, 4]], [[0, 0]]), [5.0])
    with pytest.raises(ValueError):
        path_deviation([[0, 0]], np.zeros((0, 2)))
    assert sign_reversals([1, 0, -1, -1, 1]) == 2 and sign_reversals([0, 0]) == 0


def test_every_key_of_both_vocabularies_is_a_motion():
    assert motion("w").straight and motion("SPACE").stop and motion("ROT_R").rotation == -1
    assert motion("FWD+L").lateral == 1 and not motion("FWD+L").straight
    with pytest.raises(KeyError):
        motion("jump")


def test_categories_are_all_decided_for_a_full_record():
    cats = categories(record("w w w", detections=[True, True, True]))
    assert set(cats) == set(CATEGORIES) and UNKNOWN not in cats.values()
