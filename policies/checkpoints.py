"""Action-head checkpoints: the team's formats in, the project's own format in and out.

Formats read by :func:`load_checkpoint` (all with ``torch.load(..., weights_only=True)`` or safetensors;
nothing is ever unpickled):

``safetensors`` (the project's format, written by :func:`save_checkpoint`)
    ``NAME.safetensors`` (the head's ``state_dict``) + sidecar ``NAME.json``::

        {"format": "mobile-vla-sim.head", "format_version": 1, "head": "lstm-recon",
         "head_class": "LSTMReconstruction", "head_config": {...}, "backbone": "lite",
         "action_dim": 2, "window_size": 8, "chunk_size": 10, "output_activation": "tanh",
         "team_class": null, "stored_dtype": "float16" | null,
         "meta": {... free metadata: training data, epochs, metrics ...},
         "backbone_lora": {"settings": {"r": 32, ...}, "targets": [...]}}   # only after LoRA training

    A LoRA-trained head also carries its backbone adapter's tensors, under ``backbone_lora.`` in the same file
    (:class:`policies.backbones.lora.LoraAdapter`, merged into the backbone when the policy is built).

``pth`` (the team's training scripts, ``../shared/reference/TEAM_MODELS.md``)
    ``torch.save`` dict with ``model_state_dict`` and ``model_config`` (or ``config``; case 3, the original
    hybrid / pure-Kosmos-2 trainers store none), plus ``epoch``, ``optimizer_state_dict``, ``loss``, ``mae``,
    ``val_mae`` ...; the "Simple LSTM" scripts add ``args`` as an ``argparse.Namespace``. A bare state dict also
    loads.

``ckpt`` (RoboVLMs / PyTorch Lightning)
    dict with ``state_dict`` (or ``model_state_dict``) whose keys carry the LightningModule's ``model.`` prefix
    (stripped here): ``backbone.*`` (the frozen Kosmos-2), ``action_token``, ``act_head.*``.

Loading: ``torch.load(weights_only=True, mmap=True)`` with a narrow allow-list (:func:`_safe_globals`: numpy
scalars, ``argparse.Namespace``); nothing else is ever unpickled, and a 7 GB file with an embedded backbone is
mapped, not read, so its head keys are checked without 7 GB of RAM. The tensors of the frozen models the team's
files carry (``kosmos.``, ``clip_model.``, ``backbone.``, ...: :data:`policies.backbones.FROZEN_PREFIXES`) are
kept apart in :attr:`Checkpoint.frozen` for the backbone builders; ``action_token`` goes to
:attr:`Checkpoint.extra`; the rest is the head's. ``key_map`` (:func:`load_key_map`) renames keys first, for
layouts this project does not know. Before anything is copied, the head's state dict is compared with the
checkpoint's; any difference raises :class:`CheckpointMismatchError` naming the missing keys, unexpected keys
and shape mismatches.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from foundations.errors import ConfigError, MobileVLAError
from foundations.files import atomic_write, json_text, read_json
from policies.backbones import FROZEN_PREFIXES
from policies.backbones.lora import TENSOR_PREFIX, LoraAdapter

#: ``format`` value of the project's JSON sidecar.
FORMAT_NAME = "mobile-vla-sim.head"
FORMAT_VERSION = 1
#: Prefix the RoboVLMs LightningModule puts on its model's keys.
LIGHTNING_PREFIX = "model."
#: Non-head tensors the team's models keep beside the head (RoboVLMs' learned action token).
EXTRA_KEYS = ("action_token",)
#: Prefix of a LoRA-trained backbone adapter's tensors.
LORA_PREFIX = TENSOR_PREFIX
#: How many key names an error message lists per category before summarising.
MAX_KEYS_IN_MESSAGE = 12


class CheckpointError(MobileVLAError, ValueError):
    """Base class of checkpoint problems (a ``ValueError``)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file (or its JSON sidecar) does not exist."""


class CheckpointFormatError(CheckpointError):
    """The file is corrupt, unreadable, or not one of the supported layouts."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit the head (or backbone) it is loaded into.

    Attributes:
        missing: head keys absent from the checkpoint.
        unexpected: checkpoint keys the head does not have.
        mismatched: ``(key, checkpoint_shape, head_shape)`` for keys present in both with different shapes.
    """

    def __init__(self, message: str, missing: list[str] | None = None, unexpected: list[str] | None = None,
                 mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] | None = None) -> None:
        self.missing = list(missing or [])
        self.unexpected = list(unexpected or [])
        self.mismatched = list(mismatched or [])
        super().__init__(message)


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint, format-independent.

    Attributes:
        path: the file read.
        format: ``"safetensors"``, ``"pth"``, ``"ckpt"`` or ``"state_dict"`` (a bare state dict).
        state_dict: the head's tensors (CPU, possibly memory-mapped): frozen-model and extra keys removed,
            Lightning prefix stripped, key map applied.
        head_name: registry name of the head if the file says so (the project's sidecar, or a ``model_config``
            naming the class).
        head_config: the saved head config dict (``model_config`` for team files), or ``None``.
        backbone: backbone name the head was trained on, if recorded.
        meta: free metadata (sidecar ``meta``; scalar fields such as ``epoch``, ``loss``, ``mae`` and ``args`` of
            team files).
        frozen: prefix (``"kosmos."``, ``"clip_model."``, ...) -> that frozen model's tensors, prefix stripped.
        extra: non-head tensors kept beside the head (``action_token``).
        keys: the file's top-level dict keys (``None`` for a bare state dict or safetensors).
        config_source: where the config came from (``"sidecar"``, ``"model_config"``, ``"none"``).
        backbone_lora: the backbone's LoRA adapter (:class:`policies.backbones.lora.LoraAdapter`) of a head trained
            with ``sim.train --lora``, else ``None``.
    """

    path: Path
    format: str
    state_dict: dict[str, torch.Tensor]
    head_name: str | None = None
    head_config: dict[str, Any] | None = None
    backbone: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    frozen: dict[str, dict[str, torch.Tensor]] = dataclasses.field(default_factory=dict)
    extra: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    keys: list[str] | None = None
    config_source: str = "none"
    backbone_lora: Any = None

    @property
    def config_file(self) -> str:
        """Where the head config was read: the sidecar, or the checkpoint's ``model_config``."""
        if self.config_source == "sidecar":
            return str(sidecar_path(self.path))
        return f"{self.path} ({self.config_source})" if self.config_source != "none" else str(self.path)

    def frozen_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """Role (:data:`policies.backbones.FROZEN_PREFIXES` values: ``kosmos2``, ``clip_image``, ...) -> tensors."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for prefix, state in self.frozen.items():
            out.setdefault(FROZEN_PREFIXES[prefix], state)
        return out

    @property
    def weights_id(self) -> str:
        """Identifies this file's frozen weights for backbone caching (path, size, modification time)."""
        stat = self.path.stat()
        return f"{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def detected_head(self) -> str | None:
        """The team architecture the head tensors belong to (:func:`policies.heads.detect_head`)."""
        from policies.heads import detect_head

        if self.head_name:
            return self.head_name
        return detect_head(self.state_dict, has_model_config=self.config_source == "model_config",
                           frozen_prefixes=tuple(self.frozen))


#: Folder of the bundled checkpoints.
WEIGHTS_DIR = Path(__file__).parent / "weights"


def default_checkpoint(head_name: str, backbone: str) -> Path | None:
    """Bundled weights for ``head_name`` on ``backbone`` (``policies/weights/{head}_{backbone}.safetensors``,
    written by ``python -m sim.bundle``), or ``None`` when none ship, in which case factories fall back to a
    seeded random head."""
    path = WEIGHTS_DIR / f"{head_name}_{backbone}.safetensors"
    return path if path.exists() and sidecar_path(path).exists() else None


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of a ``.safetensors`` checkpoint: same folder and stem, suffix ``.json``."""
    return Path(path).with_suffix(".json")


# --------------------------------------------------------------------------------------------- saving


def save_checkpoint(path: str | Path, head: torch.nn.Module, meta: Mapping[str, Any] | None = None, *,
                    backbone: str | None = None, dtype: torch.dtype | None = None,
                    backbone_lora: Any = None) -> Path:
    """Write ``head`` in the project's format: ``path`` (safetensors) + :func:`sidecar_path` (JSON), atomically.

    Each file is written with :func:`foundations.files.atomic_write` (weights first, sidecar last), so a reader
    never sees a half-written file.

    Args:
        path: target, must end in ``.safetensors``; parent folders are created.
        head: an :class:`policies.heads.ActionHead` (needs ``head_name`` and a dataclass ``config``).
        meta: free JSON-serialisable metadata (training data, epochs, metrics, ...).
        backbone: the backbone name the head's features come from (``"lite"``, ``"kosmos2"``, ...).
        dtype: store floating-point tensors in this dtype (e.g. ``torch.float16`` halves the file; they are
            cast back to the head's dtype on load); ``None`` = as they are.
        backbone_lora: a :class:`policies.backbones.lora.LoraAdapter` trained with the head (its tensors are
            stored under ``backbone_lora.``, its settings in the sidecar).

    Returns:
        The weights path.

    Raises:
        ConfigError: wrong suffix, a head without ``head_name``/``config``, or non-JSON ``meta``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"project checkpoints end in .safetensors, got {path}")
    name = getattr(head, "head_name", None)
    config = getattr(head, "config", None)
    if not name or not dataclasses.is_dataclass(config):
        raise ConfigError("save_checkpoint needs an ActionHead (with head_name and a dataclass config)")
    cfg = dataclasses.asdict(config)
    sidecar = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "head": name,
        "head_class": type(head).__name__,
        "head_config": cfg,
        "backbone": backbone,
        "action_dim": cfg.get("action_dim"),
        "window_size": cfg.get("window_size"),
        "chunk_size": cfg.get("chunk_size"),
        "output_activation": getattr(head, "output_activation", None),
        "team_class": getattr(head, "team_class", None),
        "stored_dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
        "meta": dict(meta or {}),
    }
    if backbone_lora is not None:
        sidecar["backbone_lora"] = backbone_lora.sidecar()
    try:
        sidecar_text = json_text(sidecar, indent=2, sort_keys=True)
    except TypeError as exc:
        raise ConfigError(f"checkpoint metadata must be JSON-serialisable: {exc}") from exc
    state = dict(head.state_dict())
    if backbone_lora is not None:
        state.update({LORA_PREFIX + k: v for k, v in backbone_lora.tensors.items()})
    tensors = {k: v.detach().to("cpu", dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
               .contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "head": name, "sidecar": sidecar_path(path).name})
    with atomic_write(sidecar_path(path)) as tmp:
        tmp.write_text(sidecar_text + "\n", encoding="utf-8")
    return path


# -------------------------------------------------------------------------------------------- loading


def _safe_globals() -> list[Any]:
    """The allow-list of ``weights_only`` loads beyond tensors and plain containers: numpy scalar/dtype
    reconstructors (team files store ``mae`` and ``loss`` as numpy scalars) and ``argparse.Namespace`` (the
    "Simple LSTM" scripts store their ``args``). Nothing else is ever unpickled."""
    out: list[Any] = [argparse.Namespace]
    with contextlib.suppress(Exception):
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        out.append(core.multiarray.scalar)
        out.append(np.dtype)
        out.extend(type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool"))
    return out


def _unpickler_detail(exc: BaseException) -> str:
    """The informative part of torch's weights-only error (``Unsupported global: ...`` etc.)."""
    text = " ".join(str(exc).split())
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].split(" Check the documentation", 1)[0].strip()
        return text.split(" Please use `torch.serialization", 1)[0].strip()
    return text[:200]


def torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with :func:`_safe_globals`, memory-mapped when the file is a zip
    archive (``torch.save``'s format since 1.6; older files are read whole).

    Raises:
        CheckpointFormatError: a refused object (naming it), or a corrupt or truncated file.
    """
    mmap = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        if "Unsupported global" in detail:
            raise CheckpointFormatError(
                f"{path}: refused by torch.load(weights_only=True): it stores Python objects beyond tensors and "
                f"plain containers, which are never unpickled here ({detail})") from exc
        raise CheckpointFormatError(f"{path}: corrupt or not a torch checkpoint ({detail})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError, TypeError,
            LookupError) as exc:  # LookupError: the unpickler's memo miss on bytes that are no pickle (a text file)
        raise CheckpointFormatError(f"{path}: corrupt or unreadable torch checkpoint "
                                    f"({type(exc).__name__}: {_unpickler_detail(exc)})") from exc


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a metadata value (numbers, strings, lists, dicts; tensors and numpy scalars as
    numbers), or ``None`` when it is something else."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else None
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return None


def _meta(obj: Mapping[str, Any], skip: set[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, value in obj.items():
        if key in skip or not isinstance(key, str) or key.endswith(("_state_dict", "_states")):
            continue
        if isinstance(value, Mapping) and key not in ("args", "hyper_parameters"):
            continue
        plain = _plain(value)
        if plain is not None:
            meta[key] = plain
    return meta


def load_key_map(path: str | Path) -> dict[str, str]:
    """A ``--key-map`` file: a JSON object ``{"old prefix or name": "new prefix or name", ...}``.

    Raises:
        CheckpointFormatError: missing, unreadable, or not an object of strings.
    """
    path = Path(path).expanduser()
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise CheckpointFormatError(f"{path}: unreadable key map ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise CheckpointFormatError(f"{path}: a key map is a JSON object of strings {{\"old.prefix.\": \"new.prefix.\"}}")
    return data


def apply_key_map(state: Mapping[str, torch.Tensor], key_map: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Rename keys: each key starting with a map entry's old prefix (the longest that matches) gets the new one."""
    if not key_map:
        return dict(state)
    olds = sorted(key_map, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        old = next((o for o in olds if key.startswith(o)), None)
        out[key_map[old] + key[len(old):] if old is not None else key] = value
    return out


def _split(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]],
                                                        dict[str, torch.Tensor]]:
    """``(head, frozen prefix -> tensors, extra)``."""
    head: dict[str, torch.Tensor] = {}
    frozen: dict[str, dict[str, torch.Tensor]] = {}
    extra: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        prefix = next((p for p in FROZEN_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            frozen.setdefault(prefix, {})[key[len(prefix):]] = value
        elif key in EXTRA_KEYS or key.startswith(LORA_PREFIX):
            extra[key] = value
        else:
            head[key] = value
    return head, frozen, extra


def _head_name_from_config(config: Mapping[str, Any] | None) -> str | None:
    if not config:
        return None
    from policies.heads import HEADS

    for key in ("head", "head_name", "model_name", "model_class", "model_type", "architecture"):
        value = config.get(key)
        if isinstance(value, str):
            if value in HEADS:
                return value
            for name, cls in HEADS.items():
                if cls.team_class and value == cls.__name__:
                    return name
    return None


def _load_safetensors(path: Path, key_map: Mapping[str, str]) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointNotFoundError(f"{path}: JSON sidecar {side.name} not found next to it (it holds the head "
                                      "name and config)")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointFormatError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        info = read_json(side)
    except (OSError, ValueError) as exc:
        raise CheckpointFormatError(f"{side}: unreadable checkpoint sidecar ({exc})") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise CheckpointFormatError(f"{side}: not a {FORMAT_NAME} sidecar (format={info.get('format')!r})"
                                    if isinstance(info, dict) else f"{side}: sidecar is not a JSON object")
    for field, kind in (("format_version", int), ("head", str), ("backbone", str), ("meta", dict)):
        if info.get(field) is not None and not (isinstance(info[field], kind) and not isinstance(info[field], bool)):
            raise CheckpointFormatError(f"{side}: {field} must be a JSON {'number' if kind is int else kind.__name__}"
                                        f", got {info[field]!r}"[:200])
    if int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointFormatError(f"{side}: format_version {info['format_version']} is newer than this code "
                                    f"({FORMAT_VERSION})")
    config = info.get("head_config")
    if config is not None and not isinstance(config, dict):
        raise CheckpointFormatError(f"{side}: head_config must be a JSON object, got {type(config).__name__}")
    head, frozen, extra = _split(apply_key_map(state, key_map))
    lora = None
    if info.get("backbone_lora") is not None:
        try:
            lora = LoraAdapter.from_checkpoint(info["backbone_lora"], extra, str(side))
        except ConfigError as exc:
            raise CheckpointFormatError(str(exc)) from None
    return Checkpoint(path=path, format="safetensors", state_dict=head, head_name=info.get("head"),
                      head_config=config, backbone=info.get("backbone"), meta=dict(info.get("meta") or {}),
                      frozen=frozen, extra=extra, config_source="sidecar", backbone_lora=lora)


def _load_torch(path: Path, key_map: Mapping[str, str]) -> Checkpoint:
    obj = torch_load(path)
    config: dict[str, Any] | None = None
    keys = sorted(map(str, obj)) if isinstance(obj, Mapping) else None
    if isinstance(obj, Mapping) and ("model_state_dict" in obj or "state_dict" in obj):
        state = obj.get("model_state_dict", obj.get("state_dict"))
        fmt = "pth" if "model_state_dict" in obj else "ckpt"
        if isinstance(state, Mapping) and state and all(isinstance(k, str) and k.startswith(LIGHTNING_PREFIX)
                                                          for k in state):
            state, fmt = {k[len(LIGHTNING_PREFIX):]: v for k, v in state.items()}, "ckpt"
        raw_config = obj.get("model_config", obj.get("config"))
        config = dict(raw_config) if isinstance(raw_config, Mapping) else None
        meta = _meta(obj, {"model_state_dict", "state_dict", "model_config", "config"})
    elif _is_state_dict(obj):
        fmt, state, meta, keys = "state_dict", obj, {}, None
    else:
        shown = keys[:MAX_KEYS_IN_MESSAGE] if keys else []
        raise CheckpointFormatError(
            f"{path}: unsupported layout ({type(obj).__name__} with keys {shown}); expected a dict with "
            "'model_state_dict' (.pth), 'state_dict' (Lightning .ckpt) or a bare state dict")
    if not _is_state_dict(state):
        raise CheckpointFormatError(f"{path}: the state dict is empty or holds non-tensor values")
    head, frozen, extra = _split(apply_key_map(state, key_map))
    backbone = config.get("backbone") if config and isinstance(config.get("backbone"), str) else None
    return Checkpoint(path=path, format=fmt, state_dict=head, head_name=_head_name_from_config(config),
                      head_config=config, backbone=backbone, meta=meta, frozen=frozen, extra=extra, keys=keys,
                      config_source="model_config" if config is not None else "none")


def load_checkpoint(path: str | Path, key_map: Mapping[str, str] | str | Path | None = None) -> Checkpoint:
    """Read a checkpoint in any supported format (chosen by suffix: ``.safetensors`` = project format,
    anything else = a ``torch.save`` file, ``.pth``/``.pt``/``.ckpt``/``.bin``).

    Args:
        key_map: renames applied to every key first (a dict or a :func:`load_key_map` file).

    Raises:
        CheckpointNotFoundError: the file or the sidecar of a ``.safetensors`` file is missing.
        CheckpointFormatError: corrupt or unreadable file, a refused pickled object, or an unsupported layout
            (the message names the file).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if isinstance(key_map, (str, Path)):
        key_map = load_key_map(key_map)
    if path.suffix == ".safetensors":
        return _load_safetensors(path, key_map or {})
    return _load_torch(path, key_map or {})


# ----------------------------------------------------------------------------------------- comparing


def compare_state_dicts(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
                        ) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    """Compare a model's state dict (``expected``) with a checkpoint's (``found``).

    Returns:
        ``(missing, unexpected, mismatched)``: sorted keys only in ``expected``; sorted keys only in
        ``found``; ``(key, found_shape, expected_shape)`` for shared keys whose shapes differ.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [(k, tuple(found[k].shape), tuple(expected[k].shape))
                  for k in sorted(set(expected) & set(found)) if tuple(found[k].shape) != tuple(expected[k].shape)]
    return missing, unexpected, mismatched


def _listing(items: list[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:MAX_KEYS_IN_MESSAGE])
    more = len(items) - MAX_KEYS_IN_MESSAGE
    return shown + (f", ... (+{more} more)" if more > 0 else "")


def load_into_head(head: torch.nn.Module, checkpoint: Checkpoint | str | Path) -> Checkpoint:
    """Copy a checkpoint's weights into ``head`` after checking they fit exactly.

    Returns:
        The :class:`Checkpoint` loaded.

    Raises:
        CheckpointMismatchError: missing keys, unexpected keys or shape mismatches (all listed, with the file).
        CheckpointNotFoundError / CheckpointFormatError: as :func:`load_checkpoint`.
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    missing, unexpected, mismatched = compare_state_dicts(head.state_dict(), ckpt.state_dict)
    if missing or unexpected or mismatched:
        parts = [f"{ckpt.path}: checkpoint does not fit {type(head).__name__}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): "
                         + _listing([f"{k} checkpoint {list(a)} vs model {list(b)}" for k, a, b in mismatched]))
        raise CheckpointMismatchError("; ".join(parts), missing, unexpected, mismatched)
    head.load_state_dict(ckpt.state_dict, strict=True)
    return ckpt


__all__ = [
    "Checkpoint", "CheckpointError", "CheckpointFormatError", "CheckpointMismatchError",
    "CheckpointNotFoundError", "apply_key_map", "compare_state_dicts", "default_checkpoint", "load_checkpoint",
    "load_into_head", "load_key_map", "save_checkpoint", "sidecar_path", "torch_load",
]
