"""The evaluation core: typed settings (:mod:`.config`), the one episode loop (:mod:`.episode`), the runner
(:mod:`.runner`: :func:`evaluate`), metrics, reports and videos. ``python -m sim.eval`` is its command."""

from sim.evaluation.config import EnvSettings, EvalConfig, Latency, OutputSettings, PolicySpec, Sweep
from sim.evaluation.episode import Episode, EpisodeRecord, Step
from sim.evaluation.runner import EvalResult, episode_seed, evaluate, plan_tasks, read_records

__all__ = ["EnvSettings", "Episode", "EpisodeRecord", "EvalConfig", "EvalResult", "Latency", "OutputSettings",
           "PolicySpec", "Step", "Sweep", "episode_seed", "evaluate", "plan_tasks", "read_records"]
