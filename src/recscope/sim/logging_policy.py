"""The logging policy that produced the built-in world's log.

A production-like, stochastic two-step policy: retrieve a candidate pool for the request,
then draw the slate by Plackett–Luce sampling (Gumbel-top-k) over a score computed from
the policy's own, imperfect estimates of user and item vectors plus item popularity.
Because the policy is known, every logged slate's probabilities are exact:

* ``propensity`` at position ``p`` = P(item at p | items at 0..p-1, request) =
  ``w_i / sum of w_j over pool items still available and not yet placed``, with
  ``w = exp(score / temperature)``;
* ``propensity_cascade`` at ``p`` = product of ``propensity`` over positions 0..p =
  P(the logged items occupy positions 0..p, in that order).

Items outside the pool (or created after the request) have probability 0. See
``docs/world.md`` for the pools and the score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recscope.core.plackett_luce import conditional_log_probs, position_marginals
from recscope.errors import ConfigError
from recscope.sim.world_model import WorldTruth, _unit_rows

_CHUNK = 2048


@dataclass(frozen=True)
class Slates:
    """Sampled slates: ``items`` (B, k) with -1 padding and their exact probabilities."""

    items: np.ndarray
    propensity: np.ndarray
    propensity_cascade: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return (self.items >= 0).sum(axis=1)


class LoggingPolicy:
    """Candidate pools and Plackett–Luce slate sampling over a fixed, noisy score."""

    def __init__(self, truth: WorldTruth) -> None:
        self.truth = truth
        self.config = truth.config.logging_policy
        self.temperature = self.config.temperature
        self._users = truth.policy_user_vectors
        self._items = truth.policy_item_vectors
        self._item_unit = _unit_rows(self._items)
        self._item_prior = self.config.popularity_weight * truth.item_log_popularity
        self._home: tuple[np.ndarray, np.ndarray] | None = None
        self._related: tuple[np.ndarray, np.ndarray] | None = None
        self._search: np.ndarray | None = None

    # ------------------------------------------------------------------ pools
    @property
    def pool_size(self) -> int:
        return min(self.config.pool_size, self.truth.n_items)

    def home_pools(self, users: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pools (B, M) of ``users`` (default: all), each user's M best items by the
        policy's static score ``affinity_weight * û·v̂ + popularity_weight * log_pop``,
        and those scores."""
        if self._home is None:
            self._home = self._empty_cache(self.truth.n_users, self.pool_size)
        return self._fill(self._home, users, self._users, self._items,
                          self.config.affinity_weight, self._item_prior, exclude_self=False)

    def related_pools(self, items: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pools (B, M) of seed ``items`` (default: all), each the M nearest other items
        by the policy's cosine similarity, and those similarities."""
        if self._related is None:
            m = min(self.config.pool_size, self.truth.n_items - 1)
            self._related = self._empty_cache(self.truth.n_items, m)
        return self._fill(self._related, items, self._item_unit, self._item_unit, 1.0,
                          np.zeros(self.truth.n_items), exclude_self=True)

    @staticmethod
    def _empty_cache(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full((n, m), -1, dtype=np.int64), np.zeros((n, m))

    def _fill(self, cache: tuple[np.ndarray, np.ndarray], rows: np.ndarray | None,
              queries: np.ndarray, keys: np.ndarray, weight: float, prior: np.ndarray, *,
              exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
        """Rows of a pool cache, computing the missing ones (a pool depends on nothing but
        its row, so computing pools lazily does not change any result). Scores of the
        pool members are recomputed in float64."""
        pools, scores = cache
        idx = np.arange(pools.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        todo = np.unique(idx[pools[idx, 0] < 0])
        if todo.size:
            top = self._top_rows(queries, keys, weight, prior, pools.shape[1], rows=todo,
                                 exclude_self=exclude_self)
            pools[todo] = top
            scores[todo] = weight * np.einsum("bd,bmd->bm", queries[todo], keys[top]) \
                + prior[top]
        return pools[idx], scores[idx]

    def search_pools(self) -> np.ndarray:
        """(K, M) per topic its M most popular items (-1 pads small topics)."""
        if self._search is None:
            t = self.truth
            m = self.pool_size
            out = np.full((t.n_topics, m), -1, dtype=np.int64)
            order = np.lexsort((np.arange(t.n_items), -self._item_prior, t.item_topic))
            topics_sorted = t.item_topic[order]
            starts = np.searchsorted(topics_sorted, np.arange(t.n_topics + 1))
            for k in range(t.n_topics):
                members = order[starts[k]:starts[k + 1]][:m]
                out[k, :members.size] = members
            self._search = out
        return self._search

    @staticmethod
    def _top_rows(queries: np.ndarray, keys: np.ndarray, weight: float, prior: np.ndarray,
                  m: int, *, rows: np.ndarray, exclude_self: bool) -> np.ndarray:
        """Indices of the ``m`` best keys per query by ``weight * q·k + prior`` (sorted by
        index). Uses torch's top-k (several times faster than numpy's argpartition on the
        20,000 × 10,000 default), in float64 so that a pool's membership does not hinge on
        float32 rounding."""
        import torch

        out = np.empty((rows.size, m), dtype=np.int64)
        kt = torch.from_numpy(np.ascontiguousarray(keys.T, dtype=np.float64))
        pr = torch.from_numpy(prior.astype(np.float64))
        with torch.no_grad():
            for lo in range(0, rows.size, _CHUNK):
                hi = min(lo + _CHUNK, rows.size)
                chunk = rows[lo:hi]
                q = torch.from_numpy(np.ascontiguousarray(queries[chunk] * weight,
                                                          dtype=np.float64))
                s = torch.addmm(pr, q, kt)
                if exclude_self:
                    s[torch.arange(hi - lo), torch.from_numpy(chunk)] = -torch.inf
                top = torch.topk(s, m, dim=1, sorted=False).indices.numpy()
                out[lo:hi] = np.sort(top, axis=1)
        return out

    # ------------------------------------------------------------------ scoring
    def candidates(self, users: np.ndarray, surface: str, *,
                   query_topic: np.ndarray | None = None,
                   seed_item: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pools (B, M; -1 pads) and the policy's scores for a batch of requests."""
        users = np.asarray(users, dtype=np.int64)
        if surface == "home_feed":
            pool, score = self.home_pools(users)
            score = score.copy()
        elif surface in ("related", "search"):
            if surface == "related":
                if seed_item is None:
                    raise ConfigError("related requests need seed items", key="seed_item")
                pool, sim = self.related_pools(np.asarray(seed_item, dtype=np.int64))
            else:
                if query_topic is None:
                    raise ConfigError("search requests need query topics", key="query_topic")
                pool = self.search_pools()[np.asarray(query_topic, dtype=np.int64)]
            safe = np.maximum(pool, 0)
            score = self.config.affinity_weight * np.einsum(
                "bd,bmd->bm", self._users[users], self._items[safe]) + self._item_prior[safe]
            if surface == "related":
                score += self.config.similarity_weight * sim
        else:
            raise ConfigError("unknown surface", key=surface)
        score[pool < 0] = -np.inf
        return pool, score

    def log_weights(self, pool: np.ndarray, score: np.ndarray, timestamps: np.ndarray,
                    ) -> np.ndarray:
        """``score / temperature`` for pool items available at the request time, else
        ``-inf`` (padding, or pins created after the request)."""
        ts = np.asarray(timestamps, dtype=np.int64)[:, None]
        ok = (pool >= 0) & (self.truth.item_created_at[np.maximum(pool, 0)] <= ts)
        return np.where(ok, score / self.temperature, -np.inf)

    # ------------------------------------------------------------------ slates
    def sample(self, pool: np.ndarray, log_w: np.ndarray, k: int,
               rng: np.random.Generator) -> Slates:
        """Plackett–Luce slates of up to ``k`` items by Gumbel-top-k, with exact
        conditional and cascade probabilities (see the module docstring)."""
        keys = log_w + rng.gumbel(size=log_w.shape)
        k = min(k, pool.shape[1])
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k] if k < pool.shape[1] else \
            np.broadcast_to(np.arange(pool.shape[1]), pool.shape)
        rows = np.arange(pool.shape[0])[:, None]
        pos = np.take_along_axis(top, np.argsort(-keys[rows, top], axis=1, kind="stable"),
                                 axis=1)
        pos = np.where(np.isfinite(log_w[rows, pos]), pos, -1)
        return self._probabilities(pool, log_w, pos)

    def probabilities(self, pool: np.ndarray, log_w: np.ndarray, slates: np.ndarray,
                      ) -> Slates:
        """Exact probabilities of given slates (B, k; item ids, -1 pads at the end).

        Raises when a slate holds an item the policy could not have shown.
        """
        k = slates.shape[1]
        pos = np.full(slates.shape, -1, dtype=np.int64)
        for j in range(k):
            hit = pool == slates[:, j:j + 1]
            pos[:, j] = np.where(hit.any(axis=1) & (slates[:, j] >= 0), hit.argmax(axis=1), -1)
        rows = np.arange(pool.shape[0])[:, None]
        bad = (slates >= 0) & ((pos < 0) | ~np.isfinite(log_w[rows, np.maximum(pos, 0)]))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ConfigError(f"item {int(slates[r, c])} at position {int(c)} of slate {int(r)} "
                              "is not in the policy's available candidate pool", key="slates")
        return self._probabilities(pool, log_w, pos)

    def marginal_propensities(self, pool: np.ndarray, log_w: np.ndarray, k: int,
                              n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """P(pool item j at position p) for each request: an array (B, M, k). Summing over
        ``p`` gives P(j anywhere in the top k).

        Exact for positions 0 and 1; beyond, a Monte Carlo estimate from ``n_samples``
        slates per request (Plackett–Luce marginals have no closed form), whose standard
        error at an entry ``m`` is ``sqrt(m (1 - m) / n_samples)``
        (:func:`recscope.core.plackett_luce.position_marginals`).
        """
        return position_marginals(log_w, min(k, pool.shape[1]), n_samples, rng)

    @staticmethod
    def _probabilities(pool: np.ndarray, log_w: np.ndarray, pos: np.ndarray) -> Slates:
        """Conditional and cascade probabilities of slates given as pool positions."""
        rows = np.arange(pool.shape[0])[:, None]
        valid = pos >= 0
        safe = np.maximum(pos, 0)
        logp = conditional_log_probs(log_w, pos)
        items = np.where(valid, pool[rows, safe], -1)
        prop = np.where(valid, np.exp(logp), np.nan)
        cascade = np.where(valid, np.exp(np.cumsum(logp, axis=1)), np.nan)
        return Slates(items=items, propensity=prop, propensity_cascade=cascade)
