"""Scenario families as data: the box-avoidance layouts (``cup``, ``basket``) and the corridor (``corridor``).

A *family* is one physical set-up of the team's data collection (:data:`FAMILIES`):

- ``cup``: the 2025 data set (cup or beverage-bottle target, cardboard boxes), geometry calibrated to the
  operators' key guides by ``python -m sim.calibrate`` (README, "Scenario calibration");
- ``basket``: the 2026 set-up (gray basket target, brown pot obstacles) at the spec's measured distances
  (``ROBOT_AND_DATA.md`` section 4), its files named ``basket_...``;
- ``corridor``: the task since V5 (2026-04): a gray basket in an obstacle-free corridor, its axes the basket's
  position and the path (:mod:`scenarios.corridor`).

Every family has two axes (:func:`axis_names`): layout x distance for the box families, position x path for the
corridor; the code calls them ``layout`` and ``distance`` throughout (``--layouts`` / ``--distances``,
``EpisodeRecord.layout`` ...). Every layout is a TOML file (``scenarios/<family>/layouts/*.toml``, or a user's
folder passed as ``scenario_dir``) merged over ``scenarios/<family>/defaults.toml``. :func:`load` validates it and
returns a :class:`Scenario`; its :meth:`Scenario.sample` draws a concrete :class:`SceneSpec` (poses, colours,
light, instruction) from a numpy ``Generator``, so the environment owns the randomness and the same seed gives the
same scene.

Coordinates: the robot starts near the origin facing +x (REP-103: x forward, y left, z up); metres, degrees
in the files, radians in :class:`SceneSpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator

from scenarios.corridor import CorridorLayout, TargetPlacer
from scenarios.spec import (
    DEFAULT_FAMILY,
    FAMILIES,
    TARGET_NAMES,
    TARGET_SHAPES,
    Appearance,
    Obstacle,
    ObstacleSpec,
    Range,
    ScenarioError,
    SceneSpec,
    Strict,
    Vec2,
    Vec3,
    merge,
    read_toml,
    validate,
)

SCENARIO_ROOT = Path(__file__).parent
#: The box families' distance presets.
DISTANCES = ("close", "medium", "far")
#: Each family's two axes, as reports name them (the code's ``layout`` and ``distance``).
AXES = {"cup": ("layout", "distance"), "basket": ("layout", "distance"), "corridor": ("position", "path")}
#: Radius (m) around the robot's start that no box may reach: the robot's footprint (``envs.robot.RobotConfig``:
#: 0.15 m) and a press of margin.
START_CLEARANCE = 0.15


class DistancePreset(Strict):
    """``[distances.<name>]`` of a box-family layout: where the first obstacle and the target stand from the robot's
    start (m). The ranges are drawn on every reset with ``jitter``, their mid-points without. Values and sources:
    ``scenarios/<family>/defaults.toml`` and the layout files."""

    obstacle: Range = Field(description="start -> near face of the first obstacle, along x (m)")
    target: Range = Field(description="start -> target object's centre, along x (m)")
    obstacle_y: float = Field(0.0, description="sideways position of the obstacles' reference point (m, +left)")
    target_y: float = Field(0.0, description="sideways position of the target's centre (m, +left)")


class Arena(Strict):
    """``[arena]``: the rectangle (m, from the nominal start) the robot's centre must stay in, or the episode ends
    ``out_of_bounds``: x from ``x_min`` (< 0) to ``x_beyond_target`` past the target's x distance, y within
    +-``half_width``."""

    x_min: float = Field(lt=0)
    x_beyond_target: float = Field(gt=0)
    half_width: float = Field(gt=0)


class TargetSpec(Strict):
    """``[target]``: the target objects (the first is the nominal one; domain randomisation draws among them) and
    ``standoff``, how far in front of the target's centre the goal point lies (m, 0-1)."""

    kinds: list[Literal["cup", "bottle", "basket"]] = Field(min_length=1)
    standoff: float = Field(ge=0, le=1.0)


class Randomization(Appearance):
    """``[randomization]`` of a box-family layout. Pose jitter (uniform +-, m / deg), drawn on every reset with
    ``jitter``: ``obstacle_xy`` moves all the obstacles together, ``target_xy`` the target, ``start_xy`` /
    ``start_yaw`` the robot's start. With ``domain_randomization`` also each box's ``box_scale`` (quantised to 5 %
    steps; a range reaching 0 or below fails validation), a colour from ``box_colours`` (RGB) per box, and the
    :class:`~scenarios.spec.Appearance` fields."""

    obstacle_xy: Vec2
    target_xy: Vec2
    start_xy: Vec2
    start_yaw: float = Field(ge=0)
    box_scale: Range
    box_colours: list[Vec3] = Field(min_length=1)

    @field_validator("box_scale")
    @classmethod
    def _positive_scale(cls, v: Range) -> Range:
        if v.low <= 0:
            raise ValueError(f"box scale must be > 0, got [{v.low}, {v.high}]")
        return v


class LayoutFile(Strict):
    """Schema of a layout file after merging over the defaults."""

    side: Literal["left", "right"]
    instructions: list[str] = Field(min_length=1)
    obstacles: list[Obstacle] = Field(min_length=1)
    target: TargetSpec
    arena: Arena
    distances: dict[str, DistancePreset]
    randomization: Randomization

    @field_validator("instructions")
    @classmethod
    def _templates(cls, v: list[str]) -> list[str]:
        for text in v:
            try:
                text.format(target="cup")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"bad template {text!r}: only {{target}} may be substituted ({exc})") from exc
        return v


@dataclass(frozen=True)
class Scenario:
    """A validated layout at one distance preset (a corridor position on one path); :meth:`sample` turns it into
    a :class:`SceneSpec`."""

    name: str
    distance: str
    path: Path
    layout: LayoutFile | CorridorLayout = field(repr=False)
    family: str = DEFAULT_FAMILY

    def sample(
        self, rng: np.random.Generator, *, jitter: bool = True, domain_randomization: bool = False,
        placer: TargetPlacer | None = None,
    ) -> SceneSpec:
        """Draw one scene. With ``jitter`` off and ``domain_randomization`` off, return the nominal scene
        (range mid-points, first instruction, first target kind, file colours). ``placer``: the robot's camera,
        which the corridor places its basket with (:class:`scenarios.corridor.TargetPlacer`; unused by the box
        families).

        The draw order is fixed, so a given generator state always yields the same scene.

        Raises:
            ScenarioError: a corridor scene without ``placer``, or whose basket cannot stand in the corridor.
        """
        if isinstance(self.layout, CorridorLayout):
            return self.layout.sample(rng, name=self.name, path=self.distance, family=self.family, jitter=jitter,
                                      domain_randomization=domain_randomization, placer=placer)
        lay, rnd = self.layout, self.layout.randomization
        preset = lay.distances[self.distance]

        def jit(half: float) -> float:
            return float(rng.uniform(-half, half)) if jitter and half > 0 else 0.0

        obstacle_d = preset.obstacle.sample(rng) if jitter else preset.obstacle.mid
        target_d = preset.target.sample(rng) if jitter else preset.target.mid
        start = (jit(rnd.start_xy[0]), jit(rnd.start_xy[1]), math.radians(jit(rnd.start_yaw)))
        shift = (jit(rnd.obstacle_xy[0]), jit(rnd.obstacle_xy[1]))
        target_xy = (target_d + jit(rnd.target_xy[0]), preset.target_y + jit(rnd.target_xy[1]))

        dr = domain_randomization
        boxes = []
        for ob in lay.obstacles:
            scale = rnd.box_scale.sample(rng) if dr else 1.0
            # Quantised to 5 % steps so the environment can cache one body per distinct size.
            scale = round(scale * 20) / 20
            size = (ob.size[0] * scale, ob.size[1] * scale, ob.size[2] * scale)
            colour = tuple(rnd.box_colours[int(rng.integers(len(rnd.box_colours)))]) if dr else ob.colour
            near_x = obstacle_d + ob.offset[0] + shift[0]
            center = (near_x + size[0] / 2, preset.obstacle_y + ob.offset[1] + shift[1], size[2] / 2)
            boxes.append(ObstacleSpec(center=center, size=size, colour=colour, shape=ob.shape))

        kind = lay.target.kinds[int(rng.integers(len(lay.target.kinds)))] if dr else lay.target.kinds[0]
        template = lay.instructions[int(rng.integers(len(lay.instructions)))] if dr else lay.instructions[0]
        goal = (target_xy[0] - lay.target.standoff, target_xy[1])
        arena = (lay.arena.x_min, target_d + lay.arena.x_beyond_target, -lay.arena.half_width, lay.arena.half_width)
        spec = dict(
            scenario=self.name,
            family=self.family,
            distance=self.distance,
            side=lay.side,
            instruction=template.format(target=TARGET_NAMES[kind]),
            start=start,
            obstacles=tuple(boxes),
            target_kind=kind,
            target_position=target_xy,
            goal=goal,
            arena=arena,
        )
        if dr:
            spec.update(rnd.sample_appearance(rng))
        return SceneSpec(**spec)


def check_family(family: str) -> str:
    """Return ``family`` if it is one of :data:`FAMILIES`.

    Raises:
        ScenarioError: any other value (the message lists the families).
    """
    if family not in FAMILIES:
        raise ScenarioError(f"unknown scenario family {family!r}; choose from {', '.join(FAMILIES)}")
    return family


def family_dir(family: str = DEFAULT_FAMILY) -> Path:
    """The folder of a family's ``defaults.toml`` and ``layouts/`` (raises :class:`ScenarioError` if unknown)."""
    return SCENARIO_ROOT / check_family(family)


def default_distances(family: str = DEFAULT_FAMILY) -> dict[str, DistancePreset]:
    """The distance presets of a family's ``defaults.toml`` (what a layout gets unless it overrides them).

    Raises:
        ScenarioError: unknown family, or a preset that fails validation (names the file).
    """
    path = family_dir(family) / "defaults.toml"
    try:
        return {name: DistancePreset.model_validate(raw) for name, raw in read_toml(path)["distances"].items()}
    except (KeyError, ValidationError) as exc:
        raise ScenarioError(f"{path}: invalid distances: {exc}") from None


def _layout_files(scenario_dir: str | Path | None, family: str) -> dict[str, Path]:
    files = {p.stem: p for p in sorted((family_dir(family) / "layouts").glob("*.toml"))}
    if scenario_dir is not None:
        user_dir = Path(scenario_dir)
        if not user_dir.is_dir():
            raise ScenarioError(f"{user_dir}: scenario_dir is not a directory")
        files.update({p.stem: p for p in sorted(user_dir.glob("*.toml"))})
    return files


def names(scenario_dir: str | Path | None = None, family: str = DEFAULT_FAMILY) -> list[str]:
    """Layout names of ``family`` (built-in, plus ``*.toml`` in ``scenario_dir``, which override built-ins)."""
    return sorted(_layout_files(scenario_dir, family))


def axis_names(family: str = DEFAULT_FAMILY) -> tuple[str, str]:
    """How reports name a family's two axes: ``("layout", "distance")`` or ``("position", "path")``."""
    return AXES[check_family(family)]


def distances(family: str = DEFAULT_FAMILY) -> tuple[str, ...]:
    """The names of a family's second axis: the distance presets, or the corridor's paths (its defaults' order)."""
    if check_family(family) == "corridor":
        return tuple(read_toml(family_dir(family) / "defaults.toml")["paths"])
    return DISTANCES


def default_sweep(family: str = DEFAULT_FAMILY, scenario_dir: str | Path | None = None
                  ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(layouts, distances)`` a sweep covers when none are named: every layout x distance of a box family; the
    corridor's V6 grid (its ``default_positions`` x every path)."""
    if check_family(family) == "corridor":
        positions = read_toml(family_dir(family) / "defaults.toml")["default_positions"]
        return tuple(positions), distances(family)
    return tuple(names(scenario_dir, family)), DISTANCES


def check_distances(family: str, values: list[str] | tuple[str, ...], flag: str = "--distances") -> tuple[str, ...]:
    """``values`` if each is a name of the family's second axis (:func:`distances`).

    Raises:
        ScenarioError: the first unknown one, naming ``flag``, the family's axis and its names (e.g. a distance
            preset given to the corridor, whose axis is its paths).
    """
    known = distances(family)
    for value in values:
        if value not in known:
            axis = axis_names(family)[1]
            raise ScenarioError(f"{flag}: {value!r} is not a {axis} of the {family} family; {axis}s: "
                                f"{', '.join(known)}")
    return tuple(values)


def load(name: str, distance: str = "medium", scenario_dir: str | Path | None = None,
         family: str = DEFAULT_FAMILY) -> Scenario:
    """Load and validate layout ``name`` of ``family`` at distance preset ``distance`` (a corridor position on
    path ``distance``); a file from ``scenario_dir`` is merged over the family's ``defaults.toml`` like a built-in
    one.

    Raises:
        ScenarioError: unknown family, name or distance, unreadable TOML, or a field that fails validation (the
            message names the file and the field path, e.g. ``obstacles.0.size``).
    """
    files = _layout_files(scenario_dir, family)
    axis, second = axis_names(family)
    if name not in files:
        raise ScenarioError(f"unknown {axis} {name!r} in the {family} family; available: {', '.join(sorted(files))}")
    path = files[name]
    raw = merge(read_toml(family_dir(family) / "defaults.toml"), read_toml(path))
    if family == "corridor":
        layout = validate(CorridorLayout, raw, path)
        known = layout.paths
    else:
        layout = validate(LayoutFile, raw, path)
        known = layout.distances
        problem = geometry_problem(layout)
        if problem:
            raise ScenarioError(f"{path}: {problem}")
    if distance not in known:
        raise ScenarioError(f"{path}: unknown {second} {distance!r}; available: {', '.join(known)}")
    return Scenario(name=name, distance=distance, path=path, layout=layout, family=family)


def geometry_problem(layout: LayoutFile) -> str | None:
    """What makes a layout's geometry impossible at some distance preset, or None. Checked over the whole jitter
    and box-scale ranges: a box that can reach within :data:`START_CLEARANCE` of the robot's start, a target
    behind the start or closer than its standoff, a box or the target that can leave the arena, the target or its
    goal (``standoff`` in front of it) inside a box's footprint at their nominal places (range mid-points,
    scale 1).
    """
    rnd = layout.randomization
    scale = rnd.box_scale.high
    for name, preset in layout.distances.items():
        if preset.target.low - rnd.target_xy[0] - layout.target.standoff <= START_CLEARANCE:
            return (f"distances.{name}.target: the target ({preset.target.low} m) is behind the start or closer "
                    f"than its standoff ({layout.target.standoff} m)")
        if abs(preset.target_y) + rnd.target_xy[1] >= layout.arena.half_width:
            return (f"distances.{name}.target_y ({preset.target_y:+.2f} m) with randomization.target_xy "
                    f"(+-{rnd.target_xy[1]} m): the target can leave the arena (half width {layout.arena.half_width} m)")
        for i, ob in enumerate(layout.obstacles):
            y = preset.obstacle_y + ob.offset[1]
            near = preset.obstacle.low + ob.offset[0] - rnd.obstacle_xy[0]
            half_width = ob.size[1] * scale / 2 + rnd.obstacle_xy[1]
            dx = max(near - rnd.start_xy[0], -(near + ob.size[0] * scale) - rnd.start_xy[0], 0.0)
            dy = max(abs(y) - half_width - rnd.start_xy[1], 0.0)
            if math.hypot(dx, dy) < START_CLEARANCE:
                return (f"obstacles.{i} at distance {name!r} can reach the robot's start (nearest face "
                        f"{near:.2f} m ahead, sideways {y:+.2f} m): keep {START_CLEARANCE} m clear")
            box_x = preset.obstacle.mid + ob.offset[0]
            for what, x in (("the target", preset.target.mid), ("the goal", preset.target.mid - layout.target.standoff)):
                if box_x <= x <= box_x + ob.size[0] and abs(preset.target_y - y) <= ob.size[1] / 2:
                    return (f"distances.{name}: {what} ({x:.2f} m ahead, {preset.target_y:+.2f} m sideways) is inside "
                            f"obstacles.{i} ({box_x:.2f}-{box_x + ob.size[0]:.2f} m ahead, {y - ob.size[1] / 2:+.2f} to "
                            f"{y + ob.size[1] / 2:+.2f} m sideways)")
            far = preset.obstacle.high + ob.offset[0] + rnd.obstacle_xy[0] + ob.size[0] * scale
            if far > preset.target.high + layout.arena.x_beyond_target or \
                    abs(y) + half_width > layout.arena.half_width:
                return f"obstacles.{i} at distance {name!r} reaches outside the arena"
    return None


__all__ = [
    "AXES",
    "DISTANCES",
    "DEFAULT_FAMILY",
    "FAMILIES",
    "TARGET_NAMES",
    "TARGET_SHAPES",
    "Obstacle",
    "ObstacleSpec",
    "Range",
    "Scenario",
    "ScenarioError",
    "SceneSpec",
    "axis_names",
    "check_distances",
    "default_sweep",
    "distances",
    "load",
    "names",
]
