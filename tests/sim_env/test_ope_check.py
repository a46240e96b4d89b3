"""OPE against the simulator's ground truth (issue 8 item 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recscope.errors import ConfigError
from recscope.ope.estimators import Inputs, make_estimator
from recscope.ope.synthetic import check_against_truth
from recscope.sim.ope_check import SimulatedHomeFeed, reward_predictions


@pytest.fixture(scope="module")
def env() -> SimulatedHomeFeed:
    return SimulatedHomeFeed(seed=0)


def test_exact_truth_matches_on_policy_simulation(env: SimulatedHomeFeed) -> None:
    clicks = env.on_policy(200_000, np.random.default_rng(1))
    se = clicks.std() / math.sqrt(len(clicks))
    assert abs(clicks.mean() - env.true_value()) < 4 * se
    # the candidate is a different policy from the logging one, so OPE has work to do
    assert abs(env.true_value() - env.logging_value()) > 10 * se


def test_logged_feedback_and_target_share_the_pool(env: SimulatedHomeFeed) -> None:
    fb, q = env.log(2000, np.random.default_rng(2))
    dist = env.target(fb)
    probs = dist.probs[:, :, 0]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # the candidate only takes items the logging policy could have shown (positive pscore)
    pool_mask = np.zeros_like(probs, dtype=bool)
    pool_mask[np.arange(fb.n_rounds)[:, None], env.pool[fb.user_index]] = True
    assert not (probs[~pool_mask] > 0).any()
    # exact propensities: the logging policy's softmax at the logged item
    slot = np.argmax(env.pool[fb.user_index] == fb.action[:, None], axis=1)
    np.testing.assert_allclose(fb.pscore, env.pi_log[fb.user_index, slot], rtol=1e-9)
    # the log's mean click rate estimates the logging policy's exact value
    assert abs(fb.reward.mean() - env.logging_value()) < 4 * math.sqrt(
        env.logging_value() / fb.n_rounds)
    # DM with the true q on every round is exactly the candidate's expected reward there
    est = make_estimator("dm").point(Inputs(fb, dist, q))
    expected = (env.pi_eval[fb.user_index] * env.q_pool[fb.user_index]).sum(axis=1).mean()
    assert est == pytest.approx(expected, rel=1e-12)


def test_ips_dr_unbiased_and_covered_dm_misspecified_biased(env: SimulatedHomeFeed) -> None:
    reps = 10
    res = check_against_truth(env, ["dm", "ips", "snips", "dr"], n=3000, n_reps=reps,
                              n_bootstrap=100, seed=3, q_hat=reward_predictions("logistic"))
    truth = res.truth
    for name in ("ips", "snips", "dr"):
        # bias within 3 standard errors of the mean over repetitions, and small in itself
        assert abs(res.bias[name]) < 3 * res.rmse[name] / math.sqrt(reps), name
        assert abs(res.bias[name]) < 0.1 * truth, name
        assert res.coverage[name] >= 0.7, name
    # the additive logistic model cannot express the affinity interaction: DM is biased
    # by far more than its own spread and its intervals miss the truth
    assert res.bias["dm"] < -0.1 * truth
    assert res.coverage["dm"] <= 0.2


def test_dm_with_true_reward_model_is_unbiased(env: SimulatedHomeFeed) -> None:
    res = check_against_truth(env, ["dm"], n=2000, n_reps=5, n_bootstrap=50, seed=4,
                              q_hat=reward_predictions("oracle"))
    assert abs(res.bias["dm"]) < 0.02 * res.truth


def test_bad_settings_raise() -> None:
    with pytest.raises(ConfigError):
        reward_predictions("nope")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SimulatedHomeFeed(beta=0.0)


def test_deterministic_noisy_oracle_candidate() -> None:
    env = SimulatedHomeFeed(component="oracle-noisy", beta=float("inf"), seed=1)
    assert ((env.pi_eval == 0) | (env.pi_eval == 1)).all()
    np.testing.assert_allclose(env.pi_eval.sum(axis=1), 1.0)
    best = env.q_pool[np.arange(len(env.q_pool)), env.pi_eval.argmax(axis=1)]
    assert env.true_value() == pytest.approx(float(env.user_share @ best), rel=1e-12)
    res = check_against_truth(env, ["ips", "snips"], n=3000, n_reps=10, n_bootstrap=100,
                              seed=5)
    for name in ("ips", "snips"):
        assert abs(res.bias[name]) < 3 * res.rmse[name] / math.sqrt(10), name
        assert res.coverage[name] >= 0.7, name
