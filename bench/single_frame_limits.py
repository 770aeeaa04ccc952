"""What the team's single-frame heads can and cannot learn from H5 episodes, in numbers (README: "Why case1, case2
and case3 fail").

``python bench/single_frame_limits.py --data data/pretrain [--data REAL_DIR ...]``

1. **Labels**: the share of each key among the training labels (``actions[:, :2]`` clamped to [-1, 1], as the
   team's loaders do).
2. **The final ``LayerNorm(2)``** of ``case1``, ``case1-v1``, ``case2``, ``case3``: over two values it outputs
   ``(s, -s) * gamma + beta`` with ``|s| <= 1``, so every action of a trained head lies on one fixed line
   segment, whatever the image or instruction. Printed: the label points that share a line (at most three of the
   six key labels do), the largest share of labels any one line holds, and the lowest MAE any such head can reach
   (a search over segments, each label at its nearest point).
3. **The first frame**: how often an episode's frames 0 and 1 show (nearly) the same image with two different
   labels (the collector's ``episode_start`` zero, then the first press): a single-frame head sees one input with
   two targets.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.data import h5format  # noqa: E402
from sim.data.dataset import list_episode_files  # noqa: E402

KEYS = {(1, 0): "w", (0, 1): "a", (0, -1): "d", (1, 1): "q", (1, -1): "e", (0, 0): "stop", (-1, 0): "s",
        (-1, 1): "z", (-1, -1): "c"}


def segment_mae(labels: np.ndarray, gamma: np.ndarray, beta: np.ndarray, grid: np.ndarray) -> float:
    """Mean absolute error (over both axes) of the best point of the segment ``beta + s * (g0, -g1)`` per label."""
    points = beta[None, :] + grid[:, None] * np.array([gamma[0], -gamma[1]])[None, :]  # (S, 2)
    err = np.abs(labels[:, None, :] - points[None, :, :]).mean(-1)  # (N, S)
    return float(err.min(1).mean())


def best_segment(labels: np.ndarray, seed: int = 0, iters: int = 3000) -> tuple[float, np.ndarray, np.ndarray]:
    """Random search (then local refinement) for the segment with the lowest MAE: ``(mae, gamma, beta)``."""
    rng = np.random.default_rng(seed)
    uniq, counts = np.unique(labels, axis=0, return_counts=True)
    weights = counts / counts.sum()
    grid = np.linspace(-1, 1, 201)

    def cost(g, b):
        points = b[None, :] + grid[:, None] * np.array([g[0], -g[1]])[None, :]
        return float((np.abs(uniq[:, None, :] - points[None]).mean(-1).min(1) * weights).sum())

    best = (np.inf, np.zeros(2), np.zeros(2))
    for _ in range(iters):
        g, b = rng.uniform(-1.2, 1.2, 2), rng.uniform(-1.2, 1.2, 2)
        c = cost(g, b)
        if c < best[0]:
            best = (c, g, b)
    for scale in (0.1, 0.03, 0.01):
        for _ in range(iters // 3):
            g, b = best[1] + rng.normal(0, scale, 2), best[2] + rng.normal(0, scale, 2)
            c = cost(g, b)
            if c < best[0]:
                best = (c, g, b)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="folder of H5 episodes (repeatable)")
    args = parser.parse_args(argv)
    files = [f for d in args.data for f in list_episode_files(d)]
    labels, same_image_two_labels, episodes = [], 0, 0
    for path in files:
        actions, _ = h5format.read_actions(path)
        acts = np.clip(actions[:, :2], -1.0, 1.0)
        labels.append(acts)
        frames = h5format.read_episode_frames(path, 0, 2) if len(acts) > 1 else None
        if frames is not None:
            episodes += 1
            diff = float(np.abs(frames[0].astype(np.int16) - frames[1].astype(np.int16)).mean())
            same_image_two_labels += diff < 2.0 and not np.allclose(acts[0], acts[1])
    labels = np.concatenate(labels).astype(np.float32)
    keyed = Counter(KEYS.get(tuple(int(round(v)) for v in row), "other") for row in labels)
    print(f"{len(files)} episodes, {len(labels)} labelled frames")
    print("labels: " + ", ".join(f"{k} {n / len(labels):.1%}" for k, n in keyed.most_common()))
    points = {name: np.array(p, np.float32) for p, name in KEYS.items() if keyed.get(name)}
    lines = []
    for a, b in itertools.combinations(points, 2):
        pa, pb = points[a], points[b]
        d = pb - pa
        on = [n for n, q in points.items() if abs(d[0] * (q - pa)[1] - d[1] * (q - pa)[0]) < 1e-6]
        lines.append((sum(keyed[n] for n in on) / len(labels), tuple(sorted(on))))
    lines = sorted(set(lines), reverse=True)
    print("LayerNorm(2) heads: every output lies on one line. Label points sharing a line, by share of labels: "
          + "; ".join(f"{'+'.join(names)} {share:.1%}" for share, names in lines[:4]))
    with_stop = [f"{'+'.join(names)} {share:.1%}" for share, names in lines if "stop" in names]
    print(f"  lines through the stop (success needs it): {'; '.join(with_stop) or 'none'}")
    mae, gamma, beta = best_segment(labels)
    print(f"lowest MAE any LayerNorm(2) head can reach on these labels: {mae:.3f} (segment beta "
          f"({beta[0]:.2f}, {beta[1]:.2f}), gamma ({gamma[0]:.2f}, {gamma[1]:.2f}))")
    print(f"first frame: {same_image_two_labels}/{episodes} episodes show frames 0 and 1 as (nearly) the same image "
          f"with two labels (episode_start zero, then the first press)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
