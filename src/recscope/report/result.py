"""The ``Result`` contract: every result can be saved, reloaded and rendered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

from rich.console import Console
from rich.table import Table

from recscope.io import write_json, write_text


class Result:
    """Mixin for result objects: JSON round trip, Rich table, HTML page.

    Subclasses implement :meth:`to_dict`, :meth:`from_dict`, :meth:`rich_table` and
    :meth:`to_html`; saving, loading and printing come from here.
    """

    kind: ClassVar[str] = "result"

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        raise NotImplementedError

    def rich_table(self) -> Table:
        raise NotImplementedError

    def to_html(self) -> str:
        raise NotImplementedError

    def to_json(self) -> str:
        from recscope.io import jsonable

        return json.dumps(jsonable(self.to_dict()), indent=2, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        """JSON (``.json``) or HTML (``.html``), written atomically."""
        p = Path(path)
        if p.suffix.lower() == ".html":
            return write_text(p, self.to_html())
        return write_json(p, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Self:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def print(self, console: Console | None = None) -> None:
        (console or Console()).print(self.rich_table())

    def __rich__(self) -> Table:
        return self.rich_table()
