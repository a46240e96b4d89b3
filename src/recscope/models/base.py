"""The component protocol: every recommender part (retriever, ranker, re-ranker) obeys it.

A component has a pydantic config (``Config``), ``fit(train) -> self``,
``score(users, items) -> scores`` for given candidates, and
``recommend(users, k, exclude=...) -> RankedLists`` over the full catalogue with seen
items removed. ``save(path)``/``load(path)`` write a directory with ``config.json``,
``meta.json`` and ``arrays.npz`` (no pickles). ``version`` hashes the config and the
training data's fingerprint, so an experiment can say exactly what changed.

Cold start: users whose index is outside the range seen in training (or who had no
training interactions) get the training popularity ranking; items never seen in training
score ``-inf`` unless the component can score them from features.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, ValidationError

from recscope.data.interactions import Interactions
from recscope.data.rankings import RankedLists
from recscope.errors import ConfigError, RecscopeError
from recscope.io import atomic_dir, write_json

REGISTRY: dict[str, type[Component]] = {}


def register(name: str):  # noqa: ANN201 - decorator
    """Class decorator adding a component to the registry under ``name`` (used by configs)."""

    def deco(cls: type[Component]) -> type[Component]:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise RuntimeError(f"component name {name!r} registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return deco


def get_component(name: str, *, file: str | None = None) -> type[Component]:
    """The registered component class called ``name``; the error lists the known names."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown component {name!r}; known: {sorted(REGISTRY)}", key=name,
                          file=file)
    return REGISTRY[name]


class ComponentConfig(BaseModel):
    """Base config: unknown keys are errors; every random choice derives from ``seed``."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0


class NotFittedError(RecscopeError):
    """The component was used before ``fit``."""


class Component(ABC):
    """Base class of all components (see the module docstring for the contract)."""

    name: ClassVar[str] = "component"
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    def __init__(self, config: ComponentConfig | dict[str, Any] | None = None,
                 **overrides: Any) -> None:
        try:
            if config is None:
                config = self.Config(**overrides)
            elif isinstance(config, dict):
                config = self.Config(**{**config, **overrides})
            elif overrides:
                config = self.Config(**{**config.model_dump(), **overrides})
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{self.name}: {err['msg']}", key=key) from None
        self.config: ComponentConfig = config
        self.n_users = 0
        self.n_items = 0
        self.data_fingerprint: str | None = None
        self._seen: sp.csr_matrix | None = None
        self._popularity: np.ndarray | None = None

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def _fit(self, train: Interactions) -> None:
        """Learn from ``train`` (vocabulary-sized: n_users × n_items)."""

    @abstractmethod
    def _score_all(self, users: np.ndarray) -> np.ndarray:
        """Scores [len(users), n_items] for known users (float32; -inf = never recommend)."""

    def _state(self) -> dict[str, np.ndarray]:
        """Fitted arrays to save (beyond the base class's own)."""
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_state` returned."""

    # ------------------------------------------------------------------ protocol
    def fit(self, train: Interactions) -> Self:
        """Fit on ``train``; remembers seen items for exclusion and popularity for cold start."""
        self.n_users, self.n_items = train.n_users, train.n_items
        self.data_fingerprint = train.fingerprint()
        self._seen = train.to_csr("binary")
        self._popularity = np.bincount(train.item_index, minlength=train.n_items).astype(
            np.float32)
        self._fit(train)
        return self

    @property
    def fitted(self) -> bool:
        return self._seen is not None

    @property
    def version(self) -> str:
        """Hash of the component name, its config and its training data fingerprint."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update(self.config.model_dump_json().encode())
        h.update((self.data_fingerprint or "unfitted").encode())
        return h.hexdigest()[:12]

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of candidate ``items`` [n, m] (−1 pads) for ``users`` [n]; pads get -inf."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int32)
        items = np.asarray(items, dtype=np.int32)
        if items.ndim != 2 or items.shape[0] != users.shape[0]:
            raise ValueError(f"items must be [len(users), m], got {items.shape}")
        full = self._scores(users)
        safe = np.where(items >= 0, items, 0)
        out = np.take_along_axis(full, safe, axis=1)
        out[items < 0] = -np.inf
        return out.astype(np.float32)

    def recommend(self, users: np.ndarray, k: int, *, exclude: sp.csr_matrix | None | str = "train",
                  batch_size: int = 2048) -> RankedLists:
        """Top-``k`` over the catalogue; ``exclude="train"`` removes items seen in training,
        a CSR matrix removes its non-zeros, ``None`` removes nothing."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int32)
        mask = self._seen if isinstance(exclude, str) and exclude == "train" else exclude
        if isinstance(exclude, str) and exclude != "train":
            raise ValueError(f"exclude must be 'train', a CSR matrix or None, not {exclude!r}")
        items = np.full((len(users), k), -1, dtype=np.int32)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        for start in range(0, len(users), batch_size):
            batch = users[start:start + batch_size]
            s = self._scores(batch)
            if mask is not None:
                known = batch < mask.shape[0]
                sub = mask[batch[known]]
                rows = np.repeat(np.flatnonzero(known), np.diff(sub.indptr))
                s[rows, sub.indices] = -np.inf
            it, sc = top_k(s, k)
            items[start:start + len(batch)] = it
            scores[start:start + len(batch)] = sc
        return RankedLists(users, items, scores)

    def item_embeddings(self) -> np.ndarray | None:
        """Item vectors [n_items, d] where the model has them (None otherwise)."""
        return None

    def user_embeddings(self) -> np.ndarray | None:
        """User vectors [n_users, d] where the model has them (None otherwise)."""
        return None

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``config.json``, ``meta.json`` and ``arrays.npz`` atomically."""
        self._check_fitted()
        arrays = {f"state.{k}": v for k, v in self._state().items()}
        assert self._seen is not None and self._popularity is not None
        arrays.update({"base.seen_indptr": self._seen.indptr, "base.seen_indices":
                       self._seen.indices, "base.popularity": self._popularity})
        with atomic_dir(path) as tmp:
            write_json(tmp / "config.json", self.config.model_dump(mode="json"))
            write_json(tmp / "meta.json", {"format": "recscope.component/1",
                                           "component": self.name, "version": self.version,
                                           "n_users": self.n_users, "n_items": self.n_items,
                                           "data_fingerprint": self.data_fingerprint})
            np.savez(tmp / "arrays.npz", **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Component:
        """Load a saved component (the class is read from ``meta.json``)."""
        p = Path(path)
        try:
            meta = json.loads((p / "meta.json").read_text())
            config = json.loads((p / "config.json").read_text())
        except FileNotFoundError as exc:
            raise RecscopeError(f"{p} is not a saved component: {exc.filename} missing") from None
        klass = get_component(meta["component"], file=str(p / "meta.json"))
        if cls is not Component and not issubclass(klass, cls):
            raise RecscopeError(f"{p} holds a {meta['component']}, not a {cls.name}")
        obj = klass(config)
        obj.n_users, obj.n_items = int(meta["n_users"]), int(meta["n_items"])
        obj.data_fingerprint = meta["data_fingerprint"]
        with np.load(p / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        obj._seen = sp.csr_matrix(
            (np.ones(len(arrays["base.seen_indices"]), dtype=np.float32),
             arrays["base.seen_indices"], arrays["base.seen_indptr"]),
            shape=(obj.n_users, obj.n_items))
        obj._popularity = arrays["base.popularity"]
        obj._set_state({k.removeprefix("state."): v for k, v in arrays.items()
                        if k.startswith("state.")})
        return obj

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"{self.name} is not fitted: call fit(train) first")

    def _scores(self, users: np.ndarray) -> np.ndarray:
        """Full scores with the cold-start fallback for unknown or inactive users."""
        assert self._seen is not None and self._popularity is not None
        known = (users >= 0) & (users < self.n_users)
        cold = ~known
        cold[known] |= np.diff(self._seen.indptr)[users[known]] == 0
        out = np.empty((len(users), self.n_items), dtype=np.float32)
        if (~cold).any():
            out[~cold] = self._score_all(users[~cold])
        if cold.any():
            out[cold] = self._popularity[None, :]
        return out


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest scores per row, best first.

    Ties are broken by the lower item index; ``-inf`` entries are never returned (-1 pads).
    """
    n, m = scores.shape
    kk = min(k, m)
    if kk < m:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(m), (n, m)).copy()
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1) if n else part
    idx = np.take_along_axis(part, order, axis=1).astype(np.int32)
    val = np.take_along_axis(vals, order, axis=1).astype(np.float32)
    idx[~np.isfinite(val)] = -1
    if kk < k:
        idx = np.pad(idx, ((0, 0), (0, k - kk)), constant_values=-1)
        val = np.pad(val, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return idx, val
