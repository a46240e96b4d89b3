"""Policies the simulated platform can serve: any callable, recscope components, and
built-in two-stage stacks (retriever ► ranker) made from the world.

A policy is any callable ``policy(users, surface, k, context) -> items`` returning an
int array [len(users), k] of item indices (−1 pads) or a
:class:`recscope.data.rankings.RankedLists`. :class:`SlateContext` tells it the day, the
search query topic and the related-pin seed of each request, and gives per-request
counter-based keys so that any randomness it uses is common across replays.

:class:`StackPolicy` is a retrieve ► rank stack whose two stages can be switched
independently (the natural unit of a factorial experiment). Built-in retrievers:
``popular`` (the global head), ``embedding`` (each user's nearest items by an estimated
embedding), ``random``; built-in rankers: ``popularity``, ``affinity`` (estimated
user·item affinity plus popularity) and ``affinity_quality`` (a better-estimated affinity
plus an estimate of pin quality). Estimates are the truth plus seeded noise, so better
components are strictly closer to the truth. Related and search requests draw candidates
from the seed's estimated neighbours and the query topic's popular pins, shared by all
stacks; the stack's ranker orders them. Recscope components (``fit``/``score``/
``recommend``) can stand in for either stage (:class:`ComponentRetriever`,
:class:`ComponentRanker`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from recscope.data.rankings import RankedLists
from recscope.errors import ConfigError
from recscope.pipeline.stack import rank_candidates
from recscope.sim import crn
from recscope.sim.world_model import WorldTruth

_CHUNK = 2048


@dataclass
class SlateContext:
    """What a policy may know about a batch of requests besides the users."""

    day: int
    step: int
    query_topic: np.ndarray  # int64 [n], -1 unless search
    seed_item: np.ndarray  # int64 [n], -1 unless related
    keys: np.ndarray  # uint64 [n] counter-based key of each request (for CRN noise)
    extra: dict[str, Any] = field(default_factory=dict)


class Policy(Protocol):
    def __call__(self, users: np.ndarray, surface: str, k: int, context: SlateContext,
                 ) -> np.ndarray | RankedLists: ...


PolicyLike = Callable[..., Any]


def slates_of(result: np.ndarray | RankedLists, n: int, k: int) -> np.ndarray:
    """Normalise a policy's answer to int64 [n, k] with -1 padding; check its shape."""
    items = result.items if isinstance(result, RankedLists) else np.asarray(result)
    if items.ndim != 2 or items.shape[0] != n:
        raise ConfigError(f"policy returned shape {items.shape}, expected ({n}, {k})",
                          key="policy")
    items = items[:, :k].astype(np.int64, copy=False)
    if items.shape[1] < k:
        items = np.pad(items, ((0, 0), (0, k - items.shape[1])), constant_values=-1)
    return items


def gumbel(keys: np.ndarray, m: int, salt: int) -> np.ndarray:
    """Gumbel noise [n, m] derived from request keys (common across replays)."""
    h = crn.mix_np(keys[:, None], np.arange(m, dtype=np.uint64)[None, :] + np.uint64(salt))
    u = ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)
    return -np.log(-np.log(u))


def _noisy(x: np.ndarray, noise: float, seed: int) -> np.ndarray:
    if noise <= 0:
        return x.copy()
    rng = np.random.default_rng(seed)
    return x + noise / np.sqrt(x.shape[1]) * rng.standard_normal(x.shape)


def _top(scores: np.ndarray, m: int) -> np.ndarray:
    m = min(m, scores.shape[1])
    top = np.argpartition(-scores, m - 1, axis=1)[:, :m]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


class WorldIndex:
    """Shared candidate sources of a world: seed neighbours (related) and topic heads
    (search), both from estimated item vectors and popularity."""

    def __init__(self, truth: WorldTruth, pool: int = 100, noise: float = 0.35,
                 seed: int = 0) -> None:
        self.truth = truth
        self.pool = min(pool, truth.n_items - 1)
        self.item_est = _noisy(truth.item_vectors, noise, seed + 1)
        norm = np.linalg.norm(self.item_est, axis=1, keepdims=True)
        self.item_unit = self.item_est / np.maximum(norm, 1e-12)
        self._related: np.ndarray | None = None
        self._search: np.ndarray | None = None
        self.popular = np.argsort(-truth.item_popularity, kind="stable")

    def related(self, seeds: np.ndarray) -> np.ndarray:
        if self._related is None:
            out = np.empty((self.truth.n_items, self.pool), dtype=np.int64)
            for lo in range(0, self.truth.n_items, _CHUNK):
                hi = min(lo + _CHUNK, self.truth.n_items)
                s = self.item_unit[lo:hi] @ self.item_unit.T
                s[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
                out[lo:hi] = _top(s, self.pool)
            self._related = out
        return self._related[np.maximum(seeds, 0)]

    def search(self, topics: np.ndarray) -> np.ndarray:
        if self._search is None:
            t = self.truth
            out = np.full((t.n_topics, self.pool), -1, dtype=np.int64)
            for k in range(t.n_topics):
                members = self.popular[t.item_topic[self.popular] == k][:self.pool]
                out[k, :members.size] = members
            self._search = out
        return self._search[np.maximum(topics, 0)]


class Retriever(Protocol):
    def candidates(self, users: np.ndarray, m: int, context: SlateContext) -> np.ndarray: ...


class Ranker(Protocol):
    def scores(self, users: np.ndarray, items: np.ndarray, context: SlateContext,
               ) -> np.ndarray: ...


class PopularRetriever:
    """The ``m`` most popular pins, the same for everyone."""

    def __init__(self, truth: WorldTruth) -> None:
        self.order = np.argsort(-truth.item_popularity, kind="stable")

    def candidates(self, users: np.ndarray, m: int, context: SlateContext) -> np.ndarray:
        return np.broadcast_to(self.order[:m], (users.size, min(m, self.order.size)))


class RandomRetriever:
    """``m`` pins uniformly at random per request (keys from the request, so CRN holds)."""

    def __init__(self, truth: WorldTruth) -> None:
        self.n_items = truth.n_items

    def candidates(self, users: np.ndarray, m: int, context: SlateContext) -> np.ndarray:
        h = crn.mix_np(context.keys[:, None], np.arange(m, dtype=np.uint64)[None, :] + 77)
        return (h % np.uint64(self.n_items)).astype(np.int64)


class EmbeddingRetriever:
    """Each user's ``pool`` nearest pins by estimated vectors (truth + noise)."""

    def __init__(self, truth: WorldTruth, noise: float = 0.35, pool: int = 100,
                 popularity_weight: float = 0.2, seed: int = 0) -> None:
        self.truth = truth
        self.user_est = _noisy(truth.user_vectors, noise, seed + 11)
        self.item_est = _noisy(truth.item_vectors, noise, seed + 12)
        self.prior = popularity_weight * truth.item_log_popularity
        self.pool = min(pool, truth.n_items)
        self._pools: np.ndarray | None = None

    def _all(self) -> np.ndarray:
        if self._pools is None:
            n = self.truth.n_users
            out = np.empty((n, self.pool), dtype=np.int64)
            for lo in range(0, n, _CHUNK):
                hi = min(lo + _CHUNK, n)
                out[lo:hi] = _top(self.user_est[lo:hi] @ self.item_est.T + self.prior,
                                  self.pool)
            self._pools = out
        return self._pools

    def candidates(self, users: np.ndarray, m: int, context: SlateContext) -> np.ndarray:
        return self._all()[users, :m]


class AffinityRanker:
    """Score = weight·(estimated user·item) + popularity + quality estimate (optional)."""

    def __init__(self, truth: WorldTruth, noise: float = 0.5, affinity_weight: float = 3.0,
                 popularity_weight: float = 0.3, quality_weight: float = 0.0,
                 quality_noise: float = 0.5, seed: int = 0) -> None:
        rng = np.random.default_rng(seed + 21)
        self.user_est = _noisy(truth.user_vectors, noise, seed + 22).astype(np.float32)
        self.item_est = _noisy(truth.item_vectors, noise, seed + 23).astype(np.float32)
        self.w = affinity_weight
        self.static = popularity_weight * truth.item_log_popularity
        if quality_weight:
            q = truth.item_quality + quality_noise * rng.standard_normal(truth.n_items)
            self.static = self.static + quality_weight * q

    def scores(self, users: np.ndarray, items: np.ndarray, context: SlateContext,
               ) -> np.ndarray:
        safe = np.maximum(items, 0)
        s = np.matmul(self.item_est[safe], self.user_est[users][:, :, None])[:, :, 0]
        return self.w * s.astype(np.float64) + self.static[safe]


class PopularityRanker:
    """Score = log popularity."""

    def __init__(self, truth: WorldTruth) -> None:
        self.static = truth.item_log_popularity

    def scores(self, users: np.ndarray, items: np.ndarray, context: SlateContext,
               ) -> np.ndarray:
        return self.static[np.maximum(items, 0)]


class ComponentRetriever:
    """A fitted recscope component as the retrieval stage (its top-``m`` over the catalogue).

    ``user_index``/``item_ids`` map world indices to the component's vocabulary and back
    (identity when the component was trained on world indices)."""

    def __init__(self, component: Any, n_users: int, user_index: np.ndarray | None = None,
                 item_ids: np.ndarray | None = None) -> None:
        self.component = component
        self.n_users = n_users
        self.user_index = user_index
        self.item_ids = item_ids
        self._pools: np.ndarray | None = None
        self._m = 0

    def candidates(self, users: np.ndarray, m: int, context: SlateContext) -> np.ndarray:
        """The component's top ``m`` per user, computed once for every user and cached
        (retrieval does not depend on the request, only on the user)."""
        if self._pools is None or self._m < m:
            every = np.arange(self.n_users)
            u = every if self.user_index is None else self.user_index[every]
            items = self.component.recommend(u, m, exclude=None).items.astype(np.int64)
            if self.item_ids is not None:
                items = np.where(items >= 0, self.item_ids[np.maximum(items, 0)], -1)
            self._pools, self._m = items, m
        return self._pools[users, :m]


class ComponentRanker:
    """A fitted recscope component as the ranking stage (its ``score`` of the candidates)."""

    def __init__(self, component: Any, user_index: np.ndarray | None = None,
                 item_index: np.ndarray | None = None) -> None:
        self.component = component
        self.user_index = user_index
        self.item_index = item_index

    def scores(self, users: np.ndarray, items: np.ndarray, context: SlateContext,
               ) -> np.ndarray:
        u = users if self.user_index is None else self.user_index[users]
        it = items if self.item_index is None else np.where(
            items >= 0, self.item_index[np.maximum(items, 0)], -1)
        return np.asarray(self.component.score(u, it), dtype=np.float64)


RETRIEVERS: dict[str, Callable[..., Retriever]] = {
    "popular": lambda t, seed: PopularRetriever(t),
    "random": lambda t, seed: RandomRetriever(t),
    "embedding": lambda t, seed: EmbeddingRetriever(t, noise=0.8, seed=seed),
    "embedding_v2": lambda t, seed: EmbeddingRetriever(t, noise=0.45, seed=seed),
}
RANKERS: dict[str, Callable[..., Ranker]] = {
    "popularity": lambda t, seed: PopularityRanker(t),
    "affinity": lambda t, seed: AffinityRanker(t, noise=0.8, seed=seed),
    "affinity_quality": lambda t, seed: AffinityRanker(t, noise=0.7, quality_weight=0.12,
                                                       seed=seed),
}


class StackPolicy:
    """Retrieve ``pool`` candidates, rank them, serve the top ``k`` (Plackett–Luce with
    ``temperature`` when positive, so repeated requests do not get identical slates).

    Ordering is :func:`recscope.pipeline.stack.rank_candidates`, the step a
    :class:`~recscope.pipeline.Pipeline` and the demo's offline stacks use too."""

    def __init__(self, truth: WorldTruth, retriever: str | Retriever = "embedding",
                 ranker: str | Ranker = "affinity", *, pool: int = 100,
                 temperature: float = 0.3, index: WorldIndex | None = None,
                 seed: int = 0, name: str | None = None) -> None:
        self.truth = truth
        self.retriever = _make(retriever, RETRIEVERS, truth, seed, "retriever")
        self.ranker = _make(ranker, RANKERS, truth, seed, "ranker")
        self.pool = pool
        self.temperature = temperature
        self.index = index if index is not None else WorldIndex(truth, pool=pool, seed=seed)
        self.name = name or f"{retriever}+{ranker}"

    def __call__(self, users: np.ndarray, surface: str, k: int, context: SlateContext,
                 ) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        if surface == "related":
            cand = self.index.related(context.seed_item)
        elif surface == "search":
            cand = self.index.search(context.query_topic)
        else:
            cand = np.asarray(self.retriever.candidates(users, self.pool, context))
        s = np.asarray(self.ranker.scores(users, cand, context), dtype=np.float64)
        if self.temperature > 0:
            s = s + self.temperature * gumbel(context.keys, s.shape[1], 1000)
        return rank_candidates(cand, s, min(k, cand.shape[1]))[0]


def _make(spec: Any, table: dict[str, Callable[..., Any]], truth: WorldTruth, seed: int,
          key: str) -> Any:
    if isinstance(spec, str):
        if spec not in table:
            raise ConfigError(f"unknown built-in {key} {spec!r}; expected one of "
                              f"{sorted(table)}", key=key)
        return table[spec](truth, seed)
    return spec


def as_policy(obj: Any) -> PolicyLike:
    """A policy callable from a callable, or from anything with ``recommend(users, k)``
    (a recscope component or pipeline; the surface is ignored)."""
    if hasattr(obj, "recommend"):
        def serve(users: np.ndarray, surface: str, k: int, context: SlateContext) -> Any:
            try:
                return obj.recommend(users, k, exclude=None)
            except TypeError:
                return obj.recommend(users, k)
        return serve
    if callable(obj):
        return obj
    raise ConfigError(f"not a policy: {type(obj).__name__} (need a callable or .recommend)",
                      key="policy")
