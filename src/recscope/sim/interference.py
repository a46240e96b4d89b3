"""Interference channels of the simulated platform (both off by default).

**Creator-side supply.** Each creator ``c`` has a supply level ``σ_c`` (1 at the start).
Every day, ``σ_c ← (1−r)·σ_c + r·((e_c + 1)/(ē_c + 1))^ε`` where ``e_c`` is the exposure
(impressions) the creator's pins got that day and ``ē_c`` their usual daily exposure
under the incumbent policy (measured in the warm-up). More exposure means more fresh
output, which makes the creator's pins more engaging: the attraction logit of every pin
gains ``weight · log σ_c``. Supply is shared by all arms, so a treatment that shifts
exposure toward some creators changes what control users see too (the bias of a naive
A/B test under marketplace interference).

**Social spillover.** Users follow others (a directed graph, heavier for active users).
When a user saves a pin, each follower receives it with probability ``share``; the next
day it is inserted into the follower's first home-feed slate at ``position`` with an
attraction boost ``boost``. Saves made by treatment users reach control users' feeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import ConfigDict, Field

from recscope.config import StrictModel
from recscope.sim import crn
from recscope.sim.world_model import WorldTruth


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


@dataclass
class SocialGraph:
    """Followers of each user as CSR (``indptr``, ``followers``) and the channel config."""

    indptr: np.ndarray
    followers: np.ndarray
    config: SocialConfig

    @classmethod
    def build(cls, truth: WorldTruth, config: SocialConfig, *, seed: int = 0) -> SocialGraph:
        """Each user follows Poisson(mean_follows) others, chosen ∝ sqrt(activity)."""
        rng = np.random.default_rng([seed, 0x50C1A1])
        n = truth.n_users
        n_follow = rng.poisson(config.mean_follows, n)
        w = np.sqrt(np.asarray(truth.user_activity, dtype=np.float64))
        followee = rng.choice(n, size=int(n_follow.sum()), p=w / w.sum())
        follower = np.repeat(np.arange(n), n_follow)
        keep = followee != follower
        followee, follower = followee[keep], follower[keep]
        order = np.lexsort((follower, followee))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(followee, minlength=n))])
        return cls(indptr.astype(np.int64), follower[order].astype(np.int64), config)

    def spread(self, pending: np.ndarray, savers: np.ndarray, items: np.ndarray, day: int,
               seed: int) -> np.ndarray:
        """Deliver today's saves to followers (latest save wins); returns the new pending."""
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
        out[f[ok]] = it[ok]
        return out

    def insert(self, items: np.ndarray, pending: np.ndarray, users: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray]:
        """Put each user's pending pin into the slate (consuming it); returns the slates
        and the per-slot attraction boost."""
        k = items.shape[1]
        boost = np.zeros(items.shape, dtype=np.float64)
        p = min(self.config.position, k - 1)
        pend = pending[users]
        has = (pend >= 0) & ~(items == pend[:, None]).any(axis=1)
        if has.any():
            items = items.copy()
            items[has, p] = pend[has]
            boost[has, p] = self.config.boost
            pending[users[pend >= 0]] = -1
        return items, boost
