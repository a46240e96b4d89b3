"""One result vocabulary: the Effect row and the Result base round-trip through JSON (NaN as
null), render the same rows to pandas, a terminal table and HTML, and refuse bad input."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest
from rich.console import Console

from recscope.errors import ConfigError
from recscope.results import ArrowTable, Effect, Result


@dataclasses.dataclass
class Toy(Result):
    kind: ClassVar[str] = "toy"
    title: ClassVar[str] = "Toy result"
    rows_: list[Effect]
    per_unit: ArrowTable
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def effects(self) -> list[Effect]:
        return self.rows_

    def notes(self) -> list[str]:
        return ["SRM: p = 0.0001"] if self.info.get("srm") else []


def _toy() -> Toy:
    return Toy([Effect("ctr", 0.1, 0.08, 0.12, 0.01, 0.003, 1000, {"variant": "t1",
                                                                   "rel_effect": 0.05}),
                Effect("spend", math.nan, extra={"variant": "t1", "reason": "no variance"})],
               pa.table({"unit": [1, 2], "value": [0.5, None]}), {"srm": True})


def test_effect_row_is_flat_and_round_trips() -> None:
    e = Effect("ctr", 0.1, 0.08, 0.12, 0.01, 0.003, 1000, {"variant": "t1"})
    row = e.to_dict()
    assert list(row)[:7] == ["metric", "estimate", "ci_low", "ci_high", "se", "p_value", "n"]
    assert row["variant"] == "t1" and e["variant"] == "t1" and e.get("nope", 3) == 3
    assert Effect.from_dict(row) == e
    assert not Effect("x", math.nan).computable
    with pytest.raises(ValueError, match="core fields"):
        Effect("x", 1.0, extra={"se": 2.0}).to_dict()
    with pytest.raises(ConfigError, match="'metric' and 'estimate'"):
        Effect.from_dict({"estimate": 1.0})


def test_result_json_round_trip_keeps_nan_and_tables(tmp_path: Path) -> None:
    r = _toy()
    data = json.loads(r.to_json())  # strict JSON: NaN written as null
    assert data["kind"] == "toy" and data["rows_"][1]["estimate"] is None
    assert data["per_unit"] == {"unit": [1, 2], "value": [0.5, None]}
    back = Toy.load(r.save(tmp_path / "r.json"))
    assert math.isnan(back.rows_[1].estimate) and back.rows_[0] == r.rows_[0]
    assert back.per_unit.equals(r.per_unit) and back.info == {"srm": True}
    with pytest.raises(ConfigError, match="expected a 'toy' result"):
        Toy.from_dict({**data, "kind": "scorecard"})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        Toy.load(tmp_path / "bad.json")


def test_one_set_of_rows_everywhere(tmp_path: Path) -> None:
    r = _toy()
    frame = r.to_frame()
    assert list(frame["metric"]) == ["ctr", "spend"] and "variant" in frame.columns
    console = Console(file=io.StringIO(), width=120)
    r.print(console)
    text = console.file.getvalue()
    assert "Toy result" in text and "SRM: p = 0.0001" in text and "5%" in text
    page = r.save(tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "banner bad" in page and "5%" in page
    assert "no variance" in page and "nan" not in page.lower().split("plotly")[0]
