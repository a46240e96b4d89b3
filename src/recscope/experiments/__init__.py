"""recscope.experiments: assignment, warehouse-native analysis, sequential tests.

- :func:`recscope.experiments.assignment.assign`: deterministic variants (salts, layers,
  traffic ranges, weights, holdouts), the one function the simulator and service use;
- :func:`recscope.experiments.analysis.analyze`: per-unit aggregation and sufficient
  statistics in DuckDB or Spark SQL (generated with SQLGlot), inference in Python,
  returning a :class:`~recscope.experiments.analysis.Scorecard`;
- :func:`recscope.experiments.clustered.analyze_design`: cluster, creator, hierarchical
  and switchback designs (:mod:`~recscope.experiments.designs` assigns them,
  :mod:`~recscope.experiments.clusters` finds graph clusters);
- :mod:`recscope.experiments.moments`, :mod:`~recscope.experiments.sequential`,
  :mod:`~recscope.experiments.validation`: the statistics and their simulation checks.

See docs/experiments.md.
"""

from recscope.experiments.analysis import Scorecard, analyze
from recscope.experiments.assignment import HOLDOUT, Experiment, Holdout, assign
from recscope.experiments.clustered import DesignAnalysis, analyze_design
from recscope.experiments.designs import DesignConfig
from recscope.experiments.metrics import AnalysisConfig, Metric, load_metrics, parse_metrics

__all__ = ["HOLDOUT", "AnalysisConfig", "DesignAnalysis", "DesignConfig", "Experiment",
           "Holdout", "Metric", "Scorecard", "analyze", "analyze_design", "assign",
           "load_metrics", "parse_metrics"]
