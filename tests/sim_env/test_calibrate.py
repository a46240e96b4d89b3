"""A world calibrated from MovieLens 100K and the Open Bandit Dataset."""

from __future__ import annotations

import numpy as np
import pytest

from recscope.sim.calibrate import calibrate_world, obd_click_levels
from recscope.sim.environment import Environment
from recscope.sim.stacks import StackPolicy
from tests.conftest import data_path


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return calibrate_world(data_path("ml-100k"), obd=data_path("obd", "random", "all"))


def test_fits_movielens_shapes_and_distributions(world) -> None:  # type: ignore[no-untyped-def]
    t = world.truth
    assert (t.n_users, t.n_items, t.n_topics) == (943, 1682, 18)
    assert t.user_activity.mean() == pytest.approx(1.0)
    # heavy tails as observed: the most active user rated ~737 films, the median ~65
    assert t.user_activity.max() / np.median(t.user_activity) > 8
    assert t.item_popularity.sum() == pytest.approx(1.0)
    assert np.allclose(t.user_topics.sum(axis=1), 1.0)
    assert 0.3 < world.fit["zipf_exponent"] < 2.0
    assert "Drama" in t.topic_names
    drama = t.topic_names.index("Drama")
    assert t.topic_prevalence.argmax() == drama  # the most rated genre


def test_click_level_matches_obd(world) -> None:  # type: ignore[no-untyped-def]
    levels = obd_click_levels(data_path("obd", "random", "all"))
    assert levels["rows"] == 10_000 and 0.001 < levels["ctr"] < 0.01
    t = world.truth
    # a random slate's top slot on the home feed is clicked at OBD's slot-0 rate
    env = Environment(t, seed=0)
    res = env.run([StackPolicy(t, "random", "popularity", temperature=100.0)], days=3)
    c = res.columns
    home = c["surface"] == 0
    ctr = c["clicks"][home].sum() / c["impressions"][home].sum()
    assert ctr < 0.02  # OBD-level click-through, far below the built-in world's ~5%
    assert world.fit["obd"]["position_decay"] >= 0


def test_attraction_level_on_fresh_pairs(world) -> None:  # type: ignore[no-untyped-def]
    from recscope.sim.world_model import sigmoid

    t = world.truth
    rng = np.random.default_rng(123)
    u = rng.integers(0, t.n_users, 50_000)
    i = rng.integers(0, t.n_items, 50_000)
    rate = sigmoid(t.attraction_logit(u, i, "home_feed")).mean()
    assert rate == pytest.approx(world.fit["obd"]["ctr_by_position"][0], rel=0.1)
