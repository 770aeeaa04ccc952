"""The typed, validated settings of a closed-loop evaluation: :class:`EvalConfig` (the model: LeRobot's
``configs/eval.py`` and ``envs/configs.py``).

An :class:`EvalConfig` is frozen and checked when it is built: an unknown layout, a negative latency or a bad
image size raises :class:`~foundations.errors.ConfigError` naming the field, before anything is written or any
worker starts. It is saved as the run folder's ``config.json`` and read back by ``--resume`` (a ``config.json``
written before this class existed, a flat dict, is converted on reading).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

import scenarios
from envs import ENV_ID
from envs.cadence import DEFAULT_CADENCE, DEFAULT_MAX_TIME, Cadence
from envs.rendering import Renderer, choose_renderer
from envs.settings import Actuation, ImageSize, default_actuation
from foundations.errors import ConfigError
from foundations.files import atomic_write_json, read_json

RecordMode = Literal["failures", "all", "none"]
#: Which episodes get a video: those that did not succeed, all, or none.
RECORD_MODES: tuple[str, ...] = RecordMode.__args__  # type: ignore[attr-defined]
#: Videos per policy x layout x distance unless told otherwise: one (the combo's episode 0, when ``record`` selects
#: it) shows each combo's behaviour; the 240 failures of the main job at one video each took about 0.8 s of a core
#: apiece, half of its time (README, "where the main job's time goes"). Our choice.
DEFAULT_VIDEOS_PER_COMBO = 1
#: Largest simulated latency (s), the env's ``action_latency`` bound.
MAX_LATENCY_S = 10.0
CONFIG_FILE = "config.json"
#: The run folder's video folder (:attr:`OutputSettings.video_dir`).
VIDEO_DIR = "videos"
#: The key of ``config.json`` recording what each policy was built as (a record, not a setting).
PROVENANCE_KEY = "built"
CONFIG_VERSION = 2


class _Frozen(BaseModel):
    """Frozen, no unknown fields; an invalid value raises :class:`ConfigError` (one line naming the field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(f"{type(self).__name__}: {_one_line(exc)}") from None


class Latency(_Frozen):
    """Policy latency applied in simulated time: ``seconds`` late (0 to 10 s) plus, per step, the latencies of the
    ``components`` the policy ran at that step (``{"grounder": 1.9, "mlp": 0.001}``, s; a policy that does not say
    which it ran pays them all: :attr:`policies.base.Policy.step_components`); or, with ``measured``, as late as the
    policy's own ``act`` took on this machine at each step. A step's total is capped at 10 s.

    Raises (on construction):
        ConfigError: a negative, non-finite or too large value, an empty component name, or ``measured`` with
            fixed values.
    """

    seconds: float = Field(0.0, ge=0.0, le=MAX_LATENCY_S)
    measured: bool = False
    components: dict[str, float] = Field(default_factory=dict)

    @field_validator("components")
    @classmethod
    def _components(cls, value: dict[str, float]) -> dict[str, float]:
        for name, seconds in value.items():
            if not name or not isinstance(seconds, (int, float)) or not 0.0 <= seconds <= MAX_LATENCY_S:
                raise ValueError(f"component latency {name!r} = {seconds!r} must be a name and 0 to "
                                 f"{MAX_LATENCY_S:g} s")
        return value

    @model_validator(mode="after")
    def _exclusive(self) -> Latency:
        if self.measured and (self.seconds or self.components):
            raise ValueError("a measured latency takes no fixed seconds or components")
        return self

    def per_step(self, policy: Any) -> bool:
        """Whether ``policy``'s steps have latencies of their own: measured, per component, or a policy that brings
        the robot's latency of its components (:attr:`policies.base.Policy.component_latencies`)."""
        return self.measured or bool(self.components) or bool(getattr(policy, "component_latencies", None))

    def step_seconds(self, measured_ms: float | None, components_used: Sequence[str] | None,
                     defaults: Mapping[str, float] | None = None) -> float:
        """The latency (s) of one step: the measured ``act`` time (``measured_ms``), or ``seconds`` plus the
        latencies of ``components_used`` (None: every component), capped at 10 s. A component's latency is this
        config's, else the policy's own (``defaults``, the robot's figures)."""
        if self.measured:
            return min(MAX_LATENCY_S, (measured_ms or 0.0) / 1e3)
        table = {**(defaults or {}), **self.components}
        used = table if components_used is None else {c: table.get(c, 0.0) for c in components_used}
        return min(MAX_LATENCY_S, self.seconds + sum(used.values()))

    @classmethod
    def parse(cls, value: float | str | Mapping[str, Any] | Latency | None) -> Latency:
        """``0.1`` (s), ``"measured"``, ``{"seconds": .., "measured": ..}`` or None (0 s) -> :class:`Latency`."""
        if isinstance(value, Latency):
            return value
        if value is None:
            return cls()
        if value == "measured":
            return cls(measured=True)
        if isinstance(value, Mapping):
            return cls(**value)
        return cls(seconds=value)

    @property
    def applied(self) -> float | str:
        """As written in each episode record's ``latency_applied``: seconds, ``"measured"``, or ``"components"``
        (the record's ``latency_steps_s`` then holds each step's)."""
        return "measured" if self.measured else "components" if self.components else self.seconds

    def __str__(self) -> str:
        if self.measured:
            return "measured"
        parts = [f"{self.seconds * 1e3:g} ms"] if self.seconds or not self.components else []
        parts += [f"{name} {seconds * 1e3:g} ms" for name, seconds in self.components.items()]
        return " + ".join(parts)


class EnvSettings(_Frozen):
    """Environment settings of every episode (see :class:`envs.box_avoid.BoxAvoidEnv` for their meaning).

    ``actuation`` defaults to the family's (``class`` for the corridor, :func:`envs.settings.default_actuation`);
    ``cadence`` applies to the ``class`` actuation only (default ``deployed``: :mod:`envs.cadence`); ``max_time``
    (s) to the ``class`` actuation too (default 45 s). ``renderer`` (``tiny``, ``egl``, ``auto``:
    :mod:`envs.rendering`) is resolved when the settings are built, so ``auto`` is stored (``config.json``) as the
    renderer it chose for ``image_size`` on this machine, and every worker renders with that one.

    Raises (on construction):
        ConfigError: a cadence for another actuation, an invalid cadence, or one whose holds are longer than the
            episode.
    """

    family: str = scenarios.DEFAULT_FAMILY
    actuation: Actuation | None = None
    cadence: Cadence | None = None
    image_size: ImageSize = ImageSize(224, 224)
    max_steps: int | None = Field(None, ge=1)
    max_time: float | None = Field(None, gt=0, le=3600)
    latency: Latency = Latency()
    renderer: Renderer = "auto"

    @field_validator("image_size", mode="before")
    @classmethod
    def _image_size(cls, value: Any) -> ImageSize:
        return ImageSize.parse(value, "image_size")

    @field_validator("latency", mode="before")
    @classmethod
    def _latency(cls, value: Any) -> Latency:
        return Latency.parse(value)

    @field_validator("cadence", mode="before")
    @classmethod
    def _cadence(cls, value: Any) -> Cadence | None:
        return None if value is None else Cadence.parse(value)

    @field_validator("family")
    @classmethod
    def _family(cls, value: str) -> str:
        return scenarios.check_family(value)

    @model_validator(mode="after")
    def _renderer(self) -> EnvSettings:
        object.__setattr__(self, "renderer", choose_renderer(self.renderer, self.image_size))
        return self

    @model_validator(mode="after")
    def _timing(self) -> EnvSettings:
        if self.actuation is None:
            object.__setattr__(self, "actuation", default_actuation(self.family))
        if self.actuation == "class":
            if self.cadence is None:
                object.__setattr__(self, "cadence", Cadence.parse(DEFAULT_CADENCE))
            self.cadence.check_fits(self.max_time or DEFAULT_MAX_TIME)
        elif self.cadence is not None:
            raise ValueError(f"cadence: a cadence is for the class actuation, not {self.actuation}")
        elif self.max_time is not None:
            raise ValueError(f"max_time: for the class actuation, not {self.actuation} (give max_steps)")
        return self

    @field_serializer("image_size")
    def _image_size_text(self, value: ImageSize) -> str:
        return str(value)

    @field_serializer("cadence")
    def _cadence_fields(self, value: Cadence | None) -> dict[str, Any] | None:
        return None if value is None else value.to_dict()

    def gym_kwargs(self, layout: str, distance: str) -> dict[str, Any]:
        """Keyword arguments for ``gym.make(ENV_ID, **...)``: these settings on ``layout`` at ``distance``, with the
        top-down view used by videos. A latency that varies per step (measured, per component) starts at 0 s and is
        set per step."""
        per_step = self.latency.measured or bool(self.latency.components)
        return {"scenario": layout, "distance": distance, "family": self.family, "image_size": tuple(self.image_size),
                "actuation": self.actuation, "cadence": self.cadence, "max_steps": self.max_steps,
                "max_time": self.max_time, "render_mode": "rgb_array", "renderer": self.renderer,
                "action_latency": 0.0 if per_step else self.latency.seconds}

    def make_env(self, layout: str, distance: str):
        """``gym.make(ENV_ID, **self.gym_kwargs(layout, distance))``."""
        import gymnasium as gym

        return gym.make(ENV_ID, **self.gym_kwargs(layout, distance))


class PolicySpec(_Frozen):
    """A policy to evaluate: its registry name and the keyword arguments ``make_policy`` gets."""

    name: str = Field(min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    def build(self):
        """``policies.make_policy(self.name, **self.kwargs)``."""
        from policies import make_policy

        return make_policy(self.name, **self.kwargs)


class Sweep(_Frozen):
    """Which episodes run: every layout x distance, ``episodes_per_combo`` each, seeds derived from ``seed``."""

    layouts: tuple[str, ...] = Field(min_length=1)
    distances: tuple[str, ...] = Field(min_length=1)
    episodes_per_combo: int = Field(10, ge=1, le=100_000)  # sim.cli.MAX_EPISODES
    seed: int = Field(0, ge=0, lt=2**32)

    @field_validator("layouts", "distances")
    @classmethod
    def _once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:  # its episodes would run, and count, twice
            raise ValueError(f"{', '.join(map(repr, repeated))} given more than once")
        return value


class OutputSettings(_Frozen):
    """Where results go: the run folder ``out`` (its videos in ``out/videos``: :attr:`video_dir`) and which
    episodes get a video; ``real_results`` is an optional ``policy,success_rate`` CSV measured on the robot;
    ``inline_videos``: videos embedded in the run page (``index.html``; the others are linked).

    An episode gets a video when ``record`` selects it (``failures``: it did not succeed; ``all``; ``none``) and its
    index within its policy x layout x distance is below ``videos_per_combo`` (None: every episode). The rule reads
    the episode alone, so the videos do not depend on the workers or the order episodes finish in."""

    out: Path
    record: RecordMode = "failures"
    videos_per_combo: int | None = Field(DEFAULT_VIDEOS_PER_COMBO, ge=0)
    real_results: Path | None = None
    inline_videos: int = Field(12, ge=0, le=1000)

    def may_record(self, episode: int) -> bool:
        """Whether episode index ``episode`` of a combo can get a video (then its frames are kept)."""
        return self.record != "none" and (self.videos_per_combo is None or episode < self.videos_per_combo)

    def records(self, episode: int, status: str | None) -> bool:
        """Whether the episode ``episode`` of a combo, ended with ``status``, gets a video."""
        return self.may_record(episode) and (self.record == "all" or status != "success")

    @property
    def video_dir(self) -> Path:
        """``out/videos``: inside the run folder, so no two runs share one."""
        return self.out / VIDEO_DIR


class EvalConfig(_Frozen):
    """Everything that defines an evaluation run (not how fast it runs: workers are an argument of ``evaluate``).

    Raises (on construction):
        ConfigError: an invalid value; the message names the field (``env.latency.seconds: ...``).
        ScenarioError: a layout that does not exist or does not load.
    """

    policies: tuple[PolicySpec, ...] = Field(min_length=1)
    env: EnvSettings = EnvSettings()
    sweep: Sweep
    output: OutputSettings
    version: int = CONFIG_VERSION

    @field_validator("policies")
    @classmethod
    def _unique(cls, value: tuple[PolicySpec, ...]) -> tuple[PolicySpec, ...]:
        names = [p.name for p in value]
        if len(set(names)) != len(names):
            raise ValueError(f"policy names must be unique, got {names}")
        return value

    @model_validator(mode="after")
    def _loadable(self) -> EvalConfig:
        family = self.env.family
        try:
            scenarios.check_distances(family, self.sweep.distances, "sweep.distances")
        except scenarios.ScenarioError as exc:
            raise ConfigError(str(exc)) from None
        for layout in self.sweep.layouts:
            scenarios.load(layout, self.sweep.distances[0], family=family)  # names the file and field
        return self

    @property
    def policy_names(self) -> list[str]:
        """The policies' names, in the configured order."""
        return [p.name for p in self.policies]

    def policy(self, name: str) -> PolicySpec:
        """The :class:`PolicySpec` called ``name``. Raises KeyError."""
        return next(p for p in self.policies if p.name == name)

    def to_json(self) -> dict[str, Any]:
        """The config as JSON-serialisable values (``model_dump(mode="json")``)."""
        return self.model_dump(mode="json")

    def save(self, run_dir: str | Path, provenance: dict[str, Any] | None = None) -> Path:
        """Write ``run_dir/config.json`` (atomic); returns its path.

        Args:
            provenance: per policy, what it was built as (weights, backbone, post-processing:
                :func:`sim.evaluation.runner.describe_policy`), recorded under :data:`PROVENANCE_KEY`; a record
                only, :meth:`load` does not read it back.
        """
        data = self.to_json()
        if provenance:
            data[PROVENANCE_KEY] = provenance
        return atomic_write_json(Path(run_dir) / CONFIG_FILE, data)

    @classmethod
    def load(cls, run_dir: str | Path) -> EvalConfig:
        """Read ``run_dir/config.json`` (this format or the older flat one); ``output.out`` becomes ``run_dir``.

        Raises:
            ConfigError: missing, unreadable or invalid file (named).
        """
        path = Path(run_dir) / CONFIG_FILE
        if not path.is_file():
            raise ConfigError(f"cannot resume {run_dir}: no {CONFIG_FILE} there (not a run folder)")
        try:
            data = read_json(path)
        except (OSError, ValueError) as exc:
            detail = str(exc)
            raise ConfigError(f"cannot resume {run_dir}: "
                              f"{detail if detail.startswith(str(path)) else f'{path}: {detail}'}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        if isinstance(data.get("env"), dict):  # runs of before the renderer setting rendered with tiny
            data["env"].setdefault("renderer", "tiny")
        if isinstance(data.get("output"), dict):  # ... and of before the cap recorded every selected episode
            data["output"].setdefault("videos_per_combo", None)
            data["output"].pop("video_dir", None)  # ... and named their video folder (now inside the run folder)
        data.pop(PROVENANCE_KEY, None)
        try:
            cfg = cls(**data) if "sweep" in data else from_legacy(data)
        except (ConfigError, scenarios.ScenarioError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        # The run lives where it was found, even if its folder was moved or renamed since it started.
        return cfg.model_copy(update={"output": cfg.output.model_copy(update={"out": Path(run_dir)})})


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def policy_spec(name: str, *, model_source: Mapping[str, Any] | None = None,
                policy_args: Mapping[str, Mapping[str, Any]] | None = None, threads: int | None = 1) -> PolicySpec:
    """How the command-line flags become one policy's keyword arguments (the one place of this rule):
    ``policy_args["*"]`` then ``policy_args[name]`` (``--policy-arg [POLICY@]KEY=VALUE``), and, for the VLA and the
    grounder + MLP policies (``policies.registry.model_source_names``), the model-source flags (``checkpoint``,
    ``backbone``, ... ``config``, and ``device``: ``sim.cli.MODEL_SOURCE_FLAGS``; saved in the run's
    ``config.json``, so ``--resume`` keeps them) and ``threads`` intra-op threads (default one per process: the
    evaluation workers fill the cores; None: torch's default)."""
    from policies.registry import model_source_names

    args = policy_args or {}
    kwargs = {**args.get("*", {}), **args.get(name, {})}
    if name.partition(":")[0] in model_source_names():
        for key, value in (model_source or {}).items():
            if value is not None and (key != "config" or name.startswith("robovlms")):
                kwargs[key] = value
        if threads is not None:
            kwargs.setdefault("num_threads", threads)
    return PolicySpec(name=name, kwargs=kwargs)


def from_legacy(data: dict[str, Any]) -> EvalConfig:
    """An :class:`EvalConfig` from the flat ``config.json`` of runs started before it existed."""
    source = {k: data.get(k) for k in ("checkpoint", "backbone", "backbone_path", "clip_path", "key_map", "config")}
    return EvalConfig(
        policies=[policy_spec(n, model_source=source, policy_args=data.get("policy_args")) for n in data["policies"]],
        env=EnvSettings(actuation=data.get("actuation", "keypress"), image_size=data.get("image_size", "224x224"),
                        max_steps=data.get("max_steps"), latency=Latency.parse(data.get("latency", 0.0)),
                        renderer="tiny"),
        sweep=Sweep(layouts=data["layouts"], distances=data["distances"],
                    episodes_per_combo=data["episodes_per_combo"], seed=data["seed"]),
        output=OutputSettings(out=data["out"], record=data.get("record", "failures"), videos_per_combo=None,
                              real_results=data.get("real_results")),
    )


def safe_name(text: str) -> str:
    """``text`` as a file name: runs of characters other than ``A-Za-z0-9._-`` become one ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def default_run_dir(policy_names: Sequence[str], stamp: str) -> Path:
    """``runs/<policies>-<stamp>`` (:func:`safe_name`)."""
    return Path("runs") / f"{safe_name('+'.join(policy_names))}-{stamp}"
