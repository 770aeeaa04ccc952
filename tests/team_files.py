"""Checkpoint files in the team's exact formats, and a backbone stand-in at the real feature widths.

``tests/team_checkpoints.json`` holds, per team model, the facts of ``../shared/reference/team_models``:
their checkpoint's dict keys, ``model_config``, frozen-model prefixes and every head parameter's name and shape.
:func:`write_team_checkpoint` writes random tensors of those names and shapes under those keys, as their
training scripts save them (``torch.save`` dicts; Lightning ``.ckpt`` for RoboVLMs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.backbones.base import Backbone

TEAM: dict[str, dict[str, Any]] = json.loads((Path(__file__).parent / "team_checkpoints.json").read_text())
#: The streams and widths of the team's real backbones (Kosmos-2, open_clip ViT-B-32, CLIP text).
REAL_WIDTHS = {"image": 1024, "text": 2048, "multimodal": 2048, "action_token": 2048, "clip_image": 512,
               "clip_text": 512}


def team_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the team's head parameter names and shapes (``model.`` prefixed for RoboVLMs)."""
    gen = torch.Generator().manual_seed(seed)
    return {key: torch.randn(*shape, generator=gen) * 0.05 for key, shape in TEAM[name]["head_state_dict"].items()}


def write_team_checkpoint(path: Path, name: str, *, frozen: dict[str, dict[str, torch.Tensor]] | None = None,
                          seed: int = 0, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write model ``name``'s checkpoint as the team's trainer does; ``frozen`` = prefix -> tensors of a frozen
    model to embed (``{"kosmos.": {...}}``); ``state`` replaces the random head tensors."""
    info = TEAM[name]
    head = dict(state if state is not None else team_state(name, seed))
    for prefix, tensors in (frozen or {}).items():
        head.update({prefix + k: v for k, v in tensors.items()})
    optimizer = {"state": {}, "param_groups": [{"lr": 5e-5, "weight_decay": 1e-3, "params": [0, 1, 2]}]}
    values: dict[str, Any] = {
        "epoch": 7, "model_state_dict": head, "optimizer_state_dict": optimizer,
        "scheduler_state_dict": {"last_epoch": 7, "T_max": 100}, "loss": 0.0131, "mae": np.float64(0.466),
        "model_config": info["model_config"], "val_loss": 0.2281, "val_mae": np.float64(0.3044), "train_loss": 0.295,
        "state_dict": head,
    }
    obj = {key: values[key] for key in info["checkpoint_dict_keys"]}
    if name.startswith("robovlms"):  # a Lightning .ckpt: the LightningModule's keys and bookkeeping
        obj.update({"epoch": 6, "global_step": 1510, "pytorch-lightning_version": "2.4.0",
                    "optimizer_states": [optimizer], "lr_schedulers": [{"last_epoch": 6}],
                    "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.067)}}})
    torch.save(obj, path)
    return path


def write_simple_lstm_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """The "Simple LSTM" / "Simple CLIP-LSTM" scripts' file: their ``args`` stored as an ``argparse.Namespace``."""
    torch.save({"epoch": 15, "model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []},
                "val_mae": 0.2469, "args": argparse.Namespace(data_path="mobile_vla_dataset", lr=1e-4, epochs=15,
                                                              window_size=8, hidden_size=512)}, path)
    return path


class StandInBackbone(Backbone):
    """Deterministic features at the real widths: a frame's per-channel means (and the instruction's hash, for the
    instruction-dependent streams) through fixed random projections. Nothing meaningful, but every stream has the
    team's width and different frames give different features."""

    name = "stand-in"

    def __init__(self, widths: dict[str, int] | None = None) -> None:
        super().__init__("cpu")
        self.widths = dict(widths or REAL_WIDTHS)
        gen = torch.Generator().manual_seed(11)
        self.proj = {s: torch.randn(4, w, generator=gen) for s, w in self.widths.items()}

    def stream_dims(self) -> dict[str, int]:
        return dict(self.widths)

    @staticmethod
    def _code(text: str) -> float:
        return int(hashlib.sha1(text.encode()).hexdigest()[:6], 16) / 0xFFFFFF

    def _encode_frames(self, images, streams, instruction):
        means = torch.from_numpy(images.reshape(len(images), -1, 3).mean(1) / 255.0).float()
        code = torch.full((len(images), 1), self._code(instruction or ""))
        x = torch.cat([means, code], 1)
        return {s: torch.tanh(x @ self.proj[s]) for s in streams}

    def _encode_instruction(self, stream, texts):
        x = torch.tensor([[self._code(t), 0.5, 0.25, 1.0] for t in texts])
        return torch.tanh(x @ self.proj[stream])
