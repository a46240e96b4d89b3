"""Models a service serves: loading by URI, id vocabularies, cached rankings, exploration.

A model URI is a directory written by ``recscope train`` (``pipeline/``, ``users.parquet``,
``items.parquet``) or by ``Component.save`` (a bare component: ids are the model's dense
indices). Other schemes (``models:/NAME@alias`` of a model registry) plug in with
:func:`register_resolver`, which maps a URI to a local directory.

Rankings: a :class:`ServedModel` answers ``rank(user_ids, k)`` with external item ids and
scores. Deterministic models with a vocabulary small enough (``cache="auto"``: at most
:data:`CACHE_LIMIT` list entries) precompute every known user's top-``max_k`` list and the
cold-start list once, at load, so a request is a lookup; otherwise each batch of requests
runs the model. Both give the same lists: the cache is ``model.recommend(users, max_k)``
and a request for ``k <= max_k`` is its prefix.

Cold start: users unknown to the model's vocabulary are ranked as the model ranks users
outside its training range (for recscope components: the training popularity ranking,
seen-item exclusion off), and flagged ``cold_start`` in the response and the log.

Exploration (ε-greedy slates): with probability ε a slate is ``k`` items drawn uniformly
without replacement from the top-``pool``, in random order; otherwise the greedy top-``k``.
The probability that item ``i`` lands at position ``p`` is then exactly
``(1 − ε)·[greedy_p = i] + ε/pool`` for items of the pool, which the log records as the
propensity (the marginal an IPS estimator needs).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recscope.errors import ConfigError

#: Largest users × max_k a model's ranking cache may hold under ``cache="auto"``.
CACHE_LIMIT = 20_000_000

_RESOLVERS: dict[str, Callable[[str], Path]] = {}


def register_resolver(scheme: str, resolve: Callable[[str], Path]) -> None:
    """Make ``scheme:...`` URIs loadable: ``resolve(uri)`` returns a model directory.

    The model registry registers ``models`` so ``recscope serve --model models:/NAME@alias``
    serves the version behind an alias; a reload resolves the alias again.
    """
    _RESOLVERS[scheme] = resolve


def resolve_uri(uri: str) -> Path:
    """The local directory behind a model URI (a plain path is its own directory)."""
    if ":" in uri and not Path(uri).exists():
        scheme = uri.split(":", 1)[0]
        if len(scheme) > 1:  # not a Windows drive letter
            if scheme not in _RESOLVERS:
                known = ", ".join(sorted(_RESOLVERS)) or "none registered"
                raise ConfigError(f"no resolver for model URI scheme {scheme!r} "
                                  f"(known: {known})", key="model")
            return Path(_RESOLVERS[scheme](uri))
    return Path(uri)


@dataclass
class ServedModel:
    """A loaded model with its vocabularies and (optionally) its precomputed rankings."""

    uri: str
    path: Path
    model: Any
    user_ids: list[str] | None
    item_ids: list[Any]
    version: str
    max_k: int
    loaded_at: float = field(default_factory=time.time)
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    _cache_items: np.ndarray | None = field(default=None, repr=False)
    _cache_scores: np.ndarray | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids) if self.user_ids is not None else int(self.model.n_users)

    @property
    def cached(self) -> bool:
        return self._cache_items is not None

    def user_index(self, user_id: object) -> int:
        """Dense index of an external user id; ``n_users`` (cold start) when unknown."""
        key = str(user_id)
        if self.user_ids is None:
            try:
                i = int(key)
            except ValueError:
                return self.n_users
            return i if 0 <= i < self.n_users else self.n_users
        return self._index.get(key, self.n_users)

    def build_cache(self, batch_size: int = 1024, pause: float = 0.0) -> None:
        """Precompute every known user's top-``max_k`` and the cold-start list.

        ``pause`` seconds between batches let a serving thread run while a reload builds
        the new model's cache (a model call may hold the GIL for its whole batch)."""
        n = self.n_users
        items = np.empty((n + 1, self.max_k), dtype=np.int32)
        scores = np.empty((n + 1, self.max_k), dtype=np.float32)
        users = np.arange(n + 1, dtype=np.int32)
        for lo in range(0, n + 1, batch_size):
            it, sc = self._recommend(users[lo:lo + batch_size], self.max_k)
            items[lo:lo + len(it)] = it
            scores[lo:lo + len(it)] = sc
            if pause > 0:
                time.sleep(pause)
        self._cache_items, self._cache_scores = items, scores

    def _recommend(self, users: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        known = users < self.n_users
        items = np.full((len(users), k), -1, dtype=np.int32)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        with self._lock:  # components are not documented as thread-safe
            if known.any():
                rl = self.model.recommend(users[known], k)
                items[known], scores[known] = rl.items[:, :k], rl.scores[:, :k]
            if (~known).any():
                rl = self.model.recommend(np.full(int((~known).sum()), self.n_users, np.int32),
                                          k, exclude=None)
                items[~known], scores[~known] = rl.items[:, :k], rl.scores[:, :k]
        return items, scores

    def rank(self, users: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices (−1 pads) and scores of dense user indices."""
        if self._cache_items is not None and self._cache_scores is not None:
            rows = np.minimum(users, self.n_users)
            return self._cache_items[rows, :k], self._cache_scores[rows, :k]
        return self._recommend(np.asarray(users, dtype=np.int32), k)


def load_model(uri: str, *, max_k: int = 100, cache: str = "auto",
               background: bool = False) -> ServedModel:
    """Load a model directory (or registry URI) for serving; ``cache`` is ``auto``,
    ``on`` or ``off`` (see the module docstring). ``background``: the service is serving
    meanwhile (a reload), so the cache is built in small batches with pauses. Raises
    ConfigError naming the path."""
    import recscope.pipeline  # noqa: F401 - registers the pipeline stage for Component.load
    from recscope.models.base import Component

    if cache not in ("auto", "on", "off"):
        raise ConfigError(f"cache must be auto, on or off, not {cache!r}", key="cache")
    path = resolve_uri(uri)
    if not path.is_dir():
        raise ConfigError("model directory not found", key="model", file=str(path))
    user_ids: list[str] | None = None
    if (path / "pipeline").is_dir():
        for name in ("users.parquet", "items.parquet"):
            if not (path / name).is_file():
                raise ConfigError(f"not a model directory: {name} missing", key="model",
                                  file=str(path))
        model_path = path / "pipeline"
        try:
            user_ids = [str(u) for u in pq.read_table(path / "users.parquet")
                        .column("user_id").to_pylist()]
            item_ids = pq.read_table(path / "items.parquet").column("item_id").to_pylist()
        except (OSError, KeyError) as exc:
            raise ConfigError(f"cannot read the id vocabularies: {exc}", key="model",
                              file=str(path)) from None
    elif (path / "meta.json").is_file():
        model_path = path
        item_ids = []
    else:
        raise ConfigError("not a model directory: expected pipeline/ (recscope train) or "
                          "meta.json (a saved component)", key="model", file=str(path))
    try:
        model = Component.load(model_path)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot load the model: {type(exc).__name__}: {exc}",
                          key="model", file=str(model_path)) from None
    if not hasattr(model, "recommend"):
        raise ConfigError("the saved stage cannot recommend (not a retriever, ranker or "
                          "pipeline)", key="model", file=str(model_path))
    if not item_ids:
        item_ids = list(range(int(model.n_items)))
    if user_ids is not None and len(user_ids) != int(model.n_users):
        raise ConfigError(f"users.parquet has {len(user_ids)} ids but the model "
                          f"{model.n_users} users", key="model", file=str(path))
    version = str(getattr(model, "version", "")) or hashlib.sha256(
        str(path).encode()).hexdigest()[:12]
    served = ServedModel(uri=uri, path=path, model=model, user_ids=user_ids,
                         item_ids=item_ids, version=version, max_k=max_k)
    if user_ids is not None:
        served._index = {u: i for i, u in enumerate(user_ids)}
    if cache == "on" or (cache == "auto" and (served.n_users + 1) * max_k <= CACHE_LIMIT):
        served.build_cache(*((16, 0.002) if background else ()))
    else:
        served.rank(np.array([0], dtype=np.int32), 1)  # fail at load, not on a request
    return served


def explore(items: np.ndarray, k: int, epsilon: float, pool: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """An ε-greedy slate from one ranked list ``items`` (best first, −1 pads).

    Returns the slate (length ≤ ``k``), each slot's marginal propensity and whether the
    slate explored. Propensities are exact (see the module docstring).
    """
    valid = items[items >= 0]
    m = min(pool, valid.size)
    greedy = valid[:k]
    kk = min(k, m) if m else 0
    if epsilon <= 0 or m == 0:
        return greedy, np.ones(greedy.size), False
    explored = bool(rng.random() < epsilon)
    slate = rng.choice(valid[:m], size=kk, replace=False) if explored else greedy[:kk]
    prop = np.full(kk, epsilon / m)
    prop += (1.0 - epsilon) * (slate == greedy[:kk])
    return slate, prop, explored
