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
    """``theta ~ N(mean, sd^2)`` on a metric's relative effect, from ``n`` past readouts."""

    metric: str
    mean: float
    sd: float
    n: int
    source: str = ""

    def posterior(self, est: np.ndarray | float, se: np.ndarray | float,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Posterior mean, sd and P(effect > 0) of readouts ``(est, se)``."""
        est, se = np.asarray(est, float), np.asarray(se, float)
        if self.sd <= 0:
            mean = np.full(np.broadcast(est, se).shape, self.mean)
            sd = np.zeros_like(mean)
        else:
            w = 1 / se**2 + 1 / self.sd**2
            mean = (est / se**2 + self.mean / self.sd**2) / w
            sd = np.sqrt(1 / w)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(sd > 0, sps.norm.sf(0, mean, np.where(sd > 0, sd, 1)),
                         (mean > 0).astype(float))
        return mean, sd, p

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "kind": "normal", "mean": self.mean, "sd": self.sd,
                "n": self.n, "source": self.source}


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
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Posterior mean, sd and P(effect > 0) of readouts ``(est, se)``."""
        est, se = np.broadcast_arrays(np.asarray(est, float), np.asarray(se, float))
        g, w = np.asarray(self.grid), np.asarray(self.weights)
        post = _grid_posterior(est.ravel(), se.ravel(), g, w)
        mean = post @ g
        sd = np.sqrt(np.maximum(post @ g**2 - mean**2, 0.0))
        p = post[:, g > 0].sum(axis=1)
        return mean.reshape(est.shape), sd.reshape(est.shape), p.reshape(est.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "kind": "grid", "mean": self.mean, "sd": self.sd,
                "n": self.n, "source": self.source}


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
              kind: str = "normal") -> Prior:
    """A ``normal`` or ``grid`` prior from readouts."""
    if kind == "normal":
        return fit_normal_prior(est, se, metric, source)
    if kind == "grid":
        return fit_grid_prior(est, se, metric, source)
    raise DataValidationError(f"unknown prior kind {kind!r}; expected normal or grid")


def fit_priors(table: pa.Table, metrics: list[str] | None = None, *,
               source: str = "", kind: str = "normal") -> dict[str, Prior]:
    """One normal prior per metric from the history's online readouts."""
    from recscope.history.store import online_metrics

    out = {}
    for m in metrics or online_metrics(table):
        if f"online_{m}_se" not in table.column_names:
            continue
        est = np.asarray(table.column(f"online_{m}_estimate").to_numpy(zero_copy_only=False),
                         float)
        se = np.asarray(table.column(f"online_{m}_se").to_numpy(zero_copy_only=False), float)
        if (np.isfinite(est) & np.isfinite(se)).sum() >= 3:
            out[m] = fit_prior(est, se, m, source, kind=kind)
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
        out = [f"prior for {m}: N({p['mean']:+.2%}, {p['sd']:.2%}^2) from {p['n']} past "
               "readouts" for m, p in self.priors.items()]
        if self.without_prior:
            out.append(f"no prior in the history for {', '.join(self.without_prior)}: "
                       "not shrunk")
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
                file: str | None = None) -> PriorReadout:
    """Shrink every relative effect of a scorecard with the prior of its metric.

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
        mean = sd = pp = math.nan  # not computable without a finite readout
        if math.isfinite(est) and math.isfinite(se) and se > 0:
            m_, s_, p_ = p.posterior(est, se)
            mean, sd, pp = float(m_), float(s_), float(p_)
        out.append({"metric": r["metric"], "variant": r.get("variant"), "estimate": est,
                    "ci_low": lo, "ci_high": hi, "p_value": r.get("p_value"),
                    "shrunken": mean, "shrunken_ci_low": mean - Z95 * sd,
                    "shrunken_ci_high": mean + Z95 * sd, "posterior_sd": sd,
                    "p_positive": pp})
    return PriorReadout(out, {m: prior[m].to_dict() for m in metrics if m in prior},
                        [m for m in metrics if m not in prior])


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


def _shrink_eval(est: np.ndarray, se: np.ndarray, target: np.ndarray, groups: np.ndarray,
                 fit_est: np.ndarray, fit_se: np.ndarray, metric: str,
                 kind: str = "normal") -> dict[str, Any]:
    """Leave-one-group-out: fit the prior on the other groups' ``fit_*`` readouts, shrink
    this group's ``est``, compare squared errors against ``target``."""
    shrunk = np.full(est.size, np.nan)
    p_pos = np.full(est.size, np.nan)
    for g in np.unique(groups):
        te = groups == g
        prior = fit_prior(fit_est[~te], fit_se[~te], metric, kind=kind)
        m, _, p = prior.posterior(est[te], se[te])
        shrunk[te], p_pos[te] = m, p
    ok = np.isfinite(est) & np.isfinite(target) & np.isfinite(shrunk)
    mse_raw = float(np.mean((est[ok] - target[ok]) ** 2))
    mse_eb = float(np.mean((shrunk[ok] - target[ok]) ** 2))
    return {"metric": metric, "prior": kind, "n": int(ok.sum()), "mse_raw": mse_raw, "mse_shrunken": mse_eb,
            "mse_reduction": 1 - mse_eb / mse_raw if mse_raw > 0 else math.nan,
            "reliability": reliability(p_pos[ok], (target[ok] > 0).astype(float))}


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
    return {"data": "simulated corpus", "unit": "family", "metric": metric,
            "prior": "predicted", "n": int(ok.sum()), "mse_raw": mse_raw,
            "mse_shrunken": mse, "mse_reduction": 1 - mse / mse_raw if mse_raw > 0
            else math.nan, "reliability": reliability(p, (tgt > 0).astype(float))}


def validate_corpus(table: pa.Table, kind: str = "normal") -> list[dict[str, Any]]:
    """On a simulated history: shrink each readout with a prior fitted on the other
    families' readouts; error against the true effect."""
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
        r = _shrink_eval(est[ok], se[ok], tgt[ok], fam[ok], est[ok], se[ok], m, kind)
        out.append({"data": "simulated corpus", "unit": "family", **r})
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


def validate_asos(frame: Any, *, fraction: float = 0.5, kind: str = "normal",
                  ) -> list[dict[str, Any]]:
    """ASOS, leave one experiment out: the prior is fitted on the other experiments' final
    readouts of the same metric; the interim readout is shrunk and compared with the
    experiment's final readout (its best available estimate of the truth)."""
    s = asos_series(frame, fraction=fraction)
    out = []
    for m, g in s.groupby("metric", sort=True):
        r = _shrink_eval(g["interim"].to_numpy(), g["interim_se"].to_numpy(),
                         g["final"].to_numpy(), g["experiment_id"].to_numpy(object),
                         g["final"].to_numpy(), g["final_se"].to_numpy(), f"metric {m}",
                         kind)
        out.append({"data": "ASOS", "unit": "experiment", **r})
    return out
