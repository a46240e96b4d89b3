"""HTML reports are self-contained and escape their content; Result round-trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import plotly.graph_objects as go
from rich.table import Table

from recscope.report import HtmlReport, Result


def test_report_inlines_plotly_once_and_escapes_text(tmp_path: Path) -> None:
    rep = HtmlReport("A <b>title</b>", "sub")
    rep.heading("Figures").figure(go.Figure(go.Bar(x=[1, 2], y=[3, 4])))
    rep.figure(go.Figure(go.Scatter(x=[1], y=[1])))
    rep.table([{"metric": "ndcg@10", "mean": 0.41234567, "ci": None}])
    rep.banner("SRM <detected>", "bad")
    page = rep.save(tmp_path / "r.html").read_text()
    assert page.count("<script type='text/javascript'>") == 1  # plotly.js once
    assert "<script src=" not in page  # nothing loaded from the network
    assert "A &lt;b&gt;title&lt;/b&gt;" in page and "SRM &lt;detected&gt;" in page
    assert "0.4123" in page and "–" in page


class _R(Result):
    def __init__(self, x: float) -> None:
        self.x = x

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(data["x"])

    def rich_table(self) -> Table:
        t = Table("x")
        t.add_row(str(self.x))
        return t

    def to_html(self) -> str:
        return HtmlReport("r").key_values({"x": self.x}).render()


def test_result_save_load_and_render(tmp_path: Path) -> None:
    r = _R(1.5)
    assert _R.load(r.save(tmp_path / "r.json")).x == 1.5
    assert "1.5" in r.save(tmp_path / "r.html").read_text()
    assert list(tmp_path.iterdir()) and not list(tmp_path.glob(".*tmp"))
