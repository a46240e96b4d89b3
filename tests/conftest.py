"""Shared fixtures: real data location, a temporary MLflow store, small synthetic logs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RECSCOPE_DATA", ROOT.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """Path under the real-data folder; skip (or fail in CI) when it is missing."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        msg = f"real data set missing: {p} (set RECSCOPE_DATA to the shared data folder)"
        if os.environ.get("RECSCOPE_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


@pytest.fixture(autouse=True, scope="session")
def _mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test session logs to its own temporary SQLite store."""
    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"


def make_read_only(path: Path) -> bool:
    """Make the folder ``path`` read-only, for root too (``chattr +i``); True on success."""
    path.chmod(0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    probe = path / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return True
    probe.unlink()
    return False


def undo_read_only(path: Path) -> None:
    """Inverse of :func:`make_read_only`."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)
    path.chmod(0o755)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty folder nobody can write to (skips where that cannot be arranged)."""
    path = tmp_path / "read-only"
    path.mkdir()
    if not make_read_only(path):
        undo_read_only(path)
        pytest.skip("cannot make a read-only folder here (root without chattr)")
    yield path
    undo_read_only(path)


def make_log(n_users: int = 50, n_items: int = 40, n_rows: int = 600, seed: int = 0,
             extra: bool = False) -> pa.Table:
    """A random canonical interaction table (ids as integers, timestamps in 2024)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {
        "user_id": rng.integers(0, n_users, n_rows),
        "item_id": rng.integers(0, n_items, n_rows),
        "timestamp": pa.array(1_700_000_000_000_000 + rng.integers(0, 10**12, n_rows),
                              pa.timestamp("us", tz="UTC")),
        "event": ["click"] * n_rows,
        "value": rng.random(n_rows),
    }
    if extra:
        cols["surface"] = rng.choice(["home", "related", "search"], n_rows)
        cols["position"] = rng.integers(0, 10, n_rows).astype(np.int32)
        cols["propensity"] = rng.uniform(0.05, 1.0, n_rows)
    return pa.table(cols)
