"""``recscope longrun ...``: long-run effects from short experiments.

``fit`` fits a surrogate index on a history of experiments whose folders hold the
two-week data (``assignments.parquet``, ``events.parquet``) and the per-unit long-run
outcome (``outcomes.parquet``); ``recscope experiment analyze --long-run MODEL_DIR``
applies it. ``simulate-history`` writes such a history from the simulator (with held-out
experiments and their long-run truth). ``novelty`` reads an experiment's effect by day
since first exposure and projects the settled effect; ``engagement`` reweights an early
readout to the population's engagement strata.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import typer

from recscope.cli.common import Force, HtmlOut, JsonOut, check_outputs, console, progress
from recscope.errors import ConfigError, DataValidationError

app = typer.Typer(help="Long-run effects: surrogate index, novelty, engagement bias.",
                  no_args_is_help=True)

EXPERIMENT_FILES = ("assignments.parquet", "events.parquet")
OUTCOMES = "outcomes.parquet"
MODEL_TOML = "surrogates.toml"


def history_dirs(paths: list[Path]) -> list[Path]:
    """Experiment folders: each path itself, or (a folder of experiments) its
    sub-folders holding ``outcomes.parquet``, in name order."""
    out: list[Path] = []
    for p in paths:
        if not p.is_dir():
            raise ConfigError("not a folder", key="--history", file=str(p))
        if (p / "assignments.parquet").exists():
            out.append(p)
            continue
        subs = sorted(s for s in p.iterdir() if s.is_dir() and (s / OUTCOMES).exists())
        if not subs:
            raise ConfigError(f"neither an experiment folder (assignments.parquet) nor a "
                              f"folder of experiments with {OUTCOMES}", key="--history",
                              file=str(p))
        out.extend(subs)
    for d in out:
        for f in (*EXPERIMENT_FILES, OUTCOMES):
            if not (d / f).is_file():
                what = ("the long-run outcome is missing" if f == OUTCOMES else "missing")
                raise DataValidationError(f"{what} (a history experiment needs "
                                          f"{', '.join((*EXPERIMENT_FILES, OUTCOMES))})",
                                          file=str(d / f))
    return out


def surrogate_features(assignments: Any, events: Any, config: Any, *, name: str,
                       engine: Any = "duckdb") -> Any:
    """:func:`recscope.experiments.surrogate.unit_features`, with a surrogate whose column
    is absent reported against the experiment's events file."""
    from recscope.experiments.surrogate import unit_features

    try:
        return unit_features(assignments, events, config, engine=engine, name=name)
    except ConfigError as exc:
        if "not found in any table" not in exc.problem:
            raise
        ev = events if isinstance(events, str | Path) else name
        raise DataValidationError(f"surrogate {exc.key or ''} of the long-run model: "
                                  f"{exc.problem}", file=str(ev)) from None


@app.command()
def fit(
    history: list[Path] = typer.Option(..., "--history", metavar="DIR",
                                       help="History experiment folder, or a folder of them "
                                       "(repeatable)."),
    short: Path = typer.Option(..., "--short", metavar="METRICS.toml",
                               help="Metrics TOML: every metric is a short-run surrogate."),
    long: str = typer.Option(..., "--long", metavar="METRIC",
                             help="Column of each history's outcomes.parquet to project."),
    out: Path = typer.Option(..., "--out", metavar="MODEL_DIR", help="Model folder."),
    metric: str | None = typer.Option(None, "--metric", help="Scorecard metric whose row "
                                      "shows the projection (default: --long)."),
    ridge: float = typer.Option(0.03, "--ridge", help="Ridge of the experiment-level map, "
                                "per comparison on standardised effects."),
    widen: bool = typer.Option(True, "--widen/--no-widen", help="Intervals with a "
                               "surrogacy error growing with the change's distance from the "
                               "history (fitted on the history's leave-one-out errors); "
                               "projections beyond the history's range are flagged either "
                               "way."),
    force: Force = False,
    json_out: JsonOut = None,
    html_out: HtmlOut = None,
) -> None:
    """Fit a surrogate index: the long-run outcome from the short-run surrogates.

    Example: recscope longrun fit --history hist/ --short hist/surrogates.toml
    --long active_days_long --metric active_days --out model/
    """
    import pyarrow.parquet as pq

    from recscope.experiments.metrics import load_metrics
    from recscope.experiments.surrogate import MODEL_FILE, attach_outcome, fit_surrogate
    from recscope.io import atomic_dir, write_text

    if not short.is_file():
        raise ConfigError("file not found", key="--short", file=str(short))
    if not ridge >= 0:
        raise ConfigError("must be 0 or more", key="--ridge")
    check_outputs(json_out, html_out, folder=out, force=force, track=False)
    config = load_metrics(short)
    dirs = history_dirs(history)
    tables = []
    with progress() as bar:
        task = bar.add_task("reading the history", total=len(dirs))
        for d in dirs:
            f = d / OUTCOMES
            try:
                outcomes = pq.read_table(f)
            except Exception as exc:  # Arrow's message, with the file
                raise DataValidationError(f"cannot read: {exc}", file=str(f)) from None
            t = surrogate_features(str(d / "assignments.parquet"), str(d / "events.parquet"),
                                   config, name=str(d))
            tables.append(attach_outcome(t, outcomes, long, unit=config.unit, file=str(f)))
            bar.update(task, advance=1)
    model = fit_surrogate(tables, long=long, metric=metric, control=config.control,
                          metrics_toml=short.read_text(encoding="utf-8"), ridge=ridge,
                          widen=widen)
    console.print(model.rich_table())
    with atomic_dir(out, force=force) as tmp:
        model.save(tmp / MODEL_FILE)
        write_text(tmp / MODEL_TOML, model.metrics_toml)
    console.print(f"surrogate model written to {out}", highlight=False, markup=False)
    from recscope.cli.common import write_outputs

    write_outputs(model, json_out, html_out, what="surrogate model")


def project_card(card: Any, models: list[Path], assignments: str, events: list[str],
                 engine: Any) -> Any:
    """``card`` with the long-run projections of every model (``--long-run``)."""
    from recscope.experiments.metrics import parse_metrics
    from recscope.experiments.surrogate import add_long_run, load_model

    projections = []
    for m in models:
        model = load_model(m)
        cfg = parse_metrics(tomllib.loads(model.metrics_toml), source=str(m / MODEL_TOML))
        cfg = cfg.replace(unit=card.config.get("unit", cfg.unit),
                          variant=card.config.get("variant", cfg.variant),
                          control=card.config.get("control", cfg.control))
        ev = events if len(events) > 1 else events[0]
        t = surrogate_features(assignments, ev, cfg, name=assignments, engine=engine)
        projections += model.project(t, control=cfg.control)
    return add_long_run(card, projections)


@app.command("simulate-history")
def simulate_history_cmd(
    out: Path = typer.Option(..., "--out", metavar="DIR", help="History folder."),
    experiments: int = typer.Option(60, "--experiments", help="History experiments."),
    held_out: int = typer.Option(30, "--held-out", help="Held-out experiments (with "
                                 "long-run truth)."),
    scale: float = typer.Option(0.5, "--scale", help="World scale (1.0 = 20,000 users)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the changes and assignments."),
    horizon: int = typer.Option(84, "--horizon", help="Days simulated for the long-run "
                                "outcome, read over its last 4 weeks (after day 14)."),
    only: str | None = typer.Option(None, "--only", help="Run only names starting with "
                                    "this prefix (h or x) or a comma list of names."),
    force: Force = False,
) -> None:
    """Simulate a history of varied experiments with their long-run outcomes.

    Example: recscope longrun simulate-history --out hist/ --experiments 60 --held-out 30
    """
    from recscope.sim.long_run_history import HistorySpec, simulate_history

    if horizon < 21:
        raise ConfigError("must be at least 21 days", key="--horizon")
    spec = HistorySpec(scale=scale, seed=seed, history=experiments, held_out=held_out,
                       horizon=horizon, long_window=(max(14, horizon - 28), horizon))
    if out.exists() and not out.is_dir():
        raise ConfigError("is a file; expected a folder", key="--out", file=str(out))
    names = None if only is None else [s.strip() for s in only.split(",") if s.strip()]

    def pick(name: str) -> bool:
        return names is None or any(name == n or (len(n) == 1 and name.startswith(n))
                                    for n in names)

    if not force:
        clash = [p for p in (out.iterdir() if out.is_dir() else []) if p.is_dir()
                 and pick(p.name)]
        if clash:
            raise ConfigError(f"{clash[0].name} exists; use --force to replace it",
                              key="--out", file=str(out))
    with progress() as bar:
        task = bar.add_task("simulating experiments", total=None)

        def prog(_stage: str, i: float, n: float) -> None:
            bar.update(task, completed=i, total=n)

        written = simulate_history(spec, out, force=force, progress=prog, only=pick)
    console.print(f"{len(written)} experiments written to {out}", highlight=False,
                  markup=False)


@app.command()
def novelty(
    assignments: str = typer.Option(..., "--assignments", help="Assignment table (unit_id, "
                                    "variant, first_exposure_ts): Parquet/CSV path."),
    events: str = typer.Option(..., "--events", help="Events table (unit_id, ts, columns)."),
    numerator: str = typer.Option("clicks", "--numerator", help="Events column summed."),
    denominator: str | None = typer.Option("impressions", "--denominator",
                                           help="Ratio denominator column ('' for a mean)."),
    days: int = typer.Option(14, "--days", help="Days since first exposure to read."),
    control: str = typer.Option("control", "--control", help="Control variant (e.g. "
                                "holdout for a long-term holdout)."),
    by: str = typer.Option("day", "--by", help="Index the effect by 'day' or 'session' "
                           "since first exposure (session: the events' --session column)."),
    session: str = typer.Option("session_id", "--session", help="Events column naming "
                                "the session (with --by session)."),
    max_sessions: int = typer.Option(30, "--max-sessions", help="Sessions since first "
                                     "exposure read (with --by session)."),
    scale: str = typer.Option("1", "--interval-scale", metavar="F|PAST", help="Multiply the settled "
                              "effect's interval half-widths by this factor (at least 1), "
                              "or by the factor learnt from a CSV/Parquet file of past "
                              "runs whose settled effect became known (columns settled, "
                              "ci_low, ci_high, truth; at least 19 runs; see "
                              "docs/long_run.md)."),
    json_out: JsonOut = None,
    html_out: HtmlOut = None,
) -> None:
    """Effect by day (or session) since first exposure, trend test, and the settled effect.

    Example: recscope longrun novelty --assignments sim/assignments.parquet
    --events sim/events.parquet --json novelty.json
    """
    from recscope.cli.common import write_outputs
    from recscope.experiments.novelty import daily_effects, project_settled

    if days < 4:
        raise ConfigError("must be at least 4", key="--days")
    if by not in ("day", "session"):
        raise ConfigError(f"must be 'day' or 'session', not {by!r}", key="--by")
    if max_sessions < 4:
        raise ConfigError("must be at least 4", key="--max-sessions")
    factor = _interval_scale(scale)
    check_outputs(json_out, html_out, track=False)
    daily = daily_effects(assignments, events, days=days, numerator=numerator,
                          denominator=denominator or None, control=control, by=by,
                          session=session, max_sessions=max_sessions)
    res = project_settled(daily, scale=factor)
    console.print(res.rich_table())
    write_outputs(res, json_out, html_out, what="novelty readout")


PAST_RUNS = ("settled", "ci_low", "ci_high", "truth")
"""Columns of a past-runs file for ``--interval-scale`` (one row per past experiment:
its settled-effect projection as fitted and the settled effect later observed)."""


def _interval_scale(value: str) -> float:
    """``--interval-scale``: a number (at least 1), or the split-conformal factor learnt
    from a file of past runs (:func:`_learnt_scale`)."""
    try:
        factor = float(value)
    except ValueError:
        return _learnt_scale(value)
    if not (math.isfinite(factor) and factor >= 1.0):
        raise ConfigError(f"must be a number of at least 1 or a file of past runs, not "
                          f"{value!r}", key="--interval-scale")
    return factor


def _learnt_scale(path: str) -> float:
    """The factor :func:`recscope.experiments.novelty.interval_scale` learns from the past
    runs in ``path`` (columns :data:`PAST_RUNS`); a missing column, a missing or
    non-numeric value, or too few runs: one error naming the file."""
    import numpy as np

    from recscope.data.readers import read_table
    from recscope.experiments.novelty import interval_scale

    table = read_table(path)
    cols: list[np.ndarray] = []
    for c in PAST_RUNS:
        if c not in table.column_names:
            raise DataValidationError(f"column {c!r} not found (have: "
                                      f"{', '.join(table.column_names)})", file=path,
                                      column=c)
        try:
            col = table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
        except (TypeError, ValueError):
            raise DataValidationError("not numeric", file=path, column=c) from None
        bad = np.flatnonzero(~np.isfinite(col))
        if bad.size:
            raise DataValidationError("missing or not finite", file=path, column=c,
                                      row=int(bad[0]))
        cols.append(col)
    try:
        factor = interval_scale(*cols)
    except DataValidationError as exc:
        raise DataValidationError(exc.problem, file=path) from None
    if not math.isfinite(factor):
        raise DataValidationError("too many past runs missed with an interval of zero "
                                  "width on the truth's side: no finite factor covers "
                                  "them", file=path)
    return factor


@app.command()
def engagement(
    assignments: str = typer.Option(..., "--assignments", help="Assignment table."),
    events: str = typer.Option(..., "--events", help="Events table."),
    population: str = typer.Option(..., "--population", help="Every user of the population "
                                   "with a pre-period engagement column (Parquet/CSV)."),
    stratum: str = typer.Option(..., "--stratum", help="Engagement column of --population."),
    column: str = typer.Option("sessions", "--column", help="Events column summed per unit."),
    days: int = typer.Option(7, "--days", help="Early units: exposed in the first DAYS."),
    window: int | None = typer.Option(None, "--window", help="Days since exposure summed "
                                      "(default --days)."),
    control: str = typer.Option("control", "--control", help="Control variant."),
    json_out: JsonOut = None,
    html_out: HtmlOut = None,
) -> None:
    """Early readout as is and reweighted to the population's engagement strata.

    Example: recscope longrun engagement --assignments a.parquet --events e.parquet
    --population hist/population.parquet --stratum pre_sessions --days 3 --window 7
    """
    from recscope.cli.common import write_outputs
    from recscope.experiments.engagement import engagement_readout

    if days < 1 or (window is not None and window < 1):
        raise ConfigError("must be at least 1", key="--days" if days < 1 else "--window")
    check_outputs(json_out, html_out, track=False)
    res = engagement_readout(assignments, events, population, stratum=stratum,
                             column=column, days=days, window=window, control=control)
    console.print(res.rich_table())
    write_outputs(res, json_out, html_out, what="engagement readout")
