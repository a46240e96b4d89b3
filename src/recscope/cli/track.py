"""``recscope track DIR --out OUT``: the cumulative effect of launches, from a holdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from recscope.cli.common import (
    Force,
    HtmlOut,
    JsonOut,
    Tracking,
    check_outputs,
    console,
    file_fingerprint,
    print_sql,
    progress,
)
from recscope.errors import ConfigError, DataValidationError


def _launches(path: Path) -> dict[str, Any]:
    """The launches file: ``{"launches": [{day, surface, name?}], "start_day"?, "days"?}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("launches file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the launches file: {exc}", file=str(path)) from None
    if not isinstance(data, dict) or not isinstance(data.get("launches"), list):
        raise ConfigError("expected a JSON object with a 'launches' list", file=str(path))
    for i, x in enumerate(data["launches"]):
        if not isinstance(x, dict) or not isinstance(x.get("day"), int) \
                or not isinstance(x.get("surface"), str):
            raise ConfigError(f"launch {i} needs an integer 'day' and a 'surface' text",
                              file=str(path), key=f"launches[{i}]")
    for k in ("start_day", "days"):
        if k in data and not isinstance(data[k], int):
            raise ConfigError(f"{k} must be an integer", file=str(path), key=k)
    return data


def track(
    inputs: Annotated[Path | None, typer.Argument(
        help="Folder written by `recscope simulate` for a long-run file (assignments.parquet, "
        "events.parquet, launches.json, truth.json); or give the files with the options.",
        show_default=False)] = None,
    assignments: str | None = typer.Option(
        None, "--assignments", help="Assignment table: unit_id, holdout (true for held-out "
        "units) and optionally holdout_<surface> per surface."),
    events: str | None = typer.Option(
        None, "--events", help="Events: unit_id, day, surface and the metric columns."),
    launches: Path | None = typer.Option(
        None, "--launches", help="Launches JSON ({\"launches\": [{\"day\", \"surface\", "
        "\"name\"}]}); windows run from one launch day to the next."),
    truth: Path | None = typer.Option(
        None, "--truth", help="truth.json of a simulated run: add the true effects."),
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="FOLDER", help="Write tracking.json, tracking.html and "
        "series.csv (every look of every series) into FOLDER.")] = None,
    metrics: str = typer.Option("clicks,saves", "--metrics",
                                help="Comma-separated event columns to sum per unit."),
    start_day: int | None = typer.Option(None, "--start-day", help="First tracked day "
                                         "(default: the launches file's, else 0)."),
    end_day: int | None = typer.Option(None, "--end-day", help="Day after the last tracked "
                                       "day (default: the launches file's, else the data's)."),
    pre_days: int = typer.Option(0, "--pre-days", help="CUPED: adjust every series by the "
                                 "unit's sum over this many days before the start (0: off; "
                                 "the simulator writes its warm-up days); with --buckets, "
                                 "from the buckets' pre-period sums."),
    buckets: int = typer.Option(0, "--buckets", help="Warehouse mode: variances from B hash "
                                "buckets of units per arm, one join and one small GROUP BY "
                                "(needs first_day in the assignments); 0: exact per unit."),
    alpha: float = typer.Option(0.05, "--alpha", help="1 - coverage of the intervals."),
    tau: float = typer.Option(0.1, "--tau", help="Mixing scale of the always-valid test "
                              "(standardised effect size)."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb or spark."),
    json_out: JsonOut = None,
    html_out: HtmlOut = None,
    force: Force = False,
    show_sql: bool = typer.Option(False, "--show-sql", help="Print the SQL that runs."),
    tracking: Tracking = None,
) -> None:
    """Track a long-term holdout: the cumulative effect of the launches (exposed − holdout)
    per surface and in total, every week and per launch window, with always-valid
    intervals (valid when looked at every week), and a plot of the effect over time.

    Example: recscope track out/long-run --out out/track
    """
    from recscope.experiments.engines import make_engine
    from recscope.experiments.tracking import Design
    from recscope.experiments.tracking import track as run_track
    from recscope.tracking import track as log_run

    if inputs is not None:
        if not inputs.exists():
            raise ConfigError("input folder not found", file=str(inputs))
        if not inputs.is_dir():
            raise ConfigError("expected the folder of a simulated long run (or use "
                              "--assignments and --events)", file=str(inputs))
        assignments = assignments or str(inputs / "assignments.parquet")
        events = events or str(inputs / "events.parquet")
        if launches is None and (inputs / "launches.json").exists():
            launches = inputs / "launches.json"
        if truth is None and (inputs / "truth.json").exists():
            truth = inputs / "truth.json"
    if assignments is None or events is None:
        raise ConfigError("give a folder, or both --assignments and --events", key="inputs")
    if engine not in ("duckdb", "spark"):
        raise ConfigError(f"unknown engine {engine!r} (expected duckdb or spark)",
                          key="--engine")
    names = tuple(m.strip() for m in metrics.split(",") if m.strip())
    if not names or len(set(names)) != len(names):
        raise ConfigError("expected distinct comma-separated column names", key="--metrics")
    plan = _launches(launches) if launches is not None else {"launches": []}
    truth_rows = None
    if truth is not None:
        try:
            truth_rows = json.loads(truth.read_text(encoding="utf-8"))["values"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError,
                TypeError) as exc:
            raise ConfigError(f"not a long-run truth file ({type(exc).__name__})",
                              file=str(truth)) from None
    files = [] if out is None else [out / "tracking.json", out / "tracking.html",
                                    out / "series.csv"]
    check_outputs(json_out, html_out, folder=out, force=force, tracking=tracking)
    eng = make_engine(engine)
    start = start_day if start_day is not None else int(plan.get("start_day", 0))
    end = end_day if end_day is not None else plan.get("days")
    if end is None:
        end = _last_day(eng, events) + 1
    for i, x in enumerate(plan["launches"]):
        if int(x["day"]) < start:
            raise ConfigError(f"launch {x.get('name', i)!r} (day {x['day']}) is before the "
                              f"holdout starts (day {start})", file=str(launches),
                              key=f"launches[{i}].day")
    try:
        design = Design(start, int(end), metrics=names, launches=tuple(plan["launches"]),
                        alpha=alpha, tau=tau, pre_days=pre_days, buckets=buckets)
    except ConfigError as exc:
        exc.file = str(launches) if launches is not None and exc.key == "launches" else None
        raise ConfigError(exc.problem, key=exc.key, file=exc.file) from None
    with progress() as bar:
        task = bar.add_task(f"tracking on {engine}", total=1)
        result = run_track(assignments, events, design, engine=eng,
                           show_sql=print_sql if show_sql else None, truth=truth_rows)
        bar.update(task, advance=1)
    for i, x in enumerate(plan["launches"]):
        if result.surfaces and x["surface"] not in result.surfaces:
            raise ConfigError(f"launch {x.get('name', i)!r} is on surface {x['surface']!r}, "
                              f"which the events do not have (they have "
                              f"{', '.join(result.surfaces)})", file=str(launches),
                              key=f"launches[{i}].surface")
    console.print(result.rich_table())
    for note in result.notes():
        console.print(f"note: {note}", highlight=False, markup=False)
    ins = {"assignments": file_fingerprint(assignments), "events": file_fingerprint(events)}
    with log_run("track", config={"metrics": list(names), "start_day": start,
                                  "end_day": int(end), "alpha": alpha, "tau": tau, "pre_days": pre_days, "buckets": buckets,
                                  "engine": engine}, inputs=ins, store=tracking) as run:
        _write(result, out, files, json_out, html_out, force)
        for e in result.effects():
            if e.extra["series"] == "cumulative" and e.extra["look"] == result.end_day:
                run.log_metrics({f"{e.metric}.{e.extra['surface']}.estimate": e.estimate})
        for f in [*files, json_out, html_out]:
            if f is not None:
                run.log_artifact(f)


def _write(result: Any, out: Path | None, files: list[Path], json_out: Path | None,
           html_out: Path | None, force: bool) -> None:
    """Every output at once: the folder's files, then --json and --html (all or none)."""
    from recscope.io import atomic_dir, write_all, write_text

    text: dict[Path, str] = {}
    if json_out is not None:
        text[json_out] = result.to_json() + "\n"
    if html_out is not None:
        text[html_out] = result.to_html()
    if out is not None:
        with atomic_dir(out, force=force) as tmp:
            write_text(tmp / "tracking.json", result.to_json() + "\n")
            write_text(tmp / "tracking.html", result.to_html())
            result.to_frame_all().to_csv(tmp / "series.csv", index=False)
            if text:
                write_all(text)
        console.print(f"tracking written to {out}/", highlight=False, markup=False)
    elif text:
        write_all(text)
    for p in text:
        console.print(f"written {p}", highlight=False, markup=False)


def _last_day(eng: Any, events: str) -> int:
    t = eng.table(events)
    if "day" not in t.columns:
        raise DataValidationError("missing column 'day'", file=t.name, column="day")
    rows = eng.execute(f"SELECT MAX(day) AS d FROM {t.expr.sql(eng.dialect)}")
    if not rows or rows[0]["d"] is None:
        raise DataValidationError("no events (or no day values)", file=t.name, column="day")
    return int(rows[0]["d"])


def wants_long_run(path: Path) -> bool:
    """Whether a simulator TOML is a long-run file (it has ``[[launch]]``)."""
    from recscope.io import read_toml
    from recscope.sim.long_run import is_long_run

    return is_long_run(read_toml(path, "experiment"))


def simulate_long_run(path: Path, out: Path, *, force: bool, seed: int | None,
                      days: int | None, no_truth: bool, tracking: str | None,
                      serve_url: str | None) -> None:
    """``recscope simulate LONG_RUN.toml --out DIR``: the holdout and its launches, with
    the truth; writes the files ``recscope track`` and ``recscope longrun`` read."""
    from recscope.cli.common import progress as bar_progress
    from recscope.config import validate
    from recscope.sim.long_run import LongRunSpec, load_long_run, run_long_run
    from recscope.tracking import track as log_run

    if serve_url is not None:
        raise ConfigError("--serve-url does not apply to long-run files", key="--serve-url",
                          file=str(path))
    if days is not None:
        raise ConfigError("--days does not apply to long-run files (set weeks in the file)",
                          key="--days", file=str(path))
    spec = load_long_run(path)
    update: dict[str, Any] = {}
    if seed is not None:
        update["seed"] = seed
    if no_truth:
        update["truth"] = False
    if update:
        spec = validate(LongRunSpec, {**spec.model_dump(), **update}, file=path)
    with log_run("simulate.long_run", config=spec.model_dump(mode="json"),
                 inputs={"experiment": file_fingerprint(path)}, store=tracking) as run:
        with bar_progress() as bar:
            tasks: dict[str, int] = {}

            def tick(stage: str, i: float, n: float) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f"{stage} (days)", total=n)
                bar.update(tasks[stage], completed=i)

            result = run_long_run(spec, out, progress=tick, force=force)
        run.log_metrics({"units": result.n_units, "impressions": result.impressions,
                         "seconds": result.seconds})
        for name in ("assignments.parquet", "events.parquet", "launches.json", "truth.json",
                     "summary.json", *(f"{x['folder']}/{f}" for x in result.experiments
                                       for f in ("assignments.parquet", "metrics.toml",
                                                 "truth.json"))):
            if (out / name).exists():
                run.log_artifact(out / name)
    console.print(result.rich_table())
    console.print(f"{result.n_units:,} units ({result.n_held['total']:,} held out), "
                  f"{len(result.launches)} launches, {result.impressions:,} impressions in "
                  f"{spec.weeks} weeks ({result.seconds:.1f} s); wrote {out}/",
                  highlight=False, markup=False)
    for x in result.experiments:
        split = ", ".join(f"{k} {v:,}" for k, v in x["units_per_variant"].items())
        console.print(f"experiment {x['name']} on {x['surface']}, days {x['start_day']}-"
                      f"{x['end_day'] - 1} ({split}): recscope experiment analyze "
                      f"--assignments {out}/{x['folder']}/assignments.parquet --events "
                      f"{out}/{x['folder']}/events.parquet --metrics "
                      f"{out}/{x['folder']}/metrics.toml", highlight=False, markup=False,
                      soft_wrap=True)
