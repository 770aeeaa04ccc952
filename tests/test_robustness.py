"""The robustness audit (issue 14), kept as tests: bad input and faults give one clear line and the documented exit
code, never a traceback, a hang or a silently wrong result; a crafted file runs no code."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401 - registers the environment
from envs import ENV_ID
from policies import register
from policies.base import Policy
from policies.registry import REGISTERED_ENV


# ------------------------------------------------------------------------------------------------ sb3 zips
class _Payload:
    """Unpickling this creates ``path``: proof that code from the file ran."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _crafted_zip(source, target, key, marker) -> None:
    """Copy an SB3 zip, putting a pickled payload into the ``data`` entry ``key``."""
    import cloudpickle

    blob = base64.b64encode(cloudpickle.dumps(_Payload(marker))).decode()
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            content = src.read(name)
            if name == "data":
                data = json.loads(content)
                entry = dict(data.get(key) or {":type:": "<class 'object'>"})
                entry[":serialized:"] = blob
                data[key] = entry
                content = json.dumps(data).encode()
            dst.writestr(name, content)


@pytest.fixture(scope="module")
def sb3_zip(tmp_path_factory):
    from stable_baselines3 import PPO

    env = gym.make(ENV_ID, obs_keys=("state",), max_steps=5)
    path = tmp_path_factory.mktemp("sb3") / "plain.zip"
    PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, device="cpu", seed=0).save(path)
    env.close()
    return path


def test_a_crafted_sb3_zip_runs_no_code(sb3_zip, tmp_path):
    from policies import make_policy
    from policies.sb3_policy import SB3PolicyError

    marker = tmp_path / "code-ran"
    spaces_zip, unknown_zip = tmp_path / "in_space.zip", tmp_path / "unknown_entry.zip"
    _crafted_zip(sb3_zip, spaces_zip, "observation_space", marker)
    _crafted_zip(sb3_zip, unknown_zip, "surprise", marker)

    policy = make_policy(f"sb3:{spaces_zip}")  # the space is rebuilt from its plain attributes
    assert policy.act({"state": policy.model.observation_space["state"].sample()}).shape == (3,)
    with pytest.raises(SB3PolicyError, match="'surprise' is pickled"):
        make_policy(f"sb3:{unknown_zip}")
    assert not marker.exists()

    with pytest.raises(ValueError):  # the explicit trust flag: SB3's own loading runs the payload (then fails)
        make_policy(f"sb3:{spaces_zip}", trust=True)
    assert marker.exists(), "the payload is live: without the safe loader it runs"


def test_a_crafted_sb3_zip_through_the_commands_runs_no_code(sb3_zip, tmp_path, capsys):
    from sim import eval as sim_eval
    from sim import serve as sim_serve

    marker = tmp_path / "code-ran"
    crafted = tmp_path / "crafted.zip"
    _crafted_zip(sb3_zip, crafted, "surprise", marker)
    assert sim_eval.main(["--policy", f"sb3:{crafted}", "--layouts", "1box_vert_left", "--distances", "close",
                          "--episodes-per-combo", "1", "--out", str(tmp_path / "run")]) == 2
    assert sim_serve.main(["--policy", f"sb3:{crafted}"]) == 2
    assert "trust=True" in capsys.readouterr().err and not marker.exists()


# ------------------------------------------------------------------------------------------- evaluation faults
class FaultyPolicy(Policy):
    """Drives forward; on the episode whose seed is ``seed`` (every episode if None) it fails as ``mode`` says at
    its second step: ``kill`` (SIGKILL its own process), ``exit`` (``SystemExit``), ``interrupt``
    (``KeyboardInterrupt``), ``block`` (sleeps a minute), ``flag`` (raises while the file ``flag`` exists)."""

    def __init__(self, mode: str = "kill", seed: int | None = None, flag: str = "") -> None:
        super().__init__()
        self.mode, self.target, self.flag, self.t, self.seed = mode, seed, flag, 0, None

    def _reset(self, instruction, info):
        self.t, self.seed = 0, info.get("episode_seed")

    def _act(self, observation):
        self.t += 1
        if self.t == 2 and (self.target is None or self.seed == self.target):
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.mode == "exit":
                sys.exit(3)
            if self.mode == "interrupt":
                raise KeyboardInterrupt
            if self.mode == "block":
                time.sleep(60)
            if self.mode == "flag" and os.path.exists(self.flag):
                raise RuntimeError("the server is down")
        return np.array([1.15, 0.0, 0.0]) if self.t < 3 else np.zeros(3)


register("test_faulty", "tests.test_robustness:FaultyPolicy", overwrite=True)
SWEEP = ["--layouts", "1box_vert_left", "--distances", "close", "far", "--episodes-per-combo", "2",
         "--image-size", "48x48", "--record", "none"]


def _eval(args, timeout=240):
    """``python -m sim.eval`` in a subprocess (a hang fails the test instead of stalling the suite)."""
    done = subprocess.run([sys.executable, "-m", "sim.eval", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, REGISTERED_ENV: os.environ[REGISTERED_ENV]})
    return done.returncode, done.stderr


def test_a_killed_worker_never_hangs_the_run_and_its_episode_says_why(tmp_path):
    from sim.evaluation import read_records
    from sim.evaluation.pool import MAX_WORKER_RETRIES
    from sim.evaluation.runner import episode_seed

    victim = episode_seed(0, "1box_vert_left", "far", 1)
    code, err = _eval(["--policy", "test_faulty", "--policy-arg", f"seed={victim}", "--policy", "expert", *SWEEP,
                       "--workers", "2", "--out", str(tmp_path / "run")])
    records = read_records(tmp_path / "run" / "episodes.jsonl")
    assert code == 1 and "ended in an error" in err and "Traceback" not in err
    assert len(records) == 8, "every episode is recorded once"
    errors = [r for r in records if r["status"] == "error"]
    assert [(r["distance"], r["episode"]) for r in errors] == [("far", 1)]
    assert f"died {MAX_WORKER_RETRIES + 1} times" in errors[0]["error"] and "-9" in errors[0]["error"]
    assert all(r["status"] == "success" for r in records if r["policy"] == "expert")


@pytest.mark.parametrize("mode, workers, cause", [("exit", 1, "SystemExit"), ("exit", 2, "SystemExit"),
                                                  ("interrupt", 2, "KeyboardInterrupt")])
def test_a_policy_that_exits_ends_its_episode_not_the_run(tmp_path, mode, workers, cause):
    from sim.evaluation import read_records

    code, _ = _eval(["--policy", "test_faulty", "--policy-arg", f"mode={mode}", *SWEEP, "--workers", str(workers),
                     "--out", str(tmp_path / "run")])
    records = read_records(tmp_path / "run" / "episodes.jsonl")
    assert code == 1 and len(records) == 4 and all(cause in r["error"] for r in records)


def test_a_blocking_policy_is_bounded_by_the_step_timeout(tmp_path):
    from sim.evaluation import read_records

    start = time.perf_counter()
    code, _ = _eval(["--policy", "test_faulty", "--policy-arg", "mode=block", *SWEEP, "--workers", "2",
                     "--step-timeout", "0.5", "--out", str(tmp_path / "run")])
    records = read_records(tmp_path / "run" / "episodes.jsonl")
    assert code == 1 and time.perf_counter() - start < 60
    assert len(records) == 4 and all("step 1: act took longer than the 0.5 s step timeout" in r["error"]
                                     for r in records)


def test_resume_retry_errors_reruns_the_episodes_that_failed(tmp_path):
    from sim.evaluation import read_records

    flag, run = tmp_path / "server-down", tmp_path / "run"
    flag.touch()
    args = ["--policy", "test_faulty", "--policy-arg", "mode=flag", "--policy-arg", f"flag={flag}", *SWEEP]
    assert _eval([*args, "--workers", "1", "--out", str(run)])[0] == 1
    flag.unlink()
    assert _eval(["--resume", str(run)])[0] == 1, "a plain resume keeps the recorded errors"
    assert _eval(["--resume", str(run), "--retry-errors"])[0] == 0
    statuses = [r["status"] for r in read_records(run / "episodes.jsonl")]
    assert len(statuses) == 4 and "error" not in statuses
    assert _eval(["--policy", "expert", "--retry-errors", "--out", str(tmp_path / "x")])[0] == 2


# ------------------------------------------------------------------------------------------------- network
@pytest.fixture()
def trickling_server():
    """A raw TCP server answering every request one byte every 0.1 s, for ever (each byte within any read timeout)."""
    import socket
    import threading

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    stop = threading.Event()

    def handle(conn):
        with conn:
            try:
                conn.recv(65536)
                while not stop.is_set():
                    conn.sendall(b"H")
                    time.sleep(0.1)
            except OSError:
                pass

    def serve():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    sock.close()


def test_the_remote_client_has_a_total_deadline_against_a_trickling_server(trickling_server):
    from policies.remote import RemotePolicy, RemotePolicyError

    policy = RemotePolicy(trickling_server, timeout=0.5, connect_timeout=0.5, warmup_timeout=0.5, retries=3)
    start = time.perf_counter()
    with pytest.raises(RemotePolicyError, match="no complete answer within 1 s"):
        policy.health()
    assert time.perf_counter() - start < 3.0
    with pytest.raises(RemotePolicyError, match="no complete answer"):  # the client is usable again
        policy.health()
    policy.close()


def test_the_remote_client_refuses_a_huge_answer_without_reading_it():
    import httpx

    from policies.remote import RemotePolicy, RemotePolicyError

    def huge(request):
        return httpx.Response(200, content=(b"x" * (1 << 20) for _ in range(200)))  # 200 MB, streamed

    policy = RemotePolicy("http://robot", transport=httpx.MockTransport(huge), max_response_bytes=1 << 20)
    with pytest.raises(RemotePolicyError, match="exceeds 1048576 bytes"):
        policy.health()


def test_the_server_closes_connections_that_trickle_their_request():
    import socket

    from sim.serving.server import create_app, serve_in_thread

    class Still(Policy):
        def _act(self, observation):
            return np.zeros(3)

    app = create_app(Still)
    with serve_in_thread(app, read_timeout=0.5, max_connections_per_client=20) as url:  # all 20 get served
        host, port = url.removeprefix("http://").split(":")
        stalled = [socket.create_connection((host, int(port))) for _ in range(20)]
        for conn in stalled:
            conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        time.sleep(1.5)
        for conn in stalled:
            conn.settimeout(2)
            assert conn.recv(1024) == b"", "closed by the server"
            conn.close()
        import httpx

        assert httpx.get(f"{url}/health", timeout=5).status_code == 200


def test_reset_refuses_a_negative_episode_seed():
    from fastapi.testclient import TestClient

    from sim.serving.server import create_app

    class Still(Policy):
        def _act(self, observation):
            return np.zeros(3)

    response = TestClient(create_app(Still)).post("/reset", json={"instruction": "go", "episode_seed": -1})
    assert response.status_code == 422 and "episode_seed" in response.text


# ----------------------------------------------------------------------------------------------------- H5
def _episode(path, keys=("q", "w", "w", "e", "w", "SPACE"), hw=(24, 32), seed=0):
    """A collector-format episode with noisy frames (so each gzip chunk holds real data)."""
    from tests.test_h5format import collector_file

    collector_file(path, hw=hw, keys=list(keys), instruction="Navigate around the obstacle on the left side")
    rng = np.random.default_rng(seed)
    import h5py

    with h5py.File(path, "r+") as f:
        n = f["images"].shape[0]
        del f["images"]
        f.create_dataset("images", data=rng.integers(0, 255, (n, *hw, 3), dtype=np.uint8), chunks=(1, *hw, 3),
                         compression="gzip")
    return path


def _corrupt_middle_chunk(path, index=3):
    import h5py

    with h5py.File(path, "r") as f:
        info = f["images"].id.get_chunk_info(index)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 8)
        fh.write(b"\xff" * min(64, info.size - 8))


NAMES = ["episode_20251203_18223{}_1box_hori_left_core_medium.h5".format(i) for i in range(4)]


def test_a_corrupt_middle_chunk_fails_strict_inspection_and_is_skipped_by_training(tmp_path, capsys):
    from sim import inspect as inspect_cli
    from sim import train as train_cli
    from sim.data.h5format import check_episode

    data = tmp_path / "data"
    data.mkdir()
    paths = [_episode(data / name, seed=i) for i, name in enumerate(NAMES)]
    _corrupt_middle_chunk(paths[1])
    assert check_episode(paths[1]) == [], "the quick check reads the first and last frames only"
    assert any("unreadable" in p for p in check_episode(paths[1], strict=True))
    assert inspect_cli.main([str(data), "--strict"]) == 1
    capsys.readouterr()

    args = ["--policy", "lstm-recon", "--data", str(data), "--epochs", "1", "--cache-dir", str(tmp_path / "cache")]
    assert train_cli.main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and NAMES[1] in err and "Traceback" not in err
    assert train_cli.main([*args, "--out", str(tmp_path / "b"), "--skip-invalid"]) == 0
    assert f"skipping {data / NAMES[1]}" in capsys.readouterr().err


def test_a_tiny_file_declaring_huge_sizes_is_refused_before_reading(tmp_path):
    import resource

    import h5py

    from sim.data.h5format import check_episode

    path = tmp_path / NAMES[0]
    n = 200_000_000
    with h5py.File(path, "w") as f:  # declared, never written: a few KB on disk
        f.create_dataset("images", (n, 24, 32, 3), np.uint8, chunks=(1, 24, 32, 3), compression="gzip")
        f.create_dataset("actions", (n, 3), np.float32, chunks=(1024, 3), compression="gzip")
        f.create_dataset("action_event_types", (n,), h5py.string_dtype(), chunks=(1024,))
    assert path.stat().st_size < 64_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    problems = check_episode(path)
    assert any("declares 200000000 frames" in p for p in problems)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: no gigabyte allocation


@pytest.mark.parametrize("edit, expected", [
    ("group", "'images' is not a dataset"),
    ("huge_action", "actions reach 1e+30"),
])
def test_malformed_datasets_are_named_not_crashed_on(tmp_path, edit, expected):
    import h5py

    from sim.data.h5format import check_episode

    path = _episode(tmp_path / NAMES[0])
    with h5py.File(path, "r+") as f:
        if edit == "group":
            del f["images"]
            f.create_group("images")
        else:
            f["actions"][2] = [1e30, 0, 0]
    assert any(expected in p for p in check_episode(path))


# ------------------------------------------------------------------------------------------ checkpoint files
@pytest.mark.parametrize("edit, named", [
    ({"head_config": {"hidden_size": "abc"}}, "hidden_size must be an integer"),
    ({"head_config": {"window_size": 8.5}}, "window_size must be an integer"),
    ({"head_config": {"chunk_size": 1e9}}, "chunk_size = 1000000000 is larger than any head needs"),
    ({"head_config": [1, 2]}, "head_config must be a JSON object"),
    ({"format_version": "x"}, "format_version must be a JSON number"),
    ({"head": 5}, "head must be a JSON str"),
])
def test_a_bad_sidecar_names_its_file_and_field(tmp_path, capsys, edit, named):
    import shutil

    from policies.checkpoints import WEIGHTS_DIR
    from sim import checkpoint as checkpoint_cli
    from sim import eval as sim_eval

    weights = tmp_path / "lstm-recon_lite.safetensors"
    shutil.copy(WEIGHTS_DIR / weights.name, weights)
    side = json.loads((WEIGHTS_DIR / "lstm-recon_lite.json").read_text())
    for key, value in edit.items():
        side[key] = {**side[key], **value} if isinstance(value, dict) else value
    (tmp_path / "lstm-recon_lite.json").write_text(json.dumps(side))
    assert sim_eval.main(["--policy", "lstm-recon", "--checkpoint", str(weights), "--layouts", "1box_vert_left",
                          "--distances", "close", "--episodes-per-combo", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "lstm-recon_lite.json" in err and named in err and "Traceback" not in err
    assert checkpoint_cli.main([str(weights)]) == 1
    assert named in capsys.readouterr().out


def test_a_crafted_training_state_is_refused_without_running_it(tmp_path, capsys):
    import pickle

    from sim import train as train_cli

    data = tmp_path / "data"
    data.mkdir()
    for i, name in enumerate(NAMES[:3]):
        _episode(data / name, seed=i)
    out = tmp_path / "ckpt"
    out.mkdir()
    marker = tmp_path / "code-ran"
    (out / "last.pt").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    assert train_cli.main(["--policy", "lstm-recon", "--data", str(data), "--out", str(out), "--epochs", "1",
                           "--cache-dir", str(tmp_path / "cache"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "last.pt: refused to resume from it" in err and "Traceback" not in err and not marker.exists()


# --------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("command, args, named", [
    ("generate", ["--out", "{tmp}/g", "--episodes", "1", "--seed", "-1"], "--seed"),
    ("generate", ["--out", "{tmp}/g", "--episodes", "1", "--layouts", "3box"], "3box"),
    ("generate", ["--out", "{tmp}/g", "--episodes", "1", "--image-size", "64"], "--image-size"),
    ("eval", ["--policy", "expert", "--out", "{tmp}/file.txt/run"], "file.txt"),
    ("eval", ["--policy", "expert", "--max-steps", "-3"], "--max-steps"),
    ("eval", ["--policy", "expert", "--step-timeout", "0"], "--step-timeout"),
    ("eval", ["--policy", "expert", "--retry-errors"], "--resume"),
    ("eval", ["--policy", "expert", "--real-results", "{tmp}/bad.csv"], "bad.csv"),
    ("replay_patterns", ["--patterns", "{tmp}/missing.json"], "missing.json"),
    ("inspect", ["{tmp}/missing"], "missing"),
    ("train", ["--policy", "lstm-recon", "--data", "{tmp}/missing", "--out", "{tmp}/t"], "missing"),
    ("serve", ["--policy", "random", "--read-timeout", "0"], "--read-timeout"),
    ("eval", ["--policy", "case2", "--policy-arg", "dead_zone=maybe"], "dead_zone must be true or false"),
    ("eval", ["--policy", "case2", "--policy-arg", "window_size=2.5"], "window_size must be a whole number"),
])
def test_every_bad_argument_is_one_line_and_exit_2(tmp_path, capsys, command, args, named):
    import importlib

    (tmp_path / "file.txt").write_text("a file, not a folder")
    (tmp_path / "bad.csv").write_text("policy,success_rate\nexpert,lots\n")
    main = importlib.import_module(f"sim.{command}").main
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert ("error: " in last) and named in last and "Traceback" not in err


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    import errno

    from foundations import files
    from sim import eval as sim_eval

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    out = tmp_path / "run"
    assert sim_eval.main(["--policy", "expert", "--layouts", "1box_vert_left", "--distances", "close",
                          "--episodes-per-combo", "1", "--out", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    from sim.evaluation.runner import LOCK_FILE

    assert [p.name for p in out.iterdir()] == [LOCK_FILE], "no half-written config.json, no temporary file"
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    assert sim_eval.main(["--policy", "expert", "--layouts", "1box_vert_left", "--distances", "close",
                          "--episodes-per-combo", "1", "--out", str(out), "--record", "none"]) == 0


def _die_on_three(task: int) -> int:
    """Squares the task; task 3 kills its own worker process."""
    if task == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return task * task


def test_the_pool_survives_a_killed_worker_and_names_the_task(tmp_path):
    """The one pool of evaluation and data generation (``sim.evaluation.pool``)."""
    import threading

    from sim.evaluation.pool import run_tasks

    results: list = []
    worker = threading.Thread(target=lambda: results.extend(run_tasks(
        _die_on_three, list(range(6)), workers=2, failed=lambda task, cause: (task, cause))), daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "run_tasks hung"
    failed = [r for r in results if isinstance(r, tuple)]
    assert sorted(r for r in results if not isinstance(r, tuple)) == [0, 1, 4, 16, 25]
    assert len(failed) == 1 and failed[0][0] == 3 and "died 3 times" in failed[0][1] and "-9" in failed[0][1]
