"""Estimators: closed-form hand computations, limits, diagnostics, truth by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from recscope.errors import ConfigError
from recscope.ope.action_dists import ActionDist
from recscope.ope.estimators import Inputs, make_estimator
from recscope.ope.feedback import LoggedFeedback
from recscope.ope.synthetic import SyntheticBandit, check_against_truth


def tiny() -> tuple[LoggedFeedback, ActionDist, np.ndarray]:
    """Four rounds, three actions, one position; numbers small enough to check by hand."""
    fb = LoggedFeedback(context=np.zeros((4, 0)), action=np.array([0, 1, 2, 1]),
                        position=np.zeros(4, np.int64), reward=np.array([1.0, 0.0, 1.0, 1.0]),
                        pscore=np.array([0.5, 0.25, 0.25, 0.25]), n_actions=3, len_list=1,
                        item_ids=np.array([10, 11, 12], dtype=object))
    pi = np.array([[0.2, 0.8, 0.0], [0.2, 0.8, 0.0], [0.2, 0.8, 0.0], [0.6, 0.2, 0.2]])
    q = np.array([[0.5, 0.4, 0.1], [0.3, 0.3, 0.3], [0.6, 0.2, 0.9], [0.1, 0.5, 0.7]])
    return fb, ActionDist.per_round(pi[:, :, None]), q


def test_hand_computed_values() -> None:
    fb, dist, q = tiny()
    inp = Inputs(fb, dist, q)
    w = np.array([0.2 / 0.5, 0.8 / 0.25, 0.0 / 0.25, 0.2 / 0.25])
    r = fb.reward
    ql = np.array([0.5, 0.3, 0.9, 0.5])
    v = np.array([0.2 * 0.5 + 0.8 * 0.4, 0.2 * 0.3 + 0.8 * 0.3, 0.2 * 0.6 + 0.8 * 0.2,
                  0.6 * 0.1 + 0.2 * 0.5 + 0.2 * 0.7])
    expect = {
        "dm": v.mean(), "ips": (w * r).mean(), "snips": (w * r).sum() / w.sum(),
        "dr": (v + w * (r - ql)).mean(),
        "sndr": v.mean() + (w * (r - ql)).sum() / w.sum(),
        "clipped-ips:1": (np.minimum(w, 1) * r).mean(),
        "switch-dr:1": (v + np.where(w <= 1, w, 0) * (r - ql)).mean(),
        "dr-os:2": (v + 2 * w / (w * w + 2) * (r - ql)).mean(),
    }
    for name, value in expect.items():
        assert make_estimator(name).point(inp) == pytest.approx(value, abs=1e-12), name


def test_limits_and_diagnostics() -> None:
    fb, dist, q = tiny()
    inp = Inputs(fb, dist, q)
    dr = make_estimator("dr").point(inp)
    assert make_estimator("switch-dr:1e9").point(inp) == pytest.approx(dr, abs=1e-12)
    assert make_estimator("dr-os:1e12").point(inp) == pytest.approx(dr, abs=1e-9)
    assert make_estimator("dr-os:1e-12").point(inp) == pytest.approx(
        make_estimator("dm").point(inp), abs=1e-9)
    assert make_estimator("clipped-ips:1e9").point(inp) == pytest.approx(
        make_estimator("ips").point(inp), abs=1e-12)
    est = make_estimator("ips").run(inp, n_bootstrap=50)
    d = est["diagnostics"]
    w = np.array([0.4, 3.2, 0.0, 0.8])
    assert d["ess"] == pytest.approx(w.sum() ** 2 / (w * w).sum())
    assert d["weight_max"] == pytest.approx(3.2)
    # round 2's logged action has π = 0: reported, not dropped
    assert d["outside_support_rounds"] == 1 and d["outside_support_share"] == 0.25
    assert d["n_rounds"] == 4
    assert est.ci_low <= est.estimate <= est.ci_high


def test_bad_specs_and_inputs() -> None:
    fb, dist, _ = tiny()
    with pytest.raises(ConfigError, match="unknown estimator"):
        make_estimator("magic")
    with pytest.raises(ConfigError, match="takes no parameter"):
        make_estimator("dr:3")
    with pytest.raises(ConfigError, match="needs reward-model"):
        make_estimator("dr").point(Inputs(fb, dist, None))
    with pytest.raises(ConfigError, match="n_rounds, n_actions"):
        Inputs(fb, dist, np.zeros((4, 2)))


def test_unbiased_and_covering_on_synthetic_bandit() -> None:
    """IPS and DR (with a deliberately wrong reward model) centre on the truth; their
    95% bootstrap intervals cover it at about the nominal rate; DM with the wrong model
    is biased (the check can fail)."""
    env = SyntheticBandit(n_actions=8, dim=4, beta_log=0.3, beta_eval=1.5, seed=3)

    def wrong_model(fb: LoggedFeedback, q: np.ndarray) -> np.ndarray:
        return np.clip(q * 0.6 + 0.05, 0, 1)

    n_reps = 100
    res = check_against_truth(env, ["ips", "dr", "dm", "snips"], n=1500, n_reps=n_reps,
                              n_bootstrap=100, seed=1, q_hat=wrong_model)
    truth = res.truth
    se_ips = res.rmse["ips"] / np.sqrt(n_reps)
    assert abs(res.bias["ips"]) < 3 * se_ips + 1e-3 * truth
    assert abs(res.bias["dr"]) < 3 * res.rmse["dr"] / np.sqrt(n_reps) + 1e-3 * truth
    assert abs(res.bias["dm"]) > 5 * res.rmse["dr"] / np.sqrt(n_reps)
    # nominal 95%: with 100 reps the binomial sd is 2.2%; allow ~3.5 sd
    for name in ("ips", "dr", "snips"):
        assert 0.87 <= res.coverage[name] <= 1.0, (name, res.coverage[name])
    assert res.coverage["dm"] < 0.5
