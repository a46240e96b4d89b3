"""EASE (Steck 2019): a closed-form linear item-item autoencoder, strong on dense data."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from recscope.data.interactions import Interactions, Weights
from recscope.errors import ConfigError
from recscope.models.base import Component, ComponentConfig, register


class EASEConfig(ComponentConfig):
    """``l2``: ridge penalty λ on the item-item weights; ``max_items`` guards the dense
    n_items² inverse; ``device``: ``auto`` uses CUDA when present."""

    l2: float = Field(default=250.0, gt=0)
    weights: Weights = "binary"
    max_items: int = Field(default=40_000, ge=1)
    device: str = "auto"


@register("ease")
class EASE(Component):
    """B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹; score = x_u B."""

    Config = EASEConfig
    config: EASEConfig

    def __init__(self, config: EASEConfig | dict | None = None, **kw: object) -> None:
        super().__init__(config, **kw)
        self.weights: np.ndarray | None = None
        self._x = None

    def _fit(self, train: Interactions) -> None:
        import torch

        if self.n_items > self.config.max_items:
            raise ConfigError(f"EASE needs a dense {self.n_items}² matrix; raise max_items "
                              f"or use itemknn", key="max_items")
        dev = self.config.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        x = train.to_csr(self.config.weights)
        self._x = x
        g = (x.T @ x).toarray().astype(np.float64)
        g[np.diag_indices_from(g)] += self.config.l2
        p = torch.linalg.inv(torch.from_numpy(g).to(dev)).cpu().numpy()
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self.weights = b.astype(np.float32)

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        assert self._x is not None and self.weights is not None
        return np.asarray(self._x[users] @ self.weights, dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        assert self._x is not None and self.weights is not None
        return {"weights": self.weights, "x_data": self._x.data, "x_indices": self._x.indices,
                "x_indptr": self._x.indptr}

    def _set_state(self, a: dict[str, np.ndarray]) -> None:
        import scipy.sparse as sp

        self.weights = a["weights"]
        self._x = sp.csr_matrix((a["x_data"], a["x_indices"], a["x_indptr"]),
                                shape=(self.n_users, self.n_items))
