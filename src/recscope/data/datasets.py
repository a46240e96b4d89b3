"""Parquet datasets too large to read at once: discovery, schema checks, and Spark sessions.

A *dataset* is a Parquet file, a folder of Parquet files (hive-partitioned folders such as
``day=2024-01-01/part-0.parquet`` included: the partition keys become columns), or
``table:NAME`` (a table of the Spark catalog). Before any engine reads one,
:func:`check_dataset` looks at every file's footer (no data is read) and refuses, with one
line naming the file and the column:

* a required column that is neither in a file nor a partition key of its folder (a
  partition folder without its ``key=value`` name, or a file written without the column);
* an id column whose type differs between files (``user_id`` int64 in one partition,
  string in another), which engines would otherwise cast silently or fail on mid-run.

:func:`spark_session` is the one place a local Spark session is started for the offline
and OPE engines; a missing or broken Java is one :class:`~recscope.errors.ConfigError`.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from recscope.errors import ConfigError, DataValidationError
from recscope.io import did_you_mean

TABLE_PREFIX = "table:"


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`check_dataset` learned: the files, the unified schema (partition keys
    included), the partition keys and the total number of rows (from the footers)."""

    source: str
    files: tuple[str, ...]
    schema: pa.Schema
    partition_keys: tuple[str, ...]
    n_rows: int


def _partition_keys(root: Path, file: Path) -> dict[str, str]:
    """``{key: value}`` of the ``key=value`` folders between ``root`` and ``file``."""
    out: dict[str, str] = {}
    for part in file.relative_to(root).parts[:-1]:
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


def dataset_files(source: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """The root and the Parquet files of a file or folder source (hidden and ``_`` files,
    such as Spark's ``_SUCCESS``, are skipped)."""
    p = Path(source)
    if not p.exists():
        raise DataValidationError(f"file not found{did_you_mean(p)}", file=str(p))
    if p.is_file():
        return p.parent, [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and not any(
        s.startswith((".", "_")) for s in f.relative_to(p).parts)
        and f.suffix.lower() in (".parquet", ".pq", ""))
    files = [f for f in files if f.suffix.lower() in (".parquet", ".pq")]
    if not files:
        raise DataValidationError("a folder without Parquet files", file=str(p))
    return p, files


def check_dataset(source: str | os.PathLike[str], required: Sequence[str],
                  id_columns: Sequence[str] = ("user_id", "item_id")) -> DatasetInfo:
    """Check every file's footer of a Parquet dataset (see the module docstring): each
    required column present (in the file or as a partition key of its folder), id
    columns of one type across files. Returns the unified schema and the row count."""
    import pyarrow.parquet as pq

    root, files = dataset_files(source)
    from collections import Counter

    is_dir = Path(source).is_dir()
    all_keys = [tuple(_partition_keys(root, f)) if is_dir else () for f in files]
    # the layout most files share (ties: the partitioned one); the odd files out are named
    keys_seen = max(Counter(all_keys).items(), key=lambda kv: (kv[1], len(kv[0])))[0]
    types: dict[str, tuple[pa.DataType, str]] = {}
    fields: dict[str, pa.Field] = {}
    n_rows = 0
    for f in files:
        try:
            meta = pq.read_metadata(f)
            schema = meta.schema.to_arrow_schema()
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataValidationError(f"not a readable Parquet file: "
                                      f"{str(exc).splitlines()[0]}", file=str(f)) from None
        n_rows += meta.num_rows
        keys = _partition_keys(root, f) if is_dir else {}
        if tuple(keys) != keys_seen:
            missing = [k for k in keys_seen if k not in keys] or list(keys)
            raise DataValidationError(
                f"partition folders disagree: this file's folders give {list(keys)}, most "
                f"files' give {list(keys_seen)} (missing partition column)",
                file=str(f), column=missing[0] if missing else None)
        for c in required:
            if c not in schema.names and c not in keys:
                raise DataValidationError(
                    f"missing column (neither in the file nor a partition key of its "
                    f"folder); found {schema.names}", file=str(f), column=c)
        for name in schema.names:
            if name not in fields:
                fields[name] = schema.field(name)
        for c in id_columns:
            if c in schema.names:
                t = schema.field(c).type
                if pa.types.is_dictionary(t):
                    t = t.value_type
                if pa.types.is_large_string(t):
                    t = pa.string()
                if c in types and types[c][0] != t:
                    raise DataValidationError(
                        f"id type {t} differs from {types[c][0]} in {types[c][1]}",
                        file=str(f), column=c)
                types.setdefault(c, (t, str(f)))
    for k in keys_seen or ():
        fields.setdefault(k, pa.field(k, pa.string()))
    return DatasetInfo(str(source), tuple(str(f) for f in files),
                       pa.schema(list(fields.values())), tuple(keys_seen or ()), n_rows)


def locate_rows(source: str | os.PathLike[str], filters: dict[str, Any]) -> str | None:
    """The first file of a dataset holding a row with these column values (used to name
    the partition of a bad row found mid-stream); None when none does."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    root, files = dataset_files(source)
    for f in files:
        keys = _partition_keys(root, f)
        try:
            data = ds.dataset(str(f), format="parquet")
            cols = [c for c in filters if c in data.schema.names]
            expr = None
            for c in cols:
                v = filters[c]
                term = pc.field(c) == pa.scalar(v).cast(data.schema.field(c).type)
                expr = term if expr is None else expr & term
            if any(c not in cols and str(keys.get(c)) != str(filters[c]) for c in filters):
                continue
            if data.count_rows(filter=expr) > 0:
                return str(f)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
            continue
    return None


def check_java() -> None:
    """Refuse, in one line, a Java that cannot start Spark (JAVA_HOME pointing nowhere,
    or no ``java`` on PATH)."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / "java"
        if not java.exists():
            raise ConfigError(f"cannot start the spark engine: JAVA_HOME={home} has no "
                              f"bin/java (install Java 17 or fix JAVA_HOME)", key="--engine")
    elif shutil.which("java") is None:
        raise ConfigError("cannot start the spark engine: no java on PATH and JAVA_HOME "
                          "is not set (install Java 17)", key="--engine")


def spark_session(session: Any = None, *, cores: int | None = None) -> Any:
    """The active Spark session (``session`` when given, else a local one with
    ``local[cores]``), checking Java first; any start failure is one ConfigError."""
    if session is not None:
        return session
    try:
        from pyspark.sql import SparkSession
    except ImportError:  # pragma: no cover - depends on the extra
        raise ConfigError("the spark engine needs pyspark: pip install 'recscope[spark]'",
                          key="--engine") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    check_java()
    # local workers run this interpreter (the one that has recscope and numba)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        s = (SparkSession.builder.master(f"local[{cores or '*'}]")
             .appName("recscope")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .getOrCreate())
    except Exception as exc:  # py4j / Java gateway errors
        first = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ConfigError(f"cannot start the spark engine: {first}", key="--engine") from None
    s.sparkContext.setLogLevel("ERROR")
    return s
