"""Training throughput: windows/s with the on-disk feature cache against encoding frames on the fly.

``python bench/train_throughput.py --data data/pretrain [--policy lstm-recon] [--episodes 20] [--batches 20]``

Both paths train the same head with the same optimizer on the same windows; "without the cache" runs the frozen
``lite`` backbone on every frame of every window in every batch, as a trainer without a cache would.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from sim.data import h5format
from sim.data.dataset import list_episode_files, load_episodes
from sim.training.supervised import FeatureCache, FeatureWindows, masked_huber


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--policy", default="lstm-recon", help="a head whose frame streams come from pixels alone")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from policies.vla import build_vla_policy

    vla = build_vla_policy(args.policy, use_bundled=False)
    head, bb = vla.head.train().requires_grad_(True), vla.backbone
    streams = head.frame_streams
    episodes = load_episodes(list_episode_files(args.data))[: args.episodes]
    frames = [h5format.read_episode_frames(ep.path) for ep in episodes]
    actions = [h5format.read_actions(ep.path)[0] for ep in episodes]
    text = [bb.encode_instruction([ep.instruction], head.instruction_streams)[0].numpy() for ep in episodes]
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-4)

    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp, bb, streams)
        start = time.perf_counter()
        vision = [cache.vision(ep.path, ep.instruction) for ep in episodes]
        fill = time.perf_counter() - start

    def run(windows: FeatureWindows, encode) -> float:
        loader = DataLoader(windows, batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
        seen, start = 0, time.perf_counter()
        for i, batch in enumerate(loader):
            if i == args.batches:
                break
            feats = encode(batch)
            loss = masked_huber(head(feats, batch["text"]), batch["actions"], batch["mask"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(feats)
        return seen / (time.perf_counter() - start)

    cached = FeatureWindows(vision, text, actions, head.window_size, head.chunk_size, head.action_dim)
    with_cache = run(cached, lambda batch: batch["vision"])

    # Without a cache: the same windows over raw frames (flattened uint8 rows), encoded in every batch.
    h, w = frames[0].shape[1:3]
    raw = FeatureWindows([f.reshape(len(f), -1) for f in frames], text, actions, head.window_size, head.chunk_size,
                         head.action_dim)

    def encode(batch: dict) -> torch.Tensor:
        pixels = batch["vision"]  # (B, window, H*W*3) uint8
        with torch.inference_mode():
            feats = bb.encode_frames(pixels.reshape(-1, h, w, 3).numpy(), streams)
        return feats.reshape(pixels.shape[0], pixels.shape[1], -1).clone()

    without_cache = run(raw, encode)
    print(f"{args.policy} on {bb.name}, window {head.window_size}, {args.batches} batches of {args.batch_size}")
    print(f"filling the cache: {sum(len(f) for f in frames) / fill:8.1f} frames/s (once per file)")
    print(f"with the cache:    {with_cache:8.1f} windows/s")
    print(f"without the cache: {without_cache:8.1f} windows/s")
    print(f"speed-up:          {with_cache / without_cache:8.1f}x")


if __name__ == "__main__":
    main()
