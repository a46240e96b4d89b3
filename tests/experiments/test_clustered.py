"""Design analyses: cluster-robust standard errors against statsmodels, the interference
test and cluster-robust coverage by simulation, switchback Newey-West against
statsmodels' HAC, Spark = DuckDB, and bad designs refused in one line."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.analysis import analyze
from recscope.experiments.assignment import Experiment
from recscope.experiments.clustered import (
    ArmStats,
    DesignAnalysis,
    analyze_design,
    compare_arms,
    interference_test,
    switchback_effect,
    twoway_ratio,
    welch_df,
)
from recscope.experiments.designs import hierarchical_assign, switchback_schedule
from recscope.experiments.metrics import AnalysisConfig, Metric
from recscope.results import Effect

CONFIG = AnalysisConfig(metrics=[Metric("y", "mean", column="y"),
                                 Metric("ctr", "ratio", numerator="x", denominator="z")])


def clustered_data(n_clusters: int = 60, seed: int = 1, icc: float = 1.0,
                   effect: float = 0.3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Units in clusters of 1-11, whole clusters in one arm, outcomes correlated within
    clusters; ``z > 0`` so the ratio metric is also a per-unit regression."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, n_clusters)
    cl = np.repeat(np.arange(n_clusters), sizes)
    n = len(cl)
    arm = rng.integers(0, 2, n_clusters)
    arm[:2], arm[2:4] = 0, 1
    v = arm[cl]
    a = rng.normal(0, icc, n_clusters)[cl]
    y = 2 + a + rng.normal(0, 1, n) + effect * v
    z = rng.poisson(3, n) + 1.0
    x = z * (0.2 + 0.05 * a) + rng.normal(0, 0.3, n)
    assign = pd.DataFrame({"user_id": np.arange(n) + 100,
                           "variant": np.where(v == 1, "treatment", "control"),
                           "cluster_id": cl * 7})
    events = pd.DataFrame({"user_id": np.arange(n) + 100, "y": y, "x": x, "z": z})
    return assign, events


def _row(res: DesignAnalysis, metric: str, part: str | None = None):  # type: ignore[no-untyped-def]
    return next(e for e in res.results if e.metric == metric
                and e.extra.get("part") == part)


@pytest.mark.parametrize(("small_sample", "use_correction"), [("stata", True),
                                                              ("none", False)])
def test_cluster_robust_se_equals_statsmodels(small_sample: str,
                                              use_correction: bool) -> None:
    assign, events = clustered_data()
    res = analyze_design(assign, events, CONFIG, {"kind": "cluster"},
                         small_sample=small_sample)  # type: ignore[arg-type]
    v = (assign["variant"] == "treatment").to_numpy(float)
    x = sm.add_constant(v)
    kw = {"groups": assign["cluster_id"].to_numpy(), "use_correction": use_correction}
    ols = sm.OLS(events["y"].to_numpy(), x).fit(cov_type="cluster", cov_kwds=kw, use_t=True)
    r = _row(res, "y")
    assert r.estimate == pytest.approx(ols.params[1], abs=1e-12)
    assert r.se == pytest.approx(ols.bse[1], rel=1e-9, abs=0)
    # the reference: statsmodels' (Stata's) use_t takes t with G - 1 df; ours is Welch on
    # the two arms' cluster counts, at most G - 2, so p is never smaller than statsmodels'
    assert ols.df_resid_inference == 59
    assert r.extra["df"] <= 58
    t_g1 = 2 * stats.t.sf(abs(r.estimate / r.se), 59)
    assert t_g1 == pytest.approx(ols.pvalues[1], rel=1e-9)
    assert r.p_value == pytest.approx(2 * stats.t.sf(abs(r.estimate / r.se), r.extra["df"]),
                                      rel=1e-9)
    assert r.p_value >= ols.pvalues[1]
    # the ratio of sums is weighted least squares of x/z with weights z: same sandwich
    wls = sm.WLS((events["x"] / events["z"]).to_numpy(), x, weights=events["z"].to_numpy()
                 ).fit(cov_type="cluster", cov_kwds=kw)
    r = _row(res, "ctr")
    assert r.estimate == pytest.approx(wls.params[1], abs=1e-12)
    assert r.se == pytest.approx(wls.bse[1], rel=1e-9, abs=0)
    assert r.extra["n_clusters"] == 60 and r.extra["design"] == "cluster"
    # whatever the interval uses, CR1 (statsmodels' default) stays reported and exact
    kw1 = {**kw, "use_correction": True}
    for m, fit in (("y", sm.OLS(events["y"].to_numpy(), x)),
                   ("ctr", sm.WLS((events["x"] / events["z"]).to_numpy(), x,
                                  weights=events["z"].to_numpy()))):
        cr1 = fit.fit(cov_type="cluster", cov_kwds=kw1).bse[1]
        assert _row(res, m).extra["se_cr1"] == pytest.approx(cr1, rel=1e-9, abs=0)


def test_units_without_a_variant_are_left_out() -> None:
    """Units the assignments give no variant count in no arm: the cluster analysis equals
    the one on the assigned units alone (to the engine's order of summation)."""
    assign, events = clustered_data()
    gone = assign.index % 7 == 3
    unassigned = assign.assign(variant=assign["variant"].where(~gone, None))
    res = analyze_design(unassigned, events, CONFIG, {"kind": "cluster"})
    ref = analyze_design(assign[~gone], events[~gone], CONFIG, {"kind": "cluster"})
    assert len(res.results) == len(ref.results) == 2
    for a, b in zip(res.results, ref.results, strict=True):
        assert (a.metric, a.extra["n_clusters"]) == (b.metric, b.extra["n_clusters"])
        assert a.estimate == pytest.approx(b.estimate, rel=1e-12)
        assert a.se == pytest.approx(b.se, rel=1e-12)
    assert res.data_checks["units"] == int((~gone).sum())


def heavy_data(seed: int, n_clusters: int = 24) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clusters of 1-7 units whose exposures are Pareto(1.2)-distributed (a few units,
    hence clusters, hold much of an arm's denominator), click rates varying by cluster."""
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(n_clusters), rng.integers(1, 8, n_clusters))
    n = cl.size
    arm = rng.integers(0, 2, n_clusters)
    arm[:2], arm[2:4] = 0, 1
    z = np.round(5 * rng.pareto(1.2, n) + 1)
    x = rng.binomial(z.astype(int), rng.uniform(0.05, 0.25, n_clusters)[cl]).astype(float)
    y = rng.normal(0, 1, n_clusters)[cl] + rng.normal(0, 1, n)
    assign = pd.DataFrame({"user_id": np.arange(n), "cluster_id": cl,
                           "variant": np.where(arm[cl] == 1, "treatment", "control")})
    return assign, pd.DataFrame({"user_id": np.arange(n), "y": y, "x": x, "z": z})


def _leverage_adjusted(y: np.ndarray, w: np.ndarray, cl: np.ndarray, power: float
                       ) -> tuple[float, float, float]:
    """One arm's weighted mean of ``y`` (weights ``w``), its cluster-robust variance with
    each cluster's residuals premultiplied by ``(I - H_gg)^(-power)`` (CR2: 1/2; CR3: 1,
    without the (G - 1) / G factor) and that variance's Satterthwaite df under
    independent unit errors of variance 1 / w: by matrices, unit by unit."""
    from scipy import linalg

    xt = np.sqrt(w)
    m = 1 / float(xt @ xt)
    e = np.sqrt(w) * y - xt * (m * float(xt @ (np.sqrt(w) * y)))
    hat = np.outer(xt, xt) * m
    rows, var = [], 0.0
    for g in np.unique(cl):
        i = cl == g
        a = linalg.fractional_matrix_power(np.eye(i.sum()) - hat[np.ix_(i, i)], -power)
        row = np.zeros(y.size)
        row[i] = m * (xt[i] @ np.real(a))
        rows.append(row)
        var += float(row @ e) ** 2
    p = np.array(rows)
    s = p @ (np.eye(y.size) - hat) @ p.T
    return m * float(xt @ (np.sqrt(w) * y)), var, np.trace(s) ** 2 / np.trace(s @ s)


@pytest.mark.parametrize("small_sample", ["cr2", "cr3"])
def test_leverage_corrected_variances_equal_direct_computations(small_sample: str) -> None:
    """CR2 (Bell-McCaffrey) and CR3 (delete-one-cluster jackknife) from the engine's
    per-arm sums equal the unit-level matrix formulas and a direct jackknife, and their
    Satterthwaite df the matrix traces; the creator design uses CR3 by default."""
    assign, events = heavy_data(3)
    res = analyze_design(assign, events, CONFIG, {"kind": "cluster"},
                         small_sample=small_sample)  # type: ignore[arg-type]
    if small_sample == "cr3":
        default = analyze_design(assign, events, CONFIG, {"kind": "creator"})
        # equal up to the engine's order of summation
        assert [e.se for e in default.results] == pytest.approx(
            [e.se for e in res.results], rel=1e-12)
    df = assign.join(events[["y", "x", "z"]])
    df["one"] = 1.0
    for m, (yc, wc) in {"y": ("y", "one"), "ctr": ("x", "z")}.items():
        r = _row(res, m)
        var, dfs, est = [], [], []
        for arm in ("control", "treatment"):
            a = df[df["variant"] == arm]
            w = a[wc].to_numpy()
            b, v, f = _leverage_adjusted(a[yc].to_numpy() / w, w, a["cluster_id"].to_numpy(),
                                         0.5 if small_sample == "cr2" else 1.0)
            tot = a.groupby("cluster_id")[[yc, wc]].sum()
            g = len(tot)
            if small_sample == "cr3":  # the jackknife itself, cluster by cluster
                loo = [(tot[yc].sum() - tot[yc][k]) / (tot[wc].sum() - tot[wc][k]) - b
                       for k in tot.index]
                jack = (g - 1) / g * float(np.sum(np.square(loo)))
                assert v * (g - 1) / g == pytest.approx(jack, rel=1e-9)
                v = jack
            var.append(v)
            dfs.append(f)
            est.append(b)
        assert r.estimate == pytest.approx(est[1] - est[0], abs=1e-12)
        assert r.se == pytest.approx(math.sqrt(sum(var)), rel=1e-9)
        assert r.extra[f"se_{small_sample}"] == pytest.approx(r.se, rel=1e-12)
        assert r.extra["df"] == pytest.approx(welch_df(var, dfs), rel=1e-9)
        assert r.extra["small_sample"] == small_sample
        assert r.extra["effective_clusters"] < r.extra["n_clusters"]
        # the CR1-type variances are smaller: they do not grow heavy clusters' residuals
        arm = analyze_design(assign, events, CONFIG, {"kind": "cluster"})
        assert r.se > _row(arm, m).se
    # the arm-factor analysis says when its clusters weigh very unequally
    assert any("ctr: a few clusters hold much of the weight" in n for n in arm.notes())
    assert not any("a few clusters" in n for n in res.notes())
    if small_sample == "cr3":
        assert any("delete-one-cluster jackknife" in n for n in default.notes())


def test_cr3_reduces_to_the_arm_factor_for_equal_clusters() -> None:
    """Every cluster one unit and the metric a mean: all leverages are 1 / G, so CR3 is
    the arm factor and its df are Welch's on G - 1 (the creator design's mean metrics)."""
    assign, events = clustered_data(seed=5)
    assign["cluster_id"] = assign["user_id"]
    a = _row(analyze_design(assign, events, CONFIG, {"kind": "creator"}), "y")
    b = _row(analyze_design(assign, events, CONFIG, {"kind": "cluster"}), "y")
    assert a.extra["small_sample"] == "cr3" and b.extra["small_sample"] == "arm"
    assert a.se == pytest.approx(b.se, rel=1e-12)
    assert a.extra["df"] == pytest.approx(b.extra["df"], rel=1e-9)
    assert a.extra["effective_clusters"] == pytest.approx(len(assign), rel=1e-9)


def test_cr3_under_cuped_falls_back_to_the_arm_factor_and_says_so() -> None:
    assign, events, cfg = _with_covariate(11)
    a = analyze_design(assign, events, cfg, {"kind": "creator"})
    b = analyze_design(assign, events, cfg, {"kind": "cluster"})
    for m in ("y", "ctr"):
        ra, rb = _row(a, m), _row(b, m)
        assert ra.se == pytest.approx(rb.se, rel=1e-12)
        assert ra.extra["small_sample"] == "arm"
        assert "CUPED" in ra.extra["leverage_not_computable"]


def _aa_heavy_coverage(reps: int, seed: int) -> dict[str, float]:
    """A/A coverage of 95% intervals for a CTR over 150 creators randomised 50/50, whose
    impressions are Pareto(1.2) (the simulator's creator sizes) and click rates
    Beta(2, 18); every repetition draws a new population."""
    rng = np.random.default_rng(seed)
    hits = {"arm": 0, "cr3": 0}
    for _ in range(reps):
        imp = np.ceil(20 * (rng.pareto(1.2, 150) + 1))
        clk = rng.binomial(imp.astype(int), rng.beta(2, 18, 150)).astype(float)
        t = rng.random(150) < 0.5
        arms = [ArmStats.from_clusters(clk[k], imp[k]) for k in (~t, t)]
        for key in hits:
            e = compare_arms("ctr", "t", *arms, small_sample=key)  # type: ignore[arg-type]
            hits[key] += e.ci_low <= 0 <= e.ci_high
    return {k: v / reps for k, v in hits.items()}


def test_aa_coverage_with_a_few_heavy_creators() -> None:
    """The creator design's failure and its fix: with a few creators holding much of an
    arm's impressions, the arm-factor interval covers ~84% (as in the simulator's A/A);
    CR3 with its Satterthwaite df covers 95%."""
    reps = 2000
    cov = _aa_heavy_coverage(reps, seed=0)
    tol = 3 * math.sqrt(0.95 * 0.05 / reps)  # ~1.5 points
    assert cov["arm"] < 0.88, cov
    assert abs(cov["cr3"] - 0.95) <= tol, cov


def test_arm_stats_from_clusters_equal_the_engine_sums() -> None:
    assign, events = heavy_data(5)
    res = analyze_design(assign, events, CONFIG, {"kind": "creator"})
    df = assign.join(events[["x", "z"]])
    tot = df.groupby(["variant", "cluster_id"])[["x", "z"]].sum()
    arms = [ArmStats.from_clusters(tot.loc[v]["x"].to_numpy(), tot.loc[v]["z"].to_numpy())
            for v in ("control", "treatment")]
    e, r = compare_arms("ctr", "treatment", *arms, small_sample="cr3"), _row(res, "ctr")
    for key in ("se", "estimate", "p_value"):
        assert getattr(e, key) == pytest.approx(getattr(r, key), rel=1e-9)
    assert e.extra["df"] == pytest.approx(r.extra["df"], rel=1e-9)


def test_ratio_delta_method_equals_a_direct_cluster_level_computation() -> None:
    assign, events = clustered_data(seed=4)
    res = analyze_design(assign, events, CONFIG, {"kind": "cluster"})
    df = assign.join(events[["x", "z"]])
    var, means = {}, {}
    for arm, g in df.groupby("variant"):
        tot = g.groupby("cluster_id")[["x", "z"]].sum()
        r = tot["x"].sum() / tot["z"].sum()
        resid = tot["x"] - r * tot["z"]
        k = len(tot)
        var[arm] = k / (k - 1) * float(np.sum(resid**2)) / tot["z"].sum() ** 2
        means[arm] = r
        # the same as the delta method on cluster totals' sample moments
        cov = np.cov(tot[["x", "z"]].to_numpy(), rowvar=False)
        grad = np.array([1 / tot["z"].mean(), -r / tot["z"].mean()])
        assert grad @ cov @ grad / k == pytest.approx(var[arm], rel=1e-12)
    e = _row(res, "ctr")
    assert e.estimate == pytest.approx(means["treatment"] - means["control"], abs=1e-14)
    assert e.se == pytest.approx(math.sqrt(var["treatment"] + var["control"]), rel=1e-12)
    assert e.extra["control_mean"] == pytest.approx(means["control"], rel=1e-12)


def test_singleton_clusters_reduce_to_the_unit_level_scorecard() -> None:
    assign, events = clustered_data(seed=5)
    assign["cluster_id"] = assign["user_id"]
    res = analyze_design(assign, events, CONFIG, {"kind": "cluster"})
    card = analyze(assign, events, CONFIG)
    for m in ("y", "ctr"):
        a, b = _row(res, m), next(e for e in card.results if e.metric == m)
        assert a.estimate == pytest.approx(b.estimate, abs=1e-12)
        assert a.se == pytest.approx(b.se, rel=1e-9)
        assert a.extra["design_effect"] == pytest.approx(1.0, rel=1e-9)
        assert a.extra["se_unit"] == pytest.approx(b.se, rel=1e-9)
        if m == "y":  # Welch t on both sides
            assert a.p_value == pytest.approx(b.p_value, rel=1e-6)


def _with_covariate(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, AnalysisConfig]:
    """Clustered data plus a pre-period covariate ``w`` that tracks the cluster effect."""
    assign, events = clustered_data(seed=seed, icc=1.5)
    rng = np.random.default_rng(seed + 100)
    cl = assign["cluster_id"].to_numpy()
    shift = events["y"].to_numpy() - 2 + rng.normal(0, 0.5, len(cl))
    assign["w"] = shift - 0.3 * (assign["variant"] == "treatment").to_numpy()
    cfg = AnalysisConfig(metrics=[Metric("y", "mean", column="y", covariates=["w"]),
                                  Metric("ctr", "ratio", numerator="x", denominator="z",
                                         covariates=["w"])])
    return assign, events, cfg


def test_cluster_cuped_on_singletons_equals_the_unit_level_cuped_scorecard() -> None:
    assign, events, cfg = _with_covariate(11)
    assign["cluster_id"] = assign["user_id"]
    res = analyze_design(assign, events, cfg, {"kind": "cluster"})
    card = analyze(assign, events, cfg)
    for m in ("y", "ctr"):
        a, b = _row(res, m), next(e for e in card.results if e.metric == m)
        assert b.extra["cuped"] and a.extra["cuped"]
        assert a.estimate == pytest.approx(b.estimate, abs=1e-12)
        assert a.se == pytest.approx(b.se, rel=1e-9)
        assert a.extra["variance_reduction"] == pytest.approx(
            b.extra["variance_reduction"], rel=1e-7)
    assert not any("CUPED" in n for n in res.notes())


def test_cluster_cuped_equals_a_direct_cluster_level_computation() -> None:
    assign, events, cfg = _with_covariate(12)
    res = analyze_design(assign, events, cfg, {"kind": "cluster"})
    raw = analyze_design(assign, events, cfg, {"kind": "cluster"}, cuped=False)
    df = assign.join(events[["y", "x", "z"]])
    df["one"] = 1.0
    for m, (yc, dc) in {"y": ("y", "one"), "ctr": ("x", "z")}.items():
        tot = df.groupby("cluster_id")[list(dict.fromkeys([yc, dc, "w", "one"]))].sum()
        arm = df.groupby("cluster_id")["variant"].first() == "treatment"
        # pooled slope of the linearised metric on the linearised covariate (clusters)
        r, xbar = tot[yc].sum() / tot[dc].sum(), tot["w"].sum() / tot["one"].sum()
        ly = (tot[yc] - r * tot[dc]) / tot[dc].mean()
        lx = (tot["w"] - xbar * tot["one"]) / tot["one"].mean()
        theta = float(np.cov(ly, lx)[0, 1] / np.var(lx, ddof=1))
        est, var = {}, {}
        for a in (False, True):
            t = tot[arm == a]
            ra, xa = t[yc].sum() / t[dc].sum(), t["w"].sum() / t["one"].sum()
            est[a] = ra - theta * (xa - xbar)
            e = (t[yc] - ra * t[dc]) / t[dc].sum() - theta * (t["w"] - xa * t["one"]) / t[
                "one"].sum()
            k = len(t)
            var[a] = k / (k - 1) * float(np.sum(e**2))
        r_ = _row(res, m)
        assert r_.estimate == pytest.approx(est[True] - est[False], abs=1e-12)
        assert r_.se == pytest.approx(math.sqrt(var[True] + var[False]), rel=1e-9)
        assert r_.extra["theta"][0] == pytest.approx(theta, rel=1e-9)
        # the covariate tracks the cluster effect: the adjustment removes most variance
        assert r_.extra["variance_reduction"] > 0.5
        assert r_.se**2 == pytest.approx(_row(raw, m).se**2 * (
            1 - r_.extra["variance_reduction"]), rel=1e-9)
        assert r_.extra["design_effect"] == pytest.approx(_row(raw, m).extra["design_effect"])
    assert any("cuped=False" in n for n in raw.notes())


def test_clusters_table_and_design_effect(tmp_path: Path) -> None:
    assign, events = clustered_data(seed=6, icc=2.0)
    clusters = assign[["user_id", "cluster_id"]]
    a = analyze_design(assign, events, CONFIG, {"kind": "cluster"})
    b = analyze_design(assign.drop(columns="cluster_id"), events, CONFIG,
                       {"kind": "creator"}, clusters=clusters, small_sample="arm")
    for m in ("y", "ctr"):
        assert _row(a, m).se == pytest.approx(_row(b, m).se, rel=1e-12)
    # strongly correlated clusters of ~6 units: the design costs variance
    assert _row(a, "y").extra["design_effect"] > 2
    # minimum detectable effect at 80% power: about (1.96 + 0.84) standard errors
    assert _row(a, "y").extra["mde"] == pytest.approx(2.80 * _row(a, "y").se, rel=0.01)
    assert b.results[0].extra["design"] == "creator"
    out = b.save(tmp_path / "r.json")
    back = DesignAnalysis.load(out)
    assert back.results[0].se == pytest.approx(b.results[0].se)
    assert "Design: creator" in b.notes()[0]
    orphan = pd.concat([events, events.iloc[[0]].assign(user_id=-5)])
    c = analyze_design(assign, orphan, CONFIG.replace(segments=("variant",)),
                       {"kind": "cluster"})
    assert _row(c, "y").se == pytest.approx(_row(a, "y").se, rel=1e-12)
    assert any("1 unit(s) have events but no assignment" in n for n in c.notes())
    assert any("Segments are not split" in n for n in c.notes())
    assert "<table" in b.to_html()


def test_hierarchical_parts_and_interference_row() -> None:
    rng = np.random.default_rng(8)
    cl = np.repeat(np.arange(200), rng.integers(2, 9, 200))
    n = len(cl)
    v, mode = hierarchical_assign(cl, Experiment("hier"), 0.5)
    y = rng.normal(0, 1, 200)[cl] + rng.normal(0, 1, n) + 0.2 * v
    assign = pd.DataFrame({"user_id": np.arange(n), "cluster_id": cl, "mode": mode.astype(str),
                           "variant": np.where(v == 1, "treatment", "control")})
    events = pd.DataFrame({"user_id": np.arange(n), "y": y})
    cfg = AnalysisConfig(metrics=[Metric("y", "mean", column="y")])
    res = analyze_design(assign, events, cfg, {"kind": "hierarchical"})
    c, u, d = (_row(res, "y", p) for p in ("cluster", "unit", "interference"))
    assert d.estimate == pytest.approx(c.estimate - u.estimate, abs=1e-14)
    assert d.se == pytest.approx(math.hypot(c.se, u.se), rel=1e-12)
    # the unit part is the ordinary scorecard on the unit-mode units
    um = assign["mode"] == "unit"
    card = analyze(assign[um], events[um.to_numpy()], cfg)
    assert u.se == pytest.approx(card.results[0].se, rel=1e-9)
    assert u.estimate == pytest.approx(card.results[0].estimate, abs=1e-12)


def _arm(cl_tot: np.ndarray, cl_n: np.ndarray, unit_ss: np.ndarray) -> ArmStats:
    return ArmStats(float(len(cl_tot)), float(cl_n.sum()), float(cl_tot.sum()),
                    float(cl_n.sum()), float(cl_tot @ cl_tot), float(cl_n @ cl_n),
                    float(cl_tot @ cl_n), float(unit_ss), float(cl_n.sum()),
                    float(cl_tot.sum()))


def _simulate_aa(reps: int, seed: int) -> tuple[float, float]:
    """Coverage of the cluster-robust and of the naive unit-level 95% intervals in an
    A/A test with strongly correlated outcomes within clusters."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 30, 80)
    cl = np.repeat(np.arange(80), sizes)
    hit_c = hit_u = 0
    for _ in range(reps):
        y = rng.normal(0, 1, 80)[cl] + rng.normal(0, 1, len(cl))
        arm = rng.permutation(np.r_[np.zeros(40), np.ones(40)]).astype(int)
        tot = np.bincount(cl, y, 80)
        ss = np.bincount(cl, y * y, 80)
        arms = [_arm(tot[arm == k], sizes[arm == k], ss[arm == k].sum()) for k in (0, 1)]
        e = compare_arms("y", "t", arms[0], arms[1])
        hit_c += e.ci_low <= 0 <= e.ci_high
        hit_u += abs(e.estimate) <= 1.96 * e.extra["se_unit"]
    return hit_c / reps, hit_u / reps


def test_aa_cluster_robust_covers_and_naive_undercovers() -> None:
    reps = 1000
    cov_cluster, cov_unit = _simulate_aa(reps, seed=11)
    tol = 3 * math.sqrt(0.95 * 0.05 / reps)  # ~2 percentage points
    assert abs(cov_cluster - 0.95) <= tol, cov_cluster
    assert cov_unit < 0.7, cov_unit  # ICC 0.5 in clusters of ~16: SE far too small


def _hierarchical_rejections(reps: int, spill: float, seed: int, g: int = 200
                              ) -> tuple[float, float]:
    """Shares of interference tests rejecting at 5%, with the t reference and with a normal
    one, when each unit's outcome moves by ``spill`` x the share of its cluster that is
    treated (0: no interference); ``g`` clusters of 5-14 units, about half of them in
    cluster mode, within-cluster correlation 0.5."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 15, g)
    cl = np.repeat(np.arange(g), sizes)
    rejected_t = rejected_z = 0
    for _ in range(reps):
        cluster_mode = rng.random(g) < 0.5
        cluster_mode[:4], cluster_mode[-1] = True, False
        arm_c = rng.integers(0, 2, g)
        arm_c[:2], arm_c[2:4] = 0, 1  # at least 2 clusters per arm in the cluster part
        unit_arm = rng.integers(0, 2, len(cl))
        t = np.where(cluster_mode[cl], arm_c[cl], unit_arm)
        share = np.bincount(cl, t, g) / sizes
        y = rng.normal(0, 1, g)[cl] + rng.normal(0, 1, len(cl)) + 0.1 * t + spill * share[cl]
        effects = []
        for is_cluster in (True, False):
            m = cluster_mode[cl] == is_cluster
            key = cl if is_cluster else np.arange(len(cl))
            arms = []
            for k in (0, 1):
                sel = m & (t == k)
                u, inv = np.unique(key[sel], return_inverse=True)
                tot = np.bincount(inv, y[sel], len(u))
                nn = np.bincount(inv, None, len(u))
                arms.append(_arm(tot, nn, float(y[sel] @ y[sel])))
            effects.append(compare_arms("y", "t", *arms))
        e = interference_test(*effects)
        rejected_t += e.p_value < 0.05
        rejected_z += 2 * stats.norm.sf(abs(e.extra["statistic"])) < 0.05
    return rejected_t / reps, rejected_z / reps


def test_interference_test_level_and_power() -> None:
    reps = 400
    level, _ = _hierarchical_rejections(reps, 0.0, seed=21)
    assert level <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps), level  # <= ~8.3%
    assert level >= 0.01, level  # a test that never rejects would also pass the above
    power, _ = _hierarchical_rejections(100, 1.5, seed=22)
    assert power >= 0.8, power


def _cuped_rejections(reps: int, spill: float, seed: int, g: int = 120
                     ) -> tuple[float, float]:
    """Shares of interference tests rejecting at 5% without and with CUPED on a
    pre-period covariate (the persistent part of each unit's outcome plus noise), in a
    hierarchical design whose outcomes move by ``spill`` x the treated share of the
    cluster; both parts through ``compare_arms`` / ``compare_arms_adjusted`` on cluster
    (or unit) totals ``[y, units, x, units]``."""
    from recscope.experiments.clustered import compare_arms_adjusted
    from recscope.experiments.moments import Moments

    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 15, g)
    cl = np.repeat(np.arange(g), sizes)
    n = len(cl)
    rejected = np.zeros(2)
    for _ in range(reps):
        cluster_mode = rng.random(g) < 0.5
        cluster_mode[:4], cluster_mode[-1] = True, False
        arm_c = rng.integers(0, 2, g)
        arm_c[:2], arm_c[2:4] = 0, 1
        t = np.where(cluster_mode[cl], arm_c[cl], rng.integers(0, 2, n))
        share = np.bincount(cl, t, g) / sizes
        persistent = rng.normal(0, 1, g)[cl] + rng.normal(0, 1, n)
        x = persistent + rng.normal(0, 0.5, n)
        y = persistent + rng.normal(0, 0.5, n) + 0.1 * t + spill * share[cl]
        for j, adjust in enumerate((False, True)):
            effects = []
            for is_cluster in (True, False):
                m = cluster_mode[cl] == is_cluster
                key = cl if is_cluster else np.arange(n)
                arms, moms = [], []
                for k in (0, 1):
                    sel = m & (t == k)
                    u, inv = np.unique(key[sel], return_inverse=True)
                    tot = np.stack([np.bincount(inv, v, len(u)) for v in (
                        y[sel], np.ones(sel.sum()), x[sel], np.ones(sel.sum()))], axis=1)
                    arms.append(_arm(tot[:, 0], tot[:, 1], float(y[sel] @ y[sel])))
                    moms.append(Moments.from_data(tot))
                effects.append(compare_arms_adjusted("y", "t", *arms, *moms, [(2, 3)])
                               if adjust else compare_arms("y", "t", *arms))
            rejected[j] += interference_test(*effects).p_value < 0.05
    return rejected[0] / reps, rejected[1] / reps


def test_interference_test_with_cuped_keeps_its_level_and_gains_power() -> None:
    reps = 400
    raw, adjusted = _cuped_rejections(reps, 0.0, seed=31)
    tol = 3 * math.sqrt(0.05 * 0.95 / reps)
    for level in (raw, adjusted):
        assert 0.01 <= level <= 0.05 + tol, (raw, adjusted)
    raw, adjusted = _cuped_rejections(100, 0.5, seed=32)
    assert adjusted >= 0.8 and adjusted >= raw + 0.3, (raw, adjusted)


def test_interference_test_level_with_few_clusters() -> None:
    """20 clusters (~5 per arm in the cluster part): the cluster-robust variance is noisy,
    so a normal reference over-rejects (8.9% at 5%); the t reference with the parts'
    Welch-Satterthwaite df holds the level to within CR1's own small bias (6.0%)."""
    reps = 3000
    level_t, level_z = _hierarchical_rejections(reps, 0.0, seed=44, g=20)
    assert 0.03 <= level_t <= 0.07 < level_z, (level_t, level_z)
    e = interference_test(Effect("y", 1.0, se=0.6, extra={"df": 8.0}),
                          Effect("y", 0.2, se=0.3, extra={"df": 500.0}))
    v = (0.36, 0.09)
    df = sum(v) ** 2 / (v[0] ** 2 / 8 + v[1] ** 2 / 500)
    assert e.extra["df"] == pytest.approx(df, rel=1e-12) and e.extra["test"] == "t"
    assert e.p_value == pytest.approx(2 * stats.t.sf(0.8 / math.sqrt(0.45), df), rel=1e-12)
    assert e.ci_high - e.estimate == pytest.approx(stats.t.ppf(0.975, df) * e.se, rel=1e-9)


# -- switchback -------------------------------------------------------------------------------

def switchback_data(n_slices: int = 40, regions: int = 2, seed: int = 3, effect: float = 0.2
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sch = switchback_schedule(n_slices, regions, Experiment(f"sb{seed}"))
    schedule = pd.DataFrame([(r, s, ("control", "treatment")[sch[r, s]])
                             for r in range(regions) for s in range(n_slices)],
                            columns=["region", "slice", "variant"])
    n = 400 * n_slices
    reg = rng.integers(0, regions, n)
    sec = rng.integers(0, n_slices * 6 * 3600, n)
    sl = sec // (6 * 3600)
    ar = np.zeros(n_slices + 1)
    for s in range(1, n_slices + 1):  # autocorrelated demand over time
        ar[s] = 0.7 * ar[s - 1] + rng.normal(0, 0.3)
    mu = np.exp(0.5 + ar[sl] + effect * sch[reg, sl])
    events = pd.DataFrame({"user_id": rng.integers(0, 2000, n), "region": reg,
                           "ts": pd.Timestamp("2026-02-01", tz="UTC")
                           + pd.to_timedelta(sec, unit="s"),
                           "clicks": rng.poisson(mu), "imps": rng.poisson(4, n) + 1})
    return schedule, events


SB_CONFIG = AnalysisConfig(metrics=[Metric("clicks", "mean", column="clicks"),
                                    Metric("ctr", "ratio", numerator="clicks",
                                           denominator="imps")], timestamp="ts")


def test_newey_west_equals_statsmodels_hac() -> None:
    rng = np.random.default_rng(0)
    s = 60
    treated = rng.integers(0, 2, s).astype(bool)
    den = rng.integers(50, 150, s).astype(float)
    num = den * (0.3 + 0.05 * treated + np.cumsum(rng.normal(0, 0.02, s)))
    for lag in (1, 3):
        est, se, se_iid = switchback_effect(np.zeros(s, int), np.arange(s), treated, num,
                                            den, lag=lag)
        x = sm.add_constant(treated.astype(float))
        fit = sm.WLS(num / den, x, weights=den).fit(
            cov_type="HAC", cov_kwds={"maxlags": lag, "use_correction": False})
        assert est == pytest.approx(fit.params[1], abs=1e-12)
        assert se == pytest.approx(fit.bse[1], rel=1e-9)
        hc0 = sm.WLS(num / den, x, weights=den).fit(cov_type="HC0")
        assert se_iid == pytest.approx(hc0.bse[1], rel=1e-9)


def test_switchback_analysis() -> None:
    schedule, events = switchback_data(effect=0.8)
    res = analyze_design(schedule, events, SB_CONFIG,
                         {"kind": "switchback", "slice_hours": 6.0, "burn_in_hours": 1.0,
                          "regions": 2}, n_permutations=300)
    e = _row(res, "clicks")
    assert e.extra["n_slices"] == 40 and e.extra["n_cells"] == 80
    assert e.ci_low < e.estimate < e.ci_high and e.se > 0
    assert e.extra["ri_p_value"] < 0.05 and e.p_value < 0.05  # a real, large effect
    # burn-in: the first hour of each 6 h slice is dropped (~1/6 of the events)
    kept = e.n
    full = analyze_design(schedule, events, SB_CONFIG,
                          {"kind": "switchback", "slice_hours": 6.0, "regions": 2},
                          n_permutations=10)
    assert _row(full, "clicks").n > kept
    # an events-side slice column gives the same cells as bucketing the timestamp
    ev2 = events.assign(slice=((events["ts"] - events["ts"].min()).dt.total_seconds()
                               // (6 * 3600)).astype(int))
    res2 = analyze_design(schedule, ev2.drop(columns="ts"), SB_CONFIG.replace(timestamp=None),
                          {"kind": "switchback", "slice_hours": 6.0, "regions": 2},
                          n_permutations=10)
    assert _row(res2, "ctr").estimate == pytest.approx(_row(full, "ctr").estimate, abs=1e-12)


def test_switchback_variant_from_the_events() -> None:
    schedule, events = switchback_data(n_slices=10, seed=5)
    design = {"kind": "switchback", "slice_hours": 6.0, "regions": 2}
    a = analyze_design(schedule, events, SB_CONFIG, design, n_permutations=20)
    slc = ((events["ts"] - events["ts"].min()).dt.total_seconds() // (6 * 3600)).astype(int)
    served = events.assign(slice=slc).merge(schedule, on=["region", "slice"])
    b = analyze_design(None, served.drop(columns="slice"), SB_CONFIG, design,
                       n_permutations=20)
    for ea, eb in zip(a.results, b.results, strict=True):
        assert eb.estimate == pytest.approx(ea.estimate, abs=1e-12)
        assert eb.se == pytest.approx(ea.se, rel=1e-12)
    served.loc[served.index[0], "variant"] = (
        "treatment" if served["variant"].iloc[0] == "control" else "control")
    with pytest.raises(DataValidationError, match=r"column 'variant': 1 \(region, slice\) "
                       r"cell\(s\) hold events of several variants"):
        analyze_design(None, served.drop(columns="slice"), SB_CONFIG, design)


# -- bad designs ------------------------------------------------------------------------------

def test_bad_cluster_designs_are_one_line_errors(tmp_path: Path) -> None:
    assign, events = clustered_data(n_clusters=20, seed=9)
    f = tmp_path / "assign.csv"
    two = pd.concat([assign, assign.iloc[[0]].assign(cluster_id=999)])
    two.to_csv(f, index=False)
    with pytest.raises(DataValidationError, match=r"file assign.csv, column 'cluster_id': 1 "
                       r"unit\(s\) appear in two clusters \(e.g. unit 100\)"):
        analyze_design(str(f), events, CONFIG, {"kind": "cluster"})
    split = assign.copy()
    split.loc[0, "variant"] = "treatment" if split.loc[0, "variant"] == "control" else \
        "control"
    split.to_csv(f, index=False)
    if split.groupby("cluster_id")["variant"].nunique().max() > 1:
        with pytest.raises(DataValidationError, match="more than one variant"):
            analyze_design(str(f), events, CONFIG, {"kind": "cluster"})
    few = assign.copy()
    few["variant"] = np.where(few["cluster_id"] == 0, "treatment", "control")
    few.to_csv(f, index=False)
    with pytest.raises(DataValidationError, match=r"column 'cluster_id': variant 'treatment' "
                       r"has 1 clusters: a cluster-robust analysis needs at least 2"):
        analyze_design(str(f), events, CONFIG, {"kind": "cluster"})
    with pytest.raises(DataValidationError, match="needs a cluster column 'cluster_id'"):
        analyze_design(assign.drop(columns="cluster_id"), events, CONFIG, {"kind": "cluster"})
    missing = assign.astype({"cluster_id": "float"})
    missing.loc[3, "cluster_id"] = np.nan
    with pytest.raises(DataValidationError, match=r"1 unit\(s\) without a cluster id"):
        analyze_design(missing, events, CONFIG, {"kind": "cluster"})
    with pytest.raises(ConfigError, match=r"design\.kind"):
        analyze_design(assign, events, CONFIG, {"kind": "unit"})
    with pytest.raises(ConfigError, match="small_sample must be"):
        analyze_design(assign, events, CONFIG, {"kind": "cluster"},
                       small_sample="hc3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="only a switchback"):
        analyze_design(None, events, CONFIG, {"kind": "cluster"})


def test_bad_switchback_designs_are_one_line_errors() -> None:
    schedule, events = switchback_data(n_slices=8)
    with pytest.raises(ConfigError, match=r"slice \(100 h\) is longer than the experiment") \
            as info:
        analyze_design(schedule, events, SB_CONFIG, {"kind": "switchback",
                                                     "slice_hours": 100.0, "regions": 2})
    assert info.value.key == "design.slice_hours"
    with pytest.raises(DataValidationError, match=r"cell\(s\) with events have no row in the "
                       r"schedule"):
        analyze_design(schedule[schedule["slice"] != 3], events, SB_CONFIG,
                       {"kind": "switchback", "slice_hours": 6.0, "regions": 2})
    with pytest.raises(DataValidationError, match="'region' column for 2 regions"):
        analyze_design(schedule, events.drop(columns="region"), SB_CONFIG,
                       {"kind": "switchback", "slice_hours": 6.0, "regions": 2})


def twoway_data(seed: int, n_users: int = 30, n_creators: int = 12) -> pd.DataFrame:
    """Per-(user, creator) cells: creators randomised, a user's cells in both arms, user
    and creator effects (so both clusterings matter)."""
    rng = np.random.default_rng(seed)
    carm = rng.integers(0, 2, n_creators)
    u = np.repeat(np.arange(n_users), n_creators)
    c = np.tile(np.arange(n_creators), n_users)
    keep = rng.random(u.size) < 0.6
    u, c = u[keep], c[keep]
    y = rng.normal(size=u.size) + rng.normal(size=n_users)[u] + rng.normal(size=n_creators)[c]
    return pd.DataFrame({"creator": c, "user": u, "y": y, "one": np.ones(u.size),
                         "imp": rng.integers(1, 6, u.size).astype(float),
                         "variant": np.where(carm[c] == 1, "treatment", "control")})


TWOWAY = {"first": "creator", "second": "user", "variant": "variant", "control": "control",
          "treatment": "treatment"}


@pytest.mark.parametrize("seed", [3, 8])
def test_twoway_variance_equals_statsmodels_two_way_cluster(seed: int) -> None:
    df = twoway_data(seed)
    r = twoway_ratio(df, numerator="y", denominator="one", **TWOWAY)
    t = (df["variant"] == "treatment").to_numpy(float)
    fit = sm.OLS(df["y"].to_numpy(), sm.add_constant(t)).fit(
        cov_type="cluster", cov_kwds={"groups": df[["creator", "user"]].to_numpy(),
                                      "use_correction": False})
    assert r.estimate == pytest.approx(fit.params[1], abs=1e-12)
    assert r.variance == pytest.approx(fit.cov_params()[1, 1], rel=1e-9)
    assert r.variance == pytest.approx(r.v_first + r.v_second - r.v_both, rel=1e-12)
    # one-way by creator alone is statsmodels' one-way cluster variance
    one = sm.OLS(df["y"].to_numpy(), sm.add_constant(t)).fit(
        cov_type="cluster", cov_kwds={"groups": df["creator"].to_numpy(),
                                      "use_correction": False})
    assert r.v_first == pytest.approx(one.cov_params()[1, 1], rel=1e-9)


def test_twoway_ratio_is_the_delta_method_on_cell_residuals() -> None:
    df = twoway_data(5)
    df["clk"] = df["imp"] * (0.3 + 0.05 * df["y"]).clip(0, 1)
    r = twoway_ratio(df, numerator="clk", denominator="imp", **TWOWAY)
    tot = df.groupby("variant")[["clk", "imp"]].sum()
    ratio = tot["clk"] / tot["imp"]
    assert r.estimate == pytest.approx(ratio["treatment"] - ratio["control"], rel=1e-12)
    sign = np.where(df["variant"] == "treatment", 1.0, -1.0)
    arm_r = ratio[df["variant"]].to_numpy()
    arm_z = tot["imp"][df["variant"]].to_numpy()
    x = pd.Series(sign * (df["clk"] - arm_r * df["imp"]).to_numpy() / arm_z)
    v = {k: float((x.groupby(df[k]).sum() ** 2).sum()) for k in ("creator", "user")}
    both = float((x.groupby([df["creator"], df["user"]]).sum() ** 2).sum())
    assert (r.v_first, r.v_second, r.v_both) == pytest.approx(
        (v["creator"], v["user"], both), rel=1e-9)
    assert r.se == pytest.approx(math.sqrt(v["creator"] + v["user"] - both), rel=1e-9)


def test_twoway_falls_back_to_the_larger_one_way_variance() -> None:
    # a single user: the user-clustered variance of the difference is 0 and so is V
    df = twoway_data(2, n_users=1, n_creators=40)
    r = twoway_ratio(df, numerator="y", denominator="one", **TWOWAY)
    assert abs(r.v_first + r.v_second - r.v_both) < 1e-12 < r.v_first
    assert r.variance == pytest.approx(max(r.v_first, r.v_second), rel=1e-12)
    with pytest.raises(DataValidationError, match="column 'nope'"):
        twoway_ratio(df, numerator="nope", denominator="one", **TWOWAY)


# -- Spark ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    pytest.importorskip("pyspark", reason="the spark extra is not installed")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("recscope-designs-tests")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.default.parallelism", "2")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.driver.memory", "1g")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.mark.slow  # ~15 s of Spark start-up and ~20 s of first-query warm-up on 2 cores
@pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")
def test_spark_equals_duckdb(spark: object, tmp_path: Path) -> None:
    from recscope.experiments.engines import SparkEngine

    eng = SparkEngine(spark)
    assign, events = clustered_data(seed=12)
    rng = np.random.default_rng(0)
    assign["mode"] = np.where(rng.random(60)[assign["cluster_id"] // 7] < 0.5, "cluster",
                              "unit")
    unit_mode = assign["mode"] == "unit"
    assign.loc[unit_mode, "variant"] = rng.choice(["control", "treatment"], unit_mode.sum())
    assign["w"] = events["y"].to_numpy() + rng.normal(0, 1, len(assign))  # CUPED covariate
    cuped = AnalysisConfig(metrics=[Metric("y", "mean", column="y", covariates=["w"]),
                                    Metric("ctr", "ratio", numerator="x", denominator="z",
                                           covariates=["w"])])
    schedule, sb_events = switchback_data(n_slices=12, seed=4)
    sb_events["ts"] = sb_events["ts"].astype("datetime64[us, UTC]")
    paths = {}
    for name, df in (("a", assign), ("e", events), ("s", schedule), ("se", sb_events)):
        paths[name] = str(tmp_path / f"{name}.parquet")
        df.to_parquet(paths[name])
    # the hierarchical query holds the cluster design's (and its mode split); the cluster
    # design itself is left out to keep the test short
    ha, he = heavy_data(7)
    for name, df in (("ha", ha), ("he", he)):
        paths[name] = str(tmp_path / f"{name}.parquet")
        df.to_parquet(paths[name])
    runs = [((paths["a"], paths["e"], cuped, {"kind": "hierarchical"}), {}),
            ((paths["ha"], paths["he"], CONFIG, {"kind": "creator"}), {}),
            ((paths["s"], paths["se"], SB_CONFIG, {"kind": "switchback", "slice_hours": 6.0,
                                                    "burn_in_hours": 0.5, "regions": 2}),
             {"n_permutations": 50})]
    for args, kw in runs:
        a = analyze_design(*args, **kw)  # type: ignore[arg-type]
        b = analyze_design(*args, engine=eng, **kw)  # type: ignore[arg-type]
        assert len(a.results) == len(b.results) > 0
        for ra, rb in zip(a.results, b.results, strict=True):
            for key, va in ra.to_dict().items():
                vb = rb.to_dict()[key]
                if isinstance(va, float) and math.isfinite(va):
                    assert vb == pytest.approx(va, rel=1e-9, abs=1e-12), (args[3], key)
                elif isinstance(va, list):  # CUPED's theta
                    assert vb == pytest.approx(va, rel=1e-9), key
                else:
                    assert va == vb or (va != va and vb != vb), key
    tw = twoway_data(4)
    tw["clk"] = tw["imp"] * (0.3 + 0.05 * tw["y"]).clip(0, 1)
    ta = twoway_ratio(tw, numerator="clk", denominator="imp", **TWOWAY)
    tb = twoway_ratio(tw, numerator="clk", denominator="imp", engine=eng, **TWOWAY)
    assert dataclasses.astuple(tb) == pytest.approx(dataclasses.astuple(ta), rel=1e-9)
