"""Summarise and validate a folder of H5 episodes (``python -m sim.inspect DIR``).

Usage::

    python -m sim.inspect data/synth            # human-readable summary
    python -m sim.inspect data/synth --json     # the same as JSON
    python -m sim.inspect data/robot --strict   # also the synthetic-file checks (labels, names, instruction)

Prints the number of files and frames, episodes per layout / distance / core-variant, per-axis action
statistics next to the real dataset's (``ROBOT_AND_DATA.md`` section 3: linear_x mean 1.022 / std 0.361,
linear_y mean -0.032 / std 0.878, over every frame including the zero-action ``episode_start`` and
``stop_action`` frames), the key histogram, frames per episode, image sizes, and every invalid file with its
problems. Exit code: 0 all valid, 1 any invalid file (or none found), 2 bad usage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from envs.keys import action_to_key
from sim.data import h5format

#: Real robot dataset statistics (500 episodes), spec section 3: ``axis -> (mean, std)`` in label units.
REAL_STATISTICS = {"linear_x": (1.022, 0.361), "linear_y": (-0.032, 0.878)}
#: The V6 training set's class histogram (% of its 16,599 frames, injected stops included; EdgeGroundVLA
#: ``docs/RESEARCH_STATUS.md``, ``TEAM_STACK_2026.md`` section 1).
V6_CLASS_SHARES = {"STOP": 8.75, "FORWARD": 46.03, "LEFT": 4.31, "RIGHT": 5.17, "FWD+L": 15.25, "FWD+R": 18.78,
                   "ROT_L": 0.82, "ROT_R": 0.89}
AXES = ("linear_x", "linear_y", "angular_z")


def episode_files(folder: str | Path) -> list[Path]:
    """``*.h5`` files of ``folder`` (sorted, temp files excluded).

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    return sorted(p for p in folder.glob("*.h5") if not h5format.is_temp_file(p))


def dataset_statistics(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Statistics of valid episode files (call on validated files).

    Returns a JSON-serialisable dict: ``num_episodes``, ``num_frames``; ``episodes_per_layout`` /
    ``_per_distance`` / ``_per_kind`` (from the file names; ``"unknown"`` when the name has no such field) and
    ``episodes_per_layout_distance``; ``actions`` = per-axis ``mean``/``std``/``min``/``max`` over every frame
    (label units, as the real statistics); ``key_histogram`` over presses (``start_action`` and
    ``stop_action`` frames, key from :func:`envs.keys.action_to_key`); ``frames_per_episode`` (min, max, mean,
    histogram); ``image_sizes`` (``"WxH"`` -> episodes); ``image_bytes`` (``decompressed``: the frames' uint8 bytes,
    ``largest_episode``, ``on_disk``: the files' sizes); ``with_language_instruction``; for V6 files
    (:func:`sim.data.h5format.is_v6`) ``class_histogram`` over every frame (:func:`envs.actions.action_class`)
    beside the team's V6 shares (``v6_class_shares``, %).
    """
    from envs.actions import action_class

    per_layout, per_distance, per_kind, per_ld, sizes = Counter(), Counter(), Counter(), Counter(), Counter()
    keys, lengths, classes = Counter(), Counter(), Counter()
    all_actions = []
    with_instr = 0
    image_bytes, largest, disk_bytes = 0, 0, 0
    for p in paths:
        info = h5format.read_info(p)
        decompressed = info.num_frames * info.image_hw[0] * info.image_hw[1] * 3  # uint8 RGB
        image_bytes, largest = image_bytes + decompressed, max(largest, decompressed)
        disk_bytes += Path(p).stat().st_size
        actions, events = h5format.read_actions(p)
        layout = info.layout or "unknown"
        per_layout[layout] += 1
        per_distance[info.distance or "unknown"] += 1
        per_kind[info.kind or "unknown"] += 1
        per_ld[f"{layout}/{info.distance or 'unknown'}"] += 1
        sizes[f"{info.image_hw[1]}x{info.image_hw[0]}"] += 1
        lengths[info.num_frames] += 1
        with_instr += info.has_instruction
        all_actions.append(actions)
        if h5format.is_v6(info.attrs):
            classes.update(action_class(a) for a in actions)
            continue
        for a, e in zip(actions, events):
            if e == h5format.EVENT_STOP:
                keys["SPACE"] += 1
            elif e == h5format.EVENT_PRESS:
                keys[action_to_key(a)] += 1
    n_eps = sum(per_layout.values())
    acts = np.concatenate(all_actions) if all_actions else np.zeros((0, 3), np.float32)
    action_stats = {
        axis: ({"mean": float(acts[:, i].mean()), "std": float(acts[:, i].std()),
                "min": float(acts[:, i].min()), "max": float(acts[:, i].max())} if len(acts) else None)
        for i, axis in enumerate(AXES)
    }
    frame_counts = [n for n, c in lengths.items() for _ in range(c)]
    return {
        "num_episodes": n_eps,
        "num_frames": int(len(acts)),
        "episodes_per_layout": dict(sorted(per_layout.items())),
        "episodes_per_distance": dict(sorted(per_distance.items())),
        "episodes_per_kind": dict(sorted(per_kind.items())),
        "episodes_per_layout_distance": dict(sorted(per_ld.items())),
        "actions": action_stats,
        "key_histogram": dict(sorted(keys.items())),
        "frames_per_episode": {
            "min": min(frame_counts, default=0), "max": max(frame_counts, default=0),
            "mean": float(np.mean(frame_counts)) if frame_counts else 0.0,
            "histogram": {str(k): v for k, v in sorted(lengths.items())},
        },
        "image_sizes": dict(sorted(sizes.items())),
        "image_bytes": {"decompressed": int(image_bytes), "largest_episode": int(largest), "on_disk": int(disk_bytes)},
        **({"class_histogram": dict(classes), "v6_class_shares": V6_CLASS_SHARES} if classes else {}),
        "with_language_instruction": int(with_instr),
        "real_statistics": {axis: {"mean": m, "std": s} for axis, (m, s) in REAL_STATISTICS.items()},
    }


def compare_with_real(stats: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``axis -> {mean, std, real_mean, real_std, d_mean, d_std}`` for linear_x / linear_y."""
    out = {}
    for axis, (m, s) in REAL_STATISTICS.items():
        got = stats["actions"].get(axis)
        if got is None:
            continue
        out[axis] = {"mean": got["mean"], "std": got["std"], "real_mean": m, "real_std": s,
                     "d_mean": got["mean"] - m, "d_std": got["std"] - s}
    return out


def inspect_folder(folder: str | Path, strict: bool = False) -> dict[str, Any]:
    """Validate every ``*.h5`` file of ``folder`` and summarise the valid ones.

    Returns ``{"folder", "files", "valid", "invalid": [{"file", "problems"}], "statistics",
    "comparison_with_real"}``.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
    """
    paths = episode_files(folder)
    valid, invalid = [], []
    for p in paths:
        problems = h5format.check_episode(p, strict=strict)
        if problems:
            invalid.append({"file": p.name, "problems": problems})
        else:
            valid.append(p)
    stats = dataset_statistics(valid)
    return {"folder": str(folder), "files": len(paths), "valid": len(valid), "invalid": invalid,
            "statistics": stats, "comparison_with_real": compare_with_real(stats)}


def _mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text of :func:`inspect_folder`'s result."""
    s = report["statistics"]
    lines = [f"{report['folder']}: {report['files']} files, {report['valid']} valid, "
             f"{len(report['invalid'])} invalid; {s['num_frames']} frames"]
    fpe = s["frames_per_episode"]
    lines.append(f"frames per episode: min {fpe['min']}, mean {fpe['mean']:.1f}, max {fpe['max']}  "
                 f"histogram {fpe['histogram']}")
    lines.append(f"image sizes (WxH): {s['image_sizes']}; with language_instruction: "
                 f"{s['with_language_instruction']}/{s['num_episodes']}")
    size = s["image_bytes"]
    lines.append(f"images decompressed: {_mib(size['decompressed'])} (largest episode {_mib(size['largest_episode'])}); "
                 f"files on disk: {_mib(size['on_disk'])}; read by windows of {h5format.FRAME_WINDOW} frames")
    for title, key in (("layouts", "episodes_per_layout"), ("distances", "episodes_per_distance"),
                       ("core/variant", "episodes_per_kind")):
        lines.append(f"{title}: " + ", ".join(f"{k} {v}" for k, v in s[key].items()))
    lines.append("actions (label units, all frames):")
    lines.append(f"  {'axis':<10} {'mean':>8} {'std':>8} {'real mean':>10} {'real std':>9}")
    for axis in AXES:
        a = s["actions"][axis]
        if a is None:
            continue
        m, sd = REAL_STATISTICS.get(axis, (None, None))
        real_txt = f"{m:>10.3f} {sd:>9.3f}" if m is not None else f"{'-':>10} {'-':>9}"
        lines.append(f"  {axis:<10} {a['mean']:>8.3f} {a['std']:>8.3f} {real_txt}")
    if s["key_histogram"]:
        lines.append("keys: " + ", ".join(f"{k} {v}" for k, v in s["key_histogram"].items()))
    if "class_histogram" in s:
        total = sum(s["class_histogram"].values())
        lines.append("classes (V6 files, % of frames; the team's V6 data in brackets): " + ", ".join(
            f"{name} {100 * s['class_histogram'].get(name, 0) / total:.1f} ({share:g})"
            for name, share in s["v6_class_shares"].items()))
    for bad in report["invalid"]:
        lines.append(f"INVALID {bad['file']}: " + "; ".join(bad["problems"]))
    return "\n".join(lines)
