"""Execution engines: DuckDB (default, embedded) and Spark SQL (the ``spark`` extra).

An engine turns a *source* into a :class:`recscope.experiments.sql.Table` (a SQL table
expression plus its schema) and runs generated SQL, returning rows as dicts. Sources:

- a path to a Parquet or CSV file, a glob, or a directory of Parquet files;
- ``"table:NAME"``: a table already in the engine (a DuckDB database's table, or a table
  of the Spark catalog);
- an in-memory ``pyarrow.Table`` or ``pandas.DataFrame``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlglot import exp

from recscope.errors import ConfigError, DataValidationError, RecscopeError
from recscope.experiments.sql import Table

Source = Any
_counter = itertools.count()


class Engine(Protocol):
    """What analysis needs from an engine."""

    dialect: str

    def table(self, source: Source, name: str | None = None) -> Table: ...

    def execute(self, sql: str) -> list[dict[str, Any]]: ...


def source_name(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        s = str(source)
        return s.removeprefix("table:") if s.startswith("table:") else Path(s).name
    return type(source).__name__


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir() or name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if any(name.endswith(s) for s in (".csv", ".csv.gz", ".tsv")):
        return "csv"
    raise DataValidationError("unsupported file type (expected .parquet, .csv or a "
                              "directory of Parquet files)", file=str(path))


def _check_path(source: str | os.PathLike[str]) -> Path:
    p = Path(source)
    if not any(ch in str(p) for ch in "*?["):
        if not p.exists():
            raise DataValidationError("file not found", file=str(p))
        if p.is_file() and p.stat().st_size == 0:
            raise DataValidationError("the file is empty", file=str(p))
        if p.is_dir() and not any(p.rglob("*.parquet")):
            raise DataValidationError("a directory without Parquet files (expected a "
                                      "Parquet or CSV file, or a folder of Parquet files)",
                                      file=str(p))
    return p


class DuckDBEngine:
    """Runs the analysis in DuckDB (in memory, or on a database file with ``database``)."""

    dialect = "duckdb"

    def __init__(self, database: str | os.PathLike[str] | None = None, *,
                 connection: Any = None, memory_limit: str | None = None,
                 threads: int | None = None) -> None:
        import duckdb

        if connection is not None:
            self.con = connection
        else:
            if database is not None and not Path(database).exists():
                raise DataValidationError("database file not found", file=str(database))
            self.con = duckdb.connect(str(database) if database else ":memory:",
                                      read_only=database is not None)
        if memory_limit:
            self.con.execute(f"SET memory_limit = {exp.Literal.string(memory_limit).sql()}")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.con.execute("SET preserve_insertion_order = false")

    def table(self, source: Source, name: str | None = None) -> Table:
        if isinstance(source, str) and source.startswith("table:"):
            tname = source.removeprefix("table:")
            expr: exp.Expression = exp.to_table(tname, dialect="duckdb")
            for part in expr.parts:
                part.set("quoted", True)
        elif isinstance(source, str | os.PathLike):
            p = _check_path(source)
            kind = _file_kind(p)
            target = str(p / "**" / "*.parquet") if p.is_dir() else str(p)
            fn = "READ_PARQUET" if kind == "parquet" else "READ_CSV"
            expr = exp.Anonymous(this=fn, expressions=[exp.Literal.string(target)])
        else:
            view = f"recscope_mem_{next(_counter)}"
            self.con.register(view, source)
            expr = exp.to_table(view)
        try:
            rows = self.con.execute(f"DESCRIBE SELECT * FROM {expr.sql('duckdb')}").fetchall()
        except Exception as exc:  # duckdb raises its own error types
            raise DataValidationError(f"cannot read table: {exc}".splitlines()[0],
                                      file=source_name(source)) from exc
        return Table(name or source_name(source), expr, {r[0]: str(r[1]) for r in rows})

    def execute(self, sql: str) -> list[dict[str, Any]]:
        cur = self.con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


class SparkEngine:
    """Runs the analysis as Spark SQL; files become temporary views."""

    dialect = "spark"

    def __init__(self, session: Any = None) -> None:
        try:
            from pyspark.sql import SparkSession
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError("the spark engine needs pyspark: pip install 'recscope[spark]'",
                              key="engine") from exc
        self.spark = session or (SparkSession.builder.master("local[2]")
                                 .appName("recscope-experiments")
                                 .config("spark.sql.shuffle.partitions", "4")
                                 .config("spark.ui.enabled", "false")
                                 .getOrCreate())

    def table(self, source: Source, name: str | None = None) -> Table:
        if isinstance(source, str) and source.startswith("table:"):
            df = self.spark.table(source.removeprefix("table:"))
        elif isinstance(source, str | os.PathLike):
            p = _check_path(source)
            try:
                if _file_kind(p) == "parquet":
                    df = self.spark.read.parquet(str(p))
                else:
                    df = self.spark.read.option("header", True).option(
                        "inferSchema", True).csv(str(p))
            except RecscopeError:
                raise
            except Exception as exc:  # Spark's AnalysisException and friends
                raise DataValidationError(f"cannot read table: {_first_line(exc)}",
                                          file=str(p)) from exc
        else:
            import pandas as pd
            import pyarrow as pa

            pdf = source.to_pandas() if isinstance(source, pa.Table) else pd.DataFrame(source)
            df = self.spark.createDataFrame(pdf)
        view = f"recscope_src_{next(_counter)}"
        df.createOrReplaceTempView(view)
        types = {f.name: f.dataType.simpleString().upper() for f in df.schema.fields}
        return Table(name or source_name(source), exp.to_table(view), types)

    def execute(self, sql: str) -> list[dict[str, Any]]:
        return [r.asDict() for r in self.spark.sql(sql).collect()]


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:400]


class SqlRunner:
    """Runs SQL on an engine for one analysis: shows each statement first (``show_sql``),
    records it (``executed``, reported with the result), and turns an engine error
    (DuckDB, Spark, Arrow) into one :class:`DataValidationError` naming the tables."""

    def __init__(self, engine: Engine, tables: Sequence[Table] = (),
                 show_sql: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.show_sql = show_sql
        self.where = ", ".join(dict.fromkeys(t.name for t in tables)) or None
        self.executed: list[str] = []

    def __call__(self, sql: str) -> list[dict[str, Any]]:
        self.executed.append(sql)
        if self.show_sql is not None:
            self.show_sql(sql)
        try:
            return self.engine.execute(sql)
        except RecscopeError:
            raise
        except Exception as exc:  # the engines raise their own error types
            raise DataValidationError(f"the {self.engine.dialect} engine could not run the "
                                      f"analysis: {_first_line(exc)}",
                                      file=self.where) from exc


def make_engine(name: str, *, database: str | None = None, session: Any = None) -> Engine:
    """``duckdb`` or ``spark``."""
    if name == "duckdb":
        return DuckDBEngine(database)
    if name == "spark":
        if database is not None:
            raise ConfigError("--database applies to the duckdb engine only", key="engine")
        return SparkEngine(session)
    raise ConfigError(f"unknown engine {name!r} (expected duckdb or spark)", key="engine")


def open_tables(engine: str | Engine, main: Source, events: Source | Sequence[Source]
                ) -> tuple[Engine, Table, list[Table]]:
    """The engine, and its tables for a main source (assignments or units) and one or more
    events sources (a name repeated among the events gets ``#<position>``)."""
    eng = make_engine(engine) if isinstance(engine, str) else engine
    ev_sources = [events] if not isinstance(events, list | tuple) else list(events)
    names: list[str] = []
    for s in ev_sources:
        n = source_name(s)
        names.append(n if n not in names else f"{n}#{len(names)}")
    return (eng, eng.table(main, source_name(main)),
            [eng.table(s, n) for s, n in zip(ev_sources, names, strict=True)])
