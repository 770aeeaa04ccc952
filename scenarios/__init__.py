"""Box-avoidance layouts as data, in two families.

A *family* is one physical set-up of the team's data collection (:data:`FAMILIES`):

- ``cup``: the 2025 data set (cup or beverage-bottle target, cardboard boxes), geometry calibrated to the
  operators' key guides by ``python -m sim.calibrate`` (README, "Scenario calibration");
- ``basket``: the 2026 set-up (gray basket target, brown pot obstacles) at the spec's measured distances
  (``ROBOT_AND_DATA.md`` section 4), its files named ``basket_...``.

Every layout is a TOML file (``scenarios/<family>/layouts/*.toml``, or a user's folder passed as
``scenario_dir``) merged over ``scenarios/<family>/defaults.toml``. :func:`load` validates it and returns a
:class:`Scenario`; its
:meth:`Scenario.sample` draws a concrete :class:`SceneSpec` (poses, colours, light, instruction) from a numpy
``Generator``, so the environment owns the randomness and the same seed gives the same scene.

Coordinates: the robot starts near the origin facing +x (REP-103: x forward, y left, z up); metres, degrees
in the files, radians in :class:`SceneSpec`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scenarios.errors import MobileVLAError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCENARIO_ROOT = Path(__file__).parent
#: The data-collection set-ups, each a folder ``scenarios/<family>/`` (``defaults.toml`` + ``layouts/``).
FAMILIES = ("cup", "basket")
DEFAULT_FAMILY = "cup"
DISTANCES = ("close", "medium", "far")
#: Longest box side a layout may give (m): the operators' boxes are under 0.6 m.
MAX_BOX_SIDE = 3.0
#: Radius (m) around the robot's start that no box may reach: the robot's footprint (``envs.robot.RobotConfig``:
#: 0.15 m) and a press of margin.
START_CLEARANCE = 0.15
#: Display names used in instructions, from the spec's instructions ("cup", "beverage bottle", "gray basket").
TARGET_NAMES = {"cup": "cup", "bottle": "beverage bottle", "basket": "gray basket"}
#: Target bodies (m, *chosen*): ``("cylinder", radius, height)`` or ``("box", half_x, half_y, half_z)``, standing on
#: the floor; the environment builds them, the expert and the calibration keep clear of them.
TARGET_SHAPES = {
    "cup": ("cylinder", 0.045, 0.10),
    "bottle": ("cylinder", 0.035, 0.22),
    "basket": ("box", 0.17, 0.13, 0.08),
}

Vec2 = tuple[float, float]
Vec3 = tuple[float, float, float]


class ScenarioError(MobileVLAError, ValueError):
    """A scenario file is missing, malformed or inconsistent; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Range(_Strict):
    """Closed interval ``[low, high]`` given in TOML as a two-element list."""

    low: float
    high: float

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"expected [low, high], got {value!r}")
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.high < self.low:
            raise ValueError(f"high {self.high} < low {self.low}")
        return self

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high)) if self.high > self.low else self.low

    @property
    def mid(self) -> float:
        return 0.5 * (self.low + self.high)


class DistancePreset(_Strict):
    obstacle: Range = Field(description="start -> near face of the first obstacle, along x (m)")
    target: Range = Field(description="start -> target object's centre, along x (m)")
    obstacle_y: float = Field(0.0, description="sideways position of the obstacles' reference point (m, +left)")
    target_y: float = Field(0.0, description="sideways position of the target's centre (m, +left)")


class Arena(_Strict):
    x_min: float = Field(lt=0)
    x_beyond_target: float = Field(gt=0)
    half_width: float = Field(gt=0)


class TargetSpec(_Strict):
    kinds: list[Literal["cup", "bottle", "basket"]] = Field(min_length=1)
    standoff: float = Field(ge=0, le=1.0)


class Obstacle(_Strict):
    size: Vec3 = Field(description="[depth along x, width along y, height] (m); a pot's depth and width are its diameter")
    offset: Vec2 = (0.0, 0.0)
    colour: Vec3 = (0.62, 0.45, 0.28)
    shape: Literal["box", "pot"] = Field("box", description="a box, or a round pot (an upright cylinder)")

    @model_validator(mode="after")
    def _round_pot(self) -> "Obstacle":
        if self.shape == "pot" and self.size[0] != self.size[1]:
            raise ValueError(f"a pot is round: its depth and width must be equal, got {self.size[:2]}")
        return self

    @field_validator("size")
    @classmethod
    def _positive(cls, v: Vec3) -> Vec3:
        if min(v) <= 0 or max(v) > MAX_BOX_SIDE:
            raise ValueError(f"box sides must be in (0, {MAX_BOX_SIDE}] m, got {v}")
        return v

    @field_validator("colour")
    @classmethod
    def _rgb(cls, v: Vec3) -> Vec3:
        if not all(0.0 <= c <= 1.0 for c in v):
            raise ValueError(f"colour components must be in [0, 1], got {v}")
        return v


class Randomization(_Strict):
    obstacle_xy: Vec2
    target_xy: Vec2
    start_xy: Vec2
    start_yaw: float = Field(ge=0)
    box_scale: Range
    box_colours: list[Vec3] = Field(min_length=1)
    floor_textures: list[Literal["wood", "tile", "concrete", "carpet"]] = Field(min_length=1)
    light_azimuth: Range
    light_elevation: Range
    time_periods: list[Literal["dawn", "morning", "evening", "night"]] = Field(min_length=1)
    camera_height: float = Field(ge=0)
    camera_pitch: float = Field(ge=0)
    camera_yaw: float = Field(ge=0)


class LayoutFile(_Strict):
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
class ObstacleSpec:
    """An obstacle in the world frame: centre ``(x, y, z)`` (m), ``size`` (depth x, width y, height z, m; a pot's
    depth and width are its diameter), ``colour`` RGB in [0, 1], ``shape`` ``"box"`` or ``"pot"`` (upright
    cylinder)."""

    center: Vec3
    size: Vec3
    colour: Vec3
    shape: str = "box"


@dataclass(frozen=True)
class SceneSpec:
    """A concrete episode scene sampled from a :class:`Scenario` (all SI units, radians).

    Attributes:
        scenario, distance, side: layout name, distance preset, side to pass (``"left"``/``"right"``).
        family: the scenario family (:data:`FAMILIES`).
        instruction: the language instruction of the episode.
        start: robot start pose ``(x, y, yaw)``.
        obstacles: the boxes or pots.
        target_kind, target_position: target object and its centre ``(x, y)`` on the floor.
        goal: the point in front of the target the robot must stop at ``(x, y)``.
        arena: ``(x_min, x_max, y_min, y_max)`` bounds for the robot's centre.
        floor_texture, light_direction, time_period: appearance.
        camera_offset: ``(d_height m, d_pitch rad, d_yaw rad)`` jitter of the onboard camera mount.
    """

    scenario: str
    distance: str
    side: str
    instruction: str
    start: Vec3
    obstacles: tuple[ObstacleSpec, ...]
    target_kind: str
    target_position: Vec2
    goal: Vec2
    arena: tuple[float, float, float, float]
    family: str = DEFAULT_FAMILY
    floor_texture: str = "concrete"
    light_direction: Vec3 = (0.4, 0.3, 0.85)
    time_period: str = "morning"
    camera_offset: Vec3 = (0.0, 0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return asdict(self)


@dataclass(frozen=True)
class Scenario:
    """A validated layout at one distance preset; :meth:`sample` turns it into a :class:`SceneSpec`."""

    name: str
    distance: str
    path: Path
    layout: LayoutFile = field(repr=False)
    family: str = DEFAULT_FAMILY

    def sample(
        self, rng: np.random.Generator, *, jitter: bool = True, domain_randomization: bool = False
    ) -> SceneSpec:
        """Draw one scene. With ``jitter`` off and ``domain_randomization`` off, return the nominal scene
        (range mid-points, first instruction, first target kind, file colours).

        The draw order is fixed, so a given generator state always yields the same scene.
        """
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
            az = math.radians(rnd.light_azimuth.sample(rng))
            el = math.radians(rnd.light_elevation.sample(rng))
            spec.update(
                floor_texture=rnd.floor_textures[int(rng.integers(len(rnd.floor_textures)))],
                light_direction=(math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)),
                time_period=rnd.time_periods[int(rng.integers(len(rnd.time_periods)))],
                camera_offset=(
                    float(rng.uniform(-rnd.camera_height, rnd.camera_height)),
                    math.radians(float(rng.uniform(-rnd.camera_pitch, rnd.camera_pitch))),
                    math.radians(float(rng.uniform(-rnd.camera_yaw, rnd.camera_yaw))),
                ),
            )
        return SceneSpec(**spec)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from exc


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


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
        return {name: DistancePreset.model_validate(raw) for name, raw in _read_toml(path)["distances"].items()}
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


def load(name: str, distance: str = "medium", scenario_dir: str | Path | None = None,
         family: str = DEFAULT_FAMILY) -> Scenario:
    """Load and validate layout ``name`` of ``family`` at distance preset ``distance``; a file from
    ``scenario_dir`` is merged over the family's ``defaults.toml`` like a built-in one.

    Raises:
        ScenarioError: unknown family, name or distance, unreadable TOML, or a field that fails validation (the
            message names the file and the field path, e.g. ``obstacles.0.size``).
    """
    files = _layout_files(scenario_dir, family)
    if name not in files:
        raise ScenarioError(f"unknown scenario {name!r} in the {family} family; available: {', '.join(sorted(files))}")
    path = files[name]
    raw = _merge(_read_toml(family_dir(family) / "defaults.toml"), _read_toml(path))
    try:
        layout = LayoutFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '<root>'}': {err['msg']}" for err in exc.errors()
        )
        raise ScenarioError(f"{path}: {problems}") from None
    if distance not in layout.distances:
        raise ScenarioError(f"{path}: unknown distance {distance!r}; available: {', '.join(layout.distances)}")
    problem = geometry_problem(layout)
    if problem:
        raise ScenarioError(f"{path}: {problem}")
    return Scenario(name=name, distance=distance, path=path, layout=layout, family=family)


def geometry_problem(layout: LayoutFile) -> str | None:
    """What makes a layout's geometry impossible at some distance preset, or None. Checked over the whole jitter
    and box-scale ranges: a box that can reach within :data:`START_CLEARANCE` of the robot's start, a target
    behind the start or closer than its standoff, a box or the target that can leave the arena.
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
            far = preset.obstacle.high + ob.offset[0] + rnd.obstacle_xy[0] + ob.size[0] * scale
            if far > preset.target.high + layout.arena.x_beyond_target or \
                    abs(y) + half_width > layout.arena.half_width:
                return f"obstacles.{i} at distance {name!r} reaches outside the arena"
    return None


__all__ = [
    "DISTANCES",
    "DEFAULT_FAMILY",
    "FAMILIES",
    "TARGET_SHAPES",
    "ObstacleSpec",
    "Scenario",
    "ScenarioError",
    "SceneSpec",
    "load",
    "names",
]
