"""``recscope experiment ...`` commands (analyze)."""

from __future__ import annotations

from pathlib import Path

import typer

from recscope.cli.common import console, experiment_inputs, print_sql, progress

app = typer.Typer(help="Analyse online experiments (warehouse-native, on DuckDB or Spark).",
                  no_args_is_help=True)


@app.command()
def analyze(
    assignments: str = typer.Option(..., "--assignments", help="Assignment table: Parquet/CSV "
                                    "path, or table:NAME of the engine."),
    events: list[str] = typer.Option(..., "--events", help="Events table (repeatable)."),
    metrics: Path = typer.Option(..., "--metrics", help="Metrics TOML file."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb or spark."),
    database: str | None = typer.Option(None, "--database",
                                        help="DuckDB database file for table:NAME sources."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the scorecard as JSON."),
    html_out: Path | None = typer.Option(None, "--html", help="Write the scorecard as HTML."),
    show_sql: bool = typer.Option(False, "--show-sql", help="Print the SQL that runs."),
    out_dir: Path = typer.Option(Path("recscope-out"), "--out-dir",
                                 help="Folder of the local tracking store."),
) -> None:
    """Compare every treatment with the control on every metric; print the scorecard."""
    from recscope.experiments.analysis import analyze as run_analysis
    from recscope.experiments.engines import make_engine
    from recscope.experiments.metrics import load_config
    from recscope.tracking import track

    config = load_config(metrics)
    inputs = experiment_inputs(assignments, events)

    with track("experiment.analyze", config=config.to_dict(), inputs=inputs,
               out_dir=out_dir) as run:
        with progress() as bar:
            task = bar.add_task(f"analysing on {engine}", total=1)
            eng = make_engine(engine, database=database)
            card = run_analysis(assignments, events, config, engine=eng,
                                show_sql=print_sql if show_sql else None)
            bar.update(task, advance=1)
        console.print(card.rich_table())
        run.log_metrics({"srm_p_value": card.srm["p_value"],
                         **{f"{r['metric']}.{r['variant']}.effect": r["effect"]
                            for r in card.results},
                         **{f"{r['metric']}.{r['variant']}.p_value": r["p_value"]
                            for r in card.results}})
        for path in (json_out, html_out):
            if path is not None:
                card.save(path)
                run.log_artifact(path)
                console.print(f"scorecard written to {path}")
