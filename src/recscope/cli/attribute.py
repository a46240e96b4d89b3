"""``recscope attribute``: split a factorial experiment's effect over its components."""

from __future__ import annotations

from pathlib import Path

import typer

from recscope.cli.common import console, experiment_inputs, print_sql, progress


def attribute(
    assignments: str = typer.Option(..., "--assignments", help="Assignment table, one row per "
                                    "unit and layer (Parquet/CSV path or table:NAME)."),
    events: list[str] = typer.Option(..., "--events", help="Events table (repeatable)."),
    metrics: Path = typer.Option(..., "--metrics", help="Metrics TOML file (as for "
                                 "`recscope experiment analyze`)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result as JSON."),
    html_out: Path | None = typer.Option(None, "--html", help="Write the result as HTML."),
    layer: str = typer.Option("layer", "--layer", help="Column naming each row's layer "
                              "(one layer randomises one component)."),
    component: list[str] | None = typer.Option(None, "--component", help="Component layers "
                                               "to attribute to, in order (default: all)."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb or spark."),
    database: str | None = typer.Option(None, "--database",
                                        help="DuckDB database file for table:NAME sources."),
    n_boot: int = typer.Option(4000, "--bootstrap", help="Bootstrap draws for share intervals."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    show_sql: bool = typer.Option(False, "--show-sql", help="Print the SQL that runs."),
    out_dir: Path = typer.Option(Path("recscope-out"), "--out-dir",
                                 help="Folder of the local tracking store."),
) -> None:
    """Split a 2^K factorial experiment's effect into Shapley shares and interactions.

    Per metric: the total effect, each component's Shapley value and share with their
    intervals, and the interaction terms (see docs/attribution.md).
    """
    from recscope.attribution import attribute as run_attribution
    from recscope.experiments.engines import make_engine
    from recscope.experiments.metrics import load_config
    from recscope.tracking import track

    config = load_config(metrics)
    inputs = experiment_inputs(assignments, events)
    with track("attribute", config={**config.to_dict(), "layer": layer,
                                    "components": component or [], "bootstrap": n_boot,
                                    "seed": seed}, inputs=inputs, out_dir=out_dir) as run:
        with progress() as bar:
            task = bar.add_task(f"attributing on {engine}", total=1)
            result = run_attribution(
                assignments, events, config, layer=layer, components=component or None,
                engine=make_engine(engine, database=database), n_boot=n_boot, seed=seed,
                show_sql=print_sql if show_sql else None)
            bar.update(task, advance=1)
        console.print(result.rich_table())
        run.log_metrics({f"{m}.{c}.share": v["share"]
                         for m, res in result.metrics.items()
                         for c, v in res["components"].items()})
        for path in (json_out, html_out):
            if path is not None:
                result.save(path)
                run.log_artifact(path)
                console.print(f"attribution written to {path}")
