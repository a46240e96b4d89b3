"""Self-contained HTML reports: one file, Plotly inlined once, opens without network."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recscope.io import write_text
from recscope.report.tables import fmt_cell

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1f2328;line-height:1.45;padding:0 1rem}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
.sub{color:#59636e;margin-top:0}
.scroll{overflow-x:auto;max-width:100%;margin:.6rem 0}
table{border-collapse:collapse;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:right}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.banner{padding:.7rem 1rem;border-radius:6px;margin:.8rem 0}
.warn{background:#fff8c5;border:1px solid #d4a72c}.bad{background:#ffebe9;border:1px solid #cf222e}
.ok{background:#dafbe1;border:1px solid #2da44e}
.note{color:#59636e;font-size:.85rem}
.plot{width:100%;overflow-x:auto}
"""


def render_table_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                      ) -> str:
    """An HTML table from a list of dicts (columns default to every key, in first-seen
    order), cells formatted as in the terminal (:func:`fmt_cell`), in a horizontally
    scrolling box so wide tables never run past the page."""
    if not rows:
        return "<p class='note'>(no rows)</p>"
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt_cell(str(c), r.get(c)))}</td>" for c in cols)
        + "</tr>" for r in rows)
    return (f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            "</table></div>")


class HtmlReport:
    """Builder for one self-contained HTML page of sections, tables and Plotly figures."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []
        self._has_plot = False

    def heading(self, text: str) -> HtmlReport:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def paragraph(self, text: str, cls: str | None = None) -> HtmlReport:
        c = f" class='{cls}'" if cls else ""
        self._parts.append(f"<p{c}>{html.escape(text)}</p>")
        return self

    def banner(self, text: str, level: str = "warn") -> HtmlReport:
        """A coloured box: level is ``ok``, ``warn`` or ``bad``."""
        self._parts.append(f"<div class='banner {level}'>{html.escape(text)}</div>")
        return self

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
              ) -> HtmlReport:
        self._parts.append(render_table_html(rows, columns))
        return self

    def key_values(self, values: Mapping[str, Any]) -> HtmlReport:
        return self.table([{"name": k, "value": v} for k, v in values.items()])

    def figure(self, fig: Any) -> HtmlReport:
        """A Plotly figure; plotly.js is inlined once per page. Axes get room for their
        labels (``automargin``) so tick labels and titles are never cut; the caller's
        figure is not changed."""
        import plotly.graph_objects as go

        fig = go.Figure(fig)
        fig.update_xaxes(automargin=True)
        fig.update_yaxes(automargin=True)
        fig.update_layout(autosize=True)
        self._has_plot = True
        self._parts.append("<div class='plot'>" + fig.to_html(
            full_html=False, include_plotlyjs=False,
            config={"displaylogo": False, "responsive": True}) + "</div>")
        return self

    def raw(self, fragment: str) -> HtmlReport:
        """Trusted HTML produced by recscope itself."""
        self._parts.append(fragment)
        return self

    def render(self) -> str:
        script = ""
        if self._has_plot:
            from plotly.offline import get_plotlyjs

            script = f"<script type='text/javascript'>{get_plotlyjs()}</script>"
        sub = f"<p class='sub'>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style>{script}</head>"
                f"<body><h1>{html.escape(self.title)}</h1>{sub}{''.join(self._parts)}"
                f"</body></html>")

    def save(self, path: str | Path) -> Path:
        """Write the page atomically."""
        return write_text(path, self.render())
