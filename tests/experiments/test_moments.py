"""Statistics from sufficient statistics agree with statsmodels and with the formulas."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from recscope.experiments import moments


def _samples(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.lognormal(0.0, 1.0, 700), rng.lognormal(0.1, 1.1, 900)


def test_welch_t_matches_statsmodels() -> None:
    c, t = _samples()
    res = moments.compare_variants(moments.variant_estimate(moments.Moments.from_data(c), (0, None)),
                        moments.variant_estimate(moments.Moments.from_data(t), (0, None)))
    cm = CompareMeans(DescrStatsW(t), DescrStatsW(c))
    tstat, p, df = cm.ttest_ind(usevar="unequal")
    lo, hi = cm.tconfint_diff(usevar="unequal")
    assert res.statistic == pytest.approx(tstat, abs=1e-9)
    assert res.p_value == pytest.approx(p, abs=1e-9)
    assert res.df == pytest.approx(df, rel=1e-9)
    assert (res.ci_low, res.ci_high) == pytest.approx((lo, hi), abs=1e-9)
    assert res.effect == pytest.approx(t.mean() - c.mean(), abs=1e-12)


def test_z_test_matches_statsmodels() -> None:
    c, t = _samples(4)
    res = moments.compare_variants(moments.variant_estimate(moments.Moments.from_data(c), (0, None)),
                        moments.variant_estimate(moments.Moments.from_data(t), (0, None)),
                        distribution="z")
    cm = CompareMeans(DescrStatsW(t), DescrStatsW(c))
    z, p = cm.ztest_ind(usevar="unequal")
    lo, hi = cm.zconfint_diff(usevar="unequal")
    assert (res.statistic, res.p_value) == pytest.approx((z, p), abs=1e-9)
    assert (res.ci_low, res.ci_high) == pytest.approx((lo, hi), abs=1e-9)


def test_delta_method_ratio_equals_linearised_per_unit_variance() -> None:
    rng = np.random.default_rng(5)
    d = rng.poisson(5, 3000) + 1.0
    y = rng.binomial(d.astype(int), 0.2).astype(float)
    est = moments.variant_estimate(moments.Moments.from_data(np.column_stack([y, d])), (0, 1))
    r = y.sum() / d.sum()
    lin = (y - r * d) / d.mean()
    assert est.value == pytest.approx(r, rel=1e-12)
    assert est.var == pytest.approx(lin.var(ddof=1), rel=1e-9)


def test_cuped_theta_is_the_pooled_ols_slope_for_several_covariates() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4000, 2))
    y = 1 + x @ np.array([0.8, -0.3]) + rng.normal(size=4000)
    m = moments.Moments.from_data(np.column_stack([y, x]))
    theta, centre = moments.cuped_theta(m, (0, None), [(1, None), (2, None)])
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    assert theta == pytest.approx(ols.params[1:], abs=1e-9)
    assert centre == pytest.approx(x.mean(axis=0), abs=1e-12)


def test_cuped_on_a_ratio_metric_reduces_variance_and_is_unbiased() -> None:
    """Ratio metric with the pre-period ratio as covariate: same mean, lower variance."""
    rng = np.random.default_rng(7)
    n = 20_000
    rate = rng.beta(2, 8, n)
    d_pre, d = rng.poisson(10, n) + 1, rng.poisson(10, n) + 1
    y_pre, y = rng.binomial(d_pre, rate), rng.binomial(d, rate)
    cols = np.column_stack([y, d, y_pre, d_pre]).astype(float)
    half = rng.random(n) < 0.5
    mc, mt = moments.Moments.from_data(cols[half]), moments.Moments.from_data(cols[~half])
    theta, centre = moments.cuped_theta(moments.pool([mc, mt]), (0, 1), [(2, 3)])
    raw = moments.variant_estimate(mc, (0, 1))
    adj = moments.variant_estimate(mc, (0, 1), [(2, 3)], theta, centre)
    assert adj.var < 0.9 * raw.var
    assert abs(adj.value - raw.value) < 3 * np.sqrt(raw.var / raw.n)


def test_pool_equals_moments_of_the_union() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(300, 3)), rng.normal(1, 2, size=(500, 3))
    p = moments.pool([moments.Moments.from_data(a), moments.Moments.from_data(b)])
    u = moments.Moments.from_data(np.vstack([a, b]))
    assert p.n == u.n
    assert p.mean == pytest.approx(u.mean, abs=1e-12)
    assert p.cov == pytest.approx(u.cov, abs=1e-12)


def test_relative_effect_delta_method_interval() -> None:
    c, t = _samples(9)
    res = moments.compare_variants(moments.variant_estimate(moments.Moments.from_data(c), (0, None)),
                        moments.variant_estimate(moments.Moments.from_data(t), (0, None)),
                        distribution="z")
    mc, mt = c.mean(), t.mean()
    se = np.sqrt(t.var(ddof=1) / len(t) / mc**2 + mt**2 * c.var(ddof=1) / len(c) / mc**4)
    assert res.rel_effect == pytest.approx(mt / mc - 1)
    assert res.rel_ci_high - res.rel_effect == pytest.approx(1.959963984540054 * se, rel=1e-9)


def test_scorecard_mde_matches_statsmodels_power() -> None:
    """The per-row MDE of the scorecard (sample sizes: ``recscope.experiments.design``)."""
    sigma2, n1, ratio = 4.0, 5000, 1.5
    m = moments.mde(sigma2, n1, sigma2, n1 * ratio, alpha=0.05, power_target=0.8)
    es = NormalIndPower().solve_power(nobs1=n1, ratio=ratio, alpha=0.05, power=0.8)
    assert m / np.sqrt(sigma2) == pytest.approx(es, rel=1e-6)
    se = np.sqrt(sigma2 / n1 + sigma2 / (n1 * ratio))
    assert moments.z_power(m, se) == pytest.approx(0.8, abs=1e-9)


def test_srm_detects_a_small_imbalance_only_when_real() -> None:
    assert moments.srm_test([50_800, 49_200], [1, 1]) < 1e-3
    assert moments.srm_test([50_050, 49_950], [1, 1]) > 0.5
    assert moments.srm_test([66_700, 33_300], [2, 1]) > 0.01


def test_mid_quantile_is_hazen_on_distinct_values_and_smooth_on_ties() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=1001)
    v, c = np.unique(x, return_counts=True)
    for q in (0.1, 0.5, 0.93):
        assert moments.mid_quantile(v, c, 0, x.size, q)[0] == pytest.approx(
            np.quantile(x, q, method="hazen"), abs=1e-12)
    # tied data: values 1, 2, 3 with 30%, 40%, 30%: mid-CDF 0.15, 0.5, 0.85
    v, c = np.array([1.0, 2.0, 3.0]), np.array([30.0, 40.0, 30.0])
    assert moments.mid_quantile(v, c, 0, 100, 0.5)[0] == pytest.approx(2.0)
    assert moments.mid_quantile(v, c, 0, 100, 0.675)[0] == pytest.approx(2.5)
    assert moments.mid_quantile(v, c, 0, 100, 0.05)[0] == 1.0  # below the first mid-point
    # part of a histogram: 20 units below the window give the same answer
    assert moments.mid_quantile(v[1:], c[1:], 30, 100, 0.675)[0] == pytest.approx(2.5)


def test_histogram_bootstrap_se_matches_the_sampling_spread() -> None:
    """On discrete data the bootstrap s.e. of the mid-quantile equals its spread over
    repeated samples (within 15%), where the order-statistic interval collapses to 0."""
    rng = np.random.default_rng(7)
    support = np.arange(1, 13)
    probs = np.linspace(1, 2, 12) / np.linspace(1, 2, 12).sum()
    est, ses = [], []
    for _ in range(200):
        v, c = np.unique(rng.choice(support, 5000, p=probs), return_counts=True)
        value, se = moments.histogram_quantile(v.astype(float), c.astype(float), 0.0, 5000.0,
                                               0.5, n_boot=500, rng=rng)
        est.append(value)
        ses.append(se)
    assert np.mean(ses) == pytest.approx(np.std(est, ddof=1), rel=0.15)


def test_quantile_interval_covers_the_true_quantile() -> None:
    """Continuous data: the bootstrap interval covers (it under-covers slightly below a
    few thousand units per arm: 91% at 2,000 for the 90th percentile)."""
    rng = np.random.default_rng(10)
    q, n, truth = 0.9, 10_000, -np.log(0.1)  # exponential(1) 90th percentile
    hits, reps = 0, 120  # 120 seeded repetitions: coverage 94.2% (a 2.2-point SE)
    for _ in range(reps):
        x = rng.exponential(size=n)
        v, c = np.unique(x, return_counts=True)
        value, se = moments.histogram_quantile(v, c.astype(float), 0.0, float(n), q,
                                               n_boot=300, rng=rng)
        hits += abs(value - truth) <= 1.959963984540054 * se
    assert 0.90 <= hits / reps <= 0.99


def test_msprt_interval_contains_zero_iff_likelihood_ratio_below_threshold() -> None:
    effect = np.linspace(-0.2, 0.2, 41)
    half, lr = moments.msprt(effect, 0.004, 0.01, 0.05)
    assert np.array_equal(np.abs(effect) > half, lr > 20)
