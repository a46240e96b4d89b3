"""recscope.sim: the built-in world and the simulated platform.

:class:`World` generates a visual-discovery platform with known true preferences and a
historical log from a known logging policy (``docs/world.md``); :class:`Environment`
runs policies in it with users' responses, retention, interference and ground truth
(``docs/simulator.md``).
"""

from recscope.sim.config import (
    SURFACES,
    LoggingPolicyConfig,
    PreferenceConfig,
    SessionConfig,
    SurfaceConfig,
    SurfacesConfig,
    WorldConfig,
    load_world_config,
    parse_world_config,
)
from recscope.sim.environment import Environment, SimConfig
from recscope.sim.policy import LoggingPolicy, Slates
from recscope.sim.truth import EngagementProbabilities, WorldTruth, build_truth
from recscope.sim.world import World

__all__ = [
    "SURFACES",
    "EngagementProbabilities",
    "Environment",
    "LoggingPolicy",
    "LoggingPolicyConfig",
    "PreferenceConfig",
    "SessionConfig",
    "SimConfig",
    "Slates",
    "SurfaceConfig",
    "SurfacesConfig",
    "World",
    "WorldConfig",
    "WorldTruth",
    "build_truth",
    "load_world_config",
    "parse_world_config",
]
