"""``MobileVLAH5Dataset``: real collector files and synthetic ones, windowing, sampling modes, split, bad files."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import h5py
import numpy as np
import pytest
import torch

from sim.data import h5format
from sim.data.dataset import CLIP_MEAN, CLIP_STD, InvalidEpisodeError, MobileVLAH5Dataset, split_episodes

LABEL = {"w": (1.15, 0, 0), "q": (1.15, 1.15, 0), "e": (1.15, -1.15, 0), "a": (0, 1.15, 0), "SPACE": (0, 0, 0)}
BGR = (30, 120, 220)  # blue, green, red as stored


def robot_file(path, keys, hw=(720, 1280)):
    """An episode exactly as the robot's collector writes it: 720p BGR, gzip, real attributes, and no
    ``language_instruction`` (added only later by the team)."""
    n = len(keys) + 1
    images = np.empty((n, *hw, 3), np.uint8)
    images[...] = BGR
    images[:, 0, 0, :] = np.arange(n, dtype=np.uint8)[:, None]  # frame id in the corner pixel
    actions = np.array([(0, 0, 0)] + [LABEL[k] for k in keys], np.float32)
    events = ["episode_start"] + ["stop_action" if k == "SPACE" else "start_action" for k in keys]
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, compression="gzip")
        f.create_dataset("actions", data=actions, compression="gzip")
        f.create_dataset("action_event_types", data=events, dtype=h5py.string_dtype("utf-8"))
        f.attrs.update({
            "episode_name": path.stem, "total_duration": 11.2, "num_frames": n, "action_chunk_size": 8,
            "obstacle_layout_type": "hori", "time_period": "night", "collection_datetime": "2025-12-03 22:10:05",
            "collection_hour": 22, "collection_minute": 10,
        })
    return path


KEYS17 = list("qqqwwwwwwwwweeee") + ["SPACE"]  # 17 presses: 18 frames like the real episodes


@pytest.fixture(scope="module")
def robot_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("robot")
    robot_file(d / "episode_20251203_221005_1box_hori_left_core_medium.h5", KEYS17)
    return d


def test_reads_a_real_720p_collector_file(robot_dir):
    ds = MobileVLAH5Dataset(robot_dir)
    ep = ds.episodes[0]
    assert ep.length == 18 and ep.image_hw == (720, 1280) and len(ds) == 11  # starts 0..10
    assert ep.instruction == "Navigate around obstacles and reach the front of the beverage bottle on the left"
    s = ds[0]
    assert s["images"].shape == (8, 3, 224, 224) and s["images"].dtype == torch.float32
    assert s["actions"].shape == (8, 10, 2) and s["action_mask"].shape == (8, 10)
    assert s["instruction"] == ep.instruction and s["episode_id"] == ep.episode_id and s["start"] == 0
    # BGR on disk -> RGB, CLIP-normalised: the centre pixel is (R, G, B) = (220, 120, 30).
    rgb = torch.tensor(BGR[::-1], dtype=torch.float32) / 255
    expected = (rgb - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(s["images"][3, :, 112, 112], expected, atol=1e-4, rtol=0)
    # Labels 1.15 are clamped to 1; frame t's chunk = actions[t : t+10].
    acts = np.clip(np.array([(0, 0)] + [LABEL[k][:2] for k in KEYS17], np.float32), -1, 1)
    np.testing.assert_array_equal(s["actions"][0].numpy(), acts[0:10])
    np.testing.assert_array_equal(s["actions"][7].numpy(), acts[7:17])
    assert s["action_mask"].all() and s["frame_mask"].all()
    last = ds[len(ds) - 1]  # start 10: frame 17's chunk has 1 real step, the rest padding
    assert last["start"] == 10
    assert last["action_mask"][7].tolist() == [True] + [False] * 9
    assert not last["actions"][7, 1:].any() and last["actions"].abs().max() <= 1.0


def test_raw_access_for_feature_caching(robot_dir):
    ds = MobileVLAH5Dataset(robot_dir, mean=None, std=None)
    frames = ds.read_episode_frames(0)
    assert frames.shape == (18, 720, 1280, 3) and frames.dtype == np.uint8
    assert tuple(frames[5, 100, 100]) == BGR[::-1] and frames[5, 0, 0, 0] == 5
    assert ds.episode_actions(0).shape == (18, 3)
    assert float(ds[0]["images"].max()) <= 1.0  # no normalisation: [0, 1]


def _synthetic(folder, name, n, instruction="Navigate to the cup", side_hw=(32, 48)):
    actions = np.zeros((n, 3), np.float32)
    actions[1:-1] = (1.15, 1.15, 0)
    events = ["episode_start"] + ["start_action"] * (n - 2) + ["stop_action"]
    attrs = h5format.collector_attributes(name[:-3], 0.6 * (n - 1), n, name.split("_")[4], "dawn",
                                          datetime(2025, 12, 1, 5))
    imgs = np.zeros((n, *side_hw, 3), np.uint8)
    imgs[:, 0, 0, 0] = np.arange(n)
    return h5format.write_episode(folder / name, imgs, actions, events, attrs, instruction=instruction)


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    """Many scenarios, unbalanced (6 episodes of one layout, 1 of each other)."""
    d = tmp_path_factory.mktemp("mixed")
    layouts = ["1box_hori_left", "1box_hori_right", "2box_vert_left", "2box_vert_right"]
    i = 0
    for layout, count in zip(layouts, (6, 1, 1, 2)):
        for _ in range(count):
            _synthetic(d, f"episode_20251201_0500{i:02d}_{layout}_core_medium.h5", n=12 + i)
            i += 1
    _synthetic(d, "episode_20251201_050099_1box_vert_left_core_far.h5", n=5)  # shorter than the window
    return d


def test_short_episode_pads_and_masks_frames(mixed_dir):
    ds = MobileVLAH5Dataset(mixed_dir, image_size=16)
    e = next(i for i, ep in enumerate(ds.episodes) if ep.length == 5)
    idx = ds._windows.index((e, 0))
    s = ds[idx]
    assert s["frame_mask"].tolist() == [True] * 5 + [False] * 3
    assert not s["action_mask"][5:].any() and s["action_mask"][0, :5].all() and not s["action_mask"][0, 5:].any()
    assert s["images"].shape == (8, 3, 16, 16) and s["instruction"] == "Navigate to the cup"


def test_sampling_modes(mixed_dir):
    seq = MobileVLAH5Dataset(mixed_dir, image_size=8)
    assert len(seq) == sum(max(ep.length - 8, 0) + 1 for ep in seq.episodes)
    assert [seq.window_index(i) for i in range(3)] == [(0, 0), (0, 1), (0, 2)]

    rnd = MobileVLAH5Dataset(mixed_dir, image_size=8, sampling="random", num_samples=400, seed=3)
    draws = [rnd.window_index(i) for i in range(400)]
    assert draws == [rnd.window_index(i) for i in range(400)]  # reproducible (same in every worker)
    assert len({e for e, _ in draws}) == len(rnd.episodes)
    starts = [s for e, s in draws if rnd.episodes[e].length == 12 + 0]
    assert len(set(starts)) > 1  # random start inside the episode, not only 0
    rnd.set_epoch(1)
    assert [rnd.window_index(i) for i in range(400)] != draws

    strat = MobileVLAH5Dataset(mixed_dir, image_size=8, sampling="stratified", num_samples=500)
    counts = Counter(strat.episodes[strat.window_index(i)[0]].stratum for i in range(500))
    assert set(counts) == set(strat.strata) and len(counts) == 5
    assert max(counts.values()) - min(counts.values()) <= 1  # balanced, although one layout has 6 episodes
    s = strat[7]
    assert s["images"].shape == (8, 3, 8, 8)


def test_split_is_by_episode_seeded_and_stratified(mixed_dir):
    ds = MobileVLAH5Dataset(mixed_dir, image_size=8)
    train, val = ds.split(val_fraction=0.3, seed=1)
    tr_ids = {e.episode_id for e in train.episodes}
    va_ids = {e.episode_id for e in val.episodes}
    assert tr_ids and va_ids and not tr_ids & va_ids and len(tr_ids | va_ids) == len(ds.episodes)
    assert {train.episodes[train.window_index(i)[0]].episode_id for i in range(len(train))} == tr_ids
    assert val[0]["episode_id"] in va_ids  # no frame of a val episode in train
    assert split_episodes(ds.episodes, 0.3, seed=1) == split_episodes(ds.episodes, 0.3, seed=1)
    strata = {}
    for e in ds.episodes:
        strata.setdefault(e.stratum, []).append(e.episode_id)
    big = strata["1box_hori_left"]
    assert 1 <= len(set(big) & va_ids) < len(big)  # the 6-episode layout lands on both sides
    with pytest.raises(ValueError):
        split_episodes(ds.episodes, 1.0)
    train, val = ds.split(val_fraction=0.0)
    assert len(train.episodes) == len(ds.episodes) and len(val) == 0


def test_bad_file_in_folder_raises_naming_it_or_is_skipped(tmp_path):
    _synthetic(tmp_path, "episode_20251201_050000_1box_hori_left_core_medium.h5", n=10)
    bad = _synthetic(tmp_path, "episode_20251201_050001_1box_hori_right_core_medium.h5", n=10)
    with h5py.File(bad, "a") as f:
        del f["actions"]
    with pytest.raises(InvalidEpisodeError, match=f"{bad.name}.*missing dataset 'actions'"):
        MobileVLAH5Dataset(tmp_path)
    with pytest.warns(UserWarning, match=bad.name):
        ds = MobileVLAH5Dataset(tmp_path, skip_invalid=True)
    assert [e.path.name for e in ds.episodes] == ["episode_20251201_050000_1box_hori_left_core_medium.h5"]
    bad.unlink()
    (tmp_path / "episode_20251201_050002_1box_hori_left_core_far.h5").write_text("not hdf5")
    with pytest.raises(InvalidEpisodeError, match="050002.*not an HDF5 file"):
        MobileVLAH5Dataset(tmp_path, skip_invalid=False)


def test_bad_arguments(robot_dir, tmp_path):
    with pytest.raises(ValueError, match="sampling"):
        MobileVLAH5Dataset(robot_dir, sampling="shuffled")
    with pytest.raises(FileNotFoundError):
        MobileVLAH5Dataset(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        MobileVLAH5Dataset(tmp_path)  # empty folder
    with pytest.raises(IndexError):
        MobileVLAH5Dataset(robot_dir)[11]


def test_dataloader_collates(mixed_dir):
    ds = MobileVLAH5Dataset(mixed_dir, image_size=8, sampling="random", num_samples=6)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["images"].shape == (3, 8, 3, 8, 8) and len(batch["instruction"]) == 3
