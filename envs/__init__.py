"""Gymnasium environments of mobile-vla-sim; importing registers ``MobileVLA/BoxAvoid-v0`` and
``MobileVLA/Corridor-v0`` (the same environment in the ``corridor`` family: a gray basket in a corridor, the eight
action classes at the robot's cadence).

The package imports PyBullet lazily: ``envs.keys`` (the key map every policy uses) and the registration cost no
physics import; ``envs.BoxAvoidEnv`` or ``gym.make(ENV_ID)`` load it on first use.
"""

from gymnasium.envs.registration import register, registry

ENV_ID = "MobileVLA/BoxAvoid-v0"
CORRIDOR_ENV_ID = "MobileVLA/Corridor-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.box_avoid:BoxAvoidEnv")
if CORRIDOR_ENV_ID not in registry:
    register(id=CORRIDOR_ENV_ID, entry_point="envs.box_avoid:BoxAvoidEnv", kwargs={"family": "corridor"})

__all__ = ["CORRIDOR_ENV_ID", "ENV_ID", "BoxAvoidEnv", "RobotConfig"]


def __getattr__(name: str):
    if name == "BoxAvoidEnv":
        from envs.box_avoid import BoxAvoidEnv

        return BoxAvoidEnv
    if name == "RobotConfig":
        from envs.robot import RobotConfig

        return RobotConfig
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
