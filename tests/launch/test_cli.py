"""``recscope launch decide|report|decompose|portfolio``: outputs, and bad input as one
line naming file and key, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from recscope.cli import run
from recscope.experiments import analyze
from recscope.experiments.trees import load_metrics_with_trees
from recscope.offline.evaluate import EvaluationResult
from recscope.ope.result import OPEResult
from recscope.results import Effect
from tests.launch._data import ROOT, experiment_dir

LAUNCH = (ROOT / "examples" / "launch.toml").read_text()


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A truly good change: saves up 15% on the home feed, hides down."""
    return experiment_dir(tmp_path_factory.mktemp("good") / "exp", n=20000, saves_lift=1.15,
                          hides_lift=0.8)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = run(["launch", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_decide_then_report_then_portfolio(good: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    dec = tmp_path / "decision.json"
    rc, out, err = cli(capsys, "decide", ROOT / "examples" / "launch.toml", "--experiment",
                       good, "--json", dec)
    assert rc == 0, err
    data = json.loads(dec.read_text())
    assert data["kind"] == "launch_decision" and data["decision"] == "ship"
    assert data["truth_verdict"] == "good"
    assert "SHIP" in out
    prim = next(c for c in data["checks"] if c["check"] == "primary")
    assert prim["status"] == "win" and prim["value"] > 0 and prim["source"] == str(good)
    assert {r["level"] for r in data["tree"]} >= {"parent", "child", "part"}
    page = tmp_path / "report.html"
    rc, _, err = cli(capsys, "report", dec, "--out", page)
    assert rc == 0, err
    html = page.read_text()
    assert "Decision: SHIP" in html and "Per surface" in html
    assert "<script src=" not in html  # plotly.js inlined
    # portfolio of this launch and a second one of another team
    other = json.loads(dec.read_text())
    other.update(name="new-retriever", team="retrieval", components=["retriever"])
    second = tmp_path / "second.json"
    second.write_text(json.dumps(other))
    pf = tmp_path / "portfolio.json"
    rc, _, err = cli(capsys, "portfolio", dec, second, "--json", pf)
    assert rc == 0, err
    rows = json.loads(pf.read_text())["impacts"]
    total = next(r for r in rows if r["group"] == "all")
    r = prim["estimate"]
    assert total["estimate"] == pytest.approx((1 + r) ** 2 - 1, rel=1e-12)
    assert total["ci_low"] < total["estimate"] < total["ci_high"]
    assert {(x["group"], x["name"]) for x in rows} >= {("team", "ranking"),
                                                        ("team", "retrieval"),
                                                        ("component", "ranker"),
                                                        ("component", "retriever")}


def test_scorecard_folder_gives_the_same_decision(good: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = load_metrics_with_trees(good / "metrics.toml")
    card = analyze(good / "assignments.parquet", good / "events.parquet", config)
    folder = tmp_path / "card"
    folder.mkdir()
    (folder / "scorecard.json").write_text(json.dumps(card.to_dict()))
    trees = tmp_path / "card" / "trees.json"
    rc, _, err = cli(capsys, "decompose", "--assignments", good / "assignments.parquet",
                     "--events", good / "events.parquet", "--metrics", good / "metrics.toml",
                     "--json", trees)
    assert rc == 0, err
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert cli(capsys, "decide", ROOT / "examples" / "launch.toml", "--experiment", good,
               "--json", a)[0] == 0
    assert cli(capsys, "decide", ROOT / "examples" / "launch.toml", "--experiment", folder,
               "--json", b)[0] == 0
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    assert da["decision"] == db["decision"]
    for x, y in zip(da["checks"], db["checks"], strict=True):
        assert x["value"] == pytest.approx(y["value"], rel=1e-6, abs=1e-12)
    assert [r["estimate"] for r in da["tree"]] == pytest.approx(
        [r["estimate"] for r in db["tree"]], rel=1e-12)


def test_gates(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    offline = tmp_path / "eval.json"
    EvaluationResult(estimates=[Effect("ndcg@10", 0.31, 0.29, 0.33, 0.01, n=500)],
                     per_user=pa.table({"user": [0]}), n_users=500).save(offline)
    ope = tmp_path / "ope.json"
    OPEResult(policy="p", logs="l", n_rounds=1000, logging_value=0.10, estimates=[
        Effect("policy_value", 0.102, 0.095, 0.109, 0.004, n=1000,
               extra={"estimator": "dr", "diagnostics": {}})]).save(ope)
    launch = tmp_path / "launch.toml"
    launch.write_text(LAUNCH + '\n[gates.offline]\nmetric = "ndcg@10"\nthreshold = 0.30\n'
                      '[gates.ope]\nestimator = "dr"\nmin_lift = 0.0\n')
    out = tmp_path / "d.json"
    rc, _, err = cli(capsys, "decide", launch, "--experiment", good, "--offline", offline,
                     "--ope", ope, "--json", out)
    assert rc == 0, err
    data = json.loads(out.read_text())
    gates = {c["check"]: c for c in data["checks"] if c["check"].startswith("gate")}
    assert gates["gate:offline"]["status"] == "fail" and gates["gate:offline"]["value"] == 0.29
    assert gates["gate:ope"]["status"] == "fail" and gates["gate:ope"]["threshold"] == 0.10
    assert data["decision"] == "iterate"
    # a declared gate without its input is an error
    rc, _, err = cli(capsys, "decide", launch, "--experiment", good, "--offline", offline)
    assert rc == 2 and "gates.ope" in err and str(launch) in err


def _bad(capsys: pytest.CaptureFixture[str], tmp_path: Path, launch_text: str,
         folder: Path, *extra: str) -> str:
    launch = tmp_path / "launch.toml"
    launch.write_text(launch_text)
    out = tmp_path / "out" / "decision.json"
    html = tmp_path / "out" / "report.html"
    rc, _, err = cli(capsys, "decide", launch, "--experiment", folder, "--json", out,
                          "--html", html, *extra)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not html.exists()
    return err


def test_guardrail_without_margin(good: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    err = _bad(capsys, tmp_path, LAUNCH.replace("margin = 0.05", ""), good)
    assert "guardrails.hides.margin" in err and "launch.toml" in err


def test_launch_naming_a_missing_metric(good: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    err = _bad(capsys, tmp_path, LAUNCH.replace("[guardrails.hides]", "[guardrails.bounces]"),
               good)
    assert "guardrails.bounces" in err and "launch.toml" in err and "'bounces'" in err


def test_tree_whose_children_do_not_multiply(good: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    metrics = tmp_path / "metrics.toml"
    metrics.write_text((good / "metrics.toml").read_text().replace(
        '"saves_per_impression"]', '"saves_per_impression", "sessions"]'))
    err = _bad(capsys, tmp_path, LAUNCH, good, "--metrics", str(metrics))
    assert "trees.saves" in err and str(metrics) in err and "multiply" in err


def test_unknown_key_and_bad_folder(good: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    err = _bad(capsys, tmp_path, LAUNCH.replace("alpha = 0.05", "alpha = 0.05\nalfa = 1"),
               good)
    assert "alfa" in err
    err = _bad(capsys, tmp_path, LAUNCH, tmp_path)
    assert "scorecard.json" in err


def test_long_run_gate_and_report_from_launch_toml(good: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    long_run = tmp_path / "long.json"
    long_run.write_text(json.dumps({"kind": "projection", "effects": [
        {"metric": "saves", "estimate": 0.02, "ci_low": -0.01, "ci_high": 0.05, "se": 0.015,
         "p_value": None, "n": 100, "rel_effect": 0.04, "horizon": "long_run"},
        {"metric": "saves", "estimate": 0.5, "horizon": "short_run"}]}))
    launch = tmp_path / "launch.toml"
    launch.write_text(LAUNCH + '\n[gates.long_run]\nmetric = "saves"\nthreshold = 0.0\n')
    page = tmp_path / "launch.html"
    rc, out, err = cli(capsys, "report", launch, "--experiment", good, "--long-run", long_run,
                       "--out", page)
    assert rc == 0, err
    assert "ITERATE" in out
    html = page.read_text()
    assert "Long run" in html and "+4.00%" in html and "[-2.00%, +10.00%]" in html
    # the relative interval is the absolute one scaled by rel_effect / estimate
    assert "long-run saves +4.00% [-2.00%, +10.00%]: lower bound &lt;= +0.00%" in html
