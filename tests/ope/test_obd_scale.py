"""Semi-synthetic OBD: exact truth, and OPE error against it at the sample's and a large size.

The real OBD sample (10,000 rounds, 38 clicks) cannot tell estimator error from noise; the
semi-synthetic version keeps its contexts, positions, items and rebuilt BTS policy, with
clicks of known truth, so the obd protocol can be checked at any size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from recscope.errors import ConfigError
from recscope.ope.action_dists import ActionDist, uniform
from recscope.ope.semisynthetic import SemiSyntheticOBD, resampled_estimates
from recscope.ope.synthetic import check_against_truth
from tests.conftest import data_path


@pytest.fixture(scope="module")
def env() -> SemiSyntheticOBD:
    return SemiSyntheticOBD.from_obd(data_path("obd"), "all", seed=0)


def _mean_error(values: dict[str, np.ndarray], truth: float) -> dict[str, float]:
    return {e: float(np.mean(np.abs(v - truth) / truth)) for e, v in values.items()}


def test_calibrated_to_the_real_sample_and_exact_truth_matches_simulation(
        env: SemiSyntheticOBD) -> None:
    # the real sample's click rates: 38 and 42 clicks in 10,000 rounds
    assert env.logging_value() == pytest.approx(0.0038, rel=1e-9)
    assert env.true_value() == pytest.approx(0.0042, rel=1e-9)
    table = np.full(env.target_table.shape, 1 / env.target_table.shape[0])
    assert env.value(table) == pytest.approx(env.logging_value(), rel=1e-12)
    n = 3_000_000
    value, clicks = env.on_policy(n, np.random.default_rng(1))
    se = math.sqrt(env.true_value() / n)
    assert abs(value - env.true_value()) < 4 * se and clicks == round(value * n)
    fb, q = env.log(1_000_000, np.random.default_rng(2))
    assert abs(fb.on_policy_value() - env.logging_value()) < 4 * math.sqrt(0.0038 / 1e6)
    np.testing.assert_allclose(fb.pscore, 1 / 80)
    np.testing.assert_allclose(q[np.arange(fb.n_rounds), fb.action].mean(),
                               env.logging_value(), rtol=0.01)
    # the rounds are the real sample's (context, position) rows
    assert fb.context.shape[1] == env.population.context.shape[1]
    assert set(np.unique(fb.position)) == {0, 1, 2}


def test_ips_unbiased_against_exact_truth(env: SemiSyntheticOBD) -> None:
    res = check_against_truth(env, ["ips"], n=20_000, n_reps=20, n_bootstrap=50, seed=3)
    sd = math.sqrt(max(res.rmse["ips"] ** 2 - res.bias["ips"] ** 2, 0.0))
    assert abs(res.bias["ips"]) < 4 * sd / math.sqrt(res.n_reps)
    assert res.coverage["ips"] >= 0.7


def test_error_falls_below_goal_at_scale_and_wrong_policy_does_not(
        env: SemiSyntheticOBD) -> None:
    truth = env.true_value()
    errors = {}
    for n in (10_000, 1_000_000):
        fb, _ = env.log(n, np.random.default_rng(n), return_q=False)
        vals = resampled_estimates(fb, env.target(fb), ["ips", "snips"], runs=8)
        errors[n] = min(_mean_error(vals, truth).values())
        if n == 1_000_000:
            wrong = resampled_estimates(fb, uniform(fb), ["ips", "snips"], runs=8)
            wrong_error = min(_mean_error(wrong, truth).values())
    # 1M rounds (~4,000 clicks): well under the goal 0.12; 10k rounds (~40 clicks): not
    assert errors[1_000_000] < 0.06
    assert errors[10_000] > 2 * errors[1_000_000]
    # evaluating the wrong (uniform) policy misses the BTS truth by ~10%: the bound bites
    assert wrong_error > 0.06


def test_model_based_protocol_end_to_end(env: SemiSyntheticOBD) -> None:
    fb, _ = env.log(20_000, np.random.default_rng(4), return_q=False)
    vals = resampled_estimates(fb, env.target(fb), ["dm", "dr", "dr-os"], runs=1)
    err = _mean_error(vals, env.true_value())
    assert all(v.shape == (1,) and np.isfinite(v).all() for v in vals.values())
    # ~80 clicks: one resample of one log can miss by 0.5 (relative standard error ~0.25
    # each); a broken reward model (DM near 0.5) or weights (off by 80x) miss by far more
    assert max(err.values()) < 1.0, err


def test_bad_configurations_raise(env: SemiSyntheticOBD) -> None:
    pop = env.population
    with pytest.raises(ConfigError, match="target table"):
        SemiSyntheticOBD(pop, np.ones((3, 3)) / 3, 0.0038, 0.0042)
    with pytest.raises(ConfigError, match="logging_rate"):
        SemiSyntheticOBD(pop, env.target_table, 0.0, 0.0042)
    with pytest.raises(ConfigError, match="cannot calibrate"):
        SemiSyntheticOBD(pop, env.target_table, 0.0038, 0.9)
    with pytest.raises(ConfigError, match="runs"):
        fb, _ = env.log(100, np.random.default_rng(0))
        resampled_estimates(fb, ActionDist.context_free(env.target_table, 100), ["ips"], runs=0)
