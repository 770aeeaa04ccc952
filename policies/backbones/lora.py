"""LoRA fine-tuning of a backbone's vision tower with ``peft`` (the team's LoRA run: seed ``001_*.txt``; their
config, ``minuum/vla`` ``Mobile_VLA/configs/finetune_mobile_vla_lora_20251106.json``: ``r=32, alpha=16,
dropout=0.1``, applied by RoboVLMs to every ``nn.Linear`` of the backbone via ``peft.get_peft_model``).

What is adapted here (our choice, stated): the **top** ``layers`` layers of the vision tower that gives the
``image`` stream, every ``nn.Linear`` / 1x1 ``nn.Conv2d`` in them:

- Kosmos-2 (``kosmos2``, ``tiny-kosmos2``): the last ``layers`` encoder layers of ``vision_model`` (``q/k/v/out_proj``,
  ``mlp.fc1/fc2``), then ``post_layernorm`` over the class token, as ``vision_model(...).pooler_output``;
- ``lite`` (EfficientNet-Lite0, convolutions only): the 1x1 head convolution counts as the top layer, the MBConv
  blocks below it as the next ones (their 1x1 expand / project convolutions; the depthwise convolutions stay
  frozen): ``layers = 1`` adapts the head convolution alone.

The instruction streams stay frozen (RoboVLMs also adapted the language model; here instruction features are
cached once per string). Everything below the adapted layers is frozen, so training caches its output once per
frame (:class:`ImageSplit`: ``top(trunk(frames))`` equals the frozen ``image`` stream until the adapters move).

A trained adapter travels in the head's checkpoint (:class:`LoraAdapter`, tensors under :data:`TENSOR_PREFIX`);
:func:`merge_lora` adds it into a freshly built backbone's weights (``W + B A * alpha / r``) and removes the
``peft`` wrappers, so the adapted backbone runs, exports and caches like any frozen one.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from foundations.errors import ConfigError

#: Prefix of the adapter's tensors inside a head checkpoint (``policies.checkpoints``).
TENSOR_PREFIX = "backbone_lora."


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """peft ``LoraConfig`` values and how many top layers of the vision tower get adapters.

    Attributes:
        r: rank of ``B A`` (32: the team's LoRA run, seed 001 / ``finetune_mobile_vla_lora_20251106.json``).
        alpha: ``lora_alpha``; the update is scaled by ``alpha / r`` (16: theirs).
        dropout: ``lora_dropout`` on the adapters' input during training (0.1: theirs).
        layers: top layers of the vision tower adapted (Kosmos-2 encoder layers; EfficientNet's head convolution,
            then its MBConv blocks); 1 by default, to keep CPU training affordable (theirs: every linear layer).
    """

    r: int = 32
    alpha: int = 16
    dropout: float = 0.1
    layers: int = 1

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 4096:
                raise ConfigError(f"LoRA {name} must be a whole number in [1, 4096], got {value!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "LoRA settings") -> LoraSettings:
        """Settings from a dict (a checkpoint sidecar, a spec file).

        Raises:
            ConfigError: an unknown key or a bad value, prefixed with ``where``.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: expected a table of LoRA settings, got {values!r}")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"{where}: unknown LoRA setting(s) {unknown}; known: r, alpha, dropout, layers")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (what :meth:`from_dict` reads back)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ImageSplit:
    """A backbone's ``image`` stream cut below its top layers.

    Attributes:
        root: the vision tower module that ``targets`` are named in (and that adapters are injected into).
        targets: full names (in ``root``) of the modules that get LoRA adapters.
        trunk: uint8 RGB ``(N, H, W, 3)`` -> the frozen activations entering the top layers, float32 CPU
            ``(N, ...)`` (computed without gradients; cacheable).
        top: those activations (float32, any device) -> the ``image`` feature ``(N, vision_dim)``, differentiable.
    """

    root: nn.Module
    targets: tuple[str, ...]
    trunk: Callable[[np.ndarray], torch.Tensor]
    top: Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class LoraAdapter:
    """A trained adapter as a checkpoint carries it: its :class:`LoraSettings`, the adapted module names and the
    ``peft`` adapter state (``get_peft_model_state_dict`` keys, float tensors)."""

    settings: LoraSettings
    targets: tuple[str, ...]
    tensors: dict[str, torch.Tensor]

    def sidecar(self) -> dict[str, Any]:
        """The checkpoint sidecar's ``backbone_lora`` entry."""
        return {"settings": self.settings.to_dict(), "targets": list(self.targets)}

    @classmethod
    def from_checkpoint(cls, entry: Any, tensors: Mapping[str, torch.Tensor], where: str) -> LoraAdapter:
        """Rebuild from a sidecar entry and the checkpoint's :data:`TENSOR_PREFIX` tensors (prefix included).

        Raises:
            ConfigError: a malformed entry or no adapter tensors (named with ``where``).
        """
        if not isinstance(entry, Mapping) or not isinstance(entry.get("targets"), list) \
                or not all(isinstance(t, str) for t in entry["targets"]):
            raise ConfigError(f"{where}: backbone_lora must hold settings and a list of target names")
        settings = LoraSettings.from_dict(entry.get("settings", {}), f"{where}: backbone_lora.settings")
        state = {k[len(TENSOR_PREFIX):]: v for k, v in tensors.items() if k.startswith(TENSOR_PREFIX)}
        if not state:
            raise ConfigError(f"{where}: backbone_lora is declared but the file holds no {TENSOR_PREFIX}* tensors")
        return cls(settings, tuple(entry["targets"]), state)


def _peft_config(settings: LoraSettings, targets: tuple[str, ...]) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(targets), bias="none")


def add_lora(split: ImageSplit, settings: LoraSettings, seed: int = 0) -> list[nn.Parameter]:
    """Inject fresh LoRA adapters into ``split.root``'s target modules (``peft.inject_adapter_in_model``; their
    ``A`` drawn from ``seed``, ``B`` zero, so the output is unchanged at first) and return the adapter
    parameters, the only ones left trainable in ``root``."""
    from peft import inject_adapter_in_model

    split.root.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(_peft_config(settings, split.targets), split.root)
    params = [p for name, p in split.root.named_parameters() if "lora_" in name]
    for p in params:
        p.requires_grad_(True)
    return params


def set_adapter_training(split: ImageSplit, training: bool) -> None:
    """Keep the frozen tower in eval mode (batch norms, its own dropouts) and switch the adapters' dropout only."""
    split.root.eval()
    for name, module in split.root.named_modules():
        if name.endswith("lora_dropout"):
            module.train(training)


def adapter_state(split: ImageSplit) -> dict[str, torch.Tensor]:
    """The injected adapters' tensors (``peft.get_peft_model_state_dict``), detached CPU copies."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(split.root).items()}


def merge_lora(backbone: Any, adapter: LoraAdapter) -> Any:
    """Add ``adapter`` into ``backbone``'s vision tower (in place; a backbone built for this purpose, never a
    shared one) and return it frozen, with plain modules where the adapters were.

    Raises:
        ConfigError: the backbone's split at ``adapter.settings.layers`` names other modules than the adapter's
            (it was trained on another backbone or size), or the adapter's tensors do not fit.
    """
    from peft import set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer

    split = backbone.image_split(adapter.settings.layers)
    if tuple(split.targets) != tuple(adapter.targets):
        raise ConfigError(f"the LoRA adapter was trained on modules {list(adapter.targets)[:3]}..., but backbone "
                          f"{backbone.name!r} has {list(split.targets)[:3]}... at layers={adapter.settings.layers}")
    add_lora(split, adapter.settings)
    result = set_peft_model_state_dict(split.root, adapter.tensors)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing or unexpected:
        raise ConfigError(f"the LoRA adapter does not fit backbone {backbone.name!r}: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}")
    for name, module in list(split.root.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(split.root.get_submodule(parent_name) if parent_name else split.root, child,
                    module.get_base_layer())
    split.root.eval().requires_grad_(False)
    return backbone


def call_encoder_layer(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """One Kosmos-2 vision encoder layer without attention masks, across transformers 4.x (``causal_attention_mask``
    argument, tuple output) and 5.x (tensor output)."""
    if "causal_attention_mask" in inspect.signature(layer.forward).parameters:
        out = layer(hidden, None, None)
    else:
        out = layer(hidden, None)
    return out[0] if isinstance(out, tuple) else out


def check_layers(layers: int, available: int, what: str) -> int:
    """``available - layers`` (the first adapted index). Raises ConfigError when ``layers`` is out of range."""
    if not 1 <= layers <= available:
        raise ConfigError(f"LoRA layers must be in [1, {available}] for {what}, got {layers}")
    return available - layers
