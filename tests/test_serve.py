"""The inference server (``sim.serve``): API, limits, auth, sessions and reset semantics (in-process, no network)."""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from foundations.errors import ConfigError
from policies import Policy, make_policy
from sim.cli import parse_policy_kwargs
from sim.serve import main
from sim.serving.server import MAX_BODY_BYTES, create_app, decode_image, serve_in_thread

KEY = {"X-API-Key": "secret"}


def b64_image(width: int = 224, height: int = 224, fmt: str = "JPEG", value: int = 128) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


class Recorder(Policy):
    """Test policy: records resets and observations; action = [steps since reset, len(history)] / 100."""

    instances: ClassVar[list[Recorder]] = []

    def __init__(self) -> None:
        super().__init__()
        self.resets: list[tuple[str, dict[str, Any]]] = []
        self.seen: list[Mapping[str, Any]] = []
        self.closed = False
        Recorder.instances.append(self)

    def _reset(self, instruction: str, info: dict[str, Any]) -> None:
        self.resets.append((instruction, info))
        self.seen = []

    def _act(self, observation: Mapping[str, Any]) -> np.ndarray:
        self.seen.append(observation)
        if observation["instruction"] == "explode":
            raise RuntimeError("boom")
        return np.array([len(self.seen) / 100, len(self.resets) / 100, 0.5], np.float32)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def recorder_client():
    Recorder.instances = []
    with TestClient(create_app(Recorder, api_key="secret", max_sessions=2)) as client:
        yield client


@pytest.fixture(scope="module")
def random_client():
    with TestClient(create_app(lambda: make_policy("random", seed=0, mode="uniform"))) as client:
        yield client


def test_health_is_open_and_has_the_team_servers_fields(random_client):
    r = random_client.get("/health")
    assert r.status_code == 200
    assert r.json() == {
        "status": "healthy",
        "model_loaded": True,  # the robot's system check reads this
        "model_name": "random",
        "device": "cpu",
        "gpu_memory": None,
        "policy": "random",
        "sessions": 1,
        "auth": False,
    }


def test_root_and_test_endpoints_as_the_team_server(recorder_client):
    assert recorder_client.get("/").json() == {"name": "Mobile VLA Inference API", "version": "1.0.0",
                                               "status": "running"}
    assert recorder_client.get("/test").status_code == 403
    r = recorder_client.get("/test", headers=KEY)
    assert r.status_code == 200 and r.json()["action"] == [0.0, 0.0] and r.json()["message"] == "Test endpoint"


def test_predict_returns_two_components_and_latency(recorder_client):
    r = recorder_client.post("/predict", json={"image": b64_image(), "instruction": "go left"}, headers=KEY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["action"] == pytest.approx([0.01, 0.01])  # angular_z dropped; 1 step, 1 reset
    assert body["latency_ms"] >= 0 and body["step"] == 1 and body["session"] == "default"
    assert {k: body[k] for k in ("model_name", "strategy", "source", "buffer_status")} == {
        "model_name": "policy", "strategy": "receding_horizon", "source": "inferred", "buffer_status": {}}
    policy = Recorder.instances[0]
    assert policy.resets == [("go left", {})]  # the first /predict resets with its instruction
    image = policy.seen[0]["image"]
    assert image.dtype == np.uint8 and image.shape == (224, 224, 3)
    assert abs(int(image.mean()) - 128) <= 2 and policy.seen[0]["instruction"] == "go left"


def test_png_and_data_url_are_accepted(recorder_client):
    for image in (
        b64_image(64, 48, "PNG"),
        "data:image/jpeg;base64," + b64_image(32, 32),
    ):
        r = recorder_client.post("/predict", json={"image": image, "instruction": "x"}, headers=KEY)
        assert r.status_code == 200, r.text
    assert Recorder.instances[0].seen[0]["image"].shape == (48, 64, 3)


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
def test_missing_or_wrong_api_key_is_403_as_the_team_server(recorder_client, headers):
    for path, body in (
        ("/predict", {"image": b64_image(), "instruction": "x"}),
        ("/reset", {}),
    ):
        r = recorder_client.post(path, json=body, headers=headers)
        assert r.status_code == 403
        assert r.json()["detail"] == "Invalid API Key"
    assert all(not p.seen and not p.resets for p in Recorder.instances)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"image": "not base64 !!", "instruction": "x"}, 400, "base64"),
        (
            {
                "image": base64.b64encode(b"GIF89a not really").decode(),
                "instruction": "x",
            },
            400,
            "not a JPEG or PNG",
        ),
        (
            {
                "image": base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 40).decode(),
                "instruction": "x",
            },
            400,
            "image",
        ),
        ({"image": "", "instruction": "x"}, 400, "empty"),
        ({"instruction": "x"}, 422, "image: Field required"),
        ({"image": b64_image()}, 422, "instruction: Field required"),
        (
            {"image": 12, "instruction": "x"},
            422,
            "image: Input should be a valid string",
        ),
        ({"image": b64_image(), "instruction": ["x"]}, 422, "instruction"),
        ({"image": b64_image(), "instruction": "x" * 5000}, 422, "instruction"),
        (["image", "instruction"], 422, "JSON object"),
        ({"image": b64_image(1281, 720, "PNG"), "instruction": "x"}, 413, "1281x720"),
        (
            {"image": b64_image(640, 721, "PNG"), "instruction": "x"},
            413,
            "at most 1280x720",
        ),
    ],
)
def test_bad_predict_requests_are_4xx_with_json_error(recorder_client, body, status, words):
    r = recorder_client.post("/predict", json=body, headers=KEY)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert all(not p.seen for p in Recorder.instances)


def test_malformed_json_and_oversized_body(recorder_client):
    r = recorder_client.post(
        "/predict",
        content=b'{"image": ',
        headers={**KEY, "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    big = b'{"image": "' + b"A" * MAX_BODY_BYTES + b'", "instruction": "x"}'
    r = recorder_client.post("/predict", content=big, headers={**KEY, "Content-Type": "application/json"})
    assert r.status_code == 413 and "at most" in r.json()["detail"]


def test_oversized_body_without_content_length_is_refused():
    """A chunked upload (no Content-Length) is counted while streaming."""
    with TestClient(create_app(Recorder, max_body_bytes=1000)) as client:
        chunks = (b'{"image": "' + b"A" * 600, b"A" * 600 + b'", "instruction": "x"}')
        r = client.post(
            "/predict",
            content=iter(chunks),
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code == 413


def test_bad_session_id_is_400(recorder_client):
    r = recorder_client.post("/reset", headers={**KEY, "X-Session-Id": "a b/c"})
    assert r.status_code == 400 and "X-Session-Id" in r.json()["detail"]


def test_policy_failure_is_500_with_json_error(recorder_client):
    r = recorder_client.post("/predict", json={"image": b64_image(), "instruction": "explode"}, headers=KEY)
    assert r.status_code == 500
    assert "RuntimeError: boom" in r.json()["detail"]


def predict(client: TestClient, instruction: str = "x", session: str | None = None) -> dict[str, Any]:
    headers = {**KEY, **({"X-Session-Id": session} if session else {})}
    r = client.post(
        "/predict",
        json={"image": b64_image(16, 16), "instruction": instruction},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_reset_with_instruction_resets_now(recorder_client):
    predict(recorder_client)
    predict(recorder_client)
    r = recorder_client.post("/reset", json={"instruction": "go right", "episode_seed": 7}, headers=KEY)
    assert r.json() == {"status": "success", "message": "History and buffer cleared", "session": "default",
                        "reset": "done"}
    policy = Recorder.instances[0]
    assert policy.resets[-1] == ("go right", {"episode_seed": 7})
    out = predict(recorder_client, "go right")
    assert out["step"] == 1 and out["action"] == pytest.approx([0.01, 0.02])
    assert len(policy.resets) == 2  # no extra reset at the next /predict


def test_reset_without_body_defers_to_next_predict(recorder_client):
    predict(recorder_client, "first")
    for kwargs in ({}, {"json": {"episode_seed": 3}}):
        r = recorder_client.post("/reset", headers=KEY, **kwargs)
        assert r.status_code == 200 and r.json()["reset"] == "pending"
    policy = Recorder.instances[0]
    assert len(policy.resets) == 1
    out = predict(recorder_client, "second")
    assert policy.resets[-1] == ("second", {"episode_seed": 3}) and out["step"] == 1
    predict(recorder_client, "changed")  # an instruction change alone does not reset
    assert len(policy.resets) == 2 and policy.seen[-1]["instruction"] == "changed"


def test_bad_reset_body_is_4xx(recorder_client):
    r = recorder_client.post("/reset", json={"instruction": 5}, headers=KEY)
    assert r.status_code == 422
    r = recorder_client.post("/reset", content=b"{oops", headers={**KEY, "Content-Type": "application/json"})
    assert r.status_code == 400


def test_sessions_have_their_own_history_and_are_bounded(recorder_client):
    predict(recorder_client)
    predict(recorder_client)
    a = predict(recorder_client, session="robot-a")
    assert a["session"] == "robot-a" and a["step"] == 1 and a["action"] == pytest.approx([0.01, 0.01])
    assert predict(recorder_client)["step"] == 3  # default session unaffected
    default, robot_a = Recorder.instances
    predict(recorder_client, session="robot-b")  # max_sessions=2: robot-a was least recently used
    assert robot_a.closed and not default.closed
    assert recorder_client.get("/health").json()["sessions"] == 2
    assert predict(recorder_client, session="robot-a")["step"] == 1  # rebuilt fresh
    assert len(Recorder.instances) == 4


def test_random_policy_sessions_reproduce(random_client):
    a = [predict(random_client, session="s1")["action"] for _ in range(3)]
    b = [predict(random_client, session="s2")["action"] for _ in range(3)]
    assert a == b and len({tuple(x) for x in a}) == 3
    ref = make_policy("random", seed=0, mode="uniform")
    ref.reset("x")
    assert a == [ref.act({}).tolist()[:2] for _ in range(3)]


def test_decode_image_returns_rgb_uint8():
    buf = io.BytesIO()
    Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)).save(buf, format="PNG")
    arr = decode_image(base64.b64encode(buf.getvalue()).decode())
    assert arr.dtype == np.uint8 and arr.shape == (1, 2, 3)
    assert arr.tolist() == [[[255, 0, 0], [0, 0, 255]]]


def test_parse_policy_kwargs():
    assert parse_policy_kwargs(["seed=3", "mode=uniform", "scale=0.5", "flag=true", "x=None", "path=a/b.zip"]) == {
        "seed": 3,
        "mode": "uniform",
        "scale": 0.5,
        "flag": True,
        "x": None,
        "path": "a/b.zip",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_policy_kwargs(["seed"])


def test_main_rejects_bad_arguments(capsys):
    assert main(["--policy", "random", "--policy-arg", "seed"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["--policy", "random", "--checkpoint", "x.pth"]) == 2
    assert "VLA policies" in capsys.readouterr().err
    assert main(["--policy", "no-such-policy"]) == 2
    assert "unknown policy" in capsys.readouterr().err
    assert main(["--policy", "random", "--policy-arg", "mode=bogus"]) == 2


def test_a_busy_port_is_one_line_exit_2(monkeypatch, capsys):
    import socket

    import sim.serve as serve

    monkeypatch.setattr("uvicorn.Server.run", lambda self, sockets=None: pytest.fail("uvicorn ran"))
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert serve.main(["--policy", "random", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--port {port}: cannot listen there" in err


def test_the_api_key_comes_from_the_team_servers_variable(monkeypatch):
    import sim.serve as serve

    seen = {}
    monkeypatch.setenv("VLA_API_KEY", "from-env")
    monkeypatch.setattr(serve, "create_app", lambda factory, **kw: seen.update(kw) or "app")
    monkeypatch.setattr(serve, "uvicorn_config", lambda app, **kw: seen.update(run=kw))
    monkeypatch.setattr("uvicorn.Server.__init__", lambda self, config: None)
    monkeypatch.setattr("uvicorn.Server.run", lambda self, sockets=None: seen.update(sockets=sockets))
    assert serve.main(["--policy", "random", "--port", "0"]) == 0
    assert len(seen["sockets"]) == 1 and seen["sockets"][0].fileno() == -1  # bound, handed over, closed
    assert seen["api_key"] == "from-env" and seen["run"]["host"] == "127.0.0.1"
    assert seen["run"]["read_timeout"] == 10.0 and seen["run"]["max_connections"] == 64


def test_serve_in_thread_binds_loopback_and_stops():
    import httpx

    with serve_in_thread(create_app(Recorder)) as url:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/health", timeout=5).json()["status"] == "healthy"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=1)


def test_a_client_that_keeps_reconnecting_never_closes_the_robots_session():
    from sim.serving.server import MAX_SESSIONS_PER_CLIENT, SessionStore

    store = SessionStore(Recorder, max_sessions=16)
    robot = store.get("default", "10.0.0.2")
    for i in range(200):  # a new session id on every connection
        store.get(f"s{i}", "10.0.0.9")
    assert store.get("default", "10.0.0.2") is robot
    assert len(store) == 1 + MAX_SESSIONS_PER_CLIENT
    with TestClient(create_app(Recorder, max_sessions=16, max_sessions_per_client=2)) as client:
        for i in range(20):
            predict(client, session=f"flood-{i}")
        assert client.get("/health").json()["sessions"] == 1 + 2  # the preloaded default + this client's two


def _idle_connection(url: str, source: str):
    """An open TCP connection to the server at ``url`` from the loopback address ``source`` that sends nothing."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect((parts.hostname, parts.port))
    return sock


def test_one_client_holding_idle_connections_cannot_starve_another():
    """One client (127.0.0.2) opening more connections than the whole server serves: the ones beyond its share are
    answered 503 at once, and another client (127.0.0.1) is still served."""
    import socket
    import time

    import httpx

    held = []
    with serve_in_thread(create_app(Recorder), max_connections=4, max_connections_per_client=2,
                         read_timeout=30) as url:
        try:
            for _ in range(8):  # twice the server's total
                held.append(_idle_connection(url, "127.0.0.2"))
            refused = []
            for sock in held[2:]:
                answer = b""
                with contextlib.suppress(socket.timeout, ConnectionError):
                    while chunk := sock.recv(4096):
                        answer += chunk
                refused.append(answer)
            assert all(a.startswith(b"HTTP/1.1 503") and b"too many connections from 127.0.0.2" in a
                       for a in refused), refused
            time.sleep(0.2)
            response = httpx.get(f"{url}/health", timeout=5)  # the other client (127.0.0.1)
            assert response.status_code == 200, response.text
            held[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # the first client's own share still works
            assert held[0].recv(4096).startswith(b"HTTP/1.1 200")
        finally:
            for sock in held:
                sock.close()


def test_the_per_client_connection_limit_is_a_bounded_flag(capsys):
    from sim.serving.server import default_connections_per_client, uvicorn_config

    assert default_connections_per_client(64) == 16 and default_connections_per_client(2) == 1
    for bad in (["--max-connections-per-client", "0"], ["--max-connections-per-client", "x"],
                ["--max-connections", "4", "--max-connections-per-client", "5"]):
        assert main(["--policy", "random", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--max-connections-per-client" in err, err
    with pytest.raises(ConfigError, match="max-connections-per-client"):
        uvicorn_config(create_app(Recorder), max_connections=4, max_connections_per_client=8)
