"""The team's own checkpoint files as they are: heads identical to theirs (names, shapes, parameter counts), their
files at the real widths load strictly (and ``sim.checkpoint`` says so) and drive the environment on a backbone
stand-in of those widths; frozen weights inside a file are used; unknown layouts, Namespace ``args``, malicious
pickles and truncated files are handled; big files are memory-mapped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policies.checkpoints import CheckpointFormatError, load_checkpoint
from policies.heads import make_head
from policies.vla import build_vla_policy
from sim import checkpoint as sim_checkpoint
from sim.deploy import checkpoint_report

try:
    from tests.conftest_vla import INSTRUCTION, observation, single_torch_thread
    from tests.team_files import (
        REAL_WIDTHS,
        TEAM,
        StandInBackbone,
        team_state,
        write_simple_lstm_checkpoint,
        write_team_checkpoint,
    )
except ImportError:  # tests/ is not a package
    from conftest_vla import INSTRUCTION, observation, single_torch_thread  # noqa: F401
    from team_files import (
        REAL_WIDTHS,
        TEAM,
        StandInBackbone,
        team_state,
        write_simple_lstm_checkpoint,
        write_team_checkpoint,
    )

KNOWN = ["case1", "case1-v1", "case2", "case3", "hybrid", "pure-kosmos2", "robovlms"]
SUFFIX = {"robovlms": ".ckpt"}


def real_head(name: str, **overrides):
    cls_widths = {"case2": {"vision_dim": 1024, "clip_dim": 512, "text_dim": 2048},
                  "hybrid": {"vision_dim": 2048, "text_dim": 512},
                  "pure-kosmos2": {"vision_dim": 2048, "text_dim": 0},
                  "robovlms": {"vision_dim": 2048, "text_dim": 0}}
    values = {"vision_dim": 1024, "text_dim": 2048, **cls_widths.get(name, {}), **overrides}
    return make_head(name, **values)


@pytest.mark.parametrize("name", KNOWN + ["robovlms-exp17"])
def test_heads_have_the_team_parameter_names_and_shapes(name):
    info = TEAM[name]
    overrides = {"hidden_size": 1024, "chunk_size": 1} if name == "robovlms-exp17" else {}
    head = real_head(name.removesuffix("-exp17"), **overrides)
    want = {k.removeprefix("model."): v for k, v in info["head_state_dict"].items() if k != "model.action_token"}
    assert {k: list(v.shape) for k, v in head.state_dict().items()} == want
    token = 2048 if name.startswith("robovlms") else 0  # the action token lives in the RoboVLMs backbone
    assert sum(p.numel() for p in head.parameters()) + token == info["head_param_count"]


@pytest.mark.parametrize("name", KNOWN)
def test_team_file_at_real_widths_loads_strictly_and_drives_the_env(name, tmp_path, make_env):
    path = write_team_checkpoint(tmp_path / f"best_model{SUFFIX.get(name, '.pth')}", name)
    report = checkpoint_report.inspect_checkpoint(path)
    assert report["loads"], report["problems"]
    assert report["architecture"]["head"] == name and report["detected_from"] in ("key set", "model_config")
    assert report["head_keys"]["missing"] == report["head_keys"]["unexpected"] == []
    assert report["backbone"] == "kosmos2"
    assert all(s["head"] == REAL_WIDTHS[s["stream"]] == s["backbone"] for s in report["streams"] if s["backbone"])
    policy = build_vla_policy(name, checkpoint=path, backbone=StandInBackbone(), dead_zone=False)
    file_state = {k.removeprefix("model."): v for k, v in team_state(name).items()}
    for key, value in policy.head.state_dict().items():
        assert torch.equal(value, file_state[key]), key
    env = make_env(scenario="1box_vert_left")
    obs, info = env.reset(seed=3)
    policy.reset(info["instruction"], info)
    for _ in range(3):
        action = policy.act(obs)
        assert action.shape == (3,) and np.all(np.isfinite(action)) and np.all(np.abs(action) <= 1.5)
        obs, *_ = env.step(action)
    assert policy.num_predictions == 3


def test_case1_and_case3_files_are_told_apart_by_their_model_config(tmp_path):
    for name in ("case1", "case3"):
        ckpt = load_checkpoint(write_team_checkpoint(tmp_path / f"{name}.pth", name))
        assert ckpt.detected_head() == name
    # the same tree: a case 3 file also loads as case1 (and vice versa)
    build_vla_policy("case1", checkpoint=tmp_path / "case3.pth", backbone=StandInBackbone())


def test_a_file_of_another_architecture_is_refused_by_name(tmp_path):
    path = write_team_checkpoint(tmp_path / "hybrid.pth", "hybrid")
    with pytest.raises(ValueError, match="holds a 'hybrid' head .*Kosmos2CLIPHybridModel.*--policy hybrid"):
        build_vla_policy("case2", checkpoint=path, backbone=StandInBackbone())


def test_widths_are_checked_before_any_backbone_is_built(tmp_path, monkeypatch):
    import policies.vla as vla

    path = write_team_checkpoint(tmp_path / "case1.pth", "case1")
    monkeypatch.setattr(vla, "make_backbone", lambda *a, **k: pytest.fail("the backbone was built"))
    with pytest.raises(ValueError, match=r"image features of width 1024 \(vision_dim\) but backbone 'lite' gives 1280"):
        build_vla_policy("case1", checkpoint=path, backbone="lite")


def test_sim_checkpoint_cli_reports_and_exit_codes(tmp_path, capsys):
    good = write_team_checkpoint(tmp_path / "case2.pth", "case2")
    assert sim_checkpoint.main([str(good)]) == 0
    out = capsys.readouterr().out
    assert "case2: team architecture (CLIPNormalized2DActionModelV2)" in out
    assert "45 tensors, 2.04 M parameters: load strictly" in out and "verdict       LOADS" in out
    assert "Kosmos-2 weights (microsoft/kosmos-2-patch14-224 in the Hugging Face cache): NOT FOUND" in out
    state = team_state("case2")
    state["renamed.weight"] = state.pop("action_head.0.weight")
    bad = write_team_checkpoint(tmp_path / "renamed.pth", "case2", state=state)
    assert sim_checkpoint.main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "missing (1): action_head.0.weight" in out and "unexpected (1): renamed.weight" in out
    assert "DOES NOT LOAD" in out
    assert sim_checkpoint.main([str(tmp_path / "nothing.pth")]) == 2
    assert "not found" in capsys.readouterr().err
    assert sim_checkpoint.main([str(good), "--key-map", str(tmp_path / "no-map.json")]) == 2
    assert "no-map.json" in capsys.readouterr().err
    assert sim_checkpoint.main([str(good), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["loads"] and report["meta"]["mae"] == pytest.approx(0.466)
    assert report["config"] == TEAM["case2"]["model_config"]


def test_frozen_models_in_the_file_are_reported(tmp_path, capsys):
    frozen = {"kosmos2_model.": {"text_model.embed_tokens.weight": torch.zeros(8, 4)},
              "clip_text.": {"text_model.embeddings.token_embedding.weight": torch.zeros(8, 4)},
              "clip_vision.": {"vision_model.post_layernorm.weight": torch.zeros(4)}}
    path = write_team_checkpoint(tmp_path / "hybrid.pth", "hybrid", frozen=frozen)
    report = checkpoint_report.inspect_checkpoint(path)
    roles = {f["prefix"]: (f["role"], f["use"]) for f in report["frozen"]}
    assert roles == {"kosmos2_model.": ("kosmos2", "used"), "clip_text.": ("clip_text", "used"),
                     "clip_vision.": ("clip_vision", "not read by the team's forward pass")}
    assert report["head_tensors"] == 6 and report["architecture"]["head"] == "hybrid"


def test_simple_lstm_files_with_namespace_args_load_but_need_a_key_map(tmp_path, capsys):
    recon = make_head("lstm-recon", 1024, 2048)
    theirs = {f"their_lstm.{k}": v for k, v in recon.state_dict().items()}
    path = write_simple_lstm_checkpoint(tmp_path / "best_simple_lstm_model.pth", theirs)
    ckpt = load_checkpoint(path)  # argparse.Namespace is on the allow-list
    assert ckpt.meta["args"]["hidden_size"] == 512 and ckpt.detected_head() is None
    assert sim_checkpoint.main([str(path)]) == 1
    assert "--key-map" in capsys.readouterr().out
    key_map = tmp_path / "map.json"
    key_map.write_text(json.dumps({"their_lstm.": ""}))
    assert sim_checkpoint.main([str(path), "--policy", "lstm-recon", "--key-map", str(key_map)]) == 0
    policy = build_vla_policy("lstm-recon", checkpoint=path, key_map=key_map, backbone=StandInBackbone())
    assert torch.equal(policy.head.rnn.weight_ih_l0, recon.rnn.weight_ih_l0)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_and_truncated_files_are_refused_without_running_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model_state_dict": team_state("case1"), "args": _Payload(marker)}, evil)
    assert sim_checkpoint.main([str(evil)]) == 1
    assert "never unpickled" in capsys.readouterr().out and not marker.exists()
    good = write_team_checkpoint(tmp_path / "good.pth", "case1")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match="cut.pth"):
        load_checkpoint(cut)
    assert sim_checkpoint.main([str(cut)]) == 1


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def test_a_big_embedded_backbone_is_memory_mapped_not_read(tmp_path):
    frozen = {"kosmos.": {"text_model.layers.0.fc1.weight": torch.zeros(64 * 1024, 1024)}}  # 256 MiB
    path = write_team_checkpoint(tmp_path / "big.pth", "case1", frozen=frozen)
    del frozen
    before = _rss_mb()
    ckpt = load_checkpoint(path)
    grown = _rss_mb() - before
    assert ckpt.frozen["kosmos."]["text_model.layers.0.fc1.weight"].shape == (65536, 1024)
    assert grown < 64, f"loading the head keys read {grown:.0f} MiB"
    assert checkpoint_report.inspect_checkpoint(path)["loads"]


def test_the_robots_ckpt_with_its_config_json_at_the_real_widths(tmp_path, capsys):
    """``mobile_vla_left_chunk10_20251218.json``'s act_head / window / chunk / tokenizer fields, as their server
    reads them (VLA_CONFIG_PATH), beside a ``.ckpt`` with the manifest's head keys."""
    config = {"robovlm_name": "RoboKosMos", "model": "kosmos", "image_size": 224, "window_size": 8,
              "fwd_pred_next_n": 10, "norm_action": True, "norm_min": -1.0, "norm_max": 1.0,
              "act_head": {"type": "MobileVLALSTMDecoder", "hidden_size": 512, "action_dim": 2, "down_sample": "none",
                           "latent": 1, "fwd_pred_next_n": 10, "window_size": 8, "action_space": "continuous",
                           "with_history": True, "history_type": "post"},
              "tokenizer": {"type": "AutoProcessor", "pretrained_model_name_or_path": ".vlms/kosmos-2-patch14-224",
                            "tokenizer_type": "kosmos", "max_text_len": 256, "additional_special_tokens": None},
              "train_setup": {"freeze_backbone": True, "lora_enable": False, "predict_action": True}}
    path = tmp_path / "mobile_vla_left_chunk10_20251218.json"
    path.write_text(json.dumps(config))
    ckpt = write_team_checkpoint(tmp_path / "epoch_epoch=06-val_loss=val_loss=0.067.ckpt", "robovlms")
    assert sim_checkpoint.main([str(ckpt), "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "robovlms: team architecture (MobileVLALSTMDecoder)" in out and "25 tensors" not in out
    assert '"source": "' + str(path) in out and '"max_text_len": 256' in out
    exp17 = dict(config, fwd_pred_next_n=1, act_head={**config["act_head"], "hidden_size": 1024, "fwd_pred_next_n": 1})
    path.write_text(json.dumps(exp17))
    assert sim_checkpoint.main([str(ckpt), "--config", str(path)]) == 1  # a chunk-10 head is not exp17's
    assert "DOES NOT LOAD" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["case1", "case1-v1", "case2", "case3", "hybrid", "pure-kosmos2"])
def test_team_single_frame_heads_are_decoded_as_the_team_does_no_x1_15(name, tmp_path):
    """The team's trainers feed the raw labels (``actions[:, :2]``, +-1.15) and their evaluation compares the raw
    output with them: the action is the head's output as it is, no de-normalisation."""
    from sim.evaluation.runner import describe_policy

    path = write_team_checkpoint(tmp_path / f"best_{name}.pth", name)
    policy = build_vla_policy(name, checkpoint=path, backbone=StandInBackbone(), clip=False, dead_zone=False,
                              zero_first_step=False)
    policy.reset(INSTRUCTION)
    obs = observation(seed=1)
    action = policy.act(obs)
    with torch.no_grad():  # the team's decoding: their model's forward on the frame and instruction, used raw
        frame = policy.backbone.encode_frames(obs["image"][None], policy.head.frame_streams, INSTRUCTION)
        text = policy.backbone.encode_instruction([INSTRUCTION], policy.head.instruction_streams)
        raw = policy.head(frame[None].expand(1, policy.head.config.window_size, -1), text)[0, 0].numpy()
    np.testing.assert_allclose(action[:2], raw[:2], atol=1e-6)
    assert policy.postprocess.scale == 1.0
    assert "x1 (none: the team's file, trained on raw labels" in describe_policy(policy)["post-processing"]


def test_our_heads_and_the_robovlms_server_keep_x1_15(tmp_path):
    from policies.checkpoints import default_checkpoint
    from policies.vla import output_scale

    for name in ("case2", "hybrid", "lstm-recon"):  # the bundled weights: ours, trained on labels clamped to [-1, 1]
        assert output_scale(name, load_checkpoint(default_checkpoint(name, "lite")))[0] == pytest.approx(1.15)
    assert output_scale("case2", None)[0] == pytest.approx(1.15)  # a fresh head, trained here
    ckpt = load_checkpoint(write_team_checkpoint(tmp_path / "last.ckpt", "robovlms"))
    assert output_scale("robovlms", ckpt)[0] == pytest.approx(1.15)  # the RoboVLMs server de-normalises


def test_a_robovlms_ckpt_loads_without_its_config_when_its_tensors_give_its_sizes(tmp_path, capsys):
    path = write_team_checkpoint(tmp_path / "exp17.ckpt", "robovlms-exp17")
    assert sim_checkpoint.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert '"chunk_size": 1, "hidden_size": 1024' in out and "LOADS" in out


@pytest.mark.parametrize("files, message", [
    ({"a.json": {"parent": "../cfg/b.json"}, "b.json": {"parent": "./a.json"}}, "loops back to itself"),
    ({"a.json": {"parent": "a.json"}}, "loops back to itself"),
    ({**{f"c{i}.json": {"parent": f"c{i + 1}.json"} for i in range(40)}, "c40.json": {}}, "deeper than 16"),
    ({"a.json": {"parent": 5}}, "parent must be a file name"),
    ({"a.json": {"act_head": {"type": "MobileVLALSTMDecoder"}, "tokenizer": "kosmos"}}, "tokenizer must be an object"),
    ({"a.json": {"act_head": {"hidden_size": "big"}}}, "act_head.hidden_size must be an integer"),
    ({"a.json": {"act_head": {}, "window_size": float("nan")}}, "window_size must be an integer"),
    ({"a.json": {"act_head": {}, "image_mean": [0.5, float("inf"), 0.5]}}, "image_mean must be a list of 3 numbers"),
])
def test_bad_robovlms_configs_are_named_by_file_and_field(tmp_path, files, message):
    from policies.backbones.robovlms import RoboVLMsConfigError, RoboVLMsSettings

    folder = tmp_path / "cfg"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data))
    first = folder / next(iter(files))
    with pytest.raises(RoboVLMsConfigError, match=message) as info:
        RoboVLMsSettings.from_config(first)
    assert str(folder) in str(info.value)
