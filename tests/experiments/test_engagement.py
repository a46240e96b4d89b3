"""Engagement-bias correction: when heavy users arrive first and react more, the early
readout is biased toward them and the reweighted one recovers the population's effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recscope.errors import DataValidationError
from recscope.experiments.engagement import engagement_readout

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def _data(seed: int = 0, n: int = 8000) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    heavy = rng.random(n) < 0.3
    pre = np.where(heavy, rng.integers(5, 20, n), rng.integers(0, 3, n))
    arrive = np.where(heavy, rng.exponential(1.0, n), rng.exponential(6.0, n))
    t = rng.integers(0, 2, n)
    exposure = T0 + pd.to_timedelta((arrive * 86400).astype(int), unit="s")
    assign = pd.DataFrame({"unit_id": np.arange(n),
                           "variant": np.where(t == 1, "treatment", "control"),
                           "first_exposure_ts": exposure})
    sessions = rng.poisson(np.where(heavy, 6.0, 2.0) + t * np.where(heavy, 2.0, 0.0))
    events = pd.DataFrame({"unit_id": np.arange(n), "ts": exposure + pd.Timedelta(hours=1),
                           "sessions": sessions})
    population = pd.DataFrame({"unit_id": np.arange(n), "pre_sessions": pre})
    return assign, events, population


def test_reweighting_recovers_population_effect() -> None:
    a, e, p = _data()
    res = engagement_readout(a, e, p, stratum="pre_sessions", days=2, window=7)
    early, rw = res.readouts
    truth = 0.3 * 2.0  # population effect: heavy share × heavy effect
    assert early.extra["readout"] == "early" and rw.extra["readout"] == "reweighted"
    assert early.estimate > truth + 4 * early.se  # the early arrivers are mostly heavy
    assert rw.ci_low <= truth <= rw.ci_high
    assert sum(s["population_share"] for s in res.strata) == pytest.approx(1.0)
    assert res.share_missing == 0.0


def test_population_without_a_unit_is_named() -> None:
    a, e, p = _data(n=500)
    with pytest.raises(DataValidationError, match="population"):
        engagement_readout(a, e, p.iloc[10:], stratum="pre_sessions", days=30)
    with pytest.raises(DataValidationError, match="'engagement'"):
        engagement_readout(a, e, p, stratum="engagement")
