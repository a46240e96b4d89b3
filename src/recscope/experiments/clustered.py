"""Analysis of interference-aware designs, in the warehouse engine (DuckDB or Spark SQL).

:func:`analyze_design` reads the same assignments, events and metrics as
:func:`recscope.experiments.analysis.analyze` and a :class:`DesignConfig`:

- **cluster / creator**: the analysis' own per-unit table (:class:`Plan`'s ``u`` CTE, so
  windows, filters, null policies and caps mean the same) is summed per cluster in the
  engine, then per arm into sufficient statistics of the cluster totals (count, means,
  sample (co)variances) and of the units (sums of squares and cross-products, for the
  design effect). Python sees one row per arm. Each arm's metric is a ratio of sums
  over its clusters (a mean is ``sum(y) / units``) and its variance is the delta method
  at the cluster level, i.e. the cluster-robust (sandwich) variance. The small-sample
  factor (``small_sample``): ``"arm"`` (default) ``G_a / (G_a - 1)`` per arm, which
  reduces to the unit-level Welch variance when every cluster is one unit;
  ``"stata"`` statsmodels' / Stata's CR1 ``G / (G - 1) * (N - 1) / (N - 2)`` on the
  whole regression (what ``OLS(...).fit(cov_type="cluster")`` reports); ``"none"``: CR0;
  ``"cr2"`` (Bell-McCaffrey / Pustejovsky-Tipton) and ``"cr3"`` (the delete-one-cluster
  jackknife, MacKinnon-Nielsen-Webb's CV3), which scale each cluster's residual by its
  leverage ``h_g`` (its share of the arm's denominator): CR1-type variances are biased
  down when a few clusters hold much of the weight (the creator design: 150 creators of
  Pareto sizes cover 84-89% in an A/A test). ``"cr3"`` is the creator design's default
  (``"arm"`` the others'); every row also reports ``se_cr1`` and ``effective_clusters``.
  Intervals and tests use a t reference with Welch-Satterthwaite degrees of freedom:
  per arm ``G_a - 1`` (at most ``G - 2`` in all, so never laxer than statsmodels' /
  Stata's ``use_t`` with ``G - 1``), or for ``cr2``/``cr3`` the Satterthwaite df of that
  variance under independent unit errors (``G_a - 1`` for equal clusters, far fewer for
  unequal ones). Metrics with covariates (``covariates``, ``cuped_days``)
  are CUPED-adjusted at the cluster level (``cuped=True``, default): the covariates'
  cluster totals join the metric's, and :mod:`recscope.experiments.moments`' adjustment
  (the one ``analyze`` uses per unit) runs on the clusters as units, so ratio metrics
  and ratio covariates go through the delta method on cluster totals
  (:func:`compare_arms_adjusted`).
- **hierarchical**: the same statistics split by mode; the cluster-randomised part is
  analysed as above, the unit-randomised part unit by unit, and
  :func:`interference_test` compares the two (Saveski et al., KDD 2017) against a t
  reference whose Welch-Satterthwaite df combine the two parts'.
- **switchback**: events are bucketed into (region, slice) cells (``slice`` column, or
  ``floor((ts - start) / slice_hours)``), the first ``burn_in_hours`` of every slice
  dropped, each metric summed per (cell, unit) and then per cell in the engine. The
  estimate is the difference of ratio-of-sums between arms' cells; its standard error is
  Newey-West (Bartlett kernel, lag ``hac_lag``) over the slices of each region, and a
  randomisation-inference p-value re-draws the cell schedule.

``design_effect`` is the variance of the design's estimate over the variance a unit
randomisation of the same units would have (the unit-level Welch variance on the same
data): the variance price of the design.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import sqlglot
from scipy import special
from sqlglot import exp

from recscope.errors import ConfigError, DataValidationError
from recscope.experiments import moments
from recscope.experiments.analysis import apply_caps, make_plan
from recscope.experiments.designs import CLUSTERED, DesignConfig, parse_design
from recscope.experiments.engines import (
    Engine,
    Source,
    SqlRunner,
    make_engine,
    open_tables,
    source_name,
)
from recscope.experiments.metrics import AnalysisConfig
from recscope.experiments.sql import Table, aliased, is_numeric, q
from recscope.results import Effect, Result

SmallSample = Literal["arm", "stata", "none", "cr2", "cr3"]
SMALL_SAMPLES: tuple[str, ...] = get_args(SmallSample)
N_PERMUTATIONS = 2000
"""Randomisation-inference draws of a switchback schedule."""
LEVERAGE_POWERS = ((1, 1), (2, 1), (2, 2), (3, 2), (2, 4), (3, 4))
"""(a, b) of the sums of h^a q^b over clusters that CR2's and CR3's degrees of freedom
need, in :class:`ArmStats`' order (``hq`` ... ``h3q4``)."""


@dataclass
class DesignAnalysis(Result):
    """Per metric and treatment: the design's estimate with its interval and p-value.

    ``extra`` of every row: ``variant``, ``design``, ``control_mean``,
    ``treatment_mean``, ``rel_effect``, ``n_control`` / ``n_treatment`` (units, or cells
    for a switchback), ``n_clusters`` (or ``n_slices`` and ``n_cells``),
    ``design_effect``, ``se_unit`` (the unit-randomisation standard error on the same
    data), ``mde`` (the smallest absolute effect detected with 80% power by a z test at
    this standard error), ``df`` and ``small_sample``; cluster designs add ``se_cr1``
    (statsmodels' ``cov_type="cluster"``), ``se_cr2``, ``se_cr3`` and
    ``effective_clusters`` (``2 +`` the arms' CR3 df: the clusters that count when a few
    hold much of the weight). Hierarchical designs give three
    rows per metric:
    ``part`` = ``cluster``, ``unit`` and ``interference`` (cluster minus unit).
    """

    kind = "design_analysis"
    title = "Experiment analysis by design"

    results: list[Effect]
    design: dict[str, Any] = field(default_factory=dict)
    data_checks: dict[str, Any] = field(default_factory=dict)
    sql: list[str] = field(default_factory=list)

    def effects(self) -> list[Effect]:
        return list(self.results)

    def rich_table(self) -> Any:
        """A compact table: the design's columns, not every diagnostic."""
        from recscope.report.tables import rich_table

        keys = ("metric", "part", "variant", "estimate", "ci_low", "ci_high", "se",
                "p_value", "n_clusters", "n_slices", "design_effect")
        rows = [{k: r[k] for k in keys if k in r} for r in self.rows()]
        return rich_table(rows, title=self.title, notes=self.notes())

    def notes(self) -> list[str]:
        out = []
        kind = self.design.get("kind")
        n = self.data_checks.get("n_clusters")
        if n is not None:
            ss = self.design.get("small_sample", "arm")
            how = {"cr2": "CR2 with Bell-McCaffrey df", "cr3": "CR3: the delete-one-cluster "
                   "jackknife, with its Satterthwaite df"}.get(ss, f"{ss} small-sample factor")
            out.append(f"Design: {kind}; {n:,} clusters. Standard errors are "
                       f"cluster-robust ({how}).")
        if kind == "switchback":
            out.append(f"Design: switchback; {self.data_checks.get('n_slices')} slices x "
                       f"{self.data_checks.get('n_regions')} region(s); burn-in "
                       f"{self.design.get('burn_in_hours', 0):g} h dropped; Newey-West "
                       f"standard errors (lag {self.data_checks.get('hac_lag')}).")
        for e in self.results:
            eff, g = e.extra.get("effective_clusters"), e.extra.get("n_clusters")
            if (e.extra.get("small_sample") in ("arm", "stata", "none") and eff is not None
                    and g and eff < 0.5 * g and e.extra.get("part") != "unit"):
                out.append(f"{e.metric}: a few clusters hold much of the weight ({eff:.0f} "
                           f"effective of {g:,}); the {e.extra['small_sample']} interval "
                           "may under-cover: small_sample=\"cr3\" corrects for it.")
            if e.extra.get("part") == "interference" and e.p_value < 0.05:
                out.append(f"{e.metric}: the cluster- and unit-randomised estimates differ "
                           f"(p = {e.p_value:.3g}): interference is likely.")
        skipped = self.data_checks.get("metrics_skipped")
        if skipped:
            out.append(f"Not analysed under this design: {', '.join(skipped)}.")
        orphans = self.data_checks.get("units_with_events_but_no_assignment")
        if orphans:
            out.append(f"{orphans:,} unit(s) have events but no assignment row and were "
                       "left out.")
        if self.data_checks.get("segments_ignored"):
            out.append("Segments are not split by design analyses "
                       f"({', '.join(self.data_checks['segments_ignored'])}).")
        ignored = self.data_checks.get("covariates_ignored")
        if ignored:
            out.append(f"CUPED covariates not used (cuped=False): {', '.join(ignored)}.")
        return out


# -- the interference test --------------------------------------------------------------------

def interference_test(cluster_effect: Effect, unit_effect: Effect, *, alpha: float = 0.05
                      ) -> Effect:
    """Difference of the cluster-randomised and the unit-randomised estimates of one
    metric (hierarchical design), with its standard error (the two parts use disjoint,
    randomly chosen clusters, so their estimates are independent), a t interval and the
    two-sided p-value of "no interference".

    The reference is a t distribution with Welch-Satterthwaite degrees of freedom
    combining the two parts' variances and their own degrees of freedom (``extra["df"]``
    of each part: Welch on the cluster counts for the cluster part, on the units for the
    unit part): with few clusters the cluster part's variance dominates and its
    cluster-robust estimate is noisy, so a normal reference over-rejects (Cameron,
    Gelbach and Miller 2008; Stata and statsmodels use ``t`` with ``G - 1`` df for one
    clustered regression). A part without ``df`` counts as infinite (normal)."""
    d = cluster_effect.estimate - unit_effect.estimate
    se = math.sqrt(cluster_effect.se**2 + unit_effect.se**2)
    if not (math.isfinite(d) and se > 0):
        return Effect(cluster_effect.metric, math.nan, n=cluster_effect.n + unit_effect.n,
                      extra={"part": "interference", "not_computable":
                             "an estimate or its standard error is not finite"})
    df = welch_df([cluster_effect.se**2, unit_effect.se**2],
                  [float(cluster_effect.extra.get("df", math.inf)),
                   float(unit_effect.extra.get("df", math.inf))])
    stat = d / se
    crit, p = _t_crit_p(stat, df, alpha)
    return Effect(cluster_effect.metric, d, d - crit * se, d + crit * se, se, p,
                  cluster_effect.n + unit_effect.n,
                  extra={"part": "interference", "statistic": stat, "df": df,
                         "test": "t" if math.isfinite(df) else "z"})


def welch_df(variances: Sequence[float], dfs: Sequence[float]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent variance
    estimates, ``(sum v)^2 / sum(v^2 / df)``; infinite when no term has finite df."""
    den = sum(v * v / f for v, f in zip(variances, dfs, strict=True) if math.isfinite(f))
    return sum(variances) ** 2 / den if den > 0 else math.inf


def _t_crit_p(stat: float, df: float, alpha: float) -> tuple[float, float]:
    """Two-sided critical value and p-value of ``stat`` under ``t(df)`` (normal when
    ``df`` is infinite)."""
    if math.isfinite(df):
        return (float(special.stdtrit(df, 1 - alpha / 2)),
                float(2 * special.stdtr(df, -abs(stat))))
    return float(-special.ndtri(alpha / 2)), float(2 * special.ndtr(-abs(stat)))


# -- arm statistics -> effects ----------------------------------------------------------------

@dataclass(frozen=True)
class ArmStats:
    """One arm's sufficient statistics for one metric.

    Cluster level: ``g`` clusters, ``num``/``den`` sums of the cluster totals of the
    numerator and denominator, ``s_nn``, ``s_dd``, ``s_nd``: sums of squares and
    cross-product of the cluster totals. Unit level: ``n`` units, ``u_nn``, ``u_dd``,
    ``u_nd`` the same over units (for the design effect and the unit-level variance).
    """

    g: float
    n: float
    num: float
    den: float
    s_nn: float
    s_dd: float
    s_nd: float
    u_nn: float
    u_dd: float
    u_nd: float
    # leverage-weighted sums for CR2 / CR3 and their degrees of freedom (NaN when not
    # collected): with h_g = T_den,g / den, cluster g's leverage in the arm's
    # ratio-of-sums regression, and q_g = 1 / (1 - h_g): sums over clusters of
    # q T_num^2, q T_den^2, q T_num T_den; the same with q^2; and h q, h^2 q, h^2 q^2,
    # h^3 q^2, h^2 q^4, h^3 q^4
    q_nn: float = math.nan
    q_dd: float = math.nan
    q_nd: float = math.nan
    q2_nn: float = math.nan
    q2_dd: float = math.nan
    q2_nd: float = math.nan
    hq: float = math.nan
    h2q: float = math.nan
    h2q2: float = math.nan
    h3q2: float = math.nan
    h2q4: float = math.nan
    h3q4: float = math.nan

    @property
    def value(self) -> float:
        return self.num / self.den if self.den != 0 else math.nan

    def cr2(self) -> float:
        """Bell-McCaffrey / Pustejovsky-Tipton CR2 variance of the arm's ratio of sums:
        each cluster's residual total ``T_num - R T_den`` over ``sqrt(1 - h_g)``, squared
        and summed, over ``den**2``; unbiased when units' errors are independent with
        variance inverse to their weight. NaN when the sums were not collected or a
        cluster has ``h >= 1``."""
        r = self.value
        ss = self.q_nn - 2 * r * self.q_nd + r * r * self.q_dd
        return max(ss, 0.0) / self.den**2 if math.isfinite(ss) else math.nan

    def cr3(self) -> float:
        """CR3 (CV3 of MacKinnon, Nielsen & Webb 2023): the delete-one-cluster jackknife
        of the arm's ratio of sums, ``(G - 1) / G * sum_g (R_(g) - R)^2`` with ``R_(g) - R
        = -(T_num - R T_den) / (den (1 - h_g))``. It grows the residuals of the clusters
        that hold much of the arm's weight, where CR1-type factors are biased down, and
        it reduces to the ``arm`` factor ``G / (G - 1)`` when all clusters weigh the
        same."""
        r = self.value
        ss = self.q2_nn - 2 * r * self.q2_nd + r * r * self.q2_dd
        if not math.isfinite(ss):
            return math.nan
        return (self.g - 1) / self.g * max(ss, 0.0) / self.den**2

    def bm_df(self) -> float:
        """Bell-McCaffrey (Satterthwaite) degrees of freedom of :meth:`cr2` under its
        working model, ``(tr S)^2 / tr(S^2)`` with ``S`` the covariance of the adjusted
        cluster scores (``tr S = 1 / den``): ``G - 1`` when all clusters weigh the same,
        far fewer when a few hold most of the weight."""
        t2 = self.h2q2 - 2 * self.h3q2 + self.h2q**2  # tr(S^2) * den^2
        return 1.0 / t2 if t2 > 0 else math.nan

    def cr3_df(self) -> float:
        """Satterthwaite degrees of freedom of :meth:`cr3` under the same working model
        (scores scaled by ``1 / (1 - h)`` instead of ``1 / sqrt(1 - h)``): ``(sum h q)^2 /
        (sum h^2 q^4 - 2 sum h^3 q^4 + (sum h^2 q^2)^2)``; ``G - 1`` for equal clusters.
        ``cr3_df + 1`` is reported as the arm's effective number of clusters."""
        t2 = self.h2q4 - 2 * self.h3q4 + self.h2q2**2
        return self.hq**2 / t2 if t2 > 0 else math.nan

    @classmethod
    def from_clusters(cls, num: np.ndarray, den: np.ndarray) -> ArmStats:
        """One arm's statistics from its clusters' numerator and denominator totals
        (numpy; the engine computes the same sums in SQL). The unit-level sums are
        those of the clusters (each cluster taken as one unit)."""
        num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
        tot = float(den.sum())
        g = float(num.size)
        s_nn, s_dd, s_nd = float(num @ num), float(den @ den), float(num @ den)
        lev = [math.nan] * 12
        if tot > 0 and np.all(den >= 0) and np.all(tot - den > 0):
            h = den / tot
            q = tot / (tot - den)
            lev = [float(np.sum(w)) for w in (
                q * num * num, q * den * den, q * num * den,
                q * q * num * num, q * q * den * den, q * q * num * den,
                *(h**a * q**b for a, b in LEVERAGE_POWERS))]
        return cls(g, g, float(num.sum()), tot, s_nn, s_dd, s_nd, s_nn, s_dd, s_nd, *lev)

    def cr0(self) -> float:
        """Cluster-robust variance without small-sample factor: sum of squared cluster
        residuals ``(T_num - R T_den)`` over ``den**2``."""
        r = self.value
        ss = self.s_nn - 2 * r * self.s_nd + r * r * self.s_dd
        return max(ss, 0.0) / self.den**2

    def unit_var(self) -> float:
        """Welch (ddof 1) variance of the arm's value under unit randomisation of the same
        units: delta method on per-unit numerator and denominator."""
        if self.n < 2:
            return math.nan
        r = self.value
        ss = self.u_nn - 2 * r * self.u_nd + r * r * self.u_dd  # residuals sum to zero
        return max(ss, 0.0) / self.den**2 * self.n / (self.n - 1)


def _check_small_sample(small_sample: str) -> None:
    """One line naming the allowed ``small_sample`` values (checked before any SQL runs)."""
    if small_sample not in SMALL_SAMPLES:
        raise ConfigError(f"small_sample must be one of {', '.join(SMALL_SAMPLES)}, got "
                          f"{small_sample!r}", key="small_sample")


def compare_arms(metric: str, variant: str, c: ArmStats, t: ArmStats, *,
                 alpha: float = 0.05, small_sample: SmallSample = "arm",
                 extra: Mapping[str, Any] | None = None) -> Effect:
    """Treatment minus control from two arms' cluster statistics (cluster-robust)."""
    rc, rt = c.value, t.value
    base: dict[str, Any] = {"variant": variant, "control_mean": rc, "treatment_mean": rt,
                            "n_control": int(c.n), "n_treatment": int(t.n),
                            "n_clusters": int(c.g + t.g), "small_sample": small_sample,
                            **(extra or {})}
    reason = None
    if min(c.g, t.g) < 2:
        reason = "fewer than 2 clusters in an arm"
    elif c.den == 0 or t.den == 0:
        reason = "the denominator sums to zero in an arm"
    if reason is not None:
        return Effect(metric, math.nan, n=c.n + t.n, extra={**base, "not_computable": reason})
    _check_small_sample(small_sample)
    gg, nn = c.g + t.g, c.n + t.n
    f1 = gg / (gg - 1) * (nn - 1) / (nn - 2) if nn > 2 else math.nan
    lev = {"cr2": ((c.cr2(), t.cr2()), (c.bm_df(), t.bm_df())),
           "cr3": ((c.cr3(), t.cr3()), (c.cr3_df(), t.cr3_df()))}
    has = {k: all(math.isfinite(x) for x in (*v, *f)) for k, (v, f) in lev.items()}
    base["se_cr1"] = math.sqrt((c.cr0() + t.cr0()) * f1)
    if has["cr2"]:
        base["se_cr2"] = math.sqrt(sum(lev["cr2"][0]))
    if has["cr3"]:
        base["se_cr3"] = math.sqrt(sum(lev["cr3"][0]))
        base["effective_clusters"] = sum(lev["cr3"][1]) + 2
    if small_sample in lev and not has[small_sample]:
        base.update(small_sample="arm", leverage_not_computable=(
            f"{small_sample} needs every cluster's leverage below 1 and a non-negative "
            "denominator; the arm factor is used"))
        small_sample = "arm"
    if small_sample == "arm":
        vc = c.cr0() * c.g / (c.g - 1)
        vt = t.cr0() * t.g / (t.g - 1)
    elif small_sample == "stata":
        vc, vt = c.cr0() * f1, t.cr0() * f1
    elif small_sample == "none":
        vc, vt = c.cr0(), t.cr0()
    else:
        vc, vt = lev[small_sample][0]
    est = rt - rc
    var = vc + vt
    se = math.sqrt(var)
    df = welch_df([vc, vt], list(lev[small_sample][1]) if small_sample in lev
                  else [c.g - 1, t.g - 1])
    uv = c.unit_var() + t.unit_var()
    base.update(design_effect=var / uv if uv > 0 else math.nan,
                se_unit=math.sqrt(uv) if uv >= 0 else math.nan, df=df,
                rel_effect=rt / rc - 1 if rc != 0 else math.nan)
    if not se > 0:
        return Effect(metric, est, n=c.n + t.n,
                      extra={**base, "not_computable": "no variance in either arm"})
    stat = est / se
    crit, p = _t_crit_p(stat, df, alpha)
    base["not_computable"] = None
    base["mde"] = moments.mde(var, 1.0, 0.0, 1.0, alpha=alpha)
    return Effect(metric, est, est - crit * se, est + crit * se, se, p, c.n + t.n, base)


def cluster_moments(g: float, sums: np.ndarray, products: np.ndarray) -> moments.Moments:
    """Moments (count, means, ddof-1 covariance) of ``g`` clusters' totals from their sums
    and the sums of their pairwise products (what the engine returns per arm)."""
    mean = np.asarray(sums, dtype=float) / g
    cov = (np.asarray(products, dtype=float) - g * np.outer(mean, mean)) / (g - 1)
    return moments.Moments(float(g), mean, cov)


def compare_arms_adjusted(metric: str, variant: str, c: ArmStats, t: ArmStats,
                          mc: moments.Moments, mt: moments.Moments,
                          covariates: Sequence[moments.Term], *, alpha: float = 0.05,
                          small_sample: SmallSample = "arm",
                          extra: Mapping[str, Any] | None = None) -> Effect:
    """Treatment minus control with CUPED / regression adjustment at the cluster level.

    ``mc``/``mt``: each arm's moments of its cluster totals, variables ``[numerator,
    denominator, ...]`` (the metric is the ratio of the first two's sums; ``covariates``
    are terms over the same variables, ratios of cluster sums too). The adjustment is
    :mod:`recscope.experiments.moments`' (pooled ``theta``, centred on the pooled
    covariate values) applied to clusters as the units: its delta-method variance is the
    cluster-robust variance of the adjusted estimate (``small_sample`` as in
    :func:`compare_arms`). ``c``/``t`` (the unadjusted statistics) give the design effect
    (unadjusted design over unit randomisation) and ``variance_reduction``."""
    if small_sample in ("cr2", "cr3"):
        # the adjusted estimate's leverages involve the covariates: not derived here, so
        # the adjusted variance keeps the per-arm factor (stated in the row)
        extra = {**(extra or {}), "leverage_not_computable": f"{small_sample} is not "
                 "derived for CUPED-adjusted estimates; the arm factor is used"}
        small_sample = "arm"
    raw = compare_arms(metric, variant, c, t, alpha=alpha, small_sample=small_sample,
                       extra={**(extra or {}), "cuped": True})
    if raw.extra.get("not_computable") is not None:
        return raw
    theta, centre = moments.cuped_theta(moments.pool([mc, mt]), (0, 1), covariates)
    ec = moments.variant_estimate(mc, (0, 1), covariates, theta, centre)
    et = moments.variant_estimate(mt, (0, 1), covariates, theta, centre)
    gg, nn = c.g + t.g, c.n + t.n

    def factor(g: float) -> float:  # variant_estimate's var / n carries g / (g - 1)
        if small_sample == "arm":
            return 1.0
        f = (g - 1) / g
        return f * gg / (gg - 1) * (nn - 1) / (nn - 2) if small_sample == "stata" else f

    vc, vt = ec.var / ec.n * factor(c.g), et.var / et.n * factor(t.g)
    est, var = et.value - ec.value, vc + vt
    se = math.sqrt(var)
    df = welch_df([vc, vt], [c.g - 1, t.g - 1])
    base = dict(raw.extra)
    for k in ("se_cr1", "se_cr2", "se_cr3"):  # the unadjusted estimate's: not this row's
        base.pop(k, None)
    base.update(df=df, variance_reduction=1 - var / raw.se**2 if raw.se > 0 else math.nan,
                theta=[float(x) for x in theta])
    if not (se > 0 and math.isfinite(est)):
        return Effect(metric, est, n=raw.n, extra={
            **base, "not_computable": "no variance after adjustment"})
    stat = est / se
    crit, p = _t_crit_p(stat, df, alpha)
    base["mde"] = moments.mde(var, 1.0, 0.0, 1.0, alpha=alpha)
    return Effect(metric, est, est - crit * se, est + crit * se, se, p, raw.n, base)


# -- SQL helpers -------------------------------------------------------------------------------

def _ident(name: str) -> str:
    return q(name).sql("duckdb")


def _from(t: Table, alias: str) -> str:
    return aliased(t.expr, alias).sql("duckdb")


def _to(dialect: str, text: str) -> str:
    return sqlglot.parse_one(text, read="duckdb").sql(dialect)


def _f(v: object) -> float:
    return math.nan if v is None else float(v)  # type: ignore[arg-type]


# -- the entry point --------------------------------------------------------------------------

def analyze_design(assignments: Source | None, events: Source | Sequence[Source],
                   config: AnalysisConfig, design: DesignConfig | Mapping[str, Any], *,
                   engine: str | Engine = "duckdb", clusters: Source | None = None,
                   cluster: str = "cluster_id", mode: str = "mode", region: str = "region",
                   slice_column: str = "slice", start: float | None = None,
                   small_sample: SmallSample | None = None, hac_lag: int | None = None,
                   n_permutations: int = N_PERMUTATIONS, seed: int = 0, cuped: bool = True,
                   show_sql: Callable[[str], None] | None = None) -> DesignAnalysis:
    """Analyse an experiment under its design (see the module docstring).

    ``assignments``: one row per unit with ``config.unit``, ``config.variant`` and, for
    cluster designs, ``cluster`` (or pass ``clusters``, a unit -> cluster table with the
    columns ``config.unit`` and ``cluster``); hierarchical designs add ``mode``
    (``"cluster"`` / ``"unit"``). For a switchback, ``assignments`` is the schedule:
    one row per (``region``, ``slice``) cell with its ``config.variant``; ``events``
    carry ``slice_column`` (or a timestamp, bucketed from ``start``, epoch seconds,
    default the first event) and ``region`` (optional with one region); with
    ``assignments=None`` the events' own ``config.variant`` column says which arm each
    cell served (one per cell, checked). ``cuped``: adjust cluster and hierarchical
    analyses for the metrics' covariates (switchbacks do not use them). ``small_sample``:
    ``"cr3"`` for the creator design and engagement clusters, ``"arm"`` for the others
    unless given.
    """
    if assignments is None and parse_design(design).kind != "switchback":
        raise ConfigError("only a switchback can be analysed without an assignments table",
                          key="assignments")
    d = parse_design(design)
    if small_sample is None:
        # creators and engagement clusters are built from activity, so a few of them hold
        # much of it: the delete-one-cluster jackknife
        small_sample = "cr3" if d.kind == "creator" or d.graph == "engagement" else "arm"
    _check_small_sample(small_sample)
    if hac_lag is not None and not (isinstance(hac_lag, int) and hac_lag >= 0):
        raise ConfigError(f"hac_lag must be a whole number >= 0, got {hac_lag!r}",
                          key="hac_lag")
    if not (isinstance(n_permutations, int) and n_permutations >= 0):
        raise ConfigError(f"n_permutations must be a whole number >= 0, got "
                          f"{n_permutations!r}", key="n_permutations")
    if d.kind == "unit":
        raise ConfigError("the unit design is analysed by recscope.experiments.analyze "
                          "(recscope experiment analyze)", key="design.kind")
    if d.kind == "switchback":
        return _switchback(assignments, events, config, d, engine=engine, region=region,
                           slice_column=slice_column, start=start, hac_lag=hac_lag,
                           n_permutations=n_permutations, seed=seed, show_sql=show_sql)
    assert d.kind in CLUSTERED
    return _clustered(assignments, events, config, d, engine=engine, clusters=clusters,
                      cluster=cluster, mode=mode, small_sample=small_sample, cuped=cuped,
                      show_sql=show_sql)


def _with_clusters(eng: Engine, a_tbl: Table, clusters: Source, unit: str, cluster: str
                   ) -> Table:
    """The assignments joined with a unit -> cluster table (a derived table)."""
    k = eng.table(clusters)
    for c in (unit, cluster):
        if c not in k.columns:
            raise DataValidationError(f"column not found in the clusters table (columns: "
                                      f"{', '.join(k.columns)})", file=k.name, column=c)
    if cluster in a_tbl.columns:
        raise ConfigError(f"the assignments already have a {cluster!r} column: pass either "
                          "it or a clusters table", key="clusters")
    sel = exp.select(exp.Star(), exp.alias_(exp.column(q(cluster), table=q("k")), q(cluster)))
    sel = sel.from_(aliased(a_tbl.expr, "s")).join(
        aliased(k.expr, "k"), on=exp.EQ(this=exp.column(q(unit), table=q("s")),
                                        expression=exp.column(q(unit), table=q("k"))),
        join_type="left")
    # the star would repeat the unit column of k: select s.* only
    sel.set("expressions", [exp.Column(this=exp.Star(), table=q("s")),
                            exp.alias_(exp.column(q(cluster), table=q("k")), q(cluster))])
    return Table(a_tbl.name, exp.Subquery(this=sel),
                 {**a_tbl.columns, cluster: k.columns[cluster]})


def _clustered(assignments: Source, events: Source | Sequence[Source],
               config: AnalysisConfig, d: DesignConfig, *, engine: str | Engine,
               clusters: Source | None, cluster: str, mode: str,
               small_sample: SmallSample, show_sql: Callable[[str], None] | None,
               cuped: bool = True) -> DesignAnalysis:
    eng, a_tbl, ev_tbls = open_tables(engine, assignments, events)
    if clusters is not None:
        a_tbl = _with_clusters(eng, a_tbl, clusters, config.unit, cluster)
    hier = d.kind == "hierarchical"
    for c, why in ((config.unit, "unit"), (config.variant, "variant"), (cluster, "cluster"),
                   *([(mode, "mode")] if hier else [])):
        if c not in a_tbl.columns:
            raise DataValidationError(
                f"the {d.kind} design needs a {why} column {c!r} in the assignments "
                f"(columns: {', '.join(a_tbl.columns)})", file=a_tbl.name, column=c)
    run = SqlRunner(eng, [a_tbl, *ev_tbls], show_sql)
    segs = (cluster, mode) if hier else (cluster,)
    cfg = config.replace(segments=segs, correction="none")
    plan = make_plan(cfg, a_tbl, ev_tbls, eng)
    checks = plan.apply_checks(run(plan.checks_sql())[0])
    _check_clusters(run, a_tbl, config, cluster, mode if hier else None, eng.dialect,
                    one_row_per_unit=plan.one_row_per_unit)
    apply_caps(plan, run)
    metrics = [mp for mp in plan.metrics if mp.metric.kind != "quantile"]
    skipped = [mp.metric.name for mp in plan.metrics if mp.metric.kind == "quantile"]
    ignored = [] if cuped else [mp.metric.name for mp in metrics if mp.covariates]
    if not metrics:
        raise ConfigError("no metric can be analysed under a cluster design (quantile "
                          "metrics are not supported)", key="metrics", file=config.source)
    # per metric: the numerator and denominator expressions over u (per unit)
    # (metric, numerator, denominator) SQL; the denominator is None for a mean, whose
    # denominator is the indicator of a value: its sums are counts (three aggregates over
    # the units instead of six; grouping the units by cluster is this analysis' main cost)
    terms: list[tuple[str, str, str | None]] = []
    # CUPED at the cluster level: per metric, the cluster totals of its covariate
    # variables (after numerator, denominator and the unit count) and their terms
    adjust: dict[int, tuple[list[str], list[moments.Term]]] = {}
    for i, mp in enumerate(metrics):
        names = [plan.canon[v] for v in mp.variables]
        y = f"u.{_ident(names[0])}"
        den: str | None
        if mp.term[1] is None:
            both, num, den = f"{y} IS NOT NULL", y, None
        else:
            z = f"u.{_ident(names[1])}"
            both = f"{y} IS NOT NULL AND {z} IS NOT NULL"
            num = f"CASE WHEN {both} THEN {y} END"
            den = f"CASE WHEN {both} THEN {z} END"
        terms.append((mp.metric.name, num, den))
        if cuped and mp.covariates:
            used = sorted({k for t in mp.covariates for k in t if k is not None})
            pos = {k: 3 + j for j, k in enumerate(used)}  # after num, den, count
            xs = [f"CASE WHEN {both} THEN COALESCE(u.{_ident(names[k])}, 0.0) END"
                  for k in used]
            cterms = [(pos[a], 2 if b is None else pos[b]) for a, b in mp.covariates]
            adjust[i] = (xs, cterms)
    if hier:
        md = "CAST(u.s1 AS TEXT)"
        grp = f"CASE WHEN {md} = 'unit' THEN CAST(u.u AS TEXT) ELSE CAST(u.s0 AS TEXT) END"
    else:
        md, grp = "'cluster'", "u.s0"
    # units without exactly one variant (nv <> 1) go to groups of a NULL variant, which are
    # left out below: a WHERE here would make DuckDB's planner guess a fifth of the rows
    # and build its join on the wrong side
    v = "CASE WHEN u.nv = 1 THEN u.v END"
    inner = [f"{v} AS v", f"{md} AS md", f"{grp} AS g"]
    outer = ["c.v AS v", "c.md AS md", "COUNT(*) AS n_clusters"]
    lever = ["c.*"]
    arm_of = f"{v}, {md}" if hier else v
    for i, (_, num, den) in enumerate(terms):
        inner += [f"SUM({num}) AS n{i}", f"SUM(({num}) * ({num})) AS unn{i}"]
        if den is None:  # a mean: d = k = udd = COUNT(y), und = n
            inner += [f"CAST(COUNT({num}) AS DOUBLE) AS d{i}",
                      f"CAST(SUM(COUNT({num})) OVER (PARTITION BY {arm_of}) AS DOUBLE) AS dt{i}"]
            lever += [f"c.d{i} AS k{i}", f"c.d{i} AS udd{i}", f"c.n{i} AS und{i}"]
        else:
            inner += [f"SUM({den}) AS d{i}", f"SUM(({den}) * ({den})) AS udd{i}",
                      f"SUM(({num}) * ({den})) AS und{i}", f"COUNT({den}) AS k{i}",
                      f"SUM(SUM({den})) OVER (PARTITION BY {arm_of}) AS dt{i}"]
        outer += [f"SUM(c.k{i}) AS k{i}", f"SUM(c.n{i}) AS n{i}", f"SUM(c.d{i}) AS d{i}",
                  f"SUM(c.n{i} * c.n{i}) AS snn{i}", f"SUM(c.d{i} * c.d{i}) AS sdd{i}",
                  f"SUM(c.n{i} * c.d{i}) AS snd{i}", f"SUM(c.unn{i}) AS unn{i}",
                  f"SUM(c.udd{i}) AS udd{i}", f"SUM(c.und{i}) AS und{i}",
                  f"SUM(CASE WHEN c.k{i} > 0 THEN 1 ELSE 0 END) AS g{i}"]
        # CR2 / Bell-McCaffrey: the cluster's leverage h in its arm and q = 1 / (1 - h),
        # once per cluster row (in double precision: Spark would divide a mean's DECIMAL
        # unit counts at decimal scale)
        d_, dt = f"CAST(c.d{i} AS DOUBLE)", f"CAST(c.dt{i} AS DOUBLE)"
        lever += [f"CASE WHEN {dt} > 0 THEN {d_} / {dt} END AS h{i}",
                  f"CASE WHEN {d_} >= 0 AND {dt} - {d_} > 0 THEN {dt} / ({dt} - {d_}) END "
                  f"AS q{i}"]
        h, qq = f"c.h{i}", f"c.q{i}"
        q2 = f"{qq} * {qq}"
        outer += [f"SUM(c.n{i} * c.n{i} * {w}) AS {k}nn{i}" for k, w in (("q", qq), ("r", q2))]
        outer += [f"SUM(c.d{i} * c.d{i} * {w}) AS {k}dd{i}" for k, w in (("q", qq), ("r", q2))]
        outer += [f"SUM(c.n{i} * c.d{i} * {w}) AS {k}nd{i}" for k, w in (("q", qq), ("r", q2))]
        outer += [f"SUM({' * '.join([h] * a + [qq] * b)}) AS h{a}q{b}_{i}"
                  for a, b in LEVERAGE_POWERS]
        outer += [f"SUM(CASE WHEN c.k{i} > 0 AND {qq} IS NULL THEN 1 ELSE 0 END) AS lbad{i}"]
        if i in adjust:
            xs = adjust[i][0]
            inner += [f"SUM({x}) AS x{i}_{j}" for j, x in enumerate(xs)]
            vec = [f"c.n{i}", f"c.d{i}", f"c.k{i}"] + [f"c.x{i}_{j}" for j in range(len(xs))]
            outer += [f"SUM({v}) AS sx{i}_{j}" for j, v in enumerate(vec)]
            outer += [f"SUM({vec[a]} * {vec[b]}) AS px{i}_{a}_{b}"
                      for a in range(len(vec)) for b in range(a, len(vec))]
    text = (f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(lever)} FROM (SELECT "
            f"{', '.join(inner)} FROM u GROUP BY {v}, {md}, {grp}) AS c) AS c "
            "GROUP BY c.v, c.md")
    final = sqlglot.parse_one(text, read="duckdb")
    assert isinstance(final, exp.Select)
    sql = plan.with_unit_ctes(final, {mp.index for mp in metrics}).sql(eng.dialect)
    rows = run(sql)
    stats: dict[tuple[str, str], dict[str, Any]] = {(str(r["v"]), str(r["md"])): r
                                                   for r in rows if r["v"] is not None}
    control = str(config.control)
    variants = sorted({v for v, _ in stats})
    if control not in variants:
        raise DataValidationError(f"control variant {control!r} not found in the data "
                                  f"(variants present: {', '.join(variants) or 'none'})",
                                  file=a_tbl.name, column=config.variant)
    treatments = [v for v in variants if v != control]
    if not treatments:
        raise DataValidationError("no treatment variant in the data (only the control)",
                                  file=a_tbl.name, column=config.variant)
    parts = ("cluster", "unit") if hier else ("cluster",)
    for p in parts:
        for v in variants:
            row = stats.get((v, p))
            if row is None or int(row["n_clusters"]) < 2:
                got = 0 if row is None else int(row["n_clusters"])
                what = "clusters" if p == "cluster" else "units"
                raise DataValidationError(
                    f"variant {v!r} has {got} {what}"
                    f"{' in cluster mode' if hier and p == 'cluster' else ''}"
                    f"{' in unit mode' if hier and p == 'unit' else ''}: a cluster-robust "
                    f"analysis needs at least 2 per arm", file=a_tbl.name,
                    column=cluster if p == "cluster" else config.unit)

    def arm(v: str, p: str, i: int) -> ArmStats:
        r = stats[(v, p)]
        keys = [f"{k}{i}" for k in ("qnn", "qdd", "qnd", "rnn", "rdd", "rnd")] + [
            f"h{a}q{b}_{i}" for a, b in LEVERAGE_POWERS]
        lev = [_f(r[k]) for k in keys] if not _f(r[f"lbad{i}"]) else [math.nan] * 12
        return ArmStats(_f(r[f"g{i}"]), _f(r[f"k{i}"]), _f(r[f"n{i}"]), _f(r[f"d{i}"]),
                        _f(r[f"snn{i}"]), _f(r[f"sdd{i}"]), _f(r[f"snd{i}"]),
                        _f(r[f"unn{i}"]), _f(r[f"udd{i}"]), _f(r[f"und{i}"]), *lev)

    def mom(v: str, p: str, i: int) -> moments.Moments:
        r = stats[(v, p)]
        k = 3 + len(adjust[i][0])
        sums = np.array([_f(r[f"sx{i}_{a}"]) for a in range(k)])
        prod = np.zeros((k, k))
        for a in range(k):
            for b in range(a, k):
                prod[a, b] = prod[b, a] = _f(r[f"px{i}_{a}_{b}"])
        return cluster_moments(_f(r[f"g{i}"]), sums, prod)

    def compare(name: str, v: str, p: str, i: int, extra: dict[str, Any]) -> Effect:
        c, t = arm(control, p, i), arm(v, p, i)
        if i not in adjust or min(c.g, t.g) < 2:
            return compare_arms(name, v, c, t, alpha=config.alpha,
                                small_sample=small_sample, extra=extra)
        return compare_arms_adjusted(name, v, c, t, mom(control, p, i), mom(v, p, i),
                                     adjust[i][1], alpha=config.alpha,
                                     small_sample=small_sample, extra=extra)

    results: list[Effect] = []
    for v in treatments:
        for i, (name, _, _) in enumerate(terms):
            if not hier:
                results.append(compare(name, v, "cluster", i, {"design": d.kind}))
                continue
            ce = compare(name, v, "cluster", i, {"design": d.kind, "part": "cluster"})
            ue = compare(name, v, "unit", i, {"design": d.kind, "part": "unit"})
            it = interference_test(ce, ue, alpha=config.alpha)
            it.extra.update(variant=v, design=d.kind, n_clusters=ce.extra["n_clusters"])
            results += [ce, ue, it]
    n_clusters = sum(int(r["n_clusters"]) for (v, p), r in stats.items() if p == "cluster")
    data_checks = {"n_clusters": n_clusters, "units": int(sum(
        max(_f(r[f"k{i}"]) for i in range(len(terms))) for r in stats.values())),
        "metrics_skipped": skipped, "covariates_ignored": ignored,
        "segments_ignored": list(config.segments),
        "units_with_events_but_no_assignment": checks.get(
            "units_with_events_but_no_assignment", 0)}
    return DesignAnalysis(results, {**d.model_dump(), "small_sample": small_sample},
                          data_checks, run.executed)


def _check_clusters(run: SqlRunner, a: Table, config: AnalysisConfig, cluster: str,
                    mode: str | None, dialect: str, *, one_row_per_unit: bool) -> None:
    """Refuse missing cluster ids, clusters spread over two variants (in cluster mode) or
    two modes, and units in two clusters: one line naming the file and the column.

    One GROUP BY cluster over the assignments answers all but the last, which needs a
    GROUP BY unit only when a unit has several assignment rows (``one_row_per_unit``
    comes from the analysis' own checks)."""
    s = _from(a, "s")
    u, c, v = (f"s.{_ident(x)}" for x in (config.unit, cluster, config.variant))
    if mode is None:
        cv, mode_aggs = v, ""
    else:
        m = f"CAST(s.{_ident(mode)} AS TEXT)"
        cv = f"CASE WHEN {m} = 'cluster' THEN {v} END"
        mode_aggs = (f", MIN({m}) AS lo_m, MAX({m}) AS hi_m, SUM(CASE WHEN {m} IN ('cluster', "
                     f"'unit') THEN 0 ELSE 1 END) AS bad_m, MIN(CASE WHEN {m} IN ('cluster', "
                     f"'unit') THEN NULL ELSE {m} END) AS ex_bad_m")
    per_cluster = (f"SELECT CAST({c} AS TEXT) AS x, COUNT(*) AS n, MIN({cv}) AS lo_v, "
                   f"MAX({cv}) AS hi_v{mode_aggs} FROM {s} GROUP BY {c}")
    split = "g.x IS NOT NULL AND g.lo_v <> g.hi_v"
    outer = ["SUM(CASE WHEN g.x IS NULL THEN g.n ELSE 0 END) AS n_null",
             f"SUM(CASE WHEN {split} THEN 1 ELSE 0 END) AS n_split",
             f"MIN(CASE WHEN {split} THEN g.x END) AS ex_split"]
    if mode is not None:
        two = "g.x IS NOT NULL AND g.lo_m <> g.hi_m"
        outer += [f"SUM(CASE WHEN {two} THEN 1 ELSE 0 END) AS n_mode",
                  f"MIN(CASE WHEN {two} THEN g.x END) AS ex_mode",
                  "SUM(g.bad_m) AS n_badmode", "MIN(g.ex_bad_m) AS ex_badmode"]
    text = f"SELECT {', '.join(outer)} FROM ({per_cluster}) AS g"
    row = {k.lower(): val for k, val in run(_to(dialect, text))[0].items()}
    if row["n_null"]:
        raise DataValidationError(f"{int(row['n_null']):,} unit(s) without a cluster id",
                                  file=a.name, column=cluster)
    if not one_row_per_unit:
        multi = (f"SELECT COUNT(*) AS n_multi, MIN(x) AS ex_multi FROM (SELECT CAST({u} AS "
                 f"TEXT) AS x FROM {s} GROUP BY {u} HAVING COUNT(DISTINCT {c}) > 1) AS t")
        r = {k.lower(): val for k, val in run(_to(dialect, multi))[0].items()}
        if r["n_multi"]:
            raise DataValidationError(f"{int(r['n_multi']):,} unit(s) appear in two clusters "
                                      f"(e.g. unit {r['ex_multi']}); a unit must belong to "
                                      "exactly one cluster", file=a.name, column=cluster)
    if mode is not None and row["n_badmode"]:
        raise DataValidationError(f"mode must be 'cluster' or 'unit', got "
                                  f"{row['ex_badmode']!r}", file=a.name, column=mode)
    if mode is not None and row["n_mode"]:
        raise DataValidationError(f"{int(row['n_mode']):,} cluster(s) have units in both "
                                  f"modes (e.g. cluster {row['ex_mode']}); a cluster is "
                                  "randomised either as a cluster or unit by unit",
                                  file=a.name, column=mode)
    if row["n_split"]:
        raise DataValidationError(f"{int(row['n_split']):,} cluster(s) have units in more "
                                  f"than one variant (e.g. cluster {row['ex_split']}); a "
                                  "cluster design gives every unit of a cluster one variant",
                                  file=a.name, column=cluster)


# -- switchback -------------------------------------------------------------------------------

def newey_west_lag(n_slices: int) -> int:
    """The usual automatic lag ``floor(4 (T / 100) ** (2 / 9))``, at least 1."""
    return max(1, math.floor(4 * (n_slices / 100) ** (2 / 9)))


def switchback_effect(region: np.ndarray, slice_: np.ndarray, treated: np.ndarray,
                      num: np.ndarray, den: np.ndarray, *, lag: int) -> tuple[float, float,
                                                                                   float]:
    """Difference of ratio-of-sums between treated and control cells, its Newey-West
    standard error (Bartlett weights, ``lag`` slices, within each region; regions
    independent) and its i.i.d.-cells standard error."""
    t = treated.astype(bool)
    nt, nc = den[t].sum(), den[~t].sum()
    rt, rc = num[t].sum() / nt, num[~t].sum() / nc
    phi = np.where(t, (num - rt * den) / nt, -(num - rc * den) / nc)
    var_iid = float(np.sum(phi**2))
    var = var_iid
    for r in np.unique(region):
        sel = region == r
        s = slice_[sel]
        ph = np.zeros(int(s.max()) + 1)
        ph[s] = phi[sel]
        for lg in range(1, lag + 1):
            if lg >= len(ph):
                break
            var += 2 * (1 - lg / (lag + 1)) * float(ph[lg:] @ ph[:-lg])
    return float(rt - rc), math.sqrt(max(var, 0.0)), math.sqrt(var_iid)


def _switchback(schedule: Source | None, events: Source | Sequence[Source], config: AnalysisConfig,
                d: DesignConfig, *, engine: str | Engine, region: str, slice_column: str,
                start: float | None, hac_lag: int | None, n_permutations: int, seed: int,
                show_sql: Callable[[str], None] | None) -> DesignAnalysis:
    ev_list = [events] if not isinstance(events, list | tuple) else list(events)
    if len(ev_list) != 1:
        raise ConfigError("a switchback analysis reads one events table", key="events")
    if schedule is not None:
        eng, s_tbl, (e_tbl,) = open_tables(engine, schedule, ev_list)
        for c in (region, slice_column, config.variant):
            if c not in s_tbl.columns:
                raise DataValidationError(f"the switchback schedule needs a {c!r} column "
                                          f"(columns: {', '.join(s_tbl.columns)})",
                                          file=s_tbl.name, column=c)
    else:  # the events carry the arm each was served in
        eng = make_engine(engine) if isinstance(engine, str) else engine
        e_tbl = s_tbl = eng.table(ev_list[0], source_name(ev_list[0]))
        if config.variant not in e_tbl.columns:
            raise DataValidationError("without a schedule, the events need the variant "
                                      "column", file=e_tbl.name, column=config.variant)
    run = SqlRunner(eng, [s_tbl, e_tbl] if s_tbl is not e_tbl else [e_tbl], show_sql)
    if config.unit not in e_tbl.columns:
        raise DataValidationError("unit column not found in the events", file=e_tbl.name,
                                  column=config.unit)
    ts = config.timestamp or next((n for n in ("ts", "timestamp") if n in e_tbl.columns), None)
    ts = ts if ts in e_tbl.columns else None
    has_slice = slice_column in e_tbl.columns
    if not has_slice and ts is None:
        raise DataValidationError(f"the events need a {slice_column!r} column or a timestamp "
                                  "to place them in switchback slices", file=e_tbl.name,
                                  column=slice_column)
    if d.burn_in_hours > 0 and ts is None:
        raise ConfigError("a burn-in needs event timestamps (set timestamp = ...)",
                          key="design.burn_in_hours")
    if region not in e_tbl.columns and d.regions > 1:
        raise DataValidationError(f"the events need a {region!r} column for "
                                  f"{d.regions} regions", file=e_tbl.name, column=region)
    src = _from(e_tbl, "e")
    epoch = None
    if ts is not None:
        tt = e_tbl.columns[ts]
        epoch = (f"CAST(e.{_ident(ts)} AS DOUBLE)" if is_numeric(tt)
                 else f"EPOCH(e.{_ident(ts)})")
    width = d.slice_hours * 3600.0
    info = run(_to(eng.dialect, "SELECT COUNT(*) AS n_rows"
                   + (f", MIN({epoch}) AS t_min, MAX({epoch}) AS t_max" if epoch else "")
                   + f" FROM {src}"))[0]
    info = {k.lower(): v for k, v in info.items()}
    if not info["n_rows"]:
        raise DataValidationError("the events table has no rows", file=e_tbl.name)
    t0 = start if start is not None else (_f(info["t_min"]) if epoch else 0.0)
    if epoch is not None and not has_slice:
        duration = _f(info["t_max"]) - t0
        if width > duration:
            raise ConfigError(f"the switchback slice ({d.slice_hours:g} h) is longer than the "
                              f"experiment ({duration / 3600:.3g} h of events)",
                              key="design.slice_hours")
    slice_expr = (f"CAST(e.{_ident(slice_column)} AS BIGINT)" if has_slice
                  else f"CAST(FLOOR(({epoch} - {t0!r}) / {width!r}) AS BIGINT)")
    region_expr = f"e.{_ident(region)}" if region in e_tbl.columns else "0"
    keep = "TRUE"
    if d.burn_in_hours > 0:
        keep = (f"({epoch} - {t0!r}) - {slice_expr} * {width!r} >= "
                f"{d.burn_in_hours * 3600.0!r}")
    metrics = [m for m in config.metrics if m.kind in ("mean", "proportion", "ratio")]
    skipped = [m.name for m in config.metrics if m not in metrics]
    if not metrics:
        raise ConfigError("no metric can be analysed under a switchback (mean, proportion "
                          "and ratio metrics are)", key="metrics", file=config.source)
    per_unit, per_cell = [], []
    for i, m in enumerate(metrics):
        conds = []
        for fc, vals in m.filter.items():
            if fc not in e_tbl.columns:
                raise ConfigError(f"filter column {fc!r} not found in {e_tbl.name}",
                                  key=f"metrics.{m.name}.filter", file=config.source)
            lits = ", ".join(exp.Literal.string(str(v)).sql("duckdb") if isinstance(v, str)
                             else repr(v) for v in vals)
            conds.append(f"e.{_ident(fc)} IN ({lits})")
        cond = " AND ".join(conds)
        for c in m.value_columns:
            if c not in e_tbl.columns:
                raise ConfigError(f"column {c!r} not found in {e_tbl.name}",
                                  key=f"metrics.{m.name}", file=config.source)
            if not is_numeric(e_tbl.columns[c]) and not e_tbl.columns[c].upper().startswith(
                    "BOOL"):
                raise DataValidationError(f"metric {m.name!r} needs a numeric column",
                                          file=e_tbl.name, column=c)

        def val(c: str, cond: str = cond, m: Any = m) -> str:
            x = f"CAST(e.{_ident(c)} AS DOUBLE)"
            if m.nulls == "zero":
                x = f"COALESCE({x}, 0.0)"
            return f"CASE WHEN {cond} THEN {x} END" if cond else x

        if m.kind == "ratio":
            per_unit += [f"SUM({val(m.numerator)}) AS a{i}", f"SUM({val(m.denominator)}) AS b{i}"]
            nu, de = f"COALESCE(a{i}, 0.0)", f"COALESCE(b{i}, 0.0)"
        elif m.kind == "proportion":
            per_unit += [f"MAX({val(m.column)}) AS a{i}"]
            nu, de = f"CASE WHEN a{i} > 0 THEN 1.0 ELSE 0.0 END", "1.0"
        else:
            per_unit += [f"SUM({val(m.column)}) AS a{i}"]
            nu, de = f"COALESCE(a{i}, 0.0)", "1.0"
        per_cell += [f"SUM({nu}) AS n{i}", f"SUM({de}) AS d{i}", f"SUM(({nu}) * ({nu})) AS "
                     f"unn{i}", f"SUM(({de}) * ({de})) AS udd{i}",
                     f"SUM(({nu}) * ({de})) AS und{i}"]
    null_checks = [f"SUM(CASE WHEN e.{_ident(c)} IS NULL THEN 1 ELSE 0 END) AS null_{j}"
                   for j, c in enumerate(dict.fromkeys(
                       c for m in metrics if m.nulls == "error" for c in m.value_columns))]
    if null_checks:
        nc = run(_to(eng.dialect, f"SELECT {', '.join(null_checks)} FROM {src}"))[0]
        cols = list(dict.fromkeys(c for m in metrics if m.nulls == "error"
                                  for c in m.value_columns))
        for j, c in enumerate(cols):
            n_bad = int(nc.get(f"null_{j}") or 0)
            if n_bad:
                raise DataValidationError(f"{n_bad} NULL value(s); set nulls = \"zero\" on "
                                          "the metric to count them as 0", file=e_tbl.name,
                                          column=c)
    sch = _from(s_tbl, "k")
    cell_cols = ", ".join("x." + p.split(" AS ")[-1] for p in per_cell)
    if schedule is None:
        ev_v = f"CAST(e.{_ident(config.variant)} AS TEXT)"
        text = (
            f"SELECT w.r AS r, w.sl AS sl, MIN(w.lo) AS v, MAX(w.hi) AS v_hi, COUNT(*) AS "
            f"n_units, {', '.join(per_cell)} FROM (SELECT {region_expr} AS r, {slice_expr} "
            f"AS sl, e.{_ident(config.unit)} AS u, MIN({ev_v}) AS lo, MAX({ev_v}) AS hi, "
            f"{', '.join(per_unit)} FROM {src} WHERE {keep} GROUP BY {region_expr}, "
            f"{slice_expr}, e.{_ident(config.unit)}) AS w GROUP BY w.r, w.sl")
        rows = run(_to(eng.dialect, text))
        mixed = [r for r in rows if r["v"] != r["v_hi"]]
        if mixed:
            r0 = mixed[0]
            raise DataValidationError(
                f"{len(mixed)} (region, slice) cell(s) hold events of several variants (e.g. "
                f"region {r0['r']}, slice {r0['sl']}: {r0['v']!r} and {r0['v_hi']!r}); a "
                "switchback serves one variant per cell", file=e_tbl.name,
                column=config.variant)
    else:
        rows = _schedule_rows(run, eng.dialect, config, region, slice_column, sch, cell_cols,
                              per_cell, per_unit, region_expr, slice_expr, src, keep)
    return _switchback_result(rows, config, d, s_tbl, slice_column, skipped, metrics,
                              hac_lag, n_permutations, seed, t0, run)


def _schedule_rows(run: SqlRunner, dialect: str, config: AnalysisConfig, region: str,
                   slice_column: str, sch: str, cell_cols: str, per_cell: list[str],
                   per_unit: list[str], region_expr: str, slice_expr: str, src: str,
                   keep: str) -> list[dict[str, Any]]:
    """Per-cell sums with each cell's variant read from the schedule table."""
    text = (
        f"SELECT x.r AS r, x.sl AS sl, CAST(k.{_ident(config.variant)} AS TEXT) AS v, "
        f"x.n_units AS n_units, {cell_cols} "
        f"FROM (SELECT w.r AS r, w.sl AS sl, COUNT(*) AS n_units, {', '.join(per_cell)} "
        f"FROM (SELECT {region_expr} AS r, {slice_expr} AS sl, e.{_ident(config.unit)} AS u, "
        f"{', '.join(per_unit)} FROM {src} WHERE {keep} GROUP BY {region_expr}, {slice_expr}, "
        f"e.{_ident(config.unit)}) AS w GROUP BY w.r, w.sl) AS x LEFT JOIN {sch} ON "
        f"CAST(x.r AS TEXT) = CAST(k.{_ident(region)} AS TEXT) AND x.sl = "
        f"CAST(k.{_ident(slice_column)} AS BIGINT)")
    return run(_to(dialect, text))


def _switchback_result(rows: list[dict[str, Any]], config: AnalysisConfig, d: DesignConfig,
                       s_tbl: Table, slice_column: str, skipped: list[str],
                       metrics: list[Any], hac_lag: int | None, n_permutations: int,
                       seed: int, t0: float, run: SqlRunner) -> DesignAnalysis:
    """Estimates, Newey-West and randomisation inference from the per-cell rows."""
    missing = [r for r in rows if r["v"] is None]
    if missing:
        r0 = missing[0]
        raise DataValidationError(f"{len(missing)} (region, slice) cell(s) with events have "
                                  f"no row in the schedule (e.g. region {r0['r']}, slice "
                                  f"{r0['sl']})", file=s_tbl.name, column=slice_column)
    control = str(config.control)
    variants = sorted({str(r["v"]) for r in rows})
    if control not in variants:
        raise DataValidationError(f"control variant {control!r} not in the schedule's cells "
                                  f"with events", file=s_tbl.name, column=config.variant)
    rows.sort(key=lambda r: (str(r["r"]), int(r["sl"])))
    regions = {k: i for i, k in enumerate(dict.fromkeys(str(r["r"]) for r in rows))}
    reg = np.array([regions[str(r["r"])] for r in rows])
    sl = np.array([int(r["sl"]) for r in rows])
    sl = sl - sl.min()
    var_of = np.array([str(r["v"]) for r in rows])
    n_slices = int(sl.max()) + 1
    lag = hac_lag if hac_lag is not None else newey_west_lag(n_slices)
    rng = np.random.default_rng(seed)
    crit = float(-special.ndtri(config.alpha / 2))
    results = []
    for v in [x for x in variants if x != control]:
        pick = (var_of == v) | (var_of == control)
        treated = (var_of == v)[pick]
        if min(int(treated.sum()), int((~treated).sum())) < 2:
            raise DataValidationError(f"fewer than 2 cells in an arm ({control!r} vs "
                                      f"{v!r}): use more or shorter slices",
                                      file=s_tbl.name, column=config.variant)
        share = float(treated.mean())
        for i, m in enumerate(metrics):
            num = np.array([_f(r[f"n{i}"]) for r in rows])[pick]
            den = np.array([_f(r[f"d{i}"]) for r in rows])[pick]
            est, se, se_iid = switchback_effect(reg[pick], sl[pick], treated, num, den,
                                                lag=lag)
            c_arm = _unit_arm(rows, pick, ~treated, i)
            t_arm = _unit_arm(rows, pick, treated, i)
            uv = c_arm.unit_var() + t_arm.unit_var()
            draws = []
            for _ in range(n_permutations):
                tt = rng.random(len(num)) < share
                if tt.sum() < 2 or (~tt).sum() < 2:
                    continue
                draws.append(num[tt].sum() / den[tt].sum() - num[~tt].sum() / den[~tt].sum())
            dr = np.asarray(draws)
            ri_p = (float((1 + np.sum(np.abs(dr) >= abs(est) - 1e-12)) / (len(dr) + 1))
                    if len(dr) else math.nan)  # no draws: no randomisation p-value
            ri_sd = float(dr.std(ddof=1)) if len(dr) > 1 else math.nan
            p = float(2 * special.ndtr(-abs(est / se))) if se > 0 else math.nan
            rc, rt = c_arm.value, t_arm.value
            results.append(Effect(m.name, est, est - crit * se, est + crit * se, se, p,
                                  int(c_arm.n + t_arm.n), {
                "variant": v, "design": "switchback", "control_mean": rc,
                "treatment_mean": rt, "rel_effect": rt / rc - 1 if rc else math.nan,
                "n_control": int((~treated).sum()), "n_treatment": int(treated.sum()),
                "n_slices": n_slices, "n_cells": int(pick.sum()), "hac_lag": lag,
                "se_iid_cells": se_iid, "se_unit": math.sqrt(uv) if uv >= 0 else math.nan,
                "design_effect": se**2 / uv if uv > 0 else math.nan,
                "mde": moments.mde(se**2, 1.0, 0.0, 1.0, alpha=config.alpha) if se > 0
                else math.nan,
                "ri_p_value": ri_p, "ri_ci_low": est - crit * ri_sd,
                "ri_ci_high": est + crit * ri_sd, "test": "z (Newey-West)",
                "not_computable": None if se > 0 else "no variance"}))
    checks = {"n_slices": n_slices, "n_regions": len(regions), "n_cells": len(rows),
              "hac_lag": lag, "metrics_skipped": skipped, "start": t0}
    return DesignAnalysis(results, d.model_dump(), checks, run.executed)


def _unit_arm(rows: list[dict[str, Any]], pick: np.ndarray, arm: np.ndarray, i: int
              ) -> ArmStats:
    """One arm's unit-level sums over its switchback cells ((unit, cell) pairs)."""
    sel = [r for r, p in zip(rows, pick, strict=True) if p]
    sel = [r for r, a in zip(sel, arm, strict=True) if a]

    def s(key: str) -> float:
        return float(sum(_f(r[key]) for r in sel))

    return ArmStats(float(len(sel)), s("n_units"), s(f"n{i}"), s(f"d{i}"), math.nan,
                    math.nan, math.nan, s(f"unn{i}"), s(f"udd{i}"), s(f"und{i}"))


@dataclass(frozen=True)
class TwoWay:
    """A ratio-of-sums difference between two arms with its two-way cluster-robust variance
    (Cameron, Gelbach & Miller 2011): ``variance = v_first + v_second - v_both``, or the
    larger one-way variance when that is not positive (up to rounding)."""

    estimate: float
    variance: float
    v_first: float
    v_second: float
    v_both: float

    @property
    def se(self) -> float:
        return math.sqrt(self.variance)


def twoway_ratio(events: Source, *, first: str, second: str, variant: str, numerator: str,
                 denominator: str, control: str, treatment: str,
                 engine: str | Engine = "duckdb") -> TwoWay:
    """Treatment minus control of ``sum(numerator) / sum(denominator)`` with a variance
    robust to clustering on ``first`` and on ``second`` (e.g. creator and user: a user's
    clicks spread over creators of both arms). The delta-method residuals
    ``(numerator - ratio * denominator) / arm denominator`` (signed by arm) are summed per
    ``first``, per ``second`` and per (``first``, ``second``) cell in SQL; Python squares
    nothing but the three totals. No small-sample correction (statsmodels'
    ``use_correction=False``)."""
    eng, tbl, _ = open_tables(engine, events, [])
    for c in (first, second, variant, numerator, denominator):
        if c not in tbl.columns:
            raise DataValidationError(f"the two-way analysis needs a column {c!r} "
                                      f"(columns: {', '.join(tbl.columns)})",
                                      file=tbl.name, column=c)
    f, s, v, y, z = (_ident(c) for c in (first, second, variant, numerator, denominator))
    ctl, trt = (exp.Literal.string(x).sql("duckdb") for x in (control, treatment))
    sql = f"""WITH e AS (
  SELECT {f} AS f, {s} AS s, CAST({v} AS VARCHAR) AS v, CAST({y} AS DOUBLE) AS y,
         CAST({z} AS DOUBLE) AS z
  FROM {_from(tbl, 'src')}
  WHERE {y} IS NOT NULL AND {z} IS NOT NULL AND CAST({v} AS VARCHAR) IN ({ctl}, {trt})),
arm AS (SELECT v, SUM(y) AS sy, SUM(z) AS sz FROM e GROUP BY v),
r AS (SELECT e.f, e.s, CASE WHEN e.v = {trt} THEN 1.0 ELSE -1.0 END
             * (e.y - arm.sy / arm.sz * e.z) / arm.sz AS x
      FROM e JOIN arm ON e.v = arm.v),
cell AS (SELECT f, s, SUM(x) AS x FROM r GROUP BY f, s),
vf AS (SELECT SUM(x * x) AS v FROM (SELECT SUM(x) AS x FROM cell GROUP BY f) t1),
vs AS (SELECT SUM(x * x) AS v FROM (SELECT SUM(x) AS x FROM cell GROUP BY s) t2),
vb AS (SELECT SUM(x * x) AS v FROM cell),
t AS (SELECT SUM(CASE WHEN v = {trt} THEN sy END) AS ty, SUM(CASE WHEN v = {trt} THEN sz END)
             AS tz, SUM(CASE WHEN v = {ctl} THEN sy END) AS cy,
             SUM(CASE WHEN v = {ctl} THEN sz END) AS cz FROM arm)
SELECT t.ty, t.tz, t.cy, t.cz, vf.v AS v_first, vs.v AS v_second, vb.v AS v_both
FROM t CROSS JOIN vf CROSS JOIN vs CROSS JOIN vb"""
    row = SqlRunner(eng, [tbl])(_to(eng.dialect, sql))[0]
    vals = {k: _f(row[k]) for k in row}
    for arm_, zk in ((control, "cz"), (treatment, "tz")):
        if not vals[zk] > 0:
            raise DataValidationError(f"arm {arm_!r} has no positive {denominator} total",
                                      file=tbl.name, column=denominator)
    est = vals["ty"] / vals["tz"] - vals["cy"] / vals["cz"]
    a, b, ab = vals["v_first"], vals["v_second"], vals["v_both"]
    var = a + b - ab
    if not var > 1e-12 * (a + b):  # zero up to rounding counts as not positive
        var = max(a, b)
    return TwoWay(est, var, a, b, ab)
