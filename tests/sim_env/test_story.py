"""The end-to-end demo story at its small scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recscope.errors import ConfigError
from recscope.story import run_story


def test_small_story_writes_report_and_summary(tmp_path: Path) -> None:
    seen: set[str] = set()
    summary = run_story(tmp_path / "demo", scale="small",
                        progress=lambda stage, i, n: seen.add(stage))
    out = tmp_path / "demo"
    saved = json.loads((out / "summary.json").read_text())
    assert saved["metrics"].keys() == summary["metrics"].keys()
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
    html = (out / "report.html").read_text()
    assert "Plotly" in html and "<script src=" not in html  # inlined, no network
    assert "Shapley" in html and "truth" in html
    assert (out / "experiment" / "assignments.parquet").exists()
    assert any(s.startswith("simulate") for s in seen) and "world" in seen


def test_unknown_scale() -> None:
    with pytest.raises(ConfigError, match="scale"):
        run_story("/nonexistent", scale="huge")
