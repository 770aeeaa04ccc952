"""``sim.generate``: collector format, frame semantics, determinism across workers, atomic writes + resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from sim import generate as gen_cli
from sim.data import generation as gen
from sim.data import h5format

ROOT = Path(__file__).resolve().parents[1]
# Small and fast: 64x64 frames, two layouts x two distances, one of two episodes a variant.
ARGS = ["--episodes", "4", "--image-size", "64x64", "--layouts", "1box_hori_left", "2box_vert_right",
        "--distances", "close", "medium", "--variant-ratio", "0.5", "--seed", "7", "--no-progress"]


def _contents(folder: Path) -> dict[str, dict]:
    """Everything stored in each episode file (datasets and attributes), by file name."""
    out = {}
    for p in sorted(folder.glob("episode_*.h5")):
        with h5py.File(p) as f:
            out[p.name] = {
                "images": f["images"][()].tobytes(), "actions": f["actions"][()].tobytes(),
                "events": list(f["action_event_types"][()]), "instruction": f["language_instruction"][()].tobytes(),
                "attrs": {k: str(v) for k, v in f.attrs.items()},
            }
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    assert gen_cli.main(["--out", str(out), "--workers", "1", *ARGS]) == 0
    return out


def test_assignment_is_round_robin_with_exact_variant_share():
    cfg = gen.GenerateConfig(out=Path("x"), episodes=48, layouts=("A", "B"), distances=("close", "far"),
                             variant_ratio=0.25)
    plans = [gen.plan_episode(cfg, i) for i in range(48)]
    assert [(p.layout, p.distance) for p in plans[:5]] == [("A", "close"), ("A", "far"), ("B", "close"),
                                                           ("B", "far"), ("A", "close")]
    assert sum(p.kind == "variant" for p in plans) == 12
    assert {p.kind for p in plans[0::4]} == {"core", "variant"}  # every combo gets both kinds
    # Seeds and timestamps depend only on the index.
    assert gen.attempt_seeds(0, 3, 0) == gen.attempt_seeds(0, 3, 0) != gen.attempt_seeds(0, 3, 1)
    names = {gen.episode_datetime(i, "night") for i in range(5000)}
    assert len(names) == 5000 and all(t.hour == 22 for t in names)


def test_generated_files_follow_the_collector_format(reference):
    files = sorted(reference.glob("episode_*.h5"))
    assert len(files) == 4
    kinds = set()
    for p in files:
        assert h5format.check_episode(p, strict=True) == [], p
        fields = h5format.parse_filename(p)
        kinds.add(fields["kind"])
        with h5py.File(p) as f:
            images, actions = f["images"][()], f["actions"][()]
            events = [e.decode() for e in f["action_event_types"][()]]
            params = json.loads(f.attrs["sim_params"])
            assert images.shape[1:] == (64, 64, 3) and images.dtype == np.uint8
            assert f.attrs["num_frames"] == len(images) == len(params["keys"]) + 1
            assert f.attrs["episode_name"] == p.stem and f.attrs["obstacle_layout_type"] == fields["layout_type"]
            assert f.attrs["time_period"] == params["scene"]["time_period"]
            assert f.attrs["total_duration"] == pytest.approx(0.6 * len(params["keys"]))
            assert f.attrs["collection_datetime"].startswith(f"{fields['date'][:4]}-{fields['date'][4:6]}")
        # Frame semantics: start with zeros, the first two images are the same view, then presses, final stop.
        assert events[0] == "episode_start" and not actions[0].any()
        np.testing.assert_array_equal(images[0], images[1])
        assert events[-1] == "stop_action" and not actions[-1].any()
        assert set(events[1:-1]) == {"start_action"}
        from envs.keys import key_to_action
        np.testing.assert_array_equal(actions[1:], np.stack([key_to_action(k) for k in params["keys"]]))
        assert params["kind"] == fields["kind"]
        assert params["expert"]["epsilon"] == (0.0 if fields["kind"] == "core" else 0.2)
    assert kinds == {"core", "variant"}
    # Index and statistics.
    rows = list(csv.DictReader((reference / "dataset_index.csv").open()))
    assert [r["episode_path"] for r in rows] == [p.name for p in files] and all(r["instruction"] for r in rows)
    stats = json.loads((reference / "dataset_statistics.json").read_text())
    assert stats["num_episodes"] == 4 and stats["episodes_per_kind"] == {"core": 2, "variant": 2}
    assert set(stats["episodes_per_layout"]) == {"1box_hori_left", "2box_vert_right"}
    assert stats["key_histogram"]["SPACE"] == 4 and set(stats["actions"]) >= {"linear_x", "linear_y"}


def test_stored_frames_are_bgr_and_the_episode_can_be_regenerated(reference):
    """Re-running the env from ``sim_params`` reproduces frame 0 (stored BGR = env RGB reversed)."""
    import gymnasium as gym

    import envs  # noqa: F401

    p = sorted(reference.glob("episode_*.h5"))[0]
    with h5py.File(p) as f:
        params = json.loads(f.attrs["sim_params"])
        frame0 = f["images"][0]
    e = params["env"]
    env = gym.make(e["id"], scenario=e["scenario"], distance=e["distance"], image_size=tuple(e["image_size"]),
                   domain_randomization=e["domain_randomization"])
    obs, info = env.reset(seed=params["scene_seed"])
    env.close()
    assert json.loads(json.dumps(info["scene"])) == params["scene"]
    np.testing.assert_array_equal(frame0, obs["image"][..., ::-1])
    assert not np.array_equal(frame0, obs["image"])  # really swapped


def test_same_seed_same_episodes_whatever_the_worker_count(reference, tmp_path):
    assert gen_cli.main(["--out", str(tmp_path), "--workers", "2", *ARGS]) == 0
    assert _contents(tmp_path) == _contents(reference)
    for p in reference.glob("episode_*.h5"):  # even byte-identical
        assert (tmp_path / p.name).read_bytes() == p.read_bytes()


def test_kill_mid_run_then_resume_gives_the_identical_result(reference, tmp_path):
    cmd = [sys.executable, "-m", "sim.generate", "--out", str(tmp_path), "--workers", "1", *ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("episode_*.h5")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list(tmp_path.glob("episode_*.h5"))
    assert 1 <= len(finished) < 4
    for p in finished:  # whatever was killed, no half-written episode carries a final name
        assert h5format.check_episode(p, strict=True) == []
        assert p.read_bytes() == (reference / p.name).read_bytes()
    mtimes = {p.name: p.stat().st_mtime_ns for p in finished}
    stale = tmp_path / ".episode_20251201_000000_x.abc.tmp"
    stale.write_bytes(b"partial")

    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"skipped {len(finished)} finished" in res.stdout
    assert not stale.exists()
    assert {p.stat().st_mtime_ns for p in finished} == set(mtimes.values())  # not rewritten
    assert _contents(tmp_path) == _contents(reference)
    assert (tmp_path / "dataset_index.csv").read_text() == (reference / "dataset_index.csv").read_text()
    assert json.loads((tmp_path / "dataset_statistics.json").read_text()) == json.loads(
        (reference / "dataset_statistics.json").read_text())


def test_rerun_is_a_no_op_and_other_settings_are_refused(reference, tmp_path, capsys):
    import shutil

    for p in reference.iterdir():
        shutil.copy2(p, tmp_path / p.name)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert gen_cli.main(["--out", str(tmp_path), "--workers", "1", *ARGS]) == 0
    assert "wrote 0 episodes" in capsys.readouterr().out
    other = [a if a != "7" else "8" for a in ARGS]  # another --seed
    assert gen_cli.main(["--out", str(tmp_path), "--workers", "1", *other]) == 2
    assert "other settings" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_cli_rejects_bad_arguments(tmp_path):
    for bad in (["--image-size", "2000x10"], ["--layouts", "nope"], ["--variant-ratio", "2"], ["--episodes", "0"]):
        assert gen_cli.main(["--out", str(tmp_path), "--episodes", "1", *bad]) == 2
    assert not list(tmp_path.iterdir())


class _FilterPathEncoder(h5format.FrameEncoder):
    """The writer of before the in-worker compression: the frames go to ``write_episode`` as an array, compressed
    there after the episode."""

    def add(self, key, frame_rgb):
        self.__dict__.setdefault("_raw", {})[key] = frame_rgb

    def frames(self, keys):
        return np.stack([self._raw[k] for k in keys])[..., ::-1]


@pytest.mark.parametrize("family", ["cup", "corridor"])
def test_chunks_compressed_while_rendering_give_the_files_written_from_the_frames(reference, tmp_path, monkeypatch, family):
    """The worker compresses each frame into its chunk while the next is rendered (``FrameEncoder``) and the file
    gets the chunks as they are: byte-identical to the files written from the frames after the episode (the
    collector layout, whose frames 0 and 1 are one image, and the V6 one, whose last frame repeats)."""
    args = ARGS if family == "cup" else ["--family", "corridor", "--episodes", "2", "--image-size", "64x48",
                                         "--seed", "3", "--no-progress"]
    direct = reference
    if family != "cup":
        direct = tmp_path / "direct"
        assert gen_cli.main(["--out", str(direct), "--workers", "1", *args]) == 0
    monkeypatch.setattr(h5format, "FrameEncoder", _FilterPathEncoder)
    assert gen_cli.main(["--out", str(tmp_path / "filter"), "--workers", "1", *args]) == 0
    names = sorted(p.name for p in direct.glob("episode_*.h5"))
    assert names and names == sorted(p.name for p in (tmp_path / "filter").glob("episode_*.h5"))
    for name in names:
        assert (direct / name).read_bytes() == (tmp_path / "filter" / name).read_bytes()
    if family == "corridor":  # the repeated last frame is stored 5 times
        with h5py.File(direct / names[0]) as f:
            images = f["images"][()]
        assert all(np.array_equal(images[-1], images[-k]) for k in range(2, h5format.STOP_INJECT_N + 1))
