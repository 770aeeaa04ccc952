"""Shared fixtures: headless, offline, small images."""

from __future__ import annotations

import os

import gymnasium as gym
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import envs  # noqa: E402,F401  (registers MobileVLA/BoxAvoid-v0)
from envs import ENV_ID


@pytest.fixture
def make_env():
    """Factory for environments that are closed after the test."""
    made = []

    def _make(**kwargs):
        env = gym.make(ENV_ID, **kwargs)
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()
