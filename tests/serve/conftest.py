"""Fixtures of the service tests: two small trained model directories and a service."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from recscope.data.interactions import Interactions
from recscope.data.schema import TIMESTAMP_TYPE
from recscope.pipeline import Pipeline
from recscope.serve.app import Settings, create_app
from recscope.serve.config import ArmConfig, ExperimentConfig, single_arm

API_KEY = "test-key-123"


def save_model_dir(pipe: Pipeline, data: Interactions, path: Path) -> Path:
    """The layout ``recscope train`` writes: pipeline/, users.parquet, items.parquet."""
    path.mkdir(parents=True, exist_ok=True)
    pipe.save(path / "pipeline")
    pq.write_table(pa.table({"user_id": data.users.ids}), path / "users.parquet")
    pq.write_table(pa.table({"item_id": data.items.ids}), path / "items.parquet")
    return path


def small_log(n_users: int = 60, n_items: int = 40, n: int = 900, seed: int = 0
              ) -> Interactions:
    """A random interaction log with integer ids (popular items are popular)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    items = np.minimum(rng.zipf(1.5, n) - 1, n_items - 1)
    table = pa.table({"user_id": pa.array(users + 100, pa.int64()),
                      "item_id": pa.array(items + 1000, pa.int64()),
                      "timestamp": pa.array(np.arange(n, dtype=np.int64) * 1_000_000,
                                            TIMESTAMP_TYPE),
                      "event": pa.array(["click"] * n), "value": pa.array(np.ones(n))})
    return Interactions.from_table(table, duplicates="keep")


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two trained models on the same log: popularity and ItemKNN."""
    data = small_log()
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name in ("popularity", "itemknn"):
        pipe = Pipeline({"name": name, "retrievers": [{"component": name, "quota": 30}]})
        out[name] = save_model_dir(pipe.fit(data), data, root / name)
    return out


def ab_config(**arms: ArmConfig) -> ExperimentConfig:
    """A two-arm experiment over the test surfaces."""
    return ExperimentConfig.model_validate({
        "name": "test-exp", "max_k": 20, "arms": {k: v.model_dump() for k, v in arms.items()}})


@pytest.fixture
def ab_settings(model_dirs: dict[str, Path], tmp_path: Path) -> Settings:
    cfg = ab_config(control=ArmConfig(), treatment=ArmConfig(model=str(model_dirs["itemknn"])))
    return Settings(model=str(model_dirs["popularity"]), log_dir=str(tmp_path / "logs"),
                    experiment=cfg, api_key=API_KEY, flush_seconds=0.05)


@pytest.fixture
def client(ab_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(ab_settings)) as c:
        yield c


@pytest.fixture
def plain_settings(model_dirs: dict[str, Path], tmp_path: Path) -> Settings:
    return Settings(model=str(model_dirs["popularity"]), log_dir=str(tmp_path / "logs"),
                    experiment=single_arm(max_k=20), api_key=API_KEY)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
