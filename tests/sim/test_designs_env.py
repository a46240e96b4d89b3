"""Simulator mechanics for interference-aware designs: switchback schedules, markets
(regions with their own creator supply) and a follow graph with planted communities."""

from __future__ import annotations

import numpy as np
import pytest

from recscope.errors import ConfigError
from recscope.sim.config import WorldConfig
from recscope.sim.environment import Environment, Schedule, SimConfig
from recscope.sim.interference import SocialConfig, SocialGraph, communities_of
from recscope.sim.stacks import StackPolicy, WorldIndex
from recscope.sim.world_model import WorldTruth, build_truth

_DAY = 86_400_000_000


@pytest.fixture(scope="module")
def truth() -> WorldTruth:
    cfg = WorldConfig(seed=0, n_users=600, n_items=300, n_creators=40, n_impressions=1000)
    return build_truth(cfg, np.random.default_rng(0))


def _pols(truth: WorldTruth) -> list[StackPolicy]:
    idx = WorldIndex(truth)
    return [StackPolicy(truth, "embedding", "affinity", index=idx, name="control"),
            StackPolicy(truth, "popular", "affinity", index=idx, name="treatment")]


def test_switchback_schedule_is_honoured_in_the_log(truth: WorldTruth) -> None:
    env = Environment(truth, SimConfig(regions=3), seed=4)
    pols = _pols(truth)
    state = env.warmup(pols[0], days=1)
    start = env.start_us + state.day * _DAY
    arms = np.array([[0, 1, 0], [1, 0, 1], [1, 1, 0], [0, 0, 1]])  # [slice, region]
    sch = Schedule(arms, env.region, start, _DAY // 2)
    res = env.run(pols, days=2, arm=sch, state=state)
    ev = res.events_table(region=env.region)
    step0 = res.columns["step"] == 0
    users, ts = res.columns["user"], res.columns["ts"]
    want = arms[(ts - start) // (_DAY // 2), env.region[users]]
    got = ev.column("arm").to_numpy()
    # a session is served its arm at its start, and keeps it
    assert np.array_equal(got[step0], want[step0])
    sess = res.columns["session"]
    first = {s: a for s, a, z in zip(sess, got, step0, strict=True) if z}
    assert all(first[s] == a for s, a in zip(sess, got, strict=True))
    # every cell of the schedule was served
    cells = {(int(s), int(r)) for s, r in zip((ts - start) // (_DAY // 2),
                                               env.region[users], strict=True)}
    assert len(cells) == arms.size
    assert np.array_equal(ev.column("region").to_numpy(), env.region[users])
    with pytest.raises(ConfigError):
        env.run(pols, days=1, arm=Schedule(arms[:, :2], env.region, start, _DAY), state=state)


def test_each_market_keeps_its_own_supply(truth: WorldTruth) -> None:
    """With two regions, region 1's supply does not depend on what region 0 is served:
    it equals region 1's supply in the world where everyone gets control."""
    sim = SimConfig(regions=2, creator_supply={"enabled": True, "weight": 1.5,
                                               "elasticity": 1.0, "rate": 0.5})
    env = Environment(truth, sim, seed=2)
    pols = _pols(truth)
    state = env.warmup(pols[0], days=2)
    assert state.supply.shape == (2, env.n_creators)
    mixed = env.run(pols, days=3, arm=(env.region == 0).astype(np.int64), state=state)
    control = env.run(pols, days=3, arm=np.zeros(truth.n_users, np.int64), state=state)
    treated = env.run(pols, days=3, arm=np.ones(truth.n_users, np.int64), state=state)
    np.testing.assert_array_equal(mixed.state.supply[1], control.state.supply[1])
    np.testing.assert_array_equal(mixed.state.supply[0], treated.state.supply[0])
    assert not np.allclose(mixed.state.supply[0], mixed.state.supply[1])
    # one market (the default) is the global supply of before
    one = Environment(truth, SimConfig(creator_supply=sim.creator_supply), seed=2)
    assert one.initial_state().supply.shape == (one.n_creators,)


def test_planted_communities_hold_the_configured_share_of_follows(truth: WorldTruth
                                                                   ) -> None:
    cfg = SocialConfig(enabled=True, mean_follows=10, communities=12, in_community=0.9)
    g = SocialGraph.build(truth, cfg, seed=3)
    comm = communities_of(truth.n_users, 12, 3)
    follower, followee = g.edges
    inside = float(np.mean(comm[follower] == comm[followee]))
    # 90% planted inside, plus the outside draws that land inside by chance (1/12)
    assert 0.88 < inside < 0.95
    flat = SocialGraph.build(truth, SocialConfig(enabled=True, mean_follows=10), seed=3)
    f2, e2 = flat.edges
    assert float(np.mean(comm[f2] == comm[e2])) < 0.2


def test_social_inserts_and_visit_pull_move_followers(truth: WorldTruth) -> None:
    """Waiting pins bring followers back (visit_pull) and fill several slots (inserts)."""
    base = {"enabled": True, "mean_follows": 6, "share": 1.0, "inserts": 3}
    pols = _pols(truth)
    runs = {}
    for pull in (0.0, 2.0):
        env = Environment(truth, SimConfig(social={**base, "visit_pull": pull}), seed=1)
        runs[pull] = env.run(pols[:1], days=4)
    assert runs[2.0].n_requests > 1.2 * runs[0.0].n_requests
