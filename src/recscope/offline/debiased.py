"""Debiased offline metrics from logged, missing-not-at-random feedback.

Users rate what they choose to (or what a past system showed them), so the relevant items
we observe are not a random sample of the relevant items: popular, highly rated items are
over-represented and an unweighted metric on them is biased. With the probability
``p(u, i)`` that a relevant pair is observed (a propensity), inverse-propensity weighting
recovers the metric over *all* relevant items (Schnabel et al. 2016; Yang et al. 2018).

Metrics averaging a function of the rank over a user's relevant items are supported:
``recall@k`` (f = [rank <= k]) and ``avg_dcg@k`` (f = [rank <= k] / log2(rank + 1)). For each
user with observed relevant items O:

* naive: mean of f over O (biased under MNAR);
* SNIPS: sum(f / p) / sum(1 / p) over O (self-normalised IPS: consistent, low variance);
* IPS total: sum(f / p) over O, the Horvitz-Thompson estimate of the *number* (or gain
  sum) over all relevant items: unbiased when propensities are right, but high variance.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
from rich.table import Table

from recscope.data.rankings import RankedLists, Relevance
from recscope.errors import ConfigError, DataValidationError
from recscope.offline.per_user import intervals
from recscope.report.tables import rich_table
from recscope.results import Effect, Result

ESTIMATORS: tuple[str, ...] = ("naive", "snips", "ips_total")


def _parse(metric: str) -> tuple[str, int]:
    name, _, k = metric.lower().partition("@")
    if name not in ("recall", "avg_dcg") or not k.isdigit() or int(k) < 1:
        raise ConfigError(f"debiased metrics are recall@K and avg_dcg@K, got {metric!r}",
                          key="metric")
    return name, int(k)


def pair_ranks(rankings: RankedLists, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """1-based rank of each (user, item) pair in the user's list; 0 when not listed."""
    n, k = rankings.items.shape
    n_items = int(max(rankings.items.max(initial=0), items.max(initial=0))) + 1
    row_of = np.full(int(max(rankings.users.max(initial=0), users.max(initial=0))) + 1, -1)
    row_of[rankings.users] = np.arange(n)
    ok = rankings.items >= 0
    keys = (np.repeat(rankings.users.astype(np.int64), k).reshape(n, k)[ok] * n_items
            + rankings.items[ok])
    pos = np.broadcast_to(np.arange(1, k + 1), (n, k))[ok]
    order = np.argsort(keys, kind="stable")
    keys, pos = keys[order], pos[order]
    q = users.astype(np.int64) * n_items + items
    at = np.searchsorted(keys, q)
    at = np.minimum(at, len(keys) - 1) if len(keys) else at
    found = (len(keys) > 0) & (keys[at] == q) & (row_of[users] >= 0) if len(keys) else \
        np.zeros(len(q), dtype=bool)
    return np.where(found, pos[at] if len(keys) else 0, 0)


def _f(name: str, k: int, ranks: np.ndarray) -> np.ndarray:
    listed = (ranks > 0) & (ranks <= k)
    if name == "recall":
        return listed.astype(np.float64)
    return np.where(listed, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)


@dataclass
class DebiasedResult(Result):
    """One :class:`~recscope.results.Effect` per (estimator, metric), the estimator in the
    extra field ``estimator``, with intervals over users."""

    kind: ClassVar[str] = "debiased"
    title: ClassVar[str] = "Debiased metrics"

    estimates: list[Effect]
    n_users: int
    info: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.95

    def by_estimator(self) -> dict[str, dict[str, Effect]]:
        """``by_estimator()[estimator][metric]``."""
        out: dict[str, dict[str, Effect]] = {}
        for e in self.estimates:
            out.setdefault(e["estimator"], {})[e.metric] = e
        return out

    def effects(self) -> list[Effect]:
        return list(self.estimates)

    def rows(self) -> list[dict[str, Any]]:
        return [{"estimator": e["estimator"], "metric": e.metric, "estimate": e.estimate,
                 "ci_low": e.ci_low, "ci_high": e.ci_high, "n": e.n} for e in self.estimates]

    def rich_table(self) -> Table:
        return rich_table(self.rows(), title=f"Debiased metrics ({self.n_users} users)")


def debiased_evaluate(rankings: RankedLists, observed: Relevance, propensities: np.ndarray,
                      metrics: list[str] | tuple[str, ...] = ("recall@10", "avg_dcg@10"), *,
                      clip: float = 0.0, n_boot: int = 1000, confidence: float = 0.95,
                      seed: int | np.random.Generator | None = 0) -> DebiasedResult:
    """Naive, SNIPS and IPS-total estimates of rank metrics over all relevant items.

    ``observed`` holds the observed relevant pairs (CSR); ``propensities`` aligns with
    ``observed.indices`` (probability that the pair was observed). ``clip`` floors the
    propensities (weight capping; 0 leaves them as they are). Users with no observed
    relevant item are not counted."""
    p = np.asarray(propensities, dtype=np.float64)
    if p.shape != observed.indices.shape:
        raise DataValidationError(f"propensities have shape {p.shape}, expected "
                                  f"{observed.indices.shape} (one per observed pair)",
                                  column="propensity")
    bad = np.flatnonzero(~np.isfinite(p) | (p <= 0) | (p > 1))
    if len(bad):
        raise DataValidationError("propensity must be in (0, 1]", column="propensity",
                                  row=int(bad[0]))
    if clip:
        p = np.maximum(p, clip)
    parsed = [_parse(m) for m in metrics]
    counts = observed.counts()
    users = np.repeat(np.arange(observed.n_users), counts)
    keep = np.isin(users, rankings.users)
    users, items, p = users[keep], observed.indices[keep], p[keep]
    ranks = pair_ranks(rankings, users, items)
    uniq, inv = np.unique(users, return_inverse=True)
    w = 1.0 / p
    n_obs = np.bincount(inv).astype(np.float64)
    sum_w = np.bincount(inv, weights=w)
    est: dict[str, list[np.ndarray]] = {e: [] for e in ESTIMATORS}
    for name, k in parsed:
        f = _f(name, k, ranks)
        est["naive"].append(np.bincount(inv, weights=f) / n_obs)
        est["snips"].append(np.bincount(inv, weights=f * w) / sum_w)
        est["ips_total"].append(np.bincount(inv, weights=f * w))
    labels = [f"{n}@{k}" for n, k in parsed]
    out: list[Effect] = []
    for e, cols in est.items():
        ivs = intervals(np.column_stack(cols), labels, n_boot=n_boot, confidence=confidence,
                        seed=seed)
        out += [replace(iv, extra={"estimator": e, **iv.extra}) for iv in ivs]
    info = {"n_pairs": len(p), "weight_max": float(w.max()) if len(w) else float("nan"),
            "effective_sample_size": float(sum_w.sum() ** 2 / (w ** 2).sum()) if len(w)
            else 0.0, "clip": clip}
    return DebiasedResult(out, len(uniq), info, confidence)
