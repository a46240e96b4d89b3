"""Rendering of results: self-contained HTML pages (Plotly inlined) and Rich tables, with
one number format (:func:`recscope.report.tables.fmt_number`) for both. The result types
themselves live in :mod:`recscope.results`."""

from recscope.report.html import HtmlReport, render_table_html
from recscope.report.tables import fmt_cell, fmt_number, rich_table

__all__ = ["HtmlReport", "fmt_cell", "fmt_number", "render_table_html", "rich_table"]
