"""Every command's ``--help`` has a usage example; one vocabulary of options across
commands (``-o`` only ever means ``--out``; no ``--out-dir`` or ``--n-bootstrap``)."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from typing import Any

import pytest
import typer

from recscope.cli import _register, app, run


def _commands() -> dict[str, Any]:
    """Every leaf command of the CLI by its path (``experiment analyze``)."""
    _register()
    out: dict[str, Any] = {}

    def walk(cmd: Any, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        else:
            out[" ".join(path)] = cmd

    walk(typer.main.get_command(app), [])
    return out


COMMANDS = _commands()
# Commands whose help lacks an example today, their owner told in /work/notes (strict).
NO_EXAMPLE_YET: set[str] = set()


def test_every_command_group_is_there() -> None:
    for name in ("data describe", "data split", "world generate", "train", "recommend",
                 "evaluate", "ope", "simulate", "experiment analyze", "experiment power",
                 "attribute", "demo"):
        assert name in COMMANDS, sorted(COMMANDS)


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=[pytest.mark.xfail(reason="no Example in its docstring yet",
                                             strict=True)] if p in NO_EXAMPLE_YET else [])
    for p in sorted(COMMANDS)])
def test_help_has_an_example(path: str) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        code = run([*path.split(), "--help"])
    assert code == 0
    assert "Example" in out.getvalue(), f"`recscope {path} --help` shows no example"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_one_option_vocabulary(path: str) -> None:
    for param in COMMANDS[path].params:
        opts = set(param.opts) | set(param.secondary_opts)
        if "-o" in opts:
            assert "--out" in opts, f"{path}: -o means {sorted(opts)}, not --out"
        assert not opts & {"--out-dir", "--n-bootstrap", "--output"}, (path, sorted(opts))
