"""Embedding retrieval through a faiss index, with the index's recall against exact search.

A source component with embeddings (ALS, BPR, a neural model) is fitted; items go into a
faiss inner-product index (exact ``flat`` search for catalogues below ``exact_below``
items, else ``ivf``: an inverted file with ``nlist`` cells, ``nprobe`` probed). Users
query with their embedding; an item bias, when the source has one, is folded in as one
extra dimension so the index ranks exactly by the source's score. After fitting,
``index_report`` holds recall@``recall_k`` of the index against exact search on a sample
of users and the measured speed-up.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from recscope.data.interactions import Interactions
from recscope.data.rankings import RankedLists
from recscope.errors import ConfigError
from recscope.models.base import (
    Component,
    ComponentConfig,
    ComponentSpec,
    apply_exclusion,
    register,
    top_k,
)


class ANNConfig(ComponentConfig):
    """``source``: the embedding model; ``index``: ``auto`` picks ``flat`` below
    ``exact_below`` items, else ``ivf``."""

    source: ComponentSpec = ComponentSpec(component="als")
    index: Literal["auto", "flat", "ivf"] = "auto"
    exact_below: int = Field(default=20_000, ge=0)
    nlist: int | None = Field(default=None, ge=1)
    nprobe: int = Field(default=8, ge=1)
    recall_k: int = Field(default=100, ge=1)
    recall_users: int = Field(default=500, ge=1)


@register("ann")
class ANNRetriever(Component):
    """Approximate top-k by maximum inner product over the source's embeddings."""

    Config = ANNConfig
    config: ANNConfig

    def __init__(self, config: ANNConfig | dict | None = None, **kw: object) -> None:
        super().__init__(config, **kw)
        self.source: Component | None = None
        self.index: Any = None
        self.index_report: dict[str, float] = {}
        self._users_vec: np.ndarray | None = None

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: Interactions) -> None:
        self.source = self.config.source.build(key="source")
        self.source.fit(train)
        self._build()
        self.index_report = self._measure_recall()

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.source is not None
        u, v = self.source.user_embeddings(), self.source.item_embeddings()
        if u is None or v is None:
            raise ConfigError(f"source {self.source.name!r} has no embeddings",
                              key="source.component")
        bias = getattr(self.source, "item_bias", None)
        if bias is not None:
            u = np.hstack([u, np.ones((len(u), 1), u.dtype)])
            v = np.hstack([v, bias[:, None]])
        return np.ascontiguousarray(u, np.float32), np.ascontiguousarray(v, np.float32)

    def index_kind(self) -> str:
        """``flat`` or ``ivf`` after resolving ``auto``."""
        if self.config.index != "auto":
            return self.config.index
        return "flat" if self.n_items < self.config.exact_below else "ivf"

    def _build(self) -> None:
        import faiss

        u, v = self._vectors()
        self._users_vec = u
        d = v.shape[1]
        if self.index_kind() == "flat":
            index = faiss.IndexFlatIP(d)
        else:
            nlist = self.config.nlist or max(1, int(4 * np.sqrt(self.n_items)))
            nlist = min(nlist, self.n_items)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist,
                                       faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = self.config.seed
            index.train(v)
            index.nprobe = self.config.nprobe
        index.add(v)
        self.index = index

    def _measure_recall(self) -> dict[str, float]:
        """Recall@k of the index against exact inner-product search, and the speed-up."""
        import faiss

        u, v = self._vectors()
        rng = np.random.default_rng(self.config.seed)
        n = min(self.config.recall_users, len(u))
        sample = np.sort(rng.choice(len(u), n, replace=False))
        q = u[sample]
        k = min(self.config.recall_k, self.n_items)
        exact = faiss.IndexFlatIP(v.shape[1])
        exact.add(v)
        exact.search(q[:1], k)  # warm both up before timing
        self.index.search(q[:1], k)
        t0 = time.perf_counter()
        _, truth = exact.search(q, k)
        t1 = time.perf_counter()
        _, got = self.index.search(q, k)
        t2 = time.perf_counter()
        hits = sum(len(np.intersect1d(a[a >= 0], b)) for a, b in zip(got, truth, strict=True))
        return {"recall_at_k": hits / max(1, truth.size), "k": float(k), "users": float(n),
                "exact_seconds": t1 - t0, "index_seconds": t2 - t1,
                "speedup": (t1 - t0) / max(t2 - t1, 1e-9)}

    # ------------------------------------------------------------------ scoring
    def _score_all(self, users: np.ndarray) -> np.ndarray:
        assert self.source is not None
        return self.source._score_all(users)

    def _score_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        assert self.source is not None
        return self.source._score_items(users, items)

    def recommend(self, users: np.ndarray, k: int, *, exclude: Any = "train",
                  batch_size: int = 2048) -> RankedLists:
        """Top-``k`` from the index; seen items are removed after the search, so the
        index is asked for k plus the most items any user in the batch has seen."""
        self._check_fitted()
        assert self._users_vec is not None and self._popularity is not None
        users = np.asarray(users, dtype=np.int32)
        mask = self._exclusion_mask(exclude)
        items = np.full((len(users), k), -1, dtype=np.int32)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        cold = self.cold_users(users)
        if cold.any():  # popularity fallback, through the base class
            rl = Component.recommend(self, users[cold], k, exclude=exclude)
            items[cold], scores[cold] = rl.items, rl.scores
        warm = np.flatnonzero(~cold)
        for start in range(0, len(warm), batch_size):
            rows = warm[start:start + batch_size]
            batch = users[rows]
            extra = 0
            if mask is not None:
                known = batch[batch < mask.shape[0]]
                extra = int(np.diff(mask.indptr)[known].max()) if len(known) else 0
            extra += int((self._popularity == 0).sum())
            depth = min(self.n_items, k + extra)
            sc, it = self.index.search(self._users_vec[batch], depth)
            full = np.full((len(batch), self.n_items), -np.inf, dtype=np.float32)
            r = np.repeat(np.arange(len(batch)), depth).reshape(len(batch), depth)
            ok = it >= 0
            full[r[ok], it[ok]] = sc[ok]
            if mask is not None:
                apply_exclusion(full, batch, mask)
            full[:, self._popularity == 0] = -np.inf
            items[rows], scores[rows] = top_k(full, k)
        return RankedLists(users, items, scores)

    def item_embeddings(self) -> np.ndarray | None:
        return None if self.source is None else self.source.item_embeddings()

    def user_embeddings(self) -> np.ndarray | None:
        return None if self.source is None else self.source.user_embeddings()

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        import faiss

        keys = sorted(self.index_report)
        return {"index": faiss.serialize_index(self.index),
                "report_keys": np.array(keys), "report_values":
                np.array([self.index_report[k] for k in keys], dtype=np.float64)}

    def _set_state(self, a: dict[str, np.ndarray]) -> None:
        import faiss

        self.index = faiss.deserialize_index(a["index"])
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = self.config.nprobe
        self.index_report = {str(k): float(v) for k, v in zip(a["report_keys"],
                                                               a["report_values"], strict=True)}

    def _save_extra(self, directory: Path) -> None:
        assert self.source is not None
        self.source.save(directory / "source")

    def _load_extra(self, directory: Path) -> None:
        self.source = Component.load(directory / "source")
        self._users_vec = self._vectors()[0]
