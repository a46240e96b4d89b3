"""``recscope experiment ...`` commands (analyze, power).

Order in each command: options checked, outputs checked, inputs read and the analysis run
(every data problem is raised here, before any tracking run exists), then the run is
recorded and the outputs written all or none.
"""

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
from recscope.errors import ConfigError

app = typer.Typer(help="Analyse online experiments (warehouse-native, on DuckDB or Spark).",
                  no_args_is_help=True)

ENGINES = ("duckdb", "spark")


def check_engine(engine: str, database: str | None) -> None:
    """``--engine`` is duckdb or spark; ``--database`` goes with duckdb only."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r} (expected duckdb or spark)",
                          key="--engine")
    if database is not None and engine != "duckdb":
        raise ConfigError("--database applies to the duckdb engine only", key="--database")
    if database is not None and not Path(database).is_file():
        raise ConfigError("database file not found", key="--database", file=database)


def check_metrics_file(metrics: Path) -> None:
    """The metrics file exists and is a file (one line naming it otherwise)."""
    if not metrics.exists():
        raise ConfigError("file not found", key="--metrics", file=str(metrics))
    if metrics.is_dir():
        raise ConfigError("is a folder; expected a metrics TOML file", key="--metrics",
                          file=str(metrics))


@app.command()
def analyze(
    assignments: str = typer.Option(..., "--assignments", help="Assignment table: Parquet/CSV "
                                    "path, or table:NAME of the engine."),
    events: list[str] = typer.Option(..., "--events", help="Events table (repeatable)."),
    metrics: Path = typer.Option(..., "--metrics", help="Metrics TOML file."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb or spark."),
    database: str | None = typer.Option(None, "--database",
                                        help="DuckDB database file for table:NAME sources."),
    json_out: JsonOut = None,
    html_out: HtmlOut = None,
    show_sql: bool = typer.Option(False, "--show-sql", help="Print the SQL that runs."),
    tracking: Tracking = None,
    prior: Path | None = typer.Option(
        None, "--prior", metavar="HISTORY", help="History Parquet (recscope history build / "
        "simulate): also report empirical-Bayes shrunken effects and P(effect > 0) per "
        "metric, with a normal prior fitted on the history's readouts of that metric."),
    prior_family: str | None = typer.Option(
        None, "--prior-family", metavar="FAMILY", help="With --prior: the change family "
        "(the history's 'family' column) of this experiment, to shrink toward that "
        "family's centre; an unknown family gets the metric-level prior."),
    long_run: list[Path] = typer.Option(
        [], "--long-run", metavar="MODEL_DIR", help="Surrogate model (recscope longrun fit; "
        "repeatable): add each metric's projected long-run effect and interval."),
) -> None:
    """Compare every treatment with the control on every metric; print the scorecard.

    Example: recscope experiment analyze --assignments sim/assignments.parquet
    --events sim/events.parquet --metrics sim/metrics.toml --json card.json --html card.html
    """
    from recscope.experiments.analysis import analyze as run_analysis
    from recscope.experiments.engines import make_engine
    from recscope.experiments.metrics import load_metrics
    from recscope.tracking import track

    check_engine(engine, database)
    check_metrics_file(metrics)
    check_outputs(json_out, html_out, tracking=tracking)
    config = load_metrics(metrics)
    priors = None
    if prior is not None:  # before any work: a bad history or other metrics -> exit 2
        from recscope.history import check_prior, prior_from_history

        priors = prior_from_history(str(prior))
        check_prior(priors, [m.name for m in config.metrics], file=str(prior))
    if long_run:  # before any work: a missing or unreadable model -> exit 2
        from recscope.experiments.surrogate import load_model

        for model_dir in long_run:
            load_model(model_dir)
    with progress() as bar:
        task = bar.add_task(f"analysing on {engine}", total=1)
        card = run_analysis(assignments, events, config,
                            engine=make_engine(engine, database=database),
                            show_sql=print_sql if show_sql else None)
        bar.update(task, advance=1)
    if long_run:
        from recscope.cli.longrun import project_card

        card = project_card(card, long_run, assignments, events,
                            make_engine(engine, database=database))
    console.print(card.rich_table())
    if priors is not None:  # before the outputs are written
        from recscope.history import apply_prior

        console.print(apply_prior(card, priors, file=str(prior),
                                  family=prior_family).rich_table())
    inputs = experiment_inputs(assignments, events)
    with track("experiment.analyze", config=config.to_dict(), inputs=inputs,
               store=tracking) as run:
        run.log_metrics({"srm_p_value": card.srm["p_value"],
                         **{f"{e.metric}.{e.extra['variant']}.estimate": e.estimate
                            for e in card.results},
                         **{f"{e.metric}.{e.extra['variant']}.p_value": e.p_value
                            for e in card.results}})
        write_outputs(card, json_out, html_out, run=run, what="scorecard")


_DESIGN_OPTIONS = {"alpha": "--alpha", "power": "--power", "variants": "--variants",
                   "treatment_share": "--treatment-share", "units_per_day": "--units-per-day",
                   "days": "--days", "mde": "--mde"}


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
    json_out: JsonOut = None,
    html_out: HtmlOut = None,
    show_sql: bool = typer.Option(False, "--show-sql", help="Print the SQL that runs."),
    tracking: Tracking = None,
) -> None:
    """Plan an experiment from historical data: per metric, the minimum detectable effect
    and the sample size for given effects, with and without CUPED.

    Example: recscope experiment power --units history.parquet --events events.parquet
    --metrics metrics.toml --units-per-day 20000 --mde 0.02 --json plan.json
    """
    from recscope.experiments.design import ExperimentDesign, log_metrics, power_analysis
    from recscope.experiments.engines import make_engine
    from recscope.experiments.metrics import load_metrics
    from recscope.tracking import track

    check_engine(engine, database)
    check_metrics_file(metrics)
    try:
        design = ExperimentDesign(alpha=alpha, power=power_target, arms=variants,
                                  treatment_share=treatment_share,
                                  units_per_day=units_per_day, days=tuple(days or ()),
                                  mde=tuple(mde or ()))
    except ConfigError as exc:
        raise ConfigError(exc.problem, key=_DESIGN_OPTIONS.get(exc.key or "", exc.key)
                          ) from None
    check_outputs(json_out, html_out, tracking=tracking)
    config = load_metrics(metrics)
    with progress() as bar:
        task = bar.add_task(f"planning on {engine}", total=1)
        result = power_analysis(units, events, config, design,
                                engine=make_engine(engine, database=database),
                                only_variant=history_variant,
                                show_sql=print_sql if show_sql else None)
        bar.update(task, advance=1)
    console.print(result.rich_table())
    inputs = experiment_inputs(units, events)
    with track("experiment.power", config={**config.to_dict(), "design": vars(design),
                                           "history_variant": history_variant},
               inputs=inputs, store=tracking) as run:
        run.log_metrics(log_metrics(result))
        write_outputs(result, json_out, html_out, run=run, what="power analysis")


from recscope.cli.design import design_compare  # noqa: E402  (issue 14: the design advisor)

app.command("design-compare")(design_compare)
