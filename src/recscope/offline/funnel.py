"""Stage funnel: where along a multi-stage pipeline are relevant items lost?

For every stage trace of a :class:`RankedLists` (candidates after retrieval, ranking,
re-ranking, in pipeline order) and for the final list, the share of each user's relevant
items still present, with intervals over users; the drop between consecutive stages is a
paired difference on the same users, with its own interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
from rich.table import Table

from recscope.data.rankings import RankedLists, Relevance
from recscope.errors import ConfigError
from recscope.offline.stats import Interval, intervals
from recscope.report import HtmlReport, Result


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
    """``stages[name]``: share of relevant items still present after that stage;
    ``losses[name]``: the drop from the previous stage (paired, same users)."""

    stages: dict[str, Interval]
    losses: dict[str, Interval]
    sizes: dict[str, int]
    n_users: int
    confidence: float = 0.95
    info: dict[str, Any] = field(default_factory=dict)
    kind = "funnel"

    def to_dict(self) -> dict[str, Any]:
        def d(iv: Interval) -> dict[str, Any]:
            return {"mean": iv.mean, "ci_low": iv.ci_low, "ci_high": iv.ci_high,
                    "normal_low": iv.normal_low, "normal_high": iv.normal_high,
                    "std_err": iv.std_err, "n": iv.n}

        return {"stages": {k: d(v) for k, v in self.stages.items()},
                "losses": {k: d(v) for k, v in self.losses.items()},
                "sizes": self.sizes, "n_users": self.n_users, "confidence": self.confidence,
                "info": self.info}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FunnelResult:
        def iv(d: dict[str, Any]) -> Interval:
            vals = [float("nan") if d[k] is None else d[k] for k in
                    ("mean", "ci_low", "ci_high", "normal_low", "normal_high", "std_err")]
            return Interval(*vals, n=d["n"])

        return cls({k: iv(v) for k, v in data["stages"].items()},
                   {k: iv(v) for k, v in data["losses"].items()}, dict(data["sizes"]),
                   int(data["n_users"]), data.get("confidence", 0.95),
                   dict(data.get("info", {})))

    def rows(self) -> list[dict[str, Any]]:
        return [{"stage": k, "candidates": self.sizes[k], "relevant kept": v.mean,
                 "CI low": v.ci_low, "CI high": v.ci_high, "lost here": self.losses[k].mean,
                 "lost CI low": self.losses[k].ci_low, "lost CI high": self.losses[k].ci_high}
                for k, v in self.stages.items()]

    def rich_table(self) -> Table:
        t = Table(title=f"Stage funnel ({self.n_users} users with relevant items)")
        for col in ("stage", "candidates", "relevant kept [CI]", "lost here [CI]"):
            t.add_column(col, justify="left" if col == "stage" else "right")
        for k, v in self.stages.items():
            lo = self.losses[k]
            t.add_row(k, str(self.sizes[k]), f"{v.mean:.3f} [{v.ci_low:.3f}, {v.ci_high:.3f}]",
                      f"{lo.mean:.3f} [{lo.ci_low:.3f}, {lo.ci_high:.3f}]")
        return t

    def to_html(self) -> str:
        import plotly.graph_objects as go

        rep = HtmlReport("Stage funnel", f"{self.n_users} users with relevant items")
        names = list(self.stages)
        fig = go.Figure(go.Bar(
            x=names, y=[self.stages[k].mean for k in names],
            error_y={"type": "data", "symmetric": False,
                     "array": [self.stages[k].ci_high - self.stages[k].mean for k in names],
                     "arrayminus": [self.stages[k].mean - self.stages[k].ci_low
                                    for k in names]}))
        fig.update_layout(yaxis_title="share of relevant items present", height=360)
        return rep.figure(fig).table(self.rows()).render()


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
    ivs = intervals(np.column_stack([shares, drops]), n_boot=n_boot, confidence=confidence,
                    seed=seed)
    names = list(cands)
    n = len(names)
    sizes = {k: int(v.shape[1]) for k, v in cands.items()}
    return FunnelResult(dict(zip(names, ivs[:n], strict=True)),
                        dict(zip(names, ivs[n:], strict=True)), sizes, int(counted.sum()),
                        confidence)
