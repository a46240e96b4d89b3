"""Exact ranking metrics: metric names, and one numba pass over every cut-off.

Conventions (see docs/offline.md) follow trec_eval wherever it defines the measure:
an item is relevant when its grade is > 0; gains are the grades (linear, as trec_eval's
``ndcg_cut``; ``ndcg_exp`` uses 2^grade - 1); positions beyond a short list count as
non-relevant and P@k divides by k; AP divides by the number of relevant items; a repeated
item in a list counts only at its first position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numba
import numpy as np

from recscope.errors import ConfigError

# metric codes used by the kernel
_CODES: dict[str, int] = {
    "precision": 0, "recall": 1, "hit_rate": 2, "f1": 3, "dcg": 4, "ndcg": 5, "mrr": 6,
    "map": 7, "r_precision": 8, "auc": 9, "ndcg_exp": 10, "dcg_exp": 11,
}
_ALIASES: dict[str, str] = {
    "p": "precision", "prec": "precision", "r": "recall", "hr": "hit_rate", "hit": "hit_rate",
    "hitrate": "hit_rate", "recip_rank": "mrr", "rr": "mrr", "ap": "map", "rprec": "r_precision",
    "r-precision": "r_precision", "ndcg_burges": "ndcg_exp", "dcg_burges": "dcg_exp",
}
# metrics defined without a cut-off
_NO_CUTOFF = {"r_precision", "auc"}
METRIC_NAMES: tuple[str, ...] = tuple(_CODES)
_PATTERN = re.compile(r"^([a-z][a-z0-9_\-]*)(?:@(\d+))?$")


@dataclass(frozen=True)
class MetricSpec:
    """A parsed metric: base name and cut-off (0 means the whole list)."""

    name: str
    k: int

    @property
    def label(self) -> str:
        """Canonical label, e.g. ``ndcg@10`` or ``mrr``."""
        return f"{self.name}@{self.k}" if self.k else self.name

    @property
    def code(self) -> int:
        return _CODES[self.name]


def parse_metric(text: str) -> MetricSpec:
    """Parse ``"ndcg@10"``, ``"MRR"``, ``"recall@20"`` into a :class:`MetricSpec`."""
    m = _PATTERN.match(text.strip().lower())
    if not m:
        raise ConfigError(f"cannot parse metric {text!r}; expected NAME or NAME@K, e.g. "
                          f"ndcg@10", key="metric")
    name = _ALIASES.get(m.group(1), m.group(1))
    if name not in _CODES:
        raise ConfigError(f"unknown metric {m.group(1)!r}; known: {', '.join(METRIC_NAMES)}",
                          key="metric")
    k = int(m.group(2)) if m.group(2) else 0
    if m.group(2) is not None and k < 1:
        raise ConfigError(f"cut-off must be >= 1 in {text!r}", key="metric")
    if name in _NO_CUTOFF and k:
        raise ConfigError(f"{name} takes no cut-off (got {text!r})", key="metric")
    return MetricSpec(name, k)


def parse_metrics(metrics: list[str] | tuple[str, ...] | str) -> list[MetricSpec]:
    """Parse a list of metric names, keeping order and dropping duplicates."""
    if isinstance(metrics, str):
        metrics = [metrics]
    out: list[MetricSpec] = []
    for text in metrics:
        spec = parse_metric(text)
        if spec not in out:
            out.append(spec)
    if not out:
        raise ConfigError("no metric requested", key="metric")
    return out


@numba.njit(cache=True, parallel=True, nogil=True)
def _metrics_kernel(users: np.ndarray, items: np.ndarray, rel_indptr: np.ndarray,
                    rel_indices: np.ndarray, rel_grades: np.ndarray, graded: bool,
                    ex_indptr: np.ndarray, ex_indices: np.ndarray, n_items: int,
                    codes: np.ndarray, cutoffs: np.ndarray, max_rel: int, n_marks: int,
                    n_chunks: int, out: np.ndarray, n_rel_out: np.ndarray) -> None:
    """Fill ``out[i, m]`` with metric ``codes[m]`` at cut-off ``cutoffs[m]`` for row ``i``.

    Excluded items are dropped from the list (later items move up) and from the relevant
    set. Users beyond the truth have no relevant items. Rows are split in ``n_chunks``
    chunks; each chunk owns a dense marker array over item indices below ``n_marks``
    (0: nothing, -1: excluded, j > 0: the j-th relevant item not yet matched), so each
    list position is classified in O(1).
    """
    n, k = items.shape
    n_users_truth = rel_indptr.shape[0] - 1
    n_users_ex = ex_indptr.shape[0] - 1
    n_m = codes.shape[0]
    need_exp = False
    for m in range(n_m):
        if codes[m] == 10 or codes[m] == 11:
            need_exp = True
    disc = np.empty(k + 2, dtype=np.float64)  # disc[p] = 1 / log2(p + 1), p 1-based
    for p in range(1, k + 2):
        disc[p] = 1.0 / np.log2(p + 1.0)
    chunk = (n + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        mark = np.zeros(n_marks, dtype=np.int32)
        keep_grades = np.empty(max_rel, dtype=np.float64)
        hits = np.zeros(k + 1, dtype=np.float64)
        dcg = np.zeros(k + 1, dtype=np.float64)
        dcg_exp = np.zeros(k + 1, dtype=np.float64)
        ap = np.zeros(k + 1, dtype=np.float64)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            u = users[i]
            r0 = 0
            r1 = 0
            if u >= 0 and u < n_users_truth:
                r0 = rel_indptr[u]
                r1 = rel_indptr[u + 1]
            e0 = 0
            e1 = 0
            if u >= 0 and u < n_users_ex:
                e0 = ex_indptr[u]
                e1 = ex_indptr[u + 1]
            for j in range(e0, e1):
                mark[ex_indices[j]] = -1
            # relevant set after exclusion, grade > 0
            n_rel = 0
            n_ex_rel = 0
            for j in range(r0, r1):
                it = rel_indices[j]
                if mark[it] == -1:
                    n_ex_rel += 1
                    continue
                g = rel_grades[j] if graded else 1.0
                if g <= 0.0:
                    continue
                keep_grades[n_rel] = g
                n_rel += 1
                mark[it] = n_rel
            n_rel_out[i] = n_rel
            n_ex_nonrel = (e1 - e0) - n_ex_rel
            n_neg = n_items - n_rel - n_ex_nonrel
            first = 0  # 1-based rank of the first relevant item, 0 if none
            pos = 0
            neg_above = 0.0
            auc_num = 0.0
            if n_rel > 0:
                # walk the list once, storing prefix sums by (effective) position
                for j in range(k):
                    it = items[i, j]
                    if it < 0:
                        continue
                    mk = mark[it] if it < n_marks else 0
                    if mk == -1:
                        continue
                    pos += 1
                    if mk > 0:
                        mark[it] = 0  # a repeated item counts once
                        g = keep_grades[mk - 1]
                        hits[pos] = hits[pos - 1] + 1.0
                        dcg[pos] = dcg[pos - 1] + g * disc[pos]
                        if need_exp:
                            dcg_exp[pos] = dcg_exp[pos - 1] + (2.0 ** g - 1.0) * disc[pos]
                        ap[pos] = ap[pos - 1] + hits[pos] / pos
                        if first == 0:
                            first = pos
                        auc_num += n_neg - neg_above
                    else:
                        hits[pos] = hits[pos - 1]
                        dcg[pos] = dcg[pos - 1]
                        dcg_exp[pos] = dcg_exp[pos - 1]
                        ap[pos] = ap[pos - 1]
                        neg_above += 1.0
            # reset the markers touched by this user
            for j in range(r0, r1):
                mark[rel_indices[j]] = 0
            for j in range(e0, e1):
                mark[ex_indices[j]] = 0
            if n_rel == 0:
                for m in range(n_m):
                    out[i, m] = np.nan
                continue
            n_listed = pos
            for j in range(pos + 1, k + 1):
                hits[j] = hits[pos]
                dcg[j] = dcg[pos]
                dcg_exp[j] = dcg_exp[pos]
                ap[j] = ap[pos]
            if graded:
                keep_grades[:n_rel].sort()  # ascending: the ideal order reads it backwards
            for m in range(n_m):
                code = codes[m]
                cut = cutoffs[m]
                kk = k if cut == 0 else cut
                kp = kk if kk <= k else k  # position index into prefix arrays
                if code == 0:
                    out[i, m] = hits[kp] / kk
                elif code == 1:
                    out[i, m] = hits[kp] / n_rel
                elif code == 2:
                    out[i, m] = 1.0 if hits[kp] > 0 else 0.0
                elif code == 3:
                    pr = hits[kp] / kk
                    rc = hits[kp] / n_rel
                    out[i, m] = 0.0 if pr + rc == 0 else 2.0 * pr * rc / (pr + rc)
                elif code == 4:
                    out[i, m] = dcg[kp]
                elif code == 11:
                    out[i, m] = dcg_exp[kp]
                elif code == 5 or code == 10:
                    idcg = 0.0
                    top = n_rel if n_rel < kk else kk
                    for q in range(top):
                        gq = keep_grades[n_rel - 1 - q] if graded else 1.0
                        idcg += (gq if code == 5 else 2.0 ** gq - 1.0) / np.log2(q + 2.0)
                    num = dcg[kp] if code == 5 else dcg_exp[kp]
                    out[i, m] = num / idcg if idcg > 0 else 0.0
                elif code == 6:
                    out[i, m] = 1.0 / first if first > 0 and first <= kk else 0.0
                elif code == 7:
                    out[i, m] = ap[kp] / n_rel
                elif code == 8:
                    rp = n_rel if n_rel <= k else k
                    out[i, m] = hits[rp] / n_rel
                elif code == 9:
                    # relevant items outside the list tie with unlisted negatives (half credit)
                    n_unlisted_rel = n_rel - hits[k]
                    n_unlisted_neg = n_neg - (n_listed - hits[k])
                    num = auc_num + n_unlisted_rel * 0.5 * n_unlisted_neg
                    out[i, m] = num / (n_rel * n_neg) if n_neg > 0 else np.nan


@numba.njit(cache=True, nogil=True)
def csr_order_problem(indptr: np.ndarray, indices: np.ndarray) -> tuple[int, int]:
    """(0, -1) when every row's indices are strictly increasing, else (1, row) for the
    first unsorted row or (2, row) for the first row with a repeated index."""
    for r in range(indptr.shape[0] - 1):
        for j in range(indptr[r] + 1, indptr[r + 1]):
            if indices[j] < indices[j - 1]:
                return 1, r
            if indices[j] == indices[j - 1]:
                return 2, r
    return 0, -1


_EMPTY_I64 = np.zeros(1, dtype=np.int64)
_EMPTY_I32 = np.zeros(0, dtype=np.int32)


def compute_metrics(users: np.ndarray, items: np.ndarray, rel_indptr: np.ndarray,
                    rel_indices: np.ndarray, rel_grades: np.ndarray | None,
                    specs: list[MetricSpec], *, n_items: int = 0,
                    ex_indptr: np.ndarray | None = None, ex_indices: np.ndarray | None = None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per-row metric matrix ``[n, len(specs)]`` (NaN where the user has no relevant
    item) and the per-row number of relevant items, in one parallel pass."""
    codes = np.array([s.code for s in specs], dtype=np.int64)
    cutoffs = np.array([s.k for s in specs], dtype=np.int64)
    n = items.shape[0]
    out = np.empty((n, len(specs)), dtype=np.float64)
    n_rel = np.empty(n, dtype=np.int64)
    graded = rel_grades is not None
    counts = np.diff(rel_indptr)
    max_rel = max(int(counts.max()) if len(counts) else 0, 1)
    n_chunks = max(1, min(n, 8 * numba.get_num_threads()))
    n_marks = max(int(rel_indices.max()) + 1 if len(rel_indices) else 1,
                  int(ex_indices.max()) + 1 if ex_indices is not None and len(ex_indices)
                  else 1)
    grades = rel_grades if rel_grades is not None else np.zeros(0, dtype=np.float64)
    _metrics_kernel(
        np.ascontiguousarray(users, dtype=np.int32), np.ascontiguousarray(items, dtype=np.int32),
        np.ascontiguousarray(rel_indptr, dtype=np.int64),
        np.ascontiguousarray(rel_indices, dtype=np.int32),
        np.ascontiguousarray(grades, dtype=np.float64), graded,
        _EMPTY_I64 if ex_indptr is None else np.ascontiguousarray(ex_indptr, dtype=np.int64),
        _EMPTY_I32 if ex_indices is None else np.ascontiguousarray(ex_indices, dtype=np.int32),
        int(n_items), codes, cutoffs, max_rel, n_marks, n_chunks, out, n_rel)
    return out, n_rel
