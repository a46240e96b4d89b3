"""recscope.sim: the built-in world and the simulated platform.

:class:`World` generates a visual-discovery platform with known true preferences and a
historical log from a known logging policy (``docs/world.md``); :class:`Environment`
runs policies in it with users' responses, retention, interference and ground truth
(``docs/simulator.md``); :func:`run_experiment` runs an online experiment file
(:func:`load_experiment`) and returns a :class:`SimulatedExperiment` with its
:class:`GroundTruth`. :class:`StackPolicy` is a retrieve ► rank stack the simulator serves.

Modules: ``world_model`` (the hidden true preferences), ``logging_policy`` (the policy that
produced the world's log), ``stacks`` (policies the simulator serves), ``environment``
(the platform over time), ``true_effects`` (ground truth by common random numbers),
``experiment_config`` / ``world_source`` / ``cells`` / ``policy_factory`` / ``runner`` /
``output`` (a simulated experiment from file to logs), ``ope_check`` (OPE estimators
against the simulator's exact values), ``calibrate`` (a world from real logs).
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
from recscope.sim.environment import Environment, SimConfig, SlateObservation
from recscope.sim.experiment_config import ExperimentSpec, load_experiment, parse_experiment
from recscope.sim.logging_policy import LoggingPolicy, Slates
from recscope.sim.output import unit_totals
from recscope.sim.runner import SimulatedExperiment, run_experiment
from recscope.sim.stacks import ComponentRanker, ComponentRetriever, SlateContext, StackPolicy
from recscope.sim.true_effects import GroundTruth
from recscope.sim.world import World
from recscope.sim.world_model import EngagementProbabilities, WorldTruth, build_truth

__all__ = [
    "SURFACES",
    "ComponentRanker",
    "ComponentRetriever",
    "EngagementProbabilities",
    "Environment",
    "ExperimentSpec",
    "GroundTruth",
    "LoggingPolicy",
    "LoggingPolicyConfig",
    "PreferenceConfig",
    "SessionConfig",
    "SimConfig",
    "SimulatedExperiment",
    "SlateContext",
    "SlateObservation",
    "Slates",
    "StackPolicy",
    "SurfaceConfig",
    "SurfacesConfig",
    "World",
    "WorldConfig",
    "WorldTruth",
    "build_truth",
    "load_experiment",
    "load_world_config",
    "parse_experiment",
    "parse_world_config",
    "run_experiment",
    "unit_totals",
]
