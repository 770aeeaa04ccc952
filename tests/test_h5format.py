"""The H5 format module: collector files pass, the writer follows the spec, every kind of bad file is named."""

from __future__ import annotations

import zlib
from datetime import datetime

import h5py
import numpy as np
import pytest

from sim.data import h5format
from sim.data.h5format import InvalidEpisodeError, check_episode, validate_episode

KEYS = ["q", "q", "w", "w", "w", "e", "SPACE"]
LABELS = {"w": (1.15, 0, 0), "q": (1.15, 1.15, 0), "e": (1.15, -1.15, 0), "SPACE": (0, 0, 0)}


def collector_file(path, hw=(720, 1280), keys=KEYS, instruction=None):
    """An episode written the way the robot's collector does (raw h5py, auto chunks, gzip, BGR)."""
    n = len(keys) + 1
    images = np.zeros((n, *hw, 3), np.uint8)
    images[..., 0] = 200  # blue channel first: BGR
    images[:, :, :10, 2] = np.arange(n, dtype=np.uint8)[:, None, None]
    actions = np.array([(0, 0, 0)] + [LABELS[k] for k in keys], np.float32)
    events = ["episode_start"] + ["stop_action" if k == "SPACE" else "start_action" for k in keys]
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, compression="gzip")
        f.create_dataset("actions", data=actions, compression="gzip")
        f.create_dataset("action_event_types", data=events, dtype=h5py.string_dtype())
        if instruction is not None:
            f.create_dataset("language_instruction", data=np.array([instruction.encode()], dtype="S256"))
        f.attrs.update({
            "episode_name": path.stem, "total_duration": 0.4 * len(keys) + 1.3, "num_frames": n,
            "action_chunk_size": 8, "obstacle_layout_type": "hori", "time_period": "evening",
            "collection_datetime": "2025-12-03T18:22:33", "collection_hour": 18, "collection_minute": 22,
        })
    return path


ROBOT_NAME = "episode_20251203_182233_1box_hori_left_core_medium.h5"


def test_collector_file_passes_structural_check(tmp_path):
    path = collector_file(tmp_path / ROBOT_NAME, hw=(72, 128))
    assert check_episode(path) == []
    assert check_episode(path, image_hw=h5format.ROBOT_IMAGE_HW) != []  # size check is opt-in and works
    strict = check_episode(path, strict=True)
    assert any("language_instruction" in p for p in strict), strict  # real files may lack it; synthetic may not


def test_real_720p_collector_file(tmp_path):
    path = collector_file(tmp_path / ROBOT_NAME, keys=KEYS[:3] + ["SPACE"])
    assert check_episode(path, image_hw=(720, 1280)) == []
    info = h5format.read_info(path)
    assert info.image_hw == (720, 1280) and info.num_frames == 5 and not info.has_instruction
    assert info.layout == "1box_hori_left" and info.distance == "medium" and info.kind == "core"


def _write(path, n=4, hw=(8, 10), instruction="Navigate to the cup", **kw):
    when = datetime(2025, 12, 3, 9, 5, 7)
    actions = np.zeros((n, 3), np.float32)
    actions[1:-1, 0] = 1.15
    events = ["episode_start"] + ["start_action"] * (n - 2) + ["stop_action"]
    attrs = h5format.collector_attributes(path.stem, 0.6 * (n - 1), n, "vert", "morning", when)
    imgs = np.random.default_rng(0).integers(0, 255, (n, *hw, 3), dtype=np.uint8)
    return h5format.write_episode(path, imgs, actions, events, attrs, instruction=instruction, **kw), imgs


def test_writer_follows_the_spec_exactly(tmp_path):
    path, imgs = _write(tmp_path / "episode_20251203_090507_2box_vert_right_variant_far.h5",
                        extra_attrs={"sim_params": {"a": [1, 2]}})
    assert check_episode(path, strict=True) == []
    with h5py.File(path) as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (4, 8, 10, 3)
        assert f["images"].compression == "gzip" and f["actions"].compression == "gzip"
        assert f["actions"].dtype == np.float32 and f["actions"].shape == (4, 3)
        s = h5py.check_string_dtype(f["action_event_types"].dtype)
        assert s.encoding == "utf-8" and s.length is None
        assert f["language_instruction"].dtype == np.dtype("S256") and f["language_instruction"].shape == (1,)
        assert f["language_instruction"][0].decode() == "Navigate to the cup"
        assert set(h5format.REQUIRED_ATTRS) <= set(f.attrs)
        assert f.attrs["num_frames"] == 4 and f.attrs["action_chunk_size"] == 8
        assert f.attrs["collection_hour"] == 9 and f.attrs["collection_minute"] == 5
        assert f.attrs["sim_params"] == '{"a": [1, 2]}'
        np.testing.assert_array_equal(f["images"][()], imgs)
    np.testing.assert_array_equal(h5format.read_episode_frames(path), imgs[..., ::-1])


def test_writer_is_byte_deterministic_and_atomic(tmp_path):
    a, _ = _write(tmp_path / "a" / "episode_20251203_090507_2box_vert_right_core_far.h5")
    b, _ = _write(tmp_path / "b" / "episode_20251203_090507_2box_vert_right_core_far.h5")
    assert a.read_bytes() == b.read_bytes()
    # Bad input: nothing written, the existing file untouched, no temp file left.
    before = a.read_bytes()
    with pytest.raises(ValueError, match="num_frames"):
        attrs = h5format.collector_attributes("x", 1.0, 5, "vert", "morning", datetime(2025, 1, 1))
        h5format.write_episode(a, np.zeros((4, 2, 2, 3), np.uint8), np.zeros((4, 3)), ["start_action"] * 4, attrs)
    assert a.read_bytes() == before
    assert sorted(p.name for p in a.parent.iterdir()) == [a.name]


def test_instruction_too_long_is_rejected():
    with pytest.raises(ValueError, match="256"):
        h5format.encode_instruction("x" * 257)
    assert h5format.decode_instruction(h5format.encode_instruction("café")) == "café"


def test_filename_helpers():
    name = h5format.episode_filename(datetime(2025, 12, 3, 18, 22, 33), "2box_vert_right", "variant", "far")
    assert name == "episode_20251203_182233_2box_vert_right_variant_far.h5"
    fields = h5format.parse_filename(name)
    assert fields["layout"] == "2box_vert_right" and fields["kind"] == "variant" and fields["side"] == "right"
    assert h5format.parse_filename("other.h5") is None
    basket = h5format.episode_filename(datetime(2026, 1, 12, 10, 15), "1box_hori_left", "core", "close", "basket")
    assert basket == "episode_20260112_101500_basket_1box_hori_left_core_close.h5"
    assert h5format.parse_filename(basket)["family"] == "basket" and fields["family"] == "cup"
    with pytest.raises(ValueError):
        h5format.episode_filename(datetime(2025, 1, 1), "3box_diag_left", "core", "far")
    assert h5format.instruction_from_filename(name).endswith("beverage bottle on the right")
    assert h5format.instruction_from_filename("episode_x_1box_hori_left_core.h5").endswith("on the left")
    assert "left" not in h5format.instruction_from_filename("episode_x.h5")


# ------------------------------------------------------------------------------------------ bad files
def _drop(key):
    def edit(f):
        del f[key]
    return edit


def _replace(key, data, **kw):
    def edit(f):
        del f[key]
        f.create_dataset(key, data=data, **kw)
    return edit


def _attr(key, value=None):
    def edit(f):
        if value is None:
            del f.attrs[key]
        else:
            f.attrs[key] = value
    return edit


BAD_EDITS = {
    "missing images": (_drop("images"), "missing dataset 'images'"),
    "missing actions": (_drop("actions"), "missing dataset 'actions'"),
    "missing events": (_drop("action_event_types"), "missing dataset 'action_event_types'"),
    "actions float64": (_replace("actions", np.zeros((4, 3)), compression="gzip"), "dtype float64"),
    "images float32": (_replace("images", np.zeros((4, 8, 10, 3), np.float32), compression="gzip"), "dtype float32"),
    "actions (N,2)": (_replace("actions", np.zeros((4, 2), np.float32), compression="gzip"), "shape (4, 2)"),
    "images gray": (_replace("images", np.zeros((4, 8, 10), np.uint8), compression="gzip"), "shape (4, 8, 10)"),
    "frames disagree": (_replace("actions", np.zeros((3, 3), np.float32), compression="gzip"), "disagree"),
    "images uncompressed": (_replace("images", np.zeros((4, 8, 10, 3), np.uint8)), "not gzip"),
    "events fixed-length": (_replace("action_event_types", np.array([b"episode_start"] * 4)), "action_event_types"),
    "unknown event": (_replace("action_event_types", ["episode_start", "jump", "jump", "stop_action"],
                               dtype=h5py.string_dtype()), "unknown action_event_types"),
    "instruction S64": (_replace("language_instruction", np.array([b"go"], dtype="S64")), "S256"),
    "missing attribute": (_attr("time_period"), "missing attribute 'time_period'"),
    "num_frames wrong": (_attr("num_frames", 7), "num_frames = 7"),
    "attribute wrong type": (_attr("collection_hour", "nine"), "collection_hour"),
}


@pytest.mark.parametrize("case", sorted(BAD_EDITS))
def test_bad_file_is_named_with_its_problem(tmp_path, case):
    edit, expected = BAD_EDITS[case]
    path, _ = _write(tmp_path / "episode_20251203_090507_2box_vert_right_core_far.h5")
    with h5py.File(path, "a") as f:
        edit(f)
    with pytest.raises(InvalidEpisodeError) as err:
        validate_episode(path)
    assert isinstance(err.value, ValueError)
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)
    assert err.value.path == path and err.value.problems


def test_not_hdf5_and_truncated(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(InvalidEpisodeError, match="not an HDF5 file"):
        validate_episode(junk)
    path, _ = _write(tmp_path / "episode_20251203_090507_2box_vert_right_core_far.h5", hw=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InvalidEpisodeError, match="truncated|corrupt|unreadable") as err:
        validate_episode(path)
    assert path.name in str(err.value)


def test_strict_checks_labels_and_events(tmp_path):
    path, _ = _write(tmp_path / "episode_20251203_090507_2box_vert_right_core_far.h5")
    with h5py.File(path, "a") as f:
        f["actions"][1] = np.array([0.7, 0.0, 0.0], np.float32)
        f["actions"][0] = np.array([1.15, 0.0, 0.0], np.float32)
    assert check_episode(path) == []  # structure is fine
    problems = " ".join(check_episode(path, strict=True))
    assert "not key labels" in problems and "frame 0 must be episode_start" in problems


def test_frames_compressed_beforehand_give_the_same_file(tmp_path):
    """``FrameEncoder`` (RGB in, BGR chunks compressed in a thread) + ``write_episode``: the bytes ``write_episode``
    writes from the frames, for noise (deflate expands it), flat and repeated frames, in any key order; HDF5's gzip
    filter (h5py) and zlib decode the chunks to the frames."""
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 255, (8, 10, 3), dtype=np.uint8)
    flat = np.full((8, 10, 3), 7, np.uint8)
    smooth = np.repeat(np.arange(80, dtype=np.uint8).reshape(8, 10, 1), 3, axis=2)
    frames_rgb = [noise, noise, flat, smooth, smooth.copy()]
    n = len(frames_rgb)
    actions = np.zeros((n, 3), np.float32)
    events = ["episode_start"] + ["start_action"] * (n - 2) + ["stop_action"]
    attrs = h5format.collector_attributes("e", 1.0, n, "vert", "morning", datetime(2025, 12, 3, 9, 5, 7))
    name = "episode_20251203_090507_2box_vert_right_core_far.h5"
    a = h5format.write_episode(tmp_path / "a" / name, np.stack(frames_rgb)[..., ::-1], actions, events, attrs)
    with h5format.FrameEncoder() as enc:
        for i in (4, 0, 1, 2, 3):  # added in any order; frame 1 is frame 0's object: its chunk is reused
            enc.add(i, frames_rgb[i])
        encoded = enc.frames(range(n))
    assert encoded.shape == (n, 8, 10, 3) and encoded.chunks[0] is encoded.chunks[1]
    assert len(encoded.chunks[0]) > noise.nbytes  # incompressible: stored expanded, as the filter does
    b = h5format.write_episode(tmp_path / "b" / name, encoded, actions, events, attrs)
    assert a.read_bytes() == b.read_bytes()
    assert check_episode(b) == []
    np.testing.assert_array_equal(h5format.read_episode_frames(b), np.stack(frames_rgb))
    with h5py.File(b) as f:  # h5py's own filter pipeline, and plain zlib on the raw chunk
        np.testing.assert_array_equal(f["images"][()], np.stack(frames_rgb)[..., ::-1])
        raw = f["images"].id.read_direct_chunk((3, 0, 0, 0))[1]
    assert zlib.decompress(raw) == np.ascontiguousarray(smooth[..., ::-1]).tobytes()
    with pytest.raises(ValueError, match="gzip level"):
        h5format.write_episode(tmp_path / "c" / name, encoded, actions, events, attrs, gzip_level=5)
    with pytest.raises(ValueError, match="uint8"), h5format.FrameEncoder() as enc:
        enc.add(0, noise.astype(np.float32))
