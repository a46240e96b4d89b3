"""Cross-fitted reward models."""

from __future__ import annotations

import numpy as np
import pytest

from recscope.errors import ConfigError
from recscope.ope.feedback import LoggedFeedback
from recscope.ope.reward import RewardModel
from recscope.ope.synthetic import SyntheticBandit


def test_logistic_recovers_the_reward_function() -> None:
    fb, q = SyntheticBandit(n_actions=5, dim=3, seed=0).log(6000, np.random.default_rng(0))
    model = RewardModel(kind="logistic", item_features="onehot", per_position=True)
    pred = model.fit_predict(fb)
    assert pred.shape == (fb.n_rounds, fb.n_actions)
    # a linear-in-context model without item x context terms captures the item effects
    assert np.corrcoef(pred.mean(axis=0), q.mean(axis=0))[0, 1] > 0.9
    assert model.log_loss is not None and model.log_loss < 0.69


def test_cross_fitting_hides_each_rounds_own_reward() -> None:
    """Item 1 appears once, clicked: fitted in-sample, one-hot ridge predicts ~1 for it;
    cross-fitted, the model that predicts that round never saw item 1."""
    n = 300
    action = np.zeros(n, np.int64)
    action[0] = 1
    reward = np.zeros(n)
    reward[0] = 1.0
    reward[1:31] = 1.0
    fb = LoggedFeedback(np.zeros((n, 0)), action, np.zeros(n, np.int64), reward,
                        np.full(n, 0.5), 2, 1, np.array([0, 1], dtype=object))
    pred = RewardModel(kind="ridge", item_features="onehot", c=1e6).fit_predict(fb)
    assert pred[0, 1] < 0.2  # the intercept-only guess for an unseen item, not ~1
    assert abs(pred[5, 0] - 30 / 299) < 0.02


def test_reward_model_errors_and_lightgbm() -> None:
    fb, _ = SyntheticBandit(n_actions=3, dim=2, seed=1).log(800, np.random.default_rng(1))
    with pytest.raises(ConfigError):
        RewardModel(kind="forest")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        RewardModel(n_folds=1)
    cont = LoggedFeedback(fb.context, fb.action, fb.position, fb.reward * 2.5, fb.pscore,
                          fb.n_actions, 1, fb.item_ids)
    with pytest.raises(ConfigError, match="0/1 rewards"):
        RewardModel(kind="logistic").fit_predict(cont)
    pred = RewardModel(kind="lightgbm").fit_predict(fb)
    assert np.all((pred >= 0) & (pred <= 1))
    auto = RewardModel(kind="logistic", c="auto")
    pred = auto.fit_predict(fb)
    assert pred.shape == (fb.n_rounds, fb.n_actions) and auto.log_loss is not None


def test_groups_share_a_fold() -> None:
    """Copies of one round (a bootstrap resample) never train their own prediction."""
    n = 200
    action = np.zeros(n, np.int64)
    action[:2] = 1  # one original round of item 1, duplicated
    reward = np.zeros(n)
    reward[:2] = 1.0
    fb = LoggedFeedback(np.zeros((n, 0)), action, np.zeros(n, np.int64), reward,
                        np.full(n, 0.5), 2, 1, np.array([0, 1], dtype=object))
    groups = np.r_[0, 0, np.arange(1, n - 1)]
    grouped = RewardModel(kind="ridge", item_features="onehot", c=1e6, seed=3)
    pred = grouped.fit_predict(fb, groups=groups)
    assert np.all(pred[:2, 1] < 0.2)  # item 1 unseen by the model predicting its rounds
