"""Shared helpers of the orchestration tests: CLI runs, folder snapshots, small configs."""

from __future__ import annotations

import hashlib
import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ALS_SPACE = """name = "als-small"

[[retrievers]]
component = "als"
quota = 50
[retrievers.params]
factors = {tune = "int", low = 4, high = 32, log = true, default = 8}
regularization = {tune = "float", low = 0.001, high = 1.0, log = true}
iterations = 4
"""

ALS_PIPELINE = """name = "als-fixed"

[[retrievers]]
component = "als"
quota = 50
params = { factors = 16, regularization = 0.05, iterations = 4 }
"""

POP_PIPELINE = """name = "pop"

[[retrievers]]
component = "popularity"
quota = 50
"""


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``recscope ARGS`` in-process; (exit code, stdout, stderr)."""
    from recscope.cli import run

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = run([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative name -> sha256), to prove nothing changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(err: str) -> str:
    """The single ``error:`` line of a failed command (asserts there is exactly one)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]
