"""Readers for CSV/TSV/Parquet interaction files with a column mapping."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recscope.data.interactions import Interactions
from recscope.data.schema import CANONICAL_COLUMNS
from recscope.data.validate import DuplicatePolicy, parse_timestamps
from recscope.errors import DataValidationError
from recscope.io import did_you_mean


def read_table(path: str | Path, *, delimiter: str | None = None,
               column_types: Mapping[str, pa.DataType] | None = None,
               header: bool = True, names: list[str] | None = None) -> pa.Table:
    """Read a CSV, TSV or Parquet file into Arrow; empty text fields become nulls.

    Every failure is one :class:`DataValidationError` naming the file: missing, a folder,
    empty, not Parquet, not UTF-8 text, unparsable text."""
    p = check_file(path)
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return read_parquet(p)
    if delimiter is None:
        delimiter = "\t" if suffix in (".tsv", ".tab") else ","
    try:
        table = pacsv.read_csv(
            p,
            read_options=pacsv.ReadOptions(column_names=names, autogenerate_column_names=False)
            if not header else pacsv.ReadOptions(),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                strings_can_be_null=True, column_types=dict(column_types or {})),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise DataValidationError(f"cannot parse as delimited text: {_first_line(exc)}",
                                  file=str(p)) from None
    _check_utf8(table, p)
    if header and table.num_columns == 1 and delimiter not in ("\t",) and \
            any(sep in table.column_names[0] for sep in ("\t", ";", "|")):
        raise DataValidationError(f"one column {table.column_names[0]!r} found: the file "
                                  f"seems to use another delimiter than {delimiter!r}",
                                  file=str(p))
    return table


def check_file(path: str | Path) -> Path:
    """``path`` as a Path when it is a non-empty file; else one error naming it."""
    p = Path(path)
    if not p.exists():
        raise DataValidationError(f"file not found{did_you_mean(p)}", file=str(p))
    if p.is_dir():
        raise DataValidationError("is a folder; expected a file", file=str(p))
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise DataValidationError(f"cannot read: {exc.strerror}", file=str(p)) from None
    if size == 0:
        raise DataValidationError("file is empty", file=str(p))
    return p


def read_parquet(path: str | Path) -> pa.Table:
    """Read a Parquet file; a corrupt or non-Parquet file is one error naming it."""
    p = check_file(path)
    try:
        return pq.read_table(p)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError) as exc:
        raise DataValidationError(f"cannot read as Parquet: {_first_line(exc)}",
                                  file=str(p)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_utf8(table: pa.Table, p: Path) -> None:
    """Arrow reads text columns as binary when they are not UTF-8: refuse them, naming the
    column (a Latin-1 file must be re-encoded, not guessed at)."""
    for name in table.column_names:
        if pa.types.is_binary(table.column(name).type) or \
                pa.types.is_large_binary(table.column(name).type):
            raise DataValidationError("text is not UTF-8; re-encode the file as UTF-8",
                                      file=str(p), column=name)
    for name in table.column_names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise DataValidationError("header is not UTF-8", file=str(p)) from None


def read_interactions(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    event: str | None = None,
    value: float | None = None,
    timestamp_unit: str = "s",
    delimiter: str | None = None,
    duplicates: DuplicatePolicy = "keep",
    item_features: pa.Table | None = None,
    user_features: pa.Table | None = None,
    name: str | None = None,
) -> Interactions:
    """Read an interaction file and validate it against the canonical schema.

    ``columns`` maps canonical names to the file's names (``{"user_id": "uid"}``).
    ``event`` and ``value`` fill those columns when the file lacks them (for example
    ``event="click", value=1.0`` for a click log). Errors name the file, column and row.
    """
    p = Path(path)
    table = read_table(p, delimiter=delimiter)
    mapping = dict(columns or {})
    unknown = [k for k in mapping if k not in CANONICAL_COLUMNS]
    if unknown:
        raise DataValidationError(f"column mapping names unknown canonical column(s) {unknown}; "
                                  f"canonical: {list(CANONICAL_COLUMNS)}", file=str(p))
    for canonical, source in mapping.items():
        if source not in table.column_names:
            raise DataValidationError(
                f"mapped column {source!r} (for {canonical!r}) not in file; "
                f"found {table.column_names}", file=str(p), column=source)
    rename = {src: dst for dst, src in mapping.items()}
    table = table.rename_columns([rename.get(c, c) for c in table.column_names])
    n = table.num_rows
    if "event" not in table.column_names and event is not None:
        table = table.append_column("event", pa.array([event] * n, pa.string()))
    if "value" not in table.column_names and value is not None:
        table = table.append_column("value", pa.array([float(value)] * n, pa.float64()))
    if "timestamp" in table.column_names and pa.types.is_integer(table.column("timestamp").type):
        table = table.set_column(table.column_names.index("timestamp"), "timestamp",
                                 parse_timestamps(table.column("timestamp"), unit=timestamp_unit))
    is_text = p.suffix.lower() not in (".parquet", ".pq")
    try:
        return Interactions.from_table(table, file=str(p), duplicates=duplicates,
                                       item_features=item_features, user_features=user_features,
                                       name=name or p.stem)
    except DataValidationError as exc:
        if is_text and exc.row is not None and exc.line is None:
            raise DataValidationError(exc.problem, file=exc.file, column=exc.column, row=exc.row,
                                      line=exc.row + 2) from None
        raise
