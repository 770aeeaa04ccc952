"""Action-head checkpoints: the team's formats in, the project's own format in and out.

Formats read by :func:`load_checkpoint` (all with ``torch.load(..., weights_only=True)`` or safetensors;
nothing is ever unpickled):

``safetensors`` (the project's format, written by :func:`save_checkpoint`)
    ``NAME.safetensors`` (the head's ``state_dict``) + sidecar ``NAME.json``::

        {"format": "mobile-vla-sim.head", "format_version": 1, "head": "lstm",
         "head_class": "MobileVLALSTMDecoder", "head_config": {...}, "backbone": "lite",
         "action_dim": 2, "window_size": 8, "chunk_size": 10, "output_activation": "tanh",
         "meta": {... free metadata: training data, epochs, metrics ...}}

``pth`` (the team's training scripts)
    ``torch.save`` dict with ``model_state_dict`` and ``model_config`` (or ``config``), plus ``epoch``,
    ``optimizer_state_dict``, ``scheduler_state_dict``, ``loss``, ``mae`` ...; a bare state dict also loads.

``ckpt`` (RoboVLMs / PyTorch Lightning)
    dict with ``state_dict`` whose keys carry the LightningModule's ``model.`` prefix (stripped here).

Keys of the frozen backbone that the team's models stored inside their head checkpoints (``kosmos.``,
``clip_model.``, ...: see :data:`BACKBONE_KEY_PREFIXES`) are dropped: backbones are loaded separately.
Before anything is copied, the checkpoint's state dict is compared with the head's; any difference raises
:class:`CheckpointMismatchError` naming the missing keys, unexpected keys and shape mismatches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

#: ``format`` value of the project's JSON sidecar.
FORMAT_NAME = "mobile-vla-sim.head"
FORMAT_VERSION = 1
#: State-dict key prefixes of frozen backbones embedded in the team's checkpoints; dropped on load.
BACKBONE_KEY_PREFIXES = ("kosmos.", "kosmos_model.", "clip_model.", "clip.", "backbone.")
#: Prefix the RoboVLMs LightningModule puts on its model's keys.
LIGHTNING_PREFIX = "model."
#: How many key names an error message lists per category before summarising.
MAX_KEYS_IN_MESSAGE = 12


class CheckpointError(ValueError):
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
        state_dict: tensor name -> tensor (CPU), backbone keys removed, Lightning prefix stripped.
        head_name: registry name of the head if the file says so (``None`` for most team files).
        head_config: the saved head config dict (``model_config`` for team files), or ``None``.
        backbone: backbone name the head was trained on, if recorded.
        meta: free metadata (sidecar ``meta``; scalar fields such as ``epoch``, ``loss``, ``mae`` of team files).
        dropped_keys: keys removed as belonging to a frozen backbone.
    """

    path: Path
    format: str
    state_dict: dict[str, torch.Tensor]
    head_name: str | None = None
    head_config: dict[str, Any] | None = None
    backbone: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    dropped_keys: list[str] = dataclasses.field(default_factory=list)


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


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success ``os.replace`` it onto ``path``, else delete it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | Path, head: torch.nn.Module, meta: Mapping[str, Any] | None = None, *,
                    backbone: str | None = None) -> Path:
    """Write ``head`` in the project's format: ``path`` (safetensors) + :func:`sidecar_path` (JSON), atomically.

    Each file is written to a temporary file in the same folder and moved into place with ``os.replace``
    (weights first, sidecar last), so a reader never sees a half-written file.

    Args:
        path: target, must end in ``.safetensors``; parent folders are created.
        head: an :class:`policies.heads.ActionHead` (needs ``head_name`` and a dataclass ``config``).
        meta: free JSON-serialisable metadata (training data, epochs, metrics, ...).
        backbone: the backbone name the head's features come from (``"lite"``, ``"kosmos2"``, ...).

    Returns:
        The weights path.

    Raises:
        ValueError: wrong suffix, a head without ``head_name``/``config``, or non-JSON ``meta``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"project checkpoints end in .safetensors, got {path}")
    name = getattr(head, "head_name", None)
    config = getattr(head, "config", None)
    if not name or not dataclasses.is_dataclass(config):
        raise ValueError("save_checkpoint needs an ActionHead (with head_name and a dataclass config)")
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
        "meta": dict(meta or {}),
    }
    try:
        sidecar_text = json.dumps(sidecar, indent=2, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"checkpoint metadata must be JSON-serialisable: {exc}") from exc
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in head.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_target(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "head": name, "sidecar": sidecar_path(path).name})
    with _atomic_target(sidecar_path(path)) as tmp:
        tmp.write_text(sidecar_text + "\n", encoding="utf-8")
    return path


# -------------------------------------------------------------------------------------------- loading


def _safe_globals() -> list[Any]:
    """Numpy scalar/dtype reconstructors, allow-listed for ``weights_only`` loads (team files store ``mae``
    and ``loss`` as numpy scalars); still no arbitrary unpickling."""
    out: list[Any] = []
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


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        if "Unsupported global" in detail:
            raise CheckpointFormatError(
                f"{path}: refused by torch.load(weights_only=True): it stores Python objects beyond tensors and "
                f"plain containers, which are never unpickled here ({detail})") from exc
        raise CheckpointFormatError(f"{path}: corrupt or not a torch checkpoint ({detail})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError) as exc:
        raise CheckpointFormatError(f"{path}: corrupt or unreadable torch checkpoint "
                                    f"({type(exc).__name__}: {_unpickler_detail(exc)})") from exc


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _scalar_meta(obj: Mapping[str, Any], skip: set[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, value in obj.items():
        if key in skip or not isinstance(key, str):
            continue
        is_scalar_tensor = isinstance(value, torch.Tensor) and value.numel() == 1
        if is_scalar_tensor or (hasattr(value, "item") and getattr(value, "shape", None) == ()):
            value = value.item()
        if isinstance(value, (str, int, float, bool)) or value is None:
            meta[key] = value
    return meta


def _strip_backbone(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    kept, dropped = {}, []
    for key, value in state.items():
        if key.startswith(BACKBONE_KEY_PREFIXES):
            dropped.append(key)
        else:
            kept[key] = value
    return kept, dropped


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
                if value == cls.__name__:
                    return name
    return None


def _load_safetensors(path: Path) -> Checkpoint:
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
        info = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointFormatError(f"{side}: unreadable checkpoint sidecar ({exc})") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise CheckpointFormatError(f"{side}: not a {FORMAT_NAME} sidecar (format={info.get('format')!r})"
                                    if isinstance(info, dict) else f"{side}: sidecar is not a JSON object")
    if int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointFormatError(f"{side}: format_version {info['format_version']} is newer than this code "
                                    f"({FORMAT_VERSION})")
    state, dropped = _strip_backbone(state)
    return Checkpoint(path=path, format="safetensors", state_dict=state, head_name=info.get("head"),
                      head_config=info.get("head_config"), backbone=info.get("backbone"),
                      meta=dict(info.get("meta") or {}), dropped_keys=dropped)


def _load_torch(path: Path) -> Checkpoint:
    obj = _torch_load(path)
    config: dict[str, Any] | None = None
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        fmt, state = "pth", obj["model_state_dict"]
        raw_config = obj.get("model_config", obj.get("config"))
        config = dict(raw_config) if isinstance(raw_config, Mapping) else None
        meta = _scalar_meta(obj, {"model_state_dict", "model_config", "config"})
    elif isinstance(obj, Mapping) and "state_dict" in obj:
        fmt, state = "ckpt", obj["state_dict"]
        if isinstance(state, Mapping) and any(isinstance(k, str) and k.startswith(LIGHTNING_PREFIX) for k in state):
            state = {(k.removeprefix(LIGHTNING_PREFIX)): v for k, v in state.items()}
        raw_config = obj.get("model_config")
        config = dict(raw_config) if isinstance(raw_config, Mapping) else None
        meta = _scalar_meta(obj, {"state_dict"})
    elif _is_state_dict(obj):
        fmt, state, meta = "state_dict", obj, {}
    else:
        keys = sorted(map(str, obj.keys()))[:MAX_KEYS_IN_MESSAGE] if isinstance(obj, Mapping) else []
        raise CheckpointFormatError(
            f"{path}: unsupported layout ({type(obj).__name__} with keys {keys}); expected a dict with "
            "'model_state_dict' (.pth), 'state_dict' (Lightning .ckpt) or a bare state dict")
    if not _is_state_dict(state):
        raise CheckpointFormatError(f"{path}: the state dict is empty or holds non-tensor values")
    state, dropped = _strip_backbone(state)
    backbone = config.get("backbone") if config and isinstance(config.get("backbone"), str) else None
    return Checkpoint(path=path, format=fmt, state_dict=dict(state), head_name=_head_name_from_config(config),
                      head_config=config, backbone=backbone, meta=meta, dropped_keys=dropped)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint in any supported format (chosen by suffix: ``.safetensors`` = project format,
    anything else = a ``torch.save`` file, ``.pth``/``.pt``/``.ckpt``/``.bin``).

    Raises:
        CheckpointNotFoundError: the file or the sidecar of a ``.safetensors`` file is missing.
        CheckpointFormatError: corrupt or unreadable file, or an unsupported layout (the message names the file).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    return _load_torch(path)


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
    "BACKBONE_KEY_PREFIXES", "Checkpoint", "CheckpointError", "CheckpointFormatError", "CheckpointMismatchError",
    "CheckpointNotFoundError", "compare_state_dicts", "default_checkpoint", "load_checkpoint", "load_into_head",
    "save_checkpoint", "sidecar_path",
]
