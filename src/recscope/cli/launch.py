"""``recscope launch``: metric-tree decomposition, launch decisions, the launch report and
the portfolio view (docs/launch.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from recscope.cli.common import check_outputs, console, write_outputs

app = typer.Typer(help="Decide launches: metric trees, ship/iterate/stop with reasons, the "
                  "leadership report, the portfolio of shipped launches.",
                  no_args_is_help=True)

_EXPERIMENT = typer.Option(..., "--experiment", help="Folder with assignments.parquet, "
                           "events.parquet and metrics.toml (as `recscope simulate --out` "
                           "writes), or with scorecard.json (+ optional trees.json).")
_METRICS = typer.Option(None, "--metrics", help="Metrics TOML to use instead of the "
                        "experiment folder's (e.g. one adding metric trees).")
_OFFLINE = typer.Option(None, "--offline", help="Offline benchmark JSON (`recscope evaluate "
                        "--json`: an evaluation or a paired comparison).")
_OPE = typer.Option(None, "--ope", help="Off-policy estimate JSON (`recscope ope --json`).")
_ATTR = typer.Option(None, "--attribution", help="Attribution JSON (`recscope attribute "
                     "--json`).")
_LONG = typer.Option(None, "--long-run", help="Long-run projection JSON (effect rows; "
                     "rel_effect used when present).")


def _decide(launch: Path, experiment: Path, metrics: Path | None, offline: Path | None,
            ope: Path | None, attribution: Path | None, long_run: Path | None,
            engine: str) -> object:
    from recscope.launch import decide, load_experiment, load_launch
    from recscope.launch.inputs import (
        attribution_effects,
        long_run_effects,
        offline_effects,
        ope_effects,
    )

    cfg = load_launch(launch)
    off = offline_effects(offline) if offline else None
    op = ope_effects(ope) if ope else None
    attr = attribution_effects(attribution) if attribution else None
    lr = long_run_effects(long_run) if long_run else None
    exp = load_experiment(experiment, trees=cfg.tree, metrics=metrics, engine=engine)
    return decide(cfg, exp, offline=off, offline_source=str(offline), ope=op,
                  ope_source=str(ope), attribution=attr, long_run=lr,
                  long_run_source=str(long_run))


@app.command("decide")
def decide_cmd(
    launch: Path = typer.Argument(..., help="launch.toml: primary metrics, guardrails with "
                                  "margins, minimum practical effect, gates."),
    experiment: Path = _EXPERIMENT,
    metrics: Path | None = _METRICS,
    offline: Path | None = _OFFLINE,
    ope: Path | None = _OPE,
    attribution: Path | None = _ATTR,
    long_run: Path | None = _LONG,
    json_out: Path | None = typer.Option(None, "--json", help="Write the decision as JSON."),
    html_out: Path | None = typer.Option(None, "--html", help="Write the launch report."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb or spark."),
) -> None:
    """Decide ship / iterate / stop, each reason with the number that caused it.

    Exit code 0 whatever the decision (read it from the output or the JSON's ``decision``).

    Example: recscope launch decide examples/launch.toml --experiment out/ab --metrics
    examples/launch_metrics.toml --json out/decision.json
    """
    check_outputs(json_out, html_out, track=False)
    dec = _decide(launch, experiment, metrics, offline, ope, attribution, long_run, engine)
    _print(dec)
    write_outputs(dec, json_out, html_out, what="launch decision")  # type: ignore[arg-type]


@app.command("report")
def report_cmd(
    source: Path = typer.Argument(..., help="A decision JSON (`launch decide --json`) or a "
                                  "launch.toml (then --experiment is needed)."),
    out: Path = typer.Option(..., "--out", help="The HTML page to write."),
    experiment: Path | None = typer.Option(None, "--experiment", help="As for `launch "
                                           "decide` (with a launch.toml)."),
    metrics: Path | None = _METRICS,
    offline: Path | None = _OFFLINE,
    ope: Path | None = _OPE,
    attribution: Path | None = _ATTR,
    long_run: Path | None = _LONG,
    engine: str = typer.Option("duckdb", "--engine", help="duckdb or spark."),
) -> None:
    """Write the one-page launch report for a leadership reader (self-contained HTML).

    Example: recscope launch report out/decision.json --out out/launch.html
    """
    from recscope.errors import ConfigError
    from recscope.launch import LaunchDecision

    check_outputs(out, track=False)
    if source.suffix.lower() == ".json":
        dec = LaunchDecision.load(source)
    else:
        if experiment is None:
            raise ConfigError("a launch.toml needs --experiment", file=str(source))
        dec = _decide(source, experiment, metrics, offline, ope, attribution, long_run,
                      engine)  # type: ignore[assignment]
    _print(dec)
    write_outputs(dec, None, out, what="launch report")


@app.command("decompose")
def decompose_cmd(
    assignments: str = typer.Option(..., "--assignments", help="Assignment table."),
    events: list[str] = typer.Option(..., "--events", help="Events table (repeatable)."),
    metrics: Path = typer.Option(..., "--metrics", help="Metrics TOML with [trees.NAME]."),
    tree: list[str] | None = typer.Option(None, "--tree", help="Trees to decompose "
                                          "(default: all)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result as JSON."),
    html_out: Path | None = typer.Option(None, "--html", help="Write the result as HTML."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb or spark."),
) -> None:
    """Decompose each metric tree's parent effect into its children's contributions.

    Example: recscope launch decompose --assignments out/ab/assignments.parquet --events
    out/ab/events.parquet --metrics examples/launch_metrics.toml --json out/trees.json
    """
    from recscope.errors import ConfigError
    from recscope.experiments.engines import make_engine
    from recscope.experiments.trees import decompose_experiment, load_metrics_with_trees

    check_outputs(json_out, html_out, track=False)
    config, specs = load_metrics_with_trees(metrics)
    if not specs:
        raise ConfigError("no [trees.NAME] table", key="trees", file=str(metrics))
    for t in tree or []:
        if t not in specs:
            raise ConfigError(f"tree {t!r} is not defined (has: {', '.join(specs)})",
                              key="trees", file=str(metrics))
    chosen = {t: specs[t] for t in tree} if tree else specs
    ev: list[str] | str = events if len(events) > 1 else events[0]
    result = decompose_experiment(assignments, ev, config, chosen,
                                  engine=make_engine(engine))
    console.print(result.rich_table())
    write_outputs(result, json_out, html_out, what="decomposition")  # type: ignore[arg-type]


@app.command("portfolio")
def portfolio_cmd(
    decisions: list[Path] = typer.Argument(..., help="Decision JSON files."),
    metric: str | None = typer.Option(None, "--metric", help="Metric to add up (default: "
                                      "the first launch's primary metric)."),
    all_launches: bool = typer.Option(False, "--all", help="Count every decided launch, "
                                      "not only the shipped ones."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result as JSON."),
    html_out: Path | None = typer.Option(None, "--html", help="Write the result as HTML."),
) -> None:
    """Cumulative estimated impact of the shipped launches, by team and by component.

    Example: recscope launch portfolio out/decision.json other/decision.json --html
    out/portfolio.html
    """
    from recscope.launch import load_decisions, portfolio

    check_outputs(json_out, html_out, track=False)
    result = portfolio(load_decisions(decisions), metric=metric,
                       shipped_only=not all_launches, sources=[str(p) for p in decisions])
    console.print(result.rich_table())
    write_outputs(result, json_out, html_out, what="portfolio")  # type: ignore[arg-type]


def _print(dec: object) -> None:
    from rich.markup import escape

    from recscope.launch import LaunchDecision

    assert isinstance(dec, LaunchDecision)
    colour = {"ship": "green", "iterate": "yellow", "stop": "red"}[dec.decision]
    console.print(f"[bold {colour}]{dec.decision.upper()}[/] {escape(dec.name)}: "
                  f"{escape(dec.variant)} vs {escape(dec.control)}")
    reasons = dec.reasons()
    marks = {"ship": "[green]pass[/]", "iterate": "[yellow]iterate[/]", "stop": "[red]stop[/]"}
    for c in [*reasons, *(c for c in dec.checks if c not in reasons)]:
        console.print(f"  {marks.get(c.extra['outcome'], 'info')}  {escape(c.extra['text'])} "
                      f"[dim]({escape(c.extra['statistic'])} = {c.extra['value']:.4g}; "
                      f"{escape(str(c.extra['source']))})[/]", soft_wrap=True)
