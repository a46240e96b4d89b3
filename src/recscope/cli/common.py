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

console = Console()


def progress() -> Progress:
    """A Rich progress bar with a spinner, a bar, counts and elapsed time."""
    return Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"),
                    BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                    transient=False)


def file_fingerprint(source: str | Path) -> str:
    """Cheap, stable fingerprint of an input file for lineage: path, size and mtime.

    Sources that are not files (``table:NAME``) are returned as they are.
    """
    p = Path(source)
    if not p.exists():
        return str(source)
    st = p.stat()
    return hashlib.sha256(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()
                          ).hexdigest()[:16]
