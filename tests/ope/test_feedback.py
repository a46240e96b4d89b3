"""Logged feedback from the canonical schema: propensity checks name file, column and row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from recscope.data.interactions import Interactions
from recscope.data.readers import read_interactions
from recscope.errors import DataValidationError
from recscope.ope.feedback import LoggedFeedback, check_propensity
from tests.conftest import make_log


def _write(tmp_path: Path, propensity: list[object]) -> Path:
    n = len(propensity)
    table = pa.table({"user_id": list(range(n)), "item_id": [1, 2, 3, 1][:n],
                      "timestamp": [1_700_000_000 + i for i in range(n)],
                      "event": ["click"] * n, "value": [1.0, 0.0, 1.0, 0.0][:n],
                      "position": [0, 1, 0, 1][:n],
                      "propensity": pa.array(propensity, pa.float64())})
    path = tmp_path / "log.csv"
    pacsv.write_csv(table, path)
    return path


@pytest.mark.parametrize(("values", "row", "text"), [
    ([0.5, 0.0, 0.5, 0.5], 1, r"outside \(0, 1\]"),
    ([0.5, 0.5, 1.5, 0.5], 2, r"outside \(0, 1\]"),
    ([0.5, 0.5, 0.5, None], 3, "missing"),
])
def test_bad_propensities_name_file_column_row(tmp_path: Path, values: list[object], row: int,
                                               text: str) -> None:
    path = _write(tmp_path, values)
    with pytest.raises(DataValidationError, match=text) as err:
        LoggedFeedback.from_interactions(read_interactions(path))
    assert err.value.column == "propensity" and err.value.row == row
    assert err.value.file is not None and "log.csv" in err.value.file


def test_missing_propensity_column_and_direct_arrays() -> None:
    table = make_log(n_rows=20, extra=True).drop_columns(["propensity"])
    with pytest.raises(DataValidationError, match="needs a 'propensity' column") as err:
        LoggedFeedback.from_interactions(Interactions.from_table(table))
    assert err.value.column == "propensity"
    with pytest.raises(DataValidationError, match="row 2"):
        check_propensity(np.array([0.1, 0.2, np.nan]), "propensity", "x.parquet")
    with pytest.raises(DataValidationError, match="outside"):
        LoggedFeedback(np.zeros((2, 0)), np.array([0, 1]), np.zeros(2, np.int64),
                       np.zeros(2), np.array([0.5, -0.1]), 2, 1, np.array([0, 1], dtype=object))
    with pytest.raises(DataValidationError, match="position"):
        LoggedFeedback(np.zeros((2, 0)), np.array([0, 1]), np.array([0, 3]),
                       np.zeros(2), np.array([0.5, 0.5]), 2, 1, np.array([0, 1], dtype=object))


def test_from_canonical_log() -> None:
    data = Interactions.from_table(make_log(n_rows=200, extra=True))
    fb = LoggedFeedback.from_interactions(data)
    assert fb.n_rounds == 200 and fb.len_list == 10 and fb.n_actions == data.n_items
    assert fb.context.shape == (200, 0)
    np.testing.assert_allclose(fb.reward, data.column("value"))
    assert fb.on_policy_value() == pytest.approx(float(data.column("value").mean()))
    sub = fb.take(np.arange(10))
    assert sub.n_rounds == 10 and sub.n_actions == fb.n_actions
