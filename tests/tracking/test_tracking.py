"""Tracking writes real MLflow runs: params, metrics, artifacts, parent links, status; one
project store; an unwritable store fails at once in one line; no run for a block that fails
before it logs anything."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from recscope.errors import OutputError
from recscope.tracking import check_store, track, tracking_uri


class _Cfg(BaseModel):
    k: int = 10
    name: str = "ease"


def _runs(uri: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("recscope")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_run_logs_config_inputs_metrics_and_files(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    out.write_text("{}")
    with track("evaluate", config=_Cfg(), inputs={"rankings": "abc123"}) as run:
        run.log_metrics({"ndcg@10": 0.42, "nan_metric": float("nan")})
        run.log_artifact(out)
    client = MlflowClient(tracking_uri=tracking_uri())
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["k"] == "10" and r.data.params["input.rankings"] == "abc123"
    assert r.data.metrics["ndcg_10"] == pytest.approx(0.42)
    assert "nan_metric" not in r.data.metrics
    names = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"config.json", "result.json"} <= names


def test_nested_runs_link_to_parent_and_failures_are_marked() -> None:
    with track("demo") as parent:
        with pytest.raises(RuntimeError), track("step") as child:
            child.log_metrics({"x": 1.0})
            raise RuntimeError("boom")
    client = MlflowClient(tracking_uri=tracking_uri())
    c = client.get_run(child.run_id)
    assert c.data.tags["mlflow.parentRunId"] == parent.run_id
    assert c.info.status == "FAILED"
    assert client.get_run(parent.run_id).info.status == "FINISHED"


def test_block_failing_before_logging_leaves_no_run(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with pytest.raises(ValueError), track("evaluate", config={"k": 1}, store=store):
        raise ValueError("bad input")
    assert not store.exists()  # not even the folder
    check_store(store)
    assert not store.exists()
    with track("evaluate", config={"k": 1}, store=store):
        pass
    runs = _runs(tracking_uri(store))
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_one_project_store_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{tmp_path / '.recscope' / 'mlflow.db'}"
    with track("describe") as run:
        run.log_metrics({"n": 3})
    assert (tmp_path / ".recscope" / "mlflow.db").exists()
    # an explicit folder wins over the environment, and the environment over the default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    assert tracking_uri() == f"sqlite:///{tmp_path / 'env.db'}"
    assert tracking_uri(tmp_path / "x") == f"sqlite:///{tmp_path / 'x' / 'mlflow.db'}"
    assert tracking_uri("http://host:5000") == "http://host:5000"


def test_unwritable_store_fails_at_once_in_one_line(tmp_path: Path,
                                                    read_only_dir: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(OutputError) as info, track("train", store=read_only_dir / "store"):
        pytest.fail("the block must not run")
    assert time.perf_counter() - t0 < 10  # not MLflow's two-minute retry loop
    msg = str(info.value)
    assert "tracking store" in msg and "\n" not in msg and "--tracking" in msg
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    with pytest.raises(OutputError, match="is a file"):
        check_store(blocker / "store")
    assert blocker.read_text() == "mine"
    folder_db = tmp_path / "dbdir"
    (folder_db / "mlflow.db").mkdir(parents=True)
    with pytest.raises(OutputError, match="not a file"):
        check_store(folder_db)


def test_store_failure_inside_run_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "mlflow.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutputError) as info, track("x", store=bad) as run:
        run.log_metrics({"a": 1.0})
    assert "tracking store failed" in str(info.value) and "\n" not in str(info.value)
    assert os.path.getsize(bad / "mlflow.db") == len(b"this is not a database" * 100)


def test_unreachable_tracking_server_fails_at_once() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(OutputError, match="cannot reach the tracking server"):
        check_store(f"http://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 10
