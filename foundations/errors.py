"""The project's one error base (the model: Gymnasium's ``gymnasium.error``).

``foundations`` is the bottom layer (``foundations -> scenarios -> envs -> policies -> sim``), so every package
can import this module and none imports upwards. Every error the project raises for a user's input, file or setting derives from
:class:`MobileVLAError`; each command (``python -m sim.<tool>``) prints such an error as one line,
``error: <message>``, and exits with :data:`EXIT_USAGE` (2). The message names the file, field or argument.
Concrete classes also derive from the built-in they refine (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working.

Exit codes shared by every command: 0 done; 1 the run finished but something it measured failed (an episode
ended in ``error``, a parity check, a latency budget); 2 bad arguments or input (nothing was run); 130
interrupted (Ctrl-C; finished work is kept and ``--resume`` completes it); 143 terminated (SIGTERM, handled as
Ctrl-C is: finished work is kept, the worker processes are ended).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: 128 + SIGTERM: the shell's code for a process ended by SIGTERM, here after a clean stop.
EXIT_TERMINATED = 143


class MobileVLAError(Exception):
    """Base of every error raised for a user's input, file or setting (one line, exit 2 in a command)."""


class ConfigError(MobileVLAError, ValueError):
    """An argument or setting has an invalid value; the message names it (``--latency-ms: must be ...``)."""
