"""recscope.offline: exact ranking metrics with intervals, paired comparisons, slices,
the stage funnel, beyond-accuracy metrics, debiased and sampled protocols.

The stable entry point is :func:`evaluate`::

    from recscope.offline import evaluate
    res = evaluate(rankings, truth, ["ndcg@10", "recall@20"])
    res.mean("ndcg@10"); res.ci("ndcg@10"); res.per_user  # Arrow table
    res.to_dict()  # the JSON contract (Effect rows: estimate, ci_low, ci_high, se, n)

Rankings and truth with your own ids: from files with :func:`load_inputs` (one shared
vocabulary for the truth and every rankings file), or from pandas / Arrow tables with
``RankedLists.from_table`` and ``Relevance.from_table`` (``recscope.data``).

See docs/offline.md for every convention.
"""

from recscope.offline.beyond import BeyondResult, beyond_accuracy
from recscope.offline.compare import ComparisonResult, compare
from recscope.offline.debiased import DebiasedResult, debiased_evaluate
from recscope.offline.evaluate import DEFAULT_METRICS, EvaluationResult, evaluate
from recscope.offline.funnel import FunnelResult, funnel
from recscope.offline.inputs import EvaluationInputs, load_inputs, read_rankings, read_truth
from recscope.offline.metrics import METRIC_NAMES, MetricSpec, parse_metric, parse_metrics
from recscope.offline.sampled import SampledMetricWarning, SampledResult, sampled_evaluate
from recscope.offline.scale import evaluate_spark, evaluate_stream
from recscope.offline.slices import SliceResult, slice_items, slice_users

__all__ = [
    "DEFAULT_METRICS",
    "METRIC_NAMES",
    "BeyondResult",
    "ComparisonResult",
    "DebiasedResult",
    "EvaluationInputs",
    "EvaluationResult",
    "FunnelResult",
    "MetricSpec",
    "SampledMetricWarning",
    "SampledResult",
    "SliceResult",
    "beyond_accuracy",
    "compare",
    "debiased_evaluate",
    "evaluate",
    "evaluate_spark",
    "evaluate_stream",
    "funnel",
    "load_inputs",
    "parse_metric",
    "parse_metrics",
    "read_rankings",
    "read_truth",
    "sampled_evaluate",
    "slice_items",
    "slice_users",
]
