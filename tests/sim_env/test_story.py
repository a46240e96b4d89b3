"""The end-to-end demo story at its small scale."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from recscope.cli import demo as demo_cli
from recscope.errors import ConfigError
from recscope.story import run_story


def test_demo_runs_the_small_story_and_writes_report_and_summary(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(demo_cli.demo)
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["--out", str(out), "--scale", "small"])
    assert result.exit_code == 0, result.output
    assert "Full stack vs baseline" in result.output
    saved = json.loads((out / "summary.json").read_text())
    for m in ("ctr", "clicks", "sessions"):
        e = saved["metrics"][m]
        assert e["ci_low"] <= e["estimate"] <= e["ci_high"]
        assert isinstance(e["truth"], float)
        shares = e["attribution"]
        assert set(shares) == {"retriever", "ranker"}
        # estimated and true Shapley shares each add up to one
        assert sum(v["share"] for v in shares.values()) == pytest.approx(1.0)
        assert sum(v["true_share"] for v in shares.values()) == pytest.approx(1.0)
    assert {r["stack"] for r in saved["offline"]["rows"]} == {
        "baseline", "candidate", "retriever only", "ranker only"}
    f = saved["offline"]["funnel"][0]
    assert f["retrieval"] >= f["top-20"] >= f["top-10"]
    assert saved["world"]["description"]["events"]["impression"] > 0
    html = (out / "report.html").read_text()
    assert "Plotly" in html and "<script src=" not in html  # inlined, no network
    assert "Shapley" in html and "truth" in html and "by position" in html
    assert (out / "experiment" / "assignments.parquet").exists()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("recscope")
    runs = client.search_runs([exp.experiment_id], "tags.`recscope.command` = 'demo.story'")
    assert runs and runs[0].info.status == "FINISHED"


def test_unknown_scale() -> None:
    with pytest.raises(ConfigError, match="scale"):
        run_story("/nonexistent", scale="huge")
