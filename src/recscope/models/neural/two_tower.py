"""Two-tower retrieval trained with in-batch sampled softmax and logQ correction.

User tower: a user id vector plus the sum of the id vectors of the user's training items,
divided by their number (during training the target item is left out of that mean, so the
tower cannot copy it). Item tower: an item id vector plus, with ``text=True``, an MLP of the
item's text embedding (:mod:`recscope.models.neural.text`). Both are L2-normalised; the
score is their dot product over a temperature.

Loss: for a batch of (user, item) rows, every other row's item is a negative. Items enter
batches in proportion to their popularity, so the logits are corrected by subtracting
log q(item) (Yi et al., RecSys 2019); in-batch duplicates of the positive are masked.

Cold start: items never seen in training have no trained id vector. With text they are
scored from text alone (``id_dropout`` trains the text path to stand on its own); without
text they score ``-inf`` (never recommended), as the component protocol specifies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field

from recscope.data.interactions import Interactions
from recscope.models.base import register
from recscope.models.neural.text import TextEncoder, item_texts
from recscope.models.neural.training import NeuralComponent, NeuralConfig


class TwoTowerConfig(NeuralConfig):
    """Two-tower hyper-parameters."""

    dim: int = Field(64, ge=1)
    temperature: float = Field(0.05, gt=0)
    logq: bool = Field(True, description="subtract log sampling probability from logits")
    user_history: bool = Field(True, description="add the mean of the user's item vectors")
    text: bool = Field(False, description="add an MLP of the item's text embedding")
    text_column: str = "text"
    text_encoder: Literal["auto", "sentence", "hashing"] = "auto"
    text_dim: int = Field(64, ge=1, description="hashing encoder's dimension")
    text_hidden: int = Field(128, ge=1)
    text_cache_dir: str | None = Field("default", description="embedding cache; None = off")
    id_dropout: float = Field(0.3, ge=0, lt=1, description="with text: share of training "
                              "items whose id vector is dropped, so text learns alone")
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(512, ge=1)
    epochs: int = Field(40, ge=1)
    patience: int = Field(3, ge=1)


class _TwoTowerNet(torch.nn.Module):
    def __init__(self, n_users: int, n_items: int, cfg: TwoTowerConfig,
                 text: torch.Tensor | None) -> None:
        super().__init__()
        self.user = torch.nn.Embedding(n_users, cfg.dim)
        self.item = torch.nn.Embedding(n_items, cfg.dim)
        torch.nn.init.normal_(self.user.weight, std=0.1)
        torch.nn.init.normal_(self.item.weight, std=0.1)
        self.text_mlp: torch.nn.Module | None = None
        if text is not None:
            self.register_buffer("text", text, persistent=False)
            self.text_mlp = torch.nn.Sequential(
                torch.nn.Linear(text.shape[1], cfg.text_hidden), torch.nn.ReLU(),
                torch.nn.Linear(cfg.text_hidden, cfg.dim))

    def items(self, idx: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Normalised item vectors; ``keep`` (0/1) switches the id part on or off."""
        v = self.item(idx) * keep[:, None]
        if self.text_mlp is not None:
            v = v + self.text_mlp(self.text[idx])
        return F.normalize(v, dim=1)

    def users(self, idx: torch.Tensor, hist: torch.Tensor | None) -> torch.Tensor:
        v = self.user(idx)
        if hist is not None:
            v = v + hist
        return F.normalize(v, dim=1)


@register("two_tower")
class TwoTower(NeuralComponent):
    """Two-tower retriever (see the module docstring)."""

    Config = TwoTowerConfig
    #: small, fast parameters for the shared conformance suite (tests/models)
    test_params: ClassVar[dict[str, Any]] = {"dim": 8, "epochs": 3, "batch_size": 128, "progress": False}

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        #: with text, items without training interactions are scored from their text
        self.scores_cold_items = bool(self.cfg.text)  # type: ignore[misc]
        self._text: np.ndarray | None = None
        self._known: np.ndarray | None = None  # items with a trained id vector
        self._hist: sp.csr_matrix | None = None
        self._rows: tuple[np.ndarray, np.ndarray] | None = None
        self._logq: torch.Tensor | None = None
        self._cache: np.ndarray | None = None

    # ------------------------------------------------------------------ training hooks
    def _make_net(self) -> torch.nn.Module:
        text = torch.from_numpy(self._text) if self._text is not None else None
        return _TwoTowerNet(self.n_users, self.n_items, self.cfg, text)

    def _setup(self, train: Interactions) -> None:
        cfg = self.cfg
        if cfg.text:  # re-encoded on every fit; the on-disk cache makes repeats free
            enc = TextEncoder(cfg.text_encoder, dim=cfg.text_dim, seed=cfg.seed,
                              cache_dir=cfg.text_cache_dir)
            self._text = enc.encode(item_texts(train.item_features, train.items,
                                               cfg.text_column))
        users, items = train.user_index.astype(np.int64), train.item_index.astype(np.int64)
        self._rows = (users, items)
        counts = np.bincount(items, minlength=self.n_items).astype(np.float64)
        self._known = counts > 0
        q = np.where(counts > 0, counts / max(1.0, counts.sum()), 1.0)
        self._logq = torch.from_numpy(np.log(q).astype(np.float32)).to(self.device)
        self._hist = train.to_csr("binary")
        self.net = self._make_net().to(self.device)

    def _n_batches(self) -> int:
        assert self._rows is not None
        return max(1, -(-len(self._rows[0]) // self.cfg.batch_size))

    def _epoch_batches(self, rng: np.random.Generator) -> Iterator[Any]:
        assert self._rows is not None
        users, items = self._rows
        order = rng.permutation(len(users))
        bs = self.cfg.batch_size
        drop = self.cfg.id_dropout if self.cfg.text else 0.0
        for s in range(0, len(order), bs):
            sl = order[s:s + bs]
            keep = (rng.random(len(sl)) >= drop).astype(np.float32)
            yield (users[sl], items[sl], keep)

    def _history(self, users: np.ndarray, exclude_items: np.ndarray | None
                 ) -> torch.Tensor | None:
        """Mean id vector of each user's training items (optionally minus one item)."""
        if not self.cfg.user_history:
            return None
        assert self._hist is not None
        net = self._net()
        starts, ends = self._hist.indptr[users], self._hist.indptr[users + 1]
        lengths = (ends - starts).astype(np.int64)
        total = int(lengths.sum())
        offsets = np.zeros(len(users), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        flat = np.repeat(starts - offsets, lengths) + np.arange(total)
        idx = torch.from_numpy(self._hist.indices[flat].astype(np.int64)).to(self.device)
        off = torch.from_numpy(offsets).to(self.device)
        summed = F.embedding_bag(idx, net.item.weight, off, mode="sum")  # type: ignore[union-attr,arg-type]
        n = torch.from_numpy(lengths.astype(np.float32)).to(self.device)
        if exclude_items is not None:
            summed = summed - net.item(torch.from_numpy(exclude_items).to(self.device))  # type: ignore[operator]
            n = n - 1
        return summed / n.clamp(min=1.0)[:, None]

    def _loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        users, items, keep = batch
        net: Any = self._net()
        dev = self.device
        u_t = torch.from_numpy(users).to(dev)
        i_t = torch.from_numpy(items).to(dev)
        uvec = net.users(u_t, self._history(users, items))
        ivec = net.items(i_t, torch.from_numpy(keep).to(dev))
        logits = uvec @ ivec.T / self.cfg.temperature
        if self.cfg.logq:
            assert self._logq is not None
            logits = logits - self._logq[i_t][None, :]
        same = i_t[:, None] == i_t[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        labels = torch.arange(len(users), device=dev)
        return F.cross_entropy(logits, labels), len(users)

    def _finalize(self, train: Interactions) -> None:
        self._hist = train.to_csr("binary")
        self._rows, self._logq = None, None

    def _invalidate(self) -> None:
        self._cache = None

    # ------------------------------------------------------------------ scoring
    def item_embeddings(self) -> np.ndarray:
        """Normalised item vectors (text only for items unseen in training)."""
        self._check_fitted()
        if self._cache is None:
            assert self._known is not None
            net: Any = self._net()
            with torch.no_grad():
                idx = torch.arange(self.n_items, device=self.device)
                keep = torch.from_numpy(self._known.astype(np.float32)).to(self.device)
                self._cache = net.items(idx, keep).cpu().numpy()
        return self._cache

    def user_embeddings(self) -> np.ndarray:
        self._check_fitted()
        return self._user_vectors(np.arange(self.n_users, dtype=np.int64))

    def _user_vectors(self, users: np.ndarray) -> np.ndarray:
        net: Any = self._net()
        users = np.asarray(users, dtype=np.int64)
        with torch.no_grad():
            v = net.users(torch.from_numpy(users).to(self.device), self._history(users, None))
        return v.cpu().numpy()

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        s = (self._user_vectors(users) @ self.item_embeddings().T).astype(np.float32)
        if self._text is None:
            assert self._known is not None
            s[:, ~self._known] = -np.inf
        return s

    def _extra_state(self) -> dict[str, np.ndarray]:
        assert self._known is not None
        out = {"known": self._known}
        if self._text is not None:
            out["text"] = self._text
        return out

    def _set_extra_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._known = arrays["known"].astype(bool)
        self._text = arrays.get("text")
        self._hist = self._seen
