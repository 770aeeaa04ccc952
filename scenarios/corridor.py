"""The ``corridor`` family: the team's task since V5 (2026-04): a gray basket in an obstacle-free corridor.

Its two axes are the basket's **position** (the layouts: ``scenarios/corridor/layouts/*.toml``) and the **path**
the robot takes to it (``[paths]`` of ``scenarios/corridor/defaults.toml``), where the box families have layout x
distance. A position is defined as the team defines it: by the basket's image x-centre ``cx`` in the robot's first
frame (``image_x``, a band of the image width); :meth:`CorridorLayout.sample` draws ``cx`` in the band and places the
basket where the robot's camera sees it there, through the camera model the environment passes in
(:class:`TargetPlacer`, :func:`envs.camera.lateral_for_image_x`), as the team placed it by watching the live ``cx``.

- V6 positions (EdgeGroundVLA ``robovlm_nav/serve/mona_dashboard.py`` ``COLLECT_CX_POSITIONS``): ``strong_left``
  0.10-0.15, ``weak_left`` 0.20-0.25, ``center`` 0.475-0.525, ``weak_right`` 0.75-0.80, ``strong_right`` 0.85-0.90;
  the default sweep.
- V5 positions ``v5_left`` 0.10-0.38, ``v5_center`` 0.38-0.62, ``v5_right`` 0.62-0.90: the first word of a V5
  path type is the basket's position, measured as these start-frame ``cx`` ranges over 30 episodes (EdgeGroundVLA
  ``docs/wiki/real-robot-closed-loop.md``; ``docs/v5/closed_loop_eval/CH61_OWL_LIVE_FAILURE_AND_FIX.md`` section 10).
  A V5 path type is a position and a path: ``left_right`` = ``v5_left`` x ``right_curve``
  (:func:`v5_path_type`).
- Paths: ``left_curve``, ``straight``, ``right_curve`` (V6 ``COLLECT_TRACKA_PATHS``; V5's second word
  ``left``/``straight``/``right`` is "the curve direction of the approach path", CH61 section 10). A path does not
  change the scene, only the route the expert drives (``route_bulge``).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
from pydantic import Field, field_validator, model_validator

from scenarios.spec import (
    TARGET_NAMES,
    Appearance,
    Obstacle,
    ObstacleSpec,
    Range,
    ScenarioError,
    SceneSpec,
    Strict,
    TargetKind,
    Vec2,
    Vec3,
    rgb,
    target_half_extents,
)

#: V5 path type names of a V5 position x path (``{position}_{shape}``, MoNaVLA ``PATH_TYPES``).
V5_SHAPES = {"left_curve": "left", "straight": "straight", "right_curve": "right"}


class TargetPlacer(Protocol):
    """What the corridor needs of the robot to place its basket (the environment provides it)."""

    #: The robot's footprint radius (m): the stop band is measured from its front.
    radius: float

    def lateral_for_image_x(self, image_x: float, target_x: float, half_extents: Vec3, start: Vec3,
                            camera_offset: Vec3) -> float:
        """Sideways position (m) of a box centred at ``target_x`` that the start frame shows at ``image_x``."""


class Corridor(Strict):
    """``[corridor]``: the two walls (m). ``wall_colour`` (RGB in [0, 1]) is the nominal one; domain randomisation
    draws from ``randomization.wall_colours``. The walls run from ``behind_start`` behind the start to
    ``beyond_target`` past the basket's far face at the nominal start distance. Values and their sources:
    ``scenarios/corridor/defaults.toml``."""

    width: float = Field(gt=0, description="between the walls' inner faces (m)")
    wall_height: float = Field(gt=0)
    wall_thickness: float = Field(gt=0)
    wall_colour: Vec3
    behind_start: float = Field(gt=0, description="corridor behind the robot's start (m)")
    beyond_target: float = Field(gt=0, description="corridor beyond the basket's far face (m)")

    @field_validator("wall_colour")
    @classmethod
    def _rgb(cls, v: Vec3) -> Vec3:
        return rgb(v)


class CorridorTarget(Strict):
    """``[target]``: the basket (a :data:`scenarios.spec.TargetKind`) and the success rule: the robot's front within
    ``stop_band`` (m) of the basket's footprint, its heading within ``facing_tolerance`` (deg in the file, rad in
    :class:`SceneSpec`) of the basket's centre."""

    kind: TargetKind
    stop_band: Range = Field(description="the robot's front to the basket at a successful stop (m)")
    facing_tolerance: float = Field(gt=0, le=90, description="deg between heading and the basket's centre")


class Path(Strict):
    """``[paths.<name>]``: one route to the basket. ``bulge`` shapes only the expert's route
    (``SceneSpec.route_bulge``); the scene is the same on every path."""

    bulge: float = Field(description="sideways swing off the straight route at its middle (m, + left)")


class CorridorRandomization(Appearance):
    """``[randomization]``: start-pose jitter (uniform +-: ``start_xy`` m, ``start_yaw`` deg, ``start_gap`` m),
    drawn on every reset with ``jitter``; with ``domain_randomization`` also a wall colour from ``wall_colours``
    (RGB) and the :class:`~scenarios.spec.Appearance` fields."""

    start_xy: Vec2
    start_yaw: float = Field(ge=0)
    start_gap: float = Field(ge=0, description="+- jitter of the start distance (m)")
    wall_colours: list[Vec3] = Field(min_length=1)


class CorridorLayout(Strict):
    """Schema of a corridor layout (a basket position) after merging over the family's defaults."""

    setup: str = Field(description="the team's data set that defines the position (V5, V6)")
    image_x: Range = Field(description="the basket's image x-centre in the first frame (0 = left edge)")
    start_gap: float = Field(gt=0, description="the robot's front to the basket's near face at the start (m)")
    instructions: list[str] = Field(min_length=1)
    default_positions: list[str] = Field(min_length=1)
    corridor: Corridor
    target: CorridorTarget
    paths: dict[str, Path] = Field(min_length=1)
    obstacles: list[Obstacle] = Field(default_factory=list, description="none by default; offset = (x, y) from "
                                                                         "the start")
    randomization: CorridorRandomization

    @model_validator(mode="after")
    def _band(self) -> CorridorLayout:
        if not 0.0 < self.image_x.low <= self.image_x.high < 1.0:
            raise ValueError(f"image_x must lie inside (0, 1), got [{self.image_x.low}, {self.image_x.high}]")
        if self.target.stop_band.low <= 0:
            raise ValueError("target.stop_band must be positive")
        return self

    def sample(self, rng: np.random.Generator, *, name: str, path: str, family: str, jitter: bool,
               domain_randomization: bool, placer: TargetPlacer | None) -> SceneSpec:
        """Draw one scene: start pose, the basket where the start frame shows it at a ``cx`` drawn in the band
        (band middle without ``jitter``), walls, instruction and appearance. Fixed draw order.

        Raises:
            ScenarioError: no ``placer`` (the robot's camera is needed to place the basket), or a basket that does
                not fit in the corridor at that ``cx``.
        """
        if placer is None:
            raise ScenarioError("the corridor family places its basket through the robot's camera: sample it "
                                "from the environment (or pass a TargetPlacer)")
        rnd, dr = self.randomization, domain_randomization

        def jit(half: float) -> float:
            return float(rng.uniform(-half, half)) if jitter and half > 0 else 0.0

        start = (jit(rnd.start_xy[0]), jit(rnd.start_xy[1]), math.radians(jit(rnd.start_yaw)))
        gap = self.start_gap + jit(rnd.start_gap)
        image_x = self.image_x.sample(rng) if jitter else self.image_x.mid
        instruction = self.instructions[int(rng.integers(len(self.instructions)))] if dr else self.instructions[0]
        wall_colour = tuple(rnd.wall_colours[int(rng.integers(len(rnd.wall_colours)))]) if dr else \
            self.corridor.wall_colour
        appearance = rnd.sample_appearance(rng) if dr else {}

        half = target_half_extents(self.target.kind)
        target_x = start[0] + placer.radius + gap + half[0]
        target_y = placer.lateral_for_image_x(image_x, target_x, half, start,
                                              appearance.get("camera_offset", (0.0, 0.0, 0.0)))
        c = self.corridor
        if abs(target_y) + half[1] > c.width / 2:
            raise ScenarioError(f"corridor position {name!r}: a basket at image x {image_x:.3f} stands at "
                                f"y = {target_y:+.2f} m, outside the {c.width:g} m corridor")
        band = self.target.stop_band
        goal = (target_x - half[0] - band.mid - placer.radius, target_y)
        x_min, x_max = -c.behind_start, self._nominal_far_end(placer.radius)
        return SceneSpec(
            scenario=name, distance=path, side=None, family=family,
            instruction=instruction.format(target=TARGET_NAMES[self.target.kind]),
            start=start, obstacles=self._obstacles(), target_kind=self.target.kind,
            target_position=(target_x, target_y), goal=goal, arena=(x_min, x_max, -c.width / 2, c.width / 2),
            walls=self._walls(x_min, x_max, wall_colour), stop_band=(band.low, band.high),
            facing_tolerance=math.radians(self.target.facing_tolerance), route_bulge=self.paths[path].bulge,
            target_image_x=image_x, **appearance,
        )

    def _nominal_far_end(self, radius: float) -> float:
        """The corridor's far end (m): fixed per layout (from the nominal start), so its walls are one body size."""
        return radius + self.start_gap + 2 * target_half_extents(self.target.kind)[0] + self.corridor.beyond_target

    def _walls(self, x_min: float, x_max: float, colour: Vec3) -> tuple[ObstacleSpec, ...]:
        c = self.corridor
        length, centre_x, y = x_max - x_min, (x_min + x_max) / 2, c.width / 2 + c.wall_thickness / 2
        size = (length, c.wall_thickness, c.wall_height)
        return tuple(ObstacleSpec((centre_x, side * y, c.wall_height / 2), size, colour) for side in (1, -1))

    def _obstacles(self) -> tuple[ObstacleSpec, ...]:
        return tuple(ObstacleSpec((ob.offset[0] + ob.size[0] / 2, ob.offset[1], ob.size[2] / 2), ob.size, ob.colour,
                                  ob.shape) for ob in self.obstacles)


def v5_path_type(position: str, path: str) -> str | None:
    """The V5 path-type name of a V5 position and a path (``("v5_left", "right_curve") -> "left_right"``), None
    for other positions."""
    if not position.startswith("v5_") or path not in V5_SHAPES:
        return None
    return f"{position.removeprefix('v5_')}_{V5_SHAPES[path]}"


def describe(layout: CorridorLayout) -> dict[str, Any]:
    """The position's definition in a few numbers (reports, the README table)."""
    return {"setup": layout.setup, "image_x": [layout.image_x.low, layout.image_x.high],
            "start_gap_m": layout.start_gap}
