"""Simulated experiments: config, logs that `experiment analyze` reads, ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from recscope.attribution import CellStats, attribute_metric
from recscope.errors import ConfigError
from recscope.experiments.analysis import analyze
from recscope.experiments.metrics import load_metrics
from recscope.sim import SimulatedExperiment, load_experiment, parse_experiment, run_experiment

TINY = """
name = "tiny"
seed = 3
days = 4
warmup_days = 2
long_run_days = 6
[world]
scale = 0.05
[policy]
retriever = "popular"
ranker = "affinity"
"""

AB = TINY + """
[[experiment]]
name = "ranker"
[experiment.variants.control]
[experiment.variants.treatment]
ranker = "affinity_quality"
"""

FACTORIAL = TINY + """
[[experiment]]
name = "retriever"
layer = "retrieval"
[experiment.variants.control]
[experiment.variants.treatment]
retriever = "embedding_v2"
[[experiment]]
name = "ranker"
layer = "ranking"
[experiment.variants.control]
[experiment.variants.treatment]
ranker = "affinity_quality"
"""


def _write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


Run = tuple[Path, SimulatedExperiment]


def _true_effect(truth: dict, metric: str, variant: str, horizon: str = "short_run") -> float:
    """The true effect row of ``metric`` and ``variant`` in a truth.json."""
    rows = [r for r in truth["effects"] if r["metric"] == metric and r["variant"] == variant
            and r["horizon"] == horizon]
    assert len(rows) == 1, (metric, variant, horizon)
    return rows[0]["estimate"]


@pytest.fixture(scope="module")
def ab_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    d = tmp_path_factory.mktemp("ab")
    spec = load_experiment(_write(d, AB))
    return d / "out", run_experiment(spec, d / "out")


def test_ab_logs_are_read_by_experiment_analyze(ab_run: Run) -> None:
    out, _t = ab_run
    a = pq.read_table(out / "assignments.parquet")
    e = pq.read_table(out / "events.parquet")
    assert a.column_names == ["unit_id", "variant", "first_exposure_ts"]
    assert set(a.column("variant").to_pylist()) == {"control", "treatment"}
    assert len(set(a.column("unit_id").to_pylist())) == a.num_rows
    assert {"unit_id", "ts", "clicks", "impressions", "sessions", "saves"} <= set(e.column_names)
    # every unit's first exposure is its first event of the experiment period
    first = dict(zip(a.column("unit_id").to_pylist(),
                     a.column("first_exposure_ts").cast("int64").to_pylist(), strict=True))
    units = e.column("unit_id").to_numpy()
    ts = e.column("ts").cast("int64").to_numpy()
    assert set(np.unique(units)) == set(first)
    warm_end = ts.min() + 2 * 86_400_000_000
    assert all(first[u] >= warm_end - 86_400_000_000 for u in list(first)[:50])
    card = analyze(str(out / "assignments.parquet"), str(out / "events.parquet"),
                   load_metrics(out / "metrics.toml"))
    by = {r["metric"]: r for r in card.results}
    truth = json.loads((out / "truth.json").read_text())
    assert set(by) == set(truth["metrics"])
    assert truth["n_units"] == a.num_rows
    for m, r in by.items():
        true = _true_effect(truth, m, "treatment")
        assert np.isfinite(true)
        # the estimate is within a generous 5 standard errors of the truth
        se = (r["ci_high"] - r["ci_low"]) / (2 * 1.96)
        assert abs(r["estimate"] - true) < 5 * se + 1e-12, m
    assert np.isfinite(_true_effect(truth, "ctr", "treatment", "long_run"))


def test_truth_matches_a_direct_replay(ab_run: Run) -> None:
    """Without interference the experiment's treated units behave exactly as in the
    all-treatment replay: their per-unit clicks reproduce the truth's cell mean."""
    _out, t = ab_run
    gt = t.truth
    assert gt is not None
    a = t.assignments
    e = t.events
    ts = e.column("ts").cast("int64").to_numpy()
    units = e.column("unit_id").to_numpy()
    first = dict(zip(a.column("unit_id").to_pylist(),
                     a.column("first_exposure_ts").cast("int64").to_pylist(), strict=True))
    variant = dict(zip(a.column("unit_id").to_pylist(), a.column("variant").to_pylist(),
                       strict=True))
    after = ts >= np.array([first[u] for u in units])
    clicks = e.column("clicks").to_numpy()
    tot: dict[int, float] = {}
    for u, c in zip(units[after], clicks[after], strict=True):
        tot[u] = tot.get(u, 0) + c
    treated = [tot.get(u, 0) for u, v in variant.items() if v == "treatment"]
    assert gt.short_run["clicks"]["treatment"] != gt.short_run["clicks"]["control"]
    # mean over treated units vs mean over all units in the treatment world: same
    # per-unit outcomes, different subsets, so compare the treated-subset mean exactly
    assert np.mean(treated) == pytest.approx(
        _subset_mean(t, "treatment"), rel=1e-12)


def _subset_mean(t: SimulatedExperiment, cell: str) -> float:
    """Recompute the mean clicks of the treated units from a fresh all-cell replay."""
    from recscope.experiments.metrics import Metric
    from recscope.sim.environment import Environment
    from recscope.sim.policy_factory import PolicyFactory
    from recscope.sim.true_effects import event_columns, metric_value
    from recscope.sim.world_source import build_world

    spec = parse_experiment(__import__("tomllib").loads(AB))
    truth = build_world(spec.world)
    env = Environment(truth, spec.simulation, seed=spec.seed)
    design = t.cells
    f = PolicyFactory(truth, seed=spec.seed)
    pols = [f.stack(s, n) for s, n in zip(design.cell_specs, design.cell_names, strict=True)]
    st = env.run([pols[0]], days=spec.warmup_days, calibrate=True, record=False).state
    c = design.cell_names.index(cell)
    res = env.run(pols, days=spec.days, state=st, arm=np.full(truth.n_users, c))
    a = t.assignments
    units = a.column("unit_id").to_numpy()
    treated = units[np.array(a.column("variant").to_pylist()) == cell]
    exposure = np.full(truth.n_users, -1, dtype=np.int64)
    exposure[units] = a.column("first_exposure_ts").cast("int64").to_numpy()
    return metric_value(event_columns(res), treated, exposure,
                        Metric("clicks", "mean", column="clicks"), truth.n_users)


def test_factorial_cells_truth_and_attribution(tmp_path: Path) -> None:
    spec = load_experiment(_write(tmp_path, FACTORIAL))
    t = run_experiment(spec, tmp_path / "out")
    a = t.assignments
    assert set(a.column_names) == {"unit_id", "variant", "first_exposure_ts", "retriever",
                                   "ranker"}
    cells = ["control", "retriever", "ranker", "retriever+ranker"]
    assert t.cells.cell_names == cells
    v = np.array(a.column("variant").to_pylist())
    r = np.array(a.column("retriever").to_pylist())
    k = np.array(a.column("ranker").to_pylist())
    assert ((v == "retriever+ranker") == ((r == "treatment") & (k == "treatment"))).all()
    # layers are independent: about a quarter of units per cell
    counts = np.array([(v == c).sum() for c in cells])
    assert (np.abs(counts / counts.sum() - 0.25) < 0.06).all()
    truth = json.loads((tmp_path / "out" / "truth.json").read_text())
    att = truth["attribution"]["ctr"]
    phis = [att["components"][c]["effect"] for c in ("retriever", "ranker")]
    assert sum(phis) == pytest.approx(att["total"], rel=1e-9)
    # estimated attribution from the experiment's per-unit data runs end to end
    e = t.events
    units = e.column("unit_id").to_numpy()
    ts = e.column("ts").cast("int64").to_numpy()
    ids = a.column("unit_id").to_numpy()
    pos = np.full(int(ids.max()) + 1, -1)
    pos[ids] = np.arange(ids.size)
    first = a.column("first_exposure_ts").cast("int64").to_numpy()
    after = ts >= first[pos[units]]
    clicks = np.bincount(pos[units[after]], e.column("clicks").to_numpy()[after], ids.size)
    imps = np.bincount(pos[units[after]], e.column("impressions").to_numpy()[after], ids.size)
    cell = np.array([cells.index(x) for x in v])
    est = attribute_metric(CellStats.from_units(cell, clicks, 2, denominator=imps),
                           ["retriever", "ranker"], metric="ctr")
    assert est.total["effect"] == pytest.approx(
        est.shapley["retriever"]["effect"] + est.shapley["ranker"]["effect"])
    assert abs(est.total["effect"] - att["total"]) < 5 * est.total["se"]


def test_config_errors_name_key_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"exp\.toml.*unknown key"):
        load_experiment(_write(tmp_path, AB + "\nbogus = 1\n"))
    bad = AB.replace("[experiment.variants.control]\n", "[experiment.variants.base]\n")
    with pytest.raises(ConfigError, match="control"):
        load_experiment(_write(tmp_path, bad))
    bad = AB.replace('ranker = "affinity_quality"', 'ranker = "nope"')
    with pytest.raises(ConfigError, match="unknown built-in ranker 'nope'"):
        run_experiment(load_experiment(_write(tmp_path, bad)))
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "missing.toml")


def test_cli_simulate(tmp_path: Path) -> None:
    from recscope.cli import _register, app

    _register()
    cfg = _write(tmp_path, AB)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["simulate", str(cfg), "--out", str(out), "--no-truth",
                                 "--days", "2"])
    assert r.exit_code == 0, r.output
    assert (out / "events.parquet").exists() and not (out / "truth.json").exists()
    s = json.loads((out / "summary.json").read_text())
    assert s["days"] == 2 and s["n_units"] > 0


def test_pipeline_variant(tmp_path: Path) -> None:
    """A variant may be a recscope pipeline TOML (fitted on the world's log)."""
    (tmp_path / "pop.toml").write_text(
        'name = "pop"\n[[retrievers]]\ncomponent = "popularity"\nquota = 50\n')
    text = AB.replace('ranker = "affinity_quality"', 'pipeline = "pop.toml"').replace(
        "long_run_days = 6", "long_run_days = 0").replace("days = 4", "days = 2")
    spec = load_experiment(_write(tmp_path, text))
    assert spec.experiment[0].variants["treatment"]["pipeline"] == str(tmp_path / "pop.toml")
    res = run_experiment(spec)
    assert res.to_dict()["impressions"] > 0
    assert res.truth is not None
    assert set(res.truth.short_run["ctr"]) == {"control", "treatment"}


def test_truth_metrics_use_the_analysis_definitions(ab_run: Run) -> None:
    """The truth's per-unit metric code gives the same per-variant values as
    `recscope experiment analyze` on the same logs (windows, filters, kinds)."""
    import tomllib

    from recscope.experiments.metrics import parse_metrics
    from recscope.sim.true_effects import metric_value

    _, t = ab_run
    cfg = parse_metrics(tomllib.loads("""
unit = "unit_id"
variant = "variant"
control = "control"
[metrics.ctr]
kind = "ratio"
numerator = "clicks"
denominator = "impressions"
[metrics.home_clicks]
kind = "mean"
column = "clicks"
filter = { surface = "home_feed" }
[metrics.returned]
kind = "proportion"
column = "sessions"
window = [1, 3]
[metrics.days]
kind = "count_distinct"
column = "day"
"""))
    card = analyze(t.assignments, t.events, cfg)
    a, e = t.assignments, t.events
    n = int(max(a.column("unit_id").to_numpy().max(), e.column("unit_id").to_numpy().max())) + 1
    exposure = np.full(n, -1, dtype=np.int64)
    ids = a.column("unit_id").to_numpy()
    exposure[ids] = a.column("first_exposure_ts").cast("int64").to_numpy()
    ev = {c: e.column(c).to_numpy(zero_copy_only=False) for c in e.column_names}
    ev["ts"] = e.column("ts").cast("int64").to_numpy()
    ev["unit"] = ev["unit_id"]
    variant = np.array(a.column("variant").to_pylist())
    for r in card.results:
        m = next(x for x in cfg.metrics if x.name == r["metric"])
        for v, key in (("control", "control_mean"), ("treatment", "treatment_mean")):
            mine = metric_value(ev, ids[variant == v], exposure, m, n)
            assert mine == pytest.approx(r[key], rel=1e-9), (m.name, v)


def test_design_traffic_holdout_and_weights() -> None:
    """Assignment goes through recscope.experiments.assignment: traffic ranges, holdouts
    and weights shape who is in the experiment and in which variant."""
    import tomllib

    from recscope.sim.cells import assign_cells

    text = AB.replace('name = "ranker"\n', 'name = "ranker"\ntraffic = [0.0, 0.5]\n'
                      'holdout = 0.1\nweights = [3, 1]\n')
    spec = parse_experiment(tomllib.loads(text))
    d = assign_cells(spec, 20_000)
    share_in = d.in_experiment.mean()
    assert 0.5 * 0.9 - 0.02 < share_in < 0.5 * 0.9 + 0.02
    treated = (d.user_cell == 1)[d.in_experiment].mean()
    assert 0.25 - 0.02 < treated < 0.25 + 0.02
    # outside the experiment every user is served the control cell
    assert (d.user_cell[~d.in_experiment] == 0).all()
    # deterministic: the same spec gives the same design
    np.testing.assert_array_equal(assign_cells(spec, 20_000).user_cell, d.user_cell)


def test_results_round_trip_through_json(ab_run: Run) -> None:
    """summary.json and truth.json are recscope results: they load back, with the same
    true-effect rows; the in-memory logs are not part of the JSON."""
    from recscope.sim import GroundTruth

    out, res = ab_run
    back = SimulatedExperiment.load(out / "summary.json")
    assert back.n_units == res.n_units and back.cell_names == res.cell_names
    assert back.assignments is None and res.assignments is not None
    assert back.truth is not None and res.truth is not None
    assert [e.to_dict() for e in back.effects()] == [e.to_dict() for e in res.effects()]
    truth = GroundTruth.load(out / "truth.json")
    assert truth.short_run == res.truth.short_run and truth.long_run == res.truth.long_run
    rows = res.to_frame()
    assert set(rows["horizon"]) == {"short_run", "long_run"}
    assert (rows["variant"] == "treatment").all() and rows["ci_low"].isna().all()
    assert "true effects" in res.to_html().lower()
