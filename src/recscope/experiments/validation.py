"""Simulation studies that validate the statistics: A/A splits, planted effects,
sequential monitoring under the null.

Splits are done from sufficient statistics: for thousands of random splits, the group
sums come from one matrix product per chunk of splits, then each split goes through the
same :mod:`recscope.experiments.stats` code as a real analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recscope.experiments import stats
from recscope.experiments.sequential import monitor


def split_moments(x: np.ndarray, masks: np.ndarray, *, gets: np.ndarray | None = None,
                  step: float = 0.0) -> list[stats.Moments]:
    """Moments of the rows of ``x`` (n, p) selected by each boolean row of ``masks``.

    With ``gets``, ``step`` is first added to column 0 of the rows where ``gets`` is true
    (a planted effect), still from matrix products only.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n, p = x.shape
    cross = (x[:, :, None] * x[:, None, :]).reshape(n, p * p)
    w = masks.astype(float)
    cnt = w.sum(axis=1)
    s1 = w @ x
    s2 = (w @ cross).reshape(-1, p, p)
    if gets is not None and step:
        tg = (masks & gets).astype(float)
        m = tg.sum(axis=1)
        tx = tg @ x
        s1[:, 0] += step * m
        s2[:, 0, :] += step * tx
        s2[:, :, 0] += step * tx
        s2[:, 0, 0] += step * step * m
    out = []
    for k in range(len(cnt)):
        mean = s1[k] / cnt[k]
        cov = (s2[k] - cnt[k] * np.outer(mean, mean)) / (cnt[k] - 1)
        out.append(stats.Moments(float(cnt[k]), mean, cov))
    return out


@dataclass(frozen=True)
class AAResult:
    """False-positive rate (A/A) or coverage of a planted effect, raw and with CUPED."""

    splits: int
    fpr_raw: float
    fpr_cuped: float
    coverage_raw: float
    coverage_cuped: float
    variance_reduction: float


def aa_study(y: np.ndarray, covariate: np.ndarray | None, *, splits: int = 2000,
             lift: float = 0.1, alpha: float = 0.05, seed: int = 0, chunk: int = 250,
             distribution: str = "t") -> AAResult:
    """Split one arm in two at random ``splits`` times.

    A/A: the share of splits with p < alpha. Planted: each unit gets an effect of 0 or
    ``2·lift·mean(y)`` at random (heterogeneous, average ``lift·mean(y)``), seen only in
    the treatment half; the target is the split's sample average effect and coverage is
    the share of intervals that contain it.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=float)
    n = len(y)
    cols = np.column_stack([y] + ([np.asarray(covariate, float)] if covariate is not None
                                  else []))
    step = 2 * lift * y.mean()
    metric: stats.Term = (0, None)
    covs: list[stats.Term] = [(1, None)] if covariate is not None else []
    rej = {"raw": 0, "cuped": 0}
    cov_hits = {"raw": 0, "cuped": 0}
    reductions = []
    done = 0
    while done < splits:
        k = min(chunk, splits - done)
        masks = rng.random((k, n)) < 0.5
        mc = split_moments(cols, masks)
        mt = split_moments(cols, ~masks)
        gets = rng.random((k, n)) < 0.5
        pt = split_moments(cols, ~masks, gets=gets, step=step)
        truths = step * gets.mean(axis=1)
        for i in range(k):
            for label, use in (("raw", []), ("cuped", covs)):
                if label == "cuped" and not use:
                    continue
                ec, et = _pair(mc[i], mt[i], metric, use)
                c = stats.compare(ec, et, alpha=alpha, distribution=distribution)
                rej[label] += c.p_value < alpha
                pc, pe = _pair(mc[i], pt[i], metric, use)
                cp = stats.compare(pc, pe, alpha=alpha, distribution=distribution)
                cov_hits[label] += cp.ci_low <= truths[i] <= cp.ci_high
                if label == "cuped":
                    rc, rt = _pair(mc[i], mt[i], metric, [])
                    reductions.append(1 - (ec.var / ec.n + et.var / et.n)
                                      / (rc.var / rc.n + rt.var / rt.n))
        done += k
    nan = float("nan")
    return AAResult(splits, rej["raw"] / splits,
                    rej["cuped"] / splits if covs else nan, cov_hits["raw"] / splits,
                    cov_hits["cuped"] / splits if covs else nan,
                    float(np.mean(reductions)) if reductions else nan)


def _pair(mc: stats.Moments, mt: stats.Moments, metric: stats.Term,
          covs: list[stats.Term]) -> tuple[stats.Estimate, stats.Estimate]:
    if not covs:
        return stats.estimate(mc, metric), stats.estimate(mt, metric)
    theta, centre = stats.cuped_theta(stats.pool([mc, mt]), metric, covs)
    return (stats.estimate(mc, metric, covs, theta, centre),
            stats.estimate(mt, metric, covs, theta, centre))


@dataclass(frozen=True)
class SequentialResult:
    """Share of null experiments ever declared significant over the looks."""

    simulations: int
    looks: int
    naive_fpr: float
    always_valid_fpr: float


def sequential_null_study(*, simulations: int = 2000, looks: int = 30,
                          units_per_look: int = 500, base_rate: float = 0.1,
                          alpha: float = 0.05, tau: float = 0.1, seed: int = 0
                          ) -> SequentialResult:
    """Null A/B tests on a conversion metric, looked at once per day for ``looks`` days:
    the naive test rejects when any daily p < alpha, the always-valid one when its
    mixture-SPRT p-value does."""
    rng = np.random.default_rng(seed)
    shape = (simulations, looks)
    daily_c = rng.binomial(units_per_look, base_rate, shape)
    daily_t = rng.binomial(units_per_look, base_rate, shape)
    n = units_per_look * np.arange(1, looks + 1, dtype=float)
    s_c = np.cumsum(daily_c, axis=1)
    s_t = np.cumsum(daily_t, axis=1)
    p_c, p_t = s_c / n, s_t / n
    var_c = p_c * (1 - p_c) * n / (n - 1)
    var_t = p_t * (1 - p_t) * n / (n - 1)
    m = monitor(n, p_c, var_c, n, p_t, var_t, alpha=alpha, tau=tau)
    naive = np.mean(np.any(m.naive_p < alpha, axis=1))
    seq = np.mean(np.any(m.seq_p < alpha, axis=1))
    return SequentialResult(simulations, looks, float(naive), float(seq))
