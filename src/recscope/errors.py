"""Exceptions raised by recscope: every one names what was wrong and where."""

from __future__ import annotations


class RecscopeError(Exception):
    """Base class of every error recscope raises on bad input or configuration."""


class DataValidationError(RecscopeError, ValueError):
    """Input data breaks the canonical schema.

    The message names the file (when known), the column and the first bad row, so a user
    can find the problem without re-reading the whole file. ``row`` counts data rows from
    0; for text files ``line`` is the line number in the file (header is line 1).
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        column: str | None = None,
        row: int | None = None,
        line: int | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.column = column
        self.row = row
        self.line = line
        where = []
        if file is not None:
            where.append(f"file {file}")
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


class ConfigError(RecscopeError, ValueError):
    """A configuration file or object is invalid; names the key and the file."""

    def __init__(self, problem: str, *, key: str | None = None, file: str | None = None) -> None:
        self.problem = problem
        self.key = key
        self.file = file
        where = []
        if file is not None:
            where.append(f"file {file}")
        if key is not None:
            where.append(f"key {key!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


class OutputError(RecscopeError, OSError):
    """An output location cannot be used (a file where a folder is expected, a folder that
    holds files recscope did not write, no permission); names the path."""

    def __init__(self, problem: str, *, path: str) -> None:
        self.problem = problem
        self.path = path
        super().__init__(f"output {path}: {problem}")
