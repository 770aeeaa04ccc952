"""The one way the project writes a file: :func:`atomic_write`.

A reader (or a resumed run) never sees a half-written file: the content goes to a hidden temporary file in the
target's folder (``.<name>.<random>.tmp<suffix>``), which is flushed to disk (``fsync``), given the permissions a
plain ``open`` would give (``0o666`` minus the umask; ``mkstemp`` makes ``0o600``) and renamed onto the target
(``os.replace``, atomic on POSIX); the folder entry is synced too. If anything fails, or the process is
interrupted, the temporary file is removed and the target is left as it was (absent or the previous version).
A kill -9 can leave a temporary file behind: :func:`is_temp_file` recognises them for clean-up.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
