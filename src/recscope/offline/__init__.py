"""recscope.offline: exact ranking metrics with intervals, paired comparisons, slices,
the stage funnel, beyond-accuracy metrics, debiased and sampled protocols.

The stable entry point is :func:`evaluate`::

    from recscope.offline import evaluate
    res = evaluate(rankings, truth, ["ndcg@10", "recall@20"])
    res.mean("ndcg@10"); res.ci("ndcg@10"); res.per_user  # Arrow table
"""

from recscope.offline.evaluate import DEFAULT_METRICS, EvaluationResult, evaluate
from recscope.offline.metrics import METRIC_NAMES, MetricSpec, parse_metric, parse_metrics

__all__ = [
    "DEFAULT_METRICS",
    "METRIC_NAMES",
    "EvaluationResult",
    "MetricSpec",
    "evaluate",
    "parse_metric",
    "parse_metrics",
]
