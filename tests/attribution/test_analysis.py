"""Attribution from logs: cells pivoted and aggregated in DuckDB equal a unit-level check."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recscope.attribution import AttributionResult, CellStats, attribute, attribute_metric
from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.metrics import parse_metrics

CONFIG = {
    "unit": "unit_id", "variant": "variant", "control": "control",
    "metrics": {"clicks": {"kind": "mean", "column": "clicks"},
                "ctr": {"kind": "ratio", "numerator": "clicks", "denominator": "impressions"}},
}


def _factorial(tmp_path: Path, n: int = 4000, seed: int = 0) -> tuple[Path, Path, dict]:
    rng = np.random.default_rng(seed)
    units = np.arange(n)
    z = rng.integers(0, 2, (n, 2))
    cell = z[:, 0] + 2 * z[:, 1]
    rate = np.array([0.10, 0.12, 0.11, 0.15])[cell]
    imp = rng.poisson(30, n) + 1
    clicks = rng.binomial(imp, rate)
    rows = []
    for j, layer in enumerate(["retriever", "ranker"]):
        rows.append(pa.table({"unit_id": units, "layer": [layer] * n,
                              "variant": np.where(z[:, j] == 1, "treatment", "control")}))
    a = pa.concat_tables(rows)
    # one unit listed twice in a layer with different variants: must be excluded
    a = pa.concat_tables([a, pa.table({"unit_id": [0], "layer": ["ranker"],
                                       "variant": ["treatment" if z[0, 1] == 0 else "control"]})])
    # events: several rows per unit (split impressions/clicks in two halves)
    half = imp // 2
    ch = np.minimum(clicks, half)
    ev = pa.table({"unit_id": np.r_[units, units], "impressions": np.r_[half, imp - half],
                   "clicks": np.r_[ch, clicks - ch]})
    pq.write_table(a, tmp_path / "assignments.parquet")
    pq.write_table(ev, tmp_path / "events.parquet")
    return tmp_path / "assignments.parquet", tmp_path / "events.parquet", {
        "cell": cell[1:], "clicks": clicks[1:].astype(float), "imp": imp[1:].astype(float)}


def test_engine_cells_match_unit_level_computation(tmp_path: Path) -> None:
    a, e, truth = _factorial(tmp_path)
    res = attribute(a, e, parse_metrics(CONFIG), components=["retriever", "ranker"], seed=1)
    assert res.data_checks["units_excluded"] == 1
    ref = attribute_metric(CellStats.from_units(truth["cell"], truth["clicks"], 2),
                           ["retriever", "ranker"], seed=1).to_dict()
    got = res.by_metric()["clicks"]
    assert got["total"].estimate == pytest.approx(ref["total"]["effect"], rel=1e-9)
    for comp in ("retriever", "ranker"):
        row, want = got["components"][comp], ref["components"][comp]
        for key, ref_key in (("estimate", "effect"), ("se", "se"), ("share", "share"),
                             ("share_ci_low", "ci_low"), ("share_ci_high", "ci_high"),
                             ("ci_low", "effect_ci_low"), ("ci_high", "effect_ci_high")):
            assert row[key] == pytest.approx(want[ref_key], rel=1e-7)
    ref_ctr = attribute_metric(CellStats.from_units(truth["cell"], truth["clicks"], 2,
                                                    denominator=truth["imp"]),
                               ["retriever", "ranker"], seed=1).to_dict()
    term = "retriever×ranker"
    assert res.by_metric()["ctr"]["interactions"][term].estimate == pytest.approx(
        ref_ctr["interactions"][term]["effect"], rel=1e-9)
    assert res.by_metric()["ctr"]["interactions"][term].se == pytest.approx(
        ref_ctr["interactions"][term]["se"], rel=1e-6)


def test_result_round_trip_and_render(tmp_path: Path) -> None:
    a, e, _ = _factorial(tmp_path, n=800)
    res = attribute(a, e, parse_metrics(CONFIG), n_boot=500)
    assert res.components == ["ranker", "retriever"]  # layers in sorted order by default
    back = AttributionResult.load(res.save(tmp_path / "attr.json"))
    assert back.to_dict() == res.to_dict()
    page = res.save(tmp_path / "attr.html").read_text()
    assert "Shapley value per component" in page
    assert all("SELECT" in s.upper() for s in res.sql)


def test_bad_inputs_name_the_problem(tmp_path: Path) -> None:
    a, e, _ = _factorial(tmp_path, n=200)
    with pytest.raises(DataValidationError, match="'search' not in the data"):
        attribute(a, e, parse_metrics(CONFIG), components=["retriever", "search"])
    with pytest.raises(ConfigError, match="'segment'"):
        attribute(a, e, parse_metrics(CONFIG), layer="segment")
    bad = dict(CONFIG, metrics={"x": {"kind": "mean", "column": "nope"}})
    with pytest.raises(ConfigError, match="nope"):
        attribute(a, e, parse_metrics(bad))


def test_cli_writes_json_with_shares_and_interactions(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    a, e, _ = _factorial(tmp_path, n=1500)
    metrics = tmp_path / "m.toml"
    metrics.write_text('unit = "unit_id"\ncontrol = "control"\n'
                       '[metrics.ctr]\nkind = "ratio"\nnumerator = "clicks"\n'
                       'denominator = "impressions"\n')
    out = tmp_path / "attr.json"
    proc = subprocess.run([sys.executable, "-m", "recscope.cli", "attribute", "--assignments",
                           str(a), "--events", str(e), "--metrics", str(metrics), "--json",
                           str(out), "--tracking", str(tmp_path)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in json.loads(out.read_text())["estimates"] if r["metric"] == "ctr"]
    shapley = {r["term"]: r for r in rows if r["role"] == "shapley"}
    assert set(shapley) == {"ranker", "retriever"}
    for r in shapley.values():
        assert r["share_ci_low"] <= r["share"] <= r["share_ci_high"]
        assert r["ci_low"] <= r["estimate"] <= r["ci_high"]
    assert {r["term"] for r in rows if r["role"] == "interaction"} == {"ranker×retriever"}
    assert sum(r["estimate"] for r in shapley.values()) == pytest.approx(
        next(r["estimate"] for r in rows if r["role"] == "total"))
    bad = subprocess.run([sys.executable, "-m", "recscope.cli", "attribute", "--assignments",
                          str(a), "--events", str(e), "--metrics", str(metrics),
                          "--component", "nosuch", "--tracking", str(tmp_path)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "'nosuch' not in the data" in bad.stderr


def test_wide_format_with_one_column_per_component(tmp_path: Path) -> None:
    a, e, _ = _factorial(tmp_path)
    con = duckdb.connect()
    wide = con.sql(
        "SELECT unit_id, max(CASE WHEN layer = 'retriever' THEN variant END) AS retriever, "
        "max(CASE WHEN layer = 'ranker' THEN variant END) AS ranker, 'x' AS variant "
        f"FROM read_parquet('{a}') GROUP BY unit_id").to_arrow_table()
    long_res = attribute(a, e, parse_metrics(CONFIG), components=["retriever", "ranker"])
    wide_res = attribute(wide, e, parse_metrics(CONFIG), components=["retriever", "ranker"])
    # unit 0 (listed twice in the long table) is only excluded in the long format
    assert long_res.data_checks["units"] == wide_res.data_checks["units"] == 4000
    assert (long_res.data_checks["units_excluded"], wide_res.data_checks["units_excluded"]) == (
        1, 0)
    with pytest.raises(ConfigError, match="name the layer column"):
        attribute(wide, e, parse_metrics(CONFIG))
    with pytest.raises(DataValidationError, match="'search' not in columns"):
        attribute(wide, e, parse_metrics(CONFIG), components=["retriever", "search"])
    assert set(wide_res.by_metric()["ctr"]["components"]) == {"retriever", "ranker"}
