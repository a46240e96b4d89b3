"""Offline evaluation past one process: streamed out of core, or on Spark, same numbers.

Both engines feed one function, :func:`chunk_stats`, with tables of *whole users* (every
ranking, truth and exclusion row of a user together): the ``stream`` engine gets them
from DuckDB (the inputs unioned and sorted by user out of core, fetched in record
batches), the ``spark`` engine from ``repartition(user_id).sortWithinPartitions`` and
``mapInArrow``. Per chunk the existing numba kernel computes every user's metrics, and
only mergeable summaries leave the chunk: per metric the count, mean and centred sum of
squares (merged exactly, Chan et al.), and the Poisson bootstrap sums.

Poisson bootstrap (Chamandy et al. 2012): user ``u`` gets weight ``Poisson(1)`` in
replicate ``b``, drawn from a SplitMix64 hash of (user id, seed, b), so replicates are
sums computed in the same pass, in any partitioning, with identical weights in every
engine. A replicate's mean is ``Σ w·x / Σ w``. Means equal the in-memory
:func:`~recscope.offline.evaluate` to floating-point rounding; intervals are a different
bootstrap of the same sampling distribution (agreement within Monte-Carlo error, tested).

Paired comparisons use the paired t-test (sums of differences and their squares) with a
Poisson-bootstrap interval of the mean difference; Wilcoxon and the sign-flip test need
all values at once and are refused here.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats as sps

from recscope.core.splitmix import step
from recscope.data.datasets import TABLE_PREFIX, check_dataset, locate_rows, spark_session
from recscope.data.rankings import (
    RankedLists,
    Relevance,
    first_duplicate,
    lists_from_pairs,
)
from recscope.errors import ConfigError, DataValidationError, RecscopeError
from recscope.offline.compare import ComparisonResult, _row
from recscope.offline.evaluate import EvaluationResult, _as_csr, _sorted_truth
from recscope.offline.metrics import MetricSpec, compute_metrics, parse_metrics
from recscope.offline.per_user import PairedTest, _seed64, adjust, check_bootstrap
from recscope.results import Effect

ENGINES = ("memory", "stream", "spark")
#: ``--engine auto`` streams when the inputs hold more rows than this.
AUTO_STREAM_ROWS = 50_000_000

_POIS = np.array([np.exp(-1.0) / np.prod(np.arange(1, k + 1, dtype=np.float64))
                  for k in range(20)]).cumsum()


# ---------------------------------------------------------------------- Poisson bootstrap
@numba.njit(cache=True, nogil=True)
def _poisson1(key: np.uint64, b: np.uint64, seed: np.uint64, cdf: np.ndarray) -> float:
    state = key ^ seed ^ (b * np.uint64(0x9E3779B97F4A7C15))
    state, _ = step(state)
    state, r = step(state)
    u = float(r >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    k = 0
    while k < cdf.shape[0] - 1 and u >= cdf[k]:
        k += 1
    return float(k)


@numba.njit(cache=True, parallel=True, nogil=True)
def poisson_accumulate(values: np.ndarray, keys: np.ndarray, seed: np.uint64,
                       acc: np.ndarray, wacc: np.ndarray, cdf: np.ndarray) -> None:
    """``acc[b, c] += Σ_i w_ib·x_ic`` and ``wacc[b, c] += Σ_i w_ib`` over rows whose value
    is not NaN; ``w_ib ~ Poisson(1)`` from a hash of (``keys[i]``, b, seed)."""
    n, m = values.shape
    for b in numba.prange(acc.shape[0]):
        bb = np.uint64(b)
        for i in range(n):
            w = _poisson1(keys[i], bb, seed, cdf)
            if w == 0.0:
                continue
            for c in range(m):
                x = values[i, c]
                if x == x:
                    acc[b, c] += w * x
                    wacc[b, c] += w


# small chunks (tests, tiny Spark partitions): no thread-pool start per call
_poisson_serial = numba.njit(cache=True, nogil=True)(poisson_accumulate.py_func)


@numba.njit(cache=True, nogil=True)
def _fnv(offsets: np.ndarray, data: np.ndarray, out: np.ndarray) -> None:
    for i in range(out.shape[0]):
        h = np.uint64(0xCBF29CE484222325)
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * np.uint64(0x100000001B3)
        out[i] = h


def id_keys(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A uint64 key per id, the same in every engine: the integer itself, or FNV-1a of the
    UTF-8 text."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if pa.types.is_integer(ids.type):
        return ids.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    arr = pc.cast(ids, pa.large_string())
    if arr.offset:
        arr = pa.concat_arrays([arr])
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[: len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else \
        np.zeros(0, np.uint8)
    out = np.empty(len(arr), dtype=np.uint64)
    _fnv(offsets, data, out)
    return out


# ---------------------------------------------------------------------- lists per user
@numba.njit(cache=True, nogil=True)
def _before(v1: float, i1: int, v2: float, i2: int, by_rank: bool) -> bool:
    """Row 1 strictly before row 2: rank ascending (or score descending), then item."""
    if v1 != v2:
        return v1 < v2 if by_rank else v1 > v2
    return i1 < i2


@numba.njit(cache=True, nogil=True)
def _fill_lists(starts: np.ndarray, it: np.ndarray, val: np.ndarray, by_rank: bool,
                stamp: np.ndarray, mat: np.ndarray, out: np.ndarray) -> int:
    """Each user's rows (``starts[s]:starts[s+1]``) ordered into ``mat[s]``/``out[s]``;
    returns -1, or a row of the first repeated item (or repeated rank) met."""
    for s in range(starts.shape[0] - 1):
        a, b = starts[s], starts[s + 1]
        for j in range(a, b):
            if stamp[it[j]] == s + 1:
                return j
            stamp[it[j]] = s + 1
        ordered = True
        for j in range(a + 1, b):
            if not _before(val[j - 1], it[j - 1], val[j], it[j], by_rank):
                ordered = False
                break
        if ordered:
            order = np.arange(a, b)
        else:  # stable sorts: by item, then by rank (or descending score)
            by_item = np.argsort(it[a:b], kind="mergesort")
            key = val[a:b][by_item]
            if not by_rank:
                key = -key
            order = a + by_item[np.argsort(key, kind="mergesort")]
        for p in range(order.shape[0]):
            r = order[p]
            if by_rank and p > 0 and val[r] == val[order[p - 1]]:
                return r
            mat[s, p] = it[r]
            out[s, p] = -val[r] if by_rank else val[r]
    return -1


def _lists(u: np.ndarray, it: np.ndarray, vals: np.ndarray, by_rank: bool, n_items: int,
           file: str) -> RankedLists:
    """:func:`~recscope.data.rankings.lists_from_pairs` for rows already grouped by user
    (ascending local index), in one pass per user instead of a lexsort of the chunk; the
    same lists. On a problem (or rows not grouped) the general function runs and names it."""
    n = len(u)
    if n and bool(np.all(u[1:] >= u[:-1])):
        starts = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1, n]
        k = int(np.diff(starts).max())
        mat = np.full((len(starts) - 1, k), -1, dtype=np.int32)
        out = np.full((len(starts) - 1, k), -np.inf, dtype=np.float32)
        stamp = np.zeros(max(n_items, int(it.max()) + 1), np.int64)
        if _fill_lists(starts, it, vals, by_rank, stamp, mat, out) < 0:
            return RankedLists(u[starts[:-1]], mat, out)
    return lists_from_pairs(u, it, score=None if by_rank else vals,
                            rank=vals if by_rank else None, file=file)


# ---------------------------------------------------------------------- mergeable summary
@dataclass
class Stats:
    """Mergeable summary of columns of values (NaN ignored per column): count, mean, centred
    sum of squares, and the Poisson bootstrap sums ``boot[b, c]`` / weights ``wboot``."""

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    boot: np.ndarray
    wboot: np.ndarray

    @classmethod
    def empty(cls, m: int, n_boot: int) -> Stats:
        return cls(np.zeros(m), np.zeros(m), np.zeros(m), np.zeros((n_boot, m)),
                   np.zeros((n_boot, m)))

    def add(self, values: np.ndarray, keys: np.ndarray, seed: np.uint64) -> None:
        """Fold rows ``values`` [n, m] (keys: one per row) into the summary."""
        if values.shape[0] == 0:
            return
        ok = ~np.isnan(values)
        n = ok.sum(axis=0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, np.nansum(values, axis=0) / np.maximum(n, 1), 0.0)
            m2 = np.nansum((values - mean) ** 2, axis=0)
        self.merge(Stats(n, mean, m2, self.boot[:0], self.wboot[:0]), boot=False)
        if self.boot.shape[0]:
            fn = poisson_accumulate if values.size * self.boot.shape[0] > 1_000_000 else \
                _poisson_serial
            fn(np.ascontiguousarray(values), keys, seed, self.boot, self.wboot, _POIS)

    def merge(self, other: Stats, *, boot: bool = True) -> None:
        """Chan's exact merge of counts, means and centred sums of squares."""
        n = self.n + other.n
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = other.mean - self.mean
            mean = np.where(n > 0, self.mean + delta * other.n / np.maximum(n, 1), 0.0)
            m2 = self.m2 + other.m2 + delta ** 2 * self.n * other.n / np.maximum(n, 1)
        self.n, self.mean, self.m2 = n, mean, m2
        if boot:
            self.boot += other.boot
            self.wboot += other.wboot

    def effects(self, names: Sequence[str], confidence: float) -> list[Effect]:
        """One Effect per column, fields as :func:`recscope.offline.per_user.intervals`."""
        z = float(sps.norm.ppf(0.5 + confidence / 2))
        alpha = 1 - confidence
        out = []
        nan = float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):
            reps = self.boot / self.wboot
        for c, name in enumerate(names):
            n = int(self.n[c])
            if n == 0:
                out.append(Effect(name, nan, n=0, extra={"normal_low": nan,
                                                        "normal_high": nan}))
                continue
            mean = float(self.mean[c])
            se = float(np.sqrt(self.m2[c] / (n - 1)) / np.sqrt(n)) if n > 1 else nan
            if self.boot.shape[0] and n > 1:
                lo, hi = (float(x) for x in np.nanquantile(reps[:, c],
                                                           [alpha / 2, 1 - alpha / 2]))
            else:
                lo, hi = mean - z * se, mean + z * se
            out.append(Effect(name, mean, lo, hi, se, n=n,
                              extra={"normal_low": mean - z * se, "normal_high": mean + z * se}))
        return out


@dataclass
class Partial:
    """Everything one chunk (or one Spark partition) contributes: per system, per paired
    system, per (slice column, label); plus counts for the result's ``info``."""

    systems: list[Stats]
    pairs: list[tuple[Stats, Stats, Stats]]
    slices: dict[tuple[str, str], Stats] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def merge(self, other: Partial) -> None:
        for a, b in zip(self.systems, other.systems, strict=True):
            a.merge(b)
        for pa_, pb in zip(self.pairs, other.pairs, strict=True):
            for a, b in zip(pa_, pb, strict=True):
                a.merge(b)
        for k, s in other.slices.items():
            if k in self.slices:
                self.slices[k].merge(s)
            else:
                self.slices[k] = s
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v


# ---------------------------------------------------------------------- the plan
@dataclass
class Plan:
    """What every chunk needs to know (pickled to Spark executors)."""

    systems: list[str]
    sources: list[str]  # ranking sources, then truth, then exclude (when given)
    specs: list[MetricSpec]
    n_items: int
    missing: str
    n_boot: int
    seed: int
    slices: list[str]
    graded: bool
    exclude: bool
    ranked: list[bool] = field(default_factory=list)  # system s has a rank column

    @property
    def truth_src(self) -> int:
        return len(self.systems)

    def seeds(self) -> tuple[np.uint64, np.uint64, np.uint64]:
        base = _seed64(self.seed)
        return base, np.uint64(int(base) ^ 0x5DEECE66D), np.uint64(int(base) ^ 0x2545F491)

    def new_partial(self) -> Partial:
        m, b = len(self.specs), self.n_boot
        return Partial([Stats.empty(m, b) for _ in self.systems],
                       [(Stats.empty(m, 0), Stats.empty(m, 0), Stats.empty(m, b))
                        for _ in self.systems[1:]])


def _group_index(ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Local user index per row (rows grouped by user) and the first row of each user."""
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = pc.not_equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    idx = np.zeros(n, np.int64)
    idx[starts[1:]] = 1
    return np.cumsum(idx), starts


def _bad(plan: Plan, src: int, problem: str, column: str, user: Any,
         item: Any = None) -> DataValidationError:
    """An error naming the partition file holding the row (located on demand)."""
    source = plan.sources[src]
    where = {"user_id": user} if item is None else {"user_id": user, "item_id": item}
    file = None
    if not source.startswith(TABLE_PREFIX):
        try:
            file = locate_rows(source, where)
        except RecscopeError:
            file = None
    return DataValidationError(f"{problem} (user_id {user!r}"
                               + (f", item_id {item!r})" if item is not None else ")"),
                               file=file or source, column=column)


def _codes(ids: pa.Array) -> tuple[np.ndarray, int]:
    """Index of each value in the sorted distinct values, and their number: a dense
    lookup table for integers spanning a small range (most chunks), else a hash lookup."""
    if pa.types.is_integer(ids.type) and len(ids):
        a = ids.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        lo, hi = int(a.min()), int(a.max())
        if hi - lo < 4 * len(a) + (1 << 20):
            seen = np.zeros(hi - lo + 1, np.int64)
            seen[a - lo] = 1
            lut = np.cumsum(seen) - 1
            return lut[a - lo], int(lut[-1]) + 1
    vocab = pc.unique(ids)
    vocab = pc.take(vocab, pc.sort_indices(vocab))
    codes = pc.index_in(ids, value_set=vocab).to_numpy(zero_copy_only=False)
    return codes.astype(np.int64), len(vocab)


def _factorize(ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Local user index per row (users numbered in id order) and one row of each user, for
    rows not grouped by user (no sort of the rows)."""
    u, n_u = _codes(ids)
    first = np.empty(n_u, np.int64)
    first[u[::-1]] = np.arange(len(u) - 1, -1, -1)
    return u, first


def _distinct_runs(ids: pa.Array, starts: np.ndarray) -> bool:
    """Each user's rows form one run: run values strictly increasing (integers), else
    as many distinct values as runs."""
    if pa.types.is_integer(ids.type):
        v = ids.to_numpy(zero_copy_only=False)[starts]
        if bool(np.all(v[1:] > v[:-1])):
            return True
    return pc.count_distinct(ids).as_py() == len(starts)


def chunk_stats(table: pa.Table, plan: Plan, *, grouped: bool = True) -> Partial:
    """Summaries of one table of whole users (columns ``user_id``, ``item_id``, ``src``,
    ``score``, ``rnk``, ``grade`` and the slice columns; rows grouped by user, or, with
    ``grouped=False``, each source's rows sorted by user one source after another)."""
    part = plan.new_partial()
    if table.num_rows == 0:
        return part
    s_sys, s_pair, s_slice = plan.seeds()
    table = table.combine_chunks()
    uids = table.column("user_id").chunk(0) if table.column("user_id").num_chunks else \
        pa.array([], table.schema.field("user_id").type)
    src = table.column("src").to_numpy(zero_copy_only=False).astype(np.int64)
    for c in ("user_id", "item_id"):
        col = table.column(c)
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataValidationError("null id", file=plan.sources[int(src[row])], column=c)
    u, starts = _group_index(uids) if grouped else _factorize(uids)
    n_u = len(starts)
    if grouped and not _distinct_runs(uids, starts):  # the engines group rows by user
        raise DataValidationError("internal: rows of a user arrive in pieces (input not "
                                  "grouped by user_id)", column="user_id")
    keys = id_keys(pc.take(uids, pa.array(starts)))
    items_col = table.column("item_id").chunk(0)
    it, n_i = _codes(items_col)
    # truth
    t_rows = np.flatnonzero(src == plan.truth_src)
    dup = first_duplicate(u[t_rows] * max(n_i, 1) + it[t_rows])
    if dup is not None:
        r = t_rows[dup]
        raise _bad(plan, plan.truth_src, "(user_id, item_id) pair repeated in the truth",
                   "item_id", uids[r].as_py(), items_col[r].as_py())
    grades = None
    if plan.graded:
        g = table.column("grade").to_numpy(zero_copy_only=False).astype(np.float64)[t_rows]
        if np.any(~np.isfinite(g)):
            r = t_rows[int(np.flatnonzero(~np.isfinite(g))[0])]
            raise _bad(plan, plan.truth_src, "grade is null or not a finite number", "grade",
                       uids[r].as_py())
        grades = g
    truth = _sorted_truth(Relevance.from_pairs(u[t_rows], it[t_rows], n_u, n_i, grades))
    has_rel = truth.counts() > 0
    ex_ptr = ex_ind = None
    if plan.exclude:
        e_rows = np.flatnonzero(src == plan.truth_src + 1)
        ex_ptr, ex_ind = _as_csr(Relevance.from_pairs(u[e_rows], it[e_rows], n_u, n_i))
    score = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    rnk = table.column("rnk").to_numpy(zero_copy_only=False).astype(np.float64)
    per_sys: list[np.ndarray] = []
    m = len(plan.specs)
    for s, name in enumerate(plan.systems):
        rows = np.flatnonzero(src == s)
        use_rank = plan.ranked[s]
        vals = (rnk if use_rank else score)[rows]
        bad = ~np.isfinite(vals) if not use_rank else \
            (~np.isfinite(vals) | (vals < 1) | (vals != np.round(vals)))
        if bad.any():
            r = rows[int(np.flatnonzero(bad)[0])]
            raise _bad(plan, s, "rank must be an integer >= 1" if use_rank else
                       "score is null, NaN or infinite", "rank" if use_rank else "score",
                       uids[r].as_py())
        try:  # checks repeated (user, item) pairs and ranks itself
            lists = _lists(u[rows], it[rows], vals, use_rank, n_i, plan.sources[s])
        except DataValidationError as exc:
            r = rows[exc.row] if exc.row is not None else rows[0]
            what = "(user_id, item_id) pair repeated in a ranking" if \
                exc.column == "item_id" else exc.problem
            raise _bad(plan, s, what, exc.column or "item_id", uids[r].as_py(),
                       items_col[r].as_py() if exc.column == "item_id" else None) from None
        listed = np.zeros(n_u, bool)
        listed[lists.users] = True
        absent = np.flatnonzero(has_rel & ~listed)
        part.counts[f"{name}.n_users_missing_list"] = len(absent)
        part.counts[f"{name}.n_users_in_rankings_not_in_truth"] = int(
            (listed & (truth.counts() == 0) & ~_in_truth(u, t_rows, n_u)).sum())
        users, items = lists.users.astype(np.int32), lists.items
        if len(absent) and plan.missing == "error":
            r = int(starts[absent[0]])
            raise _bad(plan, plan.truth_src, f"a user with relevant items has no list in "
                       f"{name}", "user_id", uids[r].as_py())
        if len(absent) and plan.missing == "zero":
            users = np.concatenate([users, absent.astype(np.int32)])
            width = max(items.shape[1], 1)
            pad = np.full((len(absent), width), -1, np.int32)
            if items.shape[1] == 0:
                items = np.zeros((len(users) - len(absent), 1), np.int32) - 1
            items = np.concatenate([items, pad])
        full = np.full((n_u, m), np.nan)
        if len(users):
            values, n_rel = compute_metrics(users, items, truth.indptr, truth.indices,
                                            truth.grades, plan.specs, n_items=plan.n_items,
                                            ex_indptr=ex_ptr, ex_indices=ex_ind)
            counted = n_rel > 0
            full[users[counted]] = values[counted]
            part.counts[f"{name}.n_users"] = int(counted.sum())
            part.counts[f"{name}.n_users_without_relevant"] = int((~counted).sum())
        part.systems[s].add(full, keys, s_sys)
        per_sys.append(full)
    for j in range(1, len(plan.systems)):
        a, b = per_sys[0], per_sys[j]
        both = ~(np.isnan(a) | np.isnan(b))
        sa, sb, sd = part.pairs[j - 1]
        sa.add(np.where(both, a, np.nan), keys, s_pair)
        sb.add(np.where(both, b, np.nan), keys, s_pair)
        sd.add(np.where(both, b - a, np.nan), keys, np.uint64(int(s_pair) + j))
    for col in plan.slices:
        labels = _user_labels(table, col, u, t_rows, n_u, plan, uids)
        for lab in {x for x in labels if x is not None}:
            mask = np.array([x == lab for x in labels])
            st = part.slices.setdefault((col, lab), Stats.empty(m, plan.n_boot))
            st.add(per_sys[0][mask], keys[mask], s_slice)
    return part


def _in_truth(u: np.ndarray, t_rows: np.ndarray, n_u: int) -> np.ndarray:
    out = np.zeros(n_u, bool)
    out[u[t_rows]] = True
    return out


def _user_labels(table: pa.Table, col: str, u: np.ndarray, t_rows: np.ndarray, n_u: int,
                 plan: Plan, uids: pa.Array) -> list[str | None]:
    """One label per local user from the truth rows' ``col`` (it must not vary)."""
    vals = table.column(f"slice_{col}").to_pylist()
    out: list[str | None] = [None] * n_u
    for r in t_rows.tolist():
        v = vals[r]
        if v is None:
            continue
        cur = out[u[r]]
        if cur is None:
            out[u[r]] = str(v)
        elif cur != str(v):
            raise _bad(plan, plan.truth_src, "slice column varies within the user", col,
                       uids[r].as_py())
    return out


def whole_user_chunks(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of about ``rows`` rows cut at user boundaries, from batches sorted by user
    (the last user of a batch is carried into the next table)."""
    buf: list[pa.RecordBatch] = []
    n = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        buf.append(batch)
        n += batch.num_rows
        if n < rows:
            continue
        t = pa.Table.from_batches(buf).combine_chunks()
        ids = t.column("user_id")
        last = ids[t.num_rows - 1]
        same = pc.equal(ids, last).to_numpy(zero_copy_only=False)
        cut = int(np.flatnonzero(~same)[-1]) + 1 if (~same).any() else 0
        if cut == 0:
            continue  # one user fills the buffer: keep reading
        yield t.slice(0, cut)
        rest = t.slice(cut)
        buf, n = rest.to_batches(), rest.num_rows
    if n:
        yield pa.Table.from_batches(buf)


# ---------------------------------------------------------------------- inputs
def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return "int" if pa.types.is_integer(t) else "str"


@dataclass
class _Source:
    source: str
    columns: dict[str, pa.DataType]
    n_rows: int


def _inspect(source: str, required: list[str], spark: Any = None) -> _Source:
    if source.startswith(TABLE_PREFIX):
        if spark is None:
            raise ConfigError(f"{source}: Spark catalog tables need --engine spark",
                              key="--engine")
        try:
            df = spark.table(source.removeprefix(TABLE_PREFIX))
        except Exception as exc:  # AnalysisException
            raise DataValidationError(f"cannot read table: {' '.join(str(exc).split())[:200]}",
                                      file=source) from None
        cols = {f.name: _spark_to_arrow(f.dataType.simpleString()) for f in df.schema.fields}
        for c in required:
            if c not in cols:
                raise DataValidationError(f"missing column; found {list(cols)}", file=source,
                                          column=c)
        return _Source(source, cols, -1)
    info = check_dataset(source, required)
    return _Source(source, {f.name: f.type for f in info.schema}, info.n_rows)


def _spark_to_arrow(s: str) -> pa.DataType:
    if s in ("bigint", "int", "smallint", "tinyint"):
        return pa.int64()
    if s in ("double", "float") or s.startswith("decimal"):
        return pa.float64()
    return pa.string()


def _id_types(srcs: list[_Source]) -> dict[str, str]:
    """``int`` when every source's id column is an integer, else ``str`` (as in memory)."""
    return {c: "int" if all(_kind(s.columns[c]) == "int" for s in srcs) else "str"
            for c in ("user_id", "item_id")}


def _check_metrics(specs: list[MetricSpec]) -> None:
    for s in specs:
        if s.k == 0 and s.name in ("precision", "f1"):
            raise ConfigError(f"{s.label} without a cut-off depends on the longest list of "
                              f"all users; give a cut-off (e.g. {s.name}@10) with the stream "
                              f"and spark engines", key="--metric")


@dataclass
class _Job:
    plan: Plan
    srcs: list[_Source]
    id_types: dict[str, str]
    confidence: float
    adjustment: str


def _prepare(rankings: dict[str, str], truth: str, metrics: Sequence[str], *,
             exclude: str | None, bootstrap: int, confidence: float, missing: str,
             seed: int, slices: Sequence[str], test: str, adjustment: str, spark: Any = None,
             ) -> _Job:
    specs = parse_metrics(list(metrics))
    _check_metrics(specs)
    check_bootstrap(bootstrap, confidence)
    if missing not in ("zero", "skip", "error"):
        raise ConfigError(f"missing must be zero, skip or error, got {missing!r}",
                          key="missing")
    if test != "t":
        raise ConfigError(f"the {test} test needs every user's values in memory; the stream "
                          f"and spark engines give the paired t-test (--test t)",
                          key="--test")
    if adjustment not in ("holm", "bh", "none"):
        raise ConfigError(f"unknown adjustment {adjustment!r}", key="--adjust")
    srcs = [_inspect(str(p), ["user_id", "item_id"], spark) for p in rankings.values()]
    for s in srcs:
        if "score" not in s.columns and "rank" not in s.columns:
            raise DataValidationError(f"needs a 'score' or a 'rank' column; found "
                                      f"{list(s.columns)}", file=s.source, column="score")
    t = _inspect(str(truth), ["user_id", "item_id", *slices], spark)
    srcs.append(t)
    if exclude is not None:
        srcs.append(_inspect(str(exclude), ["user_id", "item_id"], spark))
    types = _id_types(srcs)
    plan = Plan(list(rankings), [s.source for s in srcs], specs, 0, missing, bootstrap, seed,
                list(slices), "grade" in t.columns, exclude is not None,
                [("rank" in s.columns) for s in srcs[: len(rankings)]])
    return _Job(plan, srcs, types, confidence, adjustment)


def _finish(job: _Job, total: Partial, engine: str) -> EvaluationResult | ComparisonResult:
    plan = job.plan
    labels = [s.label for s in plan.specs]
    results: dict[str, EvaluationResult] = {}
    for s, name in enumerate(plan.systems):
        c = total.counts
        info = {"protocol": "full ranking", "missing_policy": plan.missing,
                "seen_items_excluded": plan.exclude, "engine": engine,
                "bootstrap_kind": "poisson",
                "n_users_missing_list": c.get(f"{name}.n_users_missing_list", 0),
                "n_users_without_relevant": c.get(f"{name}.n_users_without_relevant", 0),
                "users_not_in_truth": c.get(f"{name}.n_users_in_rankings_not_in_truth", 0),
                "per_user": f"not kept by the {engine} engine"}
        empty = pa.table({"user": pa.array([], pa.int32()),
                          "n_relevant": pa.array([], pa.int64()),
                          **{lab: pa.array([], pa.float64()) for lab in labels}})
        results[name] = EvaluationResult(total.systems[s].effects(labels, job.confidence),
                                         empty, c.get(f"{name}.n_users", 0), job.confidence,
                                         plan.n_boot, info, system=name)
    if total.slices:
        rows = []
        for (col, lab), st in sorted(total.slices.items()):
            rows += [Effect(e.metric, e.estimate, e.ci_low, e.ci_high, e.se, e.p_value, e.n,
                            {**e.extra, "by": col, "slice": lab})
                     for e in st.effects(labels, job.confidence)]
        first = plan.systems[0]
        results[first].slices = rows
    if len(plan.systems) == 1:
        return results[plan.systems[0]]
    tests: list[tuple[str, PairedTest]] = []
    for j, name in enumerate(plan.systems[1:]):
        sa, sb, sd = total.pairs[j]
        effs = sd.effects(labels, job.confidence)
        for c, lab in enumerate(labels):
            n = int(sd.n[c])
            nan = float("nan")
            if n < 2:
                tests.append((name, PairedTest(lab, n, *(nan,) * 12)))
                continue
            d, sdv = float(sd.mean[c]), float(np.sqrt(sd.m2[c] / (n - 1)))
            if sdv > 0:
                p_t = float(2 * sps.t.sf(abs(d / (sdv / np.sqrt(n))), n - 1))
            else:
                p_t = 1.0 if d == 0 else 0.0
            dz = d / sdv if sdv > 0 else (0.0 if d == 0 else float("inf"))
            ma = float(sa.mean[c])
            tests.append((name, PairedTest(
                lab, n, ma, float(sb.mean[c]), d, effs[c].ci_low, effs[c].ci_high, effs[c].se,
                d / ma if ma != 0 else nan, dz, p_t, nan, nan, p_t)))
    p = np.array([t.p_value for _, t in tests])
    holm, bh, chosen = adjust(p, "holm"), adjust(p, "bh"), adjust(p, job.adjustment)
    from dataclasses import replace

    rows = [_row(name, replace(t, p_value_adjusted=float(chosen[i]), p_holm=float(holm[i]),
                               p_bh=float(bh[i])))
            for i, (name, t) in enumerate(tests)]
    return ComparisonResult(plan.systems[0], results, rows, "t", job.adjustment,
                            {"n_tests": len(rows), "engine": engine})


# ---------------------------------------------------------------------- stream engine
def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _select(job: _Job, i: int, duck: bool) -> str:
    """One input as the union's columns (SQL valid in DuckDB and Spark)."""
    plan, s = job.plan, job.srcs[i]
    dbl = "DOUBLE"
    ut = "BIGINT" if job.id_types["user_id"] == "int" else "STRING"
    itp = "BIGINT" if job.id_types["item_id"] == "int" else "STRING"
    if duck:
        ut, itp = ut.replace("STRING", "VARCHAR"), itp.replace("STRING", "VARCHAR")
    is_rank = i < len(plan.systems)
    cols = [f"CAST(user_id AS {ut}) AS user_id", f"CAST(item_id AS {itp}) AS item_id",
            f"CAST({i} AS INT) AS src",
            f"CAST({'score' if is_rank and 'score' in s.columns else 'NULL'} AS {dbl}) "
            "AS score",
            f"CAST({'rank' if is_rank and 'rank' in s.columns else 'NULL'} AS {dbl}) AS rnk",
            f"CAST({'grade' if i == plan.truth_src and plan.graded else 'NULL'} AS {dbl}) "
            "AS grade"]
    strt = "VARCHAR" if duck else "STRING"
    for c in plan.slices:
        val = c if i == plan.truth_src else "NULL"
        cols.append(f"CAST({_q(val, duck) if val != 'NULL' else val} AS {strt}) "
                    f"AS {_q('slice_' + c, duck)}")
    return "SELECT " + ", ".join(cols)


def _q(name: str, duck: bool) -> str:
    return f'"{name}"' if duck else f"`{name}`"


def _duck_from(info_source: str) -> str:
    files = check_dataset(info_source, []).files
    return (f"read_parquet([{', '.join(_sql_str(f) for f in files)}], "
            f"hive_partitioning = true, union_by_name = true)")


def evaluate_stream(rankings: dict[str, str], truth: str,
                    metrics: Sequence[str], *, exclude: str | None = None,
                    bootstrap: int = 1000, confidence: float = 0.95, missing: str = "zero",
                    seed: int = 0, slices: Sequence[str] = (), test: str = "t",
                    adjustment: str = "holm", chunk_rows: int = 2_000_000,
                    memory_limit: str = "2GB", threads: int | None = None,
                    temp_directory: str | None = None, rows_per_pass: int = 20_000_000,
                    sorted_inputs: bool = True) -> EvaluationResult | ComparisonResult:
    """Evaluate Parquet inputs out of core: DuckDB unions and sorts them by user (spilling
    to disk past ``memory_limit``), record batches of ``chunk_rows`` rows are cut at user
    boundaries and summarised by :func:`chunk_stats`. Memory stays bounded by
    ``memory_limit`` plus a few chunks (see docs/offline.md). Inputs of more than
    ``rows_per_pass`` rows are first hash-partitioned by user into buckets written as
    Parquet under ``temp_directory`` (default: a fresh folder in the system temp, removed
    after), then sorted one bucket at a time.

    Fast path (``sorted_inputs``, the default): when every input is ordered by
    ``user_id`` across its files and row groups (per the row-group statistics), each is
    read in its own order and the inputs are merged by user, with no bucket write and no
    sort; an input found out of order while reading (inside a row group) sends the
    evaluation back to the path above. The result's ``info["engine"]`` says which ran:
    ``stream (sorted inputs)`` or ``stream``."""
    import shutil
    import tempfile

    job = _prepare(rankings, truth, metrics, exclude=exclude, bootstrap=bootstrap,
                   confidence=confidence, missing=missing, seed=seed, slices=slices,
                   test=test, adjustment=adjustment)
    spill = temp_directory or tempfile.mkdtemp(prefix="recscope-spill-")
    try:
        if sorted_inputs and _sorted_by_stats(job):
            try:
                return _run_sorted(job, chunk_rows, memory_limit, threads, spill)
            except _Unordered:
                pass  # nothing was written: the hash-bucket path starts afresh
        return _run_stream(job, chunk_rows, memory_limit, threads, spill, rows_per_pass)
    finally:
        if temp_directory is None:
            shutil.rmtree(spill, ignore_errors=True)


def _duck(memory_limit: str, threads: int | None, spill: str, *, keep_order: bool) -> Any:
    """An in-memory DuckDB connection bounded by ``memory_limit``, spilling to ``spill``."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = {_sql_str(memory_limit)}")
    con.execute(f"SET temp_directory = {_sql_str(spill)}")
    con.execute(f"SET preserve_insertion_order = {str(keep_order).lower()}")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def _run_stream(job: _Job, chunk_rows: int, memory_limit: str, threads: int | None,
                spill: str, rows_per_pass: int) -> EvaluationResult | ComparisonResult:
    from pathlib import Path

    import duckdb

    con = _duck(memory_limit, threads, spill, keep_order=False)
    union = " UNION ALL ".join(f"{_select(job, i, True)} FROM {_duck_from(s.source)}"
                               for i, s in enumerate(job.srcs))
    if any(s.name == "auc" for s in job.plan.specs):
        row = con.sql(f"SELECT count(DISTINCT item_id) FROM ({union}) WHERE src <= "
                      f"{job.plan.truth_src}").fetchall()[0]
        job.plan.n_items = int(row[0]) if row else 0
    n_rows = sum(max(src.n_rows, 0) for src in job.srcs)
    n_pass = max(1, -(-n_rows // rows_per_pass))
    err_files = ", ".join(src.source for src in job.srcs)
    queries = [f"SELECT * FROM ({union}) ORDER BY user_id"]
    if n_pass > 1:
        # external hash partitioning: one write of the union into n_pass buckets by user,
        # then one bounded sort per bucket (DuckDB's single sort of everything can run
        # out of memory under a small memory_limit)
        buckets = f"{spill}/buckets"
        try:
            con.execute(f"COPY (SELECT *, CAST(hash(user_id) % {n_pass} AS INT) AS bucket "
                        f"FROM ({union})) TO {_sql_str(buckets)} (FORMAT parquet, "
                        f"PARTITION_BY (bucket))")
        except duckdb.Error as exc:
            raise DataValidationError(f"cannot read the inputs: "
                                      f"{str(exc).splitlines()[0]}", file=err_files) from None
        queries = [f"SELECT * EXCLUDE (bucket) FROM read_parquet("
                   f"{_sql_str(f'{buckets}/bucket={b}/*.parquet')}) ORDER BY user_id"
                   for b in range(n_pass) if Path(f"{buckets}/bucket={b}").exists()]
    total = job.plan.new_partial()
    for q in queries:
        try:
            # con.sql streams in order (con.execute's Arrow reader may reorder batches)
            reader = con.sql(q).to_arrow_reader(min(chunk_rows, 1_000_000))
            for chunk in whole_user_chunks(reader, chunk_rows):
                total.merge(chunk_stats(chunk, job.plan))
        except duckdb.Error as exc:
            raise DataValidationError(f"cannot read the inputs: {str(exc).splitlines()[0]}",
                                      file=err_files) from None
    return _finish(job, total, "stream")


class _Unordered(Exception):
    """An input of the sorted-input path is not ordered by user after all."""


def _sorted_by_stats(job: _Job) -> bool:
    """Every input's row groups, in the order the engine reads its files, hold ascending
    non-overlapping ``user_id`` ranges (Parquet min/max statistics; no statistics, a
    user id that is a partition key, or ids compared after a cast: False)."""
    import pyarrow.parquet as pq

    want = job.id_types["user_id"]
    for src in job.srcs:
        if src.source.startswith(TABLE_PREFIX) or _kind(src.columns["user_id"]) != want:
            return False
        prev = None
        for f in check_dataset(src.source, []).files:
            try:
                meta = pq.ParquetFile(f).metadata
            except (OSError, pa.ArrowInvalid):
                return False
            names = [meta.schema.column(j).path for j in range(meta.num_columns)]
            if "user_id" not in names:
                return False
            col = names.index("user_id")
            for g in range(meta.num_row_groups):
                if meta.row_group(g).num_rows == 0:
                    continue
                st = meta.row_group(g).column(col).statistics
                if st is None or not st.has_min_max or st.null_count:
                    return False
                lo, hi = st.min, st.max
                if isinstance(lo, bytes) or isinstance(hi, bytes):
                    lo, hi = bytes(lo), bytes(hi)
                    if want == "str":
                        lo, hi = lo.decode("utf-8", "replace"), hi.decode("utf-8", "replace")
                if prev is not None and not prev <= lo:
                    return False
                prev = hi
    return True


class _SortedInput:
    """One input read in file and row-group order in record batches, each checked to
    continue the ascending order of ``user_id`` (else :class:`_Unordered`)."""

    def __init__(self, reader: Any, batch_rows: int, is_int: bool) -> None:
        self.reader, self.batch_rows, self.is_int = reader, batch_rows, is_int
        self.buf: pa.Table | None = None
        self.done = False
        self.last: Any = None

    def rows(self) -> int:
        return 0 if self.buf is None else self.buf.num_rows

    def read(self) -> None:
        """Append the next non-empty batch (or mark the input exhausted)."""
        while True:
            try:
                batch = self.reader.read_next_batch()
            except StopIteration:
                self.done = True
                return
            if batch.num_rows:
                break
        ids = batch.column("user_id")
        if ids.null_count:
            raise _Unordered
        if self.is_int:
            a = ids.to_numpy(zero_copy_only=False)
            ok = bool(np.all(a[1:] >= a[:-1]))
            first, last = int(a[0]), int(a[-1])
        else:
            ok = batch.num_rows < 2 or bool(pc.all(pc.less_equal(
                ids.slice(0, len(ids) - 1), ids.slice(1))).as_py())
            first, last = ids[0].as_py(), ids[len(ids) - 1].as_py()
        if not ok or (self.last is not None and first < self.last):
            raise _Unordered
        self.last = last
        t = pa.Table.from_batches([batch])
        self.buf = t if self.buf is None else pa.concat_tables([self.buf, t])

    def take_below(self, cut: Any) -> pa.Table | None:
        """Remove and return the buffered rows of users before ``cut`` (None: all)."""
        if self.buf is None:
            return None
        n = self.buf.num_rows
        if cut is not None:
            n = 0
            for ch in self.buf.column("user_id").chunks:
                if self.is_int:
                    n += int(np.searchsorted(ch.to_numpy(zero_copy_only=False), cut, "left"))
                else:
                    n += int(pc.sum(pc.less(ch, pa.scalar(cut, ch.type))).as_py() or 0)
        if n == 0:
            return None
        out, rest = self.buf.slice(0, n), self.buf.slice(n)
        self.buf = rest if rest.num_rows else None
        return out


def _merged(inputs: list[_SortedInput], batch_rows: int) -> Iterator[tuple[pa.Table, bool]]:
    """Chunks of whole users from inputs each ordered by user: every round reads the
    inputs whose buffers run low, cuts before the smallest last user read by an input
    not yet exhausted, and yields the rows before the cut (and whether they come from
    one input, so already grouped by user)."""
    force: set[int] = set()
    while True:
        for i, inp in enumerate(inputs):
            if not inp.done and (inp.rows() < batch_rows or i in force):
                inp.read()
        live = [inp.last for inp in inputs if not inp.done]
        cut = min(live) if live else None
        parts = [t for t in (inp.take_below(cut) for inp in inputs) if t is not None]
        if parts:
            yield pa.concat_tables(parts), len(parts) == 1
            force = set()
        elif cut is not None:  # one user fills a buffer: read on where it ends
            force = {i for i, inp in enumerate(inputs) if not inp.done and inp.last == cut}
        if cut is None:
            return


def _prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items`` produced by a background thread, at most ``depth`` ahead (reading and
    cutting the next chunk overlaps the summary of this one); its errors are re-raised
    here, and it stops when the consumer does."""
    import queue
    import threading

    q: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer
            put(("error", exc))

    worker = threading.Thread(target=work, name="recscope-stream-read", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _run_sorted(job: _Job, chunk_rows: int, memory_limit: str, threads: int | None,
                spill: str) -> EvaluationResult | ComparisonResult:
    """The sorted-input path: one DuckDB scan per input (insertion order kept, the same
    projection and casts as the bucket path), merged by user in Python: each round is
    cut before the smallest "last user read" of the inputs still being read, and the
    rows before the cut, from every input, form one chunk of whole users."""
    import duckdb

    con = _duck(memory_limit, threads, spill, keep_order=True)
    selects = [f"{_select(job, i, True)} FROM {_duck_from(s.source)}"
               for i, s in enumerate(job.srcs)]
    err_files = ", ".join(src.source for src in job.srcs)
    is_int = job.id_types["user_id"] == "int"
    batch_rows = max(1, min(chunk_rows, 1_000_000))
    total = job.plan.new_partial()
    try:
        if any(s.name == "auc" for s in job.plan.specs):
            union = " UNION ALL ".join(selects)
            row = con.sql(f"SELECT count(DISTINCT item_id) FROM ({union}) WHERE src <= "
                          f"{job.plan.truth_src}").fetchall()[0]
            job.plan.n_items = int(row[0]) if row else 0
        cursors = [con.cursor() for _ in selects]
        inputs = [_SortedInput(c.sql(q).to_arrow_reader(batch_rows), batch_rows, is_int)
                  for c, q in zip(cursors, selects, strict=True)]
        for chunk, grouped in _prefetched(_merged(inputs, batch_rows)):
            total.merge(chunk_stats(chunk, job.plan, grouped=grouped))
    except duckdb.Error as exc:
        raise DataValidationError(f"cannot read the inputs: {str(exc).splitlines()[0]}",
                                  file=err_files) from None
    return _finish(job, total, "stream (sorted inputs)")


# ---------------------------------------------------------------------- spark engine
def _spark_partition(plan: Plan, chunk_rows: int) -> Any:
    """The ``mapInArrow`` function: summaries of one partition, pickled into one row (an
    input problem travels back as a pickled error instead of a Java stack trace)."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        total = plan.new_partial()
        try:
            for chunk in whole_user_chunks(batches, chunk_rows):
                total.merge(chunk_stats(chunk, plan))
            blob = pickle.dumps(("ok", total))
        except RecscopeError as exc:
            blob = pickle.dumps(("error", exc))
        yield pa.RecordBatch.from_pydict({"blob": pa.array([blob], pa.binary())})
    return run


def evaluate_spark(rankings: dict[str, str], truth: str, metrics: Sequence[str], *,
                   exclude: str | None = None, bootstrap: int = 1000,
                   confidence: float = 0.95, missing: str = "zero", seed: int = 0,
                   slices: Sequence[str] = (), test: str = "t", adjustment: str = "holm",
                   session: Any = None, partitions: int | None = None,
                   chunk_rows: int = 500_000) -> EvaluationResult | ComparisonResult:
    """Evaluate on Spark: inputs are Parquet datasets (hive-partitioned folders too) or
    ``table:NAME``; rows are hash-partitioned by user, sorted within partitions, and each
    partition runs the numba kernel through ``mapInArrow``; the driver merges one summary
    per partition. Same result object as :func:`~recscope.offline.evaluate`."""
    spark = spark_session(session)
    job = _prepare(rankings, truth, metrics, exclude=exclude, bootstrap=bootstrap,
                   confidence=confidence, missing=missing, seed=seed, slices=slices,
                   test=test, adjustment=adjustment, spark=spark)
    frames = []
    for i, s in enumerate(job.srcs):
        view = f"recscope_in_{os.getpid()}_{i}"
        _spark_frame(spark, s.source).createOrReplaceTempView(view)
        frames.append(f"{_select(job, i, False)} FROM {view}")
    union = spark.sql(" UNION ALL ".join(frames))
    if any(s.name == "auc" for s in job.plan.specs):
        job.plan.n_items = union.where(f"src <= {job.plan.truth_src}") \
            .select("item_id").distinct().count()
    n_part = partitions or spark.sparkContext.defaultParallelism
    out = (union.repartition(n_part, "user_id").sortWithinPartitions("user_id")
           .mapInArrow(_spark_partition(job.plan, chunk_rows), "blob binary"))
    try:
        blobs = [r["blob"] for r in out.collect()]
    except Exception as exc:  # Spark wraps executor failures
        raise DataValidationError(f"the spark engine failed: "
                                  f"{' '.join(str(exc).split())[:300]}",
                                  file=", ".join(s.source for s in job.srcs)) from None
    total = job.plan.new_partial()
    for b in blobs:
        status, obj = pickle.loads(b)
        if status == "error":
            raise obj
        total.merge(obj)
    return _finish(job, total, "spark")


def _spark_frame(spark: Any, source: str) -> Any:
    from pathlib import Path

    if source.startswith(TABLE_PREFIX):
        return spark.table(source.removeprefix(TABLE_PREFIX))
    p = Path(source)
    reader = spark.read
    if p.is_dir():
        reader = reader.option("basePath", str(p))
    try:
        return reader.parquet(str(p))
    except Exception as exc:  # AnalysisException
        raise DataValidationError(f"cannot read: {' '.join(str(exc).split())[:200]}",
                                  file=source) from None


def choose_engine(engine: str, sources: Sequence[str]) -> str:
    """``auto``: ``stream`` when the Parquet inputs hold more than
    :data:`AUTO_STREAM_ROWS` rows (from their footers), else ``memory``."""
    if engine != "auto":
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine {engine!r}; choose auto, memory, stream or "
                              f"spark", key="--engine")
        return engine
    rows = 0
    for s in sources:
        if str(s).lower().endswith((".csv", ".tsv", ".csv.gz")):
            return "memory"
        try:
            rows += check_dataset(s, []).n_rows
        except DataValidationError:
            return "memory"  # the memory engine's readers name the problem precisely
    return "stream" if rows > AUTO_STREAM_ROWS else "memory"
