"""One call from a log and a policy to estimates: fit the reward model, run the estimators."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recscope.errors import ConfigError
from recscope.ope.estimators import Estimator, Inputs, make_estimator, slate_probs_for
from recscope.ope.feedback import LoggedFeedback
from recscope.ope.policies import ActionDist, RankingPolicy
from recscope.ope.result import OPEResult
from recscope.ope.reward import RewardModel

DEFAULT_ESTIMATORS = ("dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os")


def evaluate(
    fb: LoggedFeedback,
    policy: ActionDist | RankingPolicy,
    estimators: Sequence[str | Estimator] = DEFAULT_ESTIMATORS,
    *,
    reward_model: RewardModel | None = None,
    q_hat: np.ndarray | None = None,
    n_bootstrap: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
    on_policy: float | None = None,
    logs: str | None = None,
) -> OPEResult:
    """Estimate ``policy``'s value on ``fb`` with each estimator (bootstrap CIs, diagnostics).

    The reward model is fitted (cross-fitted) only when a model-based estimator needs it
    and ``q_hat`` is not given.
    """
    ests = [make_estimator(e) if isinstance(e, str) else e for e in estimators]
    if not ests:
        raise ConfigError("no estimator given", key="estimator")
    dist = policy.action_dist(fb.len_list) if isinstance(policy, RankingPolicy) else policy
    rm_info: dict[str, Any] | None = None
    if q_hat is None and any(e.needs_model for e in ests):
        reward_model = reward_model or RewardModel(seed=seed)
        q_hat = reward_model.fit_predict(fb)
        rm_info = reward_model.describe()
    slate = slate_probs_for(policy, fb) if any(e.is_slate for e in ests) else None
    inp = Inputs(fb, dist, q_hat, slate)
    rng = np.random.default_rng(seed)
    results = [e.run(inp, n_bootstrap=n_bootstrap, alpha=alpha, seed=rng) for e in ests]
    info = dict(dist.info)
    return OPEResult(policy=dist.name, logs=logs or fb.source or "log", n_rounds=fb.n_rounds,
                     estimates=results, on_policy=on_policy,
                     logging_value=fb.on_policy_value(), policy_info=info,
                     reward_model=rm_info,
                     config={"n_bootstrap": n_bootstrap, "alpha": alpha, "seed": seed,
                             "estimators": [e.label() for e in ests]})
