"""recscope.history: learning from past candidates and experiments.

- :mod:`~recscope.history.store`: one history table (DuckDB over MLflow runs and result
  files) of candidates, their offline, OPE and replay signals, online readouts, truth
  and decisions (``recscope history build`` / ``show``);
- :mod:`~recscope.history.corpus`: a simulated history on the built-in world
  (``recscope history simulate``);
- :mod:`~recscope.history.predict`: offline->online prediction with conformal intervals
  and triage (``recscope history predict``);
- :mod:`~recscope.history.priors`: empirical-Bayes priors for readouts
  (:func:`apply_prior`, ``recscope experiment analyze --prior``);
- :mod:`~recscope.history.shortcuts`: earliest agreement and early-stopping rules;
- :mod:`~recscope.history.demo`: the small history on the demo's world behind its "what
  history predicted" line.

See docs/history.md.
"""

from recscope.history.predict import Prediction, Predictor, fit_predictor, predict_candidate
from recscope.history.priors import (
    GridPrior,
    NormalPrior,
    Prior,
    PriorReadout,
    apply_prior,
    check_prior,
    fit_family_model,
    fit_metric_prior,
    fit_priors,
    sure_weight,
)
from recscope.history.store import build_history, check_history, read_history

__all__ = [
    "GridPrior",
    "NormalPrior",
    "Prediction",
    "Predictor",
    "Prior",
    "PriorReadout",
    "apply_prior",
    "build_history",
    "check_history",
    "check_prior",
    "fit_family_model",
    "fit_metric_prior",
    "fit_predictor",
    "fit_priors",
    "predict_candidate",
    "prior_from_history",
    "read_history",
    "sure_weight",
]


def prior_from_history(path: str) -> dict[str, Prior]:
    """Priors per metric fitted on a history file (what ``--prior FILE`` uses)."""
    return fit_priors(read_history(path), source=str(path))
