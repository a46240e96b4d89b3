"""Stage funnel: where along a multi-stage pipeline are relevant items lost?

For every stage trace of a :class:`RankedLists` (candidates after retrieval, ranking,
re-ranking, in pipeline order) and for the final list, the share of each user's relevant
items still present, with intervals over users; the drop between consecutive stages is a
paired difference on the same users, with its own interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numba
import numpy as np
from rich.table import Table

from recscope.data.rankings import RankedLists, Relevance
from recscope.errors import ConfigError
from recscope.offline.per_user import intervals
from recscope.report.tables import rich_table
from recscope.results import Effect, Result


@numba.njit(cache=True, parallel=True, nogil=True)
def _present_share(users: np.ndarray, cand: np.ndarray, indptr: np.ndarray,
                   indices: np.ndarray, grades: np.ndarray, graded: bool, n_marks: int,
                   n_chunks: int, out: np.ndarray) -> None:
    """``out[i]``: share of user ``users[i]``'s relevant items among ``cand[i]`` (NaN if
    the user has none)."""
    n, m = cand.shape
    n_truth = indptr.shape[0] - 1
    chunk = (n + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        mark = np.zeros(n_marks, dtype=np.bool_)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            u = users[i]
            r0 = indptr[u] if u < n_truth else 0
            r1 = indptr[u + 1] if u < n_truth else 0
            n_rel = 0
            for j in range(r0, r1):
                if not graded or grades[j] > 0:
                    mark[indices[j]] = True
                    n_rel += 1
            found = 0
            for j in range(m):
                it = cand[i, j]
                if it >= 0 and it < n_marks and mark[it]:
                    found += 1
                    mark[it] = False
            for j in range(r0, r1):
                mark[indices[j]] = False
            out[i] = found / n_rel if n_rel > 0 else np.nan


def present_share(rankings: RankedLists, candidates: np.ndarray, truth: Relevance,
                  ) -> np.ndarray:
    """Per-user share of relevant items present in ``candidates`` ([n, m], -1 padded)."""
    out = np.empty(len(rankings), dtype=np.float64)
    n_marks = int(truth.indices.max()) + 1 if len(truth.indices) else 1
    graded = truth.grades is not None
    _present_share(rankings.users, np.ascontiguousarray(candidates, dtype=np.int32),
                   truth.indptr, truth.indices,
                   truth.grades if graded else np.zeros(0), graded, n_marks,
                   max(1, min(len(rankings), 8 * numba.get_num_threads())), out)
    return out


@dataclass
class FunnelResult(Result):
    """``stages``: one :class:`~recscope.results.Effect` per stage, the share of relevant
    items still present after it (extra ``share = "kept"``, ``candidates``: list width);
    ``losses``: the drop from the previous stage (paired, same users; extra
    ``share = "lost"``), each metric named after its stage."""

    kind: ClassVar[str] = "funnel"
    title: ClassVar[str] = "Stage funnel"

    stages: list[Effect]
    losses: list[Effect]
    n_users: int
    confidence: float = 0.95
    info: dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str) -> Effect:
        """The share kept after stage ``name``."""
        return _named(self.stages, name)

    def loss(self, name: str) -> Effect:
        """The share lost at stage ``name``."""
        return _named(self.losses, name)

    def effects(self) -> list[Effect]:
        return [*self.stages, *self.losses]

    def rows(self) -> list[dict[str, Any]]:
        return [{"stage": s.metric, "candidates": s["candidates"], "relevant kept": s.estimate,
                 "kept CI low": s.ci_low, "kept CI high": s.ci_high,
                 "lost here": lo.estimate, "lost CI low": lo.ci_low, "lost CI high": lo.ci_high}
                for s, lo in zip(self.stages, self.losses, strict=True)]

    def rich_table(self) -> Table:
        return rich_table(self.rows(), title=f"Stage funnel ({self.n_users} users with "
                                             "relevant items)")

    def html_sections(self, page: Any) -> None:
        import plotly.graph_objects as go

        fig = go.Figure(go.Bar(
            x=[s.metric for s in self.stages], y=[s.estimate for s in self.stages],
            error_y={"type": "data", "symmetric": False,
                     "array": [s.ci_high - s.estimate for s in self.stages],
                     "arrayminus": [s.estimate - s.ci_low for s in self.stages]}))
        fig.update_layout(yaxis_title="share of relevant items present", height=360)
        page.figure(fig)


def _named(rows: list[Effect], name: str) -> Effect:
    for e in rows:
        if e.metric == name:
            return e
    raise ConfigError(f"no stage named {name!r}; have {[e.metric for e in rows]}",
                      key="stage")


def funnel(rankings: RankedLists, truth: Relevance, *, stages: list[str] | None = None,
           final: str | None = "final", n_boot: int = 1000, confidence: float = 0.95,
           seed: int | np.random.Generator | None = 0) -> FunnelResult:
    """The stage funnel of ``rankings.traces`` (in the given or insertion order) followed
    by the final list (named ``final``; ``None`` leaves it out). Users without relevant
    items are not counted."""
    order = list(stages) if stages is not None else list(rankings.traces)
    for s in order:
        if s not in rankings.traces:
            raise ConfigError(f"no trace named {s!r}; have {list(rankings.traces)}",
                              key="stages")
    cands = {s: rankings.traces[s] for s in order}
    if final is not None:
        cands[final] = rankings.items
    if not cands:
        raise ConfigError("no stage to report: the rankings carry no traces", key="stages")
    shares = np.column_stack([present_share(rankings, c, truth) for c in cands.values()])
    counted = ~np.isnan(shares[:, 0])
    shares = shares[counted]
    drops = np.column_stack([1.0 - shares[:, 0]] +
                            [shares[:, j - 1] - shares[:, j] for j in range(1, shares.shape[1])])
    names = list(cands)
    ivs = intervals(np.column_stack([shares, drops]), names + names, n_boot=n_boot,
                    confidence=confidence, seed=seed)
    n = len(names)
    kept = [replace(e, extra={**e.extra, "share": "kept",
                              "candidates": int(cands[e.metric].shape[1])}) for e in ivs[:n]]
    lost = [replace(e, extra={**e.extra, "share": "lost"}) for e in ivs[n:]]
    return FunnelResult(kept, lost, int(counted.sum()), confidence)
