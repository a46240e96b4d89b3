"""Terminal tables of result rows: one number format (shared with the HTML tables), shares
and relative effects as percent, nothing cut at 80 columns."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

#: Columns merged into one "estimate [ci_low, ci_high]" cell when all three are present.
_INTERVAL = ("estimate", "ci_low", "ci_high")


def fmt_number(value: Any, digits: int = 4) -> str:
    """One number format for terminal and HTML: ``digits`` significant figures, "–" for
    missing or not computable values."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value == 0:
            return "0"
        if abs(value) < 1e-3 or abs(value) >= 1e6:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{digits}g}"
    return str(value)


def is_percent(column: str) -> bool:
    """Whether a column holds a share or a relative effect (a fraction shown as percent):
    ``share``, ``*_share``, ``share_*``, ``relative``, ``rel``, ``rel_*``, ``*_rel_*``,
    ``mde_rel*`` (spaces and dashes count as underscores: "true share")."""
    c = column.lower().replace(" ", "_").replace("-", "_")
    return (c in ("share", "relative", "rel") or c.endswith("_share") or c.startswith("share_")
            or c.startswith("rel_") or "_rel_" in c or c.startswith("mde_rel"))


def fmt_cell(column: str, value: Any) -> str:
    """One table cell, the same in the terminal and in HTML: numbers through
    :func:`fmt_number`, shares and relative effects as percent, mappings as
    ``key: value, ...`` and lists comma-separated (never a Python repr)."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {fmt_cell(str(k), v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(fmt_cell(column, v) for v in value)
    if (isinstance(value, int | float) and not isinstance(value, bool) and is_percent(column)
            and math.isfinite(value)):
        return f"{fmt_number(float(value) * 100, 3)}%"
    if isinstance(value, int) and not isinstance(value, bool) and _is_identifier(column):
        return str(value)  # ids and seeds are labels, not quantities: no separators
    return fmt_number(value)


def _is_identifier(column: str) -> bool:
    c = column.lower().replace(" ", "_")
    return c in ("id", "seed", "version", "year") or c.endswith(("_id", "_seed"))


def _cell(column: str, value: Any) -> str:
    return escape(fmt_cell(column, value))


def rich_table(rows: Sequence[Mapping[str, Any]], *, title: str = "",
               notes: Sequence[str] = (), columns: Sequence[str] | None = None) -> Table:
    """A Rich table of flat rows; the interval columns are shown as ``est [lo, hi]``.

    Cells wrap at spaces instead of being cut, and a column is never narrower than its
    longest word or number, so a narrow terminal shows every digit.
    """
    table = Table(title=escape(title) if title else None,
                  caption="\n".join(escape(n) for n in notes) or None,
                  caption_style="bold red", box=box.SIMPLE_HEAVY, pad_edge=False)
    if not rows:
        table.add_column("(no rows)")
        return table
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    merge = all(c in cols for c in _INTERVAL)
    shown = [c for c in cols if not (merge and c in _INTERVAL[1:])]
    body: list[list[str]] = []
    for r in rows:
        cells = []
        for c in shown:
            if merge and c == "estimate":
                cells.append(f"{_cell('estimate', r.get('estimate'))} "
                             f"[{_cell('ci_low', r.get('ci_low'))}, "
                             f"{_cell('ci_high', r.get('ci_high'))}]")
            else:
                cells.append(_cell(c, r.get(c)))
        body.append(cells)
    for j, c in enumerate(shown):
        head = "estimate [CI]" if merge and c == "estimate" else c
        # never fold inside a number: a numeric column is at least its longest number;
        # names fold (at 12 characters at most) when the terminal is narrow
        longest = max((len(tok) for row in body for tok in row[j].split()), default=1)
        numeric = (merge and c == "estimate") or all(
            isinstance(r.get(c), int | float) or r.get(c) is None for r in rows)
        table.add_column(escape(head), overflow="fold",
                         min_width=min(longest, 24 if numeric else 12),
                         justify="left" if j == 0 else "right")
    for cells in body:
        table.add_row(*cells)
    return table
