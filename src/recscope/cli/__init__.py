"""The ``recscope`` command (Typer + Rich).

Each command group lives in its own module and is registered here. Errors raised as
:class:`recscope.errors.RecscopeError` become a one-line message and exit code 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from recscope.errors import RecscopeError

app = typer.Typer(
    name="recscope",
    help="Measure recommender systems: offline benchmarks with statistics, off-policy "
    "estimates, simulated online experiments with ground truth, warehouse-native "
    "experiment analysis and component attribution.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _register() -> None:
    """Attach every command group (imported here so importing recscope stays light)."""
    from recscope.cli import (
        attribute,
        data,
        demo,
        evaluate,
        experiment,
        ope,
        simulate,
        train,
        world,
    )

    app.add_typer(data.app, name="data")
    app.add_typer(world.app, name="world")
    app.add_typer(experiment.app, name="experiment")
    app.command("demo")(demo.demo)
    app.command("train")(train.train)
    app.command("recommend")(train.recommend)
    app.command("evaluate")(evaluate.evaluate)
    app.command("ope")(ope.ope)
    app.command("simulate")(simulate.simulate)
    app.command("attribute")(attribute.attribute)


def main() -> None:
    """Entry point of the ``recscope`` script."""
    _register()
    try:
        app()
    except RecscopeError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
