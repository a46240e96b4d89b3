"""Re-rankers: reorder a ranked list (usually longer than k) into the final top-k.

- ``mmr``: maximal marginal relevance (Carbonell & Goldstein 1998) for diversity.
- ``calibrated``: topic proportions matched to the user's history (Steck 2018).
- ``min_exposure``: an item group is guaranteed a minimum share of position-discounted
  exposure in every list where enough of its items are candidates.
- ``rules``: business rules: filter items or topics, boost topics, at most N per creator.

All take ``rerank(lists, k) -> RankedLists``; input scores are min-max normalised per
list (pads ignored) so the trade-off weights mean the same thing for every upstream model.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import Field

from recscope.data.interactions import Interactions
from recscope.data.rankings import RankedLists
from recscope.errors import ConfigError
from recscope.models.base import ComponentConfig, Stage, register
from recscope.models.itemmeta import item_codes, svd_item_embeddings

_NEG = -np.inf


class Reranker(Stage):
    """Base class of re-ranking stages: ``fit(train)`` learns item metadata, then
    ``rerank(lists, k)`` picks and orders k of each list's items."""

    kind: ClassVar[str] = "reranker"

    def __init__(self, config: ComponentConfig | dict[str, Any] | None = None,
                 **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._fitted = False

    def fit(self, train: Interactions) -> Self:
        self._remember(train)
        self._fit(train)
        self._fitted = True
        return self

    @property
    def fitted(self) -> bool:
        return self._fitted

    def _set_base_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._fitted = True

    @abstractmethod
    def _fit(self, train: Interactions) -> None:
        """Learn what the re-ranker needs about items and users."""

    @abstractmethod
    def _select(self, users: np.ndarray, items: np.ndarray, rel: np.ndarray, k: int
                ) -> np.ndarray:
        """Positions (into ``items``) of the chosen k, in order; −1 where none is left."""

    def rerank(self, lists: RankedLists, k: int) -> RankedLists:
        """The re-ranked top-``k`` of ``lists``; scores are the normalised input scores."""
        self._check_fitted()
        items = np.where(lists.items < self.n_items, lists.items, -1)
        rel = normalise(lists.scores, items >= 0)
        pos = self._select(lists.users, items, rel, k)
        ok = pos >= 0
        safe = np.maximum(pos, 0)
        out_items = np.where(ok, np.take_along_axis(items, safe, axis=1), -1)
        out_scores = np.where(ok, np.take_along_axis(rel, safe, axis=1), _NEG)
        return RankedLists(lists.users, out_items, out_scores, traces=dict(lists.traces))


def normalise(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Min-max scale each row's valid scores to [0, 1] (constant rows become 1)."""
    s = np.where(valid & np.isfinite(scores), scores, np.nan).astype(np.float64)
    with np.errstate(all="ignore"):
        lo = np.nanmin(np.where(np.isnan(s), np.inf, s), axis=1, keepdims=True)
        hi = np.nanmax(np.where(np.isnan(s), -np.inf, s), axis=1, keepdims=True)
        span = hi - lo
        out = np.where(span > 0, (s - lo) / np.where(span > 0, span, 1.0), 1.0)
    out = np.where(valid & np.isfinite(scores), out, _NEG)
    # rows whose valid entries all had non-finite scores: keep the input order
    return out.astype(np.float64)


def _greedy(objective_fn: Any, items: np.ndarray, k: int) -> np.ndarray:
    """Run a greedy selection: ``objective_fn(step, taken)`` -> [n, m] objective."""
    n, m = items.shape
    taken = items < 0
    out = np.full((n, k), -1, dtype=np.int64)
    rows = np.arange(n)
    for step in range(min(k, m)):
        obj = objective_fn(step, out[:, :step])
        obj = np.where(taken, _NEG, obj)
        best = np.argmax(obj, axis=1)  # ties: lowest position, i.e. the input order
        ok = np.isfinite(obj[rows, best])
        out[ok, step] = best[ok]
        taken[rows[ok], best[ok]] = True
    return out


class MMRConfig(ComponentConfig):
    """``lambda_``: weight on relevance (1 = no diversification); ``similarity``: item
    ``embedding`` cosine (truncated SVD of the training matrix, ``dim``) or same ``topic``."""

    lambda_: float = Field(default=0.7, ge=0, le=1)
    similarity: Literal["embedding", "topic"] = "embedding"
    dim: int = Field(default=32, ge=1)


@register("mmr")
class MMR(Reranker):
    """Pick argmax λ·rel(i) − (1 − λ)·max_{j chosen} sim(i, j), one position at a time."""

    Config = MMRConfig
    config: MMRConfig

    def __init__(self, config: MMRConfig | dict | None = None, **kw: object) -> None:
        super().__init__(config, **kw)
        self.embeddings: np.ndarray | None = None
        self.topics: np.ndarray | None = None

    def _fit(self, train: Interactions) -> None:
        if self.config.similarity == "embedding":
            self.embeddings = svd_item_embeddings(train, self.config.dim, self.config.seed)
        else:
            self.topics = item_codes(train, "topic", required=True)[0]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """sim(a[i], b[i, j]) for a [n] and b [n, m] item indices."""
        if self.embeddings is not None:
            e = self.embeddings
            return np.einsum("nd,nmd->nm", e[np.maximum(a, 0)], e[np.maximum(b, 0)])
        assert self.topics is not None
        ta, tb = self.topics[np.maximum(a, 0)], self.topics[np.maximum(b, 0)]
        return ((ta[:, None] == tb) & (ta[:, None] >= 0)).astype(np.float64)

    def _select(self, users: np.ndarray, items: np.ndarray, rel: np.ndarray, k: int
                ) -> np.ndarray:
        lam = self.config.lambda_
        maxsim = np.zeros(items.shape)
        rows = np.arange(len(items))

        def objective(step: int, chosen: np.ndarray) -> np.ndarray:
            if step:
                last = items[rows, np.maximum(chosen[:, -1], 0)]
                sim = self.similarity(last, items)
                upd = chosen[:, -1] >= 0
                maxsim[upd] = np.maximum(maxsim[upd], sim[upd])
            finite = np.isfinite(rel)
            return np.where(finite, lam * np.where(finite, rel, 0.0) - (1 - lam) * maxsim, _NEG)

        return _greedy(objective, items, k)

    def _state(self) -> dict[str, np.ndarray]:
        return {"embeddings": self.embeddings} if self.embeddings is not None else \
            {"topics": self.topics}

    def _set_state(self, a: dict[str, np.ndarray]) -> None:
        self.embeddings, self.topics = a.get("embeddings"), a.get("topics")


class CalibratedConfig(ComponentConfig):
    """``lambda_``: weight on calibration; ``alpha``: smoothing of the list's topic
    distribution towards the user's (keeps the KL finite)."""

    lambda_: float = Field(default=0.5, ge=0, le=1)
    alpha: float = Field(default=0.01, gt=0, lt=1)


@register("calibrated")
class Calibrated(Reranker):
    """Greedy argmax (1 − λ)·rel(i) − λ·KL(p_u ‖ q̃(list + i)) (Steck, RecSys 2018)."""

    Config = CalibratedConfig
    config: CalibratedConfig

    def __init__(self, config: CalibratedConfig | dict | None = None, **kw: object) -> None:
        super().__init__(config, **kw)
        self.topics: np.ndarray | None = None
        self.user_dist: np.ndarray | None = None
        self.global_dist: np.ndarray | None = None

    def _fit(self, train: Interactions) -> None:
        topics, names = item_codes(train, "topic", required=True)
        g = max(1, len(names))
        t = topics[train.item_index]
        ok = t >= 0
        counts = np.zeros((train.n_users, g))
        np.add.at(counts, (train.user_index[ok], t[ok]), 1.0)
        self.global_dist = (counts.sum(axis=0) + 1e-9) / (counts.sum() + 1e-9 * g)
        tot = counts.sum(axis=1, keepdims=True)
        self.user_dist = np.where(tot > 0, counts / np.maximum(tot, 1), self.global_dist)
        self.topics = topics

    def target(self, users: np.ndarray) -> np.ndarray:
        """Topic distribution p(g | u) (the global one for unknown users)."""
        assert self.user_dist is not None and self.global_dist is not None
        known = (users >= 0) & (users < len(self.user_dist))
        out = np.broadcast_to(self.global_dist, (len(users), len(self.global_dist))).copy()
        out[known] = self.user_dist[users[known]]
        return out

    def _select(self, users: np.ndarray, items: np.ndarray, rel: np.ndarray, k: int
                ) -> np.ndarray:
        assert self.topics is not None
        p = self.target(users)
        g = p.shape[1]
        t = self.topics[np.maximum(items, 0)]
        onehot = np.zeros((*items.shape, g))
        has = (t >= 0) & (items >= 0)
        onehot[has, t[has]] = 1.0
        counts = np.zeros((len(items), g))
        rows = np.arange(len(items))
        lam, alpha = self.config.lambda_, self.config.alpha

        def objective(step: int, chosen: np.ndarray) -> np.ndarray:
            if step:
                c = chosen[:, -1]
                counts[c >= 0] += onehot[rows[c >= 0], c[c >= 0]]
            new = counts[:, None, :] + onehot  # [n, m, g]
            tot = new.sum(axis=2, keepdims=True)
            q = np.where(tot > 0, new / np.maximum(tot, 1e-12), 0.0)
            q = (1 - alpha) * q + alpha * p[:, None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                kl = np.where(p[:, None, :] > 0, p[:, None, :] * np.log(p[:, None, :] / q), 0.0)
            finite = np.isfinite(rel)
            return np.where(finite, (1 - lam) * np.where(finite, rel, 0.0)
                            - lam * kl.sum(axis=2), _NEG)

        return _greedy(objective, items, k)

    def _state(self) -> dict[str, np.ndarray]:
        assert self.topics is not None and self.user_dist is not None
        assert self.global_dist is not None
        return {"topics": self.topics, "user_dist": self.user_dist,
                "global_dist": self.global_dist}

    def _set_state(self, a: dict[str, np.ndarray]) -> None:
        self.topics, self.user_dist, self.global_dist = (a["topics"], a["user_dist"],
                                                         a["global_dist"])


class MinExposureConfig(ComponentConfig):
    """The protected group is ``column`` ∈ ``values`` in the item side table, or, with
    ``column = "popularity_tail"``, items outside the most popular ``head_fraction`` of
    the catalogue. ``min_share``: its minimum share of exposure, exposure at position p
    (0-based) being 1 / log2(p + 2)."""

    column: str = "popularity_tail"
    values: list[str] = Field(default_factory=list)
    head_fraction: float = Field(default=0.2, gt=0, lt=1)
    min_share: float = Field(default=0.2, ge=0, le=1)


@register("min_exposure")
class MinExposure(Reranker):
    """Keeps the input order except where the protected group would otherwise fall below
    its share: then the best protected candidate is promoted (greedy, position by
    position, so the guarantee holds whenever enough protected candidates exist)."""

    Config = MinExposureConfig
    config: MinExposureConfig

    def __init__(self, config: MinExposureConfig | dict | None = None, **kw: object) -> None:
        super().__init__(config, **kw)
        self.protected: np.ndarray | None = None

    def _fit(self, train: Interactions) -> None:
        cfg = self.config
        if cfg.column == "popularity_tail":
            pop = np.bincount(train.item_index, minlength=train.n_items)
            order = np.lexsort((np.arange(train.n_items), -pop))
            head = order[: int(np.ceil(cfg.head_fraction * train.n_items))]
            prot = np.ones(train.n_items, dtype=bool)
            prot[head] = False
        else:
            if not cfg.values:
                raise ConfigError("give the protected values of the column", key="values")
            codes, names = item_codes(train, cfg.column, required=True)
            wanted = [names.index(v) for v in cfg.values if v in names]
            prot = np.isin(codes, wanted) & (codes >= 0)
        self.protected = prot

    def exposure_share(self, lists: RankedLists) -> np.ndarray:
        """Protected share of position-discounted exposure in each list."""
        assert self.protected is not None
        w = 1.0 / np.log2(np.arange(lists.k) + 2.0)
        valid = lists.items >= 0
        prot = valid & self.protected[np.maximum(lists.items, 0)]
        tot = (w * valid).sum(axis=1)
        return np.where(tot > 0, (w * prot).sum(axis=1) / np.maximum(tot, 1e-12), 0.0)

    def _select(self, users: np.ndarray, items: np.ndarray, rel: np.ndarray, k: int
                ) -> np.ndarray:
        assert self.protected is not None
        n, m = items.shape
        kk = min(k, m)
        w = 1.0 / np.log2(np.arange(kk) + 2.0)
        valid = items >= 0
        prot = valid & self.protected[np.maximum(items, 0)]
        length = np.minimum(valid.sum(axis=1), kk)
        total = np.array([w[:L].sum() for L in range(kk + 1)])[length]
        need = self.config.min_share * total - 1e-12
        taken = ~valid
        got = np.zeros(n)
        out = np.full((n, k), -1, dtype=np.int64)
        rows = np.arange(n)
        order_pos = np.arange(m)
        for p in range(kk):
            active = p < length
            avail_prot = (prot & ~taken).sum(axis=1)
            slots_after = np.maximum(length - p - 1, 0)
            # most protected exposure reachable if position p is NOT protected
            reach = got + np.array([w[p + 1: p + 1 + min(a, s)].sum() for a, s in
                                    zip(avail_prot, slots_after, strict=True)])
            force = active & (reach < need) & (avail_prot > 0)
            # best remaining (input order = relevance order of the ranked list)
            score = np.where(taken, np.inf, order_pos[None, :])
            best_any = np.argmin(score, axis=1)
            score_p = np.where(taken | ~prot, np.inf, order_pos[None, :])
            best_p = np.argmin(score_p, axis=1)
            pick = np.where(force, best_p, best_any)
            ok = active & ~taken[rows, pick]
            out[ok, p] = pick[ok]
            taken[rows[ok], pick[ok]] = True
            got += np.where(ok & prot[rows, pick], w[p], 0.0)
        return out

    def _state(self) -> dict[str, np.ndarray]:
        assert self.protected is not None
        return {"protected": self.protected}

    def _set_state(self, a: dict[str, np.ndarray]) -> None:
        self.protected = a["protected"].astype(bool)


class RulesConfig(ComponentConfig):
    """``exclude_items`` (external ids) and ``exclude_topics`` are removed;
    ``boost_topics`` adds to the normalised score (0..1); ``max_per_creator`` caps how many
    items of one ``creator_id`` a list may hold."""

    exclude_items: list[str | int] = Field(default_factory=list)
    exclude_topics: list[str] = Field(default_factory=list)
    boost_topics: dict[str, float] = Field(default_factory=dict)
    max_per_creator: int | None = Field(default=None, ge=1)


@register("rules")
class BusinessRules(Reranker):
    """Filter, boost, then fill the list in score order under the per-creator cap."""

    Config = RulesConfig
    config: RulesConfig

    def __init__(self, config: RulesConfig | dict | None = None, **kw: object) -> None:
        super().__init__(config, **kw)
        self.blocked: np.ndarray | None = None
        self.boost: np.ndarray | None = None
        self.creators: np.ndarray | None = None

    def _fit(self, train: Interactions) -> None:
        cfg = self.config
        blocked = np.zeros(train.n_items, dtype=bool)
        if cfg.exclude_items:
            idx = train.items.index(list(cfg.exclude_items), missing="ignore")
            if (idx < 0).any():
                bad = [v for v, i in zip(cfg.exclude_items, idx, strict=True) if i < 0]
                raise ConfigError(f"unknown item id(s) {bad[:5]}", key="exclude_items")
            blocked[idx] = True
        boost = np.zeros(train.n_items)
        if cfg.exclude_topics or cfg.boost_topics:
            topics, names = item_codes(train, "topic", required=True)
            for name in cfg.exclude_topics:
                if name in names:
                    blocked |= topics == names.index(name)
            for name, b in cfg.boost_topics.items():
                if name in names:
                    boost[topics == names.index(name)] += b
        self.blocked, self.boost = blocked, boost
        self.creators = (item_codes(train, "creator_id", required=True)[0]
                         if cfg.max_per_creator is not None else
                         np.full(train.n_items, -1, dtype=np.int64))

    def _select(self, users: np.ndarray, items: np.ndarray, rel: np.ndarray, k: int
                ) -> np.ndarray:
        assert self.blocked is not None and self.boost is not None
        assert self.creators is not None
        safe = np.maximum(items, 0)
        score = np.where((items >= 0) & ~self.blocked[safe], rel + self.boost[safe], _NEG)
        order = np.lexsort((np.broadcast_to(np.arange(items.shape[1]), items.shape), -score),
                           axis=1)
        cap = self.config.max_per_creator
        out = np.full((len(items), k), -1, dtype=np.int64)
        for r in range(len(items)):
            used: dict[int, int] = {}
            n_out = 0
            for pos in order[r]:
                if n_out >= k or not np.isfinite(score[r, pos]):
                    break
                c = int(self.creators[safe[r, pos]])
                if cap is not None and c >= 0:
                    if used.get(c, 0) >= cap:
                        continue
                    used[c] = used.get(c, 0) + 1
                out[r, n_out] = pos
                n_out += 1
        return out

    def _state(self) -> dict[str, np.ndarray]:
        assert self.blocked is not None and self.boost is not None
        assert self.creators is not None
        return {"blocked": self.blocked, "boost": self.boost, "creators": self.creators}

    def _set_state(self, a: dict[str, np.ndarray]) -> None:
        self.blocked = a["blocked"].astype(bool)
        self.boost, self.creators = a["boost"], a["creators"]
