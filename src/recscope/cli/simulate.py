"""``recscope simulate EXPERIMENT.toml --out DIR``: an online experiment in the simulator."""

from __future__ import annotations

from pathlib import Path

import typer

from recscope.cli.common import console, file_fingerprint, progress


def simulate(
    experiment: Path = typer.Argument(..., help="Experiment TOML (see docs/simulator.md)."),
    out: Path = typer.Option(..., "--out", help="Output folder: assignments.parquet, "
                             "events.parquet, metrics.toml, truth.json, summary.json."),
    seed: int | None = typer.Option(None, "--seed", help="Override the file's seed."),
    days: int | None = typer.Option(None, "--days", help="Override the duration in days."),
    no_truth: bool = typer.Option(False, "--no-truth",
                                  help="Skip the ground-truth replays (faster)."),
) -> None:
    """Run the experiment in the simulated platform and write its logs and ground truth.

    The logs are what `recscope experiment analyze` reads:
    `recscope experiment analyze --assignments DIR/assignments.parquet
    --events DIR/events.parquet --metrics DIR/metrics.toml`.
    """
    from recscope.sim.experiment import load_experiment, run_experiment
    from recscope.tracking import track

    spec = load_experiment(experiment)
    update: dict[str, object] = {}
    if seed is not None:
        update["seed"] = seed
    if days is not None:
        update["days"] = days
    if no_truth:
        update["truth"] = False
    if update:
        spec = spec.model_validate({**spec.model_dump(), **update})
    with track("simulate", config=spec.model_dump(mode="json"),
               inputs={"experiment": file_fingerprint(experiment)}) as run:
        with progress() as bar:
            tasks: dict[str, int] = {}

            def tick(stage: str, i: int, n: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f"{stage} (days)", total=n)
                bar.update(tasks[stage], completed=i)

            result, _ = run_experiment(spec, out, progress=tick)
        data = result.to_dict()
        run.log_metrics({"units": data["n_units"], "impressions": data["impressions"],
                         "seconds": data["seconds"]})
        for name in ("assignments.parquet", "events.parquet", "metrics.toml", "truth.json",
                     "summary.json"):
            run.log_artifact(out / name)
    console.print(result.rich_table())
    console.print(f"{data['n_units']:,} units, {data['impressions']:,} impressions in "
                  f"{data['days']} days ({data['seconds']:.1f} s); wrote {out}/")
