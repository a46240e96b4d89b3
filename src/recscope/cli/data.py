"""``recscope data ...`` commands (describe, split)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Inspect, validate and split interaction data.", no_args_is_help=True)
