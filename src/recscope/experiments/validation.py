"""Simulation studies that validate the statistics: A/A splits, planted effects,
sequential monitoring under the null.

Splits are done from sufficient statistics: for thousands of random splits, the group
sums come from one matrix product per chunk of splits, then each split goes through the
same :mod:`recscope.experiments.moments` code as a real analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recscope.experiments import moments
from recscope.experiments.sequential import monitor


def split_moments(x: np.ndarray, masks: np.ndarray, *, gets: np.ndarray | None = None,
                  step: float = 0.0) -> list[moments.Moments]:
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
        out.append(moments.Moments(float(cnt[k]), mean, cov))
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
    metric: moments.Term = (0, None)
    covs: list[moments.Term] = [(1, None)] if covariate is not None else []
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
                c = moments.compare_variants(ec, et, alpha=alpha, distribution=distribution)
                rej[label] += c.p_value < alpha
                pc, pe = _pair(mc[i], pt[i], metric, use)
                cp = moments.compare_variants(pc, pe, alpha=alpha, distribution=distribution)
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


def _pair(mc: moments.Moments, mt: moments.Moments, metric: moments.Term,
          covs: list[moments.Term]) -> tuple[moments.VariantEstimate, moments.VariantEstimate]:
    if not covs:
        return moments.variant_estimate(mc, metric), moments.variant_estimate(mt, metric)
    theta, centre = moments.cuped_theta(moments.pool([mc, mt]), metric, covs)
    return (moments.variant_estimate(mc, metric, covs, theta, centre),
            moments.variant_estimate(mt, metric, covs, theta, centre))


def quantile_aa_fpr(y: np.ndarray, *, q: float = 0.5, splits: int = 1000,
                    alpha: float = 0.05, seed: int = 0, n_boot: int | None = None) -> float:
    """A/A false-positive rate of a quantile metric: ``y`` split in two random halves
    ``splits`` times; each half goes through the analysis' own steps (the engine's
    histogram window, :func:`~recscope.experiments.moments.histogram_window`; the
    mid-quantile and its unit bootstrap; the z test)."""
    from recscope.experiments.analysis import N_BOOT

    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=float)
    rejected = 0
    for _ in range(splits):
        mask = rng.random(len(y)) < 0.5
        est = []
        for part in (y[mask], y[~mask]):
            value, se = moments.histogram_quantile(*moments.histogram_window(part, q), q,
                                                   n_boot=n_boot or N_BOOT, rng=rng)
            est.append(moments.VariantEstimate(value, se * se * len(part), float(len(part))))
        c = moments.compare_variants(est[0], est[1], alpha=alpha, distribution="z")
        rejected += bool(c.p_value < alpha)  # a test without variance never rejects
    return rejected / splits


def heavy_tailed_integers(n: int, seed: int = 0) -> np.ndarray:
    """A heavy-tailed integer metric: Zipf(1.6) counts (P(1) = 0.46; the largest of
    40,000 draws is typically in the hundreds of thousands)."""
    return np.random.default_rng(seed).zipf(1.6, n).astype(np.float64)


def whale_metric(n: int, seed: int = 0) -> np.ndarray:
    """Per-unit activity with whales: overdispersed Poisson counts (mean ~10) for
    everyone, and for 0.1% of units a Pareto(0.7) boost of order 10^3-10^6."""
    rng = np.random.default_rng(seed)
    y = rng.poisson(rng.gamma(0.5, 20.0, n)).astype(np.float64)
    whales = rng.random(n) < 0.001
    y[whales] += np.round(1000 * (rng.pareto(0.7, int(whales.sum())) + 1))
    return y


@dataclass(frozen=True)
class CapResult:
    """A/A false-positive rate and power against a planted lift, uncapped and capped."""

    splits: int
    fpr_raw: float
    fpr_capped: float
    power_raw: float
    power_capped: float
    mean_cap: float


def cap_study(y: np.ndarray, *, cap_quantile: float = 0.999, lift: float = 0.05,
              splits: int = 2000, alpha: float = 0.05, seed: int = 0) -> CapResult:
    """Welch t on the mean of ``y`` and on the mean capped at the pooled
    ``cap_quantile`` quantile (linear interpolation, as the engine's ``QUANTILE_CONT`` /
    ``PERCENTILE``), over random halvings: A/A, and with every treatment unit's value
    multiplied by ``1 + lift`` (the cap computed after, over both halves, as analyze
    does)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=float)
    hits = {"fpr_raw": 0, "fpr_capped": 0, "power_raw": 0, "power_capped": 0}
    caps = []

    def test(c: np.ndarray, t: np.ndarray) -> bool:
        ec = moments.variant_estimate(moments.Moments.from_data(c), (0, None))
        et = moments.variant_estimate(moments.Moments.from_data(t), (0, None))
        return bool(moments.compare_variants(ec, et, alpha=alpha).p_value < alpha)

    for _ in range(splits):
        mask = rng.random(len(y)) < 0.5
        for label, t in (("fpr", y[~mask]), ("power", y[~mask] * (1 + lift))):
            c = y[mask]
            cap = float(np.quantile(np.concatenate([c, t]), cap_quantile))
            caps.append(cap)
            hits[f"{label}_raw"] += test(c, t)
            hits[f"{label}_capped"] += test(np.minimum(c, cap), np.minimum(t, cap))
    return CapResult(splits, *(hits[k] / splits for k in ("fpr_raw", "fpr_capped",
                                                          "power_raw", "power_capped")),
                     float(np.mean(caps)))


def heavy_tail_report(hillstrom_csv: str, *, splits: int = 1000) -> str:
    """The quantile and capping figures of docs/experiments.md, as Markdown.

    ``python -m recscope.experiments.validation --heavy-tails HILLSTROM_CSV``
    """
    import pandas as pd

    h = pd.read_csv(hillstrom_csv)
    lines = [f"### Quantiles on tied and discrete data (A/A, {splits:,} random halvings, "
             "alpha = 5%)", "", "| data | units | distinct values | q | false-positive rate |",
             "|---|---|---|---|---|"]
    cases = [("Hillstrom recency (integers 1-12)", h["recency"].to_numpy(float), 0.5),
             ("Hillstrom history (dollars)", h["history"].to_numpy(float), 0.5),
             ("generated Zipf(1.6) integers", heavy_tailed_integers(40_000, seed=3), 0.5),
             ("generated Zipf(1.6) integers", heavy_tailed_integers(40_000, seed=3), 0.9)]
    for k, (name, y, q) in enumerate(cases):
        fpr = quantile_aa_fpr(y, q=q, splits=splits, seed=100 + k)
        lines.append(f"| {name} | {len(y):,} | {len(np.unique(y)):,} | {q:g} | {fpr:.1%} |")
    y = whale_metric(40_000, seed=5)
    r = cap_study(y, splits=2 * splits, seed=6)
    lines += ["", f"### Capping a whale-heavy metric ({r.splits:,} random halvings of 40,000 "
              "generated units; cap = pooled 99.9th percentile; planted lift +5%)", "",
              "| mean | A/A false-positive rate | power at +5% |", "|---|---|---|",
              f"| uncapped | {r.fpr_raw:.1%} | {r.power_raw:.1%} |",
              f"| capped at the 99.9th percentile (~{r.mean_cap:.0f}) | {r.fpr_capped:.1%} | "
              f"{r.power_capped:.1%} |"]
    return "\n".join(lines)


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


def report(hillstrom_csv: str, asos_parquet: str, *, splits: int = 2000) -> str:
    """The validation figures of docs/experiments.md, as Markdown.

    ``python -m recscope.experiments.validation HILLSTROM_CSV ASOS_PARQUET``
    """
    import tempfile
    from pathlib import Path

    import pandas as pd

    from recscope.experiments.analysis import analyze
    from recscope.experiments.metrics import parse_metrics
    from recscope.experiments.sequential import replay

    lines = ["### Hillstrom A/A and planted effect "
             f"({splits:,} random halvings of the no-e-mail arm, alpha = 5%)", "",
             "| metric | FPR raw | FPR CUPED | coverage raw | coverage CUPED | "
             "variance reduction | corr(y, history)^2 |", "|---|---|---|---|---|---|---|"]
    h = pd.read_csv(hillstrom_csv)
    arm = h[h["segment"] == "No E-Mail"]
    for m in ("visit", "conversion", "spend"):
        y, x = arm[m].to_numpy(float), arm["history"].to_numpy(float)
        r = aa_study(y, x, splits=splits, seed=2026)
        rho2 = np.corrcoef(y, x)[0, 1] ** 2
        lines.append(f"| {m} | {r.fpr_raw:.2%} | {r.fpr_cuped:.2%} | {r.coverage_raw:.2%} | "
                     f"{r.coverage_cuped:.2%} | {r.variance_reduction:.3%} | {rho2:.3%} |")
    s = sequential_null_study(simulations=2000, looks=30, seed=11)
    lines += ["", "### Sequential monitoring under the null (2,000 simulated A/A tests, "
              "daily looks for 30 days, 500 units per arm per day, conversion 10%)", "",
              f"- naive t-test at every look: false-positive rate {s.naive_fpr:.1%}",
              f"- mixture SPRT (always valid, tau = 0.1 sd): false-positive rate "
              f"{s.always_valid_fpr:.1%}", ""]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hillstrom.parquet"
        hh = h.copy()
        hh.insert(0, "customer", np.arange(len(hh)))
        hh.to_parquet(path)
        metrics = {m: {"kind": "proportion" if m != "spend" else "mean", "column": m,
                       "covariates": ["history", "recency", "mens", "womens", "newbie"]}
                   for m in ("visit", "conversion", "spend")}
        raw = {f"{m}_raw": {"kind": v["kind"], "column": m} for m, v in metrics.items()}
        cfg = parse_metrics({"unit": "customer", "variant": "segment",
                            "control": "No E-Mail", "metrics": {**metrics, **raw}})
        card = analyze(str(path), str(path), cfg)
    lines += ["### Hillstrom end to end (each e-mail against no e-mail; CUPED on recency, "
              "history, mens, womens, newbie; Holm across 12 comparisons)", "",
              "| metric | variant | control | treatment | effect [95% CI] | relative | p (Holm) "
              "| variance reduction |", "|---|---|---|---|---|---|---|---|"]
    for r in card.results:
        lines.append(
            f"| {r['metric']} | {r['variant']} | {r['control_mean']:.4f} | "
            f"{r['treatment_mean']:.4f} | {r['estimate']:+.4f} [{r['ci_low']:+.4f}, "
            f"{r['ci_high']:+.4f}] | {r['rel_effect']:+.1%} | {r['p_value_adjusted']:.2g} | "
            f"{r['variance_reduction']:.1%} |")
    lines.append(f"\nSRM p-value {card.srm['p_value']:.3f}; units "
                 f"{card.data_checks['units']:,}.")
    rep = replay(pd.read_parquet(asos_parquet))
    sig = rep[rep["final_significant"]]
    early = rep[rep["same_decision"] & (rep["time_saved"] > 0)]
    lines += ["", "### ASOS replay (mixture SPRT, tau = 0.1 sd, alpha = 5%)", "",
              f"- series (experiment x variant x metric): {len(rep)}; significant at the "
              f"last look with a fixed-horizon z-test: {len(sig)}",
              f"- the always-valid test reached the same decision (same sign, significant at "
              f"the end) earlier in {len(early)} of those {len(sig)} "
              f"({len(early) / max(len(sig), 1):.0%})",
              f"- time saved when it did: median {early['time_saved'].median():.0%}, mean "
              f"{early['time_saved'].mean():.0%} of the experiment's duration",
              f"- it stopped in {int((rep['seq_stopped'] & ~rep['final_significant']).sum())}"
              " series whose fixed-horizon result at the end was not significant, and never "
              "against the sign of a significant final result "
              f"({int((rep['seq_stopped'] & rep['final_significant'] & ~rep['same_decision']).sum())} cases)",
              f"- a naive test peeking at every look would have declared "
              f"{int(rep['naive_ever_significant'].sum())} series significant at some point "
              f"(vs {len(sig)} at the end)"]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if sys.argv[1] == "--heavy-tails":
        print(heavy_tail_report(sys.argv[2], splits=int(sys.argv[3]) if len(sys.argv) > 3
                                else 1000))
    else:
        print(report(sys.argv[1], sys.argv[2]))
