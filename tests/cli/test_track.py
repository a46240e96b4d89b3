"""``recscope simulate LONG_RUN.toml`` and ``recscope track``: outputs and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recscope.experiments.tracking import TrackingResult
from tests.cli.inputs import invoke

TOML = """name = "tiny-long-run"
seed = 2
weeks = 2
warmup_days = 2

[world]
scale = 0.02

[holdout]
share = 0.25

[[launch]]
day = 3
surface = "home_feed"
change = {ranker = "affinity_quality"}

[[launch]]
day = 8
surface = "search"
change = {ranker = "popularity"}
"""


EXPERIMENT = """
[[experiment]]
name = "home-retriever"
surface = "home_feed"
start_day = 4
end_day = 13
[experiment.variants.control]
[experiment.variants.treatment]
retriever = "embedding_v2"
"""


def write_long_run(folder: Path) -> Path:
    """Simulate the tiny long run into ``folder`` (also used by tests/test_browser.py)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    toml = folder.parent / "tiny_long_run.toml"
    toml.write_text(TOML)
    code, out, err = invoke(["simulate", str(toml), "--out", str(folder)], folder.parent)
    assert code == 0, err or out
    return folder


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_long_run(tmp_path_factory.mktemp("track") / "sim")


def test_simulate_then_track(sim: Path, tmp_path: Path) -> None:
    launches = json.loads((sim / "launches.json").read_text())
    assert [x["day"] for x in launches["launches"]] == [3, 8]
    out = tmp_path / "t"
    code, _, err = invoke(["track", str(sim), "--out", str(out), "--json",
                           str(tmp_path / "t.json")], tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "series.csv", "tracking.html", "tracking.json"]
    r = TrackingResult.load(out / "tracking.json")
    assert r.surfaces == ["home_feed", "related", "search"]
    cum = [x for x in r.values if x["series"] == "cumulative" and x["look"] == 14]
    assert len(cum) == 4 * 2 and all("true_effect" in x for x in cum)
    pre = [x for x in r.values if x["series"] == "window" and x["window"] == 0]
    assert pre and all(x["true_effect"] == 0.0 for x in pre)
    assert "plotly" in (out / "tracking.html").read_text()
    assert json.loads((tmp_path / "t.json").read_text())["kind"] == "holdout_tracking"


def test_track_with_files(sim: Path, tmp_path: Path) -> None:
    html = tmp_path / "t.html"
    code, _, err = invoke(["track", "--assignments", str(sim / "assignments.parquet"),
                           "--events", str(sim / "events.parquet"), "--metrics", "impressions",
                           "--end-day", "14", "--html", str(html)], tmp_path)
    assert code == 0, err
    assert "impressions" in html.read_text()
    code, _, err = invoke(["track", str(sim), "--buckets", "16", "--json",
                           str(tmp_path / "b.json")], tmp_path)
    assert code == 0, err
    fast = TrackingResult.load(tmp_path / "b.json")
    assert fast.buckets == 16 and len(fast.values) == 4 * 2 * (2 + 2 + 4)  # 4 window looks
    code, _, err = invoke(["track", str(sim), "--buckets", "16", "--pre-days", "2",
                           "--json", str(tmp_path / "bc.json")], tmp_path)
    assert code == 0, err
    adjusted = TrackingResult.load(tmp_path / "bc.json")
    assert adjusted.pre_days == 2 and adjusted.buckets == 16
    assert [x["n"] for x in adjusted.values] == [x["n"] for x in fast.values]
    assert any(x["estimate"] != y["estimate"] for x, y in zip(adjusted.values, fast.values,
                                                                strict=True))


def _bad_toml(tmp_path: Path, old: str, new: str) -> Path:
    p = tmp_path / "bad.toml"
    assert old in TOML
    p.write_text(TOML.replace(old, new, 1))
    return p


@pytest.mark.parametrize(("old", "new", "message"), [
    ("share = 0.25", "share = 0.0", "holdout.share must be above 0 and below 0.5"),
    ("share = 0.25", "share = 0.5", "holdout.share must be above 0 and below 0.5"),
    ("share = 0.25", "share = 0.25\nstart_day = 5", "before the holdout starts"),
    ('surface = "search"', 'surface = "stories"', "unknown surface 'stories'"),
    ('change = {ranker = "popularity"}\n', 'change = {ranker = "popularity"}\n' + EXPERIMENT
     .replace("end_day = 13", "end_day = 20"), "ends after the last simulated day"),
    ('change = {ranker = "popularity"}\n', 'change = {ranker = "popularity"}\n' + EXPERIMENT
     .replace("end_day = 13", "end_day = 13\nholdout = 0.1"), "never includes the long-term holdout's units"),
])
def test_simulate_bad_long_run_file(tmp_path: Path, old: str, new: str, message: str) -> None:
    toml = _bad_toml(tmp_path, old, new)
    out = tmp_path / "out"
    code, _, err = invoke(["simulate", str(toml), "--out", str(out)], tmp_path)
    assert code == 2
    assert message in err and "bad.toml" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_track_bad_inputs(sim: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(sim, bad)
    a = pq.read_table(sim / "assignments.parquet")
    pq.write_table(a.drop(["holdout"]), bad / "assignments.parquet")
    out = tmp_path / "out"
    code, _, err = invoke(["track", str(bad), "--out", str(out)], tmp_path)
    assert code == 2 and "assignments.parquet" in err and "'holdout'" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()

    pq.write_table(a, bad / "assignments.parquet")
    ev = pq.read_table(sim / "events.parquet")
    pq.write_table(ev.drop(["day"]), bad / "events.parquet")
    code, _, err = invoke(["track", str(bad), "--out", str(out)], tmp_path)
    assert code == 2 and "events.parquet" in err and "'day'" in err and not out.exists()

    shutil.copy(sim / "events.parquet", bad / "events.parquet")
    plan = json.loads((sim / "launches.json").read_text())
    plan["launches"][1]["surface"] = "stories"
    (bad / "launches.json").write_text(json.dumps(plan))
    code, _, err = invoke(["track", str(bad), "--out", str(out)], tmp_path)
    assert code == 2 and "launches.json" in err and "'stories'" in err and not out.exists()

    plan["launches"][1]["surface"] = "search"
    plan["start_day"] = 5
    (bad / "launches.json").write_text(json.dumps(plan))
    code, _, err = invoke(["track", str(bad), "--out", str(out)], tmp_path)
    assert code == 2 and "before the holdout starts" in err and not out.exists()

    code, _, err = invoke(["track", str(sim), "--metrics", "clicks,nope", "--out", str(out)],
                          tmp_path)
    assert code == 2 and "'nope'" in err and not out.exists()


def test_simulated_experiment_is_analysed_as_is(tmp_path: Path) -> None:
    toml = tmp_path / "with_experiment.toml"
    toml.write_text(TOML + EXPERIMENT)
    sim = tmp_path / "sim"
    code, out, err = invoke(["simulate", str(toml), "--out", str(sim)], tmp_path)
    assert code == 0, err or out
    assert "home-retriever" in out
    folder = sim / "experiments" / "home-retriever"
    code, _, err = invoke(["experiment", "analyze", "--assignments",
                           str(folder / "assignments.parquet"), "--events",
                           str(folder / "events.parquet"), "--metrics",
                           str(folder / "metrics.toml"), "--json", str(tmp_path / "card.json")],
                          tmp_path)
    assert code == 0, err
    card = json.loads((tmp_path / "card.json").read_text())
    truth = json.loads((folder / "truth.json").read_text())
    assert truth["experiment"] == "home-retriever"
    true = {(e["metric"], e["variant"]) for e in truth["effects"]}
    assert {(r["metric"], r["variant"]) for r in card["results"]} <= true
    # the holdout is tracked as before, beside the experiment
    code, _, err = invoke(["track", str(sim), "--json", str(tmp_path / "t.json")], tmp_path)
    assert code == 0, err
