"""The one way the project writes a file: :func:`atomic_write`.

A reader (or a resumed run) never sees a half-written file: the content goes to a hidden temporary file in the
target's folder (``.<name>.<random>.tmp<suffix>``), which is flushed to disk (``fsync``), given the permissions a
plain ``open`` would give (``0o666`` minus the umask; ``mkstemp`` makes ``0o600``) and renamed onto the target
(``os.replace``, atomic on POSIX); the folder entry is synced too. If anything fails, or the process is
interrupted, the temporary file is removed and the target is left as it was (absent or the previous version).
A kill -9 can leave a temporary file behind: :func:`is_temp_file` recognises them for clean-up.

Every small file the project reads whole (a config, a sidecar, a key map, a CSV of results, a scenario TOML) goes
through :func:`read_text_capped`: at most :data:`MAX_CONFIG_BYTES`, UTF-8, or one line naming the file.

Every JSON file (and JSON line) the project writes goes through :func:`json_text` / :func:`atomic_write_json`:
always valid JSON (``allow_nan=False``), a non-finite number written as ``null`` with the reason beside it (the
top-level ``"non_finite"`` object: ``{"policies.case2.spl": "nan"}``).
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from foundations.errors import ConfigError

_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9]+)?$")


def default_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: ``0o666`` minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it becomes ``path`` (see the module doc).

    Args:
        path: the target file; its folder must exist.
        suffix: extension the temporary file ends with, for writers that choose a format by it (``.png``,
            ``.mp4``, ``.zip``); default: the target's own suffix.

    Raises:
        OSError: the folder is missing or not writable, or the disk is full (the target is untouched).
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # not every file system lets a folder be opened and synced
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`; returns ``path``."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def is_temp_file(path: str | Path) -> bool:
    """True for a temporary file :func:`atomic_write` leaves behind when the process is killed."""
    return bool(_TEMP_RE.match(Path(path).name))


#: The top-level key of a JSON object that lists the fields written as ``null`` because they were not finite.
NON_FINITE_KEY = "non_finite"


def finite_json(data: Any) -> tuple[Any, dict[str, str]]:
    """``data`` with every non-finite number (float, numpy scalar or array element: ``nan``, ``inf``, ``-inf``)
    replaced by ``None``, numpy scalars and arrays made plain Python; and ``{dotted path: "nan" | "inf" | "-inf"}``
    of what was replaced (list indices as path parts)."""
    replaced: dict[str, str] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(value)]
        if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy array or scalar
            return walk(value.tolist(), path)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
            replaced[path or "."] = str(float(value))
            return None
        return value

    return walk(data, ""), replaced


def json_text(data: Any, *, indent: int | None = None, sort_keys: bool = False,
              default: Callable[[Any], Any] | None = None, ensure_ascii: bool = True) -> str:
    """``data`` as JSON text that every JSON parser reads: non-finite numbers become ``null`` (:func:`finite_json`);
    for a top-level object, their paths and values are listed under :data:`NON_FINITE_KEY`. ``default`` converts
    objects JSON does not know (as :func:`json.dumps`).

    Raises:
        TypeError: an object neither JSON nor ``default`` can convert.
    """
    clean, replaced = finite_json(data)
    if replaced and isinstance(clean, dict):
        clean[NON_FINITE_KEY] = {**(clean.get(NON_FINITE_KEY) or {}), **replaced}
    return json.dumps(clean, indent=indent, sort_keys=sort_keys, default=default, ensure_ascii=ensure_ascii,
                      allow_nan=False)


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 1, sort_keys: bool = False,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``data`` as valid JSON (:func:`json_text`) plus a newline to ``path`` with :func:`atomic_write`;
    returns ``path``."""
    return atomic_write_text(path, json_text(data, indent=indent, sort_keys=sort_keys, default=default) + "\n")


#: Largest file read whole as text (configs, sidecars, key maps, ``--real-results``, scenario TOML): 16 MiB.
MAX_CONFIG_BYTES = 16 * 2**20


def read_bytes_capped(path: str | Path, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of ``path``, refusing a file larger than ``limit`` bytes (never more than ``limit + 1`` read).

    Raises:
        OSError: a missing or unreadable file (``FileNotFoundError`` ...).
        ConfigError: the file is larger than ``limit`` (one line naming it and the limit).
    """
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{path}: larger than {limit / 2**20:g} MiB: not a config or table this project reads")
    return data


def read_text_capped(path: str | Path, limit: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of ``path`` (:func:`read_bytes_capped`).

    Raises:
        OSError: a missing or unreadable file.
        ConfigError: larger than ``limit`` bytes, or not UTF-8 (naming the file and the byte offset).
    """
    data = read_bytes_capped(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})") from None


def read_json(path: str | Path, limit: int = MAX_CONFIG_BYTES) -> Any:
    """The JSON value in ``path`` (:func:`read_text_capped`).

    Raises:
        OSError: a missing or unreadable file.
        ConfigError (a ``ValueError``): larger than ``limit`` bytes, not UTF-8, not JSON, or nested too deeply to
            parse (one line naming the file).
    """
    text = read_text_capped(path, limit)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply") from None
