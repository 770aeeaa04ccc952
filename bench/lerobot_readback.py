"""Read a ``sim.generate --format lerobot`` dataset back with the real ``lerobot`` and compare it, frame by frame,
with the H5 episodes it was made from. ``lerobot`` cannot be installed next to this project's torch (it pins
``torch<2.11``), so this runs in two interpreters:

    python bench/lerobot_readback.py truth data/corridor15            # this project's venv: writes truth.json
    /path/to/lerobot-venv/bin/python bench/lerobot_readback.py check data/corridor15

``truth`` hashes every frame (RGB bytes) and action of the folder's H5 files (in name order, as the export
writes them) into ``FOLDER/lerobot_truth.json``; ``check`` opens ``FOLDER/lerobot`` with
``lerobot.datasets.lerobot_dataset.LeRobotDataset`` and compares every item (frame, action, event type, task,
episode and frame indices) with it. A lerobot venv: ``python -m venv V && V/bin/pip install lerobot==0.4.4``
(it brings its own torch), plus Debian's ``ffmpeg`` for its video decoder.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def truth(folder: Path) -> None:
    from sim.data import h5format

    episodes = []
    for path in sorted(folder.glob("episode_*.h5")):
        frames = h5format.read_episode_frames(path)
        actions, events = h5format.read_actions(path)
        episodes.append({"file": path.name, "task": h5format.read_info(path).instruction,
                         "frames": [_digest(f) for f in frames], "actions": actions.tolist(), "events": events})
    (folder / "lerobot_truth.json").write_text(json.dumps(episodes))
    print(f"{folder}: {len(episodes)} episodes, {sum(len(e['frames']) for e in episodes)} frames hashed")


def check(folder: Path) -> None:
    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    expected = json.loads((folder / "lerobot_truth.json").read_text())
    dataset = LeRobotDataset("mobile_vla_sim/corridor", root=folder / "lerobot")
    flat = [(e, i) for e, ep in enumerate(expected) for i in range(len(ep["frames"]))]
    assert len(dataset) == len(flat), (len(dataset), len(flat))
    same_frames = same_actions = 0
    for index, (e, i) in enumerate(flat):
        item, ep = dataset[index], expected[e]
        image = item["observation.images.cam_front"]  # (3, H, W) float in [0, 1]
        frame = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        same_frames += _digest(frame) == ep["frames"][i]
        same_actions += np.array_equal(item["action"].numpy(), np.float32(ep["actions"][i]))
        assert int(item["episode_index"]) == e and int(item["frame_index"]) == i
        assert item["action.event_type"] == ep["events"][i] and item["task"] == ep["task"]
    print(f"lerobot {lerobot.__version__}: {len(dataset)} items in {dataset.num_episodes} episodes at "
          f"{dataset.fps} fps; frames identical {same_frames}/{len(flat)}, actions identical "
          f"{same_actions}/{len(flat)}; event types, tasks and indices equal for every item")
    if same_frames != len(flat) or same_actions != len(flat):
        raise SystemExit(1)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("truth", "check"):
        raise SystemExit(__doc__)
    {"truth": truth, "check": check}[sys.argv[1]](Path(sys.argv[2]))
