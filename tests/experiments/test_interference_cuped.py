"""The candidate small-sample treatments of the cluster-level CUPED slope that
``benchmarks/interference.py cuped-candidates`` / ``cuped-check`` compare (issue 14):
``delta`` is exactly what ``compare_arms_adjusted`` reports, and the other variants compute
what their names say (checked against direct computations)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    root = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(root))  # the benchmark imports its sibling simulator.py
    try:
        spec = importlib.util.spec_from_file_location("bench_interference",
                                                      root / "interference.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(root))
    return mod


def _totals(rng: np.random.Generator, g: int, ratio: bool = True) -> np.ndarray:
    """Cluster totals [y, d, pre_y, pre_d] with heavy-tailed activity."""
    act = rng.lognormal(0, 1.0, g) * 20
    if not ratio:  # a mean metric: denominators 1
        one = np.full(g, 1.0)
        return np.stack([rng.poisson(act), one, rng.poisson(0.8 * act), one],
                        axis=1).astype(float)
    d, pre_d = rng.poisson(act) + 1.0, rng.poisson(act) + 1.0
    return np.stack([rng.poisson(0.1 * d * (1 + act / 40)), d,
                     rng.poisson(0.1 * pre_d * (1 + act / 40)), pre_d], axis=1).astype(float)


def test_delta_is_compare_arms_adjusted(bench: ModuleType) -> None:
    from recscope.experiments.clustered import compare_arms_adjusted

    rng = np.random.default_rng(3)
    tc, tt = _totals(rng, 23), _totals(rng, 31)
    (sc, mc), (st, mt) = bench._cluster_arm_stats(tc), bench._cluster_arm_stats(tt)
    e = compare_arms_adjusted("ctr", "t", sc, st, mc, mt, [(2, 3)])
    est, var, df = bench.cuped_variants(tc, tt)["delta"]
    assert est == pytest.approx(e.estimate, rel=1e-12)
    assert var == pytest.approx(e.se**2, rel=1e-12)
    assert df == pytest.approx(e.extra["df"], rel=1e-12)


def test_variants_compute_what_they_name(bench: ModuleType) -> None:
    rng = np.random.default_rng(5)
    tc, tt = _totals(rng, 15, ratio=False), _totals(rng, 18, ratio=False)
    out = bench.cuped_variants(tc, tt, rng=np.random.default_rng(0))
    est, var, _ = out["delta"]
    # mean metric (d = 1): the adjusted difference with the pooled OLS slope
    y, x = np.r_[tc[:, 0], tt[:, 0]], np.r_[tc[:, 2], tt[:, 2]]
    theta = np.cov(x, y)[0, 1] / np.var(x, ddof=1)
    direct = (tt[:, 0].mean() - tc[:, 0].mean()) - theta * (tt[:, 2].mean() - tc[:, 2].mean())
    assert est == pytest.approx(direct, rel=1e-10)
    vc = np.var(tc[:, 0] - theta * tc[:, 2], ddof=1) / len(tc)
    vt = np.var(tt[:, 0] - theta * tt[:, 2], ddof=1) / len(tt)
    assert var == pytest.approx(vc + vt, rel=1e-10)
    # df: one slope costs each arm a degree of freedom
    assert out["df"][1] == pytest.approx(vc * 14 / 13 + vt * 17 / 16, rel=1e-10)
    # cross_arm: each arm adjusted with the other arm's own OLS slope
    th_c = np.polyfit(tt[:, 2], tt[:, 0], 1)[0]
    th_t = np.polyfit(tc[:, 2], tc[:, 0], 1)[0]
    centre = x.mean()
    cross = ((tt[:, 0].mean() - th_t * (tt[:, 2].mean() - centre))
             - (tc[:, 0].mean() - th_c * (tc[:, 2].mean() - centre)))
    assert out["cross_arm"][0] == pytest.approx(cross, rel=1e-10)
    # jackknife: delete one cluster per arm, slope re-estimated, brute force
    def adjusted(a: np.ndarray, b: np.ndarray) -> float:
        yy, xx = np.r_[a[:, 0], b[:, 0]], np.r_[a[:, 2], b[:, 2]]
        th = np.cov(xx, yy)[0, 1] / np.var(xx, ddof=1)
        return float((b[:, 0].mean() - a[:, 0].mean()) - th * (b[:, 2].mean() - a[:, 2].mean()))

    jk = 0.0
    for arm, other, treated in ((tc, tt, False), (tt, tc, True)):
        n = len(arm)
        es = np.array([adjusted(other, np.delete(arm, i, axis=0)) if treated
                       else adjusted(np.delete(arm, i, axis=0), other) for i in range(n)])
        jk += (n - 1) / n * float(((es - es.mean()) ** 2).sum())
    assert out["jackknife"][1] == pytest.approx(jk, rel=1e-9)
    assert out["jackknife"][0] == est
    # the two-fold cross-fit is a weighted mean of fold differences: finite, near the estimate
    assert math.isfinite(out["cross_fit"][0]) and out["cross_fit"][1] > 0


def test_unit_theta_uses_the_external_slope(bench: ModuleType) -> None:
    from recscope.experiments import moments

    rng = np.random.default_rng(9)
    tc, tt = _totals(rng, 20), _totals(rng, 20)
    ext = moments.Moments.from_data(_totals(rng, 500))
    e_ext = bench.cuped_variants(tc, tt, external=[ext])["unit_theta"]
    th, _ = bench._slope([ext])
    _, centre = bench._slope([moments.Moments.from_data(tc), moments.Moments.from_data(tt)])
    mc, mt = moments.Moments.from_data(tc), moments.Moments.from_data(tt)
    assert e_ext[0] == pytest.approx(bench._adjusted(mc, mt, th, th, centre), rel=1e-12)
    assert e_ext[0] != pytest.approx(bench.cuped_variants(tc, tt)["delta"][0], rel=1e-6)
