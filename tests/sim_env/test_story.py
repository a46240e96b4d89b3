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
    truth = json.loads((out / "experiment" / "truth.json").read_text())
    for m in ("ctr", "clicks", "sessions"):
        e = saved["metrics"][m]
        # the truth beside the estimate is the experiment's own truth.json row
        row = [r for r in truth["effects"] if r["metric"] == m and
               r["variant"] == "retriever+ranker" and r["horizon"] == "short_run"]
        assert len(row) == 1 and e["truth"] == pytest.approx(row[0]["estimate"], rel=1e-12)
        # the estimate agrees with the ground truth within 3 standard errors, and the
        # coverage flag says whether the interval holds the truth
        se = (e["ci_high"] - e["ci_low"]) / (2 * 1.959963984540054)
        assert abs(e["estimate"] - e["truth"]) < 3 * se, m
        assert e["covered"] == (e["ci_low"] <= e["truth"] <= e["ci_high"])
        # the estimated attribution's intervals hold the true Shapley shares and the
        # true interaction
        shares = e["attribution"]
        assert set(shares) == {"retriever", "ranker"}
        for c, v in shares.items():
            assert v["ci_low"] <= v["true_share"] <= v["ci_high"], (m, c)
        inter = e["interaction"]
        assert inter["ci_low"] <= inter["truth"] <= inter["ci_high"], m
    assert {r["stack"] for r in saved["offline"]["rows"]} == {
        "baseline", "candidate", "retriever only", "ranker only"}
    f = saved["offline"]["funnel"][0]
    assert f["retrieval"] >= f["top-20"] >= f["top-10"]
    assert saved["world"]["description"]["events"]["impression"] > 0
    html = (out / "report.html").read_text()
    assert "Plotly" in html and "<script src=" not in html  # inlined, no network
    assert "Shapley" in html and "truth" in html and "by position" in html
    assert (out / "experiment" / "assignments.parquet").exists()
    # the launch decision on the full stack, with the truth's verdict beside it
    launch = json.loads((out / "launch.json").read_text())
    assert saved["launch"]["decision"] == launch["decision"]
    assert saved["launch"]["truth"] in ("good", "bad", "marginal") and saved["launch"]["reasons"]
    assert (out / "launch.html").exists() and "launch.html" in html
    # what history predicted: a forecast from a corpus on the same world, kept under
    # history/, beside the experiment's own readout and truth of clicks
    h = saved["history"]
    assert h["candidates"] == 16 and h["level"] == 0.9 and not h["reused"]
    assert set(h["cells"]) == {"retriever", "ranker", "retriever+ranker"}
    for c in h["cells"].values():  # each change's family is unseen by the predictor
        assert c["ci_low"] < c["estimate"] < c["ci_high"] and not c["family_seen"]
        assert c["covered"] == (c["ci_low"] <= c["truth"] <= c["ci_high"])
    full = h["cells"]["retriever+ranker"]
    assert full["measured"] == saved["metrics"]["clicks"]["rel_estimate"]
    assert full["truth"] == saved["metrics"]["clicks"]["rel_truth"]
    assert "What history predicted for clicks" in html
    assert (out / "history" / "history.parquet").exists()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("recscope")
    runs = client.search_runs([exp.experiment_id], "tags.`recscope.command` = 'demo.story'")
    assert runs and runs[0].info.status == "FINISHED"


def test_unknown_scale() -> None:
    with pytest.raises(ConfigError, match="scale"):
        run_story("/nonexistent", scale="huge")
