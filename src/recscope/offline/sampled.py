"""Sampled-negative evaluation, only to reproduce older papers (it misleads: Krichene &
Rendle, KDD 2020), with their bias-variance correction.

Each held-out relevant item is ranked among ``n_negatives`` items drawn uniformly (with
replacement, as in the papers) from the items that are neither relevant nor excluded for
the user; its sampled rank is 1 + the number of negatives scored higher, ties counted
against it (pessimistic). Metrics of a single relevant item at sampled rank r:
hit_rate@k = recall@k = [r <= k], ndcg@k = [r <= k]/log2(r+1), mrr = 1/r.

The correction replaces the metric value at sampled rank r by x_r, chosen so that the
expectation of x over the sampling distribution of r given the full rank R is close to
the full-ranking metric M(R), trading bias for variance (their "BV" estimator):
``[(1-γ) AᵀWA + γ diag(Aᵀw)] x = AᵀW M`` with A[R, r] = P(r | R) binomial and w a prior
over full ranks (uniform by default).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from scipy import stats as sps

from recscope.data.rankings import Relevance
from recscope.errors import ConfigError
from recscope.offline.metrics import MetricSpec, parse_metrics
from recscope.offline.per_user import intervals
from recscope.results import Effect, Result

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
_SUPPORTED = {"hit_rate", "recall", "ndcg", "mrr"}


class SampledMetricWarning(UserWarning):
    """Sampled-negative metrics are inconsistent with full-ranking metrics."""


def metric_at_rank(spec: MetricSpec, ranks: np.ndarray) -> np.ndarray:
    """Value of a single-relevant-item metric at (sampled or full) 1-based ranks."""
    r = np.asarray(ranks, dtype=np.float64)
    k = spec.k if spec.k else np.inf
    if spec.name in ("hit_rate", "recall"):
        return (r <= k).astype(np.float64)
    if spec.name == "ndcg":
        return np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)
    if spec.name == "mrr":
        return np.where(r <= k, 1.0 / r, 0.0)
    raise ConfigError(f"{spec.label} is not available for sampled evaluation; use one of "
                      f"{sorted(_SUPPORTED)}", key="metric")


def correction_weights(spec: MetricSpec, n_items: int, n_negatives: int, *,
                       gamma: float = 0.1, rank_prior: np.ndarray | None = None,
                       chunk: int = 65536) -> np.ndarray:
    """Krichene & Rendle's bias-variance corrected values x[r-1], r = 1..n_negatives+1.

    ``n_items`` is the number of candidates per user (the relevant item plus all
    eligible negatives), ``rank_prior`` an optional weight per full rank 1..n_items."""
    if not 0 <= gamma <= 1:
        raise ConfigError(f"gamma must be in [0, 1], got {gamma}", key="gamma")
    m = n_negatives
    ata = np.zeros((m + 1, m + 1))
    atw = np.zeros(m + 1)
    atm = np.zeros(m + 1)
    r_idx = np.arange(m + 1)
    for start in range(1, n_items + 1, chunk):
        full = np.arange(start, min(n_items, start + chunk - 1) + 1)
        w = np.ones(len(full)) if rank_prior is None else \
            np.asarray(rank_prior, dtype=np.float64)[full - 1]
        q = (full - 1) / max(n_items - 1, 1)
        a = sps.binom.pmf(r_idx[None, :], m, q[:, None])
        target = metric_at_rank(spec, full)
        ata += a.T @ (a * w[:, None])
        atw += a.T @ w
        atm += a.T @ (w * target)
    lhs = (1 - gamma) * ata + gamma * np.diag(atw)
    return np.linalg.lstsq(lhs, atm, rcond=None)[0]


def sampled_ranks(score: ScoreFn | np.ndarray, truth: Relevance, n_negatives: int, *,
                  n_items: int, exclude: Relevance | sp.spmatrix | None = None,
                  seed: int | np.random.Generator | None = 0,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, relevant item, sampled rank) for every relevant pair of ``truth``.

    ``score`` is a dense users × items matrix or a function ``score(users, items)`` giving
    one score per pair (a component's ``score``)."""
    rng = np.random.default_rng(seed)
    csr = truth.to_csr()
    ex = None
    if exclude is not None:
        ex = (exclude.to_csr() if isinstance(exclude, Relevance) else sp.csr_matrix(exclude))
    us, its, ranks = [], [], []
    for u in range(csr.shape[0]):
        pos = csr.indices[csr.indptr[u]:csr.indptr[u + 1]]
        if len(pos) == 0:
            continue
        banned = np.zeros(n_items, dtype=bool)
        banned[pos] = True
        if ex is not None and u < ex.shape[0]:
            banned[ex.indices[ex.indptr[u]:ex.indptr[u + 1]]] = True
        eligible = np.flatnonzero(~banned)
        if len(eligible) == 0:
            continue
        neg = eligible[rng.integers(0, len(eligible), (len(pos), n_negatives))]
        cand = np.concatenate([pos[:, None], neg], axis=1)
        if callable(score):
            s = np.asarray(score(np.full(cand.size, u, dtype=np.int32), cand.ravel()),
                           dtype=np.float64).reshape(cand.shape)
        else:
            s = np.asarray(score[u], dtype=np.float64)[cand]
        r = 1 + (s[:, 1:] >= s[:, :1]).sum(axis=1)
        us.append(np.full(len(pos), u))
        its.append(pos)
        ranks.append(r)
    if not us:
        raise ConfigError("no user has a relevant item to rank", key="truth")
    return np.concatenate(us), np.concatenate(its), np.concatenate(ranks)


def sampled_evaluate(score: ScoreFn | np.ndarray, truth: Relevance,
                     metrics: list[str] | tuple[str, ...] = ("hit_rate@10", "ndcg@10"), *,
                     n_negatives: int = 100, n_items: int | None = None,
                     exclude: Relevance | sp.spmatrix | None = None, correct: bool = True,
                     gamma: float = 0.1, n_boot: int = 1000, confidence: float = 0.95,
                     seed: int | np.random.Generator | None = 0) -> SampledResult:
    """Sampled-negative metrics (with a :class:`SampledMetricWarning`) and, with
    ``correct``, the Krichene & Rendle corrected estimate of the full-ranking metric.

    Per-pair values are averaged per user, then over users, with intervals. Returns a
    :class:`SampledResult` (``res.sampled[label]``, ``res.corrected[label]``)."""
    warnings.warn("sampled-negative metrics disagree with full-ranking metrics and can "
                  "reverse comparisons (Krichene & Rendle, KDD 2020); use them only to "
                  "reproduce older papers", SampledMetricWarning, stacklevel=2)
    specs = parse_metrics(list(metrics))
    for s in specs:
        if s.name not in _SUPPORTED:
            raise ConfigError(f"{s.label} is not available for sampled evaluation; use one "
                              f"of {sorted(_SUPPORTED)}", key="metric")
    n_cat = int(n_items or truth.n_items or 0)
    if n_cat <= n_negatives:
        raise ConfigError(f"catalogue of {n_cat} items is too small for {n_negatives} "
                          f"negatives", key="n_negatives")
    users, _, ranks = sampled_ranks(score, truth, n_negatives, n_items=n_cat,
                                    exclude=exclude, seed=seed)
    uniq, inv = np.unique(users, return_inverse=True)
    counts = np.bincount(inv)

    def per_user(v: np.ndarray) -> np.ndarray:
        return np.bincount(inv, weights=v) / counts

    sampled = np.column_stack([per_user(metric_at_rank(s, ranks)) for s in specs])
    labels = [s.label for s in specs]
    rows = _tag(intervals(sampled, labels, n_boot=n_boot, confidence=confidence, seed=seed),
                "sampled")
    if correct:
        # candidates per user: the item plus eligible negatives (average over users)
        n_cand = round(n_cat - truth.counts()[uniq].mean() + 1)
        if exclude is not None:
            exm = exclude.to_csr() if isinstance(exclude, Relevance) else sp.csr_matrix(exclude)
            ex_counts = np.diff(exm.indptr)
            n_cand -= round(ex_counts[uniq[uniq < len(ex_counts)]].mean()) \
                if len(ex_counts) else 0
        corr = np.column_stack([
            per_user(correction_weights(s, n_cand, n_negatives, gamma=gamma)[ranks - 1])
            for s in specs])
        rows += _tag(intervals(corr, labels, n_boot=n_boot, confidence=confidence,
                               seed=seed), "corrected")
    return SampledResult(rows, len(uniq), len(ranks), n_negatives, gamma, confidence)


def _tag(rows: list[Effect], protocol: str) -> list[Effect]:
    return [replace(e, extra={**e.extra, "protocol": protocol}) for e in rows]


@dataclass
class SampledResult(Result):
    """Sampled-negative metrics (rows with ``protocol = "sampled"``) and their Krichene &
    Rendle corrections (``protocol = "corrected"``), one :class:`Effect` per metric each."""

    kind: ClassVar[str] = "sampled"
    title: ClassVar[str] = "Sampled-negative metrics (only to reproduce older papers)"

    estimates: list[Effect]
    n_users: int
    n_pairs: int
    n_negatives: int
    gamma: float
    confidence: float = 0.95

    @property
    def sampled(self) -> dict[str, Effect]:
        """``{metric: Effect}`` of the plain sampled metrics (inflated, biased)."""
        return {e.metric: e for e in self.estimates if e["protocol"] == "sampled"}

    @property
    def corrected(self) -> dict[str, Effect]:
        """``{metric: Effect}`` of the corrected estimates (empty without ``correct``)."""
        return {e.metric: e for e in self.estimates if e["protocol"] == "corrected"}

    def effects(self) -> list[Effect]:
        return list(self.estimates)

    def notes(self) -> list[str]:
        return ["Sampled-negative metrics disagree with full-ranking metrics and can reverse "
                "comparisons (Krichene & Rendle, KDD 2020)."]





__all__ = ["SampledMetricWarning", "SampledResult", "correction_weights", "metric_at_rank",
           "sampled_evaluate", "sampled_ranks"]
