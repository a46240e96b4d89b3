"""``recscope attribute``: split a factorial experiment's effect over its components."""

from __future__ import annotations

from pathlib import Path

import typer

from recscope.cli.common import (
    HtmlOut,
    JsonOut,
    Tracking,
    check_outputs,
    console,
    experiment_inputs,
    print_sql,
    progress,
    write_outputs,
)
from recscope.cli.experiment import check_engine, check_metrics_file
from recscope.errors import ConfigError


def attribute(
    assignments: str = typer.Option(..., "--assignments", help="Assignment table, one row per "
                                    "unit and layer (Parquet/CSV path or table:NAME)."),
    events: list[str] = typer.Option(..., "--events", help="Events table (repeatable)."),
    metrics: Path = typer.Option(..., "--metrics", help="Metrics TOML file (as for "
                                 "`recscope experiment analyze`)."),
    json_out: JsonOut = None,
    html_out: HtmlOut = None,
    layer: str = typer.Option("layer", "--layer", help="Column naming each row's layer "
                              "(one layer randomises one component)."),
    component: list[str] | None = typer.Option(None, "--component", help="Component layers "
                                               "to attribute to, in order (default: all)."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb or spark."),
    database: str | None = typer.Option(None, "--database",
                                        help="DuckDB database file for table:NAME sources."),
    n_boot: int = typer.Option(4000, "--bootstrap", help="Bootstrap draws for share "
                               "intervals (100 to 1,000,000)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap (>= 0)."),
    show_sql: bool = typer.Option(False, "--show-sql", help="Print the SQL that runs."),
    tracking: Tracking = None,
) -> None:
    """Split a 2^K factorial experiment's effect into Shapley shares and interactions.

    Per metric: the total effect, each component's Shapley value and share with their
    intervals, and the interaction terms (see docs/attribution.md).

    Example: recscope attribute --assignments sim/assignments.parquet --events
    sim/events.parquet --metrics sim/metrics.toml --component retriever --component ranker
    --json attribution.json
    """
    from recscope.attribution import attribute as run_attribution
    from recscope.attribution.analysis import MAX_BOOT
    from recscope.experiments.engines import make_engine
    from recscope.experiments.metrics import load_metrics
    from recscope.tracking import track

    if not 100 <= n_boot <= MAX_BOOT:
        raise ConfigError(f"must be between 100 and {MAX_BOOT:,}, got {n_boot}",
                          key="--bootstrap")
    if seed < 0:
        raise ConfigError(f"must be >= 0, got {seed}", key="--seed")
    check_engine(engine, database)
    check_metrics_file(metrics)
    check_outputs(json_out, html_out, tracking=tracking)
    config = load_metrics(metrics)
    with progress() as bar:
        task = bar.add_task(f"attributing on {engine}", total=1)
        result = run_attribution(
            assignments, events, config, layer=layer, components=component or None,
            engine=make_engine(engine, database=database), n_boot=n_boot, seed=seed,
            show_sql=print_sql if show_sql else None)
        bar.update(task, advance=1)
    console.print(result.rich_table())
    inputs = experiment_inputs(assignments, events)
    with track("attribute", config={**config.to_dict(), "layer": layer,
                                    "components": component or [], "bootstrap": n_boot,
                                    "seed": seed}, inputs=inputs, store=tracking) as run:
        run.log_metrics({f"{e.metric}.{e.extra['term']}.share": e.extra["share"]
                         for e in result.estimates if e.extra["role"] == "shapley"})
        write_outputs(result, json_out, html_out, run=run, what="attribution")
