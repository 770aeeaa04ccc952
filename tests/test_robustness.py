"""The robustness audit (issue 14), kept as tests: bad input and faults give one clear line and the documented exit
code, never a traceback, a hang or a silently wrong result; a crafted file runs no code."""

from __future__ import annotations

import base64
import json
import zipfile

import gymnasium as gym
import pytest

import envs  # noqa: F401 - registers the environment
from envs import ENV_ID


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
