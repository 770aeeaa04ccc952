"""The team's grounder + MLP policy in the loop (policies.goalnav.policy, policies.goalnav.oracle): the oracle
grounder's geometry and error model, the S2V2 server's grounding cache and each decision's latency per component in
simulated time, team files through sim.eval and sim.checkpoint, the bundled exp73 / exp49 weights, their replay
beside our closed loop, and bad input."""

from __future__ import annotations

import copy
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401 - registers the environments
from policies.goalnav.grounders import MISS, Grounder, Grounding
from policies.goalnav.heads import ROT_L, ActionMLP, Exp73HybridHead, Exp73MLPHead, GoalNavMLP, Stage1ImageProj
from policies.goalnav.oracle import OracleGrounder
from policies.goalnav.policy import GoalNavPolicy, build_goalnav_policy, bundled_checkpoint
from sim.evaluation.replay import kinematic_path, replay_metrics

TINY_VIS = 32  # tiny-kosmos2's image_mean width


def corridor_env(**kwargs):
    return gym.make("MobileVLA/Corridor-v0", image_size=(64, 36), **kwargs)


def oracle_at_start(position="center", path="straight", seed=3, **oracle_kwargs):
    env = corridor_env(jitter=False)
    obs, info = env.reset(seed=seed, options={"scenario": position, "distance": path})
    env.close()
    oracle = OracleGrounder(**{"cold_start": False, "miss": 0.0, "centre_noise": 0.0, "size_noise": 0.0,
                               **oracle_kwargs})
    oracle.reset({**info, "episode_seed": seed})
    return oracle, np.asarray(obs["state"], dtype=np.float64), info


# --------------------------------------------------------------------------------------------------- the oracle


@pytest.mark.parametrize("position", ["center", "weak_left", "strong_left", "weak_right", "strong_right"])
def test_oracle_sees_the_basket_where_the_position_puts_it(position):
    oracle, state, info = oracle_at_start(position, owl=False)
    g = oracle.ground(None, state, 1)
    assert g.has_bbox and g.cx == pytest.approx(info["scene"]["target_image_x"], abs=0.01)
    x1, y1, x2, y2 = g.box
    assert g.area == pytest.approx((x2 - x1) * (y2 - y1)) and 0.01 < g.area < 0.05  # true fractions, far away
    assert 0.35 < g.cy < 0.6  # lower-middle of the frame: the deployed grounder's min_cy filter keeps it


def test_oracle_served_area_grows_to_the_stop_band_and_is_capped():
    oracle, state, _ = oracle_at_start()
    far = oracle.ground(None, state, 1)
    assert far.area == pytest.approx(min(3 * far.raw_area, 1.0))  # VLA_OWLV2_AREA_SCALE
    near_state = state.copy()
    near_state[0] += 2.5  # 0.47 m from the basket: the stop band
    near = oracle.ground(None, near_state, 2)
    assert near.has_bbox and near.area == 1.0 and near.raw_area > far.raw_area * 10
    assert near.box[3] == pytest.approx(1.0)  # the basket runs off the frame's bottom when close


def test_oracle_error_model_is_seeded_and_keeps_its_rates():
    oracle, state, info = oracle_at_start(miss=0.2, cold_start=True, centre_noise=0.01, size_noise=0.05)

    def run(seed, n=400):
        oracle.reset({**info, "episode_seed": seed})
        return [oracle.ground(None, state, t) for t in range(n)]

    a, b, c = run(1), run(1), run(2)
    assert a == b and a != c
    assert a[0].filter_reason == "cold start" and not a[0].has_bbox
    missed = sum(g.filter_reason == "missed" for g in a[1:]) / (len(a) - 1)
    assert 0.15 < missed < 0.25
    hits = [g for g in a if g.has_bbox]
    assert np.std([g.cx for g in hits]) == pytest.approx(0.01, rel=0.25)


def test_oracle_out_of_view_gives_false_positives_at_its_rate():
    oracle, state, _ = oracle_at_start(false_positive=0.0)
    behind = state.copy()
    behind[2] += np.pi  # facing away
    assert oracle.true_box(behind) is None
    g = oracle.ground(None, behind, 1)
    assert not g.has_bbox and g.filter_reason == "not in view"
    always = copy.copy(oracle)  # a copy sharing the scene
    always.false_positive = 1.0
    assert any(always.ground(None, behind, t).has_bbox for t in range(20))


def test_oracle_bad_arguments_and_missing_info():
    with pytest.raises(ValueError, match="miss"):
        OracleGrounder(miss=1.5)
    with pytest.raises(ValueError, match="size_noise"):
        OracleGrounder(size_noise=-1)
    with pytest.raises(KeyError, match="reset"):
        OracleGrounder().reset({})
    oracle, _, _ = oracle_at_start()
    with pytest.raises(ValueError, match="state"):
        oracle.ground(None, None, 1)


# ------------------------------------------------------------------------------------- the policy's server rules


class CountingGrounder(Grounder):
    """A grounder that sees the basket centred, but for the calls listed in ``misses``."""

    name = "counting"
    default_latency_s = 1.9

    def __init__(self, misses=()):
        self.calls, self.misses = [], set(misses)

    def ground(self, image, state, step):
        self.calls.append(step)
        if len(self.calls) - 1 in self.misses:
            return MISS
        return Grounding(0.5, 0.6, 0.1, True, 1.0, (0.4, 0.5, 0.6, 0.7), 0.033, None)


class FixedBackbone:
    def encode_frames(self, images, streams):
        return torch.ones(1, TINY_VIS)


def tiny_policy(grounder, **options):
    head = Exp73MLPHead(4 + 256, 6).eval()
    ckpt = type("Ckpt", (), {"kind": "exp73_mlp", "head": head, "window": 6, "bbox_scale": 3.0})()
    return GoalNavPolicy(ckpt, Stage1ImageProj(TINY_VIS, 256).eval(), FixedBackbone(), grounder, **options)


def drive(policy, steps, classes=None):
    """The components of each call ("G": grounded, ".": cached), the head deciding ``classes`` (FORWARD)."""
    policy.reset("go", {})
    components = []
    for t in range(steps):
        policy._classes = lambda c=(classes or [1] * steps)[t]: torch.tensor([c])
        policy.act({"image": np.zeros((36, 64, 3), np.uint8), "state": np.zeros(6, np.float32)})
        components.append("G" if "grounder" in policy.step_components else ".")
    return "".join(components)


def test_grounding_cache_skips_two_of_three_calls_and_regrounds_after_a_miss():
    assert drive(tiny_policy(CountingGrounder()), 9) == "G..G..G.."
    assert drive(tiny_policy(CountingGrounder(), grounding_skip_n=1), 4) == "GGGG"
    assert drive(tiny_policy(CountingGrounder(misses={0})), 5) == "GG.G."
    assert drive(tiny_policy(CountingGrounder(misses={0}), reground_on_miss=False), 5) == "G..G."


def test_grounding_cache_regrounds_after_a_rotation():
    policy = tiny_policy(CountingGrounder())
    assert drive(policy, 5, [1, ROT_L, 1, 1, 1]) == "G.GG."  # call 2 after the turn, 3 as due


def test_latency_components_and_stop_rule_options():
    policy = tiny_policy(CountingGrounder(), latencies={"grounder": 0.5})
    assert policy.component_latencies == {"grounder": 0.5, "vision": 0.0537, "mlp": 0.001}
    assert tiny_policy(CountingGrounder(), stop_mode="proximity").rule.stop_mode == "proximity"
    with pytest.raises(Exception, match="grounding_skip_n"):
        tiny_policy(CountingGrounder(), grounding_skip_n=0)


# ------------------------------------------------------------------------------------------ files and commands


@pytest.fixture(scope="module")
def team_files(tmp_path_factory):
    """Team-layout exp73 + Stage 1 and exp49 files sized for tiny-kosmos2's 32-d vision feature."""
    folder = tmp_path_factory.mktemp("team")
    torch.manual_seed(0)
    files = {"exp73": folder / "exp73_owl_stage1v3_v6_mlp.pt", "stage1": folder / "stage1_v3_5cls_owl_projs.pt",
             "exp49": folder / "exp49_mlp.pt"}
    torch.save({"model": Exp73MLPHead(4 + 256, 6).state_dict(), "val_acc": 0.74, "head": "mlp", "arm": "v6",
                "window": 6, "bbox_scale": 3.0, "exp": "exp73"}, files["exp73"])
    torch.save({"image_proj": Stage1ImageProj(TINY_VIS, 256).state_dict(), "val_acc": 0.8}, files["stage1"])
    d_in = 8 * 4 + TINY_VIS + 3
    torch.save({"model_state_dict": GoalNavMLP(d_in).state_dict(), "d_in": d_in, "window": 8,
                "vis_dim": TINY_VIS, "goal_dim": 3}, files["exp49"])
    files["exp46"] = folder / "exp46_mlp.pt"
    torch.save({"model_state_dict": GoalNavMLP(d_in - 3).state_dict(), "d_in": d_in - 3, "window": 8,
                "vis_dim": TINY_VIS}, files["exp46"])
    files["stage2-v2"] = folder / "stage2_v2_mlp.pt"
    torch.save({"mlp": ActionMLP(8 * 4 + 256).state_dict(), "d_in": 8 * 4 + 256, "head": "mlp", "window": 8},
               files["stage2-v2"])
    files["exp73-hybrid"] = folder / "exp73_owl_stage1v3_v6_hybrid.pt"
    torch.save({"model": Exp73HybridHead(4 + 256, 6).state_dict(), "head": "hybrid", "window": 6, "bbox_scale": 3.0,
                "exp": "exp73"}, files["exp73-hybrid"])
    return files


@pytest.mark.parametrize("variant", ["exp46", "exp49", "stage2-v2", "exp73", "exp73-hybrid"])
def test_every_team_layout_runs_through_sim_eval_checkpoint(variant, team_files, tmp_path):
    stage1 = ["--policy-arg", f"stage1={team_files['stage1']}"] if variant not in ("exp46", "exp49") else []
    code, out = eval_cli(tmp_path, "--policy", variant, "--checkpoint", str(team_files[variant]), "--backbone",
                         "tiny-kosmos2", "--max-time", "5", *stage1)
    assert code == 0
    record = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert record["error"] is None and record["steps"] >= 1


def eval_cli(tmp_path, *args):
    from sim.eval import main

    out = tmp_path / "run"
    code = main(["--family", "corridor", "--layouts", "center", "--distances", "straight", "--episodes", "1",
                 "--max-time", "12", "--workers", "1", "--record", "none", "--out", str(out),
                 *args])
    return code, out


def test_team_exp73_file_drives_the_corridor_with_the_robots_latencies(team_files, tmp_path):
    code, out = eval_cli(tmp_path, "--policy", "exp73", "--checkpoint", str(team_files["exp73"]), "--backbone",
                         "tiny-kosmos2", "--policy-arg", f"stage1={team_files['stage1']}", "--latency-component",
                         "grounder=0.5")
    assert code == 0
    record = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert record["error"] is None and record["latency_applied"] == "components"
    steps = record["latency_steps_s"]
    assert steps[0] == pytest.approx(0.5547) and set(steps) <= {0.5547, 0.0547}
    assert record["status"] in ("success", "overshoot", "timeout", "collision")
    # what the failure taxonomy reads: the grounder's detections, the expert's classes at the same states
    assert len(record["detections"]) == len(record["expert_keys"]) == record["steps"]
    assert record["detections"][0] is False  # the cold start: no grounding before the first frame
    assert len(record["target_in_view"]) == len(record["detections"])
    assert record["target_in_view"][0] is True  # the team placed the basket in the start image
    result = json.loads((out / "episode_results.jsonl").read_text().splitlines()[0])
    assert "unknown" not in result["categories"].values() and result["deviation_mean_m"] is not None


def test_team_exp49_file_and_the_goal_of_its_first_frame(team_files, tmp_path):
    policy = build_goalnav_policy("exp49", checkpoint=team_files["exp49"], backbone="tiny-kosmos2")
    env = corridor_env()
    obs, info = env.reset(seed=0)
    policy.reset(info["instruction"], {**info, "episode_seed": 0})
    for _ in range(3):
        action = policy.act(obs)
        obs, *_ = env.step(action)
    env.close()
    assert policy.goal is not None and len(policy.history) == 3
    assert policy.step_components == ("vision", "mlp")  # call 2: the cache after call 1's re-grounding
    assert policy.provenance["stop rule"] == "none"


@pytest.mark.parametrize("name", ["exp73", "exp49"])
def test_bundled_weights_load_and_say_where_they_come_from(name):
    path, meta = bundled_checkpoint(name)
    assert path.stat().st_size < 3e6 and meta["backbone"] == "lite" and 0 < meta["val_acc"] <= 1
    policy = build_goalnav_policy(name)
    assert policy.provenance["backbone"] == "lite" and "oracle" in policy.provenance["training data"]
    env = corridor_env()
    obs, info = env.reset(seed=1)
    policy.reset(info["instruction"], {**info, "episode_seed": 1})
    assert policy.act(obs).shape == (3,)
    env.close()


@pytest.mark.parametrize("kind", ["exp46", "exp49", "stage1", "stage2_v2", "exp73_mlp", "exp73_hybrid"])
def test_sim_checkpoint_reports_each_team_layout(kind, tmp_path, capsys):
    from test_goalnav_heads import team_file

    from sim.checkpoint import main

    path = tmp_path / f"{kind}.pt"
    torch.save(team_file(kind), path)
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "team grounder + MLP" in out and f"kind          {kind}" in out
    if kind == "stage1":
        assert "verdict       LOADS" in out and "--policy-arg stage1=" in out
        return
    variant = {"exp73_mlp": "exp73", "exp73_hybrid": "exp73-hybrid", "stage2_v2": "stage2-v2"}.get(kind, kind)
    verdict = next(line for line in out.splitlines() if "verdict" in line)
    assert f"LOADS: python -m sim.eval --policy {variant} --checkpoint {path}" in verdict
    assert ("stage1=STAGE1_FILE" in verdict) == (kind not in ("exp46", "exp49"))


@pytest.mark.parametrize("args, fragment", [
    (["--policy", "exp73", "--checkpoint", "{exp49}", "--backbone", "tiny-kosmos2"], "--policy exp49"),
    (["--policy", "exp73", "--checkpoint", "{exp73}", "--backbone", "tiny-kosmos2"], "stage1=FILE"),
    (["--policy", "exp73", "--checkpoint", "{exp73}", "--backbone", "lite", "--policy-arg", "stage1={stage1}"],
     "wrong shapes"),
    (["--policy", "exp73", "--policy-arg", "window=9"], "window"),
    (["--policy", "exp73", "--policy-arg", "grounder=owlv2", "--policy-arg", "grounder_path={empty}"], "{empty}"),
    (["--policy", "exp73", "--policy-arg", "stop_rule=off"], "unknown option"),
])
def test_bad_goalnav_input_is_one_line_and_exit_2(team_files, tmp_path, capsys, args, fragment):
    empty = tmp_path / "owl"
    empty.mkdir()
    names = {k: str(v) for k, v in team_files.items()} | {"empty": str(empty)}
    code, _ = eval_cli(tmp_path, *[a.format(**names) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert fragment.format(**names) in err, err


# -------------------------------------------------------------------------------------- their replay, ours beside


def test_their_kinematic_model_and_metrics():
    path = kinematic_path(["FORWARD"] * 10 + ["ROT_L"] * 4)
    assert path[10, 0] == pytest.approx(1.15) and path[-1, 2] == pytest.approx(0.1)
    same = replay_metrics(["FORWARD"] * 10, ["FORWARD"] * 10)
    assert same["success"] and same["fpe"] == 0 and same["tld"] == 1
    short = replay_metrics(["FORWARD"] * 10, ["FORWARD"] * 5 + ["STOP"] * 5)
    assert short["fpe"] == pytest.approx(0.575) and short["tld"] == pytest.approx(0.5) and not short["success"]
    lateral = replay_metrics(["FORWARD"] * 10, ["FWD+L"] * 10)
    assert lateral["fpe"] == pytest.approx(1.15) and not lateral["success"]


def test_sim_offline_on_corridor_files_puts_their_replay_beside_closed_loop(tmp_path):
    from policies.registry import make_policy
    from sim.generate import main as generate
    from sim.offline import main as offline

    data = tmp_path / "data"
    assert generate(["--family", "corridor", "--out", str(data), "--episodes", "2", "--layouts", "center",
                     "--distances", "straight", "--image-size", "64x36", "--workers", "1", "--no-progress"]) == 0
    out = tmp_path / "offline"
    assert offline(["--data", str(data), "--policy", "expert", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    overall = summary["policies"]["expert"]["overall"]
    assert overall["episodes"] == 2 and overall["closed_loop_successes"] == 2
    rows = [json.loads(line) for line in (out / "replay.jsonl").read_text().splitlines()]
    assert all(r["replay"]["success"] for r in rows)  # the expert replayed on its own frames is its own label

    # a recording of the robot (no sim_params): their replay alone, for a policy that needs no simulator truth
    import h5py

    from foundations.errors import ConfigError
    from sim.evaluation.replay import evaluate_replay

    recording = tmp_path / "recording.h5"
    recording.write_bytes(sorted(data.glob("*.h5"))[0].read_bytes())
    with h5py.File(recording, "r+") as f:
        for key in [k for k in f.attrs if k.startswith("sim_")]:
            del f.attrs[key]
    summary = evaluate_replay({"stub": tiny_policy(CountingGrounder())}, [recording], tmp_path / "rec",
                              progress=False)
    overall = summary["policies"]["stub"]["overall"]
    assert overall["episodes"] == 1 and overall["closed_loop_episodes"] == 0
    assert "- (recordings: no scene)" in (tmp_path / "rec" / "summary.md").read_text()
    with pytest.raises(ConfigError, match="expert cannot replay it"):
        evaluate_replay({"expert": make_policy("expert")}, [recording], tmp_path / "rec2", progress=False)


def test_a_policys_latency_never_leaks_into_the_next_episodes_reset():
    """A grounder policy's per-step latency (1.9 s) must not be what the next episode's reset reports: the expert
    plans its stop with it (found by sim.offline running exp73, then the expert, in one environment)."""
    from policies.registry import make_policy
    from sim.evaluation.config import Latency
    from sim.evaluation.worker import run_policy_episode

    env = corridor_env(max_time=10)
    options = {"scenario": "center", "distance": "straight"}
    slow, _ = run_policy_episode(env, tiny_policy(CountingGrounder()), 0, latency=Latency(), options=options)
    assert max(slow.latency_steps_s) > 1.9
    record, episode = run_policy_episode(env, make_policy("expert"), 0, latency=Latency(), options=options)
    env.close()
    assert episode.reset_info["control"]["action_latency"] == 0.0 and record.status == "success"
