"""``RankedLists`` and ``Relevance``: the contract between recommenders and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from recscope.data.vocab import Vocabulary
from recscope.errors import ConfigError, DataValidationError


def as_arrow(table: Any, what: str = "table") -> pa.Table:
    """An Arrow table from an Arrow table, a pandas DataFrame or anything with
    ``to_arrow()`` (polars); the pandas index is not kept."""
    if isinstance(table, pa.Table):
        return table
    try:
        import pandas as pd

        if isinstance(table, pd.DataFrame):
            return pa.Table.from_pandas(table, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataValidationError(f"{what}: cannot convert to Arrow: {exc}") from None
    if hasattr(table, "to_arrow"):
        return table.to_arrow()
    raise ConfigError(f"{what} must be a pandas DataFrame or an Arrow table, got "
                      f"{type(table).__name__}", key=what)


def _column(t: pa.Table, name: str, file: str | None) -> pa.ChunkedArray:
    if name not in t.column_names:
        raise DataValidationError(f"missing required column; found {t.column_names}",
                                  file=file, column=name)
    col = t.column(name)
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataValidationError("null value", file=file, column=name, row=row)
    return col


def _numbers(t: pa.Table, name: str, file: str | None) -> np.ndarray:
    col = _column(t, name, file)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise DataValidationError(f"expected numbers, found {col.type}", file=file,
                                  column=name)
    return col.to_numpy().astype(np.float64)


def extend_vocabulary(vocab: Vocabulary | None, values: pa.ChunkedArray | pa.Array,
                      name: str) -> Vocabulary:
    """``vocab`` with the ids of ``values`` it lacks appended (sorted), so indices it
    already gave keep their meaning; a new sorted vocabulary when ``vocab`` is None."""
    if vocab is None:
        return Vocabulary.from_values(values, name=name)
    new = pc.unique(values)
    if isinstance(new, pa.ChunkedArray):
        new = new.combine_chunks()
    if new.type != vocab.ids.type:
        try:
            new = new.cast(vocab.ids.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataValidationError(f"ids of type {new.type} do not match the vocabulary's "
                                      f"{vocab.ids.type}", column=name) from None
    unknown = new.filter(pa.array(vocab.index(new, missing="ignore") < 0))
    if not len(unknown):
        return vocab
    unknown = unknown.take(pc.sort_indices(unknown))
    return Vocabulary(pa.concat_arrays([vocab.ids, unknown]), name=vocab.name)


def lists_from_pairs(u: np.ndarray, i: np.ndarray, *, score: np.ndarray | None = None,
                     rank: np.ndarray | None = None, file: str | None = None,
                     item_ids: pa.ChunkedArray | None = None,
                     user_ids: pa.ChunkedArray | None = None,
                     columns: tuple[str, str] = ("item_id", "rank")) -> RankedLists:
    """Dense lists from (user index, item index, score or rank) rows: ordered by rank, or
    by score (higher first, ties by item index), padded with -1. A repeated (user, item)
    pair, a repeated rank or a non-finite score is an error naming the row."""
    key = u.astype(np.int64) * (int(i.max()) + 1 if len(i) else 1) + i
    dup = first_duplicate(key)
    if dup is not None:
        what = repr(item_ids[dup].as_py()) if item_ids is not None else str(int(i[dup]))
        who = repr(user_ids[dup].as_py()) if user_ids is not None else str(int(u[dup]))
        raise DataValidationError(f"item {what} appears twice in the ranking of user {who}",
                                  file=file, column=columns[0], row=dup)
    if rank is not None:
        bad = np.flatnonzero(~np.isfinite(rank) | (rank < 1) | (rank != np.round(rank)))
        if len(bad):
            raise DataValidationError("rank must be an integer >= 1", file=file,
                                      column=columns[1], row=int(bad[0]))
        r = rank.astype(np.int64)
        d = first_duplicate(u.astype(np.int64) * (int(r.max()) + 1 if len(r) else 1) + r)
        if d is not None:
            raise DataValidationError("rank repeated within a user's list", file=file,
                                      column=columns[1], row=d)
        order = np.lexsort((i, r, u))
        sc = -r.astype(np.float64)
    elif score is not None:
        bad = np.flatnonzero(~np.isfinite(score))
        if len(bad):
            raise DataValidationError("score is NaN or infinite", file=file,
                                      column=columns[1], row=int(bad[0]))
        order = np.lexsort((i, -score, u))
        sc = score
    else:
        raise ConfigError("give a score or a rank column", key="score_col")
    us = u[order]
    starts = np.r_[0, np.flatnonzero(us[1:] != us[:-1]) + 1] if len(us) else np.zeros(0, int)
    lengths = np.diff(np.r_[starts, len(us)])
    k = int(lengths.max()) if len(lengths) else 1
    pos = np.arange(len(us)) - np.repeat(starts, lengths)
    row = np.repeat(np.arange(len(starts)), lengths)
    mat = np.full((len(starts), k), -1, dtype=np.int32)
    out = np.full((len(starts), k), -np.inf, dtype=np.float32)
    mat[row, pos] = i[order]
    out[row, pos] = sc[order]
    return RankedLists(us[starts], mat, out)


def first_duplicate(key: np.ndarray) -> int | None:
    """Row of the first repeat of an earlier key (None when all keys are distinct)."""
    order = np.argsort(key, kind="stable")
    same = np.flatnonzero(key[order][1:] == key[order][:-1])
    return int(order[same[0] + 1]) if len(same) else None


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

    @classmethod
    def from_table(cls, table: Any, *, user_col: str = "user_id", item_col: str = "item_id",
                   score_col: str | None = None, rank_col: str | None = None,
                   users: Vocabulary | None = None, items: Vocabulary | None = None,
                   ) -> tuple[RankedLists, Vocabulary, Vocabulary]:
        """Lists from a long table with your own ids (pandas DataFrame or Arrow table):
        one row per (user, item) with a ``score_col`` (higher first) or a ``rank_col``
        (1 = first); without either, ``rank`` or ``score`` when present.

        Returns the lists and the user and item vocabularies their indices refer to:
        ``users``/``items`` when given (extended with the ids they lack, indices they
        already gave unchanged), else built from the table. Pass the vocabularies of the
        truth (:meth:`Relevance.from_table`) so both share indices::

            truth, users, items = Relevance.from_table(test_df)
            lists, users, items = RankedLists.from_table(recs_df, users=users, items=items)
        """
        t = as_arrow(table, "rankings")
        if score_col is None and rank_col is None:
            if "rank" in t.column_names:
                rank_col = "rank"
            elif "score" in t.column_names:
                score_col = "score"
            else:
                raise DataValidationError(f"needs a score or a rank column (score_col= or "
                                          f"rank_col=); found {t.column_names}", column="score")
        elif score_col is not None and rank_col is not None:
            raise ConfigError("give score_col or rank_col, not both", key="score_col")
        ucol, icol = _column(t, user_col, None), _column(t, item_col, None)
        users = extend_vocabulary(users, ucol, user_col)
        items = extend_vocabulary(items, icol, item_col)
        u, i = users.index(ucol), items.index(icol)
        col = rank_col or score_col or ""
        values = _numbers(t, col, None)
        lists = lists_from_pairs(u, i, score=None if rank_col else values,
                                 rank=values if rank_col else None, item_ids=icol,
                                 user_ids=ucol, columns=(item_col, col))
        return lists, users, items

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

    @classmethod
    def from_table(cls, table: Any, *, user_col: str = "user_id", item_col: str = "item_id",
                   grade_col: str | None = None, users: Vocabulary | None = None,
                   items: Vocabulary | None = None,
                   ) -> tuple[Relevance, Vocabulary, Vocabulary]:
        """Truth from a table of relevant (user, item) pairs with your own ids (pandas
        DataFrame or Arrow table), optional graded gains in ``grade_col`` (``grade`` when
        present). Returns the truth and the user and item vocabularies (``users``/``items``
        extended with the ids they lack, else built from the table). A repeated pair, a
        null id or a non-finite grade is an error naming the row."""
        t = as_arrow(table, "truth")
        if grade_col is None and "grade" in t.column_names:
            grade_col = "grade"
        ucol, icol = _column(t, user_col, None), _column(t, item_col, None)
        users = extend_vocabulary(users, ucol, user_col)
        items = extend_vocabulary(items, icol, item_col)
        u, i = users.index(ucol), items.index(icol)
        dup = first_duplicate(u.astype(np.int64) * max(len(items), 1) + i)
        if dup is not None:
            raise DataValidationError("(user, item) pair repeated in the truth",
                                      column=item_col, row=dup)
        grades = None
        if grade_col is not None:
            grades = _numbers(t, grade_col, None)
            bad = np.flatnonzero(~np.isfinite(grades))
            if len(bad):
                raise DataValidationError("grade is not a finite number", column=grade_col,
                                          row=int(bad[0]))
        return cls.from_pairs(u, i, len(users), len(items), grades), users, items

    def to_csr(self) -> sp.csr_matrix:
        data = self.grades if self.grades is not None else np.ones(len(self.indices))
        n_items = self.n_items or (int(self.indices.max()) + 1 if len(self.indices) else 0)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=(self.n_users, n_items))

