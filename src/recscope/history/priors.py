"""Empirical-Bayes priors for experiment readouts, fitted on the history.

Per metric, past experiments' relative effects ``est_i`` with standard errors ``se_i`` are
modelled as ``est_i ~ N(theta_i, se_i^2)``, ``theta_i ~ N(mu, tau^2)``; ``mu`` and ``tau``
maximise the marginal likelihood ``N(est_i; mu, tau^2 + se_i^2)`` (the normal prior that
Eppo and Statsig use for informed priors, fitted here from the history instead of by
hand). A new readout ``(est, se)`` then has the posterior
``N((est/se^2 + mu/tau^2) / w, 1/w)`` with ``w = 1/se^2 + 1/tau^2``: the shrunken effect,
its 95% credible interval and ``P(effect > 0)``.

:func:`apply_prior` puts them beside an experiment scorecard's frequentist results; the
CLI wires it to ``recscope experiment analyze --prior history.parquet`` (experiments sit
below history, so they never import it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from scipy import optimize
from scipy import stats as sps

from recscope.errors import DataValidationError
from recscope.results import Effect, Result

Z95 = float(sps.norm.ppf(0.975))


@dataclass(frozen=True)
class NormalPrior:
    """``theta ~ N(mean, sd^2)`` on a metric's effect, from ``n`` past readouts.

    ``scale="relative"`` puts the prior on the relative effect itself; ``"log"`` on
    ``log(1 + effect)`` (a readout ``(est, se)`` becomes ``(log1p(est), se / (1 + est))``),
    where a readout's standard error no longer grows with its effect. ``shrink`` (lambda,
    0 to 1) scales the normal-normal shrinkage weight: 1 is the plain posterior, 0 leaves
    the readout as it is; :func:`fit_priors` estimates it from the history (cross-group
    SURE). ``families`` holds, per change family, the ``(mean, sd)`` a new readout of that
    family is shrunk toward (a three-level model); an unknown family gets
    ``(mean, sd)``."""

    metric: str
    mean: float
    sd: float
    n: int
    source: str = ""
    scale: str = "relative"
    shrink: float = 1.0
    families: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    family_shrink: float = 1.0
    detail: Mapping[str, Any] = field(default_factory=dict)

    def centre(self, family: str | None = None) -> tuple[float, float]:
        """The prior's ``(mean, sd)`` for a readout of ``family`` (on the prior's scale)."""
        if family is not None and family in self.families:
            return self.families[family]
        return self.mean, self.sd

    def _shrunk(self, est: np.ndarray | float, se: np.ndarray | float,
                family: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd on the prior's scale (NaN where the readout is unusable)."""
        est, se = np.broadcast_arrays(np.asarray(est, float), np.asarray(se, float))
        y, s = to_scale(est, se, self.scale)
        mu, tau = self.centre(family)
        lam = self.family_shrink if family is not None and family in self.families \
            else self.shrink
        with np.errstate(divide="ignore", invalid="ignore"):
            b = lam * (s**2 / (s**2 + tau**2) if tau > 0 else np.ones_like(s))
        return y - b * (y - mu), s * np.sqrt(np.maximum(1 - b, 0.0))

    def posterior(self, est: np.ndarray | float, se: np.ndarray | float,
                  family: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shrunken effect (relative), its sd and P(effect > 0) of readouts ``(est, se)``.

        On the log scale the shrunken effect is ``expm1`` of the posterior mean (the
        posterior median of the relative effect) and its sd the delta-method one."""
        m, sd = self._shrunk(est, se, family)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(sd > 0, sps.norm.sf(0, m, np.where(sd > 0, sd, 1)),
                         (m > 0).astype(float))
        p = np.where(np.isfinite(m), p, np.nan)
        if self.scale == "log":
            return np.expm1(m), np.exp(m) * sd, p
        return m, sd, p

    def interval(self, est: np.ndarray | float, se: np.ndarray | float,
                 family: str | None = None, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
        """The ``z`` credible interval of the relative effect."""
        m, sd = self._shrunk(est, se, family)
        lo, hi = m - z * sd, m + z * sd
        return (np.expm1(lo), np.expm1(hi)) if self.scale == "log" else (lo, hi)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "kind": "normal", "scale": self.scale,
                "mean": self.mean, "sd": self.sd, "shrink": self.shrink, "n": self.n,
                "families": len(self.families),
                "family_shrink": self.family_shrink if self.families else None,
                "source": self.source, **self.detail}

    def describe(self) -> str:
        """One line: the prior, and how much the history says it may shrink."""
        on = "log(1 + effect)" if self.scale == "log" else "the relative effect"
        fam = (f"; {len(self.families)} family centres (weight {self.family_shrink:.2f})"
               if self.families else "")
        text = (f"prior for {self.metric}: N({self.mean:+.3f}, {self.sd:.3f}^2) on {on} from "
                f"{self.n} past readouts, shrinkage weight {self.shrink:.2f}{fam}")
        if self.shrink < 0.2:
            text += (" (the history says this prior barely helps on groups it did not see: "
                     "readouts are left almost unshrunk)")
        return text


def to_scale(est: np.ndarray, se: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """Readouts on the prior's scale: unchanged, or ``(log1p(est), se / (1 + est))`` (NaN
    where ``est <= -1``)."""
    est, se = np.asarray(est, float), np.asarray(se, float)
    if scale == "relative":
        return est, se
    if scale != "log":
        raise DataValidationError(f"unknown prior scale {scale!r}; expected relative or log")
    ok = est > -1
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.where(ok, np.log1p(np.where(ok, est, 0.0)), np.nan),
                np.where(ok, se / (1 + np.where(ok, est, 0.0)), np.nan))


def fit_normal_prior(est: np.ndarray, se: np.ndarray, metric: str, source: str = "",
                     ) -> NormalPrior:
    """Marginal maximum likelihood of ``(mu, tau)`` from readouts; rows with a missing
    value or a non-positive ``se`` are left out."""
    est, se = np.asarray(est, float), np.asarray(se, float)
    ok = np.isfinite(est) & np.isfinite(se) & (se > 0)
    est, se = est[ok], se[ok]
    if est.size < 3:
        raise DataValidationError(f"only {est.size} usable readouts for metric {metric!r}; "
                                  "a prior needs at least 3", file=source or None,
                                  column=f"online_{metric}_estimate")

    def nll(p: np.ndarray) -> float:
        v = np.exp(2 * p[1]) + se**2
        return float(0.5 * np.sum(np.log(v) + (est - p[0]) ** 2 / v))

    tau0 = math.sqrt(max(float(np.var(est) - np.mean(se**2)), 1e-8))
    res = optimize.minimize(nll, np.array([float(np.mean(est)), math.log(tau0)]),
                            method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10,
                                                           "maxiter": 4000})
    return NormalPrior(metric, float(res.x[0]), float(math.exp(res.x[1])), int(est.size),
                       source)


def fit_family_model(y: np.ndarray, s: np.ndarray, families: np.ndarray,
                     ) -> tuple[float, float, float]:
    """Three levels by marginal maximum likelihood: ``y_ij ~ N(theta_ij, s_ij^2)``,
    ``theta_ij ~ N(mu_j, tau_w^2)``, ``mu_j ~ N(mu, tau_b^2)``; returns
    ``(mu, tau_b, tau_w)``. Vectorised over families (Sherman-Morrison per family)."""
    _, j = np.unique(families, return_inverse=True)
    k = int(j.max()) + 1

    def nll(p: np.ndarray) -> float:
        mu, tb2, tw2 = p[0], math.exp(2 * p[1]), math.exp(2 * p[2])
        d = s**2 + tw2
        r = y - mu
        a = np.bincount(j, 1 / d, k)
        b = np.bincount(j, r / d, k)
        return float(0.5 * (np.sum(np.log(d)) + np.sum(np.log1p(tb2 * a))
                            + np.sum(r**2 / d) - np.sum(tb2 * b**2 / (1 + tb2 * a))))

    sd = float(np.std(y)) or 1e-4
    best = None
    for x0 in ([np.mean(y), math.log(sd / 1.5), math.log(sd / 1.5)],
               [np.mean(y), math.log(sd), math.log(sd / 20)],
               [np.mean(y), math.log(sd / 20), math.log(sd)]):
        res = optimize.minimize(nll, np.array(x0, float), method="Nelder-Mead",
                                options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    return float(best.x[0]), float(math.exp(best.x[1])), float(math.exp(best.x[2]))


def _family_centre(y: np.ndarray, s: np.ndarray, mu: float, tb: float, tw: float,
                   ) -> tuple[float, float]:
    """Prior ``(mean, sd)`` of a new readout of a family whose past readouts are ``y``."""
    d = s**2 + tw**2
    prec = 1 / tb**2 + float(np.sum(1 / d)) if tb > 0 else math.inf
    if not math.isfinite(prec):
        return mu, tw
    return (mu / tb**2 + float(np.sum(y / d))) / prec, math.sqrt(tw**2 + 1 / prec)


def sure_weight(y: np.ndarray, s: np.ndarray, mu: np.ndarray, tau: np.ndarray,
                w: np.ndarray | None = None) -> float:
    """The shrinkage weight lambda in [0, 1] that minimises Stein's unbiased risk estimate
    of ``y - lambda * B * (y - mu)``, ``B = s^2 / (s^2 + tau^2)``, where each readout's
    ``(mu, tau)`` was fitted without it (Xie, Kou & Brown 2012: SURE-tuned shrinkage
    stays no worse than the raw readouts when the normal prior is wrong). ``w`` weights
    the loss (``(1 + est)^2``: squared error of the relative effect when shrinking on the
    log scale). Needs no truth: only that ``y ~ N(theta, s^2)``."""
    w = np.ones_like(y) if w is None else w
    b = s**2 / (s**2 + tau**2)
    ok = np.isfinite(y) & np.isfinite(b) & np.isfinite(mu) & np.isfinite(w)
    num = float(np.sum((w * s**2 * b)[ok]))
    den = float(np.sum((w * b**2 * (y - mu) ** 2)[ok]))
    return float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 1.0


def fit_metric_prior(est: np.ndarray, se: np.ndarray, metric: str, *, source: str = "",
                     scale: str = "log", families: np.ndarray | None = None,
                     groups: np.ndarray | None = None, shrink: str | float = "sure",
                     ) -> NormalPrior:
    """A metric's normal prior from past readouts, with the safeguards of docs/history.md.

    * on ``scale`` (``log`` by default: a relative readout's SE grows with the effect,
      which makes shrinkage pull the largest true effects hardest);
    * with ``families`` (change families): a three-level model gives each known family
      its own centre; an unknown family gets the metric-level prior;
    * ``shrink="sure"``: the shrinkage weight is estimated by cross-group SURE (each
      readout shrunk by a prior fitted without its ``families`` group, else its ``groups``
      group, else its tenth of the history), so a prior that would not have helped on
      groups it did not see shrinks about nothing; a number fixes it."""
    est, se = np.asarray(est, float), np.asarray(se, float)
    y, s = to_scale(est, se, scale)
    ok = np.isfinite(y) & np.isfinite(s) & (s > 0)
    base = fit_normal_prior(y, s, metric, source)  # raises when fewer than 3 usable
    y, s, e = y[ok], s[ok], est[ok]
    w = (1 + e) ** 2 if scale == "log" else np.ones_like(y)
    fam = None if families is None else np.asarray(families, dtype=object)[ok]
    cv = (fam if fam is not None and len(set(fam.tolist())) >= 2 else
          None if groups is None else np.asarray(groups, dtype=object)[ok])
    if cv is None or len(set(cv.tolist())) < 2:
        cv = np.arange(y.size) % min(10, y.size)
    else:  # at most 100 refits: whole groups dealt into 100 folds
        _, gi = np.unique(cv.astype(str), return_inverse=True)
        cv = gi % 100 if gi.max() >= 100 else gi
    centres: dict[str, tuple[float, float]] = {}
    detail: dict[str, Any] = {}
    lam = lam_f = 1.0
    if shrink == "sure":
        mu_o, tau_o = np.full(y.size, np.nan), np.full(y.size, np.nan)
        for g in np.unique(cv):
            te = cv == g
            if (~te).sum() >= 3:
                p = fit_normal_prior(y[~te], s[~te], metric)
                mu_o[te], tau_o[te] = p.mean, p.sd
        lam = sure_weight(y, s, mu_o, tau_o, w)
        detail["shrink_rule"] = "cross-group SURE"
    elif isinstance(shrink, int | float) and 0 <= float(shrink) <= 1:
        lam = lam_f = float(shrink)
    else:
        raise DataValidationError(f"shrink must be 'sure' or a number in [0, 1] (got {shrink!r})")
    if fam is not None and len(set(fam.tolist())) >= 2:
        mu3, tb, tw = fit_family_model(y, s, fam)
        for f in sorted(set(fam.tolist())):
            sel = fam == f
            centres[str(f)] = _family_centre(y[sel], s[sel], mu3, tb, tw)
        detail.update(tau_between=tb, tau_within=tw)
        if shrink == "sure":  # leave one readout out of its family's centre
            mu_o, tau_o = np.full(y.size, np.nan), np.full(y.size, np.nan)
            for i in range(y.size):
                sel = fam == fam[i]
                sel[i] = False
                mu_o[i], tau_o[i] = _family_centre(y[sel], s[sel], mu3, tb, tw)
            lam_f = sure_weight(y, s, mu_o, tau_o, w)
    return NormalPrior(metric, base.mean, base.sd, base.n, source, scale, lam,
                       centres, lam_f, detail)


@dataclass(frozen=True)
class GridPrior:
    """A nonparametric prior: weights on a grid of effects (Efron's g-modelling /
    Koenker's NPMLE by EM), for histories whose effects cluster by family."""

    metric: str
    grid: tuple[float, ...]
    weights: tuple[float, ...]
    n: int
    source: str = ""

    @property
    def mean(self) -> float:
        return float(np.dot(self.grid, self.weights))

    @property
    def sd(self) -> float:
        g, w = np.asarray(self.grid), np.asarray(self.weights)
        return float(np.sqrt(np.dot(w, (g - self.mean) ** 2)))

    def posterior(self, est: np.ndarray | float, se: np.ndarray | float,
                  family: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Posterior mean, sd and P(effect > 0) of readouts ``(est, se)`` (one grid for
        every family)."""
        est, se = np.broadcast_arrays(np.asarray(est, float), np.asarray(se, float))
        g, w = np.asarray(self.grid), np.asarray(self.weights)
        post = _grid_posterior(est.ravel(), se.ravel(), g, w)
        mean = post @ g
        sd = np.sqrt(np.maximum(post @ g**2 - mean**2, 0.0))
        p = post[:, g > 0].sum(axis=1)
        return mean.reshape(est.shape), sd.reshape(est.shape), p.reshape(est.shape)

    def interval(self, est: np.ndarray | float, se: np.ndarray | float,
                 family: str | None = None, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean -/+ ``z`` posterior sd."""
        m, sd, _ = self.posterior(est, se)
        return m - z * sd, m + z * sd

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "kind": "grid", "mean": self.mean, "sd": self.sd,
                "n": self.n, "source": self.source}

    def describe(self) -> str:
        return (f"grid prior for {self.metric}: mean {self.mean:+.2%}, sd {self.sd:.2%} "
                f"from {self.n} past readouts")


def _grid_posterior(est: np.ndarray, se: np.ndarray, g: np.ndarray, w: np.ndarray,
                    ) -> np.ndarray:
    """Posterior weights [n, grid] of each readout over the grid."""
    ll = -0.5 * ((est[:, None] - g[None, :]) / se[:, None]) ** 2
    ll = ll + np.log(np.maximum(w, 1e-300))[None, :]
    ll -= ll.max(axis=1, keepdims=True)
    post = np.exp(ll)
    return post / post.sum(axis=1, keepdims=True)


def fit_grid_prior(est: np.ndarray, se: np.ndarray, metric: str, source: str = "",
                   points: int = 120, iterations: int = 500) -> GridPrior:
    """EM for the grid weights that maximise the marginal likelihood of the readouts."""
    est, se = np.asarray(est, float), np.asarray(se, float)
    ok = np.isfinite(est) & np.isfinite(se) & (se > 0)
    est, se = est[ok], se[ok]
    if est.size < 3:
        raise DataValidationError(f"only {est.size} usable readouts for metric {metric!r}; "
                                  "a prior needs at least 3", file=source or None,
                                  column=f"online_{metric}_estimate")
    pad = 2 * float(np.median(se))
    g = np.linspace(est.min() - pad, est.max() + pad, points)
    w = np.full(points, 1.0 / points)
    for _ in range(iterations):
        w = _grid_posterior(est, se, g, w).mean(axis=0)
    return GridPrior(metric, tuple(g.tolist()), tuple(w.tolist()), int(est.size), source)


Prior = NormalPrior | GridPrior


def fit_prior(est: np.ndarray, se: np.ndarray, metric: str, source: str = "", *,
              kind: str = "normal", scale: str = "relative", shrink: str | float = 1.0,
              families: np.ndarray | None = None, groups: np.ndarray | None = None,
              ) -> Prior:
    """A ``normal`` (:func:`fit_metric_prior`) or ``grid`` (relative scale) prior."""
    if kind == "normal":
        return fit_metric_prior(est, se, metric, source=source, scale=scale,
                                families=families, groups=groups, shrink=shrink)
    if kind == "grid":
        return fit_grid_prior(est, se, metric, source)
    raise DataValidationError(f"unknown prior kind {kind!r}; expected normal or grid")


def fit_priors(table: pa.Table, metrics: list[str] | None = None, *,
               source: str = "", kind: str = "normal", scale: str = "log",
               by_family: bool = True, shrink: str | float = "sure") -> dict[str, Prior]:
    """One prior per metric from the history's online readouts: by default a normal prior
    on ``log(1 + effect)``, family centres when the history has a ``family`` column, and
    the shrinkage weight estimated by cross-family SURE (:func:`fit_metric_prior`)."""
    from recscope.history.store import online_metrics

    fam = (np.asarray(table.column("family").to_pylist(), dtype=object)
           if by_family and "family" in table.column_names else None)
    if fam is not None and any(f is None for f in fam):
        fam = None
    out = {}
    for m in metrics or online_metrics(table):
        if f"online_{m}_se" not in table.column_names:
            continue
        est = np.asarray(table.column(f"online_{m}_estimate").to_numpy(zero_copy_only=False),
                         float)
        se = np.asarray(table.column(f"online_{m}_se").to_numpy(zero_copy_only=False), float)
        if (np.isfinite(est) & np.isfinite(se)).sum() >= 3:
            out[m] = fit_prior(est, se, m, source, kind=kind, scale=scale, shrink=shrink,
                               families=fam)
    if not out:
        raise DataValidationError("the history has no online results to fit a prior on",
                                  file=source or None)
    return out


# ---------------------------------------------------------------------- readouts
@dataclass
class PriorReadout(Result):
    """A scorecard's frequentist rows with the empirical-Bayes posterior beside them."""

    kind = "prior_readout"
    title = "Readout with informed priors"

    rows_: list[dict[str, Any]]
    priors: dict[str, dict[str, Any]] = field(default_factory=dict)
    without_prior: list[str] = field(default_factory=list)
    family: str | None = None
    family_known: bool = False

    def effects(self) -> list[Effect]:
        return [Effect(f"{r['metric']} ({r['variant']}, shrunken)", r["shrunken"],
                       r["shrunken_ci_low"], r["shrunken_ci_high"], r["posterior_sd"],
                       extra={"p_positive": r["p_positive"], "frequentist": r["estimate"]})
                for r in self.rows_]

    def rows(self) -> list[dict[str, Any]]:
        from recscope.report.tables import fmt_number

        return [{"metric": r["metric"], "variant": r["variant"], "estimate": r["estimate"],
                 "ci_low": r["ci_low"], "ci_high": r["ci_high"], "p_value": r["p_value"],
                 "shrunken [95% CrI]": f"{fmt_number(r['shrunken'])} "
                 f"[{fmt_number(r['shrunken_ci_low'])}, {fmt_number(r['shrunken_ci_high'])}]",
                 "P(effect > 0)": r["p_positive"]} for r in self.rows_]

    def notes(self) -> list[str]:
        out = [p.get("text") or f"prior for {m}: N({p['mean']:+.2%}, {p['sd']:.2%}^2) from "
               f"{p['n']} past readouts" for m, p in self.priors.items()]
        if self.without_prior:
            out.append(f"no prior in the history for {', '.join(self.without_prior)}: "
                       "not shrunk")
        if self.family is not None:
            out.append(f"family {self.family!r}: " + (
                "shrunk toward its own centre" if self.family_known else
                "not in the history; the metric-level prior is used"))
        return out


def check_prior(prior: Mapping[str, Prior], metrics: list[str], *,
                file: str | None = None) -> None:
    """Refuse, before any analysis, a prior fitted on none of the analysed ``metrics``
    (metrics without a prior are reported unshrunk, with a note)."""
    if not any(m in prior for m in metrics):
        raise DataValidationError(
            f"the prior was fitted on metric(s) {', '.join(sorted(prior)) or 'none'}, not on "
            f"{', '.join(repr(m) for m in metrics)} analysed here; use a history with "
            "readouts of the same metric", file=file)


def _scorecard_rows(card: Any) -> list[dict[str, Any]]:
    """Rows of a scorecard (``results``: dicts or Effect rows) or of any Result."""
    rows = getattr(card, "results", None)
    if rows is None and isinstance(card, Mapping):
        rows = card.get("results")
    if rows is None and hasattr(card, "effects"):
        rows = card.effects()
    if not rows:
        raise DataValidationError("the scorecard has no results to apply a prior to")
    return [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in rows]


def apply_prior(scorecard_result: Any, prior: Mapping[str, Prior], *,
                file: str | None = None, family: str | None = None) -> PriorReadout:
    """Shrink every relative effect of a scorecard with the prior of its metric (the
    centre of ``family`` when the prior has one, else the metric-level prior).

    At least one metric of the scorecard must have a prior fitted on the same metric
    (else one error naming ``file``); the others are listed in a note, not shrunk."""
    rows = _scorecard_rows(scorecard_result)
    metrics = sorted({str(r["metric"]) for r in rows})
    check_prior(prior, metrics, file=file)
    rows = [r for r in rows if str(r["metric"]) in prior]
    out = []
    for r in rows:
        p = prior[str(r["metric"])]
        est = float(r.get("rel_effect", math.nan))
        lo, hi = float(r.get("rel_ci_low", math.nan)), float(r.get("rel_ci_high", math.nan))
        se = (hi - lo) / (2 * Z95)
        mean = sd = pp = c_lo = c_hi = math.nan  # not computable without a finite readout
        if math.isfinite(est) and math.isfinite(se) and se > 0:
            m_, s_, p_ = p.posterior(est, se, family)
            mean, sd, pp = float(m_), float(s_), float(p_)
            c_lo, c_hi = (float(v) for v in p.interval(est, se, family))
        out.append({"metric": r["metric"], "variant": r.get("variant"), "estimate": est,
                    "ci_low": lo, "ci_high": hi, "p_value": r.get("p_value"),
                    "shrunken": mean, "shrunken_ci_low": c_lo,
                    "shrunken_ci_high": c_hi, "posterior_sd": sd,
                    "p_positive": pp})
    return PriorReadout(out, {m: {**prior[m].to_dict(), "text": prior[m].describe()}
                              for m in metrics if m in prior},
                        [m for m in metrics if m not in prior], family,
                        any(family in getattr(p, "families", {}) for p in prior.values()))


# ---------------------------------------------------------------------- validation
def reliability(p: np.ndarray, outcome: np.ndarray, bins: int = 5) -> list[dict[str, Any]]:
    """P(effect > 0) in equal-width bins vs the share whose effect was positive."""
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in itertools.pairwise(edges):
        sel = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi)) & np.isfinite(outcome)
        if sel.any():
            out.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": int(sel.sum()),
                        "mean_p_positive": float(p[sel].mean()),
                        "share_positive": float(outcome[sel].mean())})
    return out


PRIOR_VARIANTS: dict[str, dict[str, Any]] = {
    # the metric-level prior of the previous version: one normal prior on the relative
    # effect, plain posterior
    "normal (relative)": {"kind": "normal", "scale": "relative", "shrink": 1.0},
    "normal (log)": {"kind": "normal", "scale": "log", "shrink": 1.0},
    # the default for a readout of an unseen family
    "normal (log, SURE)": {"kind": "normal", "scale": "log", "shrink": "sure"},
    # the default for a readout of a known family
    "family (log, SURE)": {"kind": "normal", "scale": "log", "shrink": "sure",
                           "by_family": True},
    "grid": {"kind": "grid"},
}


def _shrink_eval(est: np.ndarray, se: np.ndarray, target: np.ndarray, groups: np.ndarray,
                 fit_est: np.ndarray, fit_se: np.ndarray, metric: str,
                 variant: str = "normal (relative)", *, families: np.ndarray | None = None,
                 cv_groups: np.ndarray | None = None) -> dict[str, Any]:
    """Fit the prior ``variant`` without each group (on the other groups' ``fit_*``
    readouts, their ``families`` and ``cv_groups`` for the SURE weight), shrink this
    group's ``est`` (toward its family's centre for the ``family`` variant), compare with
    ``target``: MSE, and coverage of the 95% intervals, raw and shrunken."""
    spec = dict(PRIOR_VARIANTS[variant])
    by_family = bool(spec.pop("by_family", False))
    shrunk, p_pos, lo, hi = (np.full(est.size, np.nan) for _ in range(4))
    lams, lams_f = [], []
    for g in np.unique(groups):
        te = groups == g
        prior = fit_prior(fit_est[~te], fit_se[~te], metric,
                          families=None if families is None else families[~te],
                          groups=None if cv_groups is None else cv_groups[~te], **spec)
        if isinstance(prior, NormalPrior):
            lams.append(prior.shrink)
            if prior.families:
                lams_f.append(prior.family_shrink)
        fams = (families[te] if by_family and families is not None
                else np.full(int(te.sum()), None, dtype=object))
        idx = np.flatnonzero(te)
        for f in dict.fromkeys(fams.tolist()):
            sel = idx[fams == f]
            m, _, p = prior.posterior(est[sel], se[sel], f)
            shrunk[sel], p_pos[sel] = m, p
            lo[sel], hi[sel] = prior.interval(est[sel], se[sel], f)
    ok = np.isfinite(est) & np.isfinite(target) & np.isfinite(shrunk)
    mse_raw = float(np.mean((est[ok] - target[ok]) ** 2))
    mse_eb = float(np.mean((shrunk[ok] - target[ok]) ** 2))
    t = target[ok]
    return {"metric": metric, "prior": variant, "n": int(ok.sum()), "mse_raw": mse_raw,
            "mse_shrunken": mse_eb,
            "mse_reduction": 1 - mse_eb / mse_raw if mse_raw > 0 else math.nan,
            "coverage_raw": float(np.mean(np.abs(est[ok] - t) <= Z95 * se[ok])),
            "coverage_shrunken": float(np.mean((lo[ok] <= t) & (t <= hi[ok]))),
            "shrink": float(np.mean(lams)) if lams else math.nan,
            "family_shrink": float(np.mean(lams_f)) if lams_f else math.nan,
            "reliability": reliability(p_pos[ok], (t > 0).astype(float))}


def validate_predicted(table: pa.Table, predictions: Mapping[str, Any], alpha: float = 0.1,
                       metric: str = "clicks") -> dict[str, Any]:
    """An informed prior per candidate from the offline->online predictor: N(prediction,
    (conformal half-width / z_{1-alpha/2})^2), the predictions made without the
    candidate's family (:func:`recscope.history.predict.validate`); each readout is
    shrunk toward its own prediction. Error against the true effect."""
    ids = table.column("candidate_id").to_pylist()
    idx = [ids.index(c) for c in predictions["candidate_id"]]
    est = np.asarray(table.column(f"online_{metric}_estimate").to_numpy(
        zero_copy_only=False), float)[idx]
    se = np.asarray(table.column(f"online_{metric}_se").to_numpy(zero_copy_only=False),
                    float)[idx]
    tgt = np.asarray(predictions["truth"], float)
    mu = np.asarray(predictions["predicted"], float)
    tau = np.asarray(predictions["half_width"], float) / sps.norm.ppf(1 - alpha / 2)
    ok = np.isfinite(est) & np.isfinite(se) & (se > 0) & np.isfinite(mu) & (tau > 0) \
        & np.isfinite(tau) & np.isfinite(tgt)
    est, se, tgt, mu, tau = est[ok], se[ok], tgt[ok], mu[ok], tau[ok]
    w = 1 / se**2 + 1 / tau**2
    mean = (est / se**2 + mu / tau**2) / w
    p = sps.norm.sf(0, mean, np.sqrt(1 / w))
    mse_raw = float(np.mean((est - tgt) ** 2))
    mse = float(np.mean((mean - tgt) ** 2))
    sd = np.sqrt(1 / w)
    return {"data": "simulated corpus", "unit": "new family", "metric": metric,
            "prior": "predicted", "n": int(ok.sum()), "mse_raw": mse_raw,
            "mse_shrunken": mse, "mse_reduction": 1 - mse / mse_raw if mse_raw > 0
            else math.nan,
            "coverage_raw": float(np.mean(np.abs(est - tgt) <= Z95 * se)),
            "coverage_shrunken": float(np.mean(np.abs(mean - tgt) <= Z95 * sd)),
            "shrink": 1.0, "family_shrink": math.nan,
            "reliability": reliability(p, (tgt > 0).astype(float))}


def validate_corpus(table: pa.Table, variants: tuple[str, ...] = (
        "normal (relative)", "normal (log)", "normal (log, SURE)", "grid"),
        known: tuple[str, ...] = ("normal (relative)", "family (log, SURE)"),
        folds: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """On a simulated history, error against the true effect of readouts shrunk by a
    prior fitted without them: ``variants`` leave one **family** out (a new kind of
    change: no family centre can help), ``known`` leave a tenth of the **candidates**
    out (a new candidate of a family the history knows)."""
    from recscope.history.store import online_metrics

    out = []
    fam = np.asarray(table.column("family").to_pylist(), dtype=object)
    for m in online_metrics(table):
        if f"true_{m}" not in table.column_names:
            continue
        est = np.asarray(table.column(f"online_{m}_estimate").to_numpy(zero_copy_only=False),
                         float)
        se = np.asarray(table.column(f"online_{m}_se").to_numpy(zero_copy_only=False), float)
        tgt = np.asarray(table.column(f"true_{m}").to_numpy(zero_copy_only=False), float)
        ok = np.isfinite(est) & np.isfinite(se) & np.isfinite(tgt) & (se > 0)
        e, s_, t, f = est[ok], se[ok], tgt[ok], fam[ok]
        for v in variants:
            r = _shrink_eval(e, s_, t, f, e, s_, m, v, families=f)
            out.append({"data": "simulated corpus", "unit": "new family", **r})
        fold = np.random.default_rng(seed).permutation(e.size) % folds
        for v in known:
            r = _shrink_eval(e, s_, t, fold, e, s_, m, v, families=f)
            out.append({"data": "simulated corpus", "unit": "known family", **r})
    return out


def asos_series(frame: Any, *, fraction: float = 0.5) -> Any:
    """Per ASOS series (experiment, variant, metric): the relative effect and its
    delta-method SE at the first look past ``fraction`` of the duration (the interim
    readout) and at the last look (the final readout)."""
    import pandas as pd

    need = ["experiment_id", "variant_id", "metric_id", "time_since_start", "count_c",
            "count_t", "mean_c", "mean_t", "variance_c", "variance_t"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise DataValidationError("missing column of the ASOS layout", column=missing[0])
    f = frame[(frame["count_c"] > 1) & (frame["count_t"] > 1) & (frame["mean_c"] > 0)]
    f = f.sort_values("time_since_start")
    mc, mt = f["mean_c"].to_numpy(float), f["mean_t"].to_numpy(float)
    vc = f["variance_c"].to_numpy(float) / f["count_c"].to_numpy(float)
    vt = f["variance_t"].to_numpy(float) / f["count_t"].to_numpy(float)
    f = f.assign(rel=mt / mc - 1, rel_se=np.sqrt(vt / mc**2 + mt**2 * vc / mc**4))
    rows = []
    for key, g in f.groupby(["experiment_id", "variant_id", "metric_id"], sort=True):
        if len(g) < 3:
            continue
        t = g["time_since_start"].to_numpy(float)
        i = int(np.searchsorted(t, fraction * t[-1]))
        i = min(i, len(g) - 2)
        rows.append({"experiment_id": key[0], "variant_id": key[1], "metric": str(key[2]),
                     "interim": float(g["rel"].iloc[i]), "interim_se": float(g["rel_se"].iloc[i]),
                     "final": float(g["rel"].iloc[-1]), "final_se": float(g["rel_se"].iloc[-1])})
    return pd.DataFrame(rows)


def validate_asos(frame: Any, *, fraction: float = 0.5, variants: tuple[str, ...] = (
        "normal (relative)", "normal (log, SURE)", "grid")) -> list[dict[str, Any]]:
    """ASOS, leave one experiment out: the prior is fitted on the other experiments' final
    readouts of the same metric (the SURE weight cross-validated by experiment); the
    interim readout is shrunk and compared with the experiment's final readout (its best
    available estimate of the truth)."""
    s = asos_series(frame, fraction=fraction)
    out = []
    for v in variants:
        for m, g in s.groupby("metric", sort=True):
            exp = g["experiment_id"].to_numpy(object)
            r = _shrink_eval(g["interim"].to_numpy(), g["interim_se"].to_numpy(),
                             g["final"].to_numpy(), exp, g["final"].to_numpy(),
                             g["final_se"].to_numpy(), f"metric {m}", v, cv_groups=exp)
            out.append({"data": "ASOS", "unit": "experiment", **r})
    return out
