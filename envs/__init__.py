"""Gymnasium environments of mobile-vla-sim; importing registers ``MobileVLA/BoxAvoid-v0``."""

from gymnasium.envs.registration import register, registry

from envs.box_avoid import BoxAvoidEnv
from envs.robot import RobotConfig

ENV_ID = "MobileVLA/BoxAvoid-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.box_avoid:BoxAvoidEnv")

__all__ = ["ENV_ID", "BoxAvoidEnv", "RobotConfig"]
