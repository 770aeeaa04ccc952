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


# ------------------------------------------------------------------------------------ audit regressions
def _one_line_exit_2(capsys, main, argv, named):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("error: ") and named in err.splitlines()[-1], err
    return err


def test_a_text_file_given_as_a_checkpoint_is_a_verdict_not_a_traceback(tmp_path, capsys):
    """Bytes that are no pickle made torch's weights-only unpickler raise KeyError (a memo miss): a traceback."""
    from policies.checkpoints import CheckpointFormatError, torch_load
    from sim import checkpoint as checkpoint_cli

    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(CheckpointFormatError, match="notes.txt"):
        torch_load(text)
    assert checkpoint_cli.main([str(text), "--json"]) == 1  # ran: the verdict is "does not load"
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and '"loads": false' in captured.out


@pytest.mark.parametrize("content", [b'{"a": ', b"", b"PK\x03\x04 cut short"])
def test_export_observations_that_are_no_npz_are_named(tmp_path, capsys, content):
    """A truncated JSON given as --observations: numpy's 'contains pickled data' ValueError, a traceback."""
    from sim import export as export_cli

    bad = tmp_path / "obs.json"
    bad.write_bytes(content)
    out = tmp_path / "onnx"
    _one_line_exit_2(capsys, export_cli.main, ["--policy", "lstm-recon", "--out", str(out), "--observations",
                                               str(bad)], "obs.json")
    assert not out.exists(), "no empty output folder left"


def test_an_output_path_of_the_wrong_kind_is_named_plainly(tmp_path, capsys):
    """``--out`` naming a file printed ``[Errno 17] File exists``; a PNG path naming a folder printed the temporary
    file's rename."""
    from sim import generate, preview

    afile = tmp_path / "file.txt"
    afile.write_text("x")
    _one_line_exit_2(capsys, generate.main, ["--out", str(afile), "--episodes", "1", "--image-size", "64x48"],
                     f"{afile} is a file, not a folder")
    from sim.cli import _error_line

    folder = tmp_path / "adir"
    folder.mkdir()
    assert _error_line(IsADirectoryError(21, "Is a directory", str(tmp_path / ".x.tmp"), None, str(folder))) == (
        f"{folder} is a folder, not a file: name a file")
    assert preview  # the command the rename case was found in (a 10 s render: exercised in the audit table)


def test_train_resume_without_a_state_is_refused_not_a_fresh_training(tmp_path, capsys):
    """A mistyped --out with --resume silently trained from scratch."""
    from sim import train as train_cli

    out = tmp_path / "ckpt-typo"
    _one_line_exit_2(capsys, train_cli.main, ["--policy", "lstm-recon", "--data", str(tmp_path), "--out", str(out),
                                              "--resume"], "--resume")
    assert not out.exists()


def test_train_bad_data_leaves_no_empty_output_folder(tmp_path, capsys):
    from sim import train as train_cli

    (tmp_path / "data").mkdir()
    out = tmp_path / "ckpt"
    _one_line_exit_2(capsys, train_cli.main, ["--policy", "lstm-recon", "--data", str(tmp_path / "data"), "--out",
                                              str(out), "--cache-dir", str(tmp_path / "cache")], "no .h5 episode files")
    assert not out.exists()


def test_model_source_flags_for_policies_that_load_no_model_are_refused(tmp_path, capsys):
    """``sim.eval --policy expert --key-map FILE`` ignored the flag (and never read the file)."""
    from sim import eval as sim_eval

    out = tmp_path / "run"
    _one_line_exit_2(capsys, sim_eval.main, ["--policy", "expert", "--key-map", str(tmp_path / "map.json"),
                                             "--out", str(out)], "--key-map applies to the policies that load")
    assert not out.exists()


def test_serve_on_a_host_that_does_not_resolve_says_so(capsys):
    """``--host 256.1.1.1`` printed 'cannot listen there (Unknown error -2); is another server running?'."""
    import sim.serve as serve

    err = _one_line_exit_2(capsys, serve.main, ["--policy", "random", "--host", "256.1.1.1", "--port", "0"],
                           "--host 256.1.1.1: not a valid address")
    assert "Unknown error" not in err


@pytest.mark.parametrize("content, named", [("[1]", "must be a JSON object, got a JSON list"),
                                            ('{"schema_version": 1, "rows": [5]}', "'rows' must be a list")])
def test_a_leaderboard_row_file_of_the_wrong_shape_is_named(tmp_path, capsys, content, named):
    """A row file holding a JSON list printed "AttributeError: 'list' object has no attribute 'get'"."""
    from sim import leaderboard
    from sim.evaluation.leaderboard import SCHEMA_VERSION

    run = tmp_path / "run"
    run.mkdir()
    (run / "leaderboard_row.json").write_text(content.replace('"schema_version": 1', f'"schema_version": '
                                                                                     f'{SCHEMA_VERSION}'))
    err = _one_line_exit_2(capsys, leaderboard.main, [str(run)], named)
    assert "AttributeError" not in err and "leaderboard_row.json" in err


def test_a_truncated_run_config_is_named_once(tmp_path, capsys):
    """``--resume`` of a run whose config.json is cut short named the file twice in one line."""
    from sim import eval as sim_eval

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"policies": ')
    err = _one_line_exit_2(capsys, sim_eval.main, ["--resume", str(run)], "not valid JSON")
    assert err.count("config.json") == 1, err


def test_offline_with_a_policy_that_cannot_act_on_real_frames_leaves_no_folder(tmp_path, capsys):
    """``sim.offline --policy expert`` failed on the first frame but left its (empty) run folder behind."""
    from sim import offline
    from tests.test_robustness import NAMES, _episode

    data = tmp_path / "data"
    data.mkdir()
    _episode(data / NAMES[0])
    out = tmp_path / "offline"
    _one_line_exit_2(capsys, offline.main, ["--policy", "expert", "--data", str(data), "--out", str(out),
                                            "--no-twins", "--no-progress"], "cannot act on real frames")
    assert not out.exists()


def test_a_guide_file_with_an_unparsable_pattern_name_is_named(tmp_path, capsys):
    """``error: cannot parse pattern name 'p'`` did not say which of the files held it."""
    from sim import replay_patterns

    bad = tmp_path / "mine.json"
    bad.write_text('{"p": ["w", "SPACE"]}')
    _one_line_exit_2(capsys, replay_patterns.main, ["--patterns", str(bad)], "mine.json: cannot parse pattern name")
