"""The history's union query gives the same table in Spark SQL as in DuckDB."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recscope.history.store import union_sql

pytest.importorskip("pyspark", reason="the spark extra is not installed")
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")


def _sources(tiny_corpus: Path) -> dict[str, pa.Table]:
    """Two sources: 8 candidates, and 6 of which 3 repeat the first source's with another
    replay estimate, one column fewer and one more."""
    t = pq.read_table(tiny_corpus / "history.parquet")
    scalar = [c for c in t.column_names if not pa.types.is_list(t.schema.field(c).type)]
    t = t.select(scalar)
    first = t.slice(0, 8)
    second = t.slice(5, 6).drop_columns(["ope_ess"])
    second = second.set_column(second.column_names.index("replay_estimate"), "replay_estimate",
                               pa.array([9.0] * second.num_rows))
    second = second.append_column("note", pa.array(["later"] * second.num_rows))
    return {"mlflow_rows": first, "results_rows": second}


def test_union_same_in_spark_and_duckdb(tiny_corpus: Path) -> None:
    import duckdb
    from pyspark.sql import SparkSession

    tables = _sources(tiny_corpus)
    cols = {k: t.column_names for k, t in tables.items()}
    con = duckdb.connect()
    for k, t in tables.items():
        con.register(k, t)
    ddb = con.sql(union_sql(cols)).to_arrow_table().to_pylist()
    assert [r["candidate_id"] for r in ddb] == sorted({r["candidate_id"] for r in ddb})
    assert len(ddb) == 11  # 8 + 6 - 3 duplicates
    by_id = {r["candidate_id"]: r for r in ddb}
    first_ids = set(tables["mlflow_rows"].column("candidate_id").to_pylist())
    for cid, r in by_id.items():  # the first source wins; absent columns are NULL
        assert (r["replay_estimate"] != 9.0) == (cid in first_ids)
        assert (r["note"] is None) == (cid in first_ids)
    spark = (SparkSession.builder.master("local[1]").appName("recscope-history-test")
             .config("spark.sql.shuffle.partitions", "1")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "1g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        for k, t in tables.items():
            spark.createDataFrame(t.to_pandas()).createOrReplaceTempView(k)
        rows = [r.asDict() for r in spark.sql(union_sql(cols, dialect="spark")).collect()]
    finally:
        spark.stop()
    assert [r["candidate_id"] for r in rows] == [r["candidate_id"] for r in ddb]
    for a, b in zip(rows, ddb, strict=True):
        assert set(a) == set(b)
        for c, v in b.items():
            w = a[c]
            if isinstance(v, float) and math.isnan(v):
                assert w is None or math.isnan(w), c
            else:
                assert w == v or (isinstance(v, float) and w == pytest.approx(v)), c


def test_union_needs_the_key_columns() -> None:
    from recscope.errors import DataValidationError

    with pytest.raises(DataValidationError, match="experiment"):
        union_sql({"a": ["candidate_id", "model_version"]})
