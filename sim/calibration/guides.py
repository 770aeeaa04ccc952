"""The operators' key guides and their open-loop replay in the simulator.

A guide file (``scenarios/human/core_patterns_{1box,2box}.json``, copied from the team's
``../shared/reference/``) maps a pattern name to the keys an operator pressed. The name says where it was driven:
``2box_hori_left__core__medium``; a bare ``1box_vert_left`` means medium, and a name without an orientation
(``1box_left__core__medium``) was driven in both the ``vert`` and the ``hori`` layout.

A guide that ends with ``SPACE`` is a complete episode: the operator stopped where they meant to. One that ends
without it (17 presses) is a **truncated** episode: the collector's 18 frames ran out before the operator arrived
(the ``far`` guides, and a few others). :func:`judge` is the one pass rule for both, used by the simulator's rows
(:func:`passes`) and the kinematic model (:attr:`sim.calibration.kinematics.Outcome.passes`) alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import scenarios
from foundations.errors import ConfigError
from policies.replay import HUMAN_PATTERNS, load_patterns

_NAME = re.compile(r"^(?P<nbox>[12]box)_(?:(?P<orient>vert|hori)_)?(?P<side>left|right)"
                   r"(?:__(?P<kind>core|variant)__(?P<dist>close|medium|far))?$")
#: The operators' guide files (``{name: [key, ...]}``): the 1-box and the 2-box guides.
GUIDE_FILES = (HUMAN_PATTERNS, HUMAN_PATTERNS.with_name("core_patterns_2box.json"))


def pattern_scenarios(name: str) -> list[tuple[str, str]]:
    """``(layout, distance)`` pairs a pattern name refers to.

    Raises:
        ConfigError: a name that does not follow ``{1box|2box}_[vert|hori_]{left|right}[__core__{distance}]``.
    """
    m = _NAME.match(name)
    if m is None:
        raise ConfigError(f"cannot parse pattern name {name!r}")
    orients = [m["orient"]] if m["orient"] else ["vert", "hori"]
    return [(f"{m['nbox']}_{o}_{m['side']}", m["dist"] or "medium") for o in orients]


@dataclass(frozen=True)
class Guide:
    """One guide in one scenario: ``keys`` as pressed, played in ``layout`` at ``distance``.

    ``stops``: the guide ends with ``SPACE``, the operator's "arrived" (a guide without it is truncated: cut by the
    18-frame episode before reaching the target, :func:`judge`). ``weight``: its share of the pattern name, 1 / the
    number of layouts the name is played in (a name without an orientation counts half in ``vert`` and half in
    ``hori``)."""

    name: str
    keys: tuple[str, ...]
    layout: str
    distance: str
    weight: float = 1.0

    @property
    def stops(self) -> bool:
        return ends_with_stop(self.keys)


def ends_with_stop(keys: Sequence[str]) -> bool:
    """Whether a key sequence ends with ``SPACE`` (a complete episode); otherwise it is truncated."""
    return bool(keys) and keys[-1] == "SPACE"


def judge(stops, collision_free, in_bounds, side_ok, start_distance, end_distance):
    """The calibration's pass rule for one replay of a guide, or elementwise for numpy arrays of replays.

    Every guide must run collision-free and inside the arena, and pass every box it reaches on the instructed side
    (at least one: ``side_ok`` as the environment and the kinematic model give it; a box it never reaches is not
    judged). Then:

    - a guide that stops (``stops``: ends with ``SPACE``) passes; how near the goal it stops is scored apart, never
      as a pass or a failure (the calibration's objective, the table of ``python -m sim.calibrate``);
    - a truncated guide (no ``SPACE``: cut by the 18-frame episode) is judged on what it reaches: it must end closer
      to the goal than it started (``end_distance < start_distance``, m), and is never held to a stop at the goal.

    Returns:
        bool, or a bool array of the broadcast shape.
    """
    ok = (np.asarray(collision_free, bool) & np.asarray(in_bounds, bool) & np.asarray(side_ok, bool)
          & (np.asarray(stops, bool) | (np.asarray(end_distance, float) < np.asarray(start_distance, float))))
    return bool(ok) if ok.ndim == 0 else ok


def load_guides(paths: Iterable[str | Path] = GUIDE_FILES) -> list[Guide]:
    """Every guide of the files, once per scenario its name refers to, in file order.

    Raises:
        ConfigError: an unreadable file, a bad key list or an unparsable name (named).
    """
    guides = []
    for path in paths:
        for name, keys in load_patterns(path).items():
            try:
                pairs = pattern_scenarios(name)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc} (names look like 1box_hori_left__core__close)") from None
            guides += [Guide(name, tuple(keys), layout, distance, 1.0 / len(pairs)) for layout, distance in pairs]
    return guides


def replay_all(guides: Sequence[Guide], seeds: int, *, family: str = scenarios.DEFAULT_FAMILY,
               scenario_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Play every guide open loop in its layout of ``family`` with seeds ``0..seeds-1`` (seed 0: the nominal scene;
    others: pose jitter drawn from the seed), in order; one row per replay: ``pattern``, ``layout``, ``distance``,
    ``seed``, ``stops`` (the guide ends with SPACE), ``status`` (the environment's final status, or, if the keys ran
    out first: ``"truncated"`` for a guide without SPACE, ``"missed_goal"`` for one whose SPACE came away from the
    goal), ``collision_free``, ``in_bounds``, ``passed_side``, ``side_ok``, ``start_distance`` and
    ``distance_to_goal`` (m, from the start and from the end to the goal), ``presses``, ``passed`` (:func:`judge`).
    Two environments (nominal, jittered) serve every replay."""
    import gymnasium as gym

    from envs import ENV_ID

    envs: dict[bool, Any] = {}
    longest = max((len(g.keys) for g in guides), default=0)
    try:
        rows = []
        for guide in guides:
            for seed in range(seeds):
                jitter = seed > 0
                if jitter not in envs:
                    envs[jitter] = gym.make(ENV_ID, scenario=guide.layout, distance=guide.distance, family=family,
                                            scenario_dir=scenario_dir, obs_keys=("state",), jitter=jitter,
                                            max_steps=longest + 1)
                rows.append(_replay_in(envs[jitter], guide, seed))
        return rows
    finally:
        for env in envs.values():
            env.close()


def _replay_in(env, guide: Guide, seed: int) -> dict[str, Any]:
    from policies import make_policy
    from sim.evaluation.episode import Episode

    policy = make_policy("replay", keys=list(guide.keys))
    episode = Episode(env, seed, {"scenario": guide.layout, "distance": guide.distance})
    policy.reset(episode.instruction, episode.reset_info)
    for step in episode.run(policy.act) if guide.keys else ():
        if step.index == len(guide.keys) - 1:
            break
    record = episode.record()
    row = {
        "pattern": guide.name, "layout": guide.layout, "distance": guide.distance, "seed": seed, "stops": guide.stops,
        "status": record.status or ("missed_goal" if guide.stops else "truncated"),
        "collision_free": record.collided_with is None, "in_bounds": record.status != "out_of_bounds",
        "passed_side": record.passed_side, "side_ok": bool(record.side_ok),
        "start_distance": round(episode.reset_info["distance_to_goal"], 3),
        "distance_to_goal": round(episode.info["distance_to_goal"], 3), "presses": record.steps,
    }
    row["passed"] = passes(row)
    return row


def passes(row: dict[str, Any]) -> bool:
    """The calibration's criterion for one replay row of :func:`replay_all` (:func:`judge`)."""
    return judge(row["stops"], row["collision_free"], row["in_bounds"], row["side_ok"], row["start_distance"],
                 row["distance_to_goal"])

