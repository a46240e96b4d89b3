"""The simulator's hook: decide on a simulated experiment, with the truth beside the
decision (what ``recscope demo`` ends with).

:data:`SIM_METRICS` is the simulated platform's metrics with the ``saves`` metric tree
(``examples/launch_metrics.toml`` is the same text); :data:`SIM_LAUNCH` the launch criteria
the demo uses (``examples/launch.toml`` without its variant).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from recscope.launch.config import LaunchConfig, load_launch
from recscope.launch.decide import LaunchDecision, decide
from recscope.launch.inputs import (
    Experiment,
    attribution_effects,
    attribution_rows,
    experiment_from_tables,
    load_experiment,
    offline_effects,
    ope_effects,
)

SIM_METRICS = """\
# Metrics of the simulated platform with a metric tree (docs/launch.md).
# saves per user = requests per user x impressions per request x saves per impression,
# on each surface; the surfaces' saves add up to the total.
unit = "unit_id"
variant = "variant"
control = "control"

[metrics.saves]
kind = "mean"
column = "saves"

[metrics.requests]
kind = "mean"
column = "requests"

[metrics.impressions_per_request]
kind = "ratio"
numerator = "impressions"
denominator = "requests"

[metrics.saves_per_impression]
kind = "ratio"
numerator = "saves"
denominator = "impressions"

[metrics.clicks]
kind = "mean"
column = "clicks"

[metrics.hides]
kind = "mean"
column = "hides"

[metrics.sessions]
kind = "mean"
column = "sessions"

[trees.saves]
parent = "saves"
op = "product"
children = ["requests", "impressions_per_request", "saves_per_impression"]
by = { column = "surface", values = ["home_feed", "related", "search"] }
"""

SIM_LAUNCH = LaunchConfig(
    name="new-stack", team="recommendations", components=["retriever", "ranker"],
    alpha=0.05, tree="saves",
    primary={"saves": {"direction": "increase", "min_effect": 0.01}},  # type: ignore[dict-item]
    guardrails={"hides": {"direction": "decrease", "margin": 0.05},  # type: ignore[dict-item]
                "sessions": {"direction": "increase", "margin": 0.01}},  # type: ignore[dict-item]
    source="recscope.launch.SIM_LAUNCH")


def _sim_metrics() -> tuple[Any, dict[str, Any]]:
    from recscope.experiments.metrics import parse_metrics
    from recscope.experiments.trees import check_tree, parse_trees

    data = tomllib.loads(SIM_METRICS)
    source = "recscope.launch.SIM_METRICS"
    trees = parse_trees(data.pop("trees"), file=source)
    config = parse_metrics(data, source=source)
    for name, tree in trees.items():
        check_tree(config, name, tree)
    return config, trees


def decide_simulated(launch: str | Path | LaunchConfig, experiment: Any, *,
                     variant: str | None = None, metrics: str | Path | None = None,
                     attribution: str | Path | dict[str, Any] | None = None,
                     offline: str | Path | None = None, ope: str | Path | None = None,
                     json_out: str | Path | None = None,
                     html_out: str | Path | None = None) -> LaunchDecision:
    """Decide on a simulated experiment with its truth beside the decision.

    ``experiment``: the folder ``recscope simulate --out`` wrote, or the in-memory result of
    :func:`recscope.sim.run_experiment` (its ``assignments``, ``events`` and ``truth``; the
    metrics are :data:`SIM_METRICS` unless ``metrics`` names a TOML). ``variant``
    overrides the launch's (e.g. the full-stack cell of a factorial); ``attribution`` is
    an ``attribute`` JSON path or its parsed ``{"metrics": {...}}``; ``json_out`` /
    ``html_out`` save the decision and the launch report.
    """
    cfg = launch if isinstance(launch, LaunchConfig) else load_launch(launch)
    if variant is not None:
        cfg = cfg.model_copy(update={"variant": variant})
    exp: Experiment
    if isinstance(experiment, str | Path):
        exp = load_experiment(experiment, trees=cfg.tree, metrics=metrics)
    else:
        if metrics is not None:
            from recscope.experiments.trees import load_metrics_with_trees

            config, specs = load_metrics_with_trees(metrics)
        else:
            config, specs = _sim_metrics()
        truth = getattr(experiment, "truth", None)
        exp = experiment_from_tables(
            experiment.assignments, experiment.events, config, specs, tree=cfg.tree,
            truth=truth.to_dict() if hasattr(truth, "to_dict") else truth,
            source=f"simulated experiment {getattr(experiment, 'name', '')}".strip())
    if isinstance(attribution, dict):
        attr = attribution_rows(attribution, source="attribution")
    else:
        attr = attribution_effects(attribution) if attribution else None
    dec = decide(cfg, exp,
                 offline=offline_effects(offline) if offline else None,
                 offline_source=str(offline),
                 ope=ope_effects(ope) if ope else None, ope_source=str(ope), attribution=attr)
    if json_out is not None:
        dec.save(json_out)
    if html_out is not None:
        dec.save(html_out)
    return dec
