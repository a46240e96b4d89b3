"""recscope.ope: off-policy estimates of a new policy's value from logged bandit feedback.

``LoggedFeedback`` (feedback.py) reads logs in the canonical schema; ``action_dists`` turns
a scorer (anything with ``score(users, items)``), scores, a uniform policy or another log's
propensities into action distributions; ``estimators`` holds DM, IPS, clipped IPS, SNIPS,
DR, SNDR, Switch-DR, DR-OS and the slate estimators (IIPS, RIPS, SIPS, cascade DR);
``reward`` the cross-fitted reward models; :func:`estimate_value` runs them and returns an
``OPEResult`` whose rows are :class:`~recscope.results.Effect` objects. ``synthetic`` and
``semisynthetic`` check the estimators against known true values (the built-in world's
check lives in ``recscope.sim.ope_check``).
"""

from recscope.ope.action_dists import (
    ActionDist,
    RankingPolicy,
    Scorer,
    from_log,
    from_scorer,
    from_scores,
    uniform,
)
from recscope.ope.estimators import ESTIMATORS, Estimator, make_estimator
from recscope.ope.feedback import LoggedFeedback
from recscope.ope.result import OPEResult
from recscope.ope.reward import RewardModel
from recscope.ope.value import DEFAULT_ESTIMATORS, estimate_value

__all__ = [
    "DEFAULT_ESTIMATORS", "ESTIMATORS", "ActionDist", "Estimator", "LoggedFeedback",
    "OPEResult", "RankingPolicy", "RewardModel", "Scorer", "estimate_value", "from_log",
    "from_scorer", "from_scores", "make_estimator", "uniform",
]
