"""Issue 27, round 4: windowed H5 reads (distance augmentation, the LeRobot export) and the fourth hostile-user
audit's regressions (one test per case found: a traceback, a hang or a silent wrong result before the fix)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sim.data import h5format

# --------------------------------------------------------------------------------------- windowed reads
BLANK_FRAMES, BLANK_HW = 1200, (96, 128)  # 44 MiB of pixels declared, a few KiB on disk (gzip, never written)


def blank_episode(path, n=BLANK_FRAMES, hw=BLANK_HW):
    """A collector-format episode of ``n`` black frames whose image chunks are never written (so the file is tiny
    and reading it whole would allocate ``n * H * W * 3`` bytes)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("images", shape=(n, *hw, 3), dtype=np.uint8, chunks=(1, *hw, 3), compression="gzip")
        actions = np.zeros((n, 3), np.float32)
        actions[1:-1, 0] = 1.15
        f.create_dataset("actions", data=actions)
        events = ["episode_start"] + ["start_action"] * (n - 2) + ["stop_action"]
        f.create_dataset("action_event_types", data=events, dtype=h5py.string_dtype())
        f.create_dataset("language_instruction", data=np.array([b"go to the cup"], dtype="S256"))
        f.attrs.update({"episode_name": path.stem, "total_duration": n * 0.4, "num_frames": n,
                        "action_chunk_size": 8, "obstacle_layout_type": "hori", "time_period": "evening",
                        "collection_datetime": "2025-12-03T18:22:33", "collection_hour": 18,
                        "collection_minute": 22})
    assert path.stat().st_size < 1 << 20
    return path


@pytest.fixture
def image_reads(monkeypatch):
    """Frames per read of any ``images`` dataset; a read of more than :data:`h5format.FRAME_WINDOW` frames fails
    the test before it allocates them."""
    reads: list[int] = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        if self.name == "/images":
            first = key[0] if isinstance(key, tuple) else key
            count = len(range(*first.indices(self.shape[0]))) if isinstance(first, slice) else 1
            assert count <= h5format.FRAME_WINDOW, f"read {count} frames of {self.shape[0]} at once"
            reads.append(count)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    return reads


class _Backbone:
    """A frozen backbone stub: a 4-wide feature per frame (its mean pixel)."""

    name = "stub"

    def stream_dims(self):
        return {"image": 4}

    def encode_frames(self, frames, streams, instruction=""):
        import torch

        return torch.from_numpy(np.repeat(frames.reshape(len(frames), -1).mean(1, keepdims=True), 4, 1)).float()


@pytest.mark.parametrize("kind", ["precision", "speed"])
def test_distance_augmentation_reads_an_episode_by_windows(tmp_path, image_reads, kind):
    from sim.training.augmentation import AugmentedCopy
    from sim.training.supervised import FeatureCache

    path = blank_episode(tmp_path / "episode_20251203_182233_1box_hori_left_core_far.h5")
    copy = AugmentedCopy(kind, path.name, 0, 0)
    feats = FeatureCache(tmp_path / "cache", _Backbone()).vision(path, copy=copy)
    assert feats.shape == (len(copy.frame_indices(BLANK_FRAMES)), 4)
    assert sum(image_reads) == BLANK_FRAMES and max(image_reads) <= h5format.FRAME_WINDOW


def test_windowed_augmentation_equals_the_whole_episodes():
    from sim.training.augmentation import AugmentedCopy

    frames = np.random.default_rng(0).integers(0, 256, (45, 24, 32, 3), dtype=np.uint8)
    for kind in ("precision", "balanced", "speed"):
        copy = AugmentedCopy(kind, "e.h5", 1, 3)
        windows = list(copy.apply_windows((frames[i:i + 7] for i in range(0, 45, 7)), 45))
        np.testing.assert_array_equal(np.concatenate(windows), copy.apply(frames))


def test_the_lerobot_export_reads_an_episode_by_windows(tmp_path, image_reads):
    from sim.data.generation import export_lerobot

    folder = tmp_path / "data"
    folder.mkdir()
    blank_episode(folder / "episode_20251203_182233_1box_hori_left_core_far.h5")
    root = export_lerobot(folder, fps=6)
    assert (root / "meta" / "info.json").is_file()
    assert max(image_reads) <= h5format.FRAME_WINDOW
    import pyarrow.parquet as pq

    table = pq.read_table(next((root / "data").rglob("*.parquet")))
    assert table.num_rows == BLANK_FRAMES
