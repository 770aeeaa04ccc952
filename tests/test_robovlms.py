"""The model the robot serves (RoboVLMs Kosmos-2 action token + LSTM) on a toy Kosmos-2: the team's Lightning
``.ckpt`` + config JSON load, the action-token sequence is laid out as theirs, the LSTM history equals their
step-by-step inference, the server's post-processing, ``sim.serve`` as a drop-in for the robot's own client,
the ``remote`` client against a server that behaves like the team's, and the head-only ONNX export."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI, Header, HTTPException
from PIL import Image

from policies import make_policy
from policies.backbones.tiny_kosmos2 import build_tiny_kosmos2
from policies.heads import make_head
from policies.remote import RemotePolicy, RemotePolicyError
from sim import checkpoint as sim_checkpoint
from sim.serving.server import create_app, serve_in_thread

try:
    from tests.conftest_vla import INSTRUCTION, observation, single_torch_thread
except ImportError:  # tests/ is not a package
    from conftest_vla import INSTRUCTION, observation, single_torch_thread  # noqa: F401

HIDDEN, MAX_TEXT = 16, 32
CONFIG = {
    "robovlm_name": "RoboKosMos", "model": "kosmos", "image_size": 56, "window_size": 8, "fwd_pred_next_n": 10,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "act_head": {"type": "MobileVLALSTMDecoder", "hidden_size": HIDDEN, "action_dim": 2, "down_sample": "none",
                 "latent": 1, "fwd_pred_next_n": 10, "window_size": 8, "action_space": "continuous",
                 "with_history": True, "history_type": "post"},
    "tokenizer": {"type": "AutoProcessor", "max_text_len": MAX_TEXT}, "norm_action": True,
}


@pytest.fixture(scope="module")
def team_files(tmp_path_factory):
    """A Lightning ``.ckpt`` as the team's trainer writes it (toy Kosmos-2 inside, perturbed so that using it can
    be told from the default toy weights) and its config JSON."""
    root = tmp_path_factory.mktemp("robovlms")
    config = root / "mobile_vla_tiny_chunk10.json"
    config.write_text(json.dumps(CONFIG))
    gen = torch.Generator().manual_seed(3)
    head = make_head("robovlms", 32, 0, hidden_size=HIDDEN)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model, _ = build_tiny_kosmos2()
    backbone = {k: (v * 1.25 if k.endswith("patch_embedding.weight") else v) for k, v in model.state_dict().items()}
    token = torch.randn(32, generator=gen)
    state = {**{f"model.backbone.{k}": v for k, v in backbone.items()}, "model.action_token": token,
             **{f"model.{k}": v for k, v in head.state_dict().items()}}
    ckpt = root / "epoch_epoch=06-val_loss=val_loss=0.067.ckpt"
    torch.save({"epoch": 6, "global_step": 1510, "pytorch-lightning_version": "2.4.0", "state_dict": state,
                "optimizer_states": [], "lr_schedulers": [], "hyper_parameters": {"configs": CONFIG}}, ckpt)
    return {"ckpt": ckpt, "config": config, "head": head, "token": token, "backbone": backbone}


def robovlms(team_files, **kwargs):
    kwargs.setdefault("dead_zone", False)
    return make_policy("robovlms", checkpoint=team_files["ckpt"], config=team_files["config"],
                       backbone="tiny-kosmos2", **kwargs)


def test_the_team_ckpt_and_config_load_and_drive_the_env(team_files, make_env, capsys):
    assert sim_checkpoint.main([str(team_files["ckpt"]), "--config", str(team_files["config"]),
                                "--backbone", "tiny-kosmos2", "--build"]) == 0
    out = capsys.readouterr().out
    assert "robovlms: team architecture (MobileVLALSTMDecoder)" in out and "extra         action_token [32]" in out
    assert "Kosmos2ForConditionalGeneration" in out and '"ok": true' in out
    policy = robovlms(team_files)
    assert policy.settings.model_name == "mobile_vla_tiny_chunk10" and policy.settings.max_text_len == MAX_TEXT
    assert all(torch.equal(v, team_files["head"].state_dict()[k]) for k, v in policy.head.state_dict().items())
    torch.testing.assert_close(policy.backbone.action_token, team_files["token"])
    patch = policy.backbone.model.vision_model.model.embeddings.patch_embedding.weight
    torch.testing.assert_close(patch, team_files["backbone"]["vision_model.model.embeddings.patch_embedding.weight"])
    env = make_env(scenario="2box_vert_right")
    obs, info = env.reset(seed=2)
    policy.reset(info["instruction"], info)
    for step in range(4):
        action = policy.act(obs)
        assert np.all(np.isfinite(action)) and (step > 0 or np.all(action == 0))
        obs, *_ = env.step(action)
    assert policy.history.pad is False and len(policy.history._features) == 4  # the episode's own frames only
    # the same file without --config reads the config the trainer saved in hyper_parameters
    assert make_policy("robovlms", checkpoint=team_files["ckpt"], backbone="tiny-kosmos2").settings.max_text_len == 32


def test_lstm_history_equals_the_teams_step_by_step_inference(team_files):
    """Their ``history_memory``: one token at a time with the hidden state carried for the first 8, then the last 8
    re-run from a zero state; ours: the LSTM from a zero state over the last min(t, 8) tokens."""
    head = robovlms(team_files).head
    rnn, velocities = head.act_head.rnn, head.act_head.velocities
    tokens = torch.randn(13, 1, 1, 32)
    memory, hidden = [], None
    with torch.inference_mode():
        for t, tok in enumerate(tokens, start=1):
            memory.append(tok)
            if len(memory) <= 8:
                x, hidden = rnn(tok, hidden)
            else:
                memory.pop(0)
                x, _ = rnn(torch.cat(memory, dim=1), None)
            theirs = velocities(x[:, -1]).reshape(10, 2)
            window = torch.cat(list(tokens[max(0, t - 8):t]), dim=1)
            ours = head(window, torch.zeros(1, 0))[0]
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_the_action_token_sequence_is_laid_out_as_theirs(team_files):
    bb = robovlms(team_files).backbone
    ids, mask = bb.tokenize("go left")
    assert ids.shape == mask.shape == (1, MAX_TEXT)
    tok = bb.tokenizer
    assert ids[0, 0] == tok.bos_token_id and tok.convert_ids_to_tokens(int(ids[0, 1])) == "<grounding>"
    real = int(mask.sum())
    assert ids[0, real - 1] == tok.eos_token_id and torch.all(ids[0, real:] == tok.pad_token_id)
    pixels = bb.preprocess(observation(1)["image"][None])
    assert pixels.shape == (1, 3, 56, 56)
    embeds, merged, at = bb.merged_inputs(pixels, ids, mask)
    q = bb.model.config.latent_query_num
    assert embeds.shape[1] == MAX_TEXT + q + 1 and at == MAX_TEXT + q - 1  # after the padding, before the last slot
    torch.testing.assert_close(embeds[0, at], bb.action_token)
    torch.testing.assert_close(embeds[0, 0], bb.model.text_model.model.embed_tokens(ids)[0, 0])
    assert merged[0, 1:1 + q].all() and merged[0, at] == 1 and int(merged.sum()) == real + q + 1
    states = bb.encode_frames(observation(1)["image"], ("action_token",), "go left")
    assert not torch.allclose(states, bb.encode_frames(observation(1)["image"], ("action_token",), "go right"))
    assert team_prompt_cases()


def team_prompt_cases() -> bool:
    from policies.backbones.robovlms import team_prompt

    assert team_prompt(" reach the cup ") == "<grounding>An image of a robot reach the cup"
    assert team_prompt("An image of a robot reach the cup") == "<grounding>An image of a robot reach the cup"
    assert team_prompt("<grounding>as is") == "<grounding>as is"
    return True


def test_the_servers_post_processing(team_files):
    policy = robovlms(team_files)
    policy.reset(INSTRUCTION)
    first = policy.act(observation(0))
    assert np.all(first == 0)  # first frame of an episode forced to zero, the model still ran
    assert policy.num_predictions == 1
    second = policy.act(observation(1))
    np.testing.assert_allclose(second[:2], np.clip(1.15 * policy.last_chunk[0], -1.5, 1.5), atol=1e-6)


def test_unsupported_config_options_are_refused(tmp_path):
    from policies.backbones.robovlms import RoboVLMsConfigError, RoboVLMsSettings

    for change, words in (({"act_head": {"action_space": "discrete"}}, "action_space"),
                          ({"inference_mode": "classification"}, "inference_mode"),
                          ({"window_size": "eight"}, "window_size must be an integer"),
                          ({"image_std": [0, 1, 1]}, "image_std")):
        bad = json.loads(json.dumps(CONFIG))
        for key, value in change.items():
            bad[key] = {**bad[key], **value} if isinstance(value, dict) else value
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(RoboVLMsConfigError, match=words):
            RoboVLMsSettings.from_config(path)
    child = tmp_path / "child.json"
    (tmp_path / "parent.json").write_text(json.dumps(CONFIG))
    child.write_text(json.dumps({"parent": "parent.json", "tokenizer": {"max_text_len": 48}}))
    assert RoboVLMsSettings.from_config(child).max_text_len == 48  # their "parent" inheritance


def robot_client_predict(url: str, frame_bgr: np.ndarray, instruction: str, api_key: str) -> httpx.Response:
    """The robot's ``api_client_node.run_inference``: ``cv2.resize(frame, (224, 224))`` of the BGR camera frame,
    ``cv2.imencode('.jpg', ...)``, base64, ``POST /predict {image, instruction}`` with ``X-API-Key``, timeout 1 s.
    (cv2 encodes a BGR array as a correct JPEG; PIL does the same from the RGB view.)"""
    resized = Image.fromarray(frame_bgr[..., ::-1]).resize((224, 224), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    resized.save(buf, format="JPEG", quality=95)
    payload = {"image": base64.b64encode(buf.getvalue()).decode("utf-8"), "instruction": instruction}
    return httpx.post(f"{url}/predict", json=payload, headers={"X-API-Key": api_key}, timeout=1.0)


def test_sim_serve_is_a_drop_in_for_the_robots_client(team_files):
    app = create_app(lambda: robovlms(team_files), api_key="robot-key")
    frame = observation(5, size=(720, 1280))["image"][..., ::-1]  # the camera's BGR frame
    with serve_in_thread(app) as url:
        health = httpx.get(f"{url}/health", timeout=2).json()
        assert health["model_loaded"] is True and health["model_name"] == "mobile_vla_tiny_chunk10"
        actions = []
        for _ in range(3):
            r = robot_client_predict(url, frame, "Navigate around obstacles and reach the front of the beverage "
                                                 "bottle on the left", "robot-key")
            assert r.status_code == 200, r.text
            data = r.json()
            assert len(data["action"]) == 2 and data["latency_ms"] >= 0
            assert data["strategy"] == "receding_horizon" and data["source"] == "inferred"
            actions.append(data["action"])
        assert actions[0] == [0.0, 0.0] and actions[1] != [0.0, 0.0]  # first frame zero, then the model's action
        assert robot_client_predict(url, frame, "x", "wrong-key").status_code == 403


def team_like_server(load_seconds: float) -> tuple[FastAPI, dict]:
    """Behaves as the team's ``inference_server.py``: model loaded inside the first /reset or /predict, one global
    history, 403 on a wrong key, no sessions in /health."""
    app = FastAPI()
    state = {"loaded": False, "history": 0, "lock": threading.Lock()}

    def load():
        with state["lock"]:
            if not state["loaded"]:
                time.sleep(load_seconds)
                state["loaded"] = True

    def check(key):
        if key != "team-key":
            raise HTTPException(403, "Invalid API Key")

    @app.get("/health")
    def health():
        return {"status": "healthy", "model_loaded": state["loaded"], "model_name": "m", "device": "cpu",
                "gpu_memory": None}

    @app.post("/reset")
    def reset(x_api_key: str | None = Header(default=None)):
        check(x_api_key)
        load()
        state["history"] = 0
        return {"status": "success", "message": "History and buffer cleared"}

    @app.post("/predict")
    def predict(body: dict, x_api_key: str | None = Header(default=None)):
        check(x_api_key)
        load()
        state["history"] += 1
        action = [0.0, 0.0] if state["history"] == 1 else [1.15, 0.0]
        return {"action": action, "latency_ms": 12.0, "model_name": "m", "strategy": "receding_horizon",
                "source": "inferred", "buffer_status": {}}

    return app, state


def test_remote_client_waits_for_the_team_servers_lazy_load_and_sees_its_global_history():
    app, state = team_like_server(load_seconds=2.0)
    with serve_in_thread(app) as url:  # a 1 s read timeout: /health answers within it even on busy cores
        remote = RemotePolicy(url, api_key="team-key", timeout=1.0, warmup_timeout=8.0, retries=0)
        assert remote.shares_history is True
        remote.reset(INSTRUCTION)  # carries the 2 s model load, past the 1 s read timeout
        assert state["loaded"]
        assert remote.act(observation(0))[:2].tolist() == [0.0, 0.0]
        assert remote.act(observation(1))[:2].tolist() == pytest.approx([1.15, 0.0])
        with pytest.raises(RemotePolicyError, match="HTTP 403"):
            RemotePolicy(url, api_key="bad", retries=0).reset(INSTRUCTION)
    app, _ = team_like_server(load_seconds=1.5)
    with serve_in_thread(app) as url:
        impatient = RemotePolicy(url, api_key="team-key", timeout=0.3, warmup_timeout=0.4, retries=0)
        with pytest.raises(RemotePolicyError, match="timed out"):
            impatient.reset(INSTRUCTION)


def test_sim_eval_refuses_parallel_workers_on_a_global_history_server(tmp_path, capsys):
    from sim import eval as sim_eval

    app, _ = team_like_server(load_seconds=0.0)
    with serve_in_thread(app) as url:
        code = sim_eval.main(["--policy", "remote", "--policy-arg", f"url={url}", "--policy-arg", "api_key=team-key",
                              "--workers", "2", "--episodes-per-combo", "1", "--layouts", "1box_vert_left",
                              "--out", str(tmp_path / "run")])
    assert code == 2 and "one global frame history" in capsys.readouterr().err


def test_head_only_onnx_export_matches_pytorch(team_files, tmp_path):
    from policies.onnx_policy import OnnxPolicy
    from sim.deploy import onnx_export as ex

    obs = [observation(i) for i in range(11)]
    result = ex.export_policy("robovlms", checkpoint=team_files["ckpt"], config=team_files["config"],
                              backbone="tiny-kosmos2", head_only=True, out=tmp_path, observations=obs, check_steps=10)
    assert result.parity.passed and result.sidecar["pad_history"] is False
    assert result.sidecar["inputs"]["vision"]["shape"] == ["batch", 8, 32]
    ref, pol = robovlms(team_files), OnnxPolicy(result.model_path)
    ref.reset(INSTRUCTION)
    pol.reset(INSTRUCTION)
    for o in obs:  # the window grows from 1 to 8 frames, then slides
        np.testing.assert_allclose(pol.act(o), ref.act(o), atol=1e-4)


def test_sim_eval_runs_robovlms_episodes_from_the_team_files(team_files, tmp_path):
    from sim import eval as sim_eval

    out = tmp_path / "run"
    code = sim_eval.main(["--policy", "robovlms", "--checkpoint", str(team_files["ckpt"]), "--config",
                          str(team_files["config"]), "--backbone", "tiny-kosmos2", "--episodes-per-combo", "1",
                          "--layouts", "1box_vert_left", "--distances", "close", "--workers", "1", "--record", "none",
                          "--max-steps", "4", "--out", str(out)])
    assert code == 0
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["status"] in ("timeout", "collision", "success", "out_of_bounds")
    summary = json.loads((out / "summary.json").read_text())
    provenance = summary["policies"]["robovlms"]["provenance"]
    assert provenance["architecture"] == "team architecture (MobileVLALSTMDecoder)"
    kwargs = summary["config"]["policies"][0]["kwargs"]
    assert provenance["weights"].endswith(".ckpt") and kwargs["config"] == str(team_files["config"])
