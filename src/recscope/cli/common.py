"""Shared CLI helpers: progress bars and console."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.syntax import Syntax

console = Console()


def print_sql(sql: str) -> None:
    """Print one SQL statement, highlighted (the ``--show-sql`` option of the commands)."""
    console.print(Syntax(sql, "sql", word_wrap=True))


def progress() -> Progress:
    """A Rich progress bar with a spinner, a bar, counts and elapsed time."""
    return Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"),
                    BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                    transient=False)


def file_fingerprint(source: str | Path) -> str:
    """Content hash of an input for lineage: sha256 (16 hex digits) of a file's bytes, or
    of every file under a directory in name order. Sources that are not paths
    (``table:NAME``) are returned as they are."""
    p = Path(source)
    if not p.exists():
        return str(source)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with f.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def experiment_inputs(assignments: str, events: list[str]) -> dict[str, str]:
    """Lineage fingerprints of an experiment's assignment and event tables."""
    return {"assignments": file_fingerprint(assignments),
            **{f"events{i}": file_fingerprint(e) for i, e in enumerate(events)}}
