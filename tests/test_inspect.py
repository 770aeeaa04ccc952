"""``python -m sim.inspect``: summary, JSON, comparison with the real statistics, exit codes."""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import h5py
import numpy as np
import pytest

from sim import inspect as insp
from sim.data import h5format

KEYS = {"w": (1.15, 0, 0), "q": (1.15, 1.15, 0), "e": (1.15, -1.15, 0), "d": (0, -1.15, 0)}


def _episode(folder, name, keys, hw=(16, 24)):
    n = len(keys) + 2
    actions = np.array([(0, 0, 0)] + [KEYS[k] for k in keys] + [(0, 0, 0)], np.float32)
    events = ["episode_start"] + ["start_action"] * len(keys) + ["stop_action"]
    attrs = h5format.collector_attributes(name[:-3], 0.6 * (n - 1), n, name.split("_")[4], "night",
                                          datetime(2025, 12, 1, 22))
    return h5format.write_episode(folder / name, np.zeros((n, *hw, 3), np.uint8), actions, events, attrs,
                                  instruction="Navigate to the cup")


@pytest.fixture()
def folder(tmp_path):
    _episode(tmp_path, "episode_20251201_220000_1box_hori_left_core_medium.h5", list("qqwwwe"))
    _episode(tmp_path, "episode_20251201_220001_2box_vert_right_variant_far.h5", list("ewwdwq"))
    _episode(tmp_path, "episode_20251201_220002_1box_hori_left_core_close.h5", list("qwwe"), hw=(32, 32))
    return tmp_path


def test_summary_counts_and_statistics(folder, capsys):
    assert insp.main([str(folder)]) == 0
    text = capsys.readouterr().out
    assert "3 files, 3 valid, 0 invalid; 22 frames" in text
    assert "1box_hori_left 2" in text and "2box_vert_right 1" in text
    assert "close 1" in text and "far 1" in text and "core 2" in text and "variant 1" in text
    assert "1.022" in text and "0.878" in text  # the real statistics are printed alongside
    assert "24x16 2" not in text and "'24x16': 2" in text and "'32x32': 1" in text


def test_json_report_matches_the_data(folder, capsys):
    assert insp.main([str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    s = report["statistics"]
    acts = np.concatenate([h5format.read_actions(p)[0] for p in sorted(folder.glob("*.h5"))])
    assert s["num_frames"] == len(acts) == 22
    assert s["actions"]["linear_x"]["mean"] == pytest.approx(acts[:, 0].mean())
    assert s["actions"]["linear_y"]["std"] == pytest.approx(acts[:, 1].std())
    assert s["key_histogram"] == {"SPACE": 3, "d": 1, "e": 3, "q": 4, "w": 8}
    assert s["frames_per_episode"] == {"min": 6, "max": 8, "mean": pytest.approx(22 / 3),
                                       "histogram": {"6": 1, "8": 2}}
    cmp_x = report["comparison_with_real"]["linear_x"]
    assert cmp_x["real_mean"] == 1.022 and cmp_x["d_mean"] == pytest.approx(acts[:, 0].mean() - 1.022)


def test_invalid_files_are_listed_with_reasons_and_exit_1(folder, capsys):
    bad = folder / "episode_20251201_220003_1box_hori_left_core_far.h5"
    shutil.copy(folder / "episode_20251201_220000_1box_hori_left_core_medium.h5", bad)
    with h5py.File(bad, "a") as f:
        del f.attrs["collection_minute"]
    (folder / "broken.h5").write_bytes(b"\x89HDF\r\n" + b"0" * 50)
    assert insp.main([str(folder), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    reasons = {b["file"]: " ".join(b["problems"]) for b in report["invalid"]}
    assert "missing attribute 'collection_minute'" in reasons[bad.name]
    assert "HDF5" in reasons["broken.h5"]
    assert report["valid"] == 3 and report["statistics"]["num_episodes"] == 3
    assert insp.main([str(folder)]) == 1
    assert f"INVALID {bad.name}" in capsys.readouterr().out


def test_strict_mode_and_exit_codes(tmp_path, capsys):
    assert insp.main([str(tmp_path / "nope")]) == 2
    capsys.readouterr()
    assert insp.main([str(tmp_path)]) == 2  # no files at all: a bad argument, one line and no report
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == f"error: {tmp_path}: no .h5 files in this folder"
    name = "episode_20251201_220000_1box_hori_left_core_medium.h5"
    _episode(tmp_path, name, list("ww"))
    with h5py.File(tmp_path / name, "a") as f:
        f["actions"][1] = (0.5, 0, 0)
    assert insp.main([str(tmp_path)]) == 0
    assert insp.main([str(tmp_path), "--strict"]) == 1
    assert "not key labels" in capsys.readouterr().out
