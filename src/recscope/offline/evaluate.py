"""``evaluate(rankings, truth, metrics)``: the offline entry point, and its result.

The full-ranking protocol is the default: lists are ranked over the whole catalogue and
items in ``exclude`` (typically each user's training items) are dropped from the lists
and from the relevant set before scoring. The per-user table (Arrow) is always kept.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from rich.table import Table

from recscope.data.rankings import RankedLists, Relevance
from recscope.errors import ConfigError, DataValidationError
from recscope.offline.metrics import (
    MetricSpec,
    compute_metrics,
    csr_order_problem,
    parse_metrics,
)
from recscope.offline.stats import Interval, intervals
from recscope.report import HtmlReport, Result

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@10", "precision@10", "hit_rate@10",
                                    "mrr", "map@100")
MissingPolicy = Literal["zero", "skip", "error"]


class MissingUsersWarning(UserWarning):
    """Users with relevant items have no ranked list (they score 0 by default)."""


@dataclass
class EvaluationResult(Result):
    """Aggregates with intervals and the per-user table of one evaluation.

    ``summary`` maps each metric label to an :class:`Interval`; ``per_user`` has a
    ``user`` column (dense index), ``n_relevant`` and one column per metric (NaN where
    a user has no relevant item and is therefore not counted).
    """

    summary: dict[str, Interval]
    per_user: pa.Table
    n_users: int
    confidence: float = 0.95
    n_bootstrap: int = 1000
    info: dict[str, Any] = field(default_factory=dict)
    kind = "evaluation"

    # --------------------------------------------------------------- access
    @property
    def metrics(self) -> list[str]:
        return list(self.summary)

    def mean(self, name: str) -> float:
        """Mean of metric ``name`` over evaluated users."""
        return self._get(name).mean

    def ci(self, name: str, kind: Literal["bootstrap", "normal"] = "bootstrap",
           ) -> tuple[float, float]:
        """The interval of metric ``name`` (bootstrap percentile or analytic normal)."""
        iv = self._get(name)
        return (iv.ci_low, iv.ci_high) if kind == "bootstrap" else (iv.normal_low,
                                                                      iv.normal_high)

    def values(self, name: str) -> np.ndarray:
        """Per-user values of metric ``name`` (NaN for users not counted)."""
        return self.per_user.column(self._label(name)).to_numpy(zero_copy_only=False)

    def as_dict(self) -> dict[str, float]:
        """``{metric: mean}``, e.g. for logging or early stopping."""
        return {k: v.mean for k, v in self.summary.items()}

    def _label(self, name: str) -> str:
        if name in self.summary:
            return name
        label = parse_metrics([name])[0].label
        if label not in self.summary:
            raise ConfigError(f"metric {name!r} was not evaluated; have {self.metrics}",
                              key="metric")
        return label

    def _get(self, name: str) -> Interval:
        return self.summary[self._label(name)]

    # --------------------------------------------------------------- Result contract
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: {"mean": iv.mean, "ci_low": iv.ci_low, "ci_high": iv.ci_high,
                   "normal_low": iv.normal_low, "normal_high": iv.normal_high,
                   "std_err": iv.std_err, "n": iv.n}
            for name, iv in self.summary.items()}
        out["n_users"] = self.n_users
        out["confidence"] = self.confidence
        out["n_bootstrap"] = self.n_bootstrap
        out["info"] = self.info
        out["per_user"] = {c: self.per_user.column(c).to_pylist()
                           for c in self.per_user.column_names}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        def num(x: Any) -> float:
            return float("nan") if x is None else float(x)

        reserved = {"n_users", "confidence", "n_bootstrap", "info", "per_user"}
        summary = {k: Interval(num(v["mean"]), num(v["ci_low"]), num(v["ci_high"]),
                               num(v["normal_low"]), num(v["normal_high"]),
                               num(v["std_err"]), int(v["n"]))
                   for k, v in data.items() if k not in reserved}
        cols: dict[str, pa.Array] = {}
        for c, vals in data.get("per_user", {}).items():
            if c == "user":
                cols[c] = pa.array(vals, pa.int32())
            elif c == "n_relevant":
                cols[c] = pa.array(vals, pa.int64())
            else:
                cols[c] = pa.array([num(v) for v in vals], pa.float64())
        return cls(summary, pa.table(cols), int(data["n_users"]),
                   float(data.get("confidence", 0.95)), int(data.get("n_bootstrap", 0)),
                   dict(data.get("info", {})))

    def rows(self) -> list[dict[str, Any]]:
        pct = round(self.confidence * 100)
        return [{"metric": k, "mean": v.mean, f"{pct}% CI low": v.ci_low,
                 f"{pct}% CI high": v.ci_high, "normal low": v.normal_low,
                 "normal high": v.normal_high, "users": v.n} for k, v in self.summary.items()]

    def rich_table(self) -> Table:
        pct = round(self.confidence * 100)
        t = Table(title=f"Offline evaluation ({self.n_users} users; {pct}% bootstrap CI)")
        for col in ("metric", "mean", f"{pct}% CI", "normal CI", "users"):
            t.add_column(col, justify="left" if col == "metric" else "right")
        for k, v in self.summary.items():
            t.add_row(k, f"{v.mean:.4f}", f"[{v.ci_low:.4f}, {v.ci_high:.4f}]",
                      f"[{v.normal_low:.4f}, {v.normal_high:.4f}]", str(v.n))
        return t

    def to_html(self) -> str:
        rep = HtmlReport("Offline evaluation", f"{self.n_users} users")
        rep.heading("Metrics").table(self.rows())
        if self.info:
            rep.heading("Protocol").key_values({k: str(v) for k, v in self.info.items()})
        return rep.render()


def _as_csr(exclude: Relevance | sp.spmatrix | None) -> tuple[np.ndarray | None,
                                                              np.ndarray | None]:
    if exclude is None:
        return None, None
    if isinstance(exclude, Relevance):
        m = exclude.to_csr()
    else:
        m = sp.csr_matrix(exclude)
    m = m.copy()
    m.sort_indices()
    m.sum_duplicates()
    return m.indptr.astype(np.int64), m.indices.astype(np.int32)


def _sorted_truth(truth: Relevance) -> Relevance:
    """Truth with sorted indices per user (the kernel's binary search needs it), without
    a copy when already sorted; a repeated (user, item) pair is an error."""
    status, row = csr_order_problem(truth.indptr, truth.indices)
    if status == 0:
        return truth
    if status == 1:
        m = truth.to_csr().copy()
        m.sort_indices()
        truth = Relevance(m.indptr, m.indices, m.data if truth.grades is not None else None,
                          n_items=truth.n_items)
        status, row = csr_order_problem(truth.indptr, truth.indices)
    if status == 2:
        raise DataValidationError(f"user {row} lists an item twice in the truth",
                                  column="indices", row=row)
    return truth


def evaluate(rankings: RankedLists, truth: Relevance,
             metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS, *,
             exclude: Relevance | sp.spmatrix | None = None,
             n_items: int | None = None, bootstrap: int = 1000, confidence: float = 0.95,
             missing: MissingPolicy = "zero",
             seed: int | np.random.Generator | None = 0) -> EvaluationResult:
    """Exact ranking metrics of ``rankings`` against ``truth``, with intervals.

    * ``metrics``: names like ``ndcg@10``, ``recall@20``, ``mrr``, ``map@100``, ``auc``
      (see :data:`recscope.offline.metrics.METRIC_NAMES`); all cut-offs in one pass.
    * ``exclude``: items per user (CSR over user indices) removed from lists and truth,
      usually the training items (the full-ranking protocol with seen-item exclusion).
    * ``n_items``: catalogue size, needed by ``auc`` (default ``truth.n_items``).
    * ``bootstrap``: bootstrap resamples over users for the intervals (0: normal only).
    * ``missing``: users with relevant items but no list score 0 (``zero``, as
      ``trec_eval -c``), are left out (``skip``) or raise (``error``).

    Users without relevant items (after exclusion) are not counted in the aggregates;
    their count is reported in ``info["n_users_without_relevant"]``.
    """
    specs: list[MetricSpec] = parse_metrics(list(metrics))
    if missing not in ("zero", "skip", "error"):
        raise ConfigError(f"missing must be zero, skip or error, got {missing!r}",
                          key="missing")
    if not isinstance(rankings, RankedLists) or not isinstance(truth, Relevance):
        raise ConfigError("evaluate expects (RankedLists, Relevance)", key="rankings")
    truth = _sorted_truth(truth)
    n_cat = int(n_items if n_items is not None else (truth.n_items or 0))
    if any(s.name == "auc" for s in specs) and n_cat <= 0:
        raise ConfigError("auc needs the catalogue size: pass n_items or set "
                          "truth.n_items", key="n_items")
    users, items = rankings.users, rankings.items
    if len(users) and (users.min() < 0):
        raise DataValidationError("negative user index in rankings", column="users",
                                  row=int(np.flatnonzero(users < 0)[0]))
    uniq, counts = np.unique(users, return_counts=True)
    if (counts > 1).any():
        raise DataValidationError(f"user {int(uniq[counts > 1][0])} has more than one list",
                                  column="users")
    info: dict[str, Any] = {"protocol": "full ranking", "missing_policy": missing,
                            "seen_items_excluded": exclude is not None}
    # users with relevant items but no list
    has_rel = np.flatnonzero(truth.counts() > 0)
    absent = np.setdiff1d(has_rel, uniq, assume_unique=True).astype(np.int32)
    info["n_users_missing_list"] = len(absent)
    if len(absent):
        if missing == "error":
            raise DataValidationError(
                f"{len(absent)} users have relevant items but no ranked list "
                f"(first: user {int(absent[0])})", column="users")
        if missing == "zero":
            warnings.warn(f"{len(absent)} users with relevant items have no ranked list; "
                          f"they score 0 (missing='zero')", MissingUsersWarning, stacklevel=2)
            users = np.concatenate([users, absent])
            items = np.concatenate([items, np.full((len(absent), items.shape[1]), -1,
                                                   dtype=np.int32)])
    ex_ptr, ex_ind = _as_csr(exclude)
    values, n_rel = compute_metrics(users, items, truth.indptr, truth.indices, truth.grades,
                                    specs, n_items=n_cat, ex_indptr=ex_ptr, ex_indices=ex_ind)
    counted = n_rel > 0
    info["n_users_without_relevant"] = int((~counted).sum())
    info["n_users_in_rankings_not_in_truth"] = int((uniq >= truth.n_users).sum())
    ivs = intervals(values[counted], n_boot=bootstrap, confidence=confidence, seed=seed)
    columns: dict[str, Any] = {"user": pa.array(users, pa.int32()),
                               "n_relevant": pa.array(n_rel, pa.int64())}
    for j, s in enumerate(specs):
        columns[s.label] = pa.array(values[:, j], pa.float64())
    return EvaluationResult({s.label: iv for s, iv in zip(specs, ivs, strict=True)},
                            pa.table(columns), int(counted.sum()), confidence, bootstrap, info)
