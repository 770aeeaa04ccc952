"""Shared helpers for the VLA tests (imported explicitly by ``tests/test_vla_*.py``; not a conftest plugin).

- :func:`observation`: a random observation dict as the environment produces it;
- :class:`StubBackbone`: a deterministic, counting backbone whose feature of a frame is its constant pixel
  value, so tests can tell frames apart in the window a head receives;
- :class:`ScriptedHead`: a head returning scripted chunks (call ``n`` -> ``chunks[n]``) and recording its
  inputs, for hand-checkable execution-mode tests.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from policies.backbones.base import Backbone
from policies.heads.base import ActionHead, HeadConfig

INSTRUCTION = "Navigate around obstacles and reach the front of the beverage bottle on the left"


def observation(seed: int = 0, size: tuple[int, int] = (224, 224), instruction: str = INSTRUCTION) -> dict:
    """``{"image": uint8 (H, W, 3) RGB random, "instruction": str, "state": float32 (6,)}``."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (*size, 3), dtype=np.uint8),
        "instruction": instruction,
        "state": rng.normal(size=6).astype(np.float32),
    }


def scene_image(size: int = 224) -> np.ndarray:
    """A smooth synthetic scene, uint8 ``(size, size, 3)``: sky/floor gradient, a brown box, a blue bottle."""
    v = np.linspace(0.0, 1.0, size)[:, None]
    img = np.empty((size, size, 3))
    img[..., 0] = 90 + 120 * v
    img[..., 1] = 120 + 60 * v
    img[..., 2] = 200 - 120 * v
    s = size / 224
    img[int(110 * s):int(170 * s), int(60 * s):int(130 * s)] = (140, 90, 40)   # box
    img[int(70 * s):int(150 * s), int(160 * s):int(180 * s)] = (30, 60, 200)   # bottle
    return np.clip(img, 0, 255).astype(np.uint8)


def flat_observation(value: int, instruction: str = INSTRUCTION) -> dict:
    """An observation whose image is the constant ``value`` (so :class:`StubBackbone` encodes it as ``value``)."""
    return {"image": np.full((8, 8, 3), value, dtype=np.uint8), "instruction": instruction,
            "state": np.zeros(6, dtype=np.float32)}


class StubBackbone(Backbone):
    """``vision_dim = 1``: the frame's mean pixel value; ``text_dim = 2``: ``[len(text), 1]``. Counts calls."""

    name = "stub"
    vision_dim = 1
    text_dim = 2

    def __init__(self) -> None:
        super().__init__("cpu")
        self.image_calls: list[int] = []  # batch size of each _encode_images call
        self.text_calls: list[list[str]] = []

    def _encode_images(self, images: np.ndarray) -> torch.Tensor:
        self.image_calls.append(len(images))
        return torch.from_numpy(images.reshape(len(images), -1).mean(1, dtype=np.float64)).float()[:, None]

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        self.text_calls.append(list(texts))
        return torch.tensor([[float(len(t)), 1.0] for t in texts])


@dataclasses.dataclass
class ScriptedConfig(HeadConfig):
    """Stub config: 1-d vision, 2-d text, window 8, chunk 3."""

    vision_dim: int = 1
    text_dim: int = 2
    window_size: int = 8
    chunk_size: int = 3


class ScriptedHead(ActionHead):
    """Returns ``chunks[n]`` on its ``n``-th call (the last one repeated); records the windows it sees."""

    head_name = "scripted"
    config_class = ScriptedConfig

    def __init__(self, chunks: list[list[list[float]]] | np.ndarray, config: ScriptedConfig | None = None) -> None:
        chunks_arr = np.asarray(chunks, dtype=np.float32)
        cfg = config or ScriptedConfig(chunk_size=chunks_arr.shape[1], action_dim=chunks_arr.shape[2])
        super().__init__(cfg)
        self.chunks = torch.from_numpy(chunks_arr)
        self.windows: list[list[float]] = []
        self.texts: list[list[float]] = []

    def _forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        self.windows.append(vision[0, :, 0].tolist())
        self.texts.append(text[0].tolist())
        n = min(len(self.windows) - 1, len(self.chunks) - 1)
        raw = self.chunks[n]
        if self.action_dim == 3:  # undo the z-axis weight the base class applies, so outputs are as scripted
            raw = raw / self.z_axis_weight
        return raw.reshape(1, -1)

    @property
    def calls(self) -> int:
        """Number of forward passes so far."""
        return len(self.windows)


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Run torch single-threaded for the module, then restore the previous setting.

    On a busy 2-core machine (pybullet, other workers) torch's two OpenMP threads wait on each other and a
    step gets ~10x slower; one thread keeps the suite fast and its timing stable.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ driving a policy unbatched, batched, by clients
def unbatched(policy, script: list[dict]) -> np.ndarray:
    """``(steps, action_dim)`` actions of one environment's observations, one ``act`` each after ``reset``."""
    policy.reset(script[0]["instruction"])
    return np.stack([policy.act(obs) for obs in script])


def batched(policy, obs_scripts: list[list[dict]]) -> np.ndarray:
    """``(envs, steps, 3)`` actions: every live environment in one ``act_batch`` per step, environment ``k``
    starting ``k`` steps late (windows of different lengths and instructions meet in one batch); each runs its
    script's steps (all scripts equally long)."""
    steps = len(obs_scripts[0])
    episodes = [policy.new_episode() for _ in obs_scripts]
    actions = np.zeros((len(obs_scripts), steps, 3), np.float32)
    for t in range(steps + len(obs_scripts)):
        live = [k for k in range(len(obs_scripts)) if 0 <= t - k < steps]
        for k in live:
            if t == k:
                policy.start_episode(episodes[k], obs_scripts[k][0]["instruction"])
        out = policy.act_batch([episodes[k] for k in live], [obs_scripts[k][t - k] for k in live])
        for k, action in zip(live, out):
            actions[k, t - k, :len(action)] = action
    return actions


def drive_clients(address, scripts_: list[list[dict]], name: str) -> list[np.ndarray]:
    """Each environment's script run by its own thread through its own connection to the batched policy server at
    ``address`` (policy ``name``): the server batches them. Returns each one's :func:`unbatched` actions."""
    from policies.batching import BatchedPolicyClient, ServerLink

    results: list[np.ndarray | None] = [None] * len(scripts_)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            results[k] = unbatched(BatchedPolicyClient(ServerLink(address), name), scripts_[k])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(scripts_))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results
