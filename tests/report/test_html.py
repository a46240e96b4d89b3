"""HTML reports are self-contained and escape their content; terminal and HTML tables show
numbers the same way (one format, shares and relative effects as percent, no reprs)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import plotly.graph_objects as go
from rich.console import Console

from recscope.report import HtmlReport, fmt_cell, fmt_number, rich_table


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


def test_one_number_format() -> None:
    assert fmt_number(0.41234567) == "0.4123"
    assert fmt_number(1234.5678) == "1,235"
    assert fmt_number(12_345_678.0) == "1.235e+07"
    assert fmt_number(0.00001234) == "1.234e-05"
    assert fmt_number(math.nan) == fmt_number(None) == "–"
    assert fmt_number(1200) == "1,200" and fmt_number(True) == "True"


def test_shares_and_relative_effects_are_percent_everywhere() -> None:
    assert fmt_cell("share", 0.4567) == "45.7%"
    assert fmt_cell("rel_ci_low", -0.0123) == "-1.23%"
    assert fmt_cell("true_share", 1.0) == fmt_cell("true share", 1.0) == "100%"
    assert fmt_cell("related", 0.5) == "0.5" and fmt_cell("n_relevant", 3) == "3"
    assert fmt_cell("share", math.nan) == "–"
    assert fmt_cell("user_id", 123456) == "123456" and fmt_cell("n", 123456) == "123,456"
    row = {"component": "ranker", "share": 0.25, "cells": {"control": 4102, "t": 0.5}}
    page = HtmlReport("x").table([row]).render()
    console = Console(file=io.StringIO(), width=200)
    console.print(rich_table([row]))
    terminal = console.file.getvalue()
    for text in (page, terminal):
        assert "25%" in text and "control: 4,102, t: 0.5" in text
        assert "{'control'" not in text and "0.25" not in text


def test_wide_tables_scroll_and_figures_keep_room_for_labels() -> None:
    row = {f"column_{i}": i * 1.5 for i in range(40)}
    fig = go.Figure(go.Bar(x=["a very long category name"] * 3, y=[1, 2, 3]))
    page = HtmlReport("wide").table([row]).figure(fig).render()
    assert "<div class='scroll'><table>" in page and ".scroll{overflow-x:auto" in page
    assert '"automargin":true' in page
    assert fig.layout.xaxis.automargin is None  # the caller's figure is not changed


def test_table_columns_are_the_union_of_row_keys() -> None:
    page = HtmlReport("x").table([{"a": 1}, {"a": 2, "b": 3}]).render()
    assert "<th>b</th>" in page
