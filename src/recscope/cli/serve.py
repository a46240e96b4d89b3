"""``recscope serve``: run the recommendation service; export its logs; drive it.

* ``recscope serve --model MODEL [--experiment EXP.toml] --log-dir DIR --host H --port P``
  serves ``POST /recommend`` and ``POST /feedback`` with assignment, exposure logging and
  Prometheus metrics (docs/serving.md).
* ``recscope serve export LOG_DIR --out DIR`` writes ``assignments.parquet``,
  ``events.parquet`` and ``metrics.toml`` for ``recscope experiment analyze``, and
  ``interactions.parquet`` (canonical, with propensities) for ``recscope ope`` when the
  log has exploring arms.
* ``recscope serve drive EXP.toml --url URL --out DIR`` makes the simulator's users call a
  running service and send their clicks back (same as ``recscope simulate --serve-url``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from recscope.cli.common import console, progress
from recscope.errors import ConfigError

app = typer.Typer(help="Serve a model with experiment assignment and exposure logging; "
                  "export the logs for analysis. Example: RECSCOPE_SERVE_API_KEY=k recscope "
                  "serve --model out/ml100k --log-dir serve-logs --port 8000", invoke_without_command=True,
                  no_args_is_help=False)


def _resolve_registered(uri: str) -> Path:
    """``models:/NAME@alias`` or ``models:/NAME/VERSION`` → the registered model directory
    (the model registry lives in ``recscope.orchestration``, beside ``serve``, so the CLI
    plugs it in)."""
    from recscope.orchestration.registry import load_registered

    return Path(load_registered(uri, used_by="serve").path)


@app.callback()
def serve(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(
        "--model", help="model directory (recscope train output or a saved component) or "
        "registry URI; serves users outside the experiment and arms without a model")] = None,
    experiment: Annotated[Path | None, typer.Option(
        "--experiment", help="experiment TOML: arms, weights, surfaces (docs/serving.md)")
                          ] = None,
    log_dir: Annotated[Path | None, typer.Option(
        "--log-dir", help="folder of the append-only exposure and feedback logs")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    cache: Annotated[str, typer.Option(
        "--cache", help="precompute rankings of known users: auto, on, off")] = "auto",
    surface: Annotated[list[str] | None, typer.Option(
        "--surface", help="surfaces served without --experiment (repeat; default "
        "home_feed, related, search)")] = None,
    max_k: Annotated[int, typer.Option("--max-k", min=1, max=10_000,
                                       help="largest k without --experiment")] = 100,
    batch_rows: Annotated[int, typer.Option("--batch-rows", min=1,
                                            help="log rows per Parquet file")] = 8192,
    flush_seconds: Annotated[float, typer.Option(
        "--flush-seconds", min=0.01, help="longest a log row waits for its file")] = 1.0,
    max_pending_rows: Annotated[int, typer.Option(
        "--max-pending-rows", min=1, help="log rows allowed to wait before requests get "
        "503 (the most a crash can lose)")] = 1_000_000,
    max_in_flight: Annotated[int, typer.Option(
        "--max-in-flight", min=1, help="requests handled at once; beyond, 503 at once "
        "(sheds overload instead of queueing into timeouts)")] = 1000,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
) -> None:
    """Serve MODEL over HTTP (see `recscope serve --help` and docs/serving.md).

    Example: RECSCOPE_SERVE_API_KEY=secret recscope serve --model out/ml100k
    --log-dir serve-logs --port 8000
    """
    if ctx.invoked_subcommand is not None:
        return
    if model is None or log_dir is None:
        raise ConfigError("give --model MODEL and --log-dir DIR (or a subcommand: export, "
                          "drive)", key="--model" if model is None else "--log-dir")
    import uvicorn

    from recscope.serve.app import API_KEY_ENV, Settings, create_app
    from recscope.serve.config import load_experiment_config, single_arm
    from recscope.serve.models import register_resolver

    register_resolver("models", _resolve_registered)

    if log_dir.exists() and not log_dir.is_dir():
        raise ConfigError("exists and is not a folder", key="--log-dir", file=str(log_dir))
    if max_pending_rows < batch_rows:
        raise ConfigError("--max-pending-rows must be at least --batch-rows",
                          key="--max-pending-rows")
    cfg = load_experiment_config(experiment) if experiment else single_arm(surface, max_k)
    settings = Settings(model=model, log_dir=str(log_dir), experiment=cfg, cache=cache,
                        batch_rows=batch_rows, flush_seconds=flush_seconds,
                        max_pending_rows=max_pending_rows)
    console.print(f"loading {model}" + (f" and the arms of {experiment}" if experiment else ""))
    fastapi_app = create_app(settings)
    st = fastapi_app.state.service
    for a in st.arms.values():
        console.print(f"  arm [bold]{a.name}[/]: {a.uri} (version {a.model.version}, "
                      f"{'cached rankings' if a.model.cached else 'live inference'})")
    if st.writer.removed_temporaries:
        console.print(f"  removed {st.writer.removed_temporaries} unfinished log file(s) of "
                      "a previous run (never acknowledged as written)")
    if not os.environ.get(API_KEY_ENV):
        console.print(f"  admin endpoints off: {API_KEY_ENV} is not set")
    console.print(f"serving on http://{host}:{port} (logs → {log_dir}); Ctrl-C stops and "
                  "flushes the log")
    logging.basicConfig(level=log_level.upper())
    uvicorn.run(fastapi_app, host=host, port=port, log_level=log_level, access_log=False,
                limit_concurrency=max_in_flight)


@app.command("export")
def export(
    log_dir: Annotated[Path, typer.Argument(help="the --log-dir of recscope serve")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    reward: Annotated[str, typer.Option("--reward", help="OPE reward event: click, save, "
                                        "hide")] = "click",
    unit_type: Annotated[str, typer.Option("--unit-type", help="auto, int64 or string")
                         ] = "auto",
    experiment: Annotated[str | None, typer.Option(
        "--experiment", help="experiment name, when the log holds several")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace earlier outputs")] = False,
) -> None:
    """Write the experiment tables (and OPE interactions) of a service's logs.

    Example: recscope serve export serve-logs --out served/ ; then recscope experiment analyze --assignments OUT/assignments.parquet
    --events OUT/events.parquet --metrics OUT/metrics.toml
    """
    import pyarrow.parquet as pq

    from recscope.errors import DataValidationError
    from recscope.io import atomic_dir, check_out_dir
    from recscope.serve.adapter import METRICS_TOML, experiment_tables, logged_interactions

    if unit_type not in ("auto", "int64", "string"):
        raise ConfigError("must be auto, int64 or string", key="--unit-type")
    check_out_dir(out, force=force)
    assignments, events = experiment_tables(log_dir, experiment=experiment,
                                            unit_type=unit_type)
    try:
        interactions = logged_interactions(log_dir, reward=reward)
    except DataValidationError as exc:
        interactions = None
        why = exc.problem
    with atomic_dir(out, force=force) as tmp:
        pq.write_table(assignments, tmp / "assignments.parquet")
        pq.write_table(events, tmp / "events.parquet")
        (tmp / "metrics.toml").write_text(METRICS_TOML, encoding="utf-8")
        if interactions is not None:
            pq.write_table(interactions, tmp / "interactions.parquet")
    console.print(f"{assignments.num_rows:,} units, {events.num_rows:,} requests → {out}/")
    if interactions is None:
        console.print(f"no interactions.parquet for OPE: {why}")


@app.command("drive")
def drive_cmd(
    experiment: Annotated[Path, typer.Argument(help="experiment TOML of the simulator "
                                               "(world, days, seed; variants = the arms)")],
    url: Annotated[str, typer.Option("--url", help="base URL of a running recscope serve")],
    out: Annotated[Path, typer.Option("--out", help="folder for truth.json, summary.json "
                                      "and the simulator's own record")],
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256)] = 16,
    days: Annotated[int | None, typer.Option("--days", help="override the duration")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace earlier outputs")] = False,
) -> None:
    """Make the simulator's users call the service over HTTP and send their feedback.

    Example: RECSCOPE_SERVE_API_KEY=k recscope serve drive loop.toml
    --url http://127.0.0.1:8000 --out sim/
    """
    from recscope.io import check_out_dir
    from recscope.sim import load_experiment
    from recscope.sim.traffic import drive

    check_out_dir(out, force=force)
    spec = load_experiment(experiment)
    if days is not None:
        spec = spec.model_validate({**spec.model_dump(), "days": days})
    with progress() as bar:
        tasks: dict[str, int] = {}

        def tick(stage: str, i: int, n: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{stage} (days)", total=n)
            bar.update(tasks[stage], completed=i)

        result, stats = drive(spec, url, out, progress=tick, concurrency=concurrency,
                              force=force)
    console.print(result.rich_table())
    fb = stats["feedback"]
    console.print(f"{result.n_units:,} units, {stats['requests']:,} requests over HTTP "
                  f"({stats['items_returned']:,} items, {fb['click']:,} clicks, "
                  f"{fb['save']:,} saves, {fb['hide']:,} hides sent back), "
                  f"{stats['arm_mismatches']} arm mismatches, {result.seconds:.1f} s; "
                  f"wrote {out}/")
