"""The front door and the layers: ``import recscope`` is light and lazily exposes the calls a
user starts from (the layer contracts themselves run in ``make lint``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import recscope

FRONT_DOOR = ["evaluate", "compare", "analyze", "attribute", "World", "Environment",
              "run_experiment", "load", "read_interactions"]


def test_import_recscope_is_light() -> None:
    code = ("import sys, recscope; heavy = [m for m in ('duckdb', 'mlflow', 'torch', 'pyarrow', "
            "'numba', 'plotly', 'sklearn', 'typer') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("name", FRONT_DOOR)
def test_front_door_names_resolve_to_their_package(name: str) -> None:
    value = getattr(recscope, name)
    assert callable(value) and value.__module__.startswith("recscope.")
    assert name in dir(recscope) and name in recscope.__all__


def test_front_door_from_a_fresh_interpreter() -> None:
    code = ("import recscope; recscope.evaluate; recscope.analyze; recscope.attribute; "
            "from recscope import World, load; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'evaluat'"):
        recscope.evaluat  # noqa: B018


def test_core_imports_only_numerics_and_errors() -> None:
    """``recscope.core`` is the base of the shared mathematics: the standard library, numpy,
    scipy, numba and ``recscope.errors`` only (import-linter checks the other layers)."""
    import ast
    from pathlib import Path

    allowed = {"numpy", "scipy", "numba", "__future__"}
    core = Path(recscope.__file__).parent / "core"
    for path in sorted(core.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top == "recscope":
                    assert name == "recscope.errors" or name.startswith("recscope.core"), (
                        f"{path.name} imports {name}")
                else:
                    assert top in allowed or top in sys.stdlib_module_names, (
                        f"{path.name} imports {name}")
