"""``evaluate(rankings, truth, metrics)``: the offline entry point, and its result.

The full-ranking protocol is the default: lists are ranked over the whole catalogue and
items in ``exclude`` (typically each user's training items) are dropped from the lists
and from the relevant set before scoring. The per-user table (Arrow) is always kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
from recscope.offline.per_user import check_bootstrap, intervals
from recscope.report.tables import rich_table
from recscope.results import ArrowTable, Effect, Result

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@10", "precision@10", "hit_rate@10",
                                    "mrr", "map@100")
MissingPolicy = Literal["zero", "skip", "error"]


class MissingUsersWarning(UserWarning):
    """Users with relevant items have no ranked list (they score 0 by default)."""


#: Columns of the metric rows shown in tables (JSON keeps every field).
ROW_COLUMNS = ("metric", "estimate", "ci_low", "ci_high", "normal_low", "normal_high", "se",
               "n")


@dataclass
class EvaluationResult(Result):
    """Aggregates with intervals and the per-user table of one evaluation.

    ``estimates`` holds one :class:`~recscope.results.Effect` per metric: ``estimate`` the
    mean over counted users, ``ci_low``/``ci_high`` the bootstrap interval, ``se`` the
    standard error, ``n`` the users counted, and the normal interval (``normal_low``,
    ``normal_high``) in its extra fields. ``per_user`` has a ``user`` column (dense index),
    ``n_relevant`` and one column per metric (NaN where a user has no relevant item and is
    therefore not counted). ``slices`` holds per-slice rows (extra ``by`` and ``slice``)
    when the evaluation was sliced.
    """

    kind: ClassVar[str] = "evaluation"
    title: ClassVar[str] = "Offline evaluation"

    estimates: list[Effect]
    per_user: ArrowTable
    n_users: int
    confidence: float = 0.95
    bootstrap: int = 1000
    info: dict[str, Any] = field(default_factory=dict)
    system: str = ""
    slices: list[Effect] = field(default_factory=list)

    # --------------------------------------------------------------- access
    @property
    def summary(self) -> dict[str, Effect]:
        """``{metric: Effect}`` in evaluation order."""
        return {e.metric: e for e in self.estimates}

    @property
    def metrics(self) -> list[str]:
        return [e.metric for e in self.estimates]

    def mean(self, name: str) -> float:
        """Mean of metric ``name`` over evaluated users (its estimate)."""
        return self._get(name).estimate

    def ci(self, name: str, kind: Literal["bootstrap", "normal"] = "bootstrap",
           ) -> tuple[float, float]:
        """The interval of metric ``name`` (bootstrap percentile or analytic normal)."""
        e = self._get(name)
        return (e.ci_low, e.ci_high) if kind == "bootstrap" else (e["normal_low"],
                                                                    e["normal_high"])

    def values(self, name: str) -> np.ndarray:
        """Per-user values of metric ``name`` (NaN for users not counted)."""
        return self.per_user.column(self._label(name)).to_numpy(zero_copy_only=False)

    def as_dict(self) -> dict[str, float]:
        """``{metric: mean}``, e.g. for logging or early stopping."""
        return {e.metric: e.estimate for e in self.estimates}

    def _label(self, name: str) -> str:
        if name in self.summary:
            return name
        label = parse_metrics([name])[0].label
        if label not in self.summary:
            raise ConfigError(f"metric {name!r} was not evaluated; have {self.metrics}",
                              key="metric")
        return label

    def _get(self, name: str) -> Effect:
        return self.summary[self._label(name)]

    # --------------------------------------------------------------- Result contract
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Inverse of ``to_dict``; the per-user table gets its types back (``user`` int32,
        ``n_relevant`` int64, metrics float64 with NaN where JSON has null)."""
        res = super().from_dict(data)
        t = res.per_user
        cols = {}
        for name in t.column_names:
            if name == "user":
                cols[name] = t.column(name).cast(pa.int32())
            elif name == "n_relevant":
                cols[name] = t.column(name).cast(pa.int64())
            else:
                cols[name] = pc.fill_null(t.column(name).cast(pa.float64()), float("nan"))
        res.per_user = pa.table(cols)
        return res

    def effects(self) -> list[Effect]:
        return list(self.estimates)

    def rows(self) -> list[dict[str, Any]]:
        return [{c: e[c] for c in ROW_COLUMNS} for e in self.estimates]

    def notes(self) -> list[str]:
        out = []
        if self.info.get("n_users_missing_list"):
            out.append(f"{self.info['n_users_missing_list']} users with relevant items have "
                       f"no ranked list ({self.info.get('missing_policy')})")
        return out

    def rich_table(self) -> Table:
        pct = round(self.confidence * 100)
        name = f"{self.system}: " if self.system else ""
        return rich_table(self.rows(), title=f"{name}offline evaluation ({self.n_users} "
                                            f"users; {pct}% bootstrap CI)",
                          notes=self.notes())

    def html_sections(self, page: Any) -> None:
        page.figure(metric_bars({self.system or "rankings": self}))
        if self.slices:
            page.heading("Slices").table([e.to_dict() for e in self.slices])
        if self.info:
            page.heading("Protocol").key_values({k: str(v) for k, v in self.info.items()})


def metric_bars(results: dict[str, EvaluationResult]) -> Any:
    """A Plotly bar chart of each system's metric estimates with their intervals."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, res in results.items():
        fig.add_bar(name=name, x=res.metrics, y=[e.estimate for e in res.estimates],
                    error_y={"type": "data", "symmetric": False,
                             "array": [e.ci_high - e.estimate for e in res.estimates],
                             "arrayminus": [e.estimate - e.ci_low for e in res.estimates]})
    fig.update_layout(barmode="group", height=380, margin={"t": 30},
                      yaxis_title="mean over users")
    return fig


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
    check_bootstrap(bootstrap, confidence)
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
    ivs = intervals(values[counted], [s.label for s in specs], n_boot=bootstrap,
                    confidence=confidence, seed=seed)
    columns: dict[str, Any] = {"user": pa.array(users, pa.int32()),
                               "n_relevant": pa.array(n_rel, pa.int64())}
    for j, s in enumerate(specs):
        columns[s.label] = pa.array(values[:, j], pa.float64())
    return EvaluationResult(ivs, pa.table(columns), int(counted.sum()), confidence, bootstrap,
                            info)
