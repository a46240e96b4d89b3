"""``recscope experiment design-compare EXPERIMENT.toml --reps N --out DIR``: the design
advisor (:func:`recscope.sim.designs.compare_designs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recscope.cli.common import Force, HtmlOut, OutDir, check_outputs, console, progress
from recscope.errors import ConfigError


def design_compare(
    experiment: Annotated[Path, typer.Argument(help="Experiment TOML (docs/simulator.md); "
                                               "[design] and [[compare]] name designs.")],
    out: OutDir,
    reps: int = typer.Option(20, "--reps", help="Seeded repetitions (1 or more)."),
    force: Force = False,
    permutations: int = typer.Option(
        200, "--permutations", help="Randomisation-inference draws per switchback "
        "analysis (0 or more)."),
    html_out: HtmlOut = None,
) -> None:
    """Run the experiment's change under each design in the simulator and compare them
    with the true global effect: per design and metric the mean estimate, the truth, the
    bias, RMSE, coverage of the 95% interval, the MDE and the design effect.

    Writes DIR/designs.json (one object per design and metric), DIR/designs.html (the
    comparison plot) and DIR/comparison.json (the whole result); --html also writes the
    page to FILE.
    The designs are the file's \\[design] and \\[\\[compare]] tables, or, without them, the
    ones that fit its interference channels; the unit A/B test is always included.

    Example: recscope experiment design-compare examples/experiment_interference.toml
    --reps 20 --out designs/
    """
    from recscope.io import atomic_dir, write_json, write_text
    from recscope.sim import load_experiment
    from recscope.sim.designs import compare_designs

    if reps < 1:
        raise ConfigError(f"must be 1 or more (got {reps})", key="--reps")
    if permutations < 0:
        raise ConfigError(f"must be 0 or more (got {permutations})", key="--permutations")
    if not experiment.is_file():
        raise ConfigError("is a folder; expected an experiment TOML file" if experiment.is_dir()
                          else "experiment file not found", file=str(experiment))
    check_outputs(html_out, folder=out, force=force, track=False)
    spec = load_experiment(experiment)
    with progress() as bar:
        tasks: dict[str, int] = {}

        def tick(stage: str, i: float, n: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{stage} x repetitions", total=n)
            bar.update(tasks[stage], completed=i)

        result = compare_designs(spec, reps=reps, file=str(experiment),
                                 n_permutations=permutations, progress=tick)
    html = result.to_html()
    with atomic_dir(out, force=force) as tmp:
        write_json(tmp / "designs.json", result.records())
        write_json(tmp / "comparison.json", result.to_dict())
        write_text(tmp / "designs.html", html)
    if html_out is not None:
        from recscope.io import write_all

        write_all({html_out: html})
    console.print(result.rich_table())
    console.print(f"{len(result.designs)} designs x {reps} repetitions in "
                  f"{result.seconds:.1f} s; wrote {out}/designs.json and designs.html",
                  highlight=False, markup=False)
