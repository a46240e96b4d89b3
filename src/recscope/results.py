"""One result vocabulary: the :class:`Effect` row and the :class:`Result` base.

Every package returns its numbers as a :class:`Result` subclass (a dataclass) whose estimate
rows are :class:`Effect` objects with the same field names everywhere: ``estimate``,
``ci_low``, ``ci_high``, ``se``, ``p_value``, ``n``. Saving, reloading and rendering (JSON,
pandas, a Rich table, an HTML page) are generic and come from here, so a result has exactly
one JSON shape: the one :meth:`Result.to_dict` produces.

A subclass declares its fields, sets ``kind`` and ``title`` and implements
:meth:`Result.effects`; it may add banners (:meth:`Result.notes`) or plots
(:meth:`Result.html_sections`). Fields that hold Arrow tables use :data:`ArrowTable`;
:class:`Effect` fields (alone, in lists or dicts) are written as flat rows.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

import pyarrow as pa
from pydantic import BeforeValidator, ConfigDict, PlainSerializer, PlainValidator, TypeAdapter
from rich.console import Console
from rich.table import Table

from recscope.errors import ConfigError
from recscope.io import jsonable, write_json, write_text


def _nan_if_none(value: Any) -> Any:
    return math.nan if value is None else value


Num = Annotated[float, BeforeValidator(_nan_if_none)]
"""A float that is written as JSON ``null`` when not finite and read back as NaN."""


def _table_to_json(table: pa.Table) -> dict[str, list[Any]]:
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _table_from_json(value: Any) -> pa.Table:
    if isinstance(value, pa.Table):
        return value
    return pa.table({k: pa.array(v) for k, v in dict(value).items()})


ArrowTable = Annotated[pa.Table, PlainValidator(_table_from_json),
                       PlainSerializer(_table_to_json, when_used="json")]
"""An Arrow table field: a ``{column: [values]}`` object in JSON."""

CORE_FIELDS = ("metric", "estimate", "ci_low", "ci_high", "se", "p_value", "n")


@dataclasses.dataclass(frozen=True)
class Effect:
    """One estimate row: a metric's estimate with its interval, standard error, p-value
    and sample size.

    ``extra`` holds what a family adds (``variant``, ``system``, ``estimator``,
    ``component``, relative effects, diagnostics, the truth in the simulator...); it is
    flattened beside the core fields in JSON and tables. NaN means "not computable";
    ``p_value`` is NaN for rows that are not tests.
    """

    metric: str
    estimate: Num
    ci_low: Num = math.nan
    ci_high: Num = math.nan
    se: Num = math.nan
    p_value: Num = math.nan
    n: Num = math.nan
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        if key in CORE_FIELDS:
            return getattr(self, key)
        return self.extra[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def to_dict(self) -> dict[str, Any]:
        """The flat row: core fields first, then ``extra``'s keys."""
        out: dict[str, Any] = {k: getattr(self, k) for k in CORE_FIELDS}
        clash = set(out) & set(self.extra)
        if clash:
            raise ValueError(f"extra repeats core fields {sorted(clash)}")
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Effect:
        """Inverse of :meth:`to_dict` (JSON ``null`` floats become NaN)."""
        if "metric" not in row or "estimate" not in row:
            raise ConfigError("an effect row needs 'metric' and 'estimate'", key="effects")
        core = {k: _nan_if_none(row[k]) if k != "metric" else row[k]
                for k in CORE_FIELDS if k in row}
        extra = {k: v for k, v in row.items() if k not in CORE_FIELDS}
        return cls(**core, extra=extra)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """Inside results, an Effect is validated from and serialised to its flat row."""
        from pydantic_core import core_schema

        def parse(value: Any) -> Effect:
            return value if isinstance(value, Effect) else cls.from_dict(value)

        return core_schema.no_info_plain_validator_function(
            parse, serialization=core_schema.plain_serializer_function_ser_schema(
                lambda e: e.to_dict(), when_used="json"))

    @property
    def computable(self) -> bool:
        """False when the estimate could not be computed (NaN)."""
        return math.isfinite(self.estimate)


@cache
def _adapter(cls: type) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


class Result:
    """Base of every result: generic JSON round trip, pandas frame, Rich table and HTML.

    Subclasses are dataclasses. ``to_dict`` writes ``{"kind": ..., <fields>}`` with
    :class:`Effect` rows flattened; ``from_dict`` reads it back (NaN survives as ``null``).
    """

    __pydantic_config__ = ConfigDict(arbitrary_types_allowed=True)
    kind: ClassVar[str] = "result"
    title: ClassVar[str] = "Result"

    # ------------------------------------------------------------------ content
    def effects(self) -> list[Effect]:
        """The estimate rows this result reports (what tables and frames show)."""
        return []

    def notes(self) -> list[str]:
        """Warnings a reader must see before the numbers (SRM, exclusions, ...)."""
        return []

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows for tables: one per effect."""
        return [e.to_dict() for e in self.effects()]

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        data = _adapter(type(self)).dump_python(self, mode="json")
        return {"kind": self.kind, **jsonable(data)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kind = data.get("kind", cls.kind)
        if kind != cls.kind:
            raise ConfigError(f"expected a {cls.kind!r} result, got {kind!r}", key="kind")
        return _adapter(cls).validate_python({k: v for k, v in data.items() if k in fields})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        """JSON (``.json``) or HTML (``.html``), written atomically."""
        p = Path(path)
        if p.suffix.lower() == ".html":
            return write_text(p, self.to_html())
        return write_json(p, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Self:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read result: {exc}", file=str(p)) from None
        return cls.from_dict(data)

    # ------------------------------------------------------------------ rendering
    def to_frame(self) -> Any:
        """The effect rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows())

    def rich_table(self) -> Table:
        from recscope.report.tables import rich_table

        return rich_table(self.rows(), title=self.title, notes=self.notes())

    def html_sections(self, page: Any) -> None:
        """Add plots or extra sections to the HTML page (``page`` is an HtmlReport)."""

    def to_html(self) -> str:
        from recscope.report.html import HtmlReport

        page = HtmlReport(self.title)
        for note in self.notes():
            page.banner(note, "bad")
        page.table(self.rows())
        self.html_sections(page)
        return page.render()

    def print(self, console: Console | None = None) -> None:
        (console or Console()).print(self.rich_table())

    def __rich__(self) -> Table:
        return self.rich_table()
