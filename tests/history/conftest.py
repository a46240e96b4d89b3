"""A tiny simulated history shared by the history tests (built once, ~15 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recscope.cli import run


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``recscope history simulate --n 12 --scale tiny``: candidates/, history.parquet."""
    out = tmp_path_factory.mktemp("history") / "corpus"
    assert run(["history", "simulate", "--n", "12", "--scale", "tiny", "--out", str(out)]) == 0
    return out
