"""Validation by simulation on real data: Hillstrom A/A and planted effects, CUPED
variance reduction, sequential monitoring under the null, ASOS replay."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recscope.experiments import moments
from recscope.experiments.sequential import replay
from recscope.experiments.validation import aa_study, sequential_null_study
from tests.conftest import data_path


@pytest.fixture(scope="module")
def no_email() -> pd.DataFrame:
    h = pd.read_csv(data_path("hillstrom", "hillstrom.csv"))
    return h[h["segment"] == "No E-Mail"]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("metric", ["visit", "conversion", "spend"])
def test_hillstrom_aa_false_positive_rate_and_planted_coverage(no_email: pd.DataFrame,
                                                               metric: str) -> None:
    r = aa_study(no_email[metric].to_numpy(), no_email["history"].to_numpy(), splits=2000,
                 lift=0.1, seed=2026)
    for value in (r.fpr_raw, r.fpr_cuped):
        assert 0.035 <= value <= 0.065, r
    for value in (r.coverage_raw, r.coverage_cuped):
        assert 0.935 <= value <= 0.965, r


@pytest.mark.data
def test_cuped_variance_reduction_is_the_squared_correlation(no_email: pd.DataFrame) -> None:
    y, x = no_email["visit"].to_numpy(float), no_email["history"].to_numpy(float)
    rho2 = np.corrcoef(y, x)[0, 1] ** 2
    r = aa_study(y, x, splits=200, seed=1)
    assert r.variance_reduction == pytest.approx(rho2, rel=0.1)
    # a strongly correlated covariate: reduction ~ rho^2 ~ 0.49
    rng = np.random.default_rng(0)
    x2 = rng.normal(size=20_000)
    y2 = 0.7 * x2 + np.sqrt(1 - 0.49) * rng.normal(size=20_000)
    r2 = aa_study(y2, x2, splits=100, seed=1)
    assert r2.variance_reduction == pytest.approx(np.corrcoef(y2, x2)[0, 1] ** 2, abs=0.02)


def test_sequential_always_valid_controls_fpr_while_naive_peeking_does_not() -> None:
    r = sequential_null_study(simulations=2000, looks=30, seed=11)
    assert r.always_valid_fpr <= 0.05
    assert r.naive_fpr > 0.15


def test_msprt_confidence_sequence_covers_a_true_effect_at_all_looks() -> None:
    rng = np.random.default_rng(12)
    sims, looks, per = 1000, 30, 400
    c = np.cumsum(rng.normal(0.0, 1.0, (sims, looks, per)).sum(axis=2), axis=1)
    t = np.cumsum(rng.normal(0.2, 1.0, (sims, looks, per)).sum(axis=2), axis=1)
    n = per * np.arange(1, looks + 1.0)
    v = 2.0 / n
    half, _ = moments.msprt(t / n - c / n, v, 0.01, 0.05)
    always = np.all(np.abs(t / n - c / n - 0.2) <= half, axis=1).mean()
    assert always >= 0.95


@pytest.mark.data
def test_asos_replay_early_decisions_agree_with_final_ones() -> None:
    frame = pd.read_parquet(data_path("asos-digital-experiments",
                                      "asos_digital_experiments_dataset.parquet"))
    r = replay(frame)
    assert len(r) == frame.groupby(["experiment_id", "variant_id", "metric_id"]).ngroups
    early = r[r["same_decision"]]
    assert len(early) > 0
    assert (early["seq_stop_time"] <= early["duration"]).all()
    assert ((early["time_saved"] >= 0) & (early["time_saved"] < 1)).all()
    # a sequential stop never contradicts a significant final result
    contradict = r[r["seq_stopped"] & r["final_significant"]
                   & (r["seq_sign"] != np.sign(r["final_effect"]))]
    assert len(contradict) == 0
