"""``recscope simulate EXPERIMENT.toml --out DIR``: an online experiment in the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recscope.cli.common import (
    Force,
    OutDir,
    Tracking,
    check_outputs,
    console,
    file_fingerprint,
    progress,
)
from recscope.errors import ConfigError


def simulate(
    experiment: Annotated[Path, typer.Argument(help="Experiment TOML (see docs/simulator.md).")],
    out: OutDir,
    force: Force = False,
    seed: int | None = typer.Option(None, "--seed", help="Override the file's seed (0 or "
                                    "more)."),
    days: int | None = typer.Option(None, "--days", help="Override the duration in days "
                                    "(1 to 365)."),
    no_truth: bool = typer.Option(False, "--no-truth",
                                  help="Skip the ground-truth replays (faster)."),
    tracking: Tracking = None,
    serve_url: Annotated[str | None, typer.Option(
        "--serve-url", metavar="URL", help="Drive a running `recscope serve` over HTTP "
        "instead of simulating the arms in-process (docs/serving.md).")] = None,
) -> None:
    """Run the experiment in the simulated platform and write its logs and ground truth:
    assignments.parquet, events.parquet, metrics.toml, truth.json and summary.json in --out.

    The logs are what `recscope experiment analyze` reads:
    `recscope experiment analyze --assignments DIR/assignments.parquet
    --events DIR/events.parquet --metrics DIR/metrics.toml`.

    Example: recscope simulate examples/experiment_ab.toml --days 7 --out sim/
    """
    from recscope.sim import load_experiment, run_experiment
    from recscope.sim.experiment_config import ExperimentSpec
    from recscope.tracking import track

    if seed is not None and seed < 0:
        raise ConfigError(f"must be 0 or more (got {seed})", key="--seed")
    if days is not None and not 1 <= days <= 365:
        raise ConfigError(f"must be between 1 and 365 (got {days})", key="--days")
    if not experiment.is_file():
        raise ConfigError("is a folder; expected an experiment TOML file" if experiment.is_dir()
                          else "experiment file not found", file=str(experiment))
    check_outputs(folder=out, force=force, tracking=tracking)
    from recscope.cli.track import simulate_long_run, wants_long_run

    if wants_long_run(experiment):  # a [[launch]] schedule: holdout and launches
        return simulate_long_run(experiment, out, force=force, seed=seed, days=days,
                                 no_truth=no_truth, tracking=tracking, serve_url=serve_url)
    spec = load_experiment(experiment)
    update: dict[str, object] = {}
    if seed is not None:
        update["seed"] = seed
    if days is not None:
        update["days"] = days
    if no_truth:
        update["truth"] = False
    if update:
        from recscope.config import validate

        spec = validate(ExperimentSpec, {**spec.model_dump(), **update}, file=experiment)
    with track("simulate", config=spec.model_dump(mode="json"),
               inputs={"experiment": file_fingerprint(experiment)}, store=tracking) as run:
        with progress() as bar:
            tasks: dict[str, int] = {}

            def tick(stage: str, i: float, n: float) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f"{stage} (days)", total=n)
                bar.update(tasks[stage], completed=i)

            stats = None
            if serve_url is not None:
                from recscope.sim.traffic import drive

                result, stats = drive(spec, serve_url, out, progress=tick, force=force)
            else:
                result = run_experiment(spec, out, progress=tick, force=force)
        run.log_metrics({"units": result.n_units, "impressions": result.impressions,
                         "seconds": result.seconds})
        for name in ("assignments.parquet", "events.parquet", "metrics.toml", "truth.json",
                     "summary.json"):
            if (out / name).exists():
                run.log_artifact(out / name)
    console.print(result.rich_table())
    if stats is not None:
        console.print(f"{stats['requests']:,} requests over HTTP, {stats['arm_mismatches']} "
                      "arm mismatches", highlight=False, markup=False)
    console.print(f"{result.n_units:,} units, {result.impressions:,} impressions in "
                  f"{result.days} days ({result.seconds:.1f} s); wrote {out}/",
                  highlight=False, markup=False)
