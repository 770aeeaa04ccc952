"""The team's grounder + MLP navigation heads (policies.goalnav): names, shapes and parameter counts equal their
files' (tests/goalnav_layouts.json); forwards equal transcriptions of their code bit for bit; inputs are assembled
as their trainers and S2V2 server do; the server's decision rules; and their checkpoint layouts are recognised,
loaded strictly, or refused with one-line errors naming the file and field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from foundations.errors import MobileVLAError
from policies.checkpoints import CheckpointNotFoundError
from policies.goalnav import (
    ACTION_2D,
    ACTION_3D,
    CLASS_NAMES,
    ActionMLP,
    DecisionRule,
    Exp73HybridHead,
    Exp73MLPHead,
    GoalNavCheckpointError,
    GoalNavMLP,
    HistoryFrame,
    Stage1ImageProj,
    argmax_classes,
    bbox_rows,
    blocks_rotation,
    exp49_goal,
    exp73_sequence,
    goalnav_features,
    hybrid_classes,
    learned_stop_latch,
    load_goalnav_checkpoint,
    mean_vision_feature,
    pad_window,
    project_vision,
    proximity_stop,
    recognise_goalnav_checkpoint,
    stage2_v2_features,
    strip_net_prefix,
    window_indices,
)

LAYOUTS = json.loads((Path(__file__).parent / "goalnav_layouts.json").read_text())
KINDS = ["exp46", "exp49", "stage1", "stage2_v2", "exp73_mlp", "exp73_hybrid"]
REAL_HEADS = {"exp46": lambda: GoalNavMLP(1056), "exp49": lambda: GoalNavMLP(1059), "stage1": Stage1ImageProj,
              "stage2_v2": lambda: ActionMLP(288), "exp73_mlp": Exp73MLPHead, "exp73_hybrid": Exp73HybridHead}


def layout_state(kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the manifest's names and shapes."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*shape, generator=gen) * 0.05 for k, shape in LAYOUTS[kind]["head_state_dict"].items()}


# ---------------------------------------------------------------------- the team's code, transcribed from the notes


def team_build_mlp(d_in):  # TR46 / TR49 build_mlp
    return nn.Sequential(
        nn.Linear(d_in, 512), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 8))


class TeamActionMLP(nn.Module):  # TR-S2v2 / S2V2 ActionMLP
    def __init__(self, d_in):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, 256), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(64, 8))

    def forward(self, x):
        return self.net(x)


class TeamMLPActionHead(nn.Module):  # TR73 MLPActionHead
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(260 * 6, 512), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(512, 128), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(128, 8))

    def forward(self, x):
        return self.net(x.flatten(1))


class TeamHybridHead(nn.Module):  # TR73 HybridHead
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(260 * 6, 512), nn.ReLU(), nn.Dropout(0.25),
                                   nn.Linear(512, 128), nn.ReLU())
        self.disc_head = nn.Linear(128, 6)
        self.az_head = nn.Sequential(nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, 1), nn.Tanh())

    def forward(self, x):
        h = self.trunk(x.flatten(1))
        return self.disc_head(h), self.az_head(h).squeeze(-1)


def frames(n: int, vis_dim: int = 256, seed: int = 0, has: bool = True) -> list[HistoryFrame]:
    """n frames with dyadic bbox values (exact in float32 at any scale used here) and distinct vis features."""
    gen = torch.Generator().manual_seed(seed)
    return [HistoryFrame(cx=0.125 * (i % 8), cy=0.5 + 0.0625 * (i % 4), area=0.03125 * (i + 1), has_bbox=has,
                         vis_feat=torch.randn(vis_dim, generator=gen)) for i in range(n)]


# ------------------------------------------------------------------------------------------------ (a) layouts


@pytest.mark.parametrize("kind", KINDS)
def test_real_size_names_shapes_and_parameter_counts_equal_the_manifest(kind):
    head = REAL_HEADS[kind]()
    info = LAYOUTS[kind]
    assert {k: list(v.shape) for k, v in head.state_dict().items()} == info["head_state_dict"]
    assert sum(p.numel() for p in head.parameters()) == info["head_param_count"]
    assert info["module"] == f"{type(head).__module__}.{type(head).__name__}"


def test_manifest_counts_are_the_notes():
    counts = {k: LAYOUTS[k]["head_param_count"] for k in KINDS}
    assert counts == {"exp46": 714_184, "exp49": 715_720, "stage1": 262_400, "stage2_v2": 115_656,
                      "exp73_mlp": 865_928, "exp73_hybrid": 869_831}


def test_class_and_action_tables_are_the_s2v2_servers():
    assert CLASS_NAMES == ("STOP", "FORWARD", "LEFT", "RIGHT", "FWD+L", "FWD+R", "ROT_L", "ROT_R")
    assert {k: list(v) for k, v in ACTION_2D.items()} == {
        0: [0, 0], 1: [1.15, 0], 2: [0, 1.15], 3: [0, -1.15], 4: [1.15, 1.15], 5: [1.15, -1.15], 6: [0, 0],
        7: [0, 0]}
    assert {k: list(v) for k, v in ACTION_3D.items()} == {
        0: [0, 0, 0], 1: [1.15, 0, 0], 2: [0, 1.15, 0], 3: [0, -1.15, 0], 4: [1.15, 1.15, 0],
        5: [1.15, -1.15, 0], 6: [0, 0, 0.25], 7: [0, 0, -0.25]}


# ------------------------------------------------------------------------------------------------ (b) forwards


@pytest.mark.parametrize("kind", ["exp46", "exp49"])
def test_goalnav_mlp_forward_equals_the_bare_sequential(kind):
    state = layout_state(kind)
    d_in = LAYOUTS[kind]["metadata"]["d_in"]
    ours, theirs = GoalNavMLP(d_in).eval(), team_build_mlp(d_in).eval()
    ours.load_state_dict(state, strict=True)
    theirs.load_state_dict(state, strict=True)
    x = torch.randn(5, d_in)
    assert torch.equal(ours(x), theirs(x))
    wrapped = GoalNavMLP(d_in).eval()
    wrapped.load_state_dict(strip_net_prefix({f"net.{k}": v for k, v in state.items()}), strict=True)
    assert torch.equal(wrapped(x), theirs(x))


def test_stage1_projection_equals_stage1_encoder():
    state = layout_state("stage1")
    ours, theirs = Stage1ImageProj(), nn.Linear(1024, 256)
    ours.load_state_dict(state, strict=True)
    theirs.load_state_dict(state, strict=True)
    hidden = torch.randn(2, 257, 1024).half()
    feat = hidden.mean(dim=1).float()
    assert torch.equal(mean_vision_feature(hidden), feat)
    out = project_vision(ours, mean_vision_feature(hidden))
    assert torch.equal(out, F.normalize(theirs(feat), dim=-1))
    assert out.dtype == torch.float32 and torch.allclose(out.norm(dim=-1), torch.ones(2))


def test_action_mlp_forward_equals_stage2_v2():
    state = layout_state("stage2_v2")
    ours, theirs = ActionMLP(288).eval(), TeamActionMLP(288).eval()
    ours.load_state_dict(state, strict=True)
    theirs.load_state_dict(state, strict=True)
    x = torch.randn(4, 288)
    assert torch.equal(ours(x), theirs(x))


def test_exp73_mlp_forward_equals_mlp_action_head():
    state = layout_state("exp73_mlp")
    ours, theirs = Exp73MLPHead().eval(), TeamMLPActionHead().eval()
    ours.load_state_dict(state, strict=True)
    theirs.load_state_dict(state, strict=True)
    x = torch.randn(3, 6, 260)
    assert torch.equal(ours(x), theirs(x))


def test_exp73_hybrid_forward_equals_hybrid_head():
    state = layout_state("exp73_hybrid")
    ours, theirs = Exp73HybridHead().eval(), TeamHybridHead().eval()
    ours.load_state_dict(state, strict=True)
    theirs.load_state_dict(state, strict=True)
    x = torch.randn(3, 6, 260)
    (d1, a1), (d2, a2) = ours(x), theirs(x)
    assert d1.shape == (3, 6) and a1.shape == (3,)
    assert torch.equal(d1, d2) and torch.equal(a1, a2)


# ------------------------------------------------------------------------------------------------ (c) inputs


def test_window_pads_by_repeating_the_oldest_frame_like_training():
    assert window_indices(1, 6) == [0] * 6
    assert window_indices(3, 6) == [0, 0, 0, 0, 1, 2]
    assert window_indices(10, 6) == [4, 5, 6, 7, 8, 9]
    for t in range(12):  # training: idx = max(0, t - (W-1-k)) over frames[:t+1]
        assert window_indices(t + 1, 8) == [max(0, t - (8 - 1 - k)) for k in range(8)]
    hist = frames(2)
    assert pad_window(hist, 4) == [hist[0], hist[0], hist[0], hist[1]]
    with pytest.raises(ValueError):
        window_indices(0, 6)


def test_bbox_scale_multiplies_all_four_fields():
    rows = bbox_rows([HistoryFrame(0.25, 0.5, 0.125, True), HistoryFrame(0.5, 0.625, 0.0625, False)], 3.0)
    assert rows.dtype == torch.float32
    assert rows.tolist() == [[0.75, 1.5, 0.375, 3.0], [1.5, 1.875, 0.1875, 0.0]]
    assert bbox_rows([HistoryFrame(0.3, 0.7, 0.2, True)]).tolist() == torch.tensor([[0.3, 0.7, 0.2, 1.0]]).tolist()


def test_goalnav_features_equal_the_exp46_and_exp49_training_layout():
    hist = frames(3, vis_dim=1024)
    x = goalnav_features(hist)
    assert x.shape == (1, 1056) and x.dtype == torch.float32
    want = []  # TR46 build_dataset at t = 2
    for k in range(8):
        fr = hist[max(0, 2 - (8 - 1 - k))]
        want += [fr.cx, fr.cy, fr.area, float(fr.has_bbox)]
    assert torch.equal(x[0], torch.cat([torch.tensor(want), hist[2].vis_feat]))
    goal = exp49_goal(hist[0])
    assert goal.tolist() == [hist[0].cx, hist[0].cy, hist[0].area]
    x49 = goalnav_features(hist, goal=goal)
    assert x49.shape == (1, 1059) and torch.equal(x49[0, :1056], x[0]) and torch.equal(x49[0, 1056:], goal)
    assert exp49_goal(HistoryFrame(0.9, 0.9, 0.2, False)).tolist() == [0.5, 0.5, 0.0]


def test_stage2_v2_uses_only_the_current_frames_vis():
    hist = frames(5)
    x = stage2_v2_features(hist)
    assert x.shape == (1, 8 * 4 + 256)
    assert torch.equal(x[0, 32:], hist[-1].vis_feat)
    assert torch.equal(x[0, :32], bbox_rows(pad_window(hist, 8)).flatten())
    older_changed = [f._replace(vis_feat=torch.zeros(256)) for f in hist[:-1]] + [hist[-1]]
    assert torch.equal(stage2_v2_features(older_changed), x)
    assert stage2_v2_features(hist, window=6, bbox_scale=3.0).shape == (1, 6 * 4 + 256)
    with pytest.raises(ValueError, match="vis_feat"):
        stage2_v2_features(hist[:-1] + [hist[-1]._replace(vis_feat=None)])


def test_exp73_sequence_uses_each_frames_own_vis_frame_major():
    hist = frames(3)
    x = exp73_sequence(hist)
    assert x.shape == (1, 6, 260) and x.dtype == torch.float32
    idx = [0, 0, 0, 0, 1, 2]
    for k, i in enumerate(idx):  # TR73 build_windows: [v*3.0 for v in bbox] + vis[idx]
        fr = hist[i]
        want = [v * 3.0 for v in (fr.cx, fr.cy, fr.area, float(fr.has_bbox))] + fr.vis_feat.tolist()
        assert x[0, k].tolist() == torch.tensor(want).tolist()
    flat = x.flatten(1)[0]  # what the heads see: oldest frame's 260 values first, the current frame last
    assert torch.equal(flat[:260], x[0, 0]) and torch.equal(flat[-256:], hist[2].vis_feat)
    first = exp73_sequence(hist[:1])
    assert all(torch.equal(first[0, k], first[0, 0]) for k in range(6))
    no_vis = exp73_sequence([hist[0]._replace(vis_feat=None)])
    assert torch.equal(no_vis[0, :, 4:], torch.zeros(6, 256))


# ------------------------------------------------------------------------------------------------ (d) decisions


def test_argmax_and_hybrid_decode_at_the_threshold():
    assert argmax_classes(torch.tensor([[0.0, 1, 5, 2, 0, 0, 0, 0]])).tolist() == [2]
    thr = torch.tensor(0.1 / 1.15)
    above = torch.nextafter(thr, torch.tensor(1.0))
    stop = torch.tensor([[5.0, 0, 0, 0, 0, 0]])
    fwd = torch.tensor([[0.0, 5, 0, 0, 0, 0]])
    assert hybrid_classes(stop, thr.reshape(1)).tolist() == [0]
    assert hybrid_classes(stop, -thr.reshape(1)).tolist() == [0]
    assert hybrid_classes(stop, above.reshape(1)).tolist() == [6]
    assert hybrid_classes(stop, -above.reshape(1)).tolist() == [7]
    assert hybrid_classes(fwd, torch.tensor([0.9])).tolist() == [1]
    batch = hybrid_classes(torch.cat([stop, stop, fwd]), torch.tensor([0.5, -0.5, -0.5]))
    assert batch.tolist() == [6, 7, 1]


def near(has=True, area=0.25, cx=0.5):
    return HistoryFrame(cx=cx, cy=0.6, area=area, has_bbox=has)


def test_proximity_stop_needs_three_consecutive_qualifying_frames():
    assert not proximity_stop([near(), near()])
    assert proximity_stop([near(), near(), near()])
    assert proximity_stop([near(area=0.0), near(), near(), near(area=0.3, cx=0.85)])  # bounds inclusive
    assert not proximity_stop([near(), near(has=False), near()])
    assert not proximity_stop([near(), near(), near(area=0.2499)])
    assert not proximity_stop([near(), near(), near(cx=0.86)])
    assert proximity_stop([near(area=0.1)] * 3, area_threshold=0.1, consec_frames=3)
    rule = DecisionRule()
    hist = []
    for step in range(3):
        hist.append(near())
        d = rule.step(1, hist)
        assert (d.pred_class, d.proximity_override) == ((0, True) if step == 2 else (1, False))
    assert d.action_3d == (0.0, 0.0, 0.0) and d.label == "STOP"


def test_learned_stop_latches_with_a_bbox_from_step_three_and_stays():
    assert learned_stop_latch(0, True, 2, False) == (0, False)  # STOP for the call, no latch
    assert learned_stop_latch(0, False, 5, False) == (0, False)
    assert learned_stop_latch(0, True, 3, False) == (0, True)
    assert learned_stop_latch(1, True, 9, True) == (0, True)
    rule = DecisionRule(stop_mode="learned")
    hist = []
    seen = []
    for step, (pred, has) in enumerate([(0, True), (1, True), (0, True), (0, False), (1, True), (0, True),
                                        (1, True), (4, False)]):
        hist.append(near(has=has))
        d = rule.step(pred, hist)
        seen.append((step, d.pred_class, d.stop_latched))
    assert seen == [(0, 0, False), (1, 1, False), (2, 0, False), (3, 0, False), (4, 1, False), (5, 0, True),
                    (6, 0, True), (7, 0, True)]
    rule.reset()
    assert rule.step(1, [near()]).pred_class == 1 and not rule.stop_latched


def test_second_consecutive_rotation_gives_zero_action_with_class_unchanged():
    assert blocks_rotation(7, 6) and blocks_rotation(6, 6) and not blocks_rotation(6, None)
    assert not blocks_rotation(6, 1) and not blocks_rotation(1, 7)
    rule = DecisionRule()
    far = [near(area=0.05)]
    first, second, third, fourth, fifth = (rule.step(c, far) for c in (6, 7, 6, 1, 6))
    assert first.action_3d == (0.0, 0.0, 0.25) and not first.blocked_second_rotation
    assert second.blocked_second_rotation and second.pred_class == 7 and second.label == "ROT_R"
    assert second.action == (0.0, 0.0) and second.action_3d == (0.0, 0.0, 0.0)
    assert third.blocked_second_rotation  # the previous class stays the (blocked) rotation
    assert fourth.action == (1.15, 0.0) and not fifth.blocked_second_rotation
    with pytest.raises(ValueError):
        DecisionRule(stop_mode="off")


# ------------------------------------------------------------------------------------------------ (e) files


def team_file(kind: str, seed: int = 0, **overrides) -> dict:
    """A checkpoint dict in the team trainer's layout for ``kind`` (real sizes)."""
    state = layout_state(kind, seed)
    files = {
        "exp46": lambda: {"model_state_dict": state, "d_in": 1056, "window": 8, "vis_dim": 1024,
                          "overall_acc": np.float64(0.9316), "confusion": [[0] * 8 for _ in range(8)]},
        "exp49": lambda: {"model_state_dict": state, "d_in": 1059, "window": 8, "vis_dim": 1024, "goal_dim": 3,
                          "overall_acc": np.float64(0.964)},
        "stage1": lambda: {"image_proj": state, "text_proj": {"weight": torch.zeros(256, 2048),
                                                              "bias": torch.zeros(256)},
                           "anchor_raw": torch.zeros(3, 2048), "val_acc": 0.81},
        "stage2_v2": lambda: {"mlp": state, "val_acc": 0.85, "d_in": 288, "head": "mlp", "window": 8,
                              "augment": False, "noise_scale": 0.0, "aug_params": None},
        "exp73_mlp": lambda: {"model": state, "val_acc": 0.7413, "head": "mlp", "arm": "v6", "window": 6,
                              "bbox_scale": 3.0, "exp": "exp73"},
        "exp73_hybrid": lambda: {"model": state, "val_acc": 0.7, "head": "hybrid", "arm": "v6", "window": 6,
                                 "bbox_scale": 3.0, "exp": "exp73"},
    }
    return {**files[kind](), **overrides}


EXPECTED = {"exp46": (8, 1.0, 1056, 0), "exp49": (8, 1.0, 1059, 3), "stage1": (None, None, 1024, 0),
            "stage2_v2": (8, 1.0, 288, 0), "exp73_mlp": (6, 3.0, 1560, 0), "exp73_hybrid": (6, 3.0, 1560, 0)}


@pytest.mark.parametrize("kind", KINDS)
def test_team_files_round_trip(kind, tmp_path):
    path = tmp_path / f"{kind}.pt"
    saved = team_file(kind)
    torch.save(saved, path)
    ck = load_goalnav_checkpoint(path)
    assert (ck.kind, ck.window, ck.bbox_scale, ck.d_in, ck.goal_dim) == (kind, *EXPECTED[kind])
    assert ck.fallbacks == (("bbox_scale",) if kind == "stage2_v2" else ())
    assert type(ck.head) is type(REAL_HEADS[kind]()) and not ck.head.training
    want = saved[LAYOUTS[kind]["state_dict_key"]]
    assert set(ck.head.state_dict()) == set(want)
    assert all(torch.equal(v, want[k]) for k, v in ck.head.state_dict().items())
    assert ck.path == str(path)


def test_plain_torch_load_dicts_are_recognised_and_numpy_metadata_needs_the_project_loader(tmp_path):
    path = tmp_path / "exp73.pt"
    torch.save(team_file("exp73_mlp"), path)
    ck = recognise_goalnav_checkpoint(torch.load(path, weights_only=True, map_location="cpu"), path, expect="head")
    assert ck.kind == "exp73_mlp" and ck.meta["val_acc"] == pytest.approx(0.7413)
    path46 = tmp_path / "exp46_mlp.pt"
    torch.save(team_file("exp46"), path46)  # overall_acc is a numpy float64, as their trainer saves it
    with pytest.raises(Exception):
        torch.load(path46, weights_only=True, map_location="cpu")
    assert load_goalnav_checkpoint(path46).meta["overall_acc"] == pytest.approx(0.9316)


def test_hold_aware_exp73_files_use_the_server_fallbacks(tmp_path):
    path = tmp_path / "exp73_owl_trackF_v6_mlp_holdaware_seed0.pt"
    torch.save({"model": layout_state("exp73_mlp"), "held_success": 0.8, "head": "mlp", "stride": 5,
                "grounder": "owl"}, path)
    ck = load_goalnav_checkpoint(path, expect="head")
    assert (ck.kind, ck.window, ck.bbox_scale) == ("exp73_mlp", 6, 3.0)
    assert ck.fallbacks == ("window", "bbox_scale") and ck.meta["stride"] == 5
    mirror = tmp_path / "mirror.pt"
    torch.save({"model": layout_state("exp73_hybrid"), "head": "exp73_hybrid", "window": 6, "bbox_scale": 3.0,
                "stride": 5, "grounder": "owlv2"}, mirror)
    assert load_goalnav_checkpoint(mirror).kind == "exp73_hybrid"


def test_net_prefixed_exp46_and_exp49_without_goal_dim(tmp_path):
    path = tmp_path / "wrapped.pt"
    state = {f"net.{k}": v for k, v in layout_state("exp46").items()}
    torch.save(team_file("exp46", model_state_dict=state), path)
    assert load_goalnav_checkpoint(path).kind == "exp46"
    no_goal_field = {k: v for k, v in team_file("exp49").items() if k != "goal_dim"}
    ck = recognise_goalnav_checkpoint(no_goal_field, "exp49_mlp.pt")
    assert (ck.kind, ck.goal_dim, ck.d_in) == ("exp49", 3, 1059)


def test_tiny_sizes_load(tmp_path):
    gen = torch.Generator().manual_seed(1)
    tiny73 = Exp73HybridHead(frame_dim=4 + 8, window=2)
    tiny2 = ActionMLP(d_in=3 * 4 + 8)
    for module in (tiny73, tiny2):
        for p in module.parameters():
            p.data = torch.randn(p.shape, generator=gen)
    path = tmp_path / "tiny73.pt"
    torch.save({"model": tiny73.state_dict(), "head": "hybrid", "window": 2, "bbox_scale": 3.0, "exp": "exp73"}, path)
    ck = load_goalnav_checkpoint(path, proj_dim=8)
    assert (ck.kind, ck.window, ck.d_in) == ("exp73_hybrid", 2, 24)
    x = exp73_sequence(frames(3, vis_dim=8), window=2, proj_dim=8)
    assert all(torch.equal(a, b) for a, b in zip(ck.head(x), tiny73.eval()(x)))
    ck2 = recognise_goalnav_checkpoint({"mlp": tiny2.state_dict(), "d_in": 20, "head": "mlp", "window": 3},
                                       "tiny_s2.pt", proj_dim=8)
    assert (ck2.kind, ck2.window, ck2.d_in) == ("stage2_v2", 3, 20)


def expect_error(ckpt, name, field, *fragments, **kwargs):
    with pytest.raises(GoalNavCheckpointError) as info:
        recognise_goalnav_checkpoint(ckpt, name, **kwargs)
    err = info.value
    assert isinstance(err, MobileVLAError) and isinstance(err, ValueError)
    message = str(err)
    assert "\n" not in message and message.startswith(f"{name}: {field}: ") and err.field == field
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_role_errors_name_the_file_and_field(tmp_path):
    expect_error(team_file("stage1"), "stage1_v2_projs.pt", "image_proj", "Stage 1", expect="head")
    expect_error(team_file("exp73_mlp"), "exp73_owl_stage1v3_v6_mlp.pt", "model", "not a Stage 1",
                 expect="stage1")
    expect_error(team_file("stage2_v2"), "stage2_v2_mlp.pt", "mlp", "head file (stage2_v2)", expect="stage1")
    assert recognise_goalnav_checkpoint(team_file("stage1"), "s1.pt", expect="stage1").kind == "stage1"
    path = tmp_path / "stage1_v3_5cls_owl_projs.pt"
    torch.save(team_file("stage1"), path)
    with pytest.raises(GoalNavCheckpointError, match="^" + re.escape(f"{path}: image_proj: ")):
        load_goalnav_checkpoint(path, expect="head")


def test_window_incompatible_with_d_in():
    expect_error(team_file("exp73_mlp"), "exp73_mlp.pt", "window", "requested window 8", "8*260=2080",
                 "takes 1560 (window 6)", window=8)
    expect_error(team_file("exp73_mlp", window=5), "exp73_w5.pt", "window", ": window 5", "1300")
    expect_error(team_file("stage2_v2", window=6), "stage2_v2_mlp_w6.pt", "window", "6*4+256=280",
                 "takes 288 (window 8)")
    expect_error(team_file("exp46"), "exp46_mlp.pt", "window", "12*4+1024=1072", window=12)
    expect_error(team_file("stage2_v2", d_in=280), "s2.pt", "d_in", "280", "288")
    assert recognise_goalnav_checkpoint(team_file("exp73_mlp"), "exp73.pt", window=6).window == 6


def test_sim_checkpoint_reports_an_unrecognised_team_file_without_a_traceback(tmp_path, capsys):
    from sim import checkpoint as checkpoint_cli

    path = tmp_path / "exp73_w5.pt"
    torch.save(team_file("exp73_mlp", window=5), path)
    assert checkpoint_cli.main([str(path)]) == 1  # the verdict: it does not load
    out = capsys.readouterr().out
    assert "Traceback" not in out and f"problem       {path}: window: window 5" in out
    assert out.strip().endswith("verdict       DOES NOT LOAD")


def test_missing_keys_wrong_shapes_and_unknown_layouts():
    state = layout_state("exp73_mlp")
    del state["net.3.bias"]
    expect_error(team_file("exp73_mlp", model=state), "exp73_mlp.pt", "model", "missing keys net.3.bias")
    bad = layout_state("stage2_v2")
    bad["net.3.weight"] = torch.zeros(64, 256)
    expect_error(team_file("stage2_v2", mlp=bad), "s2.pt", "mlp", "wrong shapes net.3.weight file [64, 256]")
    expect_error(team_file("exp73_mlp", head="transformer"), "exp71.pt", "head", "'transformer'")
    expect_error(team_file("stage2_v2", head="lstm"), "s2_lstm.pt", "head", "'lstm'")
    expect_error({"state_dict": {}}, "other.pt", "keys", "not a goal-nav checkpoint")
    expect_error(team_file("exp73_mlp", window="6"), "exp73.pt", "window", "positive int")
    hybrid_as_mlp = team_file("exp73_hybrid", head="mlp")
    expect_error(hybrid_as_mlp, "exp73_hybrid.pt", "model", "missing keys net.0.bias", "unexpected keys")
    with pytest.raises(CheckpointNotFoundError):
        load_goalnav_checkpoint("/nonexistent/exp73.pt")
