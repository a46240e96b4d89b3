"""The Spark engine gives the same numbers as DuckDB (to 1e-9) on a small experiment."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator

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
