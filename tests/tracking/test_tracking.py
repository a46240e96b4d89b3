"""Tracking writes real MLflow runs: params, metrics, artifacts, parent links, status."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from recscope.tracking import track, tracking_uri


class _Cfg(BaseModel):
    k: int = 10
    name: str = "ease"


def test_run_logs_config_inputs_metrics_and_files(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    out.write_text("{}")
    with track("evaluate", config=_Cfg(), inputs={"rankings": "abc123"}) as run:
        run.log_metrics({"ndcg@10": 0.42, "nan_metric": float("nan")})
        run.log_artifact(out)
    client = MlflowClient(tracking_uri=tracking_uri(None))
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
            raise RuntimeError("boom")
    client = MlflowClient(tracking_uri=tracking_uri(None))
    c = client.get_run(child.run_id)
    assert c.data.tags["mlflow.parentRunId"] == parent.run_id
    assert c.info.status == "FAILED"
    assert client.get_run(parent.run_id).info.status == "FINISHED"


def test_default_store_is_sqlite_in_output_folder(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = tracking_uri(tmp_path / "out")
    assert uri == f"sqlite:///{(tmp_path / 'out' / 'mlflow.db').resolve()}"
    with track("describe", out_dir=tmp_path / "out") as run:
        run.log_metrics({"n": 3})
    assert (tmp_path / "out" / "mlflow.db").exists()
