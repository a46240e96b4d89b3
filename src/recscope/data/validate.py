"""Validation of interaction tables against the canonical schema.

Each check reports the file, the column and the first offending row (0-based data row)
through :class:`recscope.errors.DataValidationError`; nothing is silently coerced.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recscope.data.schema import (
    COLUMN_TYPES,
    ID_COLUMNS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    TIMESTAMP_TYPE,
)
from recscope.errors import DataValidationError

DuplicatePolicy = Literal["keep", "drop", "error"]


def _first_true(mask: pa.Array | pa.ChunkedArray) -> int | None:
    """Index of the first true value of a boolean array (nulls count as false)."""
    arr = np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
    idx = np.flatnonzero(arr)
    return int(idx[0]) if idx.size else None


def _first_null(col: pa.ChunkedArray | pa.Array) -> int | None:
    return _first_true(pc.is_null(col)) if col.null_count else None


def parse_timestamps(col: pa.ChunkedArray | pa.Array, *, file: str | None = None,
                     column: str = "timestamp", unit: str = "s") -> pa.ChunkedArray | pa.Array:
    """Convert integers (epoch ``unit``), floats, ISO-8601 strings or timestamps to UTC.

    Raises with the first row that cannot be parsed.
    """
    if unit not in ("s", "ms", "us"):
        from recscope.errors import ConfigError

        raise ConfigError(f"timestamp unit must be s, ms or us, got {unit!r}",
                          key="timestamp_unit")
    t = col.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            col = pc.assume_timezone(col, "UTC")
        # nanosecond inputs (pandas) are truncated to the canonical microseconds
        return pc.cast(col, TIMESTAMP_TYPE, safe=t.unit != "ns")
    if pa.types.is_integer(t):
        scale = {"s": 1_000_000, "ms": 1_000, "us": 1}[unit]
        return pc.cast(pc.multiply_checked(pc.cast(col, pa.int64()), scale), TIMESTAMP_TYPE)
    if pa.types.is_floating(t):
        bad = _first_true(pc.invert(pc.is_finite(col)))
        if bad is not None:
            raise DataValidationError("timestamp is not a finite number", file=file,
                                      column=column, row=bad)
        scale = {"s": 1e6, "ms": 1e3, "us": 1.0}[unit]
        micro = pc.cast(pc.round(pc.multiply(col, scale)), pa.int64())
        return pc.cast(micro, TIMESTAMP_TYPE)
    if pa.types.is_date(t):
        return pc.assume_timezone(pc.cast(col, pa.timestamp("us")), "UTC")
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        values = col.to_pandas()
        import pandas as pd

        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        bad_mask = parsed.isna().to_numpy() & values.notna().to_numpy()
        if bad_mask.any():
            row = int(np.flatnonzero(bad_mask)[0])
            raise DataValidationError(
                f"unparsable timestamp {values.iloc[row]!r} (expected ISO-8601 or epoch seconds)",
                file=file, column=column, row=row)
        # via naive UTC numpy values: Series.values on tz-aware data is deprecated in pandas
        naive = parsed.dt.tz_convert(None).to_numpy().astype("datetime64[us]")
        return pa.array(naive, pa.timestamp("us"), from_pandas=True).cast(TIMESTAMP_TYPE)
    raise DataValidationError(f"wrong type {t} (expected a timestamp, epoch number or ISO-8601 text)",
                              file=file, column=column)


def validate_interactions(
    table: pa.Table,
    *,
    file: str | None = None,
    duplicates: DuplicatePolicy = "keep",
) -> pa.Table:
    """Check and normalise a table to the canonical schema; return the clean table.

    Checks: required columns present; ids are non-null integers or strings; timestamps
    parse; ``value`` numeric; ``position`` a non-negative integer; ``propensity`` in
    (0, 1]; duplicated rows handled by ``duplicates`` (keep, drop, or error).
    Unknown extra columns are kept as they are.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataValidationError(
            f"missing required column(s) {missing}; found {table.column_names}", file=file,
            column=missing[0])
    out: dict[str, pa.ChunkedArray] = {}
    for name in table.column_names:
        col = table.column(name)
        if name in ID_COLUMNS:
            col = _check_id(col, name, file)
        elif name == "timestamp":
            bad = _first_null(col)
            if bad is not None:
                raise DataValidationError("missing timestamp", file=file, column=name, row=bad)
            col = parse_timestamps(col, file=file, column=name)
        elif name == "event":
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
                    or pa.types.is_dictionary(col.type)):
                raise DataValidationError(f"wrong type {col.type} (expected text)", file=file,
                                          column=name)
            bad = _first_null(col)
            if bad is not None:
                raise DataValidationError("missing event name", file=file, column=name, row=bad)
            col = pc.cast(col, pa.string())
        elif name in ("value", "propensity"):
            col = _check_numeric(col, name, file)
            bad = _first_true(pc.invert(pc.is_finite(col)))
            if bad is not None:
                raise DataValidationError(f"{name} {col[bad].as_py()} is not a finite number",
                                          file=file, column=name, row=bad)
            if name == "propensity":
                bad = _first_true(pc.or_(pc.less_equal(col, 0.0), pc.greater(col, 1.0)))
                if bad is not None:
                    raise DataValidationError(
                        f"propensity {col[bad].as_py()} outside (0, 1]", file=file, column=name,
                        row=bad)
        elif name == "position":
            if (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) and (
                    found := _first_non_number(col)) is not None:
                raise DataValidationError(f"wrong type: {found[1]!r} is not an integer",
                                          file=file, column=name, row=found[0])
            if not pa.types.is_integer(col.type):
                raise DataValidationError(f"wrong type {col.type} (expected integer)", file=file,
                                          column=name)
            bad = _first_true(pc.less(col, 0))
            if bad is not None:
                raise DataValidationError(f"negative position {col[bad].as_py()}", file=file,
                                          column=name, row=bad)
            col = pc.cast(col, COLUMN_TYPES["position"])
        elif name == "surface":
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
                    or pa.types.is_dictionary(col.type)):
                raise DataValidationError(f"wrong type {col.type} (expected text)", file=file,
                                          column=name)
            col = pc.cast(col, pa.string())
        out[name] = col if isinstance(col, pa.ChunkedArray) else pa.chunked_array([col])
    ordered = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in out]
    ordered += [c for c in out if c not in ordered]
    clean = pa.table({c: out[c] for c in ordered})
    return handle_duplicates(clean, duplicates, file=file)


def handle_duplicates(table: pa.Table, policy: DuplicatePolicy, *, file: str | None = None,
                      ) -> pa.Table:
    """Apply the duplicate-row policy; a duplicate equals an earlier row in every column."""
    if policy == "keep" or table.num_rows == 0:
        return table
    if policy not in ("drop", "error"):
        raise ValueError(f"duplicates must be 'keep', 'drop' or 'error', not {policy!r}")
    df = table.to_pandas(types_mapper=None)
    dup = df.duplicated(keep="first").to_numpy()
    if not dup.any():
        return table
    if policy == "error":
        row = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((df == df.iloc[row]).all(axis=1).to_numpy())[0])
        raise DataValidationError(
            f"duplicated row (same values as row {first}); {int(dup.sum())} duplicate rows in all",
            file=file, column=", ".join(table.column_names), row=row)
    return table.filter(pa.array(~dup))


def _check_id(col: pa.ChunkedArray, name: str, file: str | None) -> pa.ChunkedArray:
    t = col.type
    if pa.types.is_dictionary(t):
        col = pc.cast(col, t.value_type)
        t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise DataValidationError(f"wrong type {t} (expected integer or text ids)", file=file,
                                  column=name)
    bad = _first_null(col)
    if bad is not None:
        raise DataValidationError("null id", file=file, column=name, row=bad)
    if pa.types.is_integer(t):
        return pc.cast(col, pa.int64())
    return pc.cast(col, pa.string())


def _first_non_number(col: pa.ChunkedArray) -> tuple[int, object] | None:
    import pandas as pd

    values = col.to_pandas()
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna().to_numpy() & values.notna().to_numpy()
    if not bad.any():
        return None
    row = int(np.flatnonzero(bad)[0])
    return row, values.iloc[row]


def _check_numeric(col: pa.ChunkedArray, name: str, file: str | None) -> pa.ChunkedArray:
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        found = _first_non_number(col)
        if found is not None:
            raise DataValidationError(f"wrong type: {found[1]!r} is not a number", file=file,
                                      column=name, row=found[0])
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        raise DataValidationError(f"wrong type {t} (expected a number)", file=file, column=name)
    col = pc.cast(col, pa.float64())
    bad = _first_null(col)
    if bad is None:
        bad = _first_true(pc.is_nan(col))
    if bad is not None:
        raise DataValidationError("missing or NaN number", file=file, column=name, row=bad)
    return col
