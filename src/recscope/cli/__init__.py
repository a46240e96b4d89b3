"""The ``recscope`` command (Typer + Rich).

Each command group lives in its own module and is registered here. :func:`main` turns
every error into one line on stderr and exit code 2 (130 on Ctrl-C): recscope's own
errors, usage errors, engine errors (DuckDB, Arrow, Spark), file-system errors, MLflow
store errors and raw pydantic errors. ``RECSCOPE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import typer
from rich.console import Console
from rich.markup import escape
from typer import exceptions as typer_exc
from typer._click import exceptions as cx  # Typer's own copy of click's exceptions

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
_registered = False


def _register() -> None:
    """Attach every command group once (imported here so importing recscope stays light)."""
    global _registered
    if _registered:
        return
    from recscope.cli import (
        attribute,
        data,
        demo,
        evaluate,
        experiment,
        history,
        launch,
        longrun,
        ope,
        registry,
        serve,
        simulate,
        track,
        train,
        tune,
        workflow,
        world,
    )

    app.add_typer(data.app, name="data")
    app.add_typer(world.app, name="world")
    app.add_typer(experiment.app, name="experiment")
    app.add_typer(launch.app, name="launch")
    app.add_typer(history.app, name="history")
    app.add_typer(longrun.app, name="longrun")
    app.command("demo")(demo.demo)
    app.command("train")(train.train)
    app.command("recommend")(train.recommend)
    app.command("evaluate")(evaluate.evaluate)
    app.command("ope")(ope.ope)
    app.command("simulate")(simulate.simulate)
    app.command("track")(track.track)
    app.command("attribute")(attribute.attribute)
    app.command("tune")(tune.tune)
    app.add_typer(registry.app, name="registry")
    app.add_typer(workflow.app, name="workflow")
    app.add_typer(serve.app, name="serve")
    _registered = True


_ENGINES = {"duckdb": "DuckDB", "pyarrow": "Arrow", "pyspark": "Spark", "py4j": "Spark",
            "mlflow": "tracking store (MLflow)", "sqlalchemy": "tracking store (MLflow)",
            "alembic": "tracking store (MLflow)", "numpy": "NumPy", "scipy": "SciPy",
            "polars": "Polars", "pandas": "pandas"}


def _flat(text: str, limit: int = 500) -> str:
    """One line: whitespace (newlines included) collapsed, cut at ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def one_line(exc: BaseException) -> str:
    """The message of any error as one line naming what is known (file, key, column, row)."""
    if isinstance(exc, RecscopeError):
        return _flat(str(exc), 2000)
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        from recscope.config import config_error

        return _flat(str(config_error(exc)))
    if isinstance(exc, UnicodeDecodeError):
        return (f"input is not {exc.encoding.upper()} text: byte 0x{exc.object[exc.start]:02x} "
                f"at offset {exc.start}")
    if isinstance(exc, OSError) and getattr(exc, "strerror", None):
        names = [n for n in (exc.filename, exc.filename2) if n is not None]
        where = " -> ".join(str(n) for n in names)
        hint = ""
        if isinstance(exc, FileNotFoundError) and exc.filename is not None:
            from recscope.io import did_you_mean

            hint = did_you_mean(exc.filename)
        return (f"{where}: {exc.strerror}" if where else str(exc.strerror)) + hint
    if isinstance(exc, MemoryError):
        return "out of memory (try a smaller input or sample)"
    text = _flat(str(exc).split("\nLINE ")[0]) or type(exc).__name__  # DuckDB's SQL excerpt
    engine = _ENGINES.get(type(exc).__module__.lstrip("_").split(".")[0])
    if engine:
        return f"{engine}: {text}"
    return f"{type(exc).__name__}: {text} (set RECSCOPE_DEBUG=1 for the traceback)"


def _error(message: str) -> None:
    """Print ``error: message`` on one line (Rich markup in the message is shown as text)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                      soft_wrap=True)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return its exit code:
    0 on success, 2 for any error (one line on stderr), 130 when interrupted."""
    debug = os.environ.get("RECSCOPE_DEBUG") == "1"
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _register()
        rc = app(args=args, prog_name="recscope", standalone_mode=False)
    except cx.NoArgsIsHelpError as exc:
        exc.show()
        return 2
    except cx.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx is not None else "recscope"
        _error(f"{_flat(exc.format_message())} (see {cmd} --help)")
        return 2
    except cx.ClickException as exc:
        _error(_flat(exc.format_message()))
        return exc.exit_code or 2
    except (KeyboardInterrupt, typer_exc.Abort):
        rc = 130
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except Exception as exc:
        if debug:
            raise
        _error(one_line(exc))
        return 2
    if rc == 130:
        err_console.print("[bold red]interrupted:[/] outputs are written whole or not at all",
                          highlight=False)
        return 130
    return rc if isinstance(rc, int) else 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``recscope`` script (see :func:`run`)."""
    sys.exit(run(argv))
