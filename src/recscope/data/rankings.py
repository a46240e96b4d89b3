"""``RankedLists`` and ``Relevance``: the contract between recommenders and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from recscope.errors import DataValidationError


@dataclass
class RankedLists:
    """Top-k lists for a set of users, as dense index arrays.

    ``items[i]`` is user ``users[i]``'s list, best first; ``-1`` pads lists shorter than k.
    ``traces`` optionally maps a stage name (``"retrieval"``, ``"ranking"``, ...) to the
    candidates that survived that stage, as an int32 [n, m] array padded with -1, in
    pipeline order, so the stage funnel can tell where relevant items were lost.
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    traces: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.users = np.ascontiguousarray(self.users, dtype=np.int32)
        self.items = np.ascontiguousarray(self.items, dtype=np.int32)
        self.scores = np.ascontiguousarray(self.scores, dtype=np.float32)
        if self.items.ndim != 2 or self.items.shape != self.scores.shape:
            raise DataValidationError(
                f"items {self.items.shape} and scores {self.scores.shape} must be equal 2-D shapes",
                column="items")
        if self.users.shape != (self.items.shape[0],):
            raise DataValidationError(
                f"users has shape {self.users.shape}, expected ({self.items.shape[0]},)",
                column="users")
        for name, trace in self.traces.items():
            trace = np.ascontiguousarray(trace, dtype=np.int32)
            if trace.ndim != 2 or trace.shape[0] != self.items.shape[0]:
                raise DataValidationError(f"trace {name!r} must be [n_users, m]", column=name)
            self.traces[name] = trace

    @property
    def k(self) -> int:
        return int(self.items.shape[1])

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def lengths(self) -> np.ndarray:
        """Number of real (non-padding) items in each list."""
        return (self.items >= 0).sum(axis=1)

    def truncate(self, k: int) -> RankedLists:
        return RankedLists(self.users, self.items[:, :k], self.scores[:, :k],
                           dict(self.traces))

    def to_table(self, user_ids: pa.Array | None = None,
                 item_ids: pa.Array | None = None) -> pa.Table:
        """Long format (``user_id``, ``item_id``, ``rank`` 1-based, ``score``), no padding."""
        n, k = self.items.shape
        mask = self.items >= 0
        u = np.repeat(self.users, k).reshape(n, k)[mask]
        it = self.items[mask]
        rank = np.tile(np.arange(1, k + 1, dtype=np.int32), n).reshape(n, k)[mask]
        users = user_ids.take(pa.array(u)) if user_ids is not None else pa.array(u)
        items = item_ids.take(pa.array(it)) if item_ids is not None else pa.array(it)
        return pa.table({"user_id": users, "item_id": items, "rank": pa.array(rank),
                         "score": pa.array(self.scores[mask])})

    def save(self, path: str | Path) -> Path:
        """Write the long table (indices, not external ids) to Parquet."""
        from recscope.io import write_parquet

        return write_parquet(path, self.to_table())


@dataclass
class Relevance:
    """Relevance truth in CSR over user indices: user ``u``'s relevant items are
    ``indices[indptr[u]:indptr[u+1]]`` with optional ``grades`` (graded gains)."""

    indptr: np.ndarray
    indices: np.ndarray
    grades: np.ndarray | None = None
    n_items: int | None = None

    def __post_init__(self) -> None:
        self.indptr = np.ascontiguousarray(self.indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int32)
        if self.grades is not None:
            self.grades = np.ascontiguousarray(self.grades, dtype=np.float64)
            if self.grades.shape != self.indices.shape:
                raise DataValidationError("grades must align with indices", column="grades")

    @property
    def n_users(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    @classmethod
    def from_csr(cls, m: sp.csr_matrix, *, graded: bool = False) -> Relevance:
        """From a user × item matrix; non-zero entries are relevant (their value is the grade)."""
        m = sp.csr_matrix(m)
        m.eliminate_zeros()
        m.sort_indices()
        return cls(m.indptr, m.indices, m.data.astype(np.float64) if graded else None,
                   n_items=m.shape[1])

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
                   grades: np.ndarray | None = None) -> Relevance:
        """From (user, item[, grade]) index pairs; duplicated pairs keep the largest grade."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        shape = (n_users, n_items)
        if grades is None:
            m = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=shape)
            m.data[:] = 1.0  # duplicated pairs were summed
            return cls.from_csr(m)
        g = np.asarray(grades, dtype=np.float64)
        order = np.lexsort((g, items, users))  # the largest grade of a pair comes last
        r, c, d = users[order], items[order], g[order]
        last = np.ones(len(r), dtype=bool)
        last[:-1] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
        return cls.from_csr(sp.csr_matrix((d[last], (r[last], c[last])), shape=shape),
                            graded=True)

    def to_csr(self) -> sp.csr_matrix:
        data = self.grades if self.grades is not None else np.ones(len(self.indices))
        n_items = self.n_items or (int(self.indices.max()) + 1 if len(self.indices) else 0)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=(self.n_users, n_items))

