"""What every command (``python -m sim.<tool>``) shares: how it ends, and the arguments that name a policy.

- :func:`command`: wraps a command's ``main`` so that an error of the project (:class:`~foundations.errors.
  MobileVLAError`) or a file the user named that cannot be read or written prints one line, ``error: ...``, and
  exits 2, Ctrl-C exits 130 and SIGTERM, handled as Ctrl-C is (finished work kept, worker processes ended),
  exits 143; a traceback is left only for a bug.
- ``--policy-arg [POLICY@]KEY=VALUE`` (:func:`add_policy_arg_argument`, :func:`parse_policy_args`): the one style
  of policy arguments, on every command that builds a policy (``sim.eval``, ``sim.offline``, ``sim.serve``,
  ``sim.export``, ``sim.train``).
- The flags naming where a VLA policy's weights come from and where it runs (:func:`add_model_source_arguments`,
  ``--device``: :func:`add_device_argument`, :func:`check_device`).
- ``--family`` (:func:`add_family_argument`) on every command that builds an environment; ``--renderer``
  (:func:`add_renderer_argument`) on every command that renders camera images.
- :class:`ArgumentParser`: every command's parser; a usage error is one line, ``error: ...``, exit 2.
- The one rule for numeric flags (:func:`int_in`, :func:`float_in`): a finite number within documented bounds
  (:data:`MAX_EPISODES`, :data:`MAX_WORKERS`, :data:`MAX_SEED`, ...); ``inf``, ``nan`` or ``1e12`` is a usage
  error naming the flag, before anything is written.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import math
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import scenarios
from envs.cadence import Cadence
from envs.rendering import RENDERERS
from foundations.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, ConfigError, MobileVLAError
from policies.catalog import BACKBONE_NAMES

#: ``--backbone`` choices: ``auto`` and the registered backbones (:data:`policies.catalog.BACKBONE_NAMES`).
BACKBONE_CHOICES = ("auto", *BACKBONE_NAMES)
#: Destinations of :func:`add_model_source_arguments` (``device``: :func:`add_device_argument`, which it adds).
MODEL_SOURCE_FLAGS = ("checkpoint", "backbone", "backbone_path", "clip_path", "key_map", "config", "device")
#: What ``--device`` accepts.
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")

#: Upper bound of every episode count (``--episodes``, ``--episodes-per-combo``, ...): 100,000.
MAX_EPISODES = 100_000
#: Upper bound of ``--workers`` / ``--n-envs`` (processes): 256.
MAX_WORKERS = 256
#: Largest ``--seed``: numpy's seed range, ``2**32 - 1``.
MAX_SEED = 2**32 - 1
#: Upper bound of step counts (``--max-steps``, ``--timesteps``, ``--check-steps`` ...): 10**9.
MAX_STEPS = 10**9
#: Upper bound of every duration flag in seconds (``--read-timeout``, ``--max-time``, ``--step-timeout``): 1 day.
MAX_SECONDS = 86_400.0


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every command: a usage error prints one line, ``error: <message>``, and exits 2 (argparse
    prints the usage first; ``--help`` still shows it)."""

    def error(self, message: str) -> Any:  # noqa: D102 - argparse's hook
        self.exit(EXIT_USAGE, f"error: {message.splitlines()[0] if message else 'bad arguments'}\n")


def _number(kind: type, low: float, high: float, low_open: bool) -> Callable[[str], Any]:
    what = "an integer" if kind is int else "a number"
    fmt = (lambda v: str(int(v))) if kind is int else (lambda v: f"{v:g}")
    bound = f"{'(' if low_open else '['}{fmt(low)}, {fmt(high)}]"

    def parse(text: str) -> Any:
        try:
            value = kind(text) if kind is float else int(text, 10)
        except (TypeError, ValueError):
            value = None
        if value is None or not math.isfinite(value) or not (low < value if low_open else low <= value) \
                or value > high:
            raise argparse.ArgumentTypeError(f"must be {what} in {bound}, got {text!r}")
        return value

    parse.__name__ = f"{kind.__name__}_in{bound}"
    return parse


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a base-10 integer in ``[low, high]``; anything else (``1e12``, ``inf``, ``x``, out of
    range) is a usage error naming the flag (``error: argument --workers: must be an integer in [1, 256], got
    '1000'``, exit 2)."""
    return _number(int, low, high, False)


def float_in(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``); ``nan``,
    ``inf`` and anything out of range are usage errors naming the flag (exit 2)."""
    return _number(float, low, high, low_open)


def add_model_source_arguments(parser: argparse.ArgumentParser, *, checkpoint: bool = True,
                               backbone_default: str | None = None) -> None:
    """Add ``--checkpoint`` (unless ``checkpoint`` is False), ``--backbone``, ``--backbone-path``, ``--clip-path``,
    ``--key-map`` and ``--config``: the :func:`policies.vla.build_vla_policy` arguments of the same names.

    Args:
        backbone_default: ``--backbone``'s default (``None``: not passed on, so the policy's own default, ``auto``).
    """
    if checkpoint:
        parser.add_argument("--checkpoint", help="VLA head weights: project .safetensors, team .pth or RoboVLMs .ckpt "
                                                 "(default: the bundled weights)")
    parser.add_argument("--backbone", default=backbone_default, choices=BACKBONE_CHOICES,
                        help="VLA backbone (default auto: the checkpoint's; kosmos2 for a team file; lite for the "
                             "bundled weights)")
    parser.add_argument("--backbone-path", help="Kosmos-2 folder or cached hub id (weights and/or processor); lite: "
                                                "an EfficientNet-Lite0 .pth")
    parser.add_argument("--clip-path", help="CLIP weights (open_clip file or save_pretrained folder) when the "
                                            "checkpoint carries none")
    parser.add_argument("--key-map", help="JSON {old prefix: new prefix} for a checkpoint layout not known here")
    parser.add_argument("--config", help="robovlms: the team's RoboVLMs config JSON (their VLA_CONFIG_PATH)")
    add_device_argument(parser)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda|cuda:N``: the torch device of the VLA policies (backbone and head; bf16 on CUDA, float32
    on CPU). Default None: not passed on, so the policies' own default, ``cpu``. Checked by :func:`check_device`."""
    parser.add_argument("--device", metavar="cpu|cuda|cuda:N",
                        help="torch device of the VLA policies (default cpu; CUDA runs them in bf16)")


def check_device(device: str) -> str:
    """``device`` if it is ``cpu``, ``cuda`` or ``cuda:N`` and usable on this machine.

    Raises:
        ConfigError: another spelling, CUDA asked for where torch sees no CUDA device, or ``cuda:N`` beyond the
            devices torch sees (one line, naming ``--device``).
    """
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device == "cpu":
        return device
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not count:
        raise ConfigError(f"--device {device}: torch sees no CUDA device on this machine (use --device cpu)")
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise ConfigError(f"--device {device}: torch sees {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return device


def model_source_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :data:`MODEL_SOURCE_FLAGS` given in ``args`` (``None`` ones left out), as policy keyword arguments;
    ``device`` checked (:func:`check_device`).

    Raises:
        ConfigError: an unusable ``--device``.
    """
    kwargs = {flag: getattr(args, flag) for flag in MODEL_SOURCE_FLAGS if getattr(args, flag, None) is not None}
    if "device" in kwargs:
        check_device(kwargs["device"])
    return kwargs


def parse_policy_kwargs(pairs: Sequence[str]) -> dict[str, Any]:
    """``["seed=3", "mode=uniform", "device=cpu"]`` -> ``{"seed": 3, "mode": "uniform", "device": "cpu"}``.

    Values are Python literals (``3``, ``0.5``, ``True``, ``None``, ``[1, 2]``) or JSON (``true``, ``null``) when
    they parse as such, otherwise strings.

    Raises:
        ConfigError: an item without ``=`` or with an empty or non-identifier key.
    """
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--policy-arg must look like [POLICY@]KEY=VALUE, got {pair!r}")
        value: Any = text
        for parse in (ast.literal_eval, json.loads):
            try:
                value = parse(text)
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
        kwargs[key] = value
    return kwargs


def parse_policy_args(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["seed=3", "case2@execution=all"]`` -> ``{"*": {"seed": 3}, "case2": {"execution": "all"}}``.

    ``KEY=VALUE`` applies to every policy of the command, ``POLICY@KEY=VALUE`` to the one named ``POLICY``.

    Raises:
        ConfigError: an item that is not ``[POLICY@]KEY=VALUE``.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, _, pair = item.rpartition("@") if "@" in item.partition("=")[0] else ("*", "", item)
        out.setdefault(target, {}).update(parse_policy_kwargs([pair]))
    return out


def add_family_argument(parser: argparse.ArgumentParser) -> None:
    """``--family {cup,basket,corridor}``: the scenario family (``scenarios.FAMILIES``) of every environment the
    command builds; default ``cup``."""
    parser.add_argument("--family", choices=scenarios.FAMILIES, default=scenarios.DEFAULT_FAMILY,
                        help="scenario family: cup (2025 set-up, calibrated to the operators' guides), basket "
                             "(early 2026, pots, at the spec's distances) or corridor (since V5: a gray basket in a "
                             "corridor; its axes are positions and paths); default %(default)s")


def add_renderer_argument(parser: argparse.ArgumentParser) -> None:
    """``--renderer {tiny,egl,auto}`` (:mod:`envs.rendering`) on every command that renders camera images; default
    ``auto`` (the faster for the image size here; ``tiny`` when EGL cannot start)."""
    parser.add_argument("--renderer", choices=RENDERERS, default="auto",
                        help="tiny (PyBullet's CPU renderer), egl (OpenGL through PyBullet's EGL plugin) or auto "
                             "(default: egl from 130k pixels per frame up when EGL starts here, else tiny)")


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """``--layouts`` and ``--distances``: the family's two axes (layouts x distances; the corridor's positions x
    paths), checked by :func:`sweep_from_args`."""
    parser.add_argument("--layouts", nargs="+", default=None, metavar="NAME",
                        help="layouts, or the corridor's basket positions (default: the family's sweep: every layout; "
                             "the corridor's five V6 positions; 'all': every one, V5 positions included)")
    parser.add_argument("--distances", nargs="+", default=None, metavar="NAME",
                        help="distance presets (close medium far), or the corridor's paths (left_curve straight "
                             "right_curve); default and 'all': every one")


def sweep_from_args(family: str, layouts: Sequence[str] | None, distances: Sequence[str] | None,
                    scenario_dir: str | None = None, flags: tuple[str, str] = ("--layouts", "--distances")
                    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(layouts, distances)`` of ``--layouts`` / ``--distances`` (``flags``: the command's spelling) in
    ``family``: None gives the family's default sweep (:func:`scenarios.default_sweep`), ``all`` every name.

    Raises:
        ScenarioError: a name that is not one of the family's (one line naming the flag, the family's axis and its
            names: a distance preset given to the corridor, a path to a box family), or a name given twice (its
            episodes would run, and count, twice).
    """
    for flag, given in zip(flags, (layouts, distances)):
        repeated = sorted({name for name in given or () if list(given).count(name) > 1})
        if repeated:
            raise scenarios.ScenarioError(f"{flag}: {', '.join(map(repr, repeated))} given more than once")
    default_layouts, default_distances = scenarios.default_sweep(family, scenario_dir)
    axis, second = scenarios.axis_names(family)
    if layouts is None:
        chosen_layouts = default_layouts
    elif list(layouts) == ["all"]:
        chosen_layouts = tuple(scenarios.names(scenario_dir, family))
    else:
        known = scenarios.names(scenario_dir, family)
        for name in layouts:
            if name not in known:
                raise scenarios.ScenarioError(f"{flags[0]}: {name!r} is not a {axis} of the {family} family; "
                                              f"{axis}s: {', '.join(known)}")
        chosen_layouts = tuple(layouts)
    if distances is None or list(distances) == ["all"]:
        chosen_distances = default_distances if distances is None else scenarios.distances(family)
    else:
        chosen_distances = scenarios.check_distances(family, distances, flags[1])
    return chosen_layouts, chosen_distances


def cadence_from_arg(value: str | None) -> Cadence | None:
    """``--cadence PRESET[,FIELD=VALUE...]`` as a :class:`~envs.cadence.Cadence` (None: not given).

    Raises:
        ConfigError: an unknown preset or field, a bad value, a period faster than the physics step (one line
            naming ``--cadence``).
    """
    if value is None:
        return None
    try:
        return Cadence.parse(value)
    except ConfigError as exc:
        raise ConfigError(f"--cadence {value}: {exc}") from None


def add_policy_arg_argument(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """Add ``--policy-arg [POLICY@]KEY=VALUE`` (repeatable; ``dest="policy_arg"``), plus older spellings."""
    parser.add_argument("--policy-arg", *aliases, dest="policy_arg", action="append", default=[],
                        metavar="[POLICY@]KEY=VALUE",
                        help="keyword argument for every policy, or for one with POLICY@ (values: Python/JSON)")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C raises ``KeyboardInterrupt`` (so the same code stops the
    work cleanly: finished results kept, worker processes ended)."""


def _error_line(exc: BaseException) -> str:
    """The one line ``error: ...`` prints for ``exc``; an output path of the wrong kind is named plainly (not
    ``[Errno 17] File exists``, or the temporary file an atomic write renames)."""
    if isinstance(exc, FileExistsError) and exc.filename and Path(exc.filename).is_file():
        return f"{exc.filename} is a file, not a folder: choose another output folder"
    if isinstance(exc, IsADirectoryError):
        target = exc.filename2 or exc.filename
        if target and Path(target).is_dir():
            return f"{target} is a folder, not a file: name a file"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def command(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a command's ``main(argv) -> exit code`` so that it always returns its exit code: an error of the
    project or an unusable file the user named prints ``error: <message>`` (one line) and returns 2, as argparse's
    own usage errors do (returned, not raised); ``--help`` returns 0; Ctrl-C returns 130; SIGTERM raises
    :class:`Terminated` (a ``KeyboardInterrupt``) while ``main`` runs, so it stops as Ctrl-C does, and returns 143."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        terminated: list[int] = []

        def on_sigterm(signum: int, frame: Any) -> None:
            terminated.append(signum)
            raise Terminated(f"signal {signum}")

        handles = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, on_sigterm) if handles else None
        try:
            code = main(*args, **kwargs)
        except SystemExit as exc:  # argparse: usage error (2) or --help (0)
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
        except (MobileVLAError, OSError) as exc:
            message = _error_line(exc)
            print(f"error: {message}", file=sys.stderr)
            code = EXIT_USAGE
        except KeyboardInterrupt:
            print("\nterminated" if terminated else "\ninterrupted", file=sys.stderr)
            code = EXIT_INTERRUPTED
        finally:
            if handles:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        return EXIT_TERMINATED if terminated and code == EXIT_INTERRUPTED else code

    return wrapper
