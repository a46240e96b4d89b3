"""The Spark engine gives the same numbers as DuckDB (to 1e-9) on a small experiment."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from recscope.experiments.analysis import Scorecard, analyze
from recscope.experiments.metrics import parse_metrics
from tests.experiments._data import TOML, make_experiment

pyspark = pytest.importorskip("pyspark", reason="the spark extra is not installed")
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    """One local SparkSession for the module, with few partitions to keep it fast."""
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("recscope-tests")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.default.parallelism", "2")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.adaptive.enabled", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.driver.memory", "1g")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    assign, events = make_experiment(n_units=400, seed=3)
    d = tmp_path_factory.mktemp("spark")
    for df in (assign, events):
        for c in df.columns:
            if str(df[c].dtype).startswith("datetime64"):
                df[c] = df[c].astype("datetime64[us, UTC]")
    assign.to_parquet(d / "assign.parquet")
    events.to_parquet(d / "events.parquet")
    return str(d / "assign.parquet"), str(d / "events.parquet")


def _close(a: Scorecard, b: Scorecard) -> None:
    assert len(a.results) == len(b.results) > 0
    assert len(a.segment_results) == len(b.segment_results) > 0
    for ra, rb in zip(a.results + a.segment_results, b.results + b.segment_results,
                      strict=True):
        assert (ra["metric"], ra["variant"], ra.get("segment_value")) == (
            rb["metric"], rb["variant"], rb.get("segment_value"))
        assert (ra["metric"], ra["variant"]) == (rb["metric"], rb["variant"])
        for key, va in ra.to_dict().items():
            vb = rb[key]
            if isinstance(va, float) and math.isfinite(va):
                assert vb == pytest.approx(va, rel=1e-9, abs=1e-9), (ra["metric"], key)
            else:
                assert va == vb or (va != va and vb != vb), key
    assert a.srm["p_value"] == pytest.approx(b.srm["p_value"], rel=1e-9)
    assert a.data_checks["units"] == b.data_checks["units"]


def test_spark_matches_duckdb(spark: object, files: tuple[str, str]) -> None:
    """Windows, filters, CUPED (pre-period and covariates), ratio, count distinct, quantile
    and segments: every number equal; events read from a table of the Spark catalog."""
    from recscope.experiments.engines import SparkEngine

    assign, events = files
    spark.read.parquet(events).createOrReplaceTempView("exp_events")  # type: ignore[attr-defined]
    cfg = parse_metrics(tomllib.loads(TOML))
    duck = analyze(assign, events, cfg, engine="duckdb")
    spk = analyze(assign, "table:exp_events", cfg, engine=SparkEngine(spark))
    _close(duck, spk)
    assert any(r["cuped"] for r in spk.results)


def test_spark_power_analysis_matches_duckdb(spark: object, files: tuple[str, str]) -> None:
    """The design command's history statistics (windows, pre-period CUPED, ratios) are
    the same on Spark."""
    from recscope.experiments.design import ExperimentDesign, power_analysis
    from recscope.experiments.engines import SparkEngine

    assign, events = files
    cfg = parse_metrics(tomllib.loads(TOML))
    design = ExperimentDesign(units_per_day=100, days=(7,), mde=(0.1,))
    duck = power_analysis(assign, events, cfg, design, engine="duckdb").to_dict()
    spk = power_analysis(assign, events, cfg, design, engine=SparkEngine(spark)).to_dict()
    compared = 0
    for key in ("metrics", "mde", "sample_size"):
        assert len(duck[key]) == len(spk[key]) > 0, key
        for ra, rb in zip(duck[key], spk[key], strict=True):
            for k, va in ra.items():
                if isinstance(va, float) and math.isfinite(va):
                    assert rb[k] == pytest.approx(va, rel=1e-9, abs=1e-12), (key, k)
                    compared += 1
    assert compared > 20


def test_spark_caps_nulls_and_checks_match_duckdb(spark: object, tmp_path: Path) -> None:
    """Caps (a quantile computed in the engine, and a fixed value), null policies, the
    data checks and the quantile histogram: the same on Spark as on DuckDB (1e-9)."""
    import numpy as np
    import pandas as pd

    from recscope.experiments.engines import SparkEngine

    rng = np.random.default_rng(8)
    n = 600
    a = pd.DataFrame({"user_id": np.arange(n), "variant": rng.choice(["control", "t"], n)})
    e = pd.DataFrame({"user_id": rng.integers(0, n + 5, 4000),
                      "x": np.round(rng.pareto(1.2, 4000) * 10, 2),
                      "y": rng.integers(0, 4, 4000).astype(float)})
    e.loc[[3, 9], "y"] = np.nan
    a.to_parquet(tmp_path / "a.parquet")
    e.to_parquet(tmp_path / "e.parquet")
    cfg = parse_metrics({"unit": "user_id", "metrics": {
        "x_capped": {"kind": "mean", "column": "x", "cap": {"quantile": 0.99}},
        "x_fixed": {"kind": "mean", "column": "x", "cap": {"value": 50.0}},
        "y_zero": {"kind": "mean", "column": "y", "nulls": "zero"},
        "y_drop": {"kind": "mean", "column": "y", "nulls": "drop"},
        "y_median": {"kind": "quantile", "column": "y", "nulls": "drop"}}})
    paths = (str(tmp_path / "a.parquet"), str(tmp_path / "e.parquet"))
    duck = analyze(*paths, cfg, engine="duckdb")
    spk = analyze(*paths, cfg, engine=SparkEngine(spark))
    caps_d, caps_s = duck.data_checks["caps"], spk.data_checks["caps"]
    assert caps_s["x_capped"]["value"] == pytest.approx(caps_d["x_capped"]["value"],
                                                        rel=1e-9, abs=1e-9)
    for name in ("x_capped", "x_fixed"):
        assert caps_s[name]["units_capped"] == caps_d[name]["units_capped"] > 0
    for key in ("units_with_events_but_no_assignment", "nulls", "units"):
        assert spk.data_checks[key] == duck.data_checks[key], key
    for ra, rb in zip(duck.results, spk.results, strict=True):
        for key, va in ra.to_dict().items():
            vb = rb.to_dict()[key]
            if isinstance(va, float) and math.isfinite(va):
                assert vb == pytest.approx(va, rel=1e-9, abs=1e-9), (ra.metric, key)
            else:
                assert va == vb or (va != va and vb != vb), (ra.metric, key)
