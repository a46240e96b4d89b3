"""Worlds shared by the tests of the built-in world (generated once per session)."""

from __future__ import annotations

import pytest

from recscope.sim import World, WorldConfig

#: A tiny world: fast enough to generate several times in one test.
TINY = WorldConfig(n_users=300, n_items=250, n_creators=30, n_impressions=8_000, n_days=7)


@pytest.fixture(scope="session")
def world() -> World:
    """The default world at a tenth of its size (2,000 users, 1,000 pins, 100,000
    impressions): big enough for the statistical checks."""
    return World.generate(WorldConfig().scaled(0.1))
