"""Beyond-accuracy metrics of ranked lists, with intervals over users.

Per-user metrics (averaged with bootstrap and normal intervals): novelty (mean
self-information −log2 p(i), p(i) the share of training users who interacted with i),
intra-list diversity (mean pairwise cosine distance of item embeddings, or the share of
item pairs with different topics), average recommendation popularity (ARP) and popularity
lift (ARP relative to the user's own history), calibration (Steck 2018: KL divergence
between the topic mix of the history and the smoothed topic mix of the list).

Catalogue-level metrics (intervals from a bootstrap over users): catalogue coverage (share
of items recommended to anyone) and the Gini coefficient of exposure (item counts over the
whole catalogue). Exposure fairness compares, per item group (e.g. creator group), the
share of position-discounted exposure (1/log2(rank+1)) with the share of relevance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from rich.table import Table

from recscope.data.rankings import RankedLists, Relevance
from recscope.errors import ConfigError
from recscope.offline.stats import Interval, _seed64, intervals
from recscope.report import HtmlReport, Result


def _cut(rankings: RankedLists, k: int | None) -> np.ndarray:
    return rankings.items if k is None else rankings.items[:, :k]


def _mean_over_list(items: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per-row mean of ``value[item]`` over real (non-padding) positions; NaN if empty."""
    ok = items >= 0
    v = np.where(ok, value[np.where(ok, items, 0)], 0.0)
    cnt = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, v.sum(axis=1) / np.maximum(cnt, 1), np.nan)


def novelty(rankings: RankedLists, train: Relevance, k: int | None = None) -> np.ndarray:
    """Per-user mean self-information −log2 p(i) of the listed items; p(i) is the share of
    training users with i (items never seen get p = 1/(n_users+1), a finite bound)."""
    n_users = max(train.n_users, 1)
    pop = _item_users(train, _n_items(rankings, train))
    p = np.where(pop > 0, pop / n_users, 1.0 / (n_users + 1))
    return _mean_over_list(_cut(rankings, k), -np.log2(p))


def _n_items(rankings: RankedLists, *truths: Relevance) -> int:
    m = int(rankings.items.max()) + 1 if rankings.items.size else 0
    for t in truths:
        if t.n_items:
            m = max(m, int(t.n_items))
        elif len(t.indices):
            m = max(m, int(t.indices.max()) + 1)
    return m


def _item_users(train: Relevance, n_items: int) -> np.ndarray:
    """Number of training users per item."""
    return np.bincount(train.indices, minlength=n_items).astype(np.float64)[:n_items]


def popularity(rankings: RankedLists, train: Relevance, k: int | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
    """(ARP, popularity lift) per user. ARP is the mean training popularity (share of
    users) of the listed items; lift is ARP / mean popularity of the user's history − 1
    (Abdollahpouri et al. 2020), NaN for users without history."""
    n_users = max(train.n_users, 1)
    pop = _item_users(train, _n_items(rankings, train)) / n_users
    arp = _mean_over_list(_cut(rankings, k), pop)
    hist = np.full(len(rankings), np.nan)
    for row, u in enumerate(rankings.users):
        if u < train.n_users:
            idx = train.indices[train.indptr[u]:train.indptr[u + 1]]
            if len(idx):
                hist[row] = pop[idx].mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        lift = arp / hist - 1.0
    return arp, lift


def intra_list_diversity(rankings: RankedLists, *, embeddings: np.ndarray | None = None,
                         topics: np.ndarray | None = None, k: int | None = None,
                         ) -> np.ndarray:
    """Per-user mean pairwise distance within the list: cosine distance of ``embeddings``
    (items × d) or, with ``topics`` (one label per item), the share of pairs whose topics
    differ. NaN for lists with fewer than two items."""
    if (embeddings is None) == (topics is None):
        raise ConfigError("give exactly one of embeddings or topics", key="diversity")
    items = _cut(rankings, k)
    out = np.full(len(items), np.nan)
    if embeddings is not None:
        e = np.asarray(embeddings, dtype=np.float64)
        norm = np.linalg.norm(e, axis=1, keepdims=True)
        e = e / np.where(norm > 0, norm, 1.0)
    else:
        lab = np.unique(np.asarray(topics, dtype=object).astype(str), return_inverse=True)[1]
    for row in range(len(items)):
        it = items[row][items[row] >= 0]
        m = len(it)
        if m < 2:
            continue
        if embeddings is not None:
            v = e[it]
            sim = v @ v.T
            out[row] = 1.0 - (sim.sum() - np.trace(sim)) / (m * (m - 1))
        else:
            counts = np.bincount(lab[it])
            same = (counts * (counts - 1)).sum()
            out[row] = 1.0 - same / (m * (m - 1))
    return out


def _topic_matrix(topics: np.ndarray | sp.spmatrix, n_items: int) -> sp.csr_matrix:
    """Items × topics, rows normalised to sum 1 (an item's topic distribution)."""
    if sp.issparse(topics) or (isinstance(topics, np.ndarray) and topics.ndim == 2):
        m = sp.csr_matrix(topics, dtype=np.float64)
    else:
        lab = np.asarray(topics, dtype=object).astype(str)
        _, inv = np.unique(lab, return_inverse=True)
        m = sp.csr_matrix((np.ones(len(inv)), (np.arange(len(inv)), inv)))
    if m.shape[0] < n_items:
        m = sp.vstack([m, sp.csr_matrix((n_items - m.shape[0], m.shape[1]))]).tocsr()
    s = np.asarray(m.sum(axis=1)).ravel()
    return sp.diags(np.where(s > 0, 1.0 / np.where(s > 0, s, 1), 0.0)) @ m


def calibration(rankings: RankedLists, history: Relevance, topics: np.ndarray | sp.spmatrix,
                *, alpha: float = 0.01, k: int | None = None) -> np.ndarray:
    """Per-user calibration error KL(p || q̃) (Steck 2018): p the topic mix of the user's
    history, q̃ = (1−α)·q + α·p with q the topic mix of the list. 0 is perfectly
    calibrated; NaN for users without history or with an empty list."""
    n_items = _n_items(rankings, history)
    tm = _topic_matrix(topics, n_items)
    items = _cut(rankings, k)
    ok = items >= 0
    rows = np.repeat(np.arange(len(items)), ok.sum(axis=1))
    lists = sp.csr_matrix((np.ones(ok.sum()), (rows, items[ok])), shape=(len(items), n_items))
    q = np.asarray((lists @ tm).todense())
    q /= np.maximum(q.sum(axis=1, keepdims=True), 1e-300)
    h = history.to_csr()
    h = sp.csr_matrix((np.ones(h.nnz), h.indices, h.indptr), shape=(h.shape[0], n_items)) \
        if h.shape[1] <= n_items else h[:, :n_items]
    in_hist = rankings.users < h.shape[0]
    hu = np.where(in_hist, rankings.users, 0)
    p = np.asarray((h[hu] @ tm).todense())
    p[~in_hist] = 0
    psum = p.sum(axis=1, keepdims=True)
    p = p / np.maximum(psum, 1e-300)
    qt = (1 - alpha) * q + alpha * p
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / qt), 0.0)
    out = terms.sum(axis=1)
    out[(psum.ravel() == 0) | (ok.sum(axis=1) == 0)] = np.nan
    return out


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: equal, → 1: concentrated)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def _exposure_matrix(items: np.ndarray, n_items: int, discount: bool) -> sp.csr_matrix:
    ok = items >= 0
    rows = np.repeat(np.arange(len(items)), ok.sum(axis=1))
    ranks = np.broadcast_to(np.arange(1, items.shape[1] + 1), items.shape)[ok]
    w = 1.0 / np.log2(ranks + 1.0) if discount else np.ones(ok.sum())
    return sp.csr_matrix((w, (rows, items[ok])), shape=(len(items), n_items))


def catalogue_metrics(rankings: RankedLists, n_items: int, *, k: int | None = None,
                      n_boot: int = 200, confidence: float = 0.95,
                      seed: int | np.random.Generator | None = 0) -> dict[str, Interval]:
    """Coverage and exposure Gini with percentile intervals from a bootstrap over users
    (users resampled with replacement; the lists of the resample define exposure)."""
    m = _exposure_matrix(_cut(rankings, k), n_items, discount=False)
    counts = np.asarray(m.sum(axis=0)).ravel()
    est = {"coverage": float((counts > 0).mean()), "gini": gini(counts)}
    rng = np.random.default_rng(int(_seed64(seed)))
    n = m.shape[0]
    boots: dict[str, list[float]] = {"coverage": [], "gini": []}
    for _ in range(n_boot):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        c = m.T @ w
        boots["coverage"].append(float((c > 0).mean()))
        boots["gini"].append(gini(c))
    a = 1 - confidence
    out = {}
    for name, v in est.items():
        b = np.asarray(boots[name])
        lo, hi = (np.quantile(b, a / 2), np.quantile(b, 1 - a / 2)) if n_boot else (v, v)
        se = float(b.std(ddof=1)) if n_boot > 1 else float("nan")
        out[name] = Interval(v, float(lo), float(hi), v - 1.96 * se, v + 1.96 * se, se, n)
    return out


def exposure_fairness(rankings: RankedLists, truth: Relevance, groups: np.ndarray, *,
                      k: int | None = None) -> list[dict[str, Any]]:
    """Per item group: share of position-discounted exposure, share of relevance (relevant
    (user, item) pairs in ``truth``) and their ratio (1 = exposure in proportion to
    relevance; < 1 under-exposed). ``groups[i]`` labels item i (e.g. its creator group)."""
    g = np.asarray(groups, dtype=object).astype(str)
    n_items = len(g)
    exp = np.asarray(_exposure_matrix(_cut(rankings, k), n_items, True).sum(axis=0)).ravel()
    rel = np.bincount(truth.indices[truth.indices < n_items], minlength=n_items)
    out = []
    tot_e, tot_r = exp.sum(), rel.sum()
    for name in sorted(set(g)):
        sel = g == name
        se = exp[sel].sum() / tot_e if tot_e else float("nan")
        sr = rel[sel].sum() / tot_r if tot_r else float("nan")
        out.append({"group": name, "items": int(sel.sum()), "exposure_share": float(se),
                    "relevance_share": float(sr),
                    "ratio": float(se / sr) if sr else float("nan")})
    return out


@dataclass
class BeyondResult(Result):
    """Beyond-accuracy aggregates with intervals, plus the exposure-fairness table."""

    summary: dict[str, Interval]
    fairness: list[dict[str, Any]] = field(default_factory=list)
    confidence: float = 0.95
    kind = "beyond_accuracy"

    def to_dict(self) -> dict[str, Any]:
        return {"summary": {k: {"mean": v.mean, "ci_low": v.ci_low, "ci_high": v.ci_high,
                                "normal_low": v.normal_low, "normal_high": v.normal_high,
                                "std_err": v.std_err, "n": v.n}
                            for k, v in self.summary.items()},
                "fairness": self.fairness, "confidence": self.confidence}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BeyondResult:
        def iv(d: dict[str, Any]) -> Interval:
            vals = [float("nan") if d[k] is None else d[k] for k in
                    ("mean", "ci_low", "ci_high", "normal_low", "normal_high", "std_err")]
            return Interval(*vals, n=d["n"])

        return cls({k: iv(v) for k, v in data["summary"].items()},
                   list(data.get("fairness", [])), data.get("confidence", 0.95))

    def rows(self) -> list[dict[str, Any]]:
        return [{"metric": k, "mean": v.mean, "CI low": v.ci_low, "CI high": v.ci_high,
                 "users": v.n} for k, v in self.summary.items()]

    def rich_table(self) -> Table:
        t = Table(title="Beyond-accuracy metrics")
        for col in ("metric", "value", "CI", "users"):
            t.add_column(col, justify="left" if col == "metric" else "right")
        for k, v in self.summary.items():
            t.add_row(k, f"{v.mean:.4f}", f"[{v.ci_low:.4f}, {v.ci_high:.4f}]", str(v.n))
        for f in self.fairness:
            t.add_row(f"exposure/relevance [{f['group']}]", f"{f['ratio']:.3f}", "", "")
        return t

    def to_html(self) -> str:
        rep = HtmlReport("Beyond-accuracy metrics").table(self.rows())
        if self.fairness:
            rep.heading("Exposure fairness").table(self.fairness)
        return rep.render()


def beyond_accuracy(rankings: RankedLists, train: Relevance, *, k: int | None = None,
                    n_items: int | None = None, topics: np.ndarray | sp.spmatrix | None = None,
                    embeddings: np.ndarray | None = None, truth: Relevance | None = None,
                    groups: np.ndarray | None = None, n_boot: int = 1000,
                    confidence: float = 0.95, seed: int | np.random.Generator | None = 0,
                    ) -> BeyondResult:
    """Every beyond-accuracy metric the inputs allow: coverage, Gini, novelty, ARP and
    lift always; diversity with ``topics`` or ``embeddings``; calibration with ``topics``;
    exposure fairness with ``truth`` and ``groups``."""
    n_cat = int(n_items or _n_items(rankings, train))
    per: dict[str, np.ndarray] = {"novelty": novelty(rankings, train, k)}
    per["arp"], per["popularity_lift"] = popularity(rankings, train, k)
    if embeddings is not None:
        per["ild_embedding"] = intra_list_diversity(rankings, embeddings=embeddings, k=k)
    if topics is not None:
        if not (sp.issparse(topics) or np.ndim(topics) == 2):
            per["ild_topic"] = intra_list_diversity(rankings, topics=topics, k=k)
        per["calibration_kl"] = calibration(rankings, train, topics, k=k)
    names = list(per)
    summary = {}
    for name in names:
        summary[name] = intervals(per[name], n_boot=n_boot, confidence=confidence,
                                  seed=seed)[0]
    summary.update(catalogue_metrics(rankings, n_cat, k=k, n_boot=min(n_boot, 200),
                                     confidence=confidence, seed=seed))
    fair = exposure_fairness(rankings, truth, groups, k=k) if truth is not None and \
        groups is not None else []
    return BeyondResult(summary, fair, confidence)
