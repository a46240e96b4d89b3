"""Slate estimators against a cascade click model with a known value."""

from __future__ import annotations

import numpy as np
import pytest

from recscope.errors import ConfigError, DataValidationError
from recscope.ope.action_dists import RankingPolicy, uniform
from recscope.ope.estimators import Inputs, make_estimator, slate_probs_for
from recscope.ope.feedback import LoggedFeedback
from recscope.ope.synthetic import SyntheticSlateBandit, check_against_truth


def _model(fb: LoggedFeedback, q: np.ndarray) -> np.ndarray:
    """A crude constant reward model (cascade DR must stay unbiased with it)."""
    return np.full((fb.n_rounds, fb.n_actions), fb.reward.mean())


@pytest.mark.parametrize("cascade", [True, False])
def test_slate_estimators_centre_on_truth(cascade: bool) -> None:
    env = SyntheticSlateBandit(cascade=cascade, seed=2, temp_log=3.0)
    names = ["rips", "sips", "cascade-dr", "iips"]
    res = check_against_truth(env, names, n=1200, n_reps=30, n_bootstrap=60, seed=4,
                              q_hat=_model)
    for name in ("rips", "sips", "cascade-dr"):  # unbiased under any click model
        se = res.rmse[name] / np.sqrt(res.n_reps)
        assert abs(res.bias[name]) < 3.5 * se, (name, res.bias[name], se)
    se = res.rmse["iips"] / np.sqrt(res.n_reps)
    if cascade:  # IIPS ignores that a click stops the user: biased (the check can fail)
        assert res.bias["iips"] > 0.05 * res.truth
    else:  # IIPS is unbiased when positions do not interact
        assert abs(res.bias["iips"]) < 3.5 * se
    # cascade DR has less error than the prefix and slate weights it improves on
    assert res.rmse["cascade-dr"] < min(res.rmse["rips"], res.rmse["sips"])


def test_prefix_probabilities_are_consistent() -> None:
    env = SyntheticSlateBandit(seed=5)
    fb, _ = env.log(300, np.random.default_rng(0))
    pol = env.target(fb)
    sp = pol.slate_probs(fb)
    assert sp.prefix is not None and sp.slate is not None and sp.cond is not None
    assert np.all(sp.slate <= sp.prefix + 1e-15)
    np.testing.assert_allclose(sp.cond.sum(axis=1), 1.0, atol=1e-12)
    first = fb.position == 0
    np.testing.assert_allclose(sp.prefix[first], sp.marginal[first], atol=1e-12)
    # logging propensities: slate probability of a uniform policy is 1/(A)
    uni = RankingPolicy(np.zeros((1, fb.n_actions)), np.zeros(fb.n_rounds, np.int64), 0.0, 1.0)
    spu = uni.slate_probs(fb)
    np.testing.assert_allclose(spu.slate, 1 / (6 * 5 * 4))


def test_slate_errors_are_clear() -> None:
    env = SyntheticSlateBandit(seed=6)
    fb, _ = env.log(50, np.random.default_rng(0))
    no_slates = LoggedFeedback(fb.context, fb.action, fb.position, fb.reward, fb.pscore,
                               fb.n_actions, fb.len_list, fb.item_ids)
    dist = uniform(no_slates)
    with pytest.raises(DataValidationError, match="session_id"):
        make_estimator("iips").run(Inputs(no_slates, dist, None,
                                          slate_probs_for(dist, no_slates)), n_bootstrap=5)
    marg_only = slate_probs_for(uniform(fb), fb)
    with pytest.raises(ConfigError, match="prefix"):
        make_estimator("rips").point(Inputs(fb, uniform(fb), None, marg_only))
    bad = LoggedFeedback(fb.context, fb.action, fb.position, fb.reward, fb.pscore,
                         fb.n_actions, fb.len_list, fb.item_ids, slate_id=fb.slate_id)
    with pytest.raises(DataValidationError, match="propensity_slate"):
        make_estimator("sips").point(Inputs(bad, uniform(bad), None,
                                            env.target(bad).slate_probs(bad)))
