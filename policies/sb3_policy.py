"""``sb3`` policy: a stable-baselines3 model zip (PPO, A2C, SAC, TD3, DDPG) driving the robot.

``make_policy("sb3:runs/ppo.zip")`` loads ``runs/ppo.zip``. The model must have been trained on
``MobileVLA/BoxAvoid-v0`` observations (or a subset of their keys):

- a ``Dict`` observation space (``MultiInputPolicy``) whose keys are among ``"image"``/``"state"`` (e.g. an env
  built with ``obs_keys=("state",)``): the matching keys of the observation are fed;
- a ``Box`` space (``MlpPolicy``/``CnnPolicy``, e.g. after ``FilterObservation`` + ``FlattenObservation``): the one
  observation key whose shape matches is fed (``obs_key`` forces it): ``"state"`` (6,) or ``"image"`` (H, W, 3).

``"instruction"`` (``Text``) cannot be an SB3 input.

**Nothing in the zip is unpickled** unless ``trust=True``: SB3 stores the spaces, the policy class and the schedules
as cloudpickle blobs, and unpickling runs whatever code the file's author put there. By default
(:func:`safe_custom_objects`) every such entry is rebuilt from the plain JSON beside it (the spaces' shapes, bounds and
dtypes, the policy class's module and name, resolved only inside ``stable_baselines3``) or replaced by an inert value,
and the weights are read by SB3 with ``torch.load(weights_only=True)``. A zip whose entries cannot be rebuilt so is
refused with a message naming the entry; ``trust=True`` (``--policy-arg trust=true``) loads it the SB3 way, for
files you made yourself.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from foundations.errors import MobileVLAError
from policies.base import Policy

#: Algorithms recognised by name (``algo=``) -> stable_baselines3 class name.
ALGOS = {
    "ppo": "PPO",
    "a2c": "A2C",
    "sac": "SAC",
    "td3": "TD3",
    "ddpg": "DDPG",
    "dqn": "DQN",
}
#: Observation keys an SB3 model can consume (``instruction`` is text).
SB3_OBS_KEYS = ("image", "state")


class SB3PolicyError(MobileVLAError, ValueError):
    """The SB3 zip is missing, unreadable, of an unknown algorithm, or does not fit the observations."""


_NUMBER = re.compile(r"[-+]?(?:inf|nan|\d+\.?\d*(?:e[-+]?\d+)?|\.\d+(?:e[-+]?\d+)?)", re.IGNORECASE)
_BOX_REPR = re.compile(r"Box\(([^,()\[\]]+), ([^,()\[\]]+), \(([\d, ]*)\), (\w+)\)")
#: Serialized entries that only training reads: replaced by None when loading for inference.
_TRAINING_ONLY = frozenset({"_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer",
                            "ep_success_buffer", "rollout_buffer_class", "replay_buffer_class", "action_noise",
                            "replay_buffer_kwargs", "rollout_buffer_kwargs"})


def _bounds(text: str, shape: tuple[int, ...]) -> np.ndarray:
    """A bound of a Box from its numpy repr (``"[-1.15 -1.15]"``, or an abbreviated uniform array)."""
    values = [float(v) for v in _NUMBER.findall(str(text))]
    size = int(np.prod(shape)) if shape else 1
    if len(values) == size:
        return np.asarray(values, dtype=np.float64).reshape(shape)
    if values and "..." in str(text) and len(set(values)) == 1:
        return np.full(shape, values[0])
    raise ValueError(f"cannot read bounds {str(text)[:60]!r}")


def _box(entry: Mapping[str, Any]) -> Any:
    from gymnasium import spaces

    shape = tuple(int(v) for v in ast.literal_eval(str(entry["_shape"])))
    dtype = np.dtype(str(entry["dtype"]))
    return spaces.Box(_bounds(entry["low"], shape).astype(dtype), _bounds(entry["high"], shape).astype(dtype), shape,
                      dtype)


def _space(entry: Mapping[str, Any]) -> Any:
    """A gymnasium ``Box`` or ``Dict`` of ``Box`` from the plain attributes SB3 saves beside the pickled space."""
    from gymnasium import spaces

    kind = str(entry.get(":type:", ""))
    if kind.endswith(".Box'>"):
        return _box(entry)
    if kind.endswith(".Dict'>"):
        text = str(entry["spaces"])
        keys = re.findall(r"'(\w+)': Box\(", text)
        boxes = _BOX_REPR.findall(text)
        if not keys or len(keys) != len(boxes):
            raise ValueError(f"cannot read the Dict space {text[:80]!r}")
        subspaces = {}
        for key, (low, high, shape_text, dtype) in zip(keys, boxes):
            shape = tuple(int(v) for v in shape_text.replace(" ", "").split(",") if v)
            subspaces[key] = spaces.Box(float(low), float(high), shape, np.dtype(dtype))
        return spaces.Dict(subspaces)
    raise ValueError(f"unsupported space type {kind}")


def _policy_class(entry: Mapping[str, Any]) -> type:
    from stable_baselines3.common.policies import BasePolicy

    module = str(entry.get("__module__", ""))
    match = re.match(r"<function (\w+)\.__init__", str(entry.get("__init__", "")))
    if not module.startswith("stable_baselines3.") or match is None:
        raise ValueError(f"policy class from module {module!r} (only stable_baselines3 policies are rebuilt)")
    cls = getattr(importlib.import_module(module), match.group(1), None)
    if not (isinstance(cls, type) and issubclass(cls, BasePolicy)):
        raise ValueError(f"{module}.{match.group(1)} is not an SB3 policy class")
    return cls


def _schedule(entry: Mapping[str, Any]) -> Any:
    found = _NUMBER.findall(str(entry.get("value_schedule", "")))
    value = float(found[-1]) if found else 0.0
    return lambda _progress: value


def safe_custom_objects(path: str | Path) -> dict[str, Any]:
    """Replacements for every cloudpickled entry of the zip's ``data``, built from plain JSON only, so that
    ``Algo.load(path, custom_objects=...)`` unpickles nothing: spaces from their saved shapes, bounds and dtypes, the
    policy class by module and name inside ``stable_baselines3``, schedules as constants, training-only state as
    None.

    Raises:
        SB3PolicyError: an entry that cannot be rebuilt so (load such a file with ``trust=True`` if you made it).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("data"))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise SB3PolicyError(f"{path}: not a stable-baselines3 model zip ({type(exc).__name__}: {exc})") from exc
    objects: dict[str, Any] = {}
    for key, entry in data.items():
        if not (isinstance(entry, dict) and ":serialized:" in entry):
            continue
        try:
            if key in ("observation_space", "action_space"):
                objects[key] = _space(entry)
            elif key == "policy_class":
                objects[key] = _policy_class(entry)
            elif key in ("lr_schedule", "clip_range", "clip_range_vf", "learning_rate"):
                objects[key] = _schedule(entry)
            elif key == "train_freq":  # off-policy training cadence: not used to act
                from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

                objects[key] = TrainFreq(1, TrainFrequencyUnit.STEP)
            elif key in _TRAINING_ONLY:
                objects[key] = None
            else:
                raise ValueError("an entry this loader does not know")
        except (ValueError, KeyError, TypeError, SyntaxError, ImportError) as exc:
            raise SB3PolicyError(
                f"{path}: entry {key!r} is pickled and cannot be rebuilt without running it ({exc}); if you made "
                "this file yourself, load it with trust=True (--policy-arg sb3@trust=true)") from None
    if "policy_kwargs" in data and isinstance(data["policy_kwargs"], dict) and ":serialized:" in data["policy_kwargs"]:
        raise SB3PolicyError(f"{path}: policy_kwargs are pickled (e.g. a custom activation); load with trust=True")
    return objects


def detect_algo(path: str | Path) -> str:
    """Name the SB3 algorithm (``"ppo"``, ``"a2c"``, ``"sac"``, ``"td3"``, ``"dqn"``) that saved ``path``.

    Reads only the zip's ``data`` JSON (nothing is unpickled): off-policy algorithms are recognised from the
    module of their policy class, PPO from its ``clip_range`` and A2C as the remaining on-policy algorithm.
    (DDPG saves as TD3, which loads it identically for inference.)

    Raises:
        SB3PolicyError: not a zip, no ``data`` entry, or an unrecognised policy class (pass ``algo=``).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("data"))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise SB3PolicyError(f"{path}: not a stable-baselines3 model zip ({type(exc).__name__}: {exc})") from exc
    module = str(data.get("policy_class", {}).get("__module__", ""))
    for name in ("sac", "td3", "dqn"):
        if module.startswith(f"stable_baselines3.{name}."):
            return name
    if module.startswith("stable_baselines3.common."):
        return "ppo" if "clip_range" in data else "a2c"
    raise SB3PolicyError(
        f"{path}: cannot tell the algorithm from policy class module {module!r}; pass algo= one of {sorted(ALGOS)}"
    )


class SB3Policy(Policy):
    """A trained stable-baselines3 model (zip) driving the robot from the environment's ``state``/``image``.

    Args:
        path: the model zip saved by ``model.save()``.
        algo: ``"ppo"``, ``"a2c"``, ``"sac"``, ``"td3"``, ``"ddpg"`` (case-insensitive) or an SB3 algorithm class;
            default: detected from the zip (:func:`detect_algo`).
        deterministic: use the mode of the action distribution (else sample).
        obs_key: for a ``Box``-observation model, the observation key to feed (default: the one whose shape fits).
        device: torch device of the model (``"cpu"`` default: SB3 MLPs are faster on CPU).
        trust: let SB3 unpickle the zip's objects (runs code from the file: only for files you made); default:
            nothing is unpickled (:func:`safe_custom_objects`).

    Observations: ``"state"`` float32 ``(6,)`` and/or ``"image"`` uint8 ``(H, W, 3)`` as the model was trained on.
    Actions: the model's action, float32 ``(3,)`` ``[linear_x, linear_y, angular_z]`` (or ``(2,)``, padded), in the
    environment's units, clipped by SB3 to the model's action space.

    Raises:
        SB3PolicyError: the zip is missing or unreadable, the algorithm unknown, the observation or action space
            unsupported; from :meth:`act` (or :meth:`check_observation_space`) the observation lacks a key the model
            needs or has another shape.
    """

    def __init__(
        self,
        path: str | Path,
        algo: str | type | None = None,
        deterministic: bool = True,
        obs_key: str | None = None,
        device: str = "cpu",
        trust: bool = False,
    ) -> None:
        super().__init__()
        import stable_baselines3
        from gymnasium import spaces

        self.path = Path(path)
        if not self.path.is_file():
            raise SB3PolicyError(f"sb3 model zip not found: {self.path}")
        if algo is None:
            algo = detect_algo(self.path)
        if isinstance(algo, str):
            if algo.lower() not in ALGOS:
                raise SB3PolicyError(f"unknown algo {algo!r}; expected one of {sorted(ALGOS)}")
            algo_cls = getattr(stable_baselines3, ALGOS[algo.lower()])
        else:
            algo_cls = algo
        self.algo = algo_cls.__name__
        if not isinstance(trust, bool):
            raise SB3PolicyError(f"trust must be true or false, got {trust!r}")
        custom_objects = None if trust else safe_custom_objects(self.path)
        try:
            self.model = algo_cls.load(self.path, device=device, custom_objects=custom_objects)
        except Exception as exc:  # SB3 raises many kinds on a bad zip
            raise SB3PolicyError(f"{self.path}: cannot load as {self.algo}: {type(exc).__name__}: {exc}") from exc
        self.deterministic = bool(deterministic)

        space = self.model.observation_space
        if isinstance(space, spaces.Dict):
            unknown = set(space.spaces) - set(SB3_OBS_KEYS)
            if unknown:
                raise SB3PolicyError(
                    f"{self.path}: model observation keys {sorted(space.spaces)} include {sorted(unknown)}, which the "
                    f"environment does not provide to SB3 (usable: {SB3_OBS_KEYS})"
                )
            self.obs_keys: tuple[str, ...] = tuple(space.spaces)
        elif isinstance(space, spaces.Box):
            if obs_key is not None and obs_key not in SB3_OBS_KEYS:
                raise SB3PolicyError(f"obs_key must be one of {SB3_OBS_KEYS}, got {obs_key!r}")
            self.obs_keys = (obs_key,) if obs_key else ()
        else:
            raise SB3PolicyError(f"{self.path}: unsupported observation space {space} (need Dict or Box)")
        action_space = self.model.action_space
        if not (isinstance(action_space, spaces.Box) and action_space.shape in ((2,), (3,))):
            raise SB3PolicyError(
                f"{self.path}: unsupported action space {action_space}; need Box of shape (3,) [linear_x, linear_y, "
                "angular_z] or (2,)"
            )

    # ------------------------------------------------------------------ checks
    def _spaces(self) -> dict[str, Any]:
        from gymnasium import spaces

        space = self.model.observation_space
        return dict(space.spaces) if isinstance(space, spaces.Dict) else {}

    @staticmethod
    def _fits(space: Any, shape: tuple[int, ...]) -> bool:
        """Shape check; a channel-first model space (SB3 transposes images) also accepts ``(H, W, C)``."""
        want = tuple(space.shape)
        return shape == want or (len(want) == 3 and shape == (want[1], want[2], want[0]))

    def _box_key(self, shapes: Mapping[str, tuple[int, ...]]) -> str:
        space = self.model.observation_space
        if self.obs_keys:
            return self.obs_keys[0]
        fitting = [k for k in SB3_OBS_KEYS if k in shapes and self._fits(space, shapes[k])]
        if not fitting:
            raise SB3PolicyError(
                f"{self.path}: the model expects a Box observation of shape {space.shape}, but no observation key "
                f"fits: {', '.join(f'{k} {s}' for k, s in shapes.items()) or 'none'}"
            )
        return fitting[0]

    def _check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        needed = self._spaces() or {self._box_key(shapes): self.model.observation_space}
        for key, space in needed.items():
            if key not in shapes:
                raise SB3PolicyError(
                    f"{self.path}: the model needs observation key {key!r} (trained on {list(needed)}) but the "
                    f"observation has {sorted(shapes)}; build the environment with obs_keys including {key!r}"
                )
            if not self._fits(space, shapes[key]):
                raise SB3PolicyError(
                    f"{self.path}: observation {key!r} has shape {shapes[key]}, the model was trained on {space.shape}"
                )

    def check_observation_space(self, observation_space: Any) -> None:
        """Fail early: raise :class:`SB3PolicyError` unless ``observation_space`` (the env's ``Dict``) feeds the model."""
        subspaces = getattr(observation_space, "spaces", {})
        self._check({k: tuple(s.shape) for k, s in subspaces.items() if getattr(s, "shape", None) is not None})

    # ------------------------------------------------------------------ Policy hook
    def _act(self, observation: Mapping[str, Any]) -> np.ndarray:
        arrays = {k: np.asarray(observation[k]) for k in SB3_OBS_KEYS if k in observation}
        shapes = {k: tuple(v.shape) for k, v in arrays.items()}
        self._check(shapes)
        spaces_by_key = self._spaces()
        if spaces_by_key:
            obs: Any = {k: arrays[k].astype(spaces_by_key[k].dtype, copy=False) for k in spaces_by_key}
        else:
            key = self._box_key(shapes)
            obs = arrays[key].astype(self.model.observation_space.dtype, copy=False)
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return np.asarray(action, dtype=np.float32).reshape(-1)
