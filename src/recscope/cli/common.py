"""Shared CLI helpers: the options every command spells the same way, the output checks
made before any work, progress bars and the console.

Options (use them as the type of a command's parameter)::

    def cmd(..., out: OutDir, force: Force = False, json_out: JsonOut = None,
            html_out: HtmlOut = None, tracking: Tracking = None) -> None:
        check_outputs(json_out, html_out, folder=out, force=force, tracking=tracking)
        ...validate inputs...
        with track("cmd", config=..., inputs=..., store=tracking) as run:
            ...
            write_outputs(result, json_out, html_out, run=run)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
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

if TYPE_CHECKING:
    from recscope.results import Result
    from recscope.tracking import RunLogger

console = Console()

Force = Annotated[bool, typer.Option(
    "--force", help="Write into an existing, non-empty --out folder: the files recscope "
    "wrote there before are replaced, every other file is kept.")]
Tracking = Annotated[str | None, typer.Option(
    "--tracking", metavar="FOLDER|URI", show_default=False,
    help="Tracking store: a folder (mlflow.db inside) or an MLflow URI. Default: "
    "MLFLOW_TRACKING_URI, else ./.recscope/ in the current folder.")]
JsonOut = Annotated[Path | None, typer.Option(
    "--json", metavar="FILE", help="Also write the result as JSON to FILE.")]
HtmlOut = Annotated[Path | None, typer.Option(
    "--html", metavar="FILE", help="Also write a self-contained HTML report to FILE.")]
OutDir = Annotated[Path, typer.Option(
    "--out", metavar="FOLDER", help="Output folder (created; an existing non-empty one "
    "needs --force).")]


def check_outputs(*files: str | os.PathLike[str] | None, folder: str | os.PathLike[str] |
                  None = None, force: bool = False, tracking: str | None = None,
                  track: bool = True) -> None:
    """Refuse bad outputs before any work, each in one line naming the path: a file
    output that is a folder, sits under a file or would replace a file recscope did not
    write; an output folder that is a file or is not empty (without ``force``); two
    outputs with one name; a tracking store that cannot be written (unless ``track`` is
    False)."""
    from recscope.errors import OutputError
    from recscope.io import check_out_dir, check_out_file

    given = [Path(f) for f in files if f is not None]
    seen: dict[str, Path] = {}
    for f in given:
        target = check_out_file(f)
        key = str(target)
        if key in seen:
            raise OutputError("is given for two outputs; choose one name per output",
                              path=str(f))
        seen[key] = f
    if folder is not None:
        target_dir = check_out_dir(folder, force=force).resolve()
        cwd = Path.cwd().resolve()
        if target_dir == cwd or target_dir in cwd.parents:
            raise OutputError("is the current folder (or holds it); name a new folder "
                              "for the outputs", path=str(folder))
    if track:
        from recscope.tracking import check_store

        check_store(tracking)


def write_outputs(result: Result, json_out: Path | None = None, html_out: Path | None = None,
                  *, run: RunLogger | None = None, what: str = "result") -> None:
    """Write a result's JSON and HTML all or none, log them to ``run`` and say so."""
    from recscope.io import write_all

    outputs: dict[Path, str] = {}
    if json_out is not None:
        outputs[json_out] = result.to_json() + "\n"
    if html_out is not None:
        outputs[html_out] = result.to_html()
    if not outputs:
        return
    for path in write_all(outputs):
        if run is not None:
            run.log_artifact(path)
        console.print(f"{what} written to {path}", highlight=False, markup=False)


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
