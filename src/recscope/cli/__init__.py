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
    """Attach every command group (imported lazily so ``--help`` stays fast)."""
    from recscope.cli import data as data_cli

    app.add_typer(data_cli.app, name="data")
    from recscope.cli import world as world_cli; app.add_typer(world_cli.app, name="world")  # noqa: E702, I001
    from recscope.cli import demo as demo_cli; app.command("demo")(demo_cli.demo)  # noqa: E702, I001
    from recscope.cli import experiment as experiment_cli; app.add_typer(experiment_cli.app, name="experiment")  # noqa: E702, I001
    from recscope.cli import ope as ope_cli; app.command("ope")(ope_cli.ope)  # noqa: E702, I001
    from recscope.cli import evaluate as evaluate_cli; app.command("evaluate")(evaluate_cli.evaluate)  # noqa: E702, I001
    from recscope.cli import simulate as simulate_cli; app.command("simulate")(simulate_cli.simulate)  # noqa: E702, I001
    from recscope.cli import attribute as attribute_cli; app.command("attribute")(attribute_cli.attribute)  # noqa: E702, I001
    from recscope.cli import train as train_cli; app.command("train")(train_cli.train); app.command("recommend")(train_cli.recommend)  # noqa: E702, I001


def main() -> None:
    """Entry point of the ``recscope`` script."""
    _register()
    try:
        app()
    except RecscopeError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
