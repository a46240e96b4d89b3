"""``recscope tune``: Optuna search over a pipeline TOML's declared search space.

Contract: ``recscope tune CONFIG --data PATH --trials N [--timeout S] [--objective ndcg@10]
[--validation 0.2] [--test-fraction 0.2] [--pruner median|hyperband|none] [--seed 0]
--out DIR``. ``DIR`` receives ``best/`` (the re-fitted best model, the layout ``recscope train``
writes) and ``tune.json`` (trials, best parameters, test comparison of best vs default).
Runs go to the project's tracking store (one nested run per trial); the Optuna study lives
beside it (``optuna.db``), so running an interrupted search again resumes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recscope.cli.common import console


def tune(
    config: Annotated[Path, typer.Argument(help="pipeline TOML with search spaces "
                                           "(see examples/tune_*.toml)")],
    data: Annotated[Path, typer.Option("--data", help="interactions (any format recscope "
                                       "can load); the test part is carved out of it")],
    out: Annotated[Path, typer.Option("--out", help="output folder (study, runs, best "
                                      "model, tune.json)")],
    trials: Annotated[int, typer.Option("--trials", min=1, help="trials in all (a resumed "
                                        "study runs only the missing ones)")] = 20,
    timeout: Annotated[float | None, typer.Option("--timeout", help="stop starting new "
                                                  "trials after S seconds")] = None,
    objective: Annotated[str, typer.Option("--objective", help="validation metric to "
                                           "maximise")] = "ndcg@10",
    validation: Annotated[float, typer.Option("--validation", help="share of each user's "
                                              "search-part items held out for validation")
                          ] = 0.2,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="share of each "
                                                 "user's items the search never sees")] = 0.2,
    pruner: Annotated[str, typer.Option("--pruner", help="median, hyperband or none")
                      ] = "median",
    seed: Annotated[int, typer.Option("--seed", help="sampler and split seed")] = 0,
    eval_every: Annotated[int, typer.Option("--eval-every", min=0, help="evaluate every N "
                                            "epochs (0: about 10 points per curve)")] = 0,
    tracking: Annotated[str | None, typer.Option("--tracking", help="MLflow store (folder "
                                                 "or URI); default: the project store")] = None,
    data_format: Annotated[str, typer.Option("--format", help="data format")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="write into a non-empty --out")
                     ] = False,
) -> None:
    """Search the hyper-parameters declared in CONFIG; save the best model and compare it
    with the untuned default on a test split the search never saw.

    Example: recscope tune examples/tune_als.toml --data ../shared/data/ml-100k --trials 40
    --out out/tune-als
    """
    from recscope.data.loaders import load
    from recscope.orchestration.space import load_space
    from recscope.orchestration.tuning import TuneSettings, check_out
    from recscope.orchestration.tuning import tune as run_tune

    settings = TuneSettings(trials=trials, timeout=timeout, objective=objective,
                            pruner=pruner,  # type: ignore[arg-type]
                            validation_fraction=validation, test_fraction=test_fraction,
                            seed=seed, eval_every=eval_every)
    settings.check()
    space = load_space(config)
    if not space.params:
        from recscope.errors import ConfigError

        raise ConfigError("no search space: mark values with {tune = ...}", key="params",
                          file=str(config))
    check_out(out, force=force)
    interactions = load(data, data_format)
    result = run_tune(space, interactions, settings, out, store=tracking, force=force,
                      log=lambda m: console.print(m, highlight=False))
    result.print(console)
    console.print(f"best parameters: {result.best_params}")
    console.print(f"best model → {out / 'best'}; result → {out / 'tune.json'}; "
                  f"study → {result.info['storage']}")
