"""The ``remote`` policy: a full episode through a real loopback server, and every client-side error."""

from __future__ import annotations

import base64
import io
import json
import math
import socket

import gymnasium as gym
import httpx
import numpy as np
import pytest
from PIL import Image

import envs  # noqa: F401 - registers the environment
from envs import ENV_ID
from policies import make_policy
from policies.remote import RemotePolicy, RemotePolicyError
from sim.serving.server import create_app, serve_in_thread

OBS = {"image": np.zeros((120, 160, 3), np.uint8), "instruction": "go"}


def test_episode_through_server_matches_in_process_policy():
    app = create_app(lambda: make_policy("random", seed=0, mode="uniform"), api_key="k")
    env = gym.make(ENV_ID, image_size=(160, 120), max_steps=8)
    observations, actions = [], []
    with serve_in_thread(app) as url:
        remote = make_policy("remote", url=url, api_key="k")
        assert isinstance(remote, RemotePolicy) and remote.health()["policy"] == "random"
        obs, info = env.reset(seed=1)
        remote.reset(obs["instruction"], {"episode_seed": 5, **info})
        done = False
        while not done:
            action = remote.act(obs)
            observations.append(obs)
            actions.append(action)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        remote.close()
    env.close()
    assert info["status"] in ("success", "collision", "out_of_bounds", "timeout")
    assert 1 <= len(actions) <= 8
    assert len(remote.server_latencies_ms) == len(remote.latencies_ms) == len(actions)
    assert all(0 <= v < 1e4 for v in remote.server_latencies_ms)

    local = make_policy("random", seed=0, mode="uniform")
    local.reset(observations[0]["instruction"], {"episode_seed": 5})
    expected = [local.act(o) for o in observations]
    np.testing.assert_array_equal(np.stack(actions), np.stack(expected))
    assert all(a.dtype == np.float32 and a.shape == (3,) and a[2] == 0 for a in actions)
    other = make_policy("random", seed=0, mode="uniform")
    other.reset("", {"episode_seed": 6})
    assert not np.array_equal(other.act({}), expected[0])  # the episode seed did reach the server


def mock_policy(handler, **kwargs) -> RemotePolicy:
    kwargs.setdefault("backoff", 0.0)
    return RemotePolicy(url="http://robot.test:8000", transport=httpx.MockTransport(handler), **kwargs)


def test_requests_follow_the_robot_api():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/reset":
            return httpx.Response(200, json={"status": "ok"})
        return httpx.Response(200, json={"action": [1.15, -0.5], "latency_ms": 12.5})

    policy = mock_policy(handler, api_key="k", session_id="bot1", jpeg_quality=80)
    policy.reset("avoid the box", {"scene": {}, "episode_seed": 3})
    action = policy.act({"image": np.full((120, 160, 3), 200, np.uint8)})  # instruction from reset
    np.testing.assert_array_equal(action, np.array([1.15, -0.5, 0.0], np.float32))
    assert policy.server_latencies_ms == [12.5]
    reset, pred = seen
    assert reset.method == "POST" and json.loads(reset.content) == {
        "instruction": "avoid the box",
        "episode_seed": 3,
    }
    assert pred.url.path == "/predict" and pred.headers["X-API-Key"] == "k" and pred.headers["X-Session-Id"] == "bot1"
    body = json.loads(pred.content)
    assert body["instruction"] == "avoid the box"
    with Image.open(io.BytesIO(base64.b64decode(body["image"]))) as img:
        assert img.format == "JPEG" and img.size == (224, 224)
        assert abs(np.asarray(img.convert("RGB")).mean() - 200) < 3


@pytest.mark.parametrize(
    ("response", "words"),
    [
        (
            httpx.Response(500, json={"detail": "policy case4 failed: CUDA OOM"}),
            "HTTP 500: policy case4 failed",
        ),
        (
            httpx.Response(401, json={"detail": "missing or wrong X-API-Key"}),
            "HTTP 401",
        ),
        (httpx.Response(404, text="nope"), "HTTP 404: nope"),
        (httpx.Response(200, text="<html>not json</html>"), "not valid JSON"),
        (httpx.Response(200, json=[0.1, 0.2]), "expected a JSON object"),
        (httpx.Response(200, json={"latency_ms": 3}), "no 'action'"),
        (httpx.Response(200, json={"action": [0.1]}), "list of 2 numbers"),
        (httpx.Response(200, json={"action": [[0.1, 0.2]]}), "list of 2 numbers"),
        (httpx.Response(200, json={"action": ["a", "b"]}), "must hold numbers"),
        (httpx.Response(200, content=b'{"action": [NaN, 0.0]}'), "not finite"),
        (httpx.Response(200, content=b'{"action": [Infinity, 0.0]}'), "not finite"),
    ],
)
def test_bad_server_answers_raise_remote_policy_error(response, words):
    policy = mock_policy(lambda request: response)
    with pytest.raises(RemotePolicyError, match="http://robot.test:8000/predict") as exc:
        policy.act(OBS)
    assert words in str(exc.value)


def test_missing_latency_is_nan():
    policy = mock_policy(lambda request: httpx.Response(200, json={"action": [0.0, 1.0]}))
    policy.act(OBS)
    assert math.isnan(policy.server_latencies_ms[0])


def test_timeouts_are_retried_then_reported():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, json={"action": [0.5, 0.5], "latency_ms": 1})

    assert mock_policy(handler, retries=2).act(OBS).tolist() == [0.5, 0.5, 0.0]
    calls.clear()
    with pytest.raises(RemotePolicyError, match=r"timed out after 2 attempt\(s\)"):
        mock_policy(handler, retries=1).act(OBS)
    assert len(calls) == 2


def test_server_down_raises_with_url():
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = RemotePolicy(url=f"http://127.0.0.1:{port}", retries=1, backoff=0.0, timeout=1.0)
    with pytest.raises(
        RemotePolicyError,
        match=rf"POST http://127.0.0.1:{port}/reset failed after 2 attempt",
    ):
        policy.reset("go")
    with pytest.raises(RemotePolicyError, match="ConnectError"):
        policy.act(OBS)
    policy.close()
    policy.close()


def test_bad_inputs_raise_value_error():
    policy = mock_policy(lambda request: httpx.Response(200, json={"action": [0, 0]}))
    with pytest.raises(ValueError, match="no 'image'"):
        policy.act({"state": np.zeros(6, np.float32)})
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        policy.act({"image": np.zeros((4, 4, 4), np.uint8)})
    for kwargs in (
        {"url": "robot:8000"},
        {"timeout": 0},
        {"retries": -1},
        {"jpeg_quality": 100},
        {"image_size": 0},
    ):
        with pytest.raises(ValueError):
            RemotePolicy(**kwargs)
