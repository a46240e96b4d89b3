"""Slices: metrics with intervals per group of users, or per group of relevant items.

* :func:`slice_users` splits the per-user table by a label per user (a cohort, a surface,
  an activity bucket from :func:`activity_buckets`).
* :func:`slice_items` re-evaluates with the truth restricted to each item group (for
  example popularity buckets from :func:`popularity_buckets`): "how well do we retrieve
  relevant long-tail items?".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from rich.table import Table

from recscope.data.rankings import RankedLists, Relevance
from recscope.errors import ConfigError
from recscope.offline.evaluate import EvaluationResult, evaluate
from recscope.offline.per_user import intervals
from recscope.report.tables import rich_table
from recscope.results import Effect, Result


@dataclass
class SliceResult(Result):
    """One :class:`~recscope.results.Effect` per (slice, metric) with extra ``by`` (what
    the slices are of) and ``slice`` (the group's label); ``sizes[label]``: users counted."""

    kind: ClassVar[str] = "slices"
    title: ClassVar[str] = "Slices"

    by: str
    estimates: list[Effect]
    sizes: dict[str, int]
    confidence: float = 0.95
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def groups(self) -> dict[str, dict[str, Effect]]:
        """``groups[label][metric]``."""
        out: dict[str, dict[str, Effect]] = {}
        for e in self.estimates:
            out.setdefault(e["slice"], {})[e.metric] = e
        return out

    def effects(self) -> list[Effect]:
        return list(self.estimates)

    def rows(self) -> list[dict[str, Any]]:
        return [{"slice": e["slice"], "metric": e.metric, "estimate": e.estimate,
                 "ci_low": e.ci_low, "ci_high": e.ci_high, "n": e.n} for e in self.estimates]

    def rich_table(self) -> Table:
        return rich_table(self.rows(), title=f"Slices by {self.by} "
                                             f"({round(self.confidence * 100)}% CI)")


def _tag(rows: list[Effect], by: str, label: str) -> list[Effect]:
    return [replace(e, extra={**e.extra, "by": by, "slice": label}) for e in rows]


def slice_users(result: EvaluationResult, labels: np.ndarray | pa.Array, *, by: str = "slice",
                n_boot: int | None = None, seed: int | np.random.Generator | None = 0,
                ) -> SliceResult:
    """Per-slice means and intervals; ``labels[u]`` is user index ``u``'s group (None or
    NaN: no group). Users are those counted in ``result``."""
    lab = labels.to_pylist() if isinstance(labels, pa.Array | pa.ChunkedArray) else \
        list(np.asarray(labels, dtype=object))
    users = result.per_user.column("user").to_numpy()
    if len(users) and users.max() >= len(lab):
        raise ConfigError(f"slice labels cover {len(lab)} users but rankings reach user "
                          f"{int(users.max())}", key="slice")
    per = np.array([lab[u] for u in users], dtype=object)
    boots = result.bootstrap if n_boot is None else n_boot
    rows: list[Effect] = []
    sizes: dict[str, int] = {}
    values = np.column_stack([result.values(m) for m in result.metrics])
    keys = sorted({str(v) for v in per if v is not None and v == v}, key=_natural)
    for key in keys:
        mask = np.array([v is not None and v == v and str(v) == key for v in per])
        ivs = intervals(values[mask], result.metrics, n_boot=boots,
                        confidence=result.confidence, seed=seed)
        rows += _tag(ivs, by, key)
        sizes[key] = int(np.sum(~np.isnan(values[mask]).all(axis=1)))
    return SliceResult(by, rows, sizes, result.confidence)


def _natural(s: str) -> tuple[int, float | str]:
    try:
        return (0, float(s.split("-")[0].strip("[(")))
    except ValueError:
        return (1, s)


def activity_buckets(history: Relevance | np.ndarray, edges: tuple[int, ...] = (5, 20, 100),
                     ) -> np.ndarray:
    """Label each user by history length: ``"<5"``, ``"5-19"``, ``"20-99"``, ``">=100"``."""
    counts = history.counts() if isinstance(history, Relevance) else np.asarray(history)
    names = [f"<{edges[0]}"] + [f"{a}-{b - 1}" for a, b in itertools.pairwise(edges)] + \
        [f">={edges[-1]}"]
    return np.array(names, dtype=object)[np.searchsorted(np.asarray(edges), counts,
                                                          side="right")]


def popularity_buckets(item_counts: np.ndarray, cuts: tuple[float, float] = (0.2, 0.8),
                       ) -> np.ndarray:
    """Label items ``head`` / ``mid`` / ``tail``: sorted by popularity, the most popular items
    that together hold the first ``cuts[0]`` of all interactions are head, those up to
    ``cuts[1]`` mid, the rest tail (items never seen are tail)."""
    c = np.asarray(item_counts, dtype=np.float64)
    order = np.argsort(-c, kind="stable")
    before = (np.cumsum(c[order]) - c[order]) / max(c.sum(), 1.0)  # share before the item
    lab = np.where(before < cuts[0], 0, np.where(before < cuts[1], 1, 2))
    lab[c[order] == 0] = 2
    out = np.empty(len(c), dtype=object)
    out[order] = np.array(["head", "mid", "tail"], dtype=object)[lab]
    return out


def slice_items(rankings: RankedLists, truth: Relevance, groups: np.ndarray,
                metrics: list[str], *, by: str = "item group", **kwargs: Any) -> SliceResult:
    """Evaluate with the truth restricted to each item group (``groups[i]`` labels item i);
    a user counts in a group when it has a relevant item of that group."""
    g = np.asarray(groups, dtype=object)
    csr = truth.to_csr()
    item_lab = g[csr.indices] if len(csr.indices) else np.array([], dtype=object)
    rows: list[Effect] = []
    sizes: dict[str, int] = {}
    conf = kwargs.get("confidence", 0.95)
    for key in sorted({str(x) for x in g if x is not None}, key=_natural):
        keep = np.array([str(x) == key for x in item_lab], dtype=bool)
        sub = csr.copy()
        sub.data = np.where(keep, sub.data, 0.0)
        sub.eliminate_zeros()
        part = Relevance.from_csr(sub, graded=truth.grades is not None)
        res = evaluate(rankings, part, metrics, missing="skip", **kwargs)
        rows += _tag(res.estimates, by, key)
        sizes[key] = res.n_users
    return SliceResult(by, rows, sizes, conf)
