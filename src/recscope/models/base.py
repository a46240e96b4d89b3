"""The component protocol: every recommender part (retriever, ranker, re-ranker) obeys it.

Every part is a :class:`Stage`: a registered name, a pydantic config (``Config``, unknown
keys are errors), ``fit(train) -> self``, a ``version`` (hash of the name, the config and
the training data's fingerprint, so an experiment can say exactly what changed), and
``save(path)``/``load(path)`` to a directory with ``config.json``, ``meta.json`` and
``arrays.npz`` (no pickles; composite parts save their children in sub-directories).

A :class:`Component` (retriever or ranker) adds ``score(users, items) -> scores`` for
given candidates and ``recommend(users, k, exclude=...) -> RankedLists`` over the full
catalogue with seen items removed. Re-rankers and bandits (``recscope.models.rerank``,
``recscope.models.bandits``) are stages that reorder a ``RankedLists``.

Cold start: users whose index is outside the range seen in training (or who had no
training interactions) get the training popularity ranking; items never seen in training
score ``-inf`` unless the component declares ``scores_cold_items = True`` (it can score
them from features).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field, ValidationError

from recscope.config import StrictModel, config_error
from recscope.data.interactions import Interactions
from recscope.data.rankings import RankedLists
from recscope.errors import ConfigError, RecscopeError
from recscope.io import atomic_dir, write_json
from recscope.models.callbacks import EpochCallback as EpochCallback  # re-exported

REGISTRY: dict[str, type[Stage]] = {}

#: Modules whose import registers the built-in components (loaded on first lookup).
BUILTIN_MODULES: tuple[str, ...] = (
    "recscope.models.popularity", "recscope.models.random", "recscope.models.knn",
    "recscope.models.ease", "recscope.models.mf", "recscope.models.ann",
    "recscope.models.union", "recscope.models.ranker", "recscope.models.rerank",
    "recscope.models.bandits",
)
#: Optional packages that register more components when present. Components defined in
#: higher layers (the pipeline) register themselves when imported; a saved one records
#: its module in ``meta.json`` so that :meth:`Stage.load` can import it.
OPTIONAL_MODULES: tuple[str, ...] = ("recscope.models.neural",)


def register(name: str):
    """Class decorator adding a stage to the registry under ``name`` (used by configs)."""

    def deco(cls: type[Stage]) -> type[Stage]:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise RuntimeError(f"component name {name!r} registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return deco


def load_builtin() -> None:
    """Import every built-in component module so the registry is complete."""
    for mod in (*BUILTIN_MODULES, *OPTIONAL_MODULES):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def get_component(name: str, *, file: str | None = None, key: str | None = None
                  ) -> type[Stage]:
    """The registered stage class called ``name``; the error lists the known names."""
    if name not in REGISTRY:
        load_builtin()
    if name not in REGISTRY:
        raise ConfigError(f"unknown component {name!r}; known: {sorted(REGISTRY)}",
                          key=key or name, file=file)
    return REGISTRY[name]


class ComponentConfig(StrictModel):
    """Base config: unknown keys are errors, no coercion across types; every random
    choice derives from ``seed``."""

    seed: int = 0


class NotFittedError(RecscopeError):
    """The component was used before ``fit``."""


def build_config(cls: type[Stage], params: dict[str, Any] | BaseModel | None, *,
                 file: str | None = None, prefix: str = "") -> ComponentConfig:
    """Validate ``params`` against ``cls.Config``; errors name the key (and the file)."""
    try:
        if params is None:
            return cls.Config()
        if isinstance(params, BaseModel):
            return cls.Config(**params.model_dump())
        return cls.Config(**params)
    except ValidationError as exc:
        err = config_error(exc, file=file, prefix=prefix.rstrip("."))
        raise ConfigError(f"{cls.name}: {err.problem}", key=err.key, file=file) from None


class ComponentSpec(StrictModel):
    """A child component inside a config: ``{component = "ease", params = {l2 = 500}}``."""

    component: str
    params: dict[str, Any] = Field(default_factory=dict)

    def build(self, *, file: str | None = None, key: str = "") -> Any:
        """Instantiate (validating ``params``; errors name ``key.params.<param>``)."""
        cls = get_component(self.component, file=file, key=f"{key}.component" if key else None)
        prefix = f"{key}.params." if key else "params."
        return cls(build_config(cls, self.params, file=file, prefix=prefix))


class Stage(ABC):
    """Anything with a config, ``fit``, a version and a saved form (see module docstring)."""

    name: ClassVar[str] = "stage"
    #: "retriever", "ranker", "reranker" or "bandit" (used by pipelines and docs).
    kind: ClassVar[str] = "retriever"
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    #: Small, fast parameters for the shared conformance suite (tests/models).
    test_params: ClassVar[dict[str, Any] | None] = None

    def __init__(self, config: ComponentConfig | dict[str, Any] | None = None,
                 **overrides: Any) -> None:
        if isinstance(config, ComponentConfig) and not overrides:
            if not isinstance(config, self.Config):
                config = build_config(type(self), config.model_dump())
        else:
            base = config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
            config = build_config(type(self), {**base, **overrides})
        self.config: ComponentConfig = config
        self.n_users = 0
        self.n_items = 0
        self.data_fingerprint: str | None = None

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def fit(self, train: Interactions) -> Self:
        """Learn from ``train``."""

    @property
    @abstractmethod
    def fitted(self) -> bool:
        """Whether ``fit`` (or ``load``) has run."""

    def _state(self) -> dict[str, np.ndarray]:
        """Fitted arrays to save (beyond the base class's own)."""
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`_state` returned."""

    def _save_extra(self, directory: Path) -> None:  # noqa: B027 - optional hook
        """Write anything that is not an array (children, model text) into ``directory``."""

    def _load_extra(self, directory: Path) -> None:  # noqa: B027 - optional hook
        """Read what :meth:`_save_extra` wrote."""

    def _base_state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_base_state(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 - optional hook
        """Restore the base class's arrays."""

    # ------------------------------------------------------------------ identity
    @property
    def version(self) -> str:
        """Hash of the component name, its config and its training data fingerprint."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update(self.config.model_dump_json().encode())
        h.update((self.data_fingerprint or "unfitted").encode())
        return h.hexdigest()[:12]

    def _remember(self, train: Interactions) -> None:
        self.n_users, self.n_items = train.n_users, train.n_items
        self.data_fingerprint = train.fingerprint()

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"{self.name} is not fitted: call fit(train) first")

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``config.json``, ``meta.json`` and ``arrays.npz`` atomically."""
        self._check_fitted()
        arrays = {f"state.{k}": v for k, v in self._state().items()}
        arrays.update({f"base.{k}": v for k, v in self._base_state().items()})
        with atomic_dir(path) as tmp:
            write_json(tmp / "config.json", self.config.model_dump(mode="json"))
            write_json(tmp / "meta.json", {"format": "recscope.component/1",
                                           "component": self.name, "kind": self.kind,
                                           "module": type(self).__module__,
                                           "version": self.version,
                                           "n_users": self.n_users, "n_items": self.n_items,
                                           "data_fingerprint": self.data_fingerprint})
            np.savez(tmp / "arrays.npz", **arrays)
            self._save_extra(tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Load a saved stage (the class is read from ``meta.json``)."""
        p = Path(path)
        try:
            meta = json.loads((p / "meta.json").read_text())
            config = json.loads((p / "config.json").read_text())
        except FileNotFoundError as exc:
            raise RecscopeError(f"{p} is not a saved component: {exc.filename} missing") from None
        module = meta.get("module")
        if meta["component"] not in REGISTRY and isinstance(module, str) and \
                module.startswith("recscope."):
            importlib.import_module(module)  # a component defined in a higher layer
        klass = get_component(meta["component"], file=str(p / "meta.json"))
        if cls not in (Stage, Component) and not issubclass(klass, cls):
            raise RecscopeError(f"{p} holds a {meta['component']}, not a {cls.name}")
        obj = klass(build_config(klass, config, file=str(p / "config.json")))
        obj.n_users, obj.n_items = int(meta["n_users"]), int(meta["n_items"])
        obj.data_fingerprint = meta["data_fingerprint"]
        with np.load(p / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        obj._set_base_state({k.removeprefix("base."): v for k, v in arrays.items()
                             if k.startswith("base.")})
        obj._set_state({k.removeprefix("state."): v for k, v in arrays.items()
                        if k.startswith("state.")})
        obj._load_extra(p)
        return obj


class Component(Stage):
    """Base class of retrievers and rankers (see the module docstring for the contract)."""

    name: ClassVar[str] = "component"
    kind: ClassVar[str] = "retriever"
    #: True when the component scores items without training interactions (from features).
    scores_cold_items: ClassVar[bool] = False

    def __init__(self, config: ComponentConfig | dict[str, Any] | None = None,
                 **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._seen: sp.csr_matrix | None = None
        self._popularity: np.ndarray | None = None

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def _fit(self, train: Interactions) -> None:
        """Learn from ``train`` (vocabulary-sized: n_users × n_items)."""

    @abstractmethod
    def _score_all(self, users: np.ndarray) -> np.ndarray:
        """Scores [len(users), n_items] for known users (float32; -inf = never recommend)."""

    # ------------------------------------------------------------------ protocol
    def fit(self, train: Interactions) -> Self:
        """Fit on ``train``; remembers seen items for exclusion and popularity for cold start."""
        self._remember(train)
        self._seen = train.to_csr("binary")
        self._popularity = np.bincount(train.item_index, minlength=train.n_items).astype(
            np.float32)
        self._fit(train)
        return self

    @property
    def fitted(self) -> bool:
        return self._seen is not None

    @property
    def seen(self) -> sp.csr_matrix:
        """The user × item matrix of training interactions (binary)."""
        self._check_fitted()
        assert self._seen is not None
        return self._seen

    @property
    def popularity(self) -> np.ndarray:
        """Training interaction count of every item."""
        self._check_fitted()
        assert self._popularity is not None
        return self._popularity

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of candidate ``items`` [n, m] (−1 pads) for ``users`` [n]; pads and items
        outside the training vocabulary get -inf."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int32)
        items = np.asarray(items, dtype=np.int32)
        if items.ndim != 2 or items.shape[0] != users.shape[0]:
            raise ValueError(f"items must be [len(users), m], got {items.shape}")
        valid = (items >= 0) & (items < self.n_items)
        out = self._score_items(users, np.where(valid, items, 0))
        out[~valid] = -np.inf
        return out.astype(np.float32)

    def _score_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of valid candidate items [n, m]; override when cheaper than all items."""
        return np.take_along_axis(self._scores(users), items, axis=1)

    def _exclusion_mask(self, exclude: sp.csr_matrix | str | None) -> sp.csr_matrix | None:
        """The CSR matrix of items to remove for ``exclude`` ("train", a CSR matrix, None)."""
        if isinstance(exclude, str) and exclude != "train":
            raise ValueError(f"exclude must be 'train', a CSR matrix or None, not {exclude!r}")
        return self._seen if isinstance(exclude, str) else exclude

    def recommend(self, users: np.ndarray, k: int, *, exclude: sp.csr_matrix | str | None = "train",
                  batch_size: int = 2048) -> RankedLists:
        """Top-``k`` over the catalogue; ``exclude="train"`` removes items seen in training,
        a CSR matrix removes its non-zeros, ``None`` removes nothing."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int32)
        mask = self._exclusion_mask(exclude)
        items = np.full((len(users), k), -1, dtype=np.int32)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        for start in range(0, len(users), batch_size):
            batch = users[start:start + batch_size]
            s = self._scores(batch)
            if mask is not None:
                apply_exclusion(s, batch, mask)
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
    def _base_state(self) -> dict[str, np.ndarray]:
        assert self._seen is not None and self._popularity is not None
        return {"seen_indptr": self._seen.indptr, "seen_indices": self._seen.indices,
                "popularity": self._popularity}

    def _set_base_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._seen = sp.csr_matrix(
            (np.ones(len(arrays["seen_indices"]), dtype=np.float32), arrays["seen_indices"],
             arrays["seen_indptr"]), shape=(self.n_users, self.n_items))
        self._popularity = arrays["popularity"]

    # ------------------------------------------------------------------ helpers
    def cold_users(self, users: np.ndarray) -> np.ndarray:
        """True for users outside the training vocabulary or without training interactions."""
        assert self._seen is not None
        users = np.asarray(users)
        known = (users >= 0) & (users < self.n_users)
        cold = ~known
        cold[known] |= np.diff(self._seen.indptr)[users[known]] == 0
        return cold

    def _scores(self, users: np.ndarray) -> np.ndarray:
        """Full scores with the cold-start fallbacks (popular items for cold users,
        -inf for items without training interactions)."""
        assert self._seen is not None and self._popularity is not None
        cold = self.cold_users(users)
        out = np.empty((len(users), self.n_items), dtype=np.float32)
        if (~cold).any():
            out[~cold] = self._score_all(users[~cold])
        if cold.any():
            out[cold] = self._popularity[None, :]
        if not self.scores_cold_items:
            out[:, self._popularity == 0] = -np.inf
        return out


def apply_exclusion(scores: np.ndarray, users: np.ndarray, mask: sp.csr_matrix) -> None:
    """Set ``scores[i, j] = -inf`` where ``mask[users[i], j]`` is non-zero (in place);
    users outside the mask's rows exclude nothing."""
    users = np.asarray(users)
    known = (users >= 0) & (users < mask.shape[0])
    sub = mask[users[known]]
    rows = np.repeat(np.flatnonzero(known), np.diff(sub.indptr))
    cols = sub.indices
    keep = cols < scores.shape[1]
    scores[rows[keep], cols[keep]] = -np.inf


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest scores per row, best first.

    Ties are broken by the lower item index; ``-inf`` entries are never returned (-1 pads).
    """
    n, m = scores.shape
    kk = min(k, m)
    if 0 < kk < m:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        # argpartition picks arbitrarily among ties at the boundary; redo those rows
        # exactly so the lowest indices win (ties at -inf do not matter: they are pads).
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        chosen = (np.take_along_axis(scores, part, axis=1) == kth[:, None]).sum(axis=1)
        tied = np.flatnonzero(np.isfinite(kth)
                              & ((scores == kth[:, None]).sum(axis=1) > chosen))
        for r in tied:
            above = np.flatnonzero(scores[r] > kth[r])
            equal = np.flatnonzero(scores[r] == kth[r])[: kk - len(above)]
            part[r] = np.concatenate([above, equal])
    else:
        part = np.broadcast_to(np.arange(m), (n, m)).copy()
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1) if n else part
    idx = np.take_along_axis(part, order, axis=1)[:, :kk].astype(np.int32)
    val = np.take_along_axis(vals, order, axis=1)[:, :kk].astype(np.float32)
    idx[~np.isfinite(val) & (val < 0)] = -1
    if kk < k:
        idx = np.pad(idx, ((0, 0), (0, k - kk)), constant_values=-1)
        val = np.pad(val, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return idx, val
