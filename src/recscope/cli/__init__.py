"""The ``recscope`` command (Typer + Rich).

Each command group lives in its own module and is registered here. Errors raised as
:class:`recscope.errors.RecscopeError` become a one-line message and exit code 2.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

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


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"recscope {version('recscope')}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Measure recommender systems (run ``recscope COMMAND --help`` for examples)."""
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


def _one_line(exc: BaseException) -> str:
    """The message of any error as one line naming what is known (file, column, row)."""
    if isinstance(exc, RecscopeError):
        return str(exc)
    if isinstance(exc, OSError) and getattr(exc, "strerror", None):
        where = exc.filename if exc.filename is not None else ""
        return f"{where}: {exc.strerror}" if where else str(exc.strerror)
    kind = type(exc).__module__.split(".")[0]
    text = " ".join(str(exc).split()) or type(exc).__name__
    engine = {"duckdb": "DuckDB", "pyarrow": "Arrow", "pyspark": "Spark", "py4j": "Spark",
              "mlflow": "MLflow store", "sqlalchemy": "MLflow store"}.get(kind)
    if engine:
        return f"{engine}: {text[:500]}"
    return f"{type(exc).__name__}: {text[:500]} (set RECSCOPE_DEBUG=1 for the traceback)"


def main() -> None:
    """Entry point of the ``recscope`` script: every error is one line and exit code 2
    (130 when interrupted); ``RECSCOPE_DEBUG=1`` re-raises with the traceback."""
    _register()
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted:[/] outputs are written whole or not at all",
                          highlight=False)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:
        if os.environ.get("RECSCOPE_DEBUG") == "1":
            raise
        err_console.print(f"[bold red]error:[/] {escape(_one_line(exc))}", highlight=False,
                          soft_wrap=True)
        sys.exit(2)
