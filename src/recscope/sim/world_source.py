"""Where a simulated experiment's world comes from: the built-in generator (scaled,
seeded, or from a world TOML) or a world calibrated from real logs."""

from __future__ import annotations

from typing import Any

import numpy as np

from recscope.sim.config import WorldConfig, load_world_config
from recscope.sim.experiment_config import WorldSpec
from recscope.sim.world_model import WorldTruth, build_truth


def world_config(spec: WorldSpec) -> WorldConfig:
    """The built-in world's config for ``spec`` (its file or the defaults, its seed and
    scale)."""
    cfg = load_world_config(spec.config) if spec.config else WorldConfig()
    cfg = cfg.model_copy(update={"seed": spec.seed})
    return cfg.scaled(spec.scale) if spec.scale != 1.0 else cfg


def build_world(spec: WorldSpec) -> WorldTruth:
    """The world's truth: calibrated from real logs, or the built-in world (same truth as
    :meth:`recscope.sim.World.generate` with that config, without generating the log)."""
    if spec.movielens is not None:
        from recscope.sim.calibrate import calibrate_world

        return calibrate_world(spec.movielens, obd=spec.obd, seed=spec.seed).truth
    cfg = world_config(spec)
    seeds = np.random.SeedSequence(cfg.seed).spawn(4)
    return build_truth(cfg, np.random.default_rng(seeds[0]))


def world_log(spec: WorldSpec) -> Any:
    """Training data for pipeline variants: the clicks and saves of the built-in world's
    log (same config and seed as :func:`build_world`), or the MovieLens ratings of a
    calibrated world (whose indices are the world's)."""
    if spec.movielens is not None:
        from recscope.data.loaders import load_movielens

        return load_movielens(spec.movielens)
    from recscope.sim.world import World

    return World.generate(world_config(spec)).interactions.filter(events=["click", "save"])
