"""``recscope history ...``: build, show, simulate, predict from and validate the history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from recscope.cli.common import Force, JsonOut, Tracking, check_outputs, console, progress

app = typer.Typer(help="Learn from past candidates and experiments: the history store, "
                  "offline->online prediction with triage, informed priors, shortcuts.",
                  no_args_is_help=True)

HistoryFile = typer.Option(..., "--history", metavar="FILE",
                           help="History Parquet file (from 'history build' or 'simulate').")


@app.command()
def build(
    out: Path = typer.Option(..., "--out", metavar="FILE", help="History Parquet to write."),
    tracking: Tracking = None,
    results: list[Path] = typer.Option([], "--results", metavar="PATH",
                                       help="Result files or folders (repeatable): candidate "
                                       "records, or candidate.json folders with scorecards."),
) -> None:
    """Build the history table from an MLflow store and result files (DuckDB).

    Example: recscope history build --tracking mlruns/ --results corpus/candidates
    --out history.parquet
    """
    from recscope.history.store import build_history, check_history
    from recscope.io import write_parquet

    check_outputs(out, track=False)
    if tracking is None and not results:
        raise typer.BadParameter("give --tracking, --results or both", param_hint="--tracking")
    table = build_history(tracking=tracking, results=results)
    check_history(table, str(out), need_online=False)
    write_parquet(out, table)
    console.print(f"history of {table.num_rows} candidates written to {out}",
                  highlight=False, markup=False)


@app.command()
def show(
    history: Path = typer.Argument(..., metavar="HISTORY", help="History Parquet file."),
    sql: str | None = typer.Option(None, "--sql", help="SQL over the view 'history' "
                                   "(DuckDB), e.g. \"SELECT family, COUNT(*) FROM history "
                                   "GROUP BY 1\"."),
    limit: int = typer.Option(50, "--limit", help="Rows to print at most."),
) -> None:
    """Per family: candidates, launches and mean signals (or the result of --sql).

    Example: recscope history show history.parquet --sql "SELECT family, COUNT(*) FROM
    history GROUP BY 1"
    """
    from recscope.history.store import read_history, summary
    from recscope.report.tables import rich_table

    table = read_history(history, need_online=False)
    res = summary(table, sql)
    rows = res.slice(0, limit).to_pylist()
    console.print(f"{history}: {table.num_rows} candidates"
                  + (f"; {res.num_rows} rows, the first {limit} shown"
                     if res.num_rows > limit else ""),
                  soft_wrap=True, highlight=False, markup=False)
    console.print(rich_table(rows))


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", metavar="FOLDER", help="Output folder."),
    n: int = typer.Option(200, "--n", help="Candidates to simulate."),
    seed: int = typer.Option(0, "--seed", help="World and candidate seed."),
    scale: str = typer.Option("default", "--scale", help="default (2,000 users, 14-day "
                              "experiments) or tiny (600 users, 4 days; for tests)."),
    force: Force = False,
    tracking: Tracking = None,
) -> None:
    """Simulate a history of candidate stacks on the built-in world: offline benchmark,
    OPE, replay, online readout and truth for each; writes candidates/*.json,
    history.parquet and corpus.json (and one MLflow run per candidate with --tracking).

    Example: recscope history simulate --n 200 --out corpus/
    """
    from recscope.history.corpus import CorpusConfig, simulate_corpus
    from recscope.history.store import log_candidates, record_to_row, rows_to_table
    from recscope.io import atomic_dir, write_json, write_parquet
    from recscope.tracking import track

    if scale not in ("default", "tiny"):
        raise typer.BadParameter("expected default or tiny", param_hint="--scale")
    check_outputs(folder=out, force=force, tracking=tracking, track=tracking is not None)
    cfg = CorpusConfig(n=n, seed=seed) if scale == "default" else CorpusConfig.tiny(n, seed)
    with progress() as bar:
        tasks: dict[str, Any] = {}

        def tick(stage: str, i: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=i)

        recs, meta = simulate_corpus(cfg, tick)
    table = rows_to_table([record_to_row(r) for r in recs])
    with atomic_dir(out, force=force) as tmp:
        (tmp / "candidates").mkdir()
        for r in recs:
            write_json(tmp / "candidates" / f"{r['candidate_id']}.json",
                       {"kind": "history_candidate", **r})
        write_parquet(tmp / "history.parquet", table)
        write_json(tmp / "corpus.json", meta)
    if tracking is not None:
        with track("history.simulate", config=meta["config"], store=tracking):
            log_candidates([{"kind": "history_candidate", **r} for r in recs], tracking)
    t = meta["timings"]
    console.print(f"{len(recs)} candidates in {t['prepare_s'] + t['candidates_s']:.1f} s "
                  f"({t['per_candidate_s']:.2f} s each after {t['prepare_s']:.1f} s of "
                  f"shared set-up) written to {out}", highlight=False, markup=False)


def _candidate_row(path: Path) -> dict[str, Any]:
    """A history row from a candidate record JSON or a candidate folder."""
    from recscope.errors import DataValidationError
    from recscope.history.store import record_to_row, records_from_results

    recs = records_from_results([path])
    if not recs:
        raise DataValidationError("no candidate record here (a JSON with kind "
                                  "'history_candidate', or a folder with candidate.json)",
                                  file=str(path))
    return record_to_row(recs[0])


@app.command()
def predict(
    candidate: Path = typer.Argument(..., metavar="CANDIDATE_DIR_OR_JSON",
                                     help="Candidate record JSON or candidate folder."),
    history: Path = HistoryFile,
    metric: str = typer.Option("clicks", "--metric", help="Online metric to predict."),
    model: str = typer.Option("ridge", "--model", help="ridge (default; the better of the "
                              "two on held-out families) or gbm."),
    alpha: float = typer.Option(0.1, "--alpha", help="Interval miscoverage (0.1: 90%)."),
    cost: float = typer.Option(0.01, "--cost", help="Cost of an experiment in units of the "
                               "relative effect (0.01 = 1%)."),
    json_out: JsonOut = None,
) -> None:
    """Predict a candidate's online effect with a conformal interval and triage it.

    Example: recscope history predict corpus/candidates/c00-0007.json
    --history corpus/history.parquet
    """
    from recscope.history.predict import fit_predictor, predict_candidate
    from recscope.history.store import read_history

    check_outputs(json_out, track=False)
    if not 0 < alpha < 1:
        raise typer.BadParameter("must be in (0, 1)", param_hint="--alpha")
    table = read_history(history)
    row = _candidate_row(candidate)
    pred = fit_predictor(table, metric=metric, kind=model, alpha=alpha)  # type: ignore[arg-type]
    res = predict_candidate(pred, row, cost=cost, file=str(candidate))
    console.print(res.rich_table())
    if json_out is not None:
        from recscope.io import write_text

        write_text(json_out, res.to_json() + "\n")


@app.command()
def priors(
    history: Path = typer.Argument(..., metavar="HISTORY", help="History Parquet file."),
) -> None:
    """The empirical-Bayes prior of every metric (log scale, family centres, shrinkage
    weight by cross-family SURE).

    Example: recscope history priors corpus/history.parquet
    """
    from recscope.history.priors import fit_priors
    from recscope.history.store import read_history
    from recscope.report.tables import rich_table

    table = read_history(history)
    fitted = fit_priors(table, source=str(history))
    console.print(rich_table([p.to_dict() for p in fitted.values()],
                             title="Priors per metric (docs/history.md, Informed priors)"))
    for p in fitted.values():
        console.print(p.describe(), highlight=False, markup=False)


@app.command()
def validate(
    history: Path = typer.Argument(..., metavar="HISTORY", help="History Parquet file "
                                   "(a simulated corpus: it needs the truth)."),
    asos: Path | None = typer.Option(None, "--asos", metavar="FILE", help="ASOS Digital "
                                     "Experiments Parquet/CSV for the priors and shortcuts."),
    cost: float = typer.Option(0.01, "--cost", help="Cost of an experiment (relative effect)."),
    json_out: JsonOut = None,
) -> None:
    """The validation table of docs/history.md: predictor on held-out families, priors,
    early stopping.

    Example: recscope history validate corpus/history.parquet --asos
    ../shared/data/asos-digital-experiments/asos_digital_experiments_dataset.parquet
    """
    from recscope.history.store import read_history
    from recscope.history.validation import print_validation, run_validation

    check_outputs(json_out, track=False)
    table = read_history(history)
    res = run_validation(table, asos=asos, cost=cost, file=str(history))
    print_validation(res, console)
    if json_out is not None:
        from recscope.io import write_json

        write_json(json_out, res)
