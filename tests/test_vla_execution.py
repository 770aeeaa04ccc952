"""VLAPolicy execution: history window, chunk execution modes, post-processing, text caching, latencies,
and the two-policy ensemble. Uses a stub backbone and scripted heads, so every expected action is computed
by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.keys import ACTION_LABEL, DEAD_ZONE, OUTPUT_CLIP
from policies.vla import EnsemblePolicy, PostProcessing, TemporalEnsembler, VLAPolicy

try:
    from tests.conftest_vla import INSTRUCTION, ScriptedHead, StubBackbone, flat_observation, single_torch_thread
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from conftest_vla import INSTRUCTION, ScriptedHead, StubBackbone, flat_observation, single_torch_thread  # noqa: F401

RAW = PostProcessing(denormalize=False, clip=False, dead_zone=False, zero_first_step=False)


def make_policy(chunks, execution="first", window_size=8, post=RAW, **kw):
    backbone = StubBackbone()
    head = ScriptedHead(chunks)
    policy = VLAPolicy(head, backbone, execution=execution, window_size=window_size, postprocess=post, **kw)
    policy.reset(INSTRUCTION)
    return policy, head, backbone


def run(policy, n, start=0):
    return np.stack([policy.act(flat_observation(start + i)) for i in range(n)])


# ------------------------------------------------------------------------------------------ history


def test_window_is_padded_with_the_first_frame_then_slides():
    policy, head, _ = make_policy([[[0.5, 0.5]]], window_size=4)
    run(policy, 6, start=10)  # frames encode as 10, 11, ..., 15
    assert head.windows[0] == [10, 10, 10, 10]
    assert head.windows[1] == [10, 10, 10, 11]
    assert head.windows[2] == [10, 10, 11, 12]
    assert head.windows[3] == [10, 11, 12, 13]
    assert head.windows[5] == [12, 13, 14, 15]


def test_reset_starts_a_new_history():
    policy, head, _ = make_policy([[[0.5, 0.5]]], window_size=3)
    run(policy, 3, start=1)
    policy.reset(INSTRUCTION)
    run(policy, 1, start=50)
    assert head.windows[-1] == [50, 50, 50]


def test_head_reads_only_its_own_window():
    policy, head, _ = make_policy([[[0.5, 0.5]]], window_size=8)
    head.config.window_size = 2
    run(policy, 4, start=1)
    assert head.windows[-1] == [3, 4]


# ---------------------------------------------------------------------------------- execution modes

CHUNKS = [  # call n -> chunk of 3 actions (linear_x, linear_y); values encode (call, position)
    [[0.10, -0.10], [0.11, -0.11], [0.12, -0.12]],
    [[0.20, -0.20], [0.21, -0.21], [0.22, -0.22]],
    [[0.30, -0.30], [0.31, -0.31], [0.32, -0.32]],
    [[0.40, -0.40], [0.41, -0.41], [0.42, -0.42]],
]


def test_first_predicts_every_step_and_executes_the_first_action():
    policy, head, backbone = make_policy(CHUNKS, execution="first")
    actions = run(policy, 4)
    assert head.calls == 4
    assert policy.num_predictions == 4
    np.testing.assert_allclose(actions[:, :2], [c[0] for c in CHUNKS], atol=1e-7)
    assert backbone.image_calls == [1, 1, 1, 1]  # one frame encoded per step


def test_all_executes_the_whole_chunk_before_predicting_again():
    policy, head, backbone = make_policy(CHUNKS, execution="all")
    actions = run(policy, 7, start=1)
    assert head.calls == 3  # steps 0, 3, 6
    expected = CHUNKS[0] + CHUNKS[1] + CHUNKS[2][:1]
    np.testing.assert_allclose(actions[:, :2], expected, atol=1e-7)
    # frames seen while executing a chunk are encoded in one batch at the next prediction, not dropped
    assert backbone.image_calls == [1, 3, 3]
    assert head.windows[1] == [1, 1, 1, 1, 1, 2, 3, 4]
    assert policy.head_latencies_ms[1] == 0.0 and policy.head_latencies_ms[3] > 0.0


def test_ensemble_averages_overlapping_chunks_with_exponential_weights():
    k = 0.5  # a large k makes the weighting visible
    policy, head, _ = make_policy(CHUNKS, execution="ensemble", ensemble_k=k)
    actions = run(policy, 4)
    assert head.calls == 4
    c = np.asarray(CHUNKS, dtype=np.float64)
    w = lambda n: np.exp(-k * np.arange(n)) / np.exp(-k * np.arange(n)).sum()
    # step 0: only chunk 0's action 0; step 1: chunk 0's action 1 (older) and chunk 1's action 0, ...
    expected = [
        c[0, 0],
        w(2) @ np.stack([c[0, 1], c[1, 0]]),
        w(3) @ np.stack([c[0, 2], c[1, 1], c[2, 0]]),
        w(3) @ np.stack([c[1, 2], c[2, 1], c[3, 0]]),  # chunk 0 no longer covers step 3
    ]
    np.testing.assert_allclose(actions[:, :2], expected, atol=1e-6)
    # hand value of step 1: weights 1/(1+e^-0.5) and e^-0.5/(1+e^-0.5)
    w0 = 1 / (1 + math.exp(-0.5))
    assert actions[1, 0] == pytest.approx(w0 * 0.11 + (1 - w0) * 0.20, abs=1e-6)


def test_ensembler_with_zero_k_is_a_plain_mean():
    ens = TemporalEnsembler(chunk_size=2, k=0.0)
    ens(np.array([[1.0], [3.0]]))
    assert ens(np.array([[5.0], [7.0]]))[0] == pytest.approx((3.0 + 5.0) / 2)


def test_unknown_execution_mode_is_rejected():
    with pytest.raises(ValueError, match="execution"):
        VLAPolicy(ScriptedHead(CHUNKS), StubBackbone(), execution="sometimes")


def test_head_and_backbone_widths_must_match():
    head = ScriptedHead(CHUNKS)
    head.config.vision_dim = 5
    with pytest.raises(ValueError, match="features"):
        VLAPolicy(head, StubBackbone())


# -------------------------------------------------------------------------------- post-processing

RAW_ACTION = [[[0.1, -0.9, 0.5]]]  # x: inside the dead-zone once scaled; y: scaled -1.035; z: 0.575


@pytest.mark.parametrize(
    ("post", "expected"),
    [
        (PostProcessing(False, False, False, False), [0.1, -0.9, 0.5]),
        (PostProcessing(True, False, False, False), [0.1 * ACTION_LABEL, -0.9 * ACTION_LABEL, 0.5 * ACTION_LABEL]),
        (PostProcessing(False, False, True, False), [0.0, -0.9, 0.5]),
        (PostProcessing(True, False, True, False), [0.0, -0.9 * ACTION_LABEL, 0.5 * ACTION_LABEL]),
    ],
)
def test_post_processing_steps_each_on_and_off(post, expected):
    policy, _, _ = make_policy(RAW_ACTION, post=post)
    np.testing.assert_allclose(run(policy, 2)[1], expected, atol=1e-6)


def test_clip_limits_to_output_clip():
    big = [[[3.0, -3.0]]]
    on, _, _ = make_policy(big, post=PostProcessing(denormalize=True, clip=True, dead_zone=False,
                                                    zero_first_step=False))
    off, _, _ = make_policy(big, post=PostProcessing(denormalize=True, clip=False, dead_zone=False,
                                                     zero_first_step=False))
    np.testing.assert_allclose(run(on, 1)[0, :2], [OUTPUT_CLIP, -OUTPUT_CLIP], atol=1e-6)
    np.testing.assert_allclose(run(off, 1)[0, :2], [3.0 * ACTION_LABEL, -3.0 * ACTION_LABEL], atol=1e-5)


def test_dead_zone_threshold_is_in_label_units():
    just_below = (DEAD_ZONE - 1e-3) / ACTION_LABEL
    just_above = (DEAD_ZONE + 1e-3) / ACTION_LABEL
    policy, _, _ = make_policy([[[just_below, just_above]]], post=PostProcessing(zero_first_step=False))
    action = run(policy, 1)[0]
    assert action[0] == 0.0
    assert action[1] == pytest.approx(DEAD_ZONE + 1e-3, abs=1e-6)


def test_first_step_is_forced_to_zero_but_the_model_still_runs():
    policy, head, _ = make_policy([[[0.8, 0.8]]], post=PostProcessing())
    actions = run(policy, 3)
    np.testing.assert_array_equal(actions[0], [0, 0, 0])
    np.testing.assert_allclose(actions[1, :2], [0.8 * ACTION_LABEL] * 2, atol=1e-6)
    assert head.calls == 3
    policy.reset(INSTRUCTION)  # a new episode zeroes its first step again
    np.testing.assert_array_equal(policy.act(flat_observation(0)), [0, 0, 0])


def test_first_step_zero_can_be_switched_off():
    policy, _, _ = make_policy([[[0.8, 0.8]]], post=PostProcessing(zero_first_step=False))
    np.testing.assert_allclose(run(policy, 1)[0, :2], [0.8 * ACTION_LABEL] * 2, atol=1e-6)


def test_two_dim_actions_are_padded_with_zero_angular_z():
    policy, _, _ = make_policy([[[0.3, 0.4]]])
    assert run(policy, 1)[0].tolist() == pytest.approx([0.3, 0.4, 0.0])


# ------------------------------------------------------------------------------ text, latency


def test_text_features_are_computed_once_per_instruction():
    policy, head, backbone = make_policy([[[0.3, 0.4]]])
    run(policy, 3)
    policy.reset(INSTRUCTION)
    run(policy, 2)
    assert backbone.text_calls == [[INSTRUCTION]]
    assert head.texts[-1] == [float(len(INSTRUCTION)), 1.0]
    policy.reset("go to the cup")
    run(policy, 1)
    assert backbone.text_calls == [[INSTRUCTION], ["go to the cup"]]


def test_latencies_are_recorded_per_step_with_the_backbone_share():
    policy, _, _ = make_policy(CHUNKS, execution="all")
    run(policy, 5)
    assert len(policy.latencies_ms) == len(policy.backbone_latencies_ms) == len(policy.head_latencies_ms) == 5
    assert policy.backbone_latencies_ms[0] > 0.0 and policy.backbone_latencies_ms[1] == 0.0
    assert 0.0 < policy.backbone_share() < 1.0


# ------------------------------------------------------------------------------------- ensemble


def test_ensemble_weights_the_first_policy_by_0_6():
    one, _, _ = make_policy([[[1.0, 0.5]]], post=RAW)
    two, _, _ = make_policy([[[-0.5, 0.25]]], post=RAW)
    ens = EnsemblePolicy(one, two, weight=0.6, postprocess=PostProcessing(denormalize=True, clip=False,
                                                                          dead_zone=False, zero_first_step=False))
    ens.reset(INSTRUCTION)
    action = ens.act(flat_observation(3))
    expected = ACTION_LABEL * (0.6 * np.array([1.0, 0.5]) + 0.4 * np.array([-0.5, 0.25]))
    np.testing.assert_allclose(action[:2], expected, atol=1e-6)
    assert action[0] == pytest.approx(ACTION_LABEL * 0.4)


def test_ensemble_rejects_bad_weight():
    one, _, _ = make_policy([[[1.0, 0.5]]])
    two, _, _ = make_policy([[[1.0, 0.5]]])
    with pytest.raises(ValueError, match="weight"):
        EnsemblePolicy(one, two, weight=1.5)


def test_ensemble_members_sharing_a_backbone_encode_each_frame_once():
    backbone = StubBackbone()
    one = VLAPolicy(ScriptedHead([[[1.0, 0.0]]]), backbone, postprocess=RAW)
    two = VLAPolicy(ScriptedHead([[[0.0, 1.0]]]), backbone, postprocess=RAW)
    ens = EnsemblePolicy(one, two, weight=0.6, postprocess=RAW)
    ens.reset(INSTRUCTION)
    for i in range(3):
        ens.act(flat_observation(i))
    assert backbone.image_calls == [1, 1, 1]
    assert one.head.windows[-1] == two.head.windows[-1] == [0, 0, 0, 0, 0, 0, 1, 2]
