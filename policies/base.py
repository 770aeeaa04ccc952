"""The policy interface shared by every controller the simulator can run.

A policy is reset once per episode with the episode's language instruction and then asked for one action
per environment step. Observations are the environment's ``Dict`` observation:

- ``"image"``: ``uint8`` array ``(H, W, 3)``, **RGB**, onboard camera (default 224 x 224);
- ``"instruction"``: ``str``;
- ``"state"``: ``float32`` ``(6,)`` = ``x, y, yaw, vx, vy, wz`` in the world frame (m, rad, m/s, rad/s).

Actions are ``float32`` ``(3,)`` = ``[linear_x, linear_y, angular_z]`` (REP-103) in the robot's label
units (+-1.15, see :mod:`envs.keys`).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from foundations.errors import MobileVLAError


class PolicyOutputError(MobileVLAError, ValueError):
    """A policy returned an action that is not a finite ``(3,)`` vector."""


def validate_action(action: Any, policy_name: str = "policy") -> np.ndarray:
    """Return ``action`` as a float32 ``(3,)`` array or raise :class:`PolicyOutputError`.

    A ``(2,)`` action (linear_x, linear_y, as the VLA heads output) is padded with ``angular_z = 0``.
    """
    try:
        arr = np.asarray(action, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise PolicyOutputError(f"{policy_name}: action is not numeric: {exc}") from exc
    if arr.shape == (2,):
        arr = np.append(arr, np.float32(0.0))
    if arr.shape != (3,):
        raise PolicyOutputError(
            f"{policy_name}: expected an action of shape (3,) [linear_x, linear_y, angular_z], "
            f"got shape {np.shape(action)}"
        )
    if not np.all(np.isfinite(arr)):
        raise PolicyOutputError(f"{policy_name}: action has non-finite values {arr.tolist()}")
    return arr


class Policy(abc.ABC):
    """Base class: subclasses implement :meth:`_act` (and optionally :meth:`_reset`).

    :meth:`act` times every call (``latencies_ms``, wall-clock milliseconds of this episode) and validates the
    output with :func:`validate_action`, so a policy returning NaN or a wrong shape fails loudly with
    :class:`PolicyOutputError`.
    """

    #: Registry name, set by :func:`policies.make_policy`.
    name: str = "policy"
    #: The latency components (``"grounder"``, ``"vision"``, ``"mlp"`` ...) the last :meth:`act` ran, for a latency
    #: given per component (:class:`sim.evaluation.config.Latency`): a policy that grounds every third frame says so
    #: here. None: every component, every step.
    step_components: tuple[str, ...] | None = None
    #: The robot's latency (s) of each component, for a policy that models its own compute; a config's
    #: ``--latency-component`` overrides it. None: the policy brings no latency of its own.
    component_latencies: dict[str, float] | None = None
    #: Whether the policy's perception found the target at the last :meth:`act` (a grounder's ``has_bbox``, fresh or
    #: cached), for the failure taxonomy's ``perception_miss``. None: the policy has no separate perception.
    step_detection: bool | None = None

    def __init__(self) -> None:
        self.instruction: str = ""
        self.latencies_ms: list[float] = []

    def reset(self, instruction: str, info: Mapping[str, Any] | None = None) -> None:
        """Start a new episode.

        Args:
            instruction: the episode's language instruction.
            info: the environment's ``reset()`` info; privileged policies (the expert) read the scene from
                ``info["scene"]``; learned policies must ignore it.
        """
        self.instruction = instruction
        self.latencies_ms = []
        self._reset(instruction, dict(info or {}))

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """Return the next action, float32 ``(3,)``; raises :class:`PolicyOutputError` on a bad output."""
        start = time.perf_counter()
        action = self._act(observation)
        self.latencies_ms.append((time.perf_counter() - start) * 1e3)
        return validate_action(action, self.name)

    def close(self) -> None:
        """Release resources (sessions, servers, files). Safe to call twice."""

    def _reset(self, instruction: str, info: dict[str, Any]) -> None:
        """Per-episode reset hook for subclasses."""

    @abc.abstractmethod
    def _act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """Compute the next action (array-like of shape (3,) or (2,))."""


class BatchablePolicy(Policy):
    """A policy whose per-episode state lives in an object of its own, apart from the model, so that one model
    advances many environments' episodes in one forward pass (:mod:`policies.batching`).

    Subclasses implement :meth:`new_episode`, :meth:`start_episode` and :meth:`act_batch`; the single-environment
    :meth:`~Policy.reset` / :meth:`~Policy.act` run the batch of one, so batched and unbatched execution share
    every line but the stacking (their actions agree to float tolerance).
    """

    def __init__(self) -> None:
        super().__init__()
        self.episode: Any = self.new_episode()

    @abc.abstractmethod
    def new_episode(self) -> Any:
        """A fresh per-episode state (frame history, chunk executor, step counter, ...)."""

    @abc.abstractmethod
    def start_episode(self, episode: Any, instruction: str) -> None:
        """Reset ``episode`` for a new episode with ``instruction`` (the batched :meth:`~Policy.reset`)."""

    @abc.abstractmethod
    def act_batch(self, episodes: Sequence[Any], observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """Advance each episode by one step on its observation (same order); returns one action per episode,
        array-like ``(3,)`` or ``(2,)``, unvalidated (:func:`validate_action`)."""

    def _reset(self, instruction: str, info: dict[str, Any]) -> None:
        del info  # learned policies never read the privileged scene
        self.start_episode(self.episode, instruction)

    def _act(self, observation: Mapping[str, Any]) -> np.ndarray:
        return self.act_batch([self.episode], [observation])[0]
