"""PyBullet for the package, imported once with its banner silenced, and the silencer of its C output.

PyBullet's C code writes to the process's file descriptors, past Python's ``sys.stdout``/``sys.stderr``: its
build time on import (``pybullet build time: ...``, stderr) and the EGL plugin's device, vendor and version lines
when it loads, draws its first frame and unloads (stdout and stderr). None of it is for the user: a command's
output, and its one-line error for a bad argument, come without them. Every module of the project takes PyBullet
from here (``from envs.bullet import p``), so the first import in a process is the silenced one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

_LIBC = ctypes.CDLL(None)  # for fflush(NULL): C's own buffers, written out before the descriptors are restored


@contextlib.contextmanager
def quiet_c_output(fds: tuple[int, ...] = (1, 2)) -> Iterator[None]:
    """Send what C code writes to the file descriptors ``fds`` (1: stdout, 2: stderr) to /dev/null for the duration
    of the block; Python's own streams are flushed first, so nothing of theirs is lost or reordered."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    try:
        with open(os.devnull, "wb") as null:
            for fd in fds:
                os.dup2(null.fileno(), fd)
        yield
    finally:
        _LIBC.fflush(None)
        for fd, copy in zip(fds, saved):
            os.dup2(copy, fd)
            os.close(copy)


with quiet_c_output((2,)):
    import pybullet as p  # noqa: E402 - its build-time banner, on stderr
import pybullet_data  # noqa: E402

__all__ = ["p", "pybullet_data", "quiet_c_output"]
