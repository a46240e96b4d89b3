"""Every error of the ``recscope`` command is one line and exit code 2 (130 on Ctrl-C):
recscope's own errors with Rich markup shown as text, usage errors, engine errors, OS errors,
MLflow store errors and raw pydantic errors; ``RECSCOPE_DEBUG=1`` shows the traceback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import typer
from pydantic import BaseModel, ValidationError

import recscope.cli as cli
from recscope.errors import ConfigError, DataValidationError


def _errors_app(exc: BaseException) -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def boom(n: int = typer.Option(1, "--n", min=1)) -> None:
        print("partial stdout")
        raise exc

    @app.command()
    def ok() -> None:
        print("fine")

    return app


def _run(monkeypatch: pytest.MonkeyPatch, exc: BaseException, *args: str
         ) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "app", _errors_app(exc))
    monkeypatch.setattr(cli, "_registered", True)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.run(list(args) or ["boom"])
    return code, out.getvalue(), err.getvalue()


def _pydantic_error() -> ValidationError:
    class M(BaseModel):
        days: int

    try:
        M.model_validate({"days": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


def _duckdb_error() -> Exception:
    try:
        duckdb.sql("SELECT CAST('n/a' AS DOUBLE)").fetchall()
    except duckdb.Error as exc:
        return exc
    raise AssertionError("unreachable")


def _arrow_error() -> Exception:
    try:
        pa.array(["n/a"]).cast(pa.float64())
    except pa.ArrowInvalid as exc:
        return exc
    raise AssertionError("unreachable")


def _mlflow_error() -> Exception:
    from mlflow.exceptions import MlflowException

    return MlflowException("(sqlite3.OperationalError) attempt to write a readonly\ndatabase")


CASES = [
    (ConfigError("define at least one [metrics.NAME] table", file="m.toml"),
     ["[metrics.NAME]", "m.toml"]),
    (DataValidationError("not a number", file="e.parquet", column="clicks", row=3),
     ["e.parquet", "'clicks'", "row 3"]),
    (FileNotFoundError(2, "No such file or directory", "data/x.parquet"),
     ["data/x.parquet", "No such file"]),
    (IsADirectoryError(21, "Is a directory", "split/"), ["split/", "Is a directory"]),
    (PermissionError(13, "Permission denied", "/ro/out.json"), ["/ro/out.json", "Permission"]),
    (_pydantic_error(), ["days", "'x'"]),
    (_duckdb_error(), ["DuckDB", "n/a"]),
    (_arrow_error(), ["Arrow", "n/a"]),
    (_mlflow_error(), ["tracking store", "readonly database"]),
    (UnicodeDecodeError("utf-8", b"caf\xe9", 3, 4, "invalid"), ["UTF-8", "0xe9"]),
    (RuntimeError("something\nunexpected"), ["RuntimeError", "something unexpected",
                                             "RECSCOPE_DEBUG=1"]),
]


@pytest.mark.parametrize(("exc", "words"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_every_error_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                            exc: BaseException, words: list[str]) -> None:
    code, _, err = _run(monkeypatch, exc)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in err


def test_usage_errors_are_one_line_naming_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = _run(monkeypatch, RuntimeError(), "boom", "--n", "0")
    assert code == 2 and err.count("\n") == 1 and "'--n'" in err and "boom --help" in err
    code, _, err = _run(monkeypatch, RuntimeError(), "bogus")
    assert code == 2 and "No such command 'bogus'" in err and err.count("\n") == 1
    code, out, _ = _run(monkeypatch, RuntimeError(), "ok")
    assert code == 0 and out == "fine\n"


def test_ctrl_c_is_exit_130(monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = _run(monkeypatch, KeyboardInterrupt())
    assert code == 130 and "interrupted" in err and "Traceback" not in err


def test_long_messages_are_not_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    path = "/a/very/long/" + "folder/" * 30 + "file.parquet"
    code, _, err = _run(monkeypatch, DataValidationError("bad", file=path, column="x"))
    assert code == 2 and path in err and err.count("\n") == 1


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "RECSCOPE_DEBUG": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    (tmp_path / "empty.csv").write_text("")
    cmd = [sys.executable, "-m", "recscope.cli", "data", "describe", str(tmp_path / "empty.csv")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode != 0 and "Traceback" in res.stderr
    env.pop("RECSCOPE_DEBUG")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "empty.csv" in res.stderr and res.stderr.count("\n") == 1


def test_version_and_help_exit_0() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.run(["--version"]) == 0
    assert out.getvalue().startswith("recscope ")
    with redirect_stdout(io.StringIO()):
        assert cli.run(["--help"]) == 0
