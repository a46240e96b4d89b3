"""Novelty projection: a planted decay is detected and its settled effect recovered (where
the two-week average is off), a constant effect shows no trend, a primacy dip too."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recscope.errors import DataValidationError
from recscope.experiments.novelty import daily_effects, project_settled

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def _experiment(settled: float, amplitude: float, tau: float, seed: int = 0,
                n_units: int = 3000, days: int = 14) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per unit and day: impressions and clicks with CTR = 0.10 (control) or
    0.10 + settled + amplitude·exp(−day/tau) (treatment)."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, n_units)
    exposure = T0 + pd.to_timedelta(rng.integers(0, 3 * 86400, n_units), unit="s")
    assign = pd.DataFrame({"unit_id": np.arange(n_units),
                           "variant": np.where(t == 1, "treatment", "control"),
                           "first_exposure_ts": exposure})
    u = np.repeat(np.arange(n_units), days)
    d = np.tile(np.arange(days), n_units)
    ctr = 0.10 + t[u] * (settled + amplitude * np.exp(-d / tau))
    imp = rng.poisson(20, u.size) + 1
    events = pd.DataFrame({"unit_id": u, "ts": exposure[u] + pd.to_timedelta(
        d * 86400 + 60, unit="s"), "impressions": imp, "clicks": rng.binomial(imp, ctr)})
    return assign, events


def test_planted_novelty_decay_is_recovered() -> None:
    a, e = _experiment(settled=0.01, amplitude=0.04, tau=2.0)
    daily = daily_effects(a, e, days=14)
    assert [x.extra["day"] for x in daily] == list(range(14))
    assert daily[0].estimate == pytest.approx(0.05, abs=0.008)
    res = project_settled(daily, n_boot=300, seed=1)
    assert res.trend_p_value < 1e-6 and res.trend_slope < 0
    s = res.settled
    assert s.ci_low <= 0.01 <= s.ci_high
    assert abs(s.estimate - 0.01) < 0.004
    two_week = np.average([x.estimate for x in daily], weights=[1 / x.se**2 for x in daily])
    assert two_week - 0.01 > 2 * abs(s.estimate - 0.01)  # the naive average is biased up
    assert 0.5 < res.tau < 6
    assert "novelty" in res.notes()[0]
    assert res.to_dict()["settled"]["day"] == "settled"


def test_constant_effect_has_no_trend_and_primacy_is_projected() -> None:
    a, e = _experiment(settled=0.01, amplitude=0.0, tau=1.0, seed=2)
    res = project_settled(daily_effects(a, e), n_boot=200)
    assert res.trend_p_value > 0.01
    assert res.settled.ci_low <= 0.01 <= res.settled.ci_high
    a, e = _experiment(settled=0.01, amplitude=-0.03, tau=3.0, seed=3)
    res = project_settled(daily_effects(a, e), n_boot=200)
    assert res.trend_slope > 0 and res.amplitude < 0
    assert res.settled.ci_low <= 0.01 <= res.settled.ci_high
    assert "primacy" in res.notes()[0]


def test_bad_inputs_are_named() -> None:
    a, e = _experiment(0.0, 0.0, 1.0, n_units=50, days=3)
    with pytest.raises(DataValidationError, match="'impressions'"):
        daily_effects(a, e.drop(columns=["impressions"]))
    with pytest.raises(DataValidationError, match="at least 4 days"):
        project_settled(daily_effects(a, e, days=3))


def test_by_session_recovers_a_per_session_decay() -> None:
    """Novelty that fades per session: light users keep it for days. By session since
    first exposure the planted e-folding (4 sessions) and settled effect come back."""
    rng = np.random.default_rng(5)
    n = 3000
    t = rng.integers(0, 2, n)
    rate = rng.choice([0.3, 1.0, 3.0], n)  # sessions per day
    exposure = T0 + pd.to_timedelta(rng.integers(0, 86400, n), unit="s")
    assign = pd.DataFrame({"unit_id": np.arange(n),
                           "variant": np.where(t == 1, "treatment", "control"),
                           "first_exposure_ts": exposure})
    k_sess = rng.poisson(rate * 14) + 1
    u = np.repeat(np.arange(n), k_sess)
    k = np.arange(u.size) - np.repeat(np.cumsum(k_sess) - k_sess, k_sess)
    at = np.concatenate([np.sort(rng.uniform(0, 14 * 86400 - 120, m)) for m in k_sess])
    at[k == 0] = 0
    imp = rng.poisson(20, u.size) + 1
    ctr = 0.10 + t[u] * (0.01 + 0.05 * np.exp(-k / 4.0))
    events = pd.DataFrame({"unit_id": u, "ts": exposure[u] + pd.to_timedelta(at + 1,
                                                                             unit="s"),
                           "session_id": np.arange(u.size), "impressions": imp,
                           "clicks": rng.binomial(imp, ctr)})
    rows = daily_effects(assign, events, by="session", max_sessions=25)
    assert [x.extra["session"] for x in rows][:3] == [0, 1, 2] and "day" not in rows[0].extra
    assert rows[0].estimate == pytest.approx(0.06, abs=0.01)
    res = project_settled(rows, n_boot=200, seed=2)
    assert res.by == "session" and res.settled.extra["session"] == "settled"
    assert res.settled.ci_low <= 0.01 <= res.settled.ci_high
    assert abs(res.settled.estimate - 0.01) < 0.005 and 2 < res.tau < 8
    assert "per session" in res.notes()[0]
    assert any("heavy users" in n for n in res.notes())
    assert any("too narrow" in n for n in res.notes())
    with pytest.raises(DataValidationError, match="at least 4 sessions"):
        project_settled(rows[:3])
    with pytest.raises(DataValidationError, match="'session_id'"):
        daily_effects(assign, events.drop(columns=["session_id"]), by="session")


def test_interval_scale_is_the_conformal_quantile_of_past_errors() -> None:
    from recscope.experiments.novelty import interval_scale

    n = 39  # ceil(0.95 * 40) = 38: the second largest score
    truth = np.linspace(0.05, 3.0, n)  # scores = truth / 1 (half-width 1 above)
    f = interval_scale(np.zeros(n), -2 * np.ones(n), np.ones(n), truth)
    assert f == pytest.approx(np.sort(truth)[37])
    # misses below use the lower half-width (2): the same errors count half as much
    assert interval_scale(np.zeros(n), -2 * np.ones(n), np.ones(n), -truth) == (
        pytest.approx(np.sort(truth)[37] / 2))
    assert interval_scale(np.zeros(n), -np.ones(n), np.ones(n), 0.1 * truth) == 1.0
    # a degenerate interval that was exactly right is no miss; one that was wrong is
    z = np.zeros(n)
    assert interval_scale(z, z, z, z) == 1.0
    assert interval_scale(z, z, z, np.r_[np.ones(2), z[2:]]) == np.inf
    with pytest.raises(DataValidationError, match="at least 19 runs"):
        interval_scale(np.zeros(18), -np.ones(18), np.ones(18), np.zeros(18))
    a, e = _experiment(settled=0.01, amplitude=0.04, tau=2.0, seed=4)
    daily = daily_effects(a, e)
    one, two = project_settled(daily, n_boot=100), project_settled(daily, n_boot=100,
                                                                   scale=2.0)
    assert two.settled.estimate == one.settled.estimate
    assert two.settled.ci_high - two.settled.estimate == pytest.approx(
        2 * (one.settled.ci_high - one.settled.estimate))
    assert two.settled.extra["interval_scale"] == 2.0
    assert any("too narrow" in n for n in one.notes())
    assert not any("too narrow" in n or "heavy users" in n for n in two.notes())
