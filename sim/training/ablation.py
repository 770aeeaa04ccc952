"""The ablation harness behind ``python -m sim.ablate SPEC.toml``: every variant of a spec file trained on the same
synthetic data with the same seed, evaluated in closed loop on the same sweep, one table.

Spec file (TOML, schema :class:`AblationSpec`, read with ``tomllib`` and validated with pydantic: an unknown key or
a bad value is refused before anything runs, naming the file and the field)::

    seed = 0                                 # training seed of every variant
    [data]                                   # sim.generate settings (generated once, into OUT/data)
    family = "cup"                           # scenario family of the data and (unless [eval] says) of the sweep
    episodes = 240
    image_size = "96x96"
    [eval]                                   # the closed-loop sweep (sim.evaluation.evaluate), same for all
    episodes_per_combo = 4
    [train]                                  # sim.train settings every variant starts from
    policy = "case1"
    lr = 1e-3
    policy_args = { final_norm = false, dropout = 0.1 }
    [[variants]]
    name = "baseline"
    [[variants]]
    name = "hard-negative"
    idea = "hard-negative mining, 30 % of the draws (seed 001)"
    sampling = "hard-negative"

The team's grounder + MLP heads (``policy = "exp73"`` or ``"exp49"``, corridor data) train with
:mod:`sim.training.goalnav` (keys ``window``, ``epochs``, ``batch_size``, ``lr``, ``patience``); variants that train
alike share one trained head (``OUT/trained/``) and differ only in ``eval_policy_args``: the policy's options at
evaluation (``grounding_skip_n``, ``stop_mode``, ``stop_area``, ``grounder_args``, ``latencies`` ...), which any
variant may set (``[train]``'s, then the variant's, key by key). ``[eval]`` takes the corridor's ``cadence`` and
``max_time``.

A variant sets any :class:`TrainOptions` key; the rest comes from ``[train]``, then from ``sim.train``'s defaults.
``strategy`` presets (:mod:`sim.training.recipes`) apply over ``[train]`` and under the variant's own keys.
``policy_args`` of ``[train]`` are inherited only by variants that train the same head; a variant's own
``policy_args`` are added over them. ``distance_augmentation = true`` and ``lora = true`` mean the notes' defaults;
a table gives other values.

Output folder (``--out``, default ``runs/ablation-<spec name>``)::

    spec.json                    the data / eval / seed sections this folder was started with
    data/                        the generated H5 episodes (sim.generate: resumable)
    features/                    the feature cache shared by the variants
    variants/<name>/settings.json    what the variant trains and evaluates (resolved)
    variants/<name>/train/       sim.train's outputs (best.safetensors, metrics.csv, summary.json)
    variants/<name>/eval/        the evaluation run folder (episodes.jsonl, summary.json, summary.md, index.html)
    variants/<name>/result.json  the variant's row, written last: a variant with one is finished
    trained/<head>-<hash>/       a grounder + MLP head (head.safetensors + .json, summary.json), shared by the
                                 variants that train it alike; goalnav-features/: their vision feature cache
    table.md, results.json       the table of the finished variants, rewritten after each one

Resuming (run the same command again): finished variants are skipped (neither retrained nor re-evaluated); an
interrupted training restarts from scratch (its folder is cleared); an interrupted evaluation completes its
``episodes.jsonl`` (``evaluate(..., resume=True)``: finished episodes are kept); a variant whose resolved settings
changed in the spec file is redone. A changed ``data``, ``eval`` or ``seed`` section is refused: use another
``--out``. Given the same ``--workers`` (torch's thread count), the same spec gives the same table.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import scenarios
from envs.cadence import Cadence
from envs.settings import ImageSize
from foundations.errors import ConfigError, MobileVLAError
from foundations.files import atomic_write_json, atomic_write_text, read_json, read_text_capped
from policies.catalog import BACKBONE_NAMES, HEAD_NAMES, TRAINABLE_GOALNAV
from sim.training.augmentation import DISTANCE_FACTORS, check_factors
from sim.training.recipes import STRATEGIES, apply_strategy
from sim.training.supervised import LOSSES, SAMPLING_MODES

RESULT_FILE = "result.json"
SETTINGS_FILE = "settings.json"
#: The training keys a variant can set beside ``policy``, ``backbone`` and ``policy_args`` (``sim.train`` flags).
RECIPE_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "patience", "val_fraction", "sampling",
               "hard_negative_fraction", "hard_negative_pool", "loss", "stop_weight")
#: The training keys of the grounder + MLP heads (:func:`sim.training.goalnav.train_goalnav`).
GOALNAV_KEYS = ("window", "epochs", "batch_size", "lr", "patience")


class AblationError(MobileVLAError, RuntimeError):
    """The ablation cannot go on (episodes that could not be generated)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _names(value: Any) -> Any:
    if value == "all":
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
        raise ValueError(f"must be \"all\" or a non-empty list of names, got {value!r}")
    return value


def sweep_names(family: str, layouts: Any, distances: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A spec's ``layouts`` / ``distances`` (``"all"`` or names) in ``family``: every layout x distance of a box
    family, every corridor position x path for ``"all"``.

    Raises:
        ValueError: a name that is not one of the family's (``unknown distance 'near'; choose from ...``).
    """
    out = []
    for value, known, what in ((layouts, scenarios.names(family=family), scenarios.axis_names(family)[0]),
                               (distances, scenarios.distances(family), scenarios.axis_names(family)[1])):
        if value == "all":
            out.append(tuple(known))
            continue
        unknown = [v for v in value if v not in known]
        if unknown:
            raise ValueError(f"unknown {what} {unknown[0]!r}; choose from {', '.join(known)} or \"all\"")
        out.append(tuple(value))
    return out[0], out[1]


def _family(value: str | None) -> str | None:
    return None if value is None else scenarios.check_family(value)


def _size(value: str | None) -> str | None:
    return None if value is None else str(ImageSize.parse(value, "image_size"))


class DataSpec(_Strict):
    """The synthetic episodes every variant trains on (:class:`sim.data.generation.GenerateConfig`); ``family``: the
    scenario family they are generated in (``scenarios.FAMILIES``)."""

    family: str = scenarios.DEFAULT_FAMILY
    episodes: int = Field(ge=2, le=100_000)
    image_size: str = "96x96"
    seed: int = Field(0, ge=0, lt=2**32)
    layouts: Any = "all"
    distances: Any = "all"
    randomize: bool = True
    variant_ratio: float = Field(0.4, ge=0.0, le=1.0)

    _check_size = field_validator("image_size")(_size)
    _check_family = field_validator("family")(_family)
    _check_names = field_validator("layouts", "distances")(_names)

    @model_validator(mode="after")
    def _in_family(self) -> DataSpec:
        sweep_names(self.family, self.layouts, self.distances)
        return self


class EvalSpec(_Strict):
    """The closed-loop sweep every variant faces (:class:`sim.evaluation.config.Sweep`); ``image_size``: the
    camera's, ``family`` the scenario family (defaults: the data's)."""

    family: str | None = None
    episodes_per_combo: int = Field(2, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)
    layouts: Any = "all"
    distances: Any = "all"
    image_size: str | None = None
    max_steps: int | None = Field(None, ge=1)
    cadence: str | None = None
    max_time: float | None = Field(None, gt=0, le=3600)

    _check_size = field_validator("image_size")(_size)
    _check_family = field_validator("family")(_family)
    _check_names = field_validator("layouts", "distances")(_names)

    @field_validator("cadence")
    @classmethod
    def _cadence(cls, value: str | None) -> str | None:
        if value is not None:
            Cadence.parse(value)  # a bad preset or field is refused with the spec, not at evaluation
        return value


class TrainOptions(_Strict):
    """What a variant trains: ``sim.train``'s options (None: not set here)."""

    policy: str | None = None
    backbone: str | None = None
    policy_args: dict[str, Any] | None = None
    strategy: str | None = None
    epochs: int | None = Field(None, ge=1, le=10_000)
    batch_size: int | None = Field(None, ge=1, le=65_536)
    lr: float | None = Field(None, gt=0.0, le=1.0)
    weight_decay: float | None = Field(None, ge=0.0, le=1.0)
    patience: int | None = Field(None, ge=1)
    val_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    sampling: str | None = None
    hard_negative_fraction: float | None = Field(None, ge=0.0, le=1.0)
    hard_negative_pool: float | None = Field(None, gt=0.0, le=1.0)
    loss: str | None = None
    stop_weight: float | None = Field(None, gt=0.0)
    distance_augmentation: bool | dict[str, int] | None = None
    lora: bool | dict[str, Any] | None = None
    window: int | None = Field(None, ge=1, le=32)
    eval_policy_args: dict[str, Any] | None = None

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str | None) -> str | None:
        heads = [h for h in HEAD_NAMES if h != "robovlms"] + list(TRAINABLE_GOALNAV)
        if value is not None and value not in heads:
            raise ValueError(f"unknown head {value!r}; choose from {', '.join(heads)}")
        return value

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, value: str | None) -> str | None:
        if value is not None and value not in BACKBONE_NAMES:
            raise ValueError(f"unknown backbone {value!r}; choose from {', '.join(BACKBONE_NAMES)}")
        return value

    @field_validator("strategy", "sampling", "loss")
    @classmethod
    def _choice(cls, value: str | None, info) -> str | None:
        choices = {"strategy": tuple(STRATEGIES), "sampling": SAMPLING_MODES, "loss": LOSSES}[info.field_name]
        if value is not None and value not in choices:
            raise ValueError(f"unknown {info.field_name} {value!r}; choose from {', '.join(choices)}")
        return value

    @field_validator("distance_augmentation")
    @classmethod
    def _factors(cls, value: Any) -> Any:
        if isinstance(value, dict):
            check_factors(value, "copies per distance")  # a ConfigError is a ValueError: pydantic reports it
        return value

    @field_validator("lora")
    @classmethod
    def _lora(cls, value: Any) -> Any:
        if isinstance(value, dict):
            from policies.backbones.lora import LoraSettings

            LoraSettings.from_dict(value)
        return value


class VariantSpec(TrainOptions):
    """One row of the table: a ``name`` (a file name: letters, digits, ``.``, ``_``, ``-``), the ``idea`` it tests
    (shown under the table), and its :class:`TrainOptions`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    idea: str = ""


class AblationSpec(_Strict):
    """A spec file (module doc). ``seed``: the training seed of every variant."""

    seed: int = Field(0, ge=0, lt=2**32)
    data: DataSpec
    eval: EvalSpec = EvalSpec()
    train: TrainOptions = TrainOptions()
    variants: list[VariantSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> AblationSpec:
        try:
            sweep_names(self.eval.family or self.data.family, self.eval.layouts, self.eval.distances)
        except ValueError as exc:
            raise ValueError(f"eval: {exc}") from None
        names = [v.name for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variant names must be unique, {duplicates[0]!r} is used twice")
        return self


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{loc}: {msg}{more}" if loc else msg + more


def load_spec(path: str | Path) -> AblationSpec:
    """Read and validate a spec file.

    Raises:
        ConfigError: unreadable file, TOML syntax error or an invalid field (one line naming the file and field).
    """
    path = Path(path)
    try:
        raw = tomllib.loads(read_text_capped(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such spec file") from None
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        spec = AblationSpec(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_one_line(exc)}") from None
    for variant in spec.variants:  # head fields and strategies: refused now, not after an hour of training
        try:
            resolve_variant(spec, variant)
        except ConfigError as exc:
            raise ConfigError(f"{path}: variant {variant.name!r}: {exc}") from None
    return spec


@dataclasses.dataclass(frozen=True)
class VariantRun:
    """A variant resolved: the head, the backbone, :func:`sim.training.supervised.train`'s keyword arguments and
    the head config values."""

    name: str
    idea: str
    policy: str
    backbone: str
    train_kwargs: dict[str, Any]
    head_overrides: dict[str, Any]
    eval_args: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def goalnav(self) -> bool:
        """A grounder + MLP head (:mod:`sim.training.goalnav`), else a VLA head (:mod:`sim.training.supervised`)."""
        return self.policy in TRAINABLE_GOALNAV

    def settings(self) -> dict[str, Any]:
        """JSON form (``settings.json``; a changed value means the variant is redone)."""
        kwargs = dict(self.train_kwargs)
        if kwargs.get("lora") is not None:
            kwargs["lora"] = kwargs["lora"].to_dict()
        return {"policy": self.policy, "backbone": self.backbone, "train": kwargs, "head": self.head_overrides,
                "eval_args": self.eval_args}

    def training_key(self) -> str:
        """``<head>-<hash of what is trained>``: the folder a grounder + MLP head is trained into, shared by the
        variants that differ only in their evaluation options."""
        import hashlib

        blob = json.dumps({"policy": self.policy, "backbone": self.backbone, "train": self.train_kwargs},
                          sort_keys=True, default=str)
        return f"{self.policy}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def resolve_variant(spec: AblationSpec, variant: VariantSpec) -> VariantRun:
    """``variant`` over ``[train]`` over ``sim.train``'s defaults (module doc).

    Raises:
        ConfigError: no head named anywhere, a head config field the head lacks, a strategy that does not fit.
    """
    from policies.backbones.lora import LoraSettings
    from policies.heads import config_fields, config_from_dict

    base, own = spec.train, variant.model_fields_set
    policy = variant.policy or base.policy
    if policy is None:
        raise ConfigError("no head to train: set policy in [train] or in the variant")
    eval_args = {**(base.eval_policy_args or {}), **(variant.eval_policy_args or {})}
    if policy in TRAINABLE_GOALNAV:
        return _resolve_goalnav(spec, variant, policy, eval_args)
    if "window" in own or base.window is not None:
        raise ConfigError(f"window is a grounder + MLP training key ({', '.join(TRAINABLE_GOALNAV)}); head "
                          f"{policy} takes its window from policy_args")
    inherited = base.policy_args if (base.policy_args and policy == (base.policy or policy)) else {}
    head_args = dict(variant.policy_args or {}) if "policy_args" in own else {}
    defaults = {k: getattr(base, k) for k in RECIPE_KEYS if getattr(base, k) is not None}
    explicit = {k: getattr(variant, k) for k in RECIPE_KEYS if k in own and getattr(variant, k) is not None}
    strategy = variant.strategy if "strategy" in own else base.strategy
    kwargs, head = apply_strategy(strategy, policy, explicit, head_args, defaults=defaults,
                                  head_defaults=inherited or {})
    unknown = sorted(set(head) - config_fields(policy))
    if unknown:
        raise ConfigError(f"head {policy} has no config field {', '.join(unknown)}")
    config_from_dict(policy, head).validate()  # value types and ranges, before any training
    aug = variant.distance_augmentation if "distance_augmentation" in own else base.distance_augmentation
    kwargs["distance_augmentation"] = (dict(DISTANCE_FACTORS) if aug is True else dict(aug) if aug else None)
    lora = variant.lora if "lora" in own else base.lora
    kwargs["lora"] = LoraSettings() if lora is True else LoraSettings.from_dict(lora) if lora else None
    kwargs["seed"] = spec.seed
    return VariantRun(variant.name, variant.idea, policy, variant.backbone or base.backbone or "lite", kwargs, head,
                      eval_args)


def _resolve_goalnav(spec: AblationSpec, variant: VariantSpec, policy: str, eval_args: dict[str, Any]
                     ) -> VariantRun:
    """A grounder + MLP variant: :data:`GOALNAV_KEYS` of the variant over ``[train]``'s (module doc).

    Raises:
        ConfigError: a VLA training key (``policy_args``, ``strategy``, ``sampling`` ...), a backbone other than
            ``lite``, a policy option the policy does not take, or data of another family than the corridor.
    """
    import inspect

    from policies.goalnav.policy import build_goalnav_policy, policy_options

    if spec.data.family != "corridor":
        raise ConfigError(f"head {policy} trains on corridor data: set family = \"corridor\" in [data]")
    foreign = sorted(k for k in TrainOptions.model_fields if k not in (*GOALNAV_KEYS, "policy", "backbone",
                                                                       "eval_policy_args")
                     and (k in variant.model_fields_set or k in spec.train.model_fields_set))
    if foreign:
        raise ConfigError(f"head {policy} (a grounder + MLP head) has no training key {', '.join(foreign)}; its "
                          f"keys: {', '.join(GOALNAV_KEYS)}")
    backbone = variant.backbone or spec.train.backbone or "lite"
    if backbone != "lite":
        raise ConfigError(f"head {policy} trains on the lite vision feature here, not {backbone!r}")
    options = policy_options() | set(inspect.signature(build_goalnav_policy).parameters) - {"variant", "checkpoint", "path",
                                                                          "backbone", "options"}
    unknown = sorted(set(eval_args) - options)
    if unknown:
        raise ConfigError(f"eval_policy_args: {policy} has no option {', '.join(unknown)}; options: "
                          f"{', '.join(sorted(options))}")
    kwargs = {k: getattr(variant, k) if k in variant.model_fields_set else getattr(spec.train, k)
              for k in GOALNAV_KEYS}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    kwargs["seed"] = spec.seed
    return VariantRun(variant.name, variant.idea, policy, backbone, kwargs, {}, eval_args)


# --------------------------------------------------------------------------------------------------- running
@dataclasses.dataclass
class AblationResult:
    """What :func:`run_ablation` returns: the output folder, one row per finished variant (spec order), the
    markdown table, and how many evaluation episodes ended in ``error``."""

    out: Path
    rows: list[dict[str, Any]]
    table: str
    errors: int


def _reset_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, sort_keys=True, default=str)


def eval_config(spec: AblationSpec, run: VariantRun, checkpoint: Path, out: Path):
    """The variant's :class:`~sim.evaluation.config.EvalConfig`, built as ``sim.eval`` builds one: the head with its
    checkpoint as the one policy, the spec's sweep, no videos."""
    from sim.evaluation.config import EnvSettings, EvalConfig, OutputSettings, Sweep, policy_spec

    ev = spec.eval
    family = ev.family or spec.data.family
    layouts, distances = sweep_names(family, ev.layouts, ev.distances)
    source = {"checkpoint": str(checkpoint), "backbone": run.backbone}
    return EvalConfig(
        policies=[policy_spec(run.policy, model_source=source, policy_args={run.policy: run.eval_args})],
        env=EnvSettings(family=family, image_size=ev.image_size or spec.data.image_size, max_steps=ev.max_steps,
                        cadence=ev.cadence, max_time=ev.max_time),
        sweep=Sweep(layouts=layouts, distances=distances, episodes_per_combo=ev.episodes_per_combo, seed=ev.seed),
        output=OutputSettings(out=out, record="none"),
    )


def _generate(spec: AblationSpec, out: Path, workers: int, progress: bool) -> Path:
    from sim.data.generation import GenerateConfig, generate

    d = spec.data
    layouts, distances = sweep_names(d.family, d.layouts, d.distances)
    cfg = GenerateConfig(out=out, episodes=d.episodes, image_size=tuple(ImageSize.parse(d.image_size)),
                         layouts=layouts, distances=distances, family=d.family, seed=d.seed, randomize=d.randomize, variant_ratio=d.variant_ratio,
                         workers=workers)
    result = generate(cfg, progress=progress)
    if result["failed"]:
        raise AblationError(f"{len(result['failed'])} of {d.episodes} episodes could not be generated into {out} "
                            f"(first: {result['failed'][0]['error']}); run again to retry them")
    return out


def _warm_cache(runs: list[VariantRun], data: Path, cache: Path, progress: bool) -> None:
    """Encode every episode once for the streams the variants read, so no variant's train time includes the shared
    features (each still pays for what only it needs: augmented copies, LoRA trunk activations)."""
    from tqdm import tqdm

    from policies.backbones import make_backbone
    from policies.heads import head_class
    from sim.data.dataset import list_episode_files, load_episodes
    from sim.training.supervised import FeatureCache

    runs = [r for r in runs if not r.goalnav]  # those encode their own (_train_goalnav)
    for backbone in sorted({r.backbone for r in runs}):
        streams = tuple(dict.fromkeys(s for r in runs if r.backbone == backbone and r.train_kwargs["lora"] is None
                                      for s, _ in head_class(r.policy).frame_inputs(
                                          head_class(r.policy).config_class())))
        if not streams:
            continue
        fc = FeatureCache(cache, make_backbone(backbone, streams=streams), streams)
        for ep in tqdm(load_episodes(list_episode_files(data)), desc=f"features ({backbone})", unit="ep",
                       disable=not progress):
            fc.vision(ep.path, ep.instruction)


def _row(run: VariantRun, train: dict[str, Any], summary: dict[str, Any], train_s: float, eval_s: float
         ) -> dict[str, Any]:
    overall = summary["policies"][run.policy]["overall"]
    best = train.get("best", {})
    return {"variant": run.name, "idea": run.idea, "policy": run.policy, "backbone": run.backbone,
            "val_mae": best.get("val_mae"), "val_acc": train.get("val_acc"), "best_epoch": best.get("epoch"),
            "epochs_run": train["epochs_run"], "train_windows": train.get("train_windows", train.get("samples")),
            "augmented_copies": train.get("augmented_copies", 0), "train_seconds": round(train_s, 1),
            "eval_seconds": round(eval_s, 1), "eval_args": run.eval_args,
            **{k: overall.get(k) for k in ("episodes", "successes", "success_rate", "success_ci95", "spl",
                                           "collision_rate", "overshoot_rate", "timeout_rate", "side_compliance",
                                           "error_rate")}}


def format_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table: variant | offline validation (MAE, or class accuracy for a grounder + MLP head) |
    closed-loop success [95% CI] | SPL | collision | side compliance (the corridor: overshoot) | train time, then
    one line per variant naming its idea."""
    from sim.evaluation.report import num, pct

    corridor = any(r.get("val_acc") is not None or r.get("overshoot_rate") for r in rows)
    last = "overshoot" if corridor else "side compliance"
    lines = ["| variant | offline validation | closed-loop success [95% CI] | SPL | collision | "
             f"{last} | train time |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["success_ci95"]
        success = f"{r['successes']}/{r['episodes']} = {pct(r['success_rate'])} [{100 * lo:.0f}-{100 * hi:.0f}]"
        offline = (f"acc {pct(r['val_acc'])}" if r.get("val_acc") is not None
                   else f"MAE {num(r['val_mae'], '.3f')}")
        rate = r.get("overshoot_rate") if corridor else r["side_compliance"]
        lines.append(f"| {r['variant']} | {offline} | {success} | {num(r['spl'])} | "
                     f"{pct(r['collision_rate'])} | {pct(rate)} | {r['train_seconds']:.0f} s |")
    ideas = [f"- `{r['variant']}`: {r['idea']}" for r in rows if r["idea"]]
    return "\n".join(lines + ([""] + ideas if ideas else [])) + "\n"


def _train_goalnav(run: VariantRun, data: Path, out: Path, workers: int, progress: bool) -> dict[str, Any]:
    """Train a grounder + MLP head into ``out/trained/<key>`` (:meth:`VariantRun.training_key`), or reuse it when
    another variant trained it alike; its summary with ``checkpoint`` and ``wall_seconds``."""
    import torch

    from policies.backbones import make_backbone
    from sim.training.goalnav import load_episodes, train_goalnav

    folder = out / "trained" / run.training_key()
    summary = _read_json(folder / "summary.json")
    if summary is not None:
        return summary
    _reset_dir(folder)
    torch.set_num_threads(workers)
    start = time.perf_counter()
    episodes = load_episodes(sorted(data.glob("*.h5")), make_backbone(run.backbone, streams=("image_mean",)),
                             out / "goalnav-features", progress=progress)
    target = folder / "head.safetensors"
    kind = run.policy
    summary = train_goalnav(kind, episodes, target, progress=progress, backbone=run.backbone,
                            training_data=f"{len(episodes)} episodes of {data}", **run.train_kwargs)
    summary.update(checkpoint=str(target), wall_seconds=round(time.perf_counter() - start, 1))
    _write_json(folder / "summary.json", summary)
    return summary


def run_ablation(spec: AblationSpec, out: str | Path, *, workers: int = 1, progress: bool = True,
                 on_row: Callable[[dict[str, Any]], None] | None = None) -> AblationResult:
    """Generate the data, then train and evaluate every unfinished variant of ``spec`` in ``out`` (module doc).

    Args:
        workers: processes for generation and evaluation, and torch's threads for training.
        on_row: called with each variant's row as it finishes (a variant skipped as finished included).

    Raises:
        ConfigError: ``out`` was started with other ``data``/``eval``/``seed`` sections.
        AblationError: episodes that could not be generated.
        KeyboardInterrupt: an evaluation was interrupted (finished work is kept).
    """
    import torch
    from tqdm import tqdm

    from sim.evaluation import EvalConfig, evaluate
    from sim.training.supervised import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recorded = {"seed": spec.seed, "data": spec.data.model_dump(), "eval": spec.eval.model_dump()}
    previous = _read_json(out / "spec.json")
    if previous is not None and previous != json.loads(json.dumps(recorded)):
        changed = [k for k in recorded if previous.get(k) != json.loads(json.dumps(recorded[k]))]
        raise ConfigError(f"{out} was started with other {', '.join(changed)} settings; use another --out "
                          "(or remove the folder)")
    _write_json(out / "spec.json", recorded)
    runs = [resolve_variant(spec, v) for v in spec.variants]
    data = _generate(spec, out / "data", workers, progress)
    cache = out / "features"
    _warm_cache(runs, data, cache, progress)

    rows, errors = [], 0
    bar = tqdm(runs, desc="ablation", unit="variant", disable=not progress)
    for run in bar:
        bar.set_postfix(variant=run.name)
        vdir = out / "variants" / run.name
        settings = {**run.settings(), "seed": spec.seed, "data": recorded["data"], "eval": recorded["eval"]}
        settings = json.loads(json.dumps(settings, default=str))
        if _read_json(vdir / SETTINGS_FILE) != settings:
            if vdir.exists():
                tqdm.write(f"{run.name}: settings changed (or never started): trained and evaluated from scratch")
            _reset_dir(vdir)
            _write_json(vdir / SETTINGS_FILE, settings)
        row = _read_json(vdir / RESULT_FILE)
        if row is not None:
            row["idea"] = run.idea  # words only: a reworded idea changes nothing measured
        else:
            trained = _read_json(vdir / "train" / "summary.json")
            eval_dir = vdir / "eval"
            if run.goalnav:
                if trained is None:
                    shutil.rmtree(eval_dir, ignore_errors=True)
                    trained = _train_goalnav(run, data, out, workers, progress)
                    (vdir / "train").mkdir(exist_ok=True)
                    _write_json(vdir / "train" / "summary.json", trained)
            elif trained is None:
                _reset_dir(vdir / "train")  # an interrupted training restarts cleanly ...
                shutil.rmtree(eval_dir, ignore_errors=True)  # ... and nothing is kept of an earlier checkpoint's run
                torch.set_num_threads(workers)
                start = time.perf_counter()
                trained = train(run.policy, [data], vdir / "train", backbone=run.backbone, cache_dir=cache,
                                head_overrides=run.head_overrides, progress=progress, **run.train_kwargs)
                trained["wall_seconds"] = round(time.perf_counter() - start, 1)
                _write_json(vdir / "train" / "summary.json", trained)
            cfg = eval_config(spec, run, Path(trained["checkpoint"]), eval_dir)
            resume = (eval_dir / "config.json").is_file()
            if resume and EvalConfig.load(eval_dir) != cfg:
                resume = False
            if not resume and eval_dir.exists():
                shutil.rmtree(eval_dir)
            threads = torch.get_num_threads()
            start = time.perf_counter()
            result = evaluate(cfg, workers=workers, resume=resume, progress=progress, plots=False)
            torch.set_num_threads(threads)  # building the policy in this process set one thread
            if result.interrupted:
                raise KeyboardInterrupt
            row = _row(run, trained, result.summary, trained["wall_seconds"], time.perf_counter() - start)
            _write_json(vdir / RESULT_FILE, row)
        errors += round((row.get("error_rate") or 0) * row["episodes"])
        rows.append(row)
        if on_row is not None:
            on_row(row)
        atomic_write_text(out / "table.md", format_table(rows))
        _write_json(out / "results.json", {"rows": rows, "spec": recorded})
    return AblationResult(out, rows, format_table(rows), errors)
