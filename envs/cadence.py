"""The robot's cadence in simulated time: when a policy decides, when its decision moves the robot, and how long a
command keeps it moving (the ``class`` actuation of :class:`envs.box_avoid.BoxAvoidEnv`).

The team's lesson of 2026 is the gap between the cadence of its data and that of its robot
(``../shared/reference/TEAM_STACK_2026.md`` sections 1 and 3); this module makes both part of the closed loop.
One decision = one environment step:

- the frame is taken at the decision time ``t``; the decision takes effect ``latency`` later (the policy's,
  per component or measured: :class:`sim.evaluation.config.Latency`), at the next tick of the robot's command loop
  (``loop_hz``); a STOP takes effect ``stop_hold_s`` later still (the joystick reader keeps the last key that long);
- ``sync`` (the V5 collector and the robot's old SYNC mode): the command drives for ``move_s`` and stops; the loop
  waits, and the next frame is taken ``period_s`` after the command took effect (move, stop pulse, rest);
- ``async`` (V6 joystick data, the deployed loop): the command is held until the next one takes effect, or until
  ``coast_s`` after it took effect without a newer one (the COAST timer), a rotation only ``rotation_move_s``; the
  next frame is taken ``max(period_s, latency)`` after this one (the loop decides again as soon as the previous
  decision is out and the period is over).

Presets (:data:`PRESETS`), each value with its source (EdgeGroundVLA / MoNaVLA paths):

========== ===== ======== ====== ========== ====== ========= ======= ================================================
preset     mode  period_s move_s rotation_s coast_s stop_hold loop_hz source
========== ===== ======== ====== ========== ====== ========= ======= ================================================
v5         sync  1.35     0.4    0.4        -      0         -       V5 collection: 0.4 s move timer + 0.15 s stop
                                                                     pulse + 0.8 s rest (MoNaVLA
                                                                     ``scripts/gradio_data_collector.py``
                                                                     ``auto_play_core``; EdgeGroundVLA ``docs/v5/
                                                                     DRIFT_GROUNDING_LATENCY_ANALYSIS_20260623.md``)
v6-data    async 1/6      -      -          -      0.3       10      V6 joystick data: one frame per published
                                                                     command, ~6.0 Hz measured (5.2-6.6,
                                                                     ``docs/DATASET_V6_STATUS.md``); commands
                                                                     published at >= 0.10 s (``ASYNC_INTERVAL``);
                                                                     ``JITTER_HOLD = 0.30`` s after the stick is
                                                                     released (``mona_dashboard.py``
                                                                     ``DashboardJoystickReader``)
deployed   async 0.1      -      0.4        4.0    0         10      the robot's loop (``mona_dashboard.py``
                                                                     ``_goalnav_exec``): the last command
                                                                     re-published at 10 Hz, zero after ``COAST``
                                                                     = 4.0 s (1.2 s before 2026-07-23); rotations
                                                                     stop after 0.4 s (rule of 2026-07-30,
                                                                     ``VLAControlManager(move_duration=0.4)``);
                                                                     decisions as fast as the policy answers (the
                                                                     ~1.3 Hz in bursts of 0.08 / 0.08 / 2.2 s comes
                                                                     from the grounder's latency)
========== ===== ======== ====== ========== ====== ========= ======= ================================================

Our readings: the deployed ``period_s`` (no decision can be published faster than the 10 Hz loop re-publishes);
that the 0.3 s hold belongs to the joystick reader (the deployed loop publishes a policy's STOP at once); and the
V6 rate as the decision rate of its data (the operator's reaction time is not modelled).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from envs.settings import PHYSICS_HZ
from foundations.errors import ConfigError

CadenceMode = Literal["sync", "async"]
#: The cadence of the ``class`` actuation unless told otherwise: the robot's own.
DEFAULT_CADENCE = "deployed"
#: The ``class`` actuation's episode length in simulated time unless told otherwise (s): about twice the longest
#: V5 episode (20 steps of 1.35 s).
DEFAULT_MAX_TIME = 45.0


@dataclass(frozen=True)
class Cadence:
    """When decisions are taken and how long their commands drive (s); see the module doc.

    Attributes:
        name: the preset it came from (``v5``, ``v6-data``, ``deployed``), with ``+`` when a value was changed.
        mode: ``sync`` (a command drives ``move_s`` and the loop waits) or ``async`` (commands are held).
        period_s: ``sync``: from a command's effect to the next frame (the whole move / stop / rest cycle);
            ``async``: the shortest time between two frames (decisions).
        move_s: ``sync``: how long a translation drives before the robot stops. Unused in ``async``.
        rotation_move_s: how long a rotation drives before it stops (None in ``async``: held like a translation).
        coast_s: ``async``: a command stops this long after it took effect if no newer one came (None: never).
        stop_hold_s: ``async``: a STOP takes effect this much later; the previous command goes on meanwhile.
        loop_hz: commands take effect at the ticks of a loop at this rate (None: at once).
    """

    name: str
    mode: CadenceMode
    period_s: float
    move_s: float | None = None
    rotation_move_s: float | None = None
    coast_s: float | None = None
    stop_hold_s: float = 0.0
    loop_hz: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in ("sync", "async"):
            problems.append(f"mode must be sync or async, got {self.mode!r}")
        for field in ("period_s", "move_s", "rotation_move_s", "coast_s", "stop_hold_s", "loop_hz"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):
                problems.append(f"{field} must be a finite number >= 0 (or unset), got {value!r}")
        if problems:
            raise ConfigError(f"cadence {self.name}: " + "; ".join(problems))
        step = 1.0 / PHYSICS_HZ
        for field in ("period_s", "move_s", "rotation_move_s", "coast_s"):
            value = getattr(self, field)
            if value is not None and value < step - 1e-12:
                raise ConfigError(f"cadence {self.name}: {field} = {value:g} s is faster than the physics step "
                                  f"(1/{PHYSICS_HZ} s)")
        if self.loop_hz is not None and not 0 < self.loop_hz <= PHYSICS_HZ:
            raise ConfigError(f"cadence {self.name}: loop_hz = {self.loop_hz:g} must be in (0, {PHYSICS_HZ}] "
                              "(the physics rate)")
        if self.mode == "sync":
            if self.move_s is None:
                raise ConfigError(f"cadence {self.name}: a sync cadence needs move_s")
            if max(self.move_s, self.rotation_move_s or 0.0) > self.period_s:
                raise ConfigError(f"cadence {self.name}: move_s / rotation_move_s must fit in period_s "
                                  f"({self.period_s:g} s)")

    # ------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, value: str | dict[str, Any] | Cadence) -> Cadence:
        """``"deployed"``, ``"deployed,coast_s=1.2"`` (a preset with values changed), a dict of the fields (as
        ``config.json`` stores it) or a :class:`Cadence`.

        Raises:
            ConfigError: an unknown preset or field, a value that is not a number, or an invalid cadence (one
                line naming it).
        """
        if isinstance(value, Cadence):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ConfigError(f"cadence: unknown field(s) {sorted(unknown)}")
            try:
                return cls(**value)
            except TypeError as exc:
                raise ConfigError(f"cadence: {exc}") from None
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"cadence must be a preset ({', '.join(PRESETS)}) optionally followed by "
                              f",FIELD=VALUE, got {value!r}")
        head, *pairs = [part.strip() for part in value.split(",")]
        if head not in PRESETS:
            raise ConfigError(f"unknown cadence {head!r}; presets: {', '.join(PRESETS)} (then ,FIELD=VALUE to "
                              "change a value, e.g. deployed,coast_s=1.2)")
        changes: dict[str, Any] = {}
        fields = {f.name for f in dataclasses.fields(cls)} - {"name"}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            if not sep or key not in fields:
                raise ConfigError(f"cadence {value!r}: {pair!r} is not FIELD=VALUE with FIELD one of "
                                  f"{', '.join(sorted(fields))}")
            if key == "mode":
                changes[key] = text
                continue
            try:
                changes[key] = None if text.lower() in ("none", "") else float(text)
            except ValueError:
                raise ConfigError(f"cadence {value!r}: {key} = {text!r} is not a number") from None
        preset = PRESETS[head]
        return dataclasses.replace(preset, name=head + ("+" if changes else ""), **changes) if changes else preset

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict (``config.json``, the env's reset info)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        values = ", ".join(f"{k} {v:g}" for k, v in self.to_dict().items() if isinstance(v, float))
        return f"{self.name} ({self.mode}: {values})"

    # ------------------------------------------------------------------ the episode's limits
    def check_fits(self, max_time_s: float) -> None:
        """Raise :class:`ConfigError` when a hold of this cadence (``period_s``, ``move_s``, ``rotation_move_s``,
        ``coast_s``, ``stop_hold_s``) is longer than the episode (``max_time_s``, s): it could never end."""
        for field in ("period_s", "move_s", "rotation_move_s", "coast_s", "stop_hold_s"):
            value = getattr(self, field)
            if value is not None and value > max_time_s:
                raise ConfigError(f"cadence {self.name}: {field} = {value:g} s is longer than the episode "
                                  f"({max_time_s:g} s)")

    # ------------------------------------------------------------------ in substeps
    @staticmethod
    def substeps(seconds: float) -> int:
        """``seconds`` in physics substeps (rounded; at least 1 for a positive time)."""
        n = round(seconds * PHYSICS_HZ)
        return max(1, n) if seconds > 0 else 0

    def effect_substep(self, decided: int, latency: int, stop: bool) -> int:
        """Substep at which a command decided at substep ``decided`` with ``latency`` substeps takes effect: the
        next loop tick after ``decided + latency``, then ``stop_hold_s`` later for a STOP (``async``)."""
        at = decided + latency
        if self.loop_hz is not None:
            tick = PHYSICS_HZ / self.loop_hz
            at = int(math.ceil(at / tick - 1e-9) * tick)
        if stop and self.mode == "async":
            at += self.substeps(self.stop_hold_s)
        return at

    def drive_substeps(self, rotation: bool) -> int | None:
        """How long a command drives once in effect (substeps), None for held until replaced."""
        if rotation and self.rotation_move_s is not None:
            return self.substeps(self.rotation_move_s)
        if self.mode == "sync":
            return self.substeps(self.move_s)
        return None if self.coast_s is None else self.substeps(self.coast_s)

    def next_frame(self, decided: int, latency: int) -> int:
        """Substep of the next decision's frame after a decision at ``decided`` with ``latency`` substeps."""
        if self.mode == "sync":
            return decided + latency + self.substeps(self.period_s)
        return decided + max(self.substeps(self.period_s), latency)


#: The team's set-ups (module doc: each value's source).
PRESETS: dict[str, Cadence] = {
    "v5": Cadence("v5", "sync", period_s=1.35, move_s=0.4, rotation_move_s=0.4),
    "v6-data": Cadence("v6-data", "async", period_s=1 / 6, stop_hold_s=0.3, loop_hz=10.0),
    "deployed": Cadence("deployed", "async", period_s=0.1, rotation_move_s=0.4, coast_s=4.0, loop_hz=10.0),
}


@dataclass(frozen=True)
class Command:
    """A body-frame velocity command in force from substep ``start`` until ``end`` (exclusive; None: until a newer
    command takes effect): ``velocity`` ``(vx, vy)`` m/s, ``yaw_rate`` rad/s."""

    start: int
    end: int | None
    velocity: tuple[float, float]
    yaw_rate: float


class CommandSchedule:
    """The commands of an episode in the order they take effect; :meth:`phases` says what drives the robot at
    each substep (the latest command that has started, zero after its end)."""

    def __init__(self) -> None:
        self.commands: list[Command] = []

    def add(self, command: Command) -> None:
        """Schedule ``command``; one taking effect before an already scheduled one replaces it from its start on
        (decisions take effect in order unless their latencies differ: a newer decision always wins)."""
        self.commands = [c for c in self.commands if c.start < command.start]
        self.commands.append(command)

    def _in_force(self, t: int) -> tuple[tuple[float, float], float]:
        current = None
        for c in self.commands:
            if c.start <= t:
                current = c
        if current is None or (current.end is not None and t >= current.end):
            return (0.0, 0.0), 0.0
        return current.velocity, current.yaw_rate

    def phases(self, start: int, stop: int) -> list[tuple[int, tuple[float, float], float]]:
        """``[(substeps, velocity, yaw_rate), ...]`` covering ``[start, stop)``; commands that ended before
        ``stop`` and were replaced are forgotten."""
        bounds = sorted({start, stop, *(t for c in self.commands for t in (c.start, c.end)
                                        if t is not None and start < t < stop)})
        out: list[tuple[int, tuple[float, float], float]] = []
        for a, b in zip(bounds, bounds[1:]):
            velocity, yaw_rate = self._in_force(a)
            if out and out[-1][1:] == (velocity, yaw_rate):
                out[-1] = (out[-1][0] + b - a, velocity, yaw_rate)
            else:
                out.append((b - a, velocity, yaw_rate))
        latest = max((i for i, c in enumerate(self.commands) if c.start <= stop), default=None)
        if latest is not None:
            self.commands = self.commands[latest:]
        return out


def describe(presets: Sequence[str] = tuple(PRESETS)) -> str:
    """One line per preset (``--cadence`` help and the README)."""
    return "; ".join(str(PRESETS[name]) for name in presets)
