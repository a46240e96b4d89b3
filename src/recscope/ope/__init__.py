"""recscope.ope: off-policy estimates of a new policy's value from logged bandit feedback.

``LoggedFeedback`` (feedback.py) reads logs in the canonical schema; ``policies`` turns a
model, scores, a uniform policy or another log's propensities into action distributions;
``estimators`` holds DM, IPS, clipped IPS, SNIPS, DR, SNDR, Switch-DR, DR-OS and the slate
estimators (IIPS, RIPS, SIPS, cascade DR); ``reward`` the cross-fitted reward models;
``evaluate`` runs them and returns an ``OPEResult``. ``synthetic`` and ``simulated`` (the
built-in world of ``recscope.sim``) check the estimators against known true values.
"""

from recscope.ope.estimators import ESTIMATORS, Estimate, Estimator, make_estimator
from recscope.ope.evaluate import DEFAULT_ESTIMATORS, evaluate
from recscope.ope.feedback import LoggedFeedback
from recscope.ope.policies import ActionDist, RankingPolicy, from_log, from_scores, uniform
from recscope.ope.result import OPEResult
from recscope.ope.reward import RewardModel

__all__ = [
    "DEFAULT_ESTIMATORS", "ESTIMATORS", "ActionDist", "Estimate", "Estimator", "LoggedFeedback",
    "OPEResult", "RankingPolicy", "RewardModel", "evaluate", "from_log", "from_scores",
    "make_estimator", "uniform",
]
