"""The simulator's hook: decide on a simulated experiment's folder, with the truth beside
the decision (what ``recscope demo`` ends with)."""

from __future__ import annotations

from pathlib import Path

from recscope.launch.config import LaunchConfig, load_launch
from recscope.launch.decide import LaunchDecision, decide
from recscope.launch.inputs import (
    attribution_effects,
    load_experiment,
    offline_effects,
    ope_effects,
)


def decide_simulated(launch: str | Path | LaunchConfig, experiment_dir: str | Path, *,
                     variant: str | None = None, metrics: str | Path | None = None,
                     attribution: str | Path | None = None, offline: str | Path | None = None,
                     ope: str | Path | None = None, json_out: str | Path | None = None,
                     html_out: str | Path | None = None) -> LaunchDecision:
    """Decide on the folder ``recscope simulate --out`` (or ``run_experiment(spec, out)``)
    wrote, with its ``truth.json`` beside the decision.

    ``variant`` overrides the launch file's (e.g. the full-stack cell of a factorial);
    ``metrics`` replaces the folder's ``metrics.toml`` (e.g. one that adds metric trees,
    like ``examples/launch_metrics.toml``); ``json_out``/``html_out`` save the decision and
    the launch report.
    """
    cfg = launch if isinstance(launch, LaunchConfig) else load_launch(launch)
    if variant is not None:
        cfg = cfg.model_copy(update={"variant": variant})
    folder = Path(experiment_dir)
    exp = load_experiment(folder, trees=cfg.tree, metrics=metrics)
    dec = decide(cfg, exp,
                 offline=offline_effects(offline) if offline else None,
                 offline_source=str(offline),
                 ope=ope_effects(ope) if ope else None, ope_source=str(ope),
                 attribution=attribution_effects(attribution) if attribution else None)
    if json_out is not None:
        dec.save(json_out)
    if html_out is not None:
        dec.save(html_out)
    return dec
