"""Search the free geometry of each layout so that the operators' key guides run collision-free, pass on the named
side and end near the target under pose jitter; write the layout files (the library of ``python -m sim.calibrate``).

**Free parameters** of a layout (:class:`ParamSpace`), on a 1 cm grid: each box's long and short side (a ``vert``
box is long along x, a ``hori`` box across it: the layout's name is kept true); the second box's offset from the
first; and per distance preset that has a guide: the first box's near face (m ahead of the start), the boxes'
sideways position, the target's distance and sideways position. A ``far`` preset without a guide (the 2-box
layouts) is derived from the calibrated ``medium`` one (:func:`derived_far`, the rule written into the file); other
presets without a guide keep the family's default. The press length (0.15-0.2 m in the spec) is searched on a grid
over all layouts at once (it is one robot constant).

**Objective** (maximised by SciPy's differential evolution, seeded): over every guide of the layout x
``samples`` pose-jitter draws (the family's ``randomization`` ranges, common to every candidate) plus the nominal
scene, ``share passing + 0.2 * margin - 0.3 * end distance - 0.1 * distance from the prior``, where passing is
:func:`sim.calibration.guides.judge` (collision-free and on the named side; a truncated guide, without SPACE, also
nearer the goal than it started), the margin is the clearance (up to 5 cm) of replays on the right side, and the
end distance the mean distance (m, capped at 1) from the end of each guide that stops (SPACE) to the goal (a
truncated guide is never scored on its end): collision-free and on the named side first, then clearance, then the
operator's stop near the target, then, only to break ties, the prior (the boxes chosen before calibration, the
spec's distances). The kinematic model (:mod:`sim.calibration.kinematics`) stands in for the
simulator during the search; the chosen geometry is then replayed in the simulator itself (:func:`verify`), and
that table is the result.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import scenarios
from envs.robot import RobotConfig
from foundations.files import atomic_write_text
from sim.calibration.guides import Guide, passes, replay_all
from sim.calibration.kinematics import Paths, Placement, guide_paths, score_paths

#: Bounds of the free parameters (m).
#: Box sides (m): the long side, and the short side as a share of it, never under MIN_SIDE. The team never measured
#: its boxes; these bounds keep them boxes the camera sees (a shrunken box would let any guide pass).
LONG_SIDE, SHORT_SHARE, MIN_SIDE = (0.20, 0.60), (0.3, 0.9), 0.12
SECOND_BOX_DX, SECOND_BOX_DY = (0.0, 1.4), (-0.9, 0.9)
NEAR_FACE, TARGET_X, TARGET_Y = (0.35, 2.5), (1.6, 4.6), (-1.3, 1.3)
#: The first box stays on the robot's path: driving straight ahead from the start, the robot's edge would overlap
#: it by at least this much (m); its sideways position is searched as a fraction of the room this leaves.
ON_PATH_OVERLAP = 0.05
#: The spec's press length range (ROBOT_AND_DATA.md section 1: "a forward press covers very roughly 0.15-0.2 m").
PRESS_RANGE = (0.15, 0.20)
#: The prior (what the search falls back to where the guides do not decide): the boxes chosen before calibration
#: (long side, short side; m) and the second box's offset (m, sideways away from the instructed side); the distance
#: presets of the family's ``defaults.toml`` (the spec's), boxes centred.
PRIOR_BOX = {"vert": (0.40, 0.25), "hori": (0.45, 0.25)}
PRIOR_SECOND_OFFSET = (0.5, 0.45)
#: Objective weights (see the module docstring).
W_MARGIN, W_END, W_PRIOR = 0.2, 0.3, 0.1
MARGIN_SCALE = 0.05  # m of clearance that earns the whole margin bonus
CALIBRATED_STAMP = "# calibrated by `python -m sim.calibrate`"


@dataclass(frozen=True)
class Preset:
    """One distance preset's placement (m): first box's near face ``near`` ahead of the start, the boxes' sideways
    position ``obstacle_y``, the target's centre at ``target`` ahead and ``target_y`` sideways."""

    near: float
    obstacle_y: float
    target: float
    target_y: float


@dataclass(frozen=True)
class Geometry:
    """A layout's geometry: box ``sizes`` (depth x, width y, m), the second box's ``offset`` from the first (m),
    and the placement of each distance preset."""

    sizes: tuple[tuple[float, float], ...]
    second_offset: tuple[float, float] | None
    presets: dict[str, Preset]

    @classmethod
    def of(cls, scenario: scenarios.Scenario) -> Geometry:
        """The geometry a layout file has now (each preset at the middle of its ranges)."""
        lay = scenario.layout
        return cls(tuple(tuple(ob.size[:2]) for ob in lay.obstacles),
                   tuple(lay.obstacles[1].offset) if len(lay.obstacles) > 1 else None,
                   {d: Preset(p.obstacle.mid, p.obstacle_y, p.target.mid, p.target_y) for d, p in lay.distances.items()})


# ------------------------------------------------------------------------------------------------ derived presets
def far_shift(family: str = "cup") -> tuple[float, float]:
    """The spec's far-minus-medium differences (m): how much further the ``far`` preset puts the first box's near face
    and the target than ``medium`` does, between the midpoints of the family's default presets (``defaults.toml``,
    ROBOT_AND_DATA.md section 4: obstacle 1.0-1.5 -> 2.5-3.0 m, +1.50 m; target 2.5 -> 4.0-4.5 m, +1.75 m)."""
    spec = scenarios.default_distances(family)
    return (round(spec["far"].obstacle.mid - spec["medium"].obstacle.mid, 2),
            round(spec["far"].target.mid - spec["medium"].target.mid, 2))


def derived_far(medium: Preset, family: str = "cup") -> Preset:
    """The ``far`` preset of a layout without a ``far`` guide (the 2-box layouts), from its calibrated ``medium``
    preset: the calibrated boxes and the medium preset's sideways positions are kept, and the first box and the target
    move further ahead by the spec's own far-minus-medium differences (:func:`far_shift`). The guides never saw these
    distances; the spec's difference is the only measurement relating ``far`` to ``medium``."""
    d_obstacle, d_target = far_shift(family)
    return Preset(round(medium.near + d_obstacle, 2), medium.obstacle_y, round(medium.target + d_target, 2),
                  medium.target_y)


def _span(r) -> str:
    return f"{r.low:.2f} m" if r.low == r.high else f"{r.low:.2f}-{r.high:.2f} m"


def file_presets(geometry: Geometry, family: str = "cup") -> dict[str, tuple[Preset, list[str]]]:
    """The distance presets a layout file gets, each with its comment lines: the calibrated ones (no comment), and a
    ``far`` preset derived from ``medium`` (:func:`derived_far`) where no guide was driven at ``far``. A preset
    absent here keeps the family's default."""
    out: dict[str, tuple[Preset, list[str]]] = {d: (p, []) for d, p in geometry.presets.items()}
    if "far" not in out and "medium" in out:
        medium = geometry.presets["medium"]
        far = derived_far(medium, family)
        (d_obstacle, d_target), spec = far_shift(family), scenarios.default_distances(family)
        out["far"] = (far, [
            "# No operator guide was driven at this distance: derived from the calibrated medium preset by one rule",
            "# (sim.calibration.search.derived_far): keep the calibrated boxes and the medium preset's sideways positions,",
            "# and move the first box and the target further by the spec's own far-minus-medium differences",
            "# (ROBOT_AND_DATA.md section 4, as in defaults.toml; between midpoints): obstacle "
            f"{_span(spec['medium'].obstacle)} -> {_span(spec['far'].obstacle)},",
            f"# +{d_obstacle:.2f} m; target {_span(spec['medium'].target)} -> {_span(spec['far'].target)}, "
            f"+{d_target:.2f} m. Here: obstacle {medium.near:.2f} + {d_obstacle:.2f} = {far.near:.2f} m,",
            f"# target {medium.target:.2f} + {d_target:.2f} = {far.target:.2f} m, obstacle_y {far.obstacle_y:.2f} and "
            f"target_y {far.target_y:.2f} as at medium.",
        ])
    return {d: out[d] for d in scenarios.DISTANCES if d in out}


@dataclass
class ParamSpace:
    """The vector of free parameters of one layout (see the module docstring) and its prior (:data:`PRIOR_BOX`,
    :data:`PRIOR_SECOND_OFFSET`, the family's default distances): it does not depend on the layout file, so a
    calibration is reproducible from the guides alone. A preset's sideways box position is a share in [-1, 1] of
    the room that keeps the first box on the robot's path (:data:`ON_PATH_OVERLAP`)."""

    layout: str
    scenario: scenarios.Scenario  # the layout as it is (any distance): file, randomization, prior
    distances: tuple[str, ...]  # presets with a guide
    robot_radius: float
    names: list[str] = field(default_factory=list)
    bounds: list[tuple[float, float]] = field(default_factory=list)
    prior: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        lay = self.scenario.layout
        long, short = PRIOR_BOX["vert" if "_vert_" in self.layout else "hori"]
        for i in range(len(lay.obstacles)):
            self._add(f"box{i}.long", LONG_SIDE, long)
            self._add(f"box{i}.short_share", SHORT_SHARE, short / long)
        if len(lay.obstacles) > 1:
            away = -1.0 if lay.side == "left" else 1.0
            self._add("box1.dx", SECOND_BOX_DX, PRIOR_SECOND_OFFSET[0])
            self._add("box1.dy", SECOND_BOX_DY, away * PRIOR_SECOND_OFFSET[1])
        defaults = scenarios.default_distances(self.scenario.family)
        for d in self.distances:
            p = defaults[d]
            self._add(f"{d}.near", NEAR_FACE, p.obstacle.mid)
            self._add(f"{d}.obstacle_y_share", (-1.0, 1.0), 0.0)
            self._add(f"{d}.target", TARGET_X, p.target.mid)
            self._add(f"{d}.target_y", TARGET_Y, 0.0)

    def _add(self, name: str, bounds: tuple[float, float], prior: float) -> None:
        self.names.append(name)
        self.bounds.append(bounds)
        self.prior.append(float(np.clip(prior, *bounds)))

    def decode(self, vector: Sequence[float]) -> Geometry:
        """The geometry of a parameter vector, rounded to 1 cm."""
        v = dict(zip(self.names, (round(float(x), 2) for x in vector)))
        vert = "_vert_" in self.layout
        n = len(self.scenario.layout.obstacles)
        sides = [(v[f"box{i}.long"], max(MIN_SIDE, round(v[f"box{i}.long"] * v[f"box{i}.short_share"], 2)))
                 for i in range(n)]
        sizes = tuple((long, short) if vert else (short, long) for long, short in sides)
        offset = (v["box1.dx"], v["box1.dy"]) if n > 1 else None
        room = sizes[0][1] / 2 + self.robot_radius - ON_PATH_OVERLAP  # |obstacle_y| that keeps box 0 on the path
        presets = {d: Preset(v[f"{d}.near"], round(v[f"{d}.obstacle_y_share"] * room, 2), v[f"{d}.target"],
                             v[f"{d}.target_y"]) for d in self.distances}
        return Geometry(sizes, offset, presets)

    def prior_distance(self, vector: np.ndarray) -> float:
        """Mean deviation from the prior, each parameter relative to its range."""
        span = np.array([hi - lo for lo, hi in self.bounds])
        return float(np.mean(np.abs(np.asarray(vector) - np.array(self.prior)) / span))


@dataclass
class Replays:
    """Every guide of a layout under ``samples`` jitter draws plus the nominal scene, as one batch: sampled paths
    (``paths.stops``: whether the replay's guide ends with SPACE), the distance preset of each replay, its jitter
    (``(R, 4)``: obstacle shift x, y, target shift x, y), and its weight (the guide's, :attr:`Guide.weight`)."""

    paths: Paths
    distance: np.ndarray
    jitter: np.ndarray
    weight: np.ndarray


def draw_replays(guides: Sequence[Guide], scenario: scenarios.Scenario, press: float, samples: int, seed: int,
                 robot: RobotConfig) -> Replays:
    """Paths and jitter of every guide: draw 0 is the nominal scene, draws 1..samples are uniform over the
    family's jitter ranges (the same draws for every candidate geometry)."""
    rnd = scenario.layout.randomization
    half = np.array([rnd.start_xy[0], rnd.start_xy[1], math.radians(rnd.start_yaw),
                     rnd.obstacle_xy[0], rnd.obstacle_xy[1], rnd.target_xy[0], rnd.target_xy[1]])
    points, ends, distance, jitter, stops, weight = [], [], [], [], [], []
    for g, guide in enumerate(guides):
        rng = np.random.default_rng([seed, g])
        u = np.vstack([np.zeros(7), rng.uniform(-1, 1, (samples, 7))]) * half
        paths = guide_paths(guide.keys, u[:, :3], press, robot)
        points.append(paths.points)
        ends.append(paths.ends)
        distance += [guide.distance] * len(u)
        jitter.append(u[:, 3:])
        stops.append(paths.stops)
        weight += [guide.weight] * len(u)
    width = max(p.shape[1] for p in points)  # guides differ in length: repeat the last point / end
    pad = lambda a, n: np.concatenate([a, np.repeat(a[:, -1:], n - a.shape[1], 1)], 1)  # noqa: E731
    n_ends = max(e.shape[1] for e in ends)
    return Replays(Paths(np.concatenate([pad(p, width) for p in points]), np.concatenate([pad(e, n_ends) for e in ends]),
                         np.concatenate(stops)),
                   np.array(distance), np.concatenate(jitter), np.array(weight))


def placement(geometry: Geometry, scenario: scenarios.Scenario, replays: Replays) -> Placement:
    """Where the boxes, target, goal and arena are in each replay for ``geometry``."""
    lay = scenario.layout
    presets = [geometry.presets[d] for d in replays.distance]
    near = np.array([p.near for p in presets])
    oy = np.array([p.obstacle_y for p in presets])
    tx = np.array([p.target for p in presets])
    ty = np.array([p.target_y for p in presets])
    shift, tshift = replays.jitter[:, :2], replays.jitter[:, 2:]
    offsets = [(0.0, 0.0), *([geometry.second_offset] if geometry.second_offset else [])]
    centres = np.stack([np.stack([near + dx + depth / 2 + shift[:, 0], oy + dy + shift[:, 1]], 1)
                        for (depth, _), (dx, dy) in zip(geometry.sizes, offsets)], 1)
    halves = np.array([[depth / 2, width / 2] for depth, width in geometry.sizes])
    round_ = np.array([ob.shape == "pot" for ob in lay.obstacles])
    kind = lay.target.kinds[0]
    shape, *dims = scenarios.TARGET_SHAPES[kind]
    target_half = np.array(dims[:2]) if shape == "box" else np.array([dims[0], dims[0]])
    target = np.stack([tx + tshift[:, 0], ty + tshift[:, 1]], 1)
    arena = np.stack([np.full_like(tx, lay.arena.x_min), tx + lay.arena.x_beyond_target,
                      np.full_like(tx, -lay.arena.half_width), np.full_like(tx, lay.arena.half_width)], 1)
    return Placement(centres, halves, round_, target, target_half, shape != "box",
                     target - np.array([lay.target.standoff, 0.0]), arena, 1 if lay.side == "left" else -1)


def objective(vector: np.ndarray, space: ParamSpace, replays: Replays, robot_radius: float) -> float:
    """Minus the calibration objective of a parameter vector (SciPy minimises)."""
    outcome = score_paths(replays.paths, placement(space.decode(vector), space.scenario, replays), robot_radius)
    w = replays.weight / replays.weight.sum()
    # clearance only counts where the side is right: room gained for a guide that cannot pass is no gain
    margin = np.where(outcome.side_ok, np.clip(outcome.clearance, -0.1, MARGIN_SCALE) / MARGIN_SCALE, 0.0)
    stops = outcome.stops  # a truncated guide has no stop to score (sim.calibration.guides.judge)
    end = np.average(np.minimum(outcome.end_distance[stops], 1.0), weights=w[stops]) if stops.any() else 0.0
    score = w @ outcome.passes + W_MARGIN * (w @ margin) - W_END * end - W_PRIOR * space.prior_distance(vector)
    return -float(score)


@dataclass(frozen=True)
class LayoutResult:
    """The calibration of one layout: the chosen geometry, the kinematic model's share of passing replays with it,
    and its objective."""

    layout: str
    press: float
    geometry: Geometry
    model_share: float
    score: float


def calibrate_layout(layout: str, guides: Sequence[Guide], press: float, *, family: str, samples: int, seed: int,
                     maxiter: int, robot: RobotConfig) -> LayoutResult:
    """Search one layout's geometry for ``guides`` (all in ``layout``) at press length ``press`` (m)."""
    from scipy.optimize import differential_evolution

    distances = tuple(d for d in scenarios.DISTANCES if any(g.distance == d for g in guides))
    space = ParamSpace(layout, scenarios.load(layout, distances[0], family=family), distances, robot.radius)
    replays = draw_replays(guides, space.scenario, press, samples, seed, robot)
    args = (space, replays, robot.radius)
    result = differential_evolution(objective, space.bounds, args=args, seed=seed, maxiter=maxiter, popsize=12,
                                    tol=1e-8, polish=False, init="sobol", x0=np.array(space.prior))
    geometry = space.decode(result.x)
    outcome = score_paths(replays.paths, placement(geometry, space.scenario, replays), robot.radius)
    return LayoutResult(layout, press, geometry, float(outcome.passes.mean()), -float(result.fun))


def _calibrate_job(job: tuple) -> LayoutResult:
    layout, guides, press, kwargs = job
    return calibrate_layout(layout, guides, press, **kwargs)


def calibrate(guides: Sequence[Guide], presses: Sequence[float], *, family: str = "cup", samples: int = 40,
              seed: int = 0, maxiter: int = 200, workers: int = 1, robot: RobotConfig | None = None,
              progress: bool = True) -> dict[float, list[LayoutResult]]:
    """Calibrate every layout that has a guide, at each press length; returns ``{press: [LayoutResult, ...]}``.
    The result does not depend on ``workers`` (each search is seeded on its own)."""
    from tqdm import tqdm

    robot = robot or RobotConfig()
    layouts = sorted({g.layout for g in guides})
    kwargs = dict(family=family, samples=samples, seed=seed, maxiter=maxiter, robot=robot)
    jobs = [(layout, [g for g in guides if g.layout == layout], press, kwargs) for press in presses for layout in layouts]
    with ProcessPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        mapped = (pool.map if pool else map)(_calibrate_job, jobs)
        results = list(tqdm(mapped, total=len(jobs), desc="calibrating", unit="layout", disable=not progress))
    return {press: [r for r in results if r.press == press] for press in presses}


# ------------------------------------------------------------------------------------------------ files
def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def layout_toml(result: LayoutResult, scenario: scenarios.Scenario, guides: Sequence[Guide]) -> str:
    """The layout file of a calibration result (a fixed, commented format; every value in m)."""
    lay = scenario.layout
    description = []
    for line in scenario.path.read_text().splitlines():  # the file's leading comment, without an older stamp
        if not line.startswith("#") or line.startswith(CALIBRATED_STAMP):
            break
        description.append(line)
    used = sorted({g.name for g in guides})
    lines = [
        *description,
        f"{CALIBRATED_STAMP} (press length {result.press:.2f} m) to the operators' key guides",
        *[f"#   {name}" for name in used],
        "# Re-run it rather than editing these numbers by hand.",
        f'side = "{lay.side}"',
        "instructions = [",
        *[f"    {json_string(text)}," for text in lay.instructions],
        "]",
    ]
    offsets = [(0.0, 0.0), *([result.geometry.second_offset] if result.geometry.second_offset else [])]
    for ob, (depth, width), offset in zip(lay.obstacles, result.geometry.sizes, offsets):
        lines += ["", "[[obstacles]]", "# size: [depth along x, width along y, height] (m); offset: [x, y] from the "
                  "distance preset's obstacle point (m)." if offset == (0.0, 0.0) else "# the second box, offset from "
                  "the first box's near face",
                  f"size = {_fmt((depth, width, ob.size[2]))}", f"offset = {_fmt(offset)}", f"colour = {_fmt(ob.colour)}"]
    for d, (p, comment) in file_presets(result.geometry, scenario.family).items():  # absent: the family's default
        lines += ["", f"[distances.{d}]", *comment, f"obstacle = {_fmt((p.near, p.near))}",
                  f"target = {_fmt((p.target, p.target))}", f"obstacle_y = {p.obstacle_y:.2f}",
                  f"target_y = {p.target_y:.2f}"]
    return "\n".join(lines) + "\n"


def json_string(text: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these texts)."""
    import json

    return json.dumps(text, ensure_ascii=False)


def write_layouts(results: Sequence[LayoutResult], guides: Sequence[Guide], out_dir: Path, *,
                  family: str = "cup") -> list[Path]:
    """Write one layout file per result into ``out_dir`` (atomically), each checked by loading it first.

    Raises:
        ScenarioError: a written geometry does not load (names the file and field; nothing is replaced then).
    """
    import tempfile

    texts = {}
    for r in results:
        scenario = scenarios.load(r.layout, family=family)
        texts[r.layout] = layout_toml(r, scenario, [g for g in guides if g.layout == r.layout])
    with tempfile.TemporaryDirectory() as tmp:  # all must load before any is replaced
        for layout, text in texts.items():
            (Path(tmp) / f"{layout}.toml").write_text(text)
            for d in scenarios.DISTANCES:
                scenarios.load(layout, d, scenario_dir=tmp, family=family)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(out_dir / f"{layout}.toml", text) for layout, text in texts.items()]


# ------------------------------------------------------------------------------------------------ verification
def verify(guides: Sequence[Guide], seeds: int, *, family: str = "cup",
           scenario_dir: str | Path | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Replay every guide in the simulator (seed 0 nominal, 1..seeds-1 jittered); per ``(pattern, layout)``:
    ``passed`` (replays that pass, :func:`sim.calibration.guides.judge`: collision-free on the named side, and a
    truncated guide nearer the goal at its end than at its start), ``replays``, ``collision_free``, ``end_distance``
    (m, the mean distance to the goal at the end), ``progress`` (m, the mean of start minus end distance to the
    goal), ``stops`` (False: a truncated guide) and ``weight`` (:attr:`Guide.weight`)."""
    rows = replay_all(guides, seeds, family=family, scenario_dir=scenario_dir)
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for guide in guides:
        mine = [r for r in rows if r["pattern"] == guide.name and r["layout"] == guide.layout]
        table[(guide.name, guide.layout)] = {
            "distance": guide.distance, "replays": len(mine), "passed": sum(map(passes, mine)),
            "collision_free": sum(r["collision_free"] for r in mine), "stops": guide.stops, "weight": guide.weight,
            "end_distance": float(np.mean([r["distance_to_goal"] for r in mine])),
            "progress": float(np.mean([r["start_distance"] - r["distance_to_goal"] for r in mine])),
        }
    return table


def guide_share(table: dict[tuple[str, str], dict[str, Any]]) -> float:
    """The share of the guides that pass in a :func:`verify` table: every pattern name counts once (a name played
    in two layouts half in each, :attr:`Guide.weight`), each of its replays equally."""
    return sum(v["weight"] * v["passed"] / v["replays"] for v in table.values()) / sum(v["weight"] for v in table.values())
