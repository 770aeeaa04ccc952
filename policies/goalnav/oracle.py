"""The ``oracle`` grounder: the simulator's ground truth as a detector would report it, with an error model.

It projects the true basket (``info["scene"]``) through the robot's camera (``info["control"]``, the pinhole model
of :mod:`envs.camera` that the renderer uses: :class:`~envs.camera.TargetView`) at the robot's pose
(``observation["state"]``) and reports the basket's image bounding box as ``[cx, cy, area, has_bbox]``, then degrades it as the team's grounder is degraded on
the robot. It reads privileged state, as the expert does: it is a stand-in for the perception module, for asking
what the rest of the policy does with a grounder of given quality, not a model of what an image shows.

Defaults, each from the team's measurements (``../shared/reference/TEAM_STACK_2026.md`` section 3,
``/work/research/grounder_mlp_facts.md``):

- ``cold_start``: frame 0 is always missed ("frame 0 grounding fails in all 47 sessions checked");
- ``miss``: 0.023 per grounding call, OWL-v2's true-positive rate at its production threshold 0.20 (97.7%,
  EdgeGroundVLA ``docs/v5/owlv2_grounder_brief.html``). The robot had a box on 90.5% of its decisions (985/1088)
  with these rates; the bundled exp73 in the corridor has one on 75.5% (``bench/goalnav_grounded.py``: shorter
  episodes, where the cold start weighs more, and the basket out of view after the head veers);
- ``false_positive``: 0.127 when the basket is out of view, OWL-v2's false-positive rate at 0.20 (same doc), a box
  drawn uniformly in the lower image;
- ``centre_noise`` 0.01 (image fractions) and ``size_noise`` 0.05 (relative): our reading (the team's
  ``exp60_bbox_offset_stats.json`` was not read);
- ``owl``: report as the deployed OWL-v2 pipeline does: the server's filters (:func:`~policies.goalnav.grounders.
  server_filter`: a box above y = 0.35, under 1% or over 90% of the image is a miss) and the served area
  ``min(3 * raw, 1)`` (``VLA_OWLV2_AREA_SCALE``). Boxes are true image fractions: OWL-v2's post-processing scales by
  ``max(H, W)`` on both axes since transformers #30686, and the team's V6 annotations have ``cy`` up to 0.68 on
  1280x720 frames. Without ``owl``: true fractions, unscaled, unfiltered.

The oracle always grounds the robot's 1280x720 frame (aspect 16:9), whatever size the simulator renders for the
vision feature. Every draw comes from a generator seeded by the episode seed: the same episode, the same errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from envs.camera import TargetView
from policies.goalnav.grounders import MISS, OWL_AREA_SCALE, OWLV2_LATENCY_S, Grounder, Grounding, server_filter


class OracleGrounder(Grounder):
    """The true basket box with the team's error model (module doc).

    Args:
        miss: probability that a grounding call misses a visible basket.
        cold_start: the first call of an episode misses.
        false_positive: probability of a spurious box when the basket is out of view.
        centre_noise: standard deviation of ``cx`` and ``cy`` (image fractions).
        size_noise: relative standard deviation of the box's width and height.
        owl: report as the deployed OWL-v2 pipeline (module doc); False: true image fractions.
        seed: combined with the episode seed (``info["episode_seed"]``) for the error draws.

    Raises:
        ValueError: a probability outside [0, 1] or a negative noise.
    """

    name = "oracle"
    default_latency_s = OWLV2_LATENCY_S  # it stands for the deployed OWL-v2 in the cadence model

    def __init__(self, miss: float = 0.023, cold_start: bool = True, false_positive: float = 0.127,
                 centre_noise: float = 0.01, size_noise: float = 0.05, owl: bool = True, seed: int = 0) -> None:
        for name, value in (("miss", miss), ("false_positive", false_positive)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"oracle grounder: {name} must be a probability in [0, 1], got {value}")
        for name, value in (("centre_noise", centre_noise), ("size_noise", size_noise)):
            if not value >= 0.0:
                raise ValueError(f"oracle grounder: {name} must be >= 0, got {value}")
        self.miss, self.cold_start, self.false_positive = float(miss), bool(cold_start), float(false_positive)
        self.centre_noise, self.size_noise, self.owl, self.seed = float(centre_noise), float(size_noise), owl, seed
        self.rng = np.random.default_rng(seed)

    def reset(self, info: Mapping[str, Any]) -> None:
        """Read the basket, the camera and the episode seed from the environment's reset info.

        Raises:
            KeyError: no ``"scene"`` or ``"control"`` (the oracle needs the environment's reset info).
        """
        self.view = TargetView.from_reset_info(info)
        self.rng = np.random.default_rng([self.seed, int(info.get("episode_seed", 0))])

    def true_box(self, state: np.ndarray) -> tuple[float, float, float, float] | None:
        """The basket's image box ``(x1, y1, x2, y2)`` (fractions of the 1280x720 frame) from the robot's state
        ``(x, y, yaw, ...)``, or None when it is out of view."""
        return self.view.box(state)

    def ground(self, image: np.ndarray, state: np.ndarray | None, step: int) -> Grounding:
        """One grounding call at ``state`` (the image is not read). Raises ValueError without a state."""
        if state is None:
            raise ValueError("the oracle grounder needs the observation's 'state' (the robot's pose)")
        box = self.true_box(np.asarray(state, dtype=np.float64))
        draw = self.rng.random(5)  # a fixed number of draws per call: one call's errors never shift another's
        if step == 0 and self.cold_start:
            return dataclasses.replace(MISS, filter_reason="cold start")
        if box is None:
            if draw[0] >= self.false_positive:
                return dataclasses.replace(MISS, filter_reason="not in view")
            cx, cy = 0.1 + 0.8 * draw[1], 0.4 + 0.4 * draw[2]
            w, h = 0.05 + 0.25 * draw[3], 0.05 + 0.25 * draw[4]
            return self._report(cx, cy, w, h, score=0.2)
        if draw[0] < self.miss:
            return dataclasses.replace(MISS, filter_reason="missed")
        x1, y1, x2, y2 = box
        noise = self.rng.normal(size=4)
        cx = (x1 + x2) / 2 + self.centre_noise * noise[0]
        cy = (y1 + y2) / 2 + self.centre_noise * noise[1]
        w = (x2 - x1) * max(0.0, 1.0 + self.size_noise * noise[2])
        h = (y2 - y1) * max(0.0, 1.0 + self.size_noise * noise[3])
        return self._report(cx, cy, w, h, score=1.0)

    def _report(self, cx: float, cy: float, w: float, h: float, score: float) -> Grounding:
        """A box centred at ``(cx, cy)`` of size ``w x h`` (true image fractions) as the grounder reports it."""
        cx, cy = float(np.clip(cx, 0.0, 1.0)), float(np.clip(cy, 0.0, 1.0))
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        raw = w * h
        if self.owl:
            reason = server_filter(cx, cy, raw, box[0], box[2], "owlv2")
            if reason is not None:
                return dataclasses.replace(MISS, filter_reason=reason)
            return Grounding(cx, cy, min(raw * OWL_AREA_SCALE, 1.0), True, score, box, raw, None)
        return Grounding(cx, cy, raw, True, score, box, raw, None)
