"""The operators' key guides and their open-loop replay in the simulator.

A guide file (``scenarios/human/core_patterns_{1box,2box}.json``, copied from the team's
``../shared/reference/``) maps a pattern name to the keys an operator pressed. The name says where it was driven:
``2box_hori_left__core__medium``; a bare ``1box_vert_left`` means medium, and a name without an orientation
(``1box_left__core__medium``) was driven in both the ``vert`` and the ``hori`` layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scenarios
from policies.replay import HUMAN_PATTERNS, load_patterns
from scenarios.errors import ConfigError

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

    ``stops``: the guide ends with ``SPACE``, the operator's "arrived" (a guide without it was cut by the 18-frame
    episode before reaching the target). ``weight``: its share of the pattern name, 1 / the number of layouts the
    name is played in (a name without an orientation counts half in ``vert`` and half in ``hori``)."""

    name: str
    keys: tuple[str, ...]
    layout: str
    distance: str
    weight: float = 1.0

    @property
    def stops(self) -> bool:
        return bool(self.keys) and self.keys[-1] == "SPACE"


def load_guides(paths: Iterable[str | Path] = GUIDE_FILES) -> list[Guide]:
    """Every guide of the files, once per scenario its name refers to, in file order.

    Raises:
        ConfigError: an unreadable file, a bad key list or an unparsable name (named).
    """
    return [Guide(name, tuple(keys), layout, distance, 1.0 / len(pairs))
            for path in paths for name, keys in load_patterns(path).items()
            for pairs in [pattern_scenarios(name)] for layout, distance in pairs]


def replay_all(guides: Sequence[Guide], seeds: int, *, family: str = scenarios.DEFAULT_FAMILY,
               scenario_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Play every guide open loop in its layout of ``family`` with seeds ``0..seeds-1`` (seed 0: the nominal scene;
    others: pose jitter drawn from the seed), in order; one row per replay: ``pattern``, ``layout``, ``distance``,
    ``seed``, ``status`` (``"running"`` if the keys ran out first), ``collision_free``, ``passed_side``,
    ``side_ok``, ``distance_to_goal`` (m), ``presses``. Two environments (nominal, jittered) serve every replay."""
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
    return {
        "pattern": guide.name, "layout": guide.layout, "distance": guide.distance, "seed": seed,
        "status": record.status or "running", "collision_free": record.collided_with is None,
        "passed_side": record.passed_side, "side_ok": bool(record.side_ok),
        "distance_to_goal": round(episode.info["distance_to_goal"], 3), "presses": record.steps,
    }


def passes(row: dict[str, Any]) -> bool:
    """The calibration's criterion for one replay: collision-free and on the instructed side."""
    return bool(row["collision_free"] and row["side_ok"])

