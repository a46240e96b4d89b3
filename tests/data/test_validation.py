"""Each bad input of the canonical schema, written in a CSV: the error names the problem,
the file, the column and the first bad row (0-based data row, and its line in the file)."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pytest

from recscope.data import Interactions, read_interactions, validate_interactions
from recscope.errors import DataValidationError

HEADER = ["user_id", "item_id", "timestamp", "event", "value", "position", "propensity"]
GOOD = [
    ["u1", "i1", "2024-01-01T00:00:00Z", "click", "1", "0", "0.5"],
    ["u1", "i2", "2024-01-02T00:00:00Z", "click", "1", "1", "0.5"],
    ["u2", "i1", "2024-01-03T00:00:00Z", "click", "0", "2", "0.25"],
    ["u3", "i3", "2024-01-04T00:00:00Z", "save", "1", "0", "1.0"],
]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def with_cell(row: int, column: str, value: str) -> list[list[str]]:
    rows = [list(r) for r in GOOD]
    rows[row][HEADER.index(column)] = value
    return rows


#: (case, bad row, column, new value, words the message must contain)
BAD_CELLS = [
    ("wrong type (value)", 1, "value", "abc", ["wrong type", "'abc'", "not a number"]),
    ("wrong type (position)", 2, "position", "first", ["wrong type", "'first'", "integer"]),
    ("null user id", 2, "user_id", "", ["null id"]),
    ("null item id", 3, "item_id", "", ["null id"]),
    ("propensity above 1", 1, "propensity", "1.5", ["propensity 1.5 outside (0, 1]"]),
    ("propensity zero", 3, "propensity", "0", ["propensity 0.0 outside (0, 1]"]),
    ("propensity negative", 0, "propensity", "-0.2", ["outside (0, 1]"]),
    ("propensity missing", 2, "propensity", "", ["missing or NaN"]),
    ("unparsable timestamp", 1, "timestamp", "not a time", ["unparsable timestamp",
                                                             "'not a time'"]),
    ("missing timestamp", 3, "timestamp", "", ["missing timestamp"]),
    ("negative position", 2, "position", "-1", ["negative position -1"]),
    ("missing event", 1, "event", "", ["missing event"]),
]


def test_good_file_loads(tmp_path: Path) -> None:
    data = read_interactions(write_csv(tmp_path / "good.csv", GOOD), duplicates="error")
    assert len(data) == 4 and data.n_users == 3 and data.n_items == 3
    assert data.table.schema.field("position").type == pa.int32()
    assert data.table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize(("case", "row", "column", "value", "words"), BAD_CELLS,
                         ids=[c[0] for c in BAD_CELLS])
def test_bad_cell_names_problem_column_and_row(tmp_path: Path, case: str, row: int,
                                               column: str, value: str,
                                               words: list[str]) -> None:
    path = write_csv(tmp_path / "bad.csv", with_cell(row, column, value))
    with pytest.raises(DataValidationError) as err:
        read_interactions(path)
    e = err.value
    assert (e.column, e.row, e.line) == (column, row, row + 2)
    msg = str(e)
    assert "\n" not in msg
    assert str(path) in msg and f"column {column!r}" in msg and f"row {row} (line {row + 2})" in msg
    for word in words:
        assert word in msg


def test_missing_column_is_named(tmp_path: Path) -> None:
    header = [c for c in HEADER if c != "event"]
    rows = [[v for c, v in zip(HEADER, r, strict=True) if c != "event"] for r in GOOD]
    with pytest.raises(DataValidationError) as err:
        read_interactions(write_csv(tmp_path / "bad.csv", rows, header))
    assert err.value.column == "event"
    assert "missing required column(s) ['event']" in str(err.value)
    assert "bad.csv" in str(err.value)


def test_wrong_id_type_is_named(tmp_path: Path) -> None:
    rows = [list(r) for r in GOOD]
    for r, v in zip(rows, ["1.5", "2.5", "3.5", "4.5"], strict=True):
        r[0] = v
    with pytest.raises(DataValidationError) as err:
        read_interactions(write_csv(tmp_path / "bad.csv", rows))
    assert err.value.column == "user_id" and "wrong type double" in str(err.value)


def test_mapping_to_a_missing_source_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "log.csv", GOOD)
    with pytest.raises(DataValidationError) as err:
        read_interactions(path, columns={"user_id": "uid"})
    assert err.value.column == "uid" and "not in file" in str(err.value)


def _dup_rows() -> list[list[str]]:
    return [*GOOD[:3], list(GOOD[1]), GOOD[3], list(GOOD[1])]


def test_duplicates_keep(tmp_path: Path) -> None:
    data = read_interactions(write_csv(tmp_path / "dup.csv", _dup_rows()), duplicates="keep")
    assert len(data) == 6


def test_duplicates_drop_keeps_first(tmp_path: Path) -> None:
    data = read_interactions(write_csv(tmp_path / "dup.csv", _dup_rows()), duplicates="drop")
    assert len(data) == 4
    assert data.table.column("item_id").to_pylist() == ["i1", "i2", "i1", "i3"]


def test_duplicates_error_names_row_and_original(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "dup.csv", _dup_rows())
    with pytest.raises(DataValidationError) as err:
        read_interactions(path, duplicates="error")
    e = err.value
    assert (e.row, e.line) == (3, 5)
    assert "duplicated row (same values as row 1)" in str(e)
    assert "2 duplicate rows in all" in str(e)
    assert "user_id" in (e.column or "")


def test_rows_differing_in_one_column_are_not_duplicates(tmp_path: Path) -> None:
    rows = [*GOOD, with_cell(0, "value", "0")[0]]
    assert len(read_interactions(write_csv(tmp_path / "d.csv", rows), duplicates="error")) == 5


def test_in_memory_table_errors_have_rows_but_no_lines() -> None:
    table = pa.table({"user_id": [1, 2], "item_id": [1, None], "timestamp": [0, 1],
                      "event": ["click", "click"], "value": [1.0, 1.0]})
    with pytest.raises(DataValidationError) as err:
        validate_interactions(table)
    assert (err.value.column, err.value.row, err.value.line) == ("item_id", 1, None)
    with pytest.raises(DataValidationError, match="unknown id"):
        Interactions.from_table(table.slice(0, 1)).users.index([99])
