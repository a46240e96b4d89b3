"""Attribution of a measured effect to the components that changed, with interactions."""

from recscope.attribution.analysis import AttributionResult, attribute
from recscope.attribution.factorial import (
    CellStats,
    MetricAttribution,
    attribute_metric,
    shapley_values,
)
from recscope.attribution.shapley import interaction_weights, shapley_weights, total_weights

__all__ = [
    "AttributionResult",
    "CellStats",
    "MetricAttribution",
    "attribute",
    "attribute_metric",
    "interaction_weights",
    "shapley_values",
    "shapley_weights",
    "total_weights",
]
