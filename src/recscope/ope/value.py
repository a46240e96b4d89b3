"""``estimate_value``: one call from a log and a policy to estimates (fit the reward model,
run the estimators, return an :class:`OPEResult`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from recscope.errors import ConfigError
from recscope.ope.action_dists import ActionDist, RankingPolicy
from recscope.ope.estimators import Estimator, Inputs, make_estimator, slate_probs_for
from recscope.ope.feedback import LoggedFeedback
from recscope.ope.result import OPEResult
from recscope.ope.reward import RewardModel

DEFAULT_ESTIMATORS = ("dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os")


def estimate_value(
    fb: LoggedFeedback,
    policy: ActionDist | RankingPolicy,
    estimators: Sequence[str | Estimator] = DEFAULT_ESTIMATORS,
    *,
    reward_model: RewardModel | None = None,
    q_hat: np.ndarray | None = None,
    bootstrap: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    on_policy: float | None = None,
    logs: str | None = None,
) -> OPEResult:
    """Estimate ``policy``'s value on ``fb`` with each estimator: percentile bootstrap
    intervals at ``confidence`` from ``bootstrap`` resamples, and weight diagnostics.

    The reward model is fitted (cross-fitted) only when a model-based estimator needs it
    and ``q_hat`` is not given. With ``on_policy`` (the evaluated policy's observed value),
    each row also carries its relative error ``rel_error``.
    """
    check_options(bootstrap, confidence)
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
    alpha = round(1.0 - confidence, 12)  # 0.95 -> 0.05 exactly, as the former alpha option
    results = [e.run(inp, n_bootstrap=bootstrap, alpha=alpha, seed=rng) for e in ests]
    if on_policy:
        results = [replace(r, extra={**r.extra, "rel_error": abs(r.estimate - on_policy)
                                     / abs(on_policy)}) for r in results]
    info = dict(dist.info)
    return OPEResult(policy=dist.name, logs=logs or fb.source or "log", n_rounds=fb.n_rounds,
                     estimates=results, on_policy=on_policy,
                     logging_value=fb.on_policy_value(), policy_info=info,
                     reward_model=rm_info,
                     config={"bootstrap": bootstrap, "confidence": confidence, "seed": seed,
                             "estimators": [e.label() for e in ests]})


def check_options(bootstrap: int, confidence: float) -> None:
    """Refuse a negative number of resamples or a level outside (0, 1), each named."""
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) \
            or bootstrap < 0:
        raise ConfigError(f"bootstrap must be an integer >= 0, got {bootstrap!r}",
                          key="bootstrap")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}", key="confidence")
