"""Privileged expert of the corridor family: drives the eight action classes to the basket along the instructed
path and stops in the band in front of it, at whatever cadence the environment runs.

It reads the true scene (``info["scene"]``: the basket, the stop band, the path's swing) and how actions move the
robot (``info["control"]``: speed, rotation rate, cadence, latency) from ``env.reset()``, and the true state from
``observation["state"]``. Per decision:

1. **Facing (where a human turns).** On the ``straight`` path it first turns in place to face the basket, as the
   operators' V5 guides ``left_straight`` / ``right_straight`` start with one rotation and then drive FORWARD
   (MoNaVLA ``core_replay_db.json``); on the curves it keeps its heading and turns only if, close to the basket,
   it does not face it within half the tolerance.
2. **Route.** Pure pursuit of the route: straight at the basket, or a curve swinging ``route_bulge`` m off the
   straight line (left or right) that ends 0.5 m straight in front of the goal; the direction to a point 0.45 m
   ahead on the route is snapped to the nearest translation class (FORWARD, FWD+L, FWD+R, LEFT, RIGHT), so the
   robot mixes FORWARD with the diagonals as the operators' data does.
3. **Stop.** ``async`` cadences: it predicts where the robot comes to rest if it says STOP now (the command in
   force goes on until the STOP takes effect: latency, loop tick, the joystick's hold; then it brakes) and stops
   when that is nearer the middle of the band than waiting one more decision would be. ``sync`` (V5 pulses of
   0.18 m): close to the basket it searches the pulse sequences of up to three decisions that end in the band
   and takes the first pulse of the shortest (the band is 0.10 m, a pulse 0.18 m: a FWD+L then FWD+R covers
   0.25 m forward).

``epsilon > 0`` replaces a decision by another translation class with that probability (at most
``max_perturbations`` times, never within 1 m of the basket): perturbed ("variant") episodes the expert recovers
from, for data generation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from envs.actions import CLASS_ACTIONS, class_action
from envs.cadence import Cadence
from envs.settings import PHYSICS_HZ
from envs.stopping import stop_metrics, wrap
from policies.base import Policy
from scenarios.spec import target_half_extents

#: Translation classes and their direction in the robot's frame (rad, + left).
DIRECTIONS = {name: math.atan2(a[1], a[0]) for name, a in CLASS_ACTIONS.items() if a[0] or a[1]}
#: Look-ahead of the pure pursuit along the route (m) and the straight final approach of the curves (m).
LOOKAHEAD = 0.45
APPROACH = 0.5
#: Margin kept inside the stop band and the facing tolerance when planning (m, rad).
BAND_MARGIN = 0.015
#: ``async``: margin kept inside the band by a predicted rest pose (m): the prediction is the environment's own
#: kinematics, so it is off by the ramp's rounding only.
PREDICTION_MARGIN = 0.005
#: The pulse search of ``sync`` cadences: how close to the basket it starts (m of front gap) and its depth.
PULSE_SEARCH_GAP = 1.2
PULSE_SEARCH_DEPTH = 3


def _ramp_distance(speed: float, accel: float, decel: float, drive_s: float, dt: float) -> float:
    """Distance (m) covered from rest by a command of ``speed`` driving ``drive_s`` then stopping, with the
    environment's ramp at ``dt`` (the :func:`envs.robot.ramp` limits)."""
    v = dist = 0.0
    t = 0.0
    while t < drive_s - 1e-12:
        v = min(speed, v + accel * dt)
        dist += v * dt
        t += dt
    while v > 0:
        v = max(0.0, v - decel * dt)
        dist += v * dt
    return dist


class CorridorExpert(Policy):
    """The corridor family's privileged expert (module doc).

    Args:
        epsilon: probability of a perturbed decision (variants); 0 = canonical.
        max_perturbations: at most this many per episode.
        seed: seed of the perturbation generator.

    Raises (from :meth:`reset` / :meth:`act`):
        KeyError: no ``"scene"`` / ``"control"`` in the reset info, or no ``"state"`` in the observation.
    """

    def __init__(self, epsilon: float = 0.0, max_perturbations: int = 3, seed: int | None = None) -> None:
        super().__init__()
        self.epsilon = float(epsilon)
        self.max_perturbations = int(max_perturbations)
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ episode
    def _reset(self, instruction: str, info: dict[str, Any]) -> None:
        if "scene" not in info or "control" not in info:
            raise KeyError("the corridor expert needs the environment's reset() info (with 'scene' and 'control')")
        scene, control = info["scene"], info["control"]
        self.control = control
        self.target = tuple(scene["target_position"])
        self.half = target_half_extents(scene["target_kind"])
        self.band = tuple(scene["stop_band"])
        self.tolerance = scene["facing_tolerance"] or math.pi
        self.path = scene["distance"]
        self.radius = control["radius"]
        self.dt = 1.0 / PHYSICS_HZ
        self.cadence = Cadence.parse(control["cadence"])
        self.sync = self.cadence.mode == "sync"
        self.latency = Cadence.substeps(float(control.get("action_latency") or 0.0))
        self._clock = 0  # the decision's time in substeps, kept as the environment keeps it
        start = scene["start"]
        self.route = self._route(start, scene["goal"], scene["route_bulge"])
        self.facing_first = self.path == "straight"
        self._facing_done = not self.facing_first
        self._perturbations = 0
        self._stopping = False  # async: a STOP was decided; keep it while the robot brakes
        self._pulses = self._pulse_model() if self.sync else None

    def _route(self, start, goal, bulge: float) -> np.ndarray:
        """``(N, 2)`` points of the route (m): straight at the basket's centre (``straight``), or a curve from the
        start to a point ``APPROACH`` m before the goal swinging ``bulge`` m off the straight line, then straight
        to the goal."""
        s = np.asarray(start[:2], float)
        if self.path == "straight":
            t = np.asarray(self.target, float)
            return s + np.linspace(0.0, 1.0, 200)[:, None] * (t - s)
        g = np.asarray(goal, float)
        a = g - np.array([APPROACH, 0.0])
        u = np.linspace(0.0, 1.0, 200)[:, None]
        line = s + u * (a - s)
        d = (a - s) / max(np.linalg.norm(a - s), 1e-9)
        normal = np.array([-d[1], d[0]])  # left of the way
        curve = line + bulge * np.sin(np.pi * u) * normal
        tail = a + np.linspace(0.0, 1.0, 30)[1:, None] * (g - a)
        return np.concatenate([curve, tail])

    def _pulse_model(self) -> dict[str, tuple[float, float]]:
        """``sync``: what one decision of each class does from rest: ``(distance m, turn rad)``."""
        c, cad = self.control, self.cadence
        move = _ramp_distance(c["speed"], c["acceleration"], c["deceleration"], cad.move_s, self.dt)
        rot_s = cad.rotation_move_s or cad.move_s
        turn = _ramp_distance(c["rotation_rate"], c["angular_acceleration"], c["angular_acceleration"], rot_s, self.dt)
        return {"move": (move, 0.0), "turn": (0.0, turn)}

    # ------------------------------------------------------------------ deciding
    def _act(self, observation: Mapping[str, Any]) -> np.ndarray:
        if "state" not in observation:
            raise KeyError("the corridor expert needs observation['state']: build the env with 'state' in obs_keys")
        return class_action(self.decide(np.asarray(observation["state"], dtype=np.float64)))

    def decide(self, state: np.ndarray) -> str:
        """The class to take at ``state = (x, y, yaw, vx, vy, wz)`` (world frame, m, rad, m/s, rad/s); one call per
        decision of the episode, in order (the expert keeps the simulated clock)."""
        name = self._decide(state)
        self._clock = self.cadence.next_frame(self._clock, self.latency)
        return name

    def _decide(self, state: np.ndarray) -> str:
        x, y, yaw = state[:3]
        metrics = stop_metrics((x, y, yaw), self.radius, self.target, self.half)
        if not self._facing_done:
            turn = self._turn(state, metrics.heading_error, precise=True)
            if turn is not None:
                return turn
            self._facing_done = True
        near = metrics.front_gap < APPROACH + self.band[1]
        drive = (self._turn(state, metrics.heading_error, precise=False) if near else None) or self._steer(state)
        name = self._pulse_decision(state) if self.sync else self._stop_decision(state, drive)
        return self._perturb(name or drive, metrics.front_gap)

    def _turn(self, state: np.ndarray, error: float, precise: bool) -> str | None:
        """A rotation towards the basket when the heading error calls for one: more than half of what one decision
        turns (``precise``: the first facing), or more than half the facing tolerance (late correction)."""
        step = self._turn_step(state)
        predicted = error - state[5] * self._effect_delay()  # the spin in force goes on until the decision acts
        limit = step / 2 if precise else max(self.tolerance / 2, step / 2)
        if abs(predicted) <= limit:
            return None
        return "ROT_L" if predicted > 0 else "ROT_R"

    def _turn_step(self, state: np.ndarray) -> float:
        if self.sync:
            return self._pulses["turn"][1]
        return self.control["rotation_rate"] * self._decision_interval()

    def _effect_delay(self, stop: bool = False, later: int = 0) -> float:
        """Seconds from now until a decision taken ``later`` substeps from now takes effect (latency, the loop's
        tick, a STOP's hold: :meth:`envs.cadence.Cadence.effect_substep`)."""
        return (self.cadence.effect_substep(self._clock + later, self.latency, stop) - self._clock) * self.dt

    def _decision_interval(self) -> float:
        return (self.cadence.next_frame(self._clock, self.latency) - self._clock) * self.dt

    def _steer(self, state: np.ndarray) -> str:
        """Pure pursuit: the translation class whose direction is nearest the direction to the look-ahead point."""
        x, y, yaw = state[:3]
        here = np.array([x, y])
        i = int(np.argmin(np.linalg.norm(self.route - here, axis=1)))
        ahead = np.cumsum(np.r_[0.0, np.linalg.norm(np.diff(self.route[i:], axis=0), axis=1)])
        j = i + int(np.searchsorted(ahead, LOOKAHEAD))
        point = self.route[min(j, len(self.route) - 1)]
        if np.linalg.norm(point - here) < 1e-6:
            point = self.route[-1] + (self.route[-1] - self.route[-2])
        bearing = wrap(math.atan2(point[1] - y, point[0] - x) - yaw)
        return min(DIRECTIONS, key=lambda name: abs(wrap(DIRECTIONS[name] - bearing)))

    # ------------------------------------------------------------------ stopping
    def _stop_decision(self, state: np.ndarray, drive: str) -> str | None:
        """``async``: STOP when the predicted rest pose is nearer the band's middle than the one after driving
        ``drive`` for one decision more, and keep saying it while the robot brakes; None to drive (or, at rest
        short of the band, to creep on)."""
        x, y, yaw, vx, vy, _ = state
        speed = math.hypot(vx, vy)
        interval = self.cadence.next_frame(self._clock, self.latency) - self._clock
        if self._stopping:
            if speed > 1e-6 or self._stoppable(state, stop_metrics(state[:3], self.radius, self.target,
                                                                   self.half).front_gap):
                return "STOP"
            self._stopping = False  # at rest short of the band: drive on
        decel = 2 * self.control["deceleration"]
        velocity, here = np.array([vx, vy]), np.array([x, y])
        gap_now = self._gap(here + velocity * self._effect_delay(stop=True) + velocity * speed / decel, yaw)
        switch, stop_later = self._effect_delay(), self._effect_delay(stop=True, later=interval)

        def gap_later(name: str) -> float:
            """After the current motion until ``name`` takes effect, ``name`` until a STOP at the next decision."""
            v = self._class_velocity(name, yaw)
            return self._gap(here + velocity * switch + v * (stop_later - switch) + v * np.linalg.norm(v) / decel,
                             yaw)

        low, high = self.band
        middle = (low + high) / 2

        def inside(gap: float) -> bool:
            return low + PREDICTION_MARGIN <= gap <= high - PREDICTION_MARGIN

        if speed < 1e-6:
            self._stopping = self._stoppable(state, gap_now)
            return "STOP" if self._stopping else None
        later = gap_later(drive)
        if inside(gap_now) and (not inside(later) or abs(gap_now - middle) <= abs(later - middle)):
            self._stopping = True
            return "STOP"
        if later >= low + PREDICTION_MARGIN:
            return None  # the next decision can still stop in the band
        # ``drive`` would carry the robot past the band: a slower approach that lands in it, else stop short
        slower = [name for name in ("FWD+L", "FWD+R") if inside(gap_later(name))]
        if slower:
            return min(slower, key=lambda name: abs(gap_later(name) - middle))
        self._stopping = True
        return "STOP"

    def _gap(self, position: np.ndarray, yaw: float) -> float:
        return stop_metrics((position[0], position[1], yaw), self.radius, self.target, self.half).front_gap

    def _class_velocity(self, name: str, yaw: float) -> np.ndarray:
        """World velocity (m/s) a translation class drives at (zero for the others)."""
        if name not in DIRECTIONS:
            return np.zeros(2)
        a = yaw + DIRECTIONS[name]
        return self.control["speed"] * np.array([math.cos(a), math.sin(a)])

    def _stoppable(self, state: np.ndarray, gap: float) -> bool:
        error = stop_metrics(state[:3], self.radius, self.target, self.half).heading_error
        return self.band[0] <= gap <= self.band[1] and abs(error) <= self.tolerance - BAND_MARGIN

    def _pulse_decision(self, state: np.ndarray) -> str | None:
        """``sync``: STOP in the band; near it, the first decision of the shortest pulse sequence (up to
        ``PULSE_SEARCH_DEPTH``) that ends in the band facing the basket; None further away."""
        pose = tuple(state[:3])
        metrics = stop_metrics(pose, self.radius, self.target, self.half)
        if self._in_band(metrics):
            return "STOP"
        if metrics.front_gap > PULSE_SEARCH_GAP:
            return None
        moves = [*DIRECTIONS, "ROT_L", "ROT_R"]
        for depth in range(1, PULSE_SEARCH_DEPTH + 1):
            best = None
            for seq in itertools.product(moves, repeat=depth):
                end = self._after_pulses(pose, seq)
                if end is not None and self._in_band(stop_metrics(end, self.radius, self.target, self.half)):
                    cost = sum(abs(DIRECTIONS.get(name, 0.0)) for name in seq)  # prefer FORWARD-like sequences
                    if best is None or cost < best[0]:
                        best = (cost, seq[0])
            if best is not None:
                return best[1]
        return None

    def _in_band(self, metrics) -> bool:
        low, high = self.band
        return (low + BAND_MARGIN <= metrics.front_gap <= high - BAND_MARGIN
                and abs(metrics.heading_error) <= self.tolerance - BAND_MARGIN)

    def _after_pulses(self, pose, seq) -> tuple[float, float, float] | None:
        """The pose after the pulses ``seq`` from rest at ``pose``; None if one ends past the band (overshoot)."""
        x, y, yaw = pose
        move, turn = self._pulses["move"][0], self._pulses["turn"][1]
        for name in seq:
            if name in DIRECTIONS:
                a = yaw + DIRECTIONS[name]
                x, y = x + move * math.cos(a), y + move * math.sin(a)
            else:
                yaw += turn if name == "ROT_L" else -turn
            if stop_metrics((x, y, yaw), self.radius, self.target, self.half).overshot(self.band):
                return None
        return x, y, yaw

    # ------------------------------------------------------------------ variants
    def _perturb(self, name: str, gap: float) -> str:
        if (self.epsilon <= 0 or self._perturbations >= self.max_perturbations or name == "STOP"
                or name.startswith("ROT") or gap < 1.0 or self.rng.random() >= self.epsilon):
            return name
        others = [n for n in ("FORWARD", "FWD+L", "FWD+R") if n != name]
        self._perturbations += 1
        return others[int(self.rng.integers(len(others)))]

    # ------------------------------------------------------------------ the evaluation's shadow expert
    def shortest_path(self, start) -> float:
        """The shortest path (m) from ``start = (x, y, yaw)`` to a stop in the band: straight at the basket's
        centre until the front is ``band[0]`` m from it (SPL's shortest path; the corridor is empty)."""
        x, y = float(start[0]), float(start[1])
        tx, ty = self.target
        d = math.hypot(tx - x, ty - y)
        if d < 1e-9:
            return 0.0
        ux, uy = (tx - x) / d, (ty - y) / d
        lo, hi = 0.0, d
        for _ in range(50):  # the first point of the ray whose front gap is band[0]
            mid = (lo + hi) / 2
            gap = stop_metrics((x + ux * mid, y + uy * mid, math.atan2(uy, ux)), self.radius, self.target,
                               self.half).front_gap
            lo, hi = (mid, hi) if gap > self.band[0] else (lo, mid)
        return lo
