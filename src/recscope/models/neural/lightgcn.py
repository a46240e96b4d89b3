"""LightGCN (He et al., SIGIR 2020): embeddings smoothed over the user-item graph.

Layer k+1 is the symmetrically normalised bipartite adjacency D^-1/2 A D^-1/2 times
layer k (sparse propagation in torch, no weights, no non-linearity); a node's final
vector is the mean of layers 0..K. Trained with BPR on (user, positive, sampled
negative) triples plus L2 on the batch's layer-0 vectors. Final vectors are exported as
user/item embeddings, so the model serves as an embedding retriever (ANN index).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field

from recscope.data.interactions import Interactions
from recscope.models.base import register
from recscope.models.neural.sampling import sample_negatives
from recscope.models.neural.training import NeuralComponent, NeuralConfig


class LightGCNConfig(NeuralConfig):
    """LightGCN hyper-parameters (defaults as in the paper's public code)."""

    dim: int = Field(64, ge=1)
    layers: int = Field(3, ge=0)
    reg: float = Field(1e-4, ge=0, description="L2 on the batch's layer-0 embeddings")
    init_std: float = Field(0.1, gt=0)
    lr: float = Field(5e-3, gt=0)
    batch_size: int = Field(2048, ge=1)
    epochs: int = Field(200, ge=1)
    patience: int = Field(5, ge=1)
    eval_every: int = Field(5, ge=1)


class _SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a symmetric sparse ``adj``: the gradient is ``adj @ grad`` (no
    transpose, which torch's generic sparse backward rebuilds at every step)."""

    @staticmethod
    def forward(ctx: Any, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adj @ grad


class _LightGCNNet(torch.nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, init_std: float) -> None:
        super().__init__()
        self.user = torch.nn.Embedding(n_users, dim)
        self.item = torch.nn.Embedding(n_items, dim)
        torch.nn.init.normal_(self.user.weight, std=init_std)
        torch.nn.init.normal_(self.item.weight, std=init_std)

    def propagate(self, adj: torch.Tensor, layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        ego = torch.cat([self.user.weight, self.item.weight], dim=0)
        acc, x = ego, ego
        for _ in range(layers):
            x = _SymmetricSpMM.apply(adj, x)
            acc = acc + x
        out = acc / (layers + 1)
        n_users = self.user.num_embeddings
        return out[:n_users], out[n_users:]


def normalized_adjacency(seen: sp.csr_matrix) -> sp.csr_matrix:
    """D^-1/2 A D^-1/2 of the bipartite graph [[0, R], [R^T, 0]] (isolated nodes stay 0)."""
    r = sp.csr_matrix(seen, dtype=np.float32)
    r.data[:] = 1.0
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    d = sp.diags(inv)
    out = sp.csr_matrix(d @ a @ d, dtype=np.float32)
    out.sort_indices()
    return out


@register("lightgcn")
class LightGCN(NeuralComponent):
    """LightGCN retriever trained with BPR (see the module docstring)."""

    Config = LightGCNConfig
    #: small, fast parameters for the shared conformance suite (tests/models)
    test_params: ClassVar[dict[str, Any]] = {"dim": 8, "layers": 2, "epochs": 3, "batch_size": 256, "eval_every": 1, "progress": False}

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._adj: torch.Tensor | None = None
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None
        self._keys: np.ndarray | None = None
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        self._item_known: np.ndarray | None = None

    # ------------------------------------------------------------------ training hooks
    def _make_net(self) -> torch.nn.Module:
        return _LightGCNNet(self.n_users, self.n_items, self.cfg.dim, self.cfg.init_std)

    def _setup(self, train: Interactions) -> None:
        seen = train.to_csr("binary")
        coo = seen.tocoo()
        self._pairs = (coo.row.astype(np.int64), coo.col.astype(np.int64))
        self._keys = np.sort(self._pairs[0] * self.n_items + self._pairs[1])
        self._set_graph(seen)
        self.net = self._make_net().to(self.device)

    def _set_graph(self, seen: sp.csr_matrix) -> None:
        adj = normalized_adjacency(seen)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self._adj = torch.sparse_csr_tensor(
                torch.from_numpy(adj.indptr.astype(np.int64)),
                torch.from_numpy(adj.indices.astype(np.int64)), torch.from_numpy(adj.data),
                size=adj.shape).to(self.device)
        self._item_known = np.asarray(seen.sum(axis=0)).ravel() > 0

    def _n_batches(self) -> int:
        assert self._pairs is not None
        return max(1, -(-len(self._pairs[0]) // self.cfg.batch_size))

    def _epoch_batches(self, rng: np.random.Generator) -> Iterator[Any]:
        assert self._pairs is not None and self._keys is not None
        users, pos = self._pairs
        order = rng.permutation(len(users))
        neg = sample_negatives(users[order], self._keys, self.n_items, rng)
        bs = self.cfg.batch_size
        for s in range(0, len(order), bs):
            sl = order[s:s + bs]
            yield (torch.from_numpy(users[sl]).to(self.device),
                   torch.from_numpy(pos[sl]).to(self.device),
                   torch.from_numpy(neg[s:s + bs]).to(self.device))

    def _loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        u, i, j = batch
        net = self._net()
        assert self._adj is not None
        users, items = net.propagate(self._adj, self.cfg.layers)  # type: ignore[operator]
        eu, ei, ej = users[u], items[i], items[j]
        bpr = F.softplus(-((eu * ei).sum(1) - (eu * ej).sum(1))).mean()
        ego = (net.user.weight[u].pow(2).sum() + net.item.weight[i].pow(2).sum()  # type: ignore[union-attr,index]
               + net.item.weight[j].pow(2).sum()) / (2 * len(u))  # type: ignore[union-attr,index]
        return bpr + self.cfg.reg * ego, len(u)

    def _finalize(self, train: Interactions) -> None:
        # serve over the whole training graph (validation edges included), as after load
        self._pairs, self._keys = None, None
        self._set_graph(train.to_csr("binary"))

    def _invalidate(self) -> None:
        self._cache = None

    # ------------------------------------------------------------------ scoring
    def _embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        if self._cache is None:
            if self._adj is None:
                assert self._seen is not None
                self._set_graph(self._seen)
            net = self._net()
            with torch.no_grad():
                u, i = net.propagate(self._adj, self.cfg.layers)  # type: ignore[operator]
            self._cache = (u.cpu().numpy(), i.cpu().numpy())
        return self._cache

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        u, i = self._embeddings()
        s = (u[users] @ i.T).astype(np.float32)
        assert self._item_known is not None
        s[:, ~self._item_known] = -np.inf
        return s

    def user_embeddings(self) -> np.ndarray:
        return self._embeddings()[0]

    def item_embeddings(self) -> np.ndarray:
        return self._embeddings()[1]

    def _set_extra_state(self, arrays: dict[str, np.ndarray]) -> None:
        # the graph is rebuilt from the saved training matrix on first use
        self._adj = None
        self._cache = None
