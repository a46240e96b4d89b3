"""Surrogate index: a planted long-run effect is recovered where the naive readout fails,
the interval covers it, surrogacy errors widen the interval, and the per-unit SQL
surrogates mean what the scorecard's metrics mean."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from recscope.errors import DataValidationError
from recscope.experiments.metrics import parse_metrics
from recscope.experiments.surrogate import (
    UnitTable,
    add_long_run,
    attach_outcome,
    covariates,
    fit_surrogate,
    unit_features,
)
from recscope.results import Effect


def _experiment(name: str, rng: np.random.Generator, d_quality: float, d_curiosity: float,
                d_hidden: float = 0.0, n: int = 2000) -> tuple[UnitTable, float]:
    """Units whose long-run outcome depends on a latent quality (seen through 'saves')
    and a hidden channel, while 'clicks' also carry curiosity that does not last."""
    t = rng.integers(0, 2, n)
    quality = rng.normal(0, 1, n) + d_quality * t
    curiosity = rng.normal(0, 1, n) + d_curiosity * t
    hidden = d_hidden * t
    saves = quality + rng.normal(0, 0.3, n)
    clicks = 2 + curiosity + 0.2 * quality + rng.normal(0, 0.5, n)
    y = 5 + 3 * quality + hidden + rng.normal(0, 1, n)
    x = np.column_stack([clicks, saves])
    variants = np.where(t == 1, "treatment", "control").astype(object)
    return (UnitTable(name, np.arange(n), variants, ["clicks", "saves"], x, y),
            3 * d_quality + d_hidden)


def _history(rng: np.random.Generator, k: int = 20, hidden_sd: float = 0.0
             ) -> list[UnitTable]:
    return [_experiment(f"h{i}", rng, rng.normal(0, 0.2), rng.normal(0, 0.5),
                        rng.normal(0, hidden_sd))[0] for i in range(k)]


def test_recovers_planted_long_run_effect_where_naive_fails() -> None:
    rng = np.random.default_rng(1)
    model = fit_surrogate(_history(rng), long="y", metric="clicks")
    new, truth = _experiment("new", rng, d_quality=0.3, d_curiosity=2.0)
    (e,) = model.project(new, n_boot=400, seed=1)
    naive = (new.x[new.variants == "treatment", 0].mean()
             - new.x[new.variants == "control", 0].mean())
    assert e.ci_low <= truth <= e.ci_high
    assert abs(e.estimate - truth) < 0.15
    assert abs(naive - truth) > 3 * abs(e.estimate - truth)
    assert model.coef[2] > 2.5 > abs(model.coef[1])  # saves carry the outcome, not clicks
    assert model.tau2 < 0.01


def test_surrogacy_error_from_history_widens_interval() -> None:
    rng = np.random.default_rng(2)
    clean = fit_surrogate(_history(rng), long="y")
    leaky = fit_surrogate(_history(rng, hidden_sd=0.4), long="y")
    assert leaky.tau2 > 0.05 > clean.tau2
    new, _ = _experiment("new", rng, 0.2, 0.0)
    (a,), (b,) = clean.project(new, n_boot=300), leaky.project(new, n_boot=300)
    assert b.ci_high - b.ci_low > 2 * (a.ci_high - a.ci_low)


def test_coverage_over_repeated_experiments() -> None:
    rng = np.random.default_rng(3)
    model = fit_surrogate(_history(rng, k=15, hidden_sd=0.3), long="y")
    hits = 0
    for i in range(30):
        new, truth = _experiment(f"n{i}", rng, rng.normal(0, 0.2), rng.normal(0, 0.5),
                                 rng.normal(0, 0.3), n=1000)
        (e,) = model.project(new, n_boot=200, seed=i)
        hits += e.ci_low <= truth <= e.ci_high
    assert hits >= 24  # 95% intervals; 24/30 is far below what they achieve


def test_missing_surrogate_and_outcome_are_named() -> None:
    rng = np.random.default_rng(4)
    model = fit_surrogate(_history(rng, k=4), long="y")
    new, _ = _experiment("new.parquet", rng, 0.1, 0.1)
    new.features = ["clicks", "hides"]
    with pytest.raises(DataValidationError, match=r"new\.parquet.*'saves'.*missing"):
        model.project(new)
    import pyarrow as pa

    table, _ = _experiment("h", rng, 0.0, 0.0, n=10)
    with pytest.raises(DataValidationError, match="long-run outcome 'y' is not a column"):
        attach_outcome(table, pa.table({"unit_id": np.arange(10)}), "y", unit="unit_id",
                       file="outcomes.parquet")
    with pytest.raises(DataValidationError, match="no row"):
        attach_outcome(table, pa.table({"unit_id": np.arange(5), "y": np.ones(5)}), "y",
                       unit="unit_id", file="outcomes.parquet")


def test_unit_features_in_sql_and_scorecard_attachment() -> None:
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    assign = pd.DataFrame({"unit_id": [1, 2, 3, 4], "variant": ["control", "control", "t",
                                                                  "t"],
                           "first_exposure_ts": [t0] * 4})
    day = pd.Timedelta(days=1)
    events = pd.DataFrame({"unit_id": [1, 1, 2, 3, 3, 3, 4],
                           "ts": [t0 - day, t0 + day, t0 + 2 * day, t0, t0 + 8 * day,
                                  t0 + 9 * day, t0 + day],
                           "clicks": [5, 1, 2, 3, 4, 0, 1], "day": [-1, 1, 2, 0, 8, 9, 1]})
    cfg = parse_metrics({"unit": "unit_id", "metrics": {
        "clicks": {"kind": "mean", "column": "clicks", "cuped_days": 7},
        "late": {"kind": "count_distinct", "column": "day", "window": [7, 14]}}})
    ut = unit_features(assign, events, cfg)
    assert ut.features == ["clicks", "clicks.pre", "late"]
    np.testing.assert_allclose(ut.x, [[1, 5, 0], [2, 0, 0], [7, 0, 2], [1, 0, 0]])
    from recscope.experiments.analysis import analyze

    card = analyze(assign, events, cfg)
    proj = Effect("y_long", 0.5, 0.1, 0.9, 0.2, extra={"variant": "t", "for_metric": "late",
                                                        "method": "m"})
    lr = add_long_run(card, [proj])
    row = next(e for e in lr.results if e.metric == "late")
    assert row.extra["long_run"]["estimate"] == 0.5
    assert "long_run" not in next(e for e in lr.results if e.metric == "clicks").extra
    d = lr.to_dict()
    assert d["long_run"][0]["metric"] == "y_long"
    assert type(lr).from_dict(d).results[1].extra["long_run"]["ci_high"] == 0.9


def _compounding(name: str, rng: np.random.Generator, lift: float, n: int = 2000
                 ) -> tuple[UnitTable, float]:
    """The treatment's effect on the outcome is twice what the across-user relation
    between surrogate and outcome implies (it keeps compounding after the readout)."""
    t = rng.integers(0, 2, n)
    base = rng.normal(0, 1, n)
    saves = base + lift * t + rng.normal(0, 0.2, n)
    y = 2 * base + 4 * lift * t + rng.normal(0, 1, n)
    variants = np.where(t == 1, "treatment", "control").astype(object)
    return UnitTable(name, np.arange(n), variants, ["saves"], saves[:, None], y), 4 * lift


def test_experiment_level_map_corrects_unit_level_attenuation() -> None:
    rng = np.random.default_rng(5)
    model = fit_surrogate([_compounding(f"h{i}", rng, rng.normal(0, 0.3))[0]
                           for i in range(20)], long="y")
    new, truth = _compounding("new", rng, 0.25)
    (e,) = model.project(new, n_boot=300)
    assert e.ci_low <= truth <= e.ci_high and abs(e.estimate - truth) < 0.2
    assert abs(e.extra["unit_level"] - truth / 2) < 0.1  # across users: half of it
    assert model.theta[0] == pytest.approx(4.0, abs=0.3)


def test_extrapolation_is_flagged_and_widening_follows_distance() -> None:
    rng = np.random.default_rng(6)
    model = fit_surrogate(_history(rng), long="y")
    assert 0 < model.history_max_distance == max(e["distance"] for e in model.experiments)
    like, _ = _experiment("like", rng, d_quality=0.1, d_curiosity=-0.3)
    unlike, _ = _experiment("unlike", rng, d_quality=0.1, d_curiosity=6.0)
    (a,), (b,) = model.project(like, n_boot=200), model.project(unlike, n_boot=200)
    assert not a.extra["extrapolation"] and a.extra["distance"] < model.history_max_distance
    assert b.extra["extrapolation"] and b.extra["distance"] > 10 * model.history_max_distance
    assert b.extra["history_max_distance"] == model.history_max_distance
    # the scorecard says so in a banner and in the row's long_run object
    card = add_long_run(_card(), [Effect("y", 0.1, 0.0, 0.2, 0.05, extra={
        **a.extra, "variant": "t", "for_metric": "m"}), Effect("y", 0.1, 0.0, 0.2, 0.05, extra={
            **b.extra, "variant": "u", "for_metric": "m"})])
    banners = [n for n in card.notes() if "extrapolation" in n]
    assert len(banners) == 1 and "for u" in banners[0]
    assert card.results[0].extra["long_run"]["extrapolation"] is False
    assert card.results[1].extra["long_run"]["extrapolation"] is True
    # widening: where the history's errors grow with distance (a hidden channel of sd
    # proportional to the change in clicks), a far change's interval
    # widens with it; a change like the history keeps about the plain interval
    rng = np.random.default_rng(0)
    hist = [_experiment(f"h{i}", rng, q, c, rng.normal(0, 0.5 * abs(c)), n=1000)[0]
            for i, (q, c) in enumerate(zip(rng.normal(0, 0.2, 40), rng.normal(0, 0.7, 40),
                                           strict=True))]
    plain = fit_surrogate(hist, long="y", widen=False)
    wide = fit_surrogate(hist, long="y")
    assert wide.tau2_slope > 0 and not plain.widen
    far, _ = _experiment("far", rng, 0.1, 4.0, 2.0)
    (p_far,), (w_far,) = plain.project(far, n_boot=200), wide.project(far, n_boot=200)
    assert p_far.extra["extrapolation"] and w_far.extra["widened"]
    assert w_far.ci_high - w_far.ci_low > 2 * (p_far.ci_high - p_far.ci_low)
    near, _ = _experiment("near", rng, 0.1, -0.3)
    (p_near,), (w_near,) = plain.project(near, n_boot=200), wide.project(near, n_boot=200)
    assert not w_near.extra["extrapolation"]
    assert w_near.ci_high - w_near.ci_low < 1.3 * (p_near.ci_high - p_near.ci_low)


def _card() -> Any:
    from recscope.experiments.analysis import Scorecard

    return Scorecard(results=[Effect("m", 0.0, -1.0, 1.0, 0.5, extra={"variant": "t"}),
                              Effect("m", 0.0, -1.0, 1.0, 0.5, extra={"variant": "u"})],
                     srm={}, data_checks={})


def _with_pre(name: str, rng: np.random.Generator, lift: float, n: int = 2000
              ) -> tuple[UnitTable, float]:
    """A surrogate whose pre-period value explains most of its variance."""
    t = rng.integers(0, 2, n)
    base = rng.normal(0, 2, n)
    pre = base + rng.normal(0, 0.3, n)
    saves = base + lift * t + rng.normal(0, 0.3, n)
    y = 5 + base + 3 * lift * t + rng.normal(0, 0.5, n)
    variants = np.where(t == 1, "treatment", "control").astype(object)
    return (UnitTable(name, np.arange(n), variants, ["saves", "saves.pre"],
                      np.column_stack([saves, pre]), y), 3 * lift)


def test_pre_period_covariates_adjust_every_effect() -> None:
    assert covariates(["a", "a.pre", "r.pre.numerator", "b.cov.x", "pre"]).tolist() == [
        False, True, True, True, False]
    rng = np.random.default_rng(8)
    hist = [_with_pre(f"h{i}", rng, lift)[0] for i, lift in enumerate(rng.normal(0, 0.3, 25))]
    adj, raw = fit_surrogate(hist, long="y"), fit_surrogate(hist, long="y", cuped=False)
    assert adj.cuped and not raw.cuped
    assert adj.theta[1] == 0.0 and adj.theta[0] == pytest.approx(3.0, abs=0.3)
    # the adjusted history's observed effects are far less noisy
    assert np.mean([e["observed_var"] for e in adj.experiments]) < 0.2 * np.mean(
        [e["observed_var"] for e in raw.experiments])
    new, truth = _with_pre("new", rng, 0.2)
    (a,), (r,) = adj.project(new, n_boot=300), raw.project(new, n_boot=300)
    assert a.ci_low <= truth <= a.ci_high and abs(a.estimate - truth) < 0.15
    assert a.ci_high - a.ci_low < 0.5 * (r.ci_high - r.ci_low)
    # a model saved before this session's fields existed (no cuped, widen, tau2 line,
    # distances) loads as unadjusted with the constant tau2, and projects exactly as a
    # model fitted that way does; its history range is recomputed from its effects
    plain = fit_surrogate(hist, long="y", cuped=False, widen=False)
    d = plain.to_dict()
    for key in ("cuped", "widen", "tau2_intercept", "tau2_slope", "history_max_distance"):
        d.pop(key)
    for e in d["experiments"]:
        e.pop("distance")
    loaded = type(plain).from_dict(d)
    assert not loaded.cuped and not loaded.widen
    (old,), (ref,) = loaded.project(new, n_boot=300), plain.project(new, n_boot=300)
    assert (old.estimate, old.ci_low, old.ci_high, old.se) == (
        ref.estimate, ref.ci_low, ref.ci_high, ref.se)
    assert old.extra["history_max_distance"] == pytest.approx(plain.history_max_distance)
    assert old.extra["surrogacy_sd"] == pytest.approx(np.sqrt(plain.tau2))


def test_short_history_says_the_distance_is_blind_outside_its_span() -> None:
    rng = np.random.default_rng(9)
    three = fit_surrogate(_history(rng, k=3), long="y")
    assert not any("Only 3 history comparisons" in n for n in three.notes())

    def wide(t: UnitTable) -> UnitTable:
        noise = rng.normal(size=(t.x.shape[0], 2))
        return UnitTable(t.name, t.unit_ids, t.variants, [*t.features, "a", "b"],
                         np.column_stack([t.x, noise]), t.y)

    four = fit_surrogate([wide(t) for t in _history(rng, k=4)], long="y")
    assert any("Only 4 history comparisons for 4 surrogates" in n for n in four.notes())
