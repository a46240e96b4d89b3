"""OPE streamed from Parquet batches and on Spark: the in-memory estimates to 1e-9.

The scored log holds what the in-memory estimators compute from the log, the policy and
the reward model (π at the logged action, q̂ there and v̂ = Σ π q̂), so the estimators'
own ``columns`` give the same per-round values; only the summation is split. Intervals
come from a Poisson bootstrap keyed by ``round_id``; its standard error is checked
against the in-memory (multinomial) bootstrap's within Monte-Carlo error (B = 2000: the
relative sd of a bootstrap SE is about 1/sqrt(2B) ≈ 1.6%, so we allow 10%).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recscope.errors import ConfigError, DataValidationError
from recscope.ope.estimators import Inputs, make_estimator
from recscope.ope.scale import ope_spark, ope_stream
from recscope.ope.synthetic import SyntheticBandit

ESTIMATORS = ["dm", "ips", "clipped-ips:5", "snips", "dr", "sndr", "switch-dr:4",
              "dr-os:2"]


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Inputs]:
    env = SyntheticBandit(n_actions=6, dim=3, seed=2)
    fb, q = env.log(4000, np.random.default_rng(5))
    q_hat = np.clip(q * 0.8 + 0.05, 0, 1)
    inp = Inputs(fb, env.target(fb), q_hat)
    d = tmp_path_factory.mktemp("ope_scale") / "log"
    t = pa.table({"round_id": np.arange(fb.n_rounds), "reward": fb.reward,
                  "pscore": fb.pscore, "pi": inp.pi, "q_hat": inp.q_logged, "v_hat": inp.v,
                  "day": np.arange(fb.n_rounds) % 3})
    pq.write_to_dataset(t, d, partition_cols=["day"])
    return d, inp


def test_stream_matches_memory(log: tuple[Path, Inputs]) -> None:
    """Every estimator (batches of 700 rounds over a hive folder): estimate to 1e-9, n,
    effective sample size; the Poisson SE within 10% of the in-memory bootstrap SE."""
    d, inp = log
    res = ope_stream(str(d), ESTIMATORS, bootstrap=2000, batch_rows=700)
    for name, row in zip(ESTIMATORS, res.estimates, strict=True):
        mem = make_estimator(name).run(inp, n_bootstrap=2000, seed=0)
        assert row["estimator"] == mem["estimator"]
        assert row.estimate == pytest.approx(mem.estimate, abs=1e-9), name
        assert row.n == mem.n == 4000
        assert row["diagnostics"]["ess"] == pytest.approx(mem["diagnostics"]["ess"], rel=1e-9)
        assert abs(row.se / mem.se - 1) < 0.10, (name, row.se, mem.se)


def test_refusals(log: tuple[Path, Inputs], tmp_path: Path) -> None:
    """Whole-log estimators, a missing column and a bad propensity: named, before work."""
    d, _ = log
    with pytest.raises(ConfigError, match="switch-dr:auto"):
        ope_stream(str(d), ["switch-dr"])
    with pytest.raises(ConfigError, match="iips"):
        ope_stream(str(d), ["iips"])
    pq.write_table(pa.table({"reward": [1.0], "pscore": [0.5]}), tmp_path / "x.parquet")
    with pytest.raises(DataValidationError, match=r"x\.parquet.*'pi'"):
        ope_stream(str(tmp_path / "x.parquet"), ["ips"])
    pq.write_table(pa.table({"reward": [1.0], "pscore": [0.0], "pi": [.5]}),
                   tmp_path / "y.parquet")
    with pytest.raises(DataValidationError, match=r"y\.parquet.*pscore.*\(0, 1\]"):
        ope_stream(str(tmp_path / "y.parquet"), ["ips"])


pyspark = pytest.importorskip("pyspark", reason="the spark extra is not installed")


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    """One local SparkSession for the module (2 cores)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[2]").appName("recscope-tests")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.driver.memory", "1g").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_spark_matches_stream(spark: object, log: tuple[Path, Inputs]) -> None:
    """Spark (3 partitions, from a catalog table): estimates equal in-memory to 1e-9 and
    every number equals the stream engine's (same Poisson weights by round_id)."""
    d, inp = log
    spark.read.parquet(str(d)).repartition(3).createOrReplaceTempView("ope_log")
    got = ope_spark("table:ope_log", ESTIMATORS, bootstrap=300, session=spark)
    ref = ope_stream(str(d), ESTIMATORS, bootstrap=300)
    for name, a, b in zip(ESTIMATORS, ref.estimates, got.estimates, strict=True):
        mem = make_estimator(name).point(inp)
        assert b.estimate == pytest.approx(mem, abs=1e-9)
        for f in ("ci_low", "ci_high", "se"):
            assert getattr(b, f) == pytest.approx(getattr(a, f), abs=1e-9), (name, f)


def test_predictions_computed_per_batch(log: tuple[Path, Inputs], tmp_path: Path) -> None:
    """A reward model applied per batch (``predict``) gives the estimates of the same
    predictions supplied as columns; without either, model-based estimators are refused."""
    d, inp = log
    t = pq.read_table(d).rename_columns({"q_hat": "m_q", "v_hat": "m_v"})
    pq.write_table(t, tmp_path / "raw.parquet")

    def predict(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        return (batch.column("m_q").to_numpy(), batch.column("m_v").to_numpy())

    got = ope_stream(str(tmp_path / "raw.parquet"), ["dr", "sndr"], bootstrap=0,
                     predict=predict, batch_rows=900)
    for name, row in zip(["dr", "sndr"], got.estimates, strict=True):
        assert row.estimate == pytest.approx(make_estimator(name).point(inp), abs=1e-9)
    with pytest.raises(DataValidationError, match="q_hat"):
        ope_stream(str(tmp_path / "raw.parquet"), ["dr"])
