"""ItemKNN: item-item similarity (cosine or asymmetric cosine, with shrinkage), top-N
neighbours per item, kept sparse; a user's score for an item sums its similarities to
the items the user interacted with."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recscope.data.interactions import Interactions, Weights
from recscope.models.base import Component, ComponentConfig, register


class ItemKNNConfig(ComponentConfig):
    """``similarity``: ``cosine`` c_ij / (‖i‖‖j‖ + shrink) or ``asymmetric`` cosine
    c_ij / (‖i‖^(2α) ‖j‖^(2(1-α)) + shrink) (Aiolli 2013); ``neighbors``: similarities
    kept per item; ``weights``: how interactions enter the user × item matrix."""

    similarity: Literal["cosine", "asymmetric"] = "cosine"
    neighbors: int = Field(default=100, ge=1)
    shrink: float = Field(default=10.0, ge=0)
    alpha: float = Field(default=0.5, ge=0, le=1)
    weights: Weights = "binary"
    block_bytes: int = Field(default=64 * 2**20, ge=2**20)


@register("itemknn")
class ItemKNN(Component):
    """Neighbourhood model (Deshpande & Karypis 2004); memory O(n_items × neighbors)."""

    Config = ItemKNNConfig
    config: ItemKNNConfig

    def __init__(self, config: ItemKNNConfig | dict | None = None, **kw: object) -> None:
        super().__init__(config, **kw)
        self.similarity: sp.csr_matrix | None = None
        self._x: sp.csr_matrix | None = None

    def _fit(self, train: Interactions) -> None:
        cfg = self.config
        x = train.to_csr(cfg.weights)
        self._x = x
        xt = x.T.tocsr()
        sq = np.asarray(x.multiply(x).sum(axis=0)).ravel()  # squared column norms
        n = self.n_items
        block = max(1, cfg.block_bytes // (8 * max(1, n)))
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        kk = min(cfg.neighbors, max(1, n - 1))
        for start in range(0, n, block):
            stop = min(n, start + block)
            co = (xt @ x[:, start:stop]).toarray()  # [n, b] co-occurrence
            j = np.arange(start, stop)
            if cfg.similarity == "cosine":
                den = np.sqrt(sq)[:, None] * np.sqrt(sq[j])[None, :]
            else:
                den = np.power(sq, cfg.alpha)[:, None] * np.power(sq[j], 1 - cfg.alpha)[None, :]
            sim = co / (den + cfg.shrink + 1e-12)
            sim[j, np.arange(stop - start)] = 0.0  # no self-similarity
            if kk < n:
                top = np.argpartition(-sim, kk - 1, axis=0)[:kk]
            else:
                top = np.broadcast_to(np.arange(n)[:, None], sim.shape)
            v = np.take_along_axis(sim, top, axis=0)
            keep = v > 0
            rows.append(top[keep])
            cols.append(np.broadcast_to(j[None, :], top.shape)[keep])
            vals.append(v[keep])
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        v = np.concatenate(vals) if vals else np.zeros(0)
        # similarity[i, j]: how much having item i supports recommending item j
        self.similarity = sp.csr_matrix((v.astype(np.float32), (r, c)), shape=(n, n))
        self.similarity.sort_indices()

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        assert self._x is not None and self.similarity is not None
        return np.asarray((self._x[users] @ self.similarity).toarray(), dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        assert self._x is not None and self.similarity is not None
        s, x = self.similarity, self._x
        return {"sim_data": s.data, "sim_indices": s.indices, "sim_indptr": s.indptr,
                "x_data": x.data, "x_indices": x.indices, "x_indptr": x.indptr}

    def _set_state(self, a: dict[str, np.ndarray]) -> None:
        n = self.n_items
        self.similarity = sp.csr_matrix((a["sim_data"], a["sim_indices"], a["sim_indptr"]),
                                        shape=(n, n))
        self._x = sp.csr_matrix((a["x_data"], a["x_indices"], a["x_indptr"]),
                                shape=(self.n_users, n))
