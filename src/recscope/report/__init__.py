"""Rendering of results: self-contained HTML pages (Plotly inlined), Rich tables, JSON."""

from recscope.report.html import HtmlReport, render_table_html
from recscope.report.result import Result

__all__ = ["HtmlReport", "Result", "render_table_html"]
