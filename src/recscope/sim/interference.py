"""Interference channels of the simulated platform (both off by default).

**Creator-side supply.** Each creator ``c`` has a supply level ``σ_c`` (1 at the start).
Every day, ``σ_c ← (1−r)·σ_c + r·((e_c + 1)/(ē_c + 1))^ε`` where ``e_c`` is the exposure
(impressions) the creator's pins got that day and ``ē_c`` their usual daily exposure
under the incumbent policy (measured in the warm-up). More exposure means more fresh
output, which makes the creator's pins more engaging: the attraction logit of every pin
gains ``weight · log σ_c``. Supply is shared by all arms, so a treatment that shifts
exposure toward some creators changes what control users see too (the bias of a naive
A/B test under marketplace interference).

**Markets** (``SimConfig.regions = R``, default 1): users are split into ``R`` regions by a
hash of the user, and each region is its own market with its own supply of every
creator: ``σ_{r,c}`` responds only to the exposure creator ``c`` gets from region ``r``'s
users (against the usual exposure there), and only region ``r``'s users see the pins'
gain. With ``R = 1`` this is the single global market above. Markets are what makes
supply-side interference designable: a design that gives a whole region one arm at a time
(region clusters, switchback by region × time slice) lets each market's supply settle
where the global treatment would put it, while a user-randomised test mixes both arms in
every market.

**Social spillover.** Users follow others (a directed graph, heavier for active users).
When a user saves a pin, each follower receives it with probability ``share``; the next
day it is inserted into the follower's first home-feed slate at ``position`` with an
attraction boost ``boost`` (with ``inserts = m > 1`` a follower keeps up to ``m`` waiting
pins, placed at ``position``, ``position + 1``, ...). With ``visit_pull = π > 0`` the
waiting pins also bring the follower back (a notification "someone you follow saved a
pin"): the day's visit rate is multiplied by ``1 + π · (pins waiting)``, so a change in
how much treatment users save moves control users' sessions and clicks. Saves made by treatment users reach control users' feeds.

Who follows whom: by default each user follows ``Poisson(mean_follows)`` others drawn from
everyone (no communities, so no clustering of the graph can keep follows inside an arm).
With ``communities = C > 0`` the graph is a planted partition (a stochastic block model):
users fall into ``C`` communities by a hash, and each follow stays inside the follower's
community with probability ``in_community``. Graph-cluster randomisation can then keep
most follows inside one arm; ``in_community`` sets how much spillover crosses the cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import ConfigDict, Field

from recscope.config import StrictModel
from recscope.sim import crn
from recscope.sim.world_model import WorldTruth

# purposes (streams) of the hashes below, after those of recscope.sim.crn
_COMMUNITY = 101
_REGION = 102
_SLOT = 103


class CreatorSupplyConfig(StrictModel):
    """Creator-side supply response to exposure (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = False
    weight: float = Field(default=0.8, ge=0.0, le=10.0,
                          description="attraction-logit gain per unit of log supply")
    elasticity: float = Field(default=0.6, ge=0.0, le=5.0)
    rate: float = Field(default=0.3, gt=0.0, le=1.0, description="daily adjustment rate")
    min_supply: float = Field(default=0.25, gt=0.0, le=1.0)
    max_supply: float = Field(default=4.0, ge=1.0, le=100.0)


class SocialConfig(StrictModel):
    """Social spillover of saves into followers' feeds (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = False
    mean_follows: float = Field(default=8.0, gt=0.0, le=1000.0)
    share: float = Field(default=0.5, ge=0.0, le=1.0)
    boost: float = Field(default=0.8, ge=0.0, le=10.0)
    position: int = Field(default=1, ge=0, le=99)
    inserts: int = Field(default=1, ge=1, le=20,
                         description="pins a follower can have waiting (each save lands in "
                         "one of these slots by a hash; inserted at position, position+1, "
                         "...)")
    visit_pull: float = Field(default=0.0, ge=0.0, le=10.0,
                              description="notifications: each waiting pin raises the "
                              "follower's visit rate that day by this fraction")
    communities: int = Field(default=0, ge=0, le=1_000_000,
                             description="planted communities of the follow graph (0: none)")
    in_community: float = Field(default=0.9, ge=0.0, le=1.0,
                                description="share of follows inside the follower's "
                                "community (with communities > 0)")


@dataclass
class SocialGraph:
    """Followers of each user as CSR (``indptr``, ``followers``) and the channel config."""

    indptr: np.ndarray
    followers: np.ndarray
    config: SocialConfig

    @classmethod
    def build(cls, truth: WorldTruth, config: SocialConfig, *, seed: int = 0) -> SocialGraph:
        """Each user follows Poisson(mean_follows) others, chosen ∝ sqrt(activity) (inside
        the follower's community with probability ``in_community`` when there are
        communities)."""
        rng = np.random.default_rng([seed, 0x50C1A1])
        n = truth.n_users
        n_follow = rng.poisson(config.mean_follows, n)
        w = np.sqrt(np.asarray(truth.user_activity, dtype=np.float64))
        followee = rng.choice(n, size=int(n_follow.sum()), p=w / w.sum())
        follower = np.repeat(np.arange(n), n_follow)
        if config.communities > 0:
            comm = communities_of(n, config.communities, seed)
            inside = rng.random(follower.size) < config.in_community
            # draw the inside follows ∝ weight within the follower's community
            order = np.argsort(comm, kind="stable")
            cum = np.concatenate([[0.0], np.cumsum(w[order])])
            bounds = np.searchsorted(comm[order], np.arange(config.communities + 1))
            c = comm[follower[inside]]
            lo, hi = cum[bounds[c]], cum[bounds[c + 1]]
            pick = np.searchsorted(cum, lo + rng.random(c.size) * (hi - lo), side="right") - 1
            followee[inside] = order[np.clip(pick, bounds[c], bounds[c + 1] - 1)]
        keep = followee != follower
        followee, follower = followee[keep], follower[keep]
        order = np.lexsort((follower, followee))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(followee, minlength=n))])
        return cls(indptr.astype(np.int64), follower[order].astype(np.int64), config)

    @property
    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """The follow edges as (follower, followee) user indices."""
        followee = np.repeat(np.arange(self.indptr.size - 1), np.diff(self.indptr))
        return self.followers.copy(), followee

    def spread(self, pending: np.ndarray, savers: np.ndarray, items: np.ndarray, day: int,
               seed: int) -> np.ndarray:
        """Deliver today's saves to followers (latest save wins in each of a follower's
        ``inserts`` slots, chosen by a hash); returns the new pending [users, inserts]."""
        out = pending.copy()
        if savers.size == 0:
            return out
        lo, hi = self.indptr[savers], self.indptr[savers + 1]
        cnt = hi - lo
        src = np.repeat(np.arange(savers.size), cnt)
        pos = np.arange(src.size) - np.repeat(np.cumsum(cnt) - cnt, cnt) + lo[src]
        f = self.followers[pos]
        it = items[src]
        u = crn.uniforms(crn.keys(seed, f, day, it), crn.SOCIAL)
        ok = u < self.config.share
        m = out.shape[1]
        slot = (np.zeros(int(ok.sum()), dtype=np.int64) if m == 1 else np.minimum(
            (crn.uniforms(crn.keys(seed, f[ok], day, it[ok]), _SLOT) * m).astype(np.int64),
            m - 1))
        out[f[ok], slot] = it[ok]
        return out

    def insert(self, items: np.ndarray, pending: np.ndarray, users: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray]:
        """Put each user's pending pins into the slate (consuming them); returns the slates
        and the per-slot attraction boost. ``pending`` is [users, inserts]."""
        k = items.shape[1]
        boost = np.zeros(items.shape, dtype=np.float64)
        any_pending = (pending[users] >= 0).any(axis=1)
        if not any_pending.any():
            return items, boost
        items = items.copy()
        inserted = False
        for j in range(pending.shape[1]):
            p = min(self.config.position + j, k - 1)
            pend = pending[users, j]
            has = (pend >= 0) & ~(items == pend[:, None]).any(axis=1)
            if has.any():
                items[has, p] = pend[has]
                boost[has, p] = self.config.boost
                inserted = True
        if inserted:
            pending[users[any_pending]] = -1
        return items, boost


def communities_of(n_users: int, n_communities: int, seed: int) -> np.ndarray:
    """The planted community of every user (a hash of seed and user, equal shares)."""
    u = crn.uniforms(crn.keys(seed, np.arange(n_users, dtype=np.int64)), _COMMUNITY)
    return np.minimum((u * n_communities).astype(np.int64), n_communities - 1)


def regions_of(n_users: int, n_regions: int, seed: int) -> np.ndarray:
    """The market (region) of every user (a hash of seed and user, equal shares)."""
    if n_regions <= 1:
        return np.zeros(n_users, dtype=np.int64)
    u = crn.uniforms(crn.keys(seed, np.arange(n_users, dtype=np.int64)), _REGION)
    return np.minimum((u * n_regions).astype(np.int64), n_regions - 1)
