"""``recscope experiment ...`` commands (analyze, power)."""

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


@app.command()
def power(
    units: str = typer.Option(..., "--units", help="Historical units table (unit column and "
                              "the metrics' covariates): Parquet/CSV path or table:NAME."),
    events: list[str] = typer.Option(..., "--events", help="Events table (repeatable)."),
    metrics: Path = typer.Option(..., "--metrics", help="Metrics TOML file (as for analyze)."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb or spark."),
    database: str | None = typer.Option(None, "--database",
                                        help="DuckDB database file for table:NAME sources."),
    history_variant: str | None = typer.Option(
        None, "--history-variant", help="Use only the units whose variant column (from the "
        "metrics file) has this value, e.g. a past experiment's control."),
    alpha: float | None = typer.Option(None, "--alpha", help="Two-sided level of the whole "
                                       "family (default: the metrics file's, 0.05)."),
    power_target: float = typer.Option(0.8, "--power", help="Target power."),
    variants: int = typer.Option(2, "--variants", help="Arms including the control; with "
                                 "more than 2, alpha is split over the comparisons."),
    treatment_share: float | None = typer.Option(
        None, "--treatment-share", help="Share of units in all treatment arms together "
        "(default: equal arms)."),
    units_per_day: float | None = typer.Option(None, "--units-per-day",
                                               help="New units entering the experiment per "
                                               "day."),
    days: list[float] | None = typer.Option(None, "--days", help="Duration to give the MDE "
                                            "for (repeatable; needs --units-per-day; default "
                                            "7 14 21 28)."),
    mde: list[float] | None = typer.Option(None, "--mde", help="Relative effect to size the "
                                           "experiment for, 0.02 = 2% (repeatable)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result as JSON."),
    html_out: Path | None = typer.Option(None, "--html", help="Write the result as HTML."),
    show_sql: bool = typer.Option(False, "--show-sql", help="Print the SQL that runs."),
    out_dir: Path = typer.Option(Path("recscope-out"), "--out-dir",
                                 help="Folder of the local tracking store."),
) -> None:
    """Plan an experiment from historical data: per metric, the minimum detectable effect
    and the sample size for given effects, with and without CUPED."""
    from recscope.experiments.design import Design, log_metrics, power_analysis
    from recscope.experiments.engines import make_engine
    from recscope.experiments.metrics import load_config
    from recscope.tracking import track

    config = load_config(metrics)
    design = Design(alpha=alpha, power=power_target, arms=variants,
                    treatment_share=treatment_share, units_per_day=units_per_day,
                    days=tuple(days or ()), mde=tuple(mde or ()))
    inputs = experiment_inputs(units, events)
    with track("experiment.power", config={**config.to_dict(), "design": vars(design),
                                           "history_variant": history_variant},
               inputs=inputs, out_dir=out_dir) as run:
        with progress() as bar:
            task = bar.add_task(f"planning on {engine}", total=1)
            eng = make_engine(engine, database=database)
            result = power_analysis(units, events, config, design, engine=eng,
                                    only_variant=history_variant,
                                    show_sql=print_sql if show_sql else None)
            bar.update(task, advance=1)
        console.print(result.rich_table())
        run.log_metrics(log_metrics(result))
        for path in (json_out, html_out):
            if path is not None:
                result.save(path)
                run.log_artifact(path)
                console.print(f"power analysis written to {path}")
