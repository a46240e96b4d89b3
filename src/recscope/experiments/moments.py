"""Inference from per-variant moments (sufficient statistics: a few numbers per variant).

Everything here works on :class:`Moments` (count, means and sample covariance matrix of a
handful of per-unit variables), which the engine computes in SQL. From them come the
metric value (a mean or a ratio of means), its delta-method variance, CUPED / regression
adjustment on any number of covariates (also for ratio metrics and ratio covariates),
Welch t or z intervals for absolute and relative effects, SRM, mixture-SPRT confidence
sequences and power / minimum detectable effect. (Multiple-testing adjustment lives in
:mod:`recscope.core.multiple_testing`.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as sps
from scipy.optimize import brentq

Term = tuple[int, int | None]
"""A linear term of the moments: (numerator index, denominator index or None)."""


@dataclass(frozen=True)
class Moments:
    """Count, means and sample covariance (ddof=1) of p per-unit variables."""

    n: float
    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def from_data(cls, x: np.ndarray) -> Moments:
        """Moments of an (n, p) array, used by tests and vectorised simulations."""
        x = np.asarray(x, dtype=float)
        if x.ndim == 1:
            x = x[:, None]
        return cls(float(len(x)), x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False)))


def pool(parts: Sequence[Moments]) -> Moments:
    """Moments of the union of several groups (exact parallel combination)."""
    n = sum(p.n for p in parts)
    mean = sum(p.n * p.mean for p in parts) / n
    scatter = sum((p.n - 1) * p.cov + p.n * np.outer(p.mean - mean, p.mean - mean)
                  for p in parts)
    return Moments(n, mean, scatter / (n - 1))


def term_value(m: Moments, term: Term) -> float:
    """Mean of the numerator variable, or the ratio of the two means."""
    num, den = term
    return float(m.mean[num] if den is None else m.mean[num] / m.mean[den])


def term_gradient(m: Moments, term: Term) -> np.ndarray:
    """Gradient of :func:`term_value` with respect to the means (delta method)."""
    g = np.zeros(len(m.mean))
    num, den = term
    if den is None:
        g[num] = 1.0
    else:
        g[num] = 1.0 / m.mean[den]
        g[den] = -m.mean[num] / m.mean[den] ** 2
    return g


@dataclass(frozen=True)
class VariantEstimate:
    """A variant's metric value and the per-unit variance of its linearisation."""

    value: float
    var: float
    n: float


def variant_estimate(m: Moments, metric: Term, covariates: Sequence[Term] = (),
             theta: np.ndarray | None = None, centre: np.ndarray | None = None) -> VariantEstimate:
    """The (adjusted) metric of one variant: ``value - theta·(covariates - centre)``.

    ``var`` is the per-unit variance, so the estimate's variance is ``var / n``.
    """
    g = term_gradient(m, metric)
    value = term_value(m, metric)
    var = float(g @ m.cov @ g)
    if covariates and theta is not None:
        gc = np.array([term_gradient(m, t) for t in covariates])
        xc = np.array([term_value(m, t) for t in covariates])
        value -= float(theta @ (xc - centre))
        var += float(theta @ gc @ m.cov @ gc.T @ theta - 2 * theta @ gc @ m.cov @ g)
    return VariantEstimate(value, max(var, 0.0), m.n)


def cuped_theta(total: Moments, metric: Term, covariates: Sequence[Term]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Regression coefficients of the metric on the covariates in the pooled sample, and
    the pooled covariate values used as centre (so adjustment leaves the mean unbiased).
    """
    g = term_gradient(total, metric)
    gc = np.array([term_gradient(total, t) for t in covariates])
    sxx = gc @ total.cov @ gc.T
    sxy = gc @ total.cov @ g
    theta = np.linalg.lstsq(sxx, sxy, rcond=None)[0] if np.any(sxx) else np.zeros(len(sxy))
    centre = np.array([term_value(total, t) for t in covariates])
    return theta, centre


@dataclass(frozen=True)
class Comparison:
    """Treatment against control: absolute and relative effects with intervals."""

    control_mean: float
    treatment_mean: float
    effect: float
    se: float
    ci_low: float
    ci_high: float
    rel_effect: float
    rel_se: float
    rel_ci_low: float
    rel_ci_high: float
    p_value: float
    statistic: float
    df: float
    n_control: float
    n_treatment: float


def compare_variants(control: VariantEstimate, treatment: VariantEstimate, *, alpha: float = 0.05,
            distribution: str = "t") -> Comparison:
    """Welch t (``distribution='t'``) or z test and intervals for the difference.

    The relative effect ``treatment / control - 1`` gets a delta-method interval.
    """
    vc = control.var / control.n
    vt = treatment.var / treatment.n
    se = math.sqrt(vc + vt)
    effect = treatment.value - control.value
    if distribution == "t":
        den = (vc**2 / (control.n - 1) if control.n > 1 else 0.0) + (
            vt**2 / (treatment.n - 1) if treatment.n > 1 else 0.0)
        df = (vc + vt) ** 2 / den if den > 0 else math.inf
    else:
        df = math.inf
    stat = effect / se if se > 0 else (0.0 if effect == 0 else math.copysign(math.inf, effect))
    if math.isfinite(df):  # scipy.special directly: the frozen-distribution API is slow
        crit = float(special.stdtrit(df, 1 - alpha / 2))
        p = float(2 * special.stdtr(df, -abs(stat)))
    else:
        crit = float(-special.ndtri(alpha / 2))
        p = float(2 * special.ndtr(-abs(stat)))
    mc, mt = control.value, treatment.value
    if mc != 0:
        rel = mt / mc - 1
        rel_se = math.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
    else:
        rel, rel_se = math.nan, math.nan
    return Comparison(mc, mt, effect, se, effect - crit * se, effect + crit * se, rel, rel_se,
                      rel - crit * rel_se, rel + crit * rel_se, p, stat, df, control.n,
                      treatment.n)


def mid_quantile(values: np.ndarray, counts: np.ndarray, below: np.ndarray | float,
                 n: np.ndarray | float, q: float) -> np.ndarray:
    """The ``q`` mid-quantile from (part of) a histogram; rows of ``counts`` are samples.

    ``values`` (k,) sorted distinct values, ``counts`` (..., k) units at each value,
    ``below`` units under ``values[0]``, ``n`` all units. The mid-distribution function
    at a value is ``F(x) - p(x) / 2``; the mid-quantile interpolates it linearly between
    values (Parzen 2004; Ma, Genton & Parzen 2011). Unlike the ordinary sample quantile
    it is a smooth function of the value frequencies, so it is asymptotically normal on
    discrete and tied data too, and on continuous data it is the sample quantile (Hazen's
    definition). Below the first (above the last) mid-point it is the first (last) value.
    """
    x = np.asarray(values, dtype=np.float64)
    c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    nn = np.reshape(np.asarray(n, dtype=np.float64), (-1, 1))
    cum = np.reshape(np.asarray(below, dtype=np.float64), (-1, 1)) + np.cumsum(c, axis=1)
    mid = (cum - c / 2) / nn
    present = c > 0  # a value absent from a resample has no mid-point
    k = x.size
    left = present & (mid <= q)
    right = present & (mid > q)
    has_l, has_r = left.any(axis=1), right.any(axis=1)
    i0 = k - 1 - np.argmax(left[:, ::-1], axis=1)
    i1 = np.argmax(right, axis=1)
    rows = np.arange(len(c))
    m0, m1 = mid[rows, i0], mid[rows, i1]
    with np.errstate(invalid="ignore", divide="ignore"):
        inner = x[i0] + (q - m0) * (x[i1] - x[i0]) / (m1 - m0)
    out = np.where(has_l & has_r, inner, np.where(has_l, x[i0], x[i1]))
    return np.where(has_l | has_r, out, np.nan)


def histogram_window(values: np.ndarray, q: float, width: float = 6.0
                     ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The numpy twin of the engine's histogram query
    (:meth:`recscope.experiments.sql.Plan.histogram_sql`): from one variant's per-unit
    values, the distinct values near the ``q`` quantile with their counts, the units
    below them and all units (for simulations and tests)."""
    v, c = np.unique(np.asarray(values, dtype=np.float64), return_counts=True)
    n = float(c.sum())
    cum = np.cumsum(c).astype(np.float64)
    start = cum - c
    half = width * math.sqrt(q * (1 - q) / n) + 2.0 / n
    prev_start = np.r_[-np.inf, start[:-1]]
    next_end = np.r_[cum[1:], np.inf]
    keep = (prev_start <= (q + half) * n) & (next_end >= (q - half) * n)
    first = int(np.argmax(keep))
    return v[keep], c[keep].astype(np.float64), float(start[first]), n


def histogram_quantile(values: np.ndarray, counts: np.ndarray, below: float, n: float,
                       q: float, *, n_boot: int = 2000,
                       rng: np.random.Generator | None = None) -> tuple[float, float]:
    """A variant's ``q`` mid-quantile and its bootstrap standard error, from the part of
    its histogram of per-unit values around the quantile (``values``, ``counts``), the
    number of units ``below`` it and all ``n`` units.

    The bootstrap resamples units: drawing n units with replacement gives multinomial
    counts, which are drawn exactly for the window (a binomial for the units below it,
    then a multinomial over the window's values and the units above), so it is cheap and
    exact for discrete data however many units there are. The window spans many standard
    errors of the quantile, so resamples whose quantile leaves it are negligible.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    x = np.asarray(values, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    est = float(mid_quantile(x, c, below, n, q)[0])
    above = n - below - c.sum()
    p_below = below / n
    low = rng.binomial(int(n), p_below, size=n_boot) if p_below > 0 else np.zeros(n_boot,
                                                                                  np.int64)
    rest = np.append(c, above) / (n - below)
    draws = rng.multinomial(int(n) - low, rest)
    boot = mid_quantile(x, draws[:, :-1], low, n, q)
    return est, float(np.std(boot, ddof=1))


def srm_test(observed: Sequence[float], expected_shares: Sequence[float]) -> float:
    """Chi-square p-value of the variant counts against the planned allocation."""
    obs = np.asarray(observed, dtype=float)
    shares = np.asarray(expected_shares, dtype=float)
    if len(obs) < 2 or obs.sum() == 0:
        return 1.0
    exp = obs.sum() * shares / shares.sum()
    return float(sps.chisquare(obs, exp).pvalue)


def z_power(effect: float, se: float, *, alpha: float = 0.05) -> float:
    """Power of the two-sided level-``alpha`` z test when the estimate's s.e. is ``se``."""
    z = float(-special.ndtri(alpha / 2))
    d = abs(effect) / se
    return float(special.ndtr(d - z) + special.ndtr(-d - z))


def mde(var_control: float, n_control: float, var_treatment: float, n_treatment: float,
        *, alpha: float = 0.05, power_target: float = 0.8) -> float:
    """Smallest absolute effect detected with ``power_target`` by a two-sided
    level-``alpha`` z test (both rejection regions counted, as statsmodels does)."""
    se = math.sqrt(var_control / n_control + var_treatment / n_treatment)
    if not math.isfinite(se):
        return math.nan
    if se == 0:
        return 0.0
    z = float(-special.ndtri(alpha / 2) + special.ndtri(power_target))
    return float(brentq(lambda e: z_power(e, se, alpha=alpha) - power_target, 0.5 * z * se,
                        2 * z * se, xtol=1e-14 * se))


def msprt(effect: np.ndarray | float, var: np.ndarray | float, tau2: float,
          alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Normal-mixture SPRT: (confidence-sequence half width, likelihood ratio) at each look.

    ``var`` is the variance of the effect estimate at the look; ``tau2`` the variance of
    the N(0, tau2) mixing distribution over effects. The interval ``effect ± half`` covers
    the true effect at every look simultaneously with probability at least 1 - alpha
    (Johari et al. 2017; Howard et al. 2021).
    """
    e = np.asarray(effect, dtype=float)
    v = np.asarray(var, dtype=float)
    half = np.sqrt(v * (v + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((v + tau2) / v)))
    log_lr = 0.5 * np.log(v / (v + tau2)) + tau2 * e**2 / (2 * v * (v + tau2))
    return half, np.exp(log_lr)


def always_valid_pvalues(likelihood_ratios: np.ndarray) -> np.ndarray:
    """Running ``min(1, 1/LR)``: a p-value valid at any stopping time."""
    lr = np.asarray(likelihood_ratios, dtype=float)
    inv = np.divide(1.0, lr, out=np.ones_like(lr), where=lr > 0)
    return np.minimum.accumulate(np.minimum(1.0, inv), axis=-1)
