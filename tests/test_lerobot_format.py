"""The LeRobot v3.0 writer: episodes read back bit for bit, metadata consistent, lerobot's stats, bad input named."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="sim.data.lerobot_format needs pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from foundations.errors import MobileVLAError  # noqa: E402
from sim.data.lerobot_format import (  # noqa: E402
    CODEBASE_VERSION,
    DATA_PATH,
    LeRobotFormatError,
    LeRobotV3Writer,
    check_lerobot_dataset,
    mobile_base_features,
    read_lerobot_dataset,
)

CAM = "observation.images.cam_front"
H, W = 12, 16
#: (frames, task): the second "go to the cup" shares task_index 0.
EPISODES = [(5, "go to the cup"), (7, "find the basket"), (6, "go to the cup")]


def _episode(rng, n, task):
    frames = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    actions = rng.normal(size=(n, 3)).astype(np.float32)
    events = ["episode_start"] + ["start_action"] * (n - 1)
    return task, {CAM: frames, "action": actions, "action.event_type": events}


def _write(root, episodes=EPISODES, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    written = [_episode(rng, n, task) for n, task in episodes]
    video = kwargs.pop("video", False)
    with LeRobotV3Writer(root, 6, mobile_base_features(H, W, video=video), "mobile_base", **kwargs) as writer:
        for task, data in written:
            writer.add_episode(task, data)
    return written


def _episodes_table(root):
    return pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()


def test_episodes_read_back_identical_with_consistent_indices(tmp_path):
    root = tmp_path / "ds"
    written = _write(root)
    assert check_lerobot_dataset(root) == []
    dataset = read_lerobot_dataset(root)
    assert dataset.tasks == ["go to the cup", "find the basket"]
    start = 0
    for i, (episode, (task, data)) in enumerate(zip(dataset.episodes, written)):
        n, values = len(data["action"]), episode.values
        assert episode.episode_index == i and episode.tasks == [task] and len(episode) == n
        assert values[CAM].dtype == np.uint8 and np.array_equal(values[CAM], data[CAM])
        assert values["action"].dtype == np.float32 and np.array_equal(values["action"], data["action"])
        assert values["action.event_type"] == data["action.event_type"]
        assert values["frame_index"].tolist() == list(range(n))
        assert values["index"].tolist() == list(range(start, start + n))
        assert values["episode_index"].tolist() == [i] * n
        assert values["task_index"].tolist() == [dataset.tasks.index(task)] * n
        assert values["timestamp"].dtype == np.float32
        np.testing.assert_allclose(values["timestamp"], np.arange(n) / 6, atol=1e-6)
        start += n


def test_info_episodes_and_data_files_follow_lerobot_v3(tmp_path):
    root = tmp_path / "ds"
    _write(root)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet", "meta/info.json",
        "meta/stats.json", "meta/tasks.parquet"]
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no staging folder left beside it
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == CODEBASE_VERSION == "v3.0"
    assert (info["robot_type"], info["fps"], info["total_episodes"], info["total_frames"], info["total_tasks"]) == (
        "mobile_base", 6, 3, 18, 2)
    assert info["splits"] == {"train": "0:3"} and info["data_path"] == DATA_PATH and info["video_path"] is None
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (1000, 100, 200)
    assert list(info["features"]) == [CAM, "action", "action.event_type", "timestamp", "frame_index",
                                      "episode_index", "index", "task_index"]
    assert info["features"][CAM] == {"dtype": "image", "shape": [H, W, 3], "names": ["height", "width", "channels"]}
    assert info["features"]["action"]["names"] == ["linear_x", "linear_y", "angular_z"]
    assert info["features"]["index"] == {"dtype": "int64", "shape": [1], "names": None}

    rows = _episodes_table(root)
    assert [(r["episode_index"], r["length"], r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [
        (0, 5, 0, 5), (1, 7, 5, 12), (2, 6, 12, 18)]
    assert [r["tasks"] for r in rows] == [["go to the cup"], ["find the basket"], ["go to the cup"]]
    assert {(r["data/chunk_index"], r["data/file_index"], r["meta/episodes/chunk_index"],
             r["meta/episodes/file_index"]) for r in rows} == {(0, 0, 0, 0)}
    assert list(rows[0])[:7] == ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                                 "dataset_from_index", "dataset_to_index"]

    data = pq.ParquetFile(root / "data/chunk-000/file-000.parquet")
    assert data.metadata.num_rows == 18 and data.metadata.num_row_groups == 3  # one row group per episode
    schema = data.schema_arrow
    assert str(schema.field(CAM).type) == "struct<bytes: binary, path: string>"
    assert str(schema.field("action").type) == "fixed_size_list<element: float>[3]"
    assert json.loads(schema.metadata[b"huggingface"])["info"]["features"]["action"] == {
        "feature": {"dtype": "float32", "_type": "Value"}, "length": 3, "_type": "List"}
    first = data.read().slice(0, 1).to_pylist()[0]
    assert first[CAM]["path"] == "frame-000000.png" and first[CAM]["bytes"][:4] == b"\x89PNG"

    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column("__index_level_0__").to_pylist() == ["go to the cup", "find the basket"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["__index_level_0__"]


def test_stats_are_lerobots(tmp_path):
    root = tmp_path / "ds"
    written = _write(root)
    stats = read_lerobot_dataset(root).stats
    actions = np.concatenate([d["action"] for _, d in written])
    assert stats["action"]["count"].tolist() == [18] and stats["index"]["max"].tolist() == [17]
    np.testing.assert_array_equal(stats["action"]["min"], actions.min(axis=0))
    np.testing.assert_array_equal(stats["action"]["max"], actions.max(axis=0))
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(axis=0, dtype=np.float64), rtol=1e-5)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(axis=0, dtype=np.float64), rtol=1e-4)
    assert set(stats) == {CAM, "action", "timestamp", "frame_index", "episode_index", "index", "task_index"}
    pixels = np.concatenate([d[CAM] for _, d in written]).reshape(-1, 3) / 255.0
    assert stats[CAM]["mean"].shape == (3, 1, 1) and stats[CAM]["count"].tolist() == [18]
    np.testing.assert_allclose(stats[CAM]["mean"].ravel(), pixels.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(stats[CAM]["std"].ravel(), pixels.std(axis=0), rtol=1e-9)  # not lerobot's overflow
    assert stats[CAM]["min"].ravel().tolist() == [0.0] * 3 and stats[CAM]["max"].ravel().tolist() == [1.0] * 3

    # Values lerobot 0.4.4's LeRobotDataset.save_episode wrote for the same episodes (histogram quantiles).
    rows = _episodes_table(root)
    assert rows[0]["stats/frame_index/q50"] == [2.0004000000000204]
    assert rows[0]["stats/frame_index/q01"] == [-1e-10]
    assert rows[1]["stats/index/q01"] == [4.9999999999] and rows[1]["stats/index/q50"] == [8.00060000000002]
    assert rows[1]["stats/timestamp/q90"] == [0.999860000099972]
    assert rows[1]["stats/episode_index/q01"] == [1.0000000000000004]
    assert rows[1]["stats/action/count"] == [7] and len(rows[1]["stats/action/q99"]) == 3
    assert np.shape(rows[0][f"stats/{CAM}/q10"]) == (3, 1, 1)


def test_a_single_frame_episode_uses_lerobots_basic_stats(tmp_path):
    root = tmp_path / "ds"
    _write(root, episodes=[(1, "stay")])
    assert check_lerobot_dataset(root) == []
    row = _episodes_table(root)[0]
    assert row["stats/action/q50"] == row["stats/action/mean"] and row["stats/action/std"] == [0.0] * 3
    assert row[f"stats/{CAM}/count"] == [1]


def test_files_roll_over_by_size_and_chunk(tmp_path):
    root = tmp_path / "ds"
    written = _write(root, data_files_size_in_mb=1e-6, chunks_size=2)
    assert [(r["data/chunk_index"], r["data/file_index"]) for r in _episodes_table(root)] == [(0, 0), (0, 1), (1, 0)]
    assert (root / "data/chunk-001/file-000.parquet").is_file()
    assert check_lerobot_dataset(root) == []
    for episode, (_, data) in zip(read_lerobot_dataset(root).episodes, written):
        assert np.array_equal(episode.values[CAM], data[CAM])


def test_video_features(tmp_path):
    root = tmp_path / "ds"
    rng = np.random.default_rng(1)
    ramp = np.linspace(40, 200, W, dtype=np.float64)[None, :, None] + np.zeros((H, W, 3))
    written = []
    with LeRobotV3Writer(root, 6, mobile_base_features(H, W, video=True), "mobile_base") as writer:
        for n, task in EPISODES:
            frames = np.stack([ramp + 5 * i for i in range(n)]).astype(np.uint8)
            data = {CAM: frames, "action": rng.normal(size=(n, 3)), "action.event_type": ["move"] * n}
            writer.add_episode(task, data)
            written.append(data)
    assert check_lerobot_dataset(root) == []
    assert (root / f"videos/{CAM}/chunk-000/file-000.mp4").is_file()
    info = json.loads((root / "meta/info.json").read_text())
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["features"][CAM]["info"] == {
        "video.height": H, "video.width": W, "video.codec": "h264", "video.pix_fmt": "yuv420p",
        "video.is_depth_map": False, "video.fps": 6, "video.channels": 3, "has_audio": False}
    rows = _episodes_table(root)
    spans = [(r[f"videos/{CAM}/from_timestamp"], r[f"videos/{CAM}/to_timestamp"]) for r in rows]
    assert spans == [(0.0, 5 / 6), (5 / 6, 12 / 6), (12 / 6, 18 / 6)]
    assert CAM not in pq.read_schema(root / "data/chunk-000/file-000.parquet").names
    for episode, data in zip(read_lerobot_dataset(root).episodes, written):
        assert episode.values[CAM].shape == data[CAM].shape  # H.264 is lossy: close, not equal
        assert np.abs(episode.values[CAM].astype(int) - data[CAM]).mean() < 4
        np.testing.assert_array_equal(episode.values["action"], data["action"].astype(np.float32))


def test_nothing_appears_before_finalize_and_an_error_leaves_nothing(tmp_path):
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    writer = LeRobotV3Writer(root, 6, mobile_base_features(H, W))
    writer.add_episode(*_episode(rng, 3, "go"))
    assert not root.exists()
    assert writer.finalize() == root and check_lerobot_dataset(root) == []
    with pytest.raises(LeRobotFormatError, match="already finalized"):
        writer.add_episode(*_episode(rng, 3, "go"))
    with pytest.raises(LeRobotFormatError, match="root: .* already exists"):
        LeRobotV3Writer(root, 6, mobile_base_features(H, W))

    with pytest.raises(RuntimeError), LeRobotV3Writer(tmp_path / "other", 6, mobile_base_features(H, W)) as w:
        w.add_episode(*_episode(rng, 3, "go"))
        raise RuntimeError("interrupted")
    with pytest.raises(LeRobotFormatError, match="no episode"), LeRobotV3Writer(tmp_path / "empty", 6,
                                                                                mobile_base_features(H, W)):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(action=d["action"][:-1]), "one value per frame"),
    (lambda d: d.update({CAM: d[CAM].astype(np.float32)}), rf"data\['{CAM}'\]: frames must be uint8"),
    (lambda d: d.update({CAM: d[CAM][:, :, :-1]}), rf"data\['{CAM}'\]: frames must be uint8 \(4, 12, 16, 3\)"),
    (lambda d: d.update({k: v[:0] for k, v in d.items()}), "empty episode"),
    (lambda d: d.pop("action.event_type"), r"missing \['action.event_type'\]"),
    (lambda d: d.update(extra=[1, 2, 3, 4]), r"unknown \['extra'\]"),
    (lambda d: d.update(action=d["action"][:, :2]), r"data\['action'\]: shape must be \(4, 3\)"),
    (lambda d: d.update(action=np.full((4, 3), "x")), r"data\['action'\]: values of dtype <U1"),
    (lambda d: d.update(action=np.full((4, 3), np.nan)), r"data\['action'\]: holds NaN"),
    (lambda d: d.update({"action.event_type": [1, 2, 3, 4]}), r"data\['action.event_type'\]: must be 4 strings"),
    (lambda d: d.update({"action.event_type": "move"}), r"data\['action.event_type'\]: must hold one value"),
    (lambda d: d.update(action=[[0.0, 0.0, 0.0], [1.0]] * 2), r"data\['action'\]: must hold one value per frame"),
    (lambda d: d.update(action=np.float32(1.0)), r"data\['action'\]: must hold one value per frame"),
])
def test_bad_episodes_are_named_and_write_nothing(tmp_path, change, match):
    writer = LeRobotV3Writer(tmp_path / "ds", 6, mobile_base_features(H, W))
    task, data = _episode(np.random.default_rng(0), 4, "go")
    change(data)
    with pytest.raises(LeRobotFormatError, match=match) as caught:
        writer.add_episode(task, data)
    assert isinstance(caught.value, MobileVLAError) and isinstance(caught.value, ValueError)
    with pytest.raises(LeRobotFormatError, match="task: must be a non-empty string"):
        writer.add_episode("", _episode(np.random.default_rng(0), 4, "go")[1])
    assert writer.num_episodes == 0 and writer.num_frames == 0
    writer.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"fps": 0}, "fps: must be a positive int"),
    ({"fps": 6.5}, "fps: must be a positive int"),
    ({"features": {}}, "features: must be a non-empty mapping"),
    ({"features": {"a/b": {"dtype": "float32", "shape": (2,)}}}, r"features\['a/b'\]: .* without '/'"),
    ({"features": {"index": {"dtype": "int64", "shape": (1,)}}}, "one of lerobot's default features"),
    ({"features": {"x": {"dtype": "complex64", "shape": (2,)}}}, r"features\['x'\]: dtype must be"),
    ({"features": {"x": {"dtype": "float32", "shape": (2, 2)}}}, r"features\['x'\]: a numeric feature has shape"),
    ({"features": {"x": {"dtype": "float32", "shape": (2,), "names": ["a"]}}}, r"features\['x'\]: 1 names"),
    ({"features": {"cam": {"dtype": "image", "shape": (12, 16)}}}, r"features\['cam'\]: an image feature"),
    ({"features": {"cam": {"dtype": "image", "shape": (12, 16, 3), "names": ["h", "w"]}}}, "2 names for shape"),
    ({"features": mobile_base_features(11, 16, video=True)}, "even height and width"),
    ({"data_files_size_in_mb": 0}, "data_files_size_in_mb: must be a positive"),
])
def test_bad_writer_arguments_are_named(tmp_path, kwargs, match):
    arguments = {"root": tmp_path / "ds", "fps": 6, "features": mobile_base_features(H, W), **kwargs}
    with pytest.raises(LeRobotFormatError, match=match):
        LeRobotV3Writer(**arguments)
    assert list(tmp_path.iterdir()) == []


def test_check_finds_inconsistent_datasets(tmp_path):
    root = tmp_path / "ds"
    _write(root)
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps(dict(info, total_frames=19)))
    assert "meta/episodes: the episodes hold 18 frames, info.json says 19" in check_lerobot_dataset(root)
    info_path.write_text(json.dumps(dict(info, codebase_version="v2.1")))
    assert check_lerobot_dataset(root) == ["meta/info.json: codebase_version is 'v2.1', not 'v3.0'"]
    with pytest.raises(LeRobotFormatError, match="codebase_version"):
        read_lerobot_dataset(root)
    info_path.write_text(json.dumps(info))
    data = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(data)
    pq.write_table(table.slice(0, 17), data)
    assert any("17 rows" in p or "must all be in" in p for p in check_lerobot_dataset(root))
    data.unlink()
    assert check_lerobot_dataset(root) == [
        "data: files [], the episodes name ['data/chunk-000/file-000.parquet']"]
    assert check_lerobot_dataset(tmp_path / "missing") == [f"{tmp_path / 'missing' / 'meta/info.json'}: missing"]


def test_other_features_scalar_columns_and_default_image_names(tmp_path):
    root = tmp_path / "ds"
    features = {"observation.image": {"dtype": "image", "shape": (4, 6, 3)},
                "observation.state": {"dtype": "float64", "shape": (1,), "names": None},
                "step": {"dtype": "int32", "shape": (2,), "names": ["a", "b"]}}
    frames = np.arange(3 * 4 * 6 * 3, dtype=np.uint8).reshape(3, 4, 6, 3)
    state, step = np.array([0.5, -1.25, 3.0]), np.arange(6, dtype=np.int32).reshape(3, 2)
    with LeRobotV3Writer(root, 10, features) as writer:
        writer.add_episode("t", {"observation.image": frames, "observation.state": state, "step": step})
    assert check_lerobot_dataset(root) == []
    info = json.loads((root / "meta/info.json").read_text())
    assert info["robot_type"] is None and info["features"]["observation.image"]["names"] == [
        "height", "width", "channels"]
    values = read_lerobot_dataset(root).episodes[0].values
    assert np.array_equal(values["observation.image"], frames)
    assert values["observation.state"].dtype == np.float64 and values["observation.state"].tolist() == state.tolist()
    assert values["step"].dtype == np.int32 and np.array_equal(values["step"], step)
    assert str(pq.read_schema(root / "data/chunk-000/file-000.parquet").field("observation.state").type) == "double"
