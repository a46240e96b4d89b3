"""Statistics validated by simulation: interval coverage, A/A false positives, power,
and agreement with scipy / statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from recscope.data import RankedLists, Relevance
from recscope.errors import ConfigError
from recscope.offline import evaluate
from recscope.offline.compare import ComparisonResult, compare
from recscope.offline.per_user import adjust, intervals, paired_tests, randomisation_test


def test_interval_coverage_by_simulation() -> None:
    """95% bootstrap and normal intervals of a skewed per-user metric cover the true mean
    in about 95% of 400 simulated evaluations (binomial 99.9% band; the percentile
    bootstrap may under-cover by up to a point at n = 300)."""
    rng = np.random.default_rng(0)
    true_mean = 0.3  # Beta(0.6, 1.4): skewed like per-user recall
    reps, n = 400, 300
    x = rng.beta(0.6, 1.4, (n, reps))  # one simulated evaluation per column
    ivs = intervals(x, n_boot=400, seed=0)
    cover_boot = np.mean([iv.ci_low <= true_mean <= iv.ci_high for iv in ivs])
    cover_norm = np.mean([iv["normal_low"] <= true_mean <= iv["normal_high"] for iv in ivs])
    lo, hi = sps.binom.ppf([0.0005, 0.9995], reps, 0.95) / reps
    assert lo - 0.01 <= cover_boot <= hi, cover_boot
    assert lo <= cover_norm <= hi, cover_norm


def test_aa_false_positive_rate_and_power() -> None:
    """Under no difference (A/A) every test rejects at about 5%; with a difference of
    0.3 sd all three detect it almost always. One column per simulated comparison."""
    rng = np.random.default_rng(1)
    reps, n = 300, 200
    a = rng.beta(0.6, 1.4, (n, reps))
    b = a + rng.standard_t(3, (n, reps)) * 0.1  # A/A: same mean, heavy-tailed noise
    c = a + rng.normal(0.06, 0.2, (n, reps))  # a real improvement
    names = [f"r{j}" for j in range(reps)]
    aa = paired_tests(a, b, names, n_perm=1000, n_boot=0, seed=0)
    ab = paired_tests(a, c, names, n_perm=1000, n_boot=0, seed=1)
    rej = np.mean([[t.p_t < 0.05, t.p_wilcoxon < 0.05, t.p_randomisation < 0.05]
                   for t in aa], axis=0)
    det = np.mean([[t.p_t < 0.05, t.p_wilcoxon < 0.05, t.p_randomisation < 0.05]
                   for t in ab], axis=0)
    lo, hi = sps.binom.ppf([0.001, 0.999], reps, 0.05) / reps
    assert np.all((rej >= lo) & (rej <= hi)), rej
    assert np.all(det > 0.9), det


def test_paired_tests_agree_with_scipy_and_effect_sizes() -> None:
    rng = np.random.default_rng(2)
    a = rng.random((150, 2))
    b = a + rng.normal(0.05, 0.2, (150, 2))
    res = paired_tests(a, b, ["x", "y"], n_perm=2000, seed=0)
    for j, t in enumerate(res):
        d = b[:, j] - a[:, j]
        assert t.p_t == pytest.approx(sps.ttest_rel(b[:, j], a[:, j]).pvalue, rel=1e-12)
        assert t.p_wilcoxon == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-12)
        assert t.diff == pytest.approx(d.mean())
        assert t.cohens_dz == pytest.approx(d.mean() / d.std(ddof=1))
        assert t.diff_ci_low < t.diff < t.diff_ci_high
        # the randomisation p-value is close to the exact t p-value for this sample size
        assert abs(t.p_randomisation - t.p_t) < 0.02 + 0.3 * t.p_t
    assert randomisation_test(np.zeros(10)) == 1.0


def test_multiple_testing_adjustments_match_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.001, 0.02, 0.03, 0.2, np.nan, 0.04])
    ok = ~np.isnan(p)
    np.testing.assert_allclose(adjust(p, "holm")[ok], multipletests(p[ok], method="holm")[1])
    np.testing.assert_allclose(adjust(p, "bh")[ok], multipletests(p[ok], method="fdr_bh")[1])
    assert np.isnan(adjust(p, "holm")[4])
    with pytest.raises(ConfigError):
        adjust(p, "bonferonni")


def test_compare_systems_with_holm_and_roundtrip(tmp_path: object) -> None:
    rng = np.random.default_rng(3)
    n_users, n_items = 300, 60
    truth = Relevance.from_csr((rng.random((n_users, n_items)) < 0.1).astype(float))
    dense = truth.to_csr().toarray()
    good = np.argsort(-(dense + rng.random(dense.shape) * 1.2), axis=1)[:, :10]
    bad = np.argsort(-rng.random(dense.shape), axis=1)[:, :10]
    same = np.argsort(-rng.random(dense.shape), axis=1)[:, :10]
    res = {name: evaluate(RankedLists(np.arange(n_users), items, np.zeros(items.shape)), truth,
                          ["ndcg@10", "recall@10"], bootstrap=200)
           for name, items in [("random", bad), ("good", good), ("random2", same)]}
    cmp = compare(res, n_perm=1000, n_boot=200)
    assert cmp.baseline == "random"
    g = cmp.get("good", "ndcg@10")
    assert g.estimate > 0 and g["p_value_adjusted"] < 1e-6
    assert g.p_value <= g["p_holm"] and g["p_bh"] <= g["p_holm"]
    assert g.estimate == pytest.approx(res["good"].mean("ndcg@10") - res["random"].mean("ndcg@10"))
    assert g.ci_low < g.estimate < g.ci_high and g.se > 0 and g.n == n_users
    r2 = cmp.get("random2", "recall@10")
    assert r2["p_value_adjusted"] > 0.01
    path = cmp.save(tmp_path / "cmp.json")  # type: ignore[operator]
    back = ComparisonResult.load(path)
    assert back.get("good", "ndcg@10")["p_value_adjusted"] == g["p_value_adjusted"]
    assert back.systems["good"].mean("ndcg@10") == res["good"].mean("ndcg@10")
    assert back.systems["good"].system == "good"
    html = cmp.to_html()
    assert "System good" in html and "p_value_adjusted" in html
    for bad, key in (({"adjustment": "bonf"}, "adjustment"), ({"test": "z"}, "test"),
                     ({"n_boot": -1}, "bootstrap")):
        with pytest.raises(ConfigError) as exc:
            compare(res, **bad)  # type: ignore[arg-type]
        assert exc.value.key == key


def test_bootstrap_is_deterministic_per_seed() -> None:
    x = np.random.default_rng(4).random((500, 3))
    a = intervals(x, n_boot=300, seed=7)
    b = intervals(x, n_boot=300, seed=7)
    c = intervals(x, n_boot=300, seed=8)
    assert a == b and a != c
