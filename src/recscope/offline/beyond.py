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

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from rich.table import Table
from scipy import stats as sps

from recscope.data.rankings import RankedLists, Relevance
from recscope.errors import ConfigError
from recscope.offline.per_user import _bootstrap_means, _seed64, intervals
from recscope.report.tables import rich_table
from recscope.results import Effect, Result


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
    h = train.to_csr()
    cnt = np.diff(h.indptr).astype(np.float64)
    sums = np.bincount(np.repeat(np.arange(h.shape[0]), np.diff(h.indptr)),
                       weights=pop[h.indices], minlength=h.shape[0])
    inside = rankings.users < h.shape[0]
    u = np.where(inside, rankings.users, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        hist = np.where(inside & (cnt[u] > 0), sums[u] / cnt[u], np.nan)
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
    ok = items >= 0
    m = ok.sum(axis=1).astype(np.float64)
    rows = np.repeat(np.arange(len(items)), ok.sum(axis=1))
    if embeddings is not None:
        e = np.asarray(embeddings, dtype=np.float64)
        norm = np.linalg.norm(e, axis=1, keepdims=True)
        e = e / np.where(norm > 0, norm, 1.0)
        lists = sp.csr_matrix((np.ones(len(rows)), (rows, items[ok])),
                              shape=(len(items), len(e)))
        total = np.asarray(lists @ e)  # sum of the list's unit vectors
        self_sim = np.asarray(lists @ (e * e).sum(axis=1)).ravel()
        pair_sim = (total * total).sum(axis=1) - self_sim  # sum over ordered pairs i != j
    else:
        _, lab = np.unique(np.asarray(topics, dtype=object).astype(str), return_inverse=True)
        c = sp.csr_matrix((np.ones(len(rows)), (rows, lab[items[ok]])),
                          shape=(len(items), int(lab.max()) + 1 if len(lab) else 1))
        c.sum_duplicates()
        pair_sim = np.asarray((c.multiply(c) - c).sum(axis=1)).ravel()  # same-topic pairs
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(m >= 2, 1.0 - pair_sim / (m * (m - 1)), np.nan)


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
                      seed: int | np.random.Generator | None = 0) -> dict[str, Effect]:
    """Coverage and exposure Gini with basic (bias-corrected) bootstrap intervals over
    users (users resampled with replacement; the lists of the resample define exposure).
    Both are biased in finite samples (coverage low, Gini high); when that bias exceeds
    the sampling spread the interval can exclude the plug-in value."""
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
        if n_boot:
            # basic (bias-corrected) bootstrap: resampling users inflates concentration
            # and deflates coverage, so percentile intervals would be shifted
            lo = 2 * v - float(np.quantile(b, 1 - a / 2))
            hi = 2 * v - float(np.quantile(b, a / 2))
        else:
            lo = hi = v
        se = float(b.std(ddof=1)) if n_boot > 1 else float("nan")
        z = float(sps.norm.ppf(0.5 + confidence / 2))
        out[name] = Effect(name, v, lo, hi, se, n=n,
                           extra={"normal_low": v - z * se, "normal_high": v + z * se})
    return out


def exposure_fairness(rankings: RankedLists, truth: Relevance, groups: np.ndarray, *,
                      k: int | None = None, n_boot: int = 1000, confidence: float = 0.95,
                      seed: int | np.random.Generator | None = 0) -> list[Effect]:
    """Per item group, one :class:`Effect` (metric ``exposure_ratio``): the ratio of the
    group's share of position-discounted exposure (1/log2(rank+1)) to its share of
    relevance (relevant (user, item) pairs of the listed users in ``truth``), 1 =
    exposure in proportion to relevance, < 1 under-exposed, with a percentile interval
    from a bootstrap over users; extra ``group``, ``items``, ``exposure_share``,
    ``relevance_share``. ``groups[i]`` labels item i."""
    g = np.asarray(groups, dtype=object).astype(str)
    names, lab = np.unique(g, return_inverse=True)
    n_items, n_g = len(g), len(names)
    member = sp.csr_matrix((np.ones(n_items), (np.arange(n_items), lab)), shape=(n_items, n_g))
    items = _cut(rankings, k)
    exp = (_exposure_matrix(np.where(items < n_items, items, -1), n_items, True)
           @ member).toarray()
    t = truth.to_csr()
    inside = rankings.users < t.shape[0]
    rel = np.zeros((len(items), n_g))
    if inside.any():
        sub = t[rankings.users[inside]]
        sub = sp.csr_matrix((np.ones(sub.nnz), sub.indices, sub.indptr), shape=sub.shape)
        sub = sub[:, :n_items] if sub.shape[1] >= n_items else sp.hstack(
            [sub, sp.csr_matrix((sub.shape[0], n_items - sub.shape[1]))]).tocsr()
        rel[inside] = (sub @ member).toarray()
    cols = np.ascontiguousarray(np.column_stack([exp, rel]))

    def ratio(means: np.ndarray) -> np.ndarray:
        e, r = means[..., :n_g], means[..., n_g:]
        with np.errstate(invalid="ignore", divide="ignore"):
            es = e / e.sum(axis=-1, keepdims=True)
            rs = r / r.sum(axis=-1, keepdims=True)
            return np.stack([es, rs, es / np.where(rs > 0, rs, np.nan)])  # no relevance: NaN

    est = ratio(cols.mean(axis=0))
    lo = hi = np.full(n_g, np.nan)
    if n_boot and len(cols) > 1:
        boots = ratio(_bootstrap_means(cols, int(n_boot), _seed64(seed)))[2]
        a = 1 - confidence
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanquantile(boots, a / 2, axis=0), np.nanquantile(boots, 1 - a / 2, axis=0)
    return [Effect("exposure_ratio", float(est[2, j]), float(lo[j]), float(hi[j]),
                   n=len(cols), extra={"group": str(names[j]), "items": int((lab == j).sum()),
                                       "exposure_share": float(est[0, j]),
                                       "relevance_share": float(est[1, j])})
            for j in range(n_g)]


@dataclass
class BeyondResult(Result):
    """Beyond-accuracy aggregates (one :class:`~recscope.results.Effect` per metric), plus
    the exposure-fairness rows (metric ``exposure_ratio``, one per item group)."""

    kind: ClassVar[str] = "beyond_accuracy"
    title: ClassVar[str] = "Beyond-accuracy metrics"

    estimates: list[Effect]
    fairness: list[Effect] = field(default_factory=list)
    confidence: float = 0.95

    @property
    def summary(self) -> dict[str, Effect]:
        """``{metric: Effect}``."""
        return {e.metric: e for e in self.estimates}

    def effects(self) -> list[Effect]:
        return [*self.estimates, *self.fairness]

    def rows(self) -> list[dict[str, Any]]:
        return [{"metric": e.metric if "group" not in e.extra else
                 f"exposure/relevance ({e['group']})", "estimate": e.estimate,
                 "ci_low": e.ci_low, "ci_high": e.ci_high, "n": e.n} for e in self.effects()]

    def rich_table(self) -> Table:
        return rich_table(self.rows(), title=self.title)

    def html_sections(self, page: Any) -> None:
        if self.fairness:
            page.heading("Exposure fairness").table([e.to_dict() for e in self.fairness])


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
    summary = [intervals(v, [name], n_boot=n_boot, confidence=confidence, seed=seed)[0]
               for name, v in per.items()]
    summary += list(catalogue_metrics(rankings, n_cat, k=k, n_boot=min(n_boot, 200),
                                      confidence=confidence, seed=seed).values())
    fair = exposure_fairness(rankings, truth, groups, k=k, n_boot=n_boot,
                             confidence=confidence, seed=seed) \
        if truth is not None and groups is not None else []
    return BeyondResult(summary, fair, confidence)
