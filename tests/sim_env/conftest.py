"""Small worlds for fast simulator tests."""

from __future__ import annotations

import numpy as np
import pytest

from recscope.sim.config import WorldConfig
from recscope.sim.world_model import WorldTruth, build_truth


def tiny_truth(n_users: int = 800, n_items: int = 400, seed: int = 0) -> WorldTruth:
    cfg = WorldConfig(seed=seed, n_users=n_users, n_items=n_items, n_creators=60,
                      n_impressions=1000)
    return build_truth(cfg, np.random.default_rng(seed))


@pytest.fixture(scope="session")
def truth() -> WorldTruth:
    return tiny_truth()
