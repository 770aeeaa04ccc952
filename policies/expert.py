"""Privileged scripted expert: plans key presses around the boxes on the instructed side (``cup``, ``basket``); in
the ``corridor`` family it hands the episode to :class:`policies.corridor_expert.CorridorExpert`.

The expert reads the true scene (``info["scene"]`` from ``env.reset()``) and the true state
(``observation["state"]``). It searches (A*) over sequences of the robot's own key presses: every translation
key moves the robot one press length (``RobotConfig.press_distance``) in one of eight directions, so the plan
is made of exactly the actions a human operator could type (w, q, a, z, s, c, d, e, then SPACE), with a penalty
on key changes so paths look like the operators' guides (long runs of ``w``). It re-plans whenever the robot is
not where the plan expects it.

The instructed side is enforced with a virtual wall from each box to the arena edge on the other side.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import scenarios
from envs.actions import class_action
from envs.keys import MOVE_KEYS, key_to_action
from envs.robot import RobotConfig
from policies.base import Policy
from policies.corridor_expert import CorridorExpert

#: Body-frame direction of each translation key (rad, CCW from forward).
KEY_ANGLES = {key: i * math.pi / 4 for i, key in enumerate(MOVE_KEYS)}
#: Search budget of one plan (lattice cells expanded); the arena holds about 2500 cells of d/3.
MAX_PLAN_NODES = 6000


@dataclass(frozen=True)
class Rect:
    """Axis-aligned rectangle ``[x0, x1] x [y0, y1]`` (m)."""

    x0: float
    x1: float
    y0: float
    y1: float

    def contains(self, x: float, y: float) -> bool:
        """Whether the point ``(x, y)`` (m) lies in the rectangle, edges included."""
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1


class ExpertPolicy(Policy):
    """Privileged A* planner over key presses that passes on the instructed side and stops at the goal; in a
    ``corridor`` scene (``info["scene"]["family"]``) the corridor expert drives instead (same ``epsilon``,
    ``max_perturbations`` and ``seed``).

    Args:
        robot: robot constants (press length, footprint); must match the environment's.
        clearance: extra distance kept from boxes beyond the footprint radius (m).
        goal_tolerance: the plan ends (SPACE) within this distance of the goal point (m); keep it below the
            environment's ``success_radius``.
        turn_penalty: plan cost of changing key, in presses.
        epsilon: probability of replacing the planned key by another safe key whose re-plan costs at most
            ``slack`` presses more: perturbed ("variant") episodes that still succeed. 0 = the canonical plan.
        slack: see ``epsilon`` (presses).
        max_perturbations: at most this many perturbed presses per episode.
        seed: seed of the perturbation generator.

    Raises (from :meth:`act`):
        KeyError: ``reset()`` was not given the environment's info with ``"scene"``, or the observation has
            no ``"state"`` (build the env with ``"state"`` in ``obs_keys``).
    """

    def __init__(
        self,
        robot: RobotConfig | None = None,
        clearance: float = 0.06,
        goal_tolerance: float = 0.12,
        turn_penalty: float = 0.35,
        epsilon: float = 0.0,
        slack: float = 1.0,
        max_perturbations: int = 3,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.robot = robot or RobotConfig()
        self.clearance = clearance
        self.goal_tolerance = goal_tolerance
        self.turn_penalty = turn_penalty
        self.epsilon = epsilon
        self.slack = slack
        self.max_perturbations = max_perturbations
        self.rng = np.random.default_rng(seed)
        self.step_length = self.robot.press_distance
        self.corridor = CorridorExpert(epsilon=epsilon, max_perturbations=max_perturbations, seed=seed)
        self._in_corridor = False
        self._plan: list[str] = []
        self._expected: tuple[float, float] | None = None
        self._blocked: list[Rect] = []
        self._rects: list[tuple[float, float, float, float]] = []

    # ------------------------------------------------------------------ episode
    def _reset(self, instruction: str, info: dict[str, Any]) -> None:
        if "scene" not in info:
            raise KeyError("the expert needs the environment's reset() info (with 'scene'): policy.reset(instruction, info)")
        scene = info["scene"]
        self._in_corridor = scene.get("family") == "corridor"
        if self._in_corridor:
            self.corridor.reset(instruction, info)
            return
        self.goal = tuple(scene["goal"])
        self.arena = scene["arena"]
        inflate = self.robot.radius + self.clearance
        x_min, x_max, y_min, y_max = self.arena
        self._blocked = []
        for box in scene["obstacles"]:
            (cx, cy, _), (sx, sy, _) = box["center"], box["size"]
            rect = Rect(cx - sx / 2 - inflate, cx + sx / 2 + inflate, cy - sy / 2 - inflate, cy + sy / 2 + inflate)
            self._blocked.append(rect)
            # Virtual wall towards the side the robot must not take.
            if scene["side"] == "left":
                self._blocked.append(Rect(rect.x0, rect.x1, y_min - 1.0, cy))
            else:
                self._blocked.append(Rect(rect.x0, rect.x1, cy, y_max + 1.0))
        tx, ty = scene["target_position"]
        shape, *dims = scenarios.TARGET_SHAPES[scene["target_kind"]]
        half_x, half_y = (dims[0], dims[1]) if shape == "box" else (dims[0], dims[0])
        margin_x, margin_y = half_x + self.robot.radius + 0.06, half_y + self.robot.radius + 0.06
        self._blocked.append(Rect(tx - margin_x, tx + 0.5, ty - margin_y, ty + margin_y))
        margin = self.robot.radius
        self._bounds = Rect(x_min + margin, x_max - margin, y_min + margin, y_max - margin)
        self._rects = [(r.x0, r.x1, r.y0, r.y1) for r in self._blocked]
        self._plan, self._expected, self._last_key = [], None, None
        self._perturbations = 0

    def _act(self, observation: Mapping[str, Any]) -> np.ndarray:
        if self._in_corridor:
            return self.corridor.act(observation)
        if "state" not in observation:
            raise KeyError("the expert needs observation['state']: build the env with 'state' in obs_keys")
        x, y, yaw = (float(v) for v in observation["state"][:3])
        self.key = self.next_key(x, y, yaw)
        return key_to_action(self.key)

    # ------------------------------------------------------------------ the evaluation's shadow expert
    def reference(self, start: tuple[float, float, float]
                  ) -> tuple[float | None, list[tuple[float, float]] | None]:
        """From ``start = (x, y, yaw)``: the shortest path's length (m; SPL's) and the expert's own path (m; the
        reference of the trajectory-deviation metrics, :mod:`sim.evaluation.failures`), from one plan. In a box
        scene: the key-press plan's length and the points it passes through (start included), both None if no plan
        exists; in the corridor: the straight line to the stop band and the expert's route. Call after
        :meth:`reset`."""
        if self._in_corridor:
            return self.corridor.shortest_path(start), [(float(x), float(y)) for x, y in self.corridor.route]
        plan = self.plan(start[:2], start[2])
        if plan is None:
            return None, None
        points = [(float(start[0]), float(start[1]))]
        for key in plan:
            points.append(self._move(points[-1], start[2], key))
        return len(plan) * self.step_length, points

    def label(self, state: np.ndarray) -> np.ndarray:
        """The expert's action (float32 ``(3,)``) at a visited ``state = (x, y, yaw, vx, vy, wz)``: the label the
        offline metrics compare a policy with."""
        if self._in_corridor:
            return class_action(self.corridor.decide(np.asarray(state, dtype=np.float64)))
        return key_to_action(self.next_key(*(float(v) for v in state[:3])))

    # ------------------------------------------------------------------ planning
    def next_key(self, x: float, y: float, yaw: float) -> str:
        """Key to press from pose ``(x, y, yaw)`` (m, m, rad); ``"SPACE"`` at the goal."""
        if self._expected is None or math.dist(self._expected, (x, y)) > 0.03 or not self._plan:
            self._plan = self.plan((x, y), yaw, self._last_key) or []
        if not self._plan:
            key = "SPACE"  # at the goal, or no safe plan exists: stop rather than collide
        else:
            key = self._plan[0]
            if self._perturbations < self.max_perturbations and self.epsilon > 0 and self.rng.random() < self.epsilon:
                key = self._perturb((x, y), yaw, key)
                self._perturbations += key != self._plan[0]
            if key != self._plan[0]:
                self._plan = []  # re-plan from wherever the perturbed press leads
            else:
                self._plan = self._plan[1:]
        self._expected = self._move((x, y), yaw, key) if key != "SPACE" else (x, y)
        self._last_key = key
        return key

    def _move(self, pos: tuple[float, float], yaw: float, key: str) -> tuple[float, float]:
        angle = yaw + KEY_ANGLES[key]
        return pos[0] + self.step_length * math.cos(angle), pos[1] + self.step_length * math.sin(angle)

    def _free(self, a: tuple[float, float], b: tuple[float, float]) -> bool:
        """Whether the press from ``a`` to ``b`` stays in bounds and out of every blocked rectangle (checked at a
        quarter, half, three quarters and the end). The planner's inner loop: :class:`Rect`'s test written out over
        plain tuples (the same comparisons, a third of the time)."""
        bx0, bx1, by0, by1 = self._bounds.x0, self._bounds.x1, self._bounds.y0, self._bounds.y1
        rects = self._rects
        ax, ay, dx, dy = a[0], a[1], b[0] - a[0], b[1] - a[1]
        for t in (0.25, 0.5, 0.75, 1.0):
            x, y = ax + dx * t, ay + dy * t
            if not (bx0 <= x <= bx1 and by0 <= y <= by1):
                return False
            for x0, x1, y0, y1 in rects:
                if x0 <= x <= x1 and y0 <= y <= y1:
                    return False
        return True

    def plan(self, start: tuple[float, float], yaw: float, last_key: str | None = None) -> list[str] | None:
        """A* over key presses from ``start`` to within ``goal_tolerance`` of the goal.

        Returns the key list ([] if already there), or None if no collision-free plan on the instructed side
        exists. Cost = presses + ``turn_penalty`` per key change.
        """
        goal, d = self.goal, self.step_length
        if math.dist(start, goal) <= self.goal_tolerance:
            return []
        cell = d / 3

        def h(p: tuple[float, float]) -> float:
            return max(0.0, math.dist(p, goal) - self.goal_tolerance) / d

        # Nodes are lattice cells; the key that reached a cell is kept with it (first expansion wins), so the
        # turn penalty is approximate but the search stays small (a few thousand cells at most).
        counter = 0
        frontier = [(h(start), 0.0, counter, start, last_key, None)]
        parents: dict[tuple[int, int], tuple] = {}
        seen: dict[tuple[int, int], float] = {}
        while frontier:
            _, cost, _, pos, key, parent = heapq.heappop(frontier)
            node = (round(pos[0] / cell), round(pos[1] / cell))
            if node in parents:
                continue
            parents[node] = (parent, key)
            if math.dist(pos, goal) <= self.goal_tolerance:
                keys = []
                while parents[node][0] is not None:
                    keys.append(parents[node][1])
                    node = parents[node][0]
                return keys[::-1]
            if len(parents) > MAX_PLAN_NODES:
                return None
            for nkey in MOVE_KEYS:
                npos = self._move(pos, yaw, nkey)
                if not self._free(pos, npos):
                    continue
                ncost = cost + 1.0 + (self.turn_penalty if key is not None and nkey != key else 0.0)
                nnode = (round(npos[0] / cell), round(npos[1] / cell))
                if nnode in parents or seen.get(nnode, math.inf) <= ncost:
                    continue
                seen[nnode] = ncost
                counter += 1
                heapq.heappush(frontier, (ncost + h(npos), ncost, counter, npos, nkey, node))
        return None

    def _perturb(self, pos: tuple[float, float], yaw: float, planned: str) -> str:
        """A different safe key whose remaining plan is at most ``slack`` presses longer."""
        base = len(self._plan)
        options = []
        for key in MOVE_KEYS:
            if key == planned:
                continue
            npos = self._move(pos, yaw, key)
            if not self._free(pos, npos):
                continue
            rest = self.plan(npos, yaw, key)
            if rest is not None and len(rest) + 1 <= base + self.slack:
                options.append(key)
        return options[int(self.rng.integers(len(options)))] if options else planned
