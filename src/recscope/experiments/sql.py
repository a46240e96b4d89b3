"""SQL generation with SQLGlot: per-unit aggregation and sufficient statistics.

The query has three steps, all run by the engine:

1. ``a``: one row per assigned unit (variant, first exposure, covariates, segments); units
   seen in more than one variant get a NULL variant, so they form their own group in the
   final pass, which counts them (``n_conflicts``) instead of any variant. When a first,
   cheap query (:meth:`Plan.checks_sql`) finds one row per unit, ``a`` reads the rows
   as they are: no GROUP BY, one hash table less.
2. ``e<k>``: per-unit aggregates of each events table (windows relative to exposure,
   filters), then ``u``: the per-unit variables, with zeros for units without events
   (and per-unit values capped where a metric sets ``cap``).
3. per variant (and segment): count, means, variances and covariances of the variables.

Before it, :meth:`Plan.checks_sql` counts what the data must be checked for (empty
tables, units with events but no assignment, NULL / NaN / infinite values of every
metric and covariate column), so the analysis refuses or reports them instead of
silently turning them into numbers; column types are checked against each metric's kind
when the plan is built, before any SQL runs.

Every identifier comes from the data's own schema (checked first, then quoted by
SQLGlot), every value is a SQLGlot literal: no user text is pasted into SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import sqlglot
from sqlglot import exp

from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.metrics import AnalysisConfig, Metric
from recscope.experiments.moments import Moments, Term

DAY = 86400.0
_NUMERIC = ("TINYINT", "SMALLINT", "INT", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
            "REAL", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "INTEGER", "LONG",
            "SHORT", "BYTE")


@dataclass(frozen=True)
class Table:
    """A source table as the engine sees it: a SQL table expression and its schema."""

    name: str
    expr: exp.Expression
    columns: Mapping[str, str]


@dataclass
class MetricPlan:
    """Where a metric's variables live in the stats row, and its terms."""

    metric: Metric
    index: int
    variables: list[str] = field(default_factory=list)
    term: Term = (0, None)
    covariates: list[Term] = field(default_factory=list)
    table: int | None = None
    roles: list[tuple[str, str]] = field(default_factory=list)
    """Per variable: (``value``|``pre``|``cov``, column)."""


def q(name: str) -> exp.Identifier:
    """A quoted identifier."""
    return exp.to_identifier(name, quoted=True)


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(q(name), table=q(table) if table else None)


def lit(value: object) -> exp.Expression:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))


def _double(e: exp.Expression) -> exp.Expression:
    return exp.Cast(this=e, to=exp.DataType.build("DOUBLE"))


def _num(value: object, default: float = float("nan")) -> float:
    return default if value is None else float(value)  # type: ignore[arg-type]


def aliased(table: exp.Expression, alias: str) -> exp.Table:
    """``table AS alias`` for a table name or a table function."""
    t = table.copy() if isinstance(table, exp.Table) else exp.Table(this=table.copy())
    t.set("alias", exp.TableAlias(this=q(alias)))
    return t


def is_numeric(type_name: str) -> bool:
    """Whether an engine type name (DuckDB or Spark) is a number type."""
    t = type_name.upper()
    return any(t.startswith(n) for n in _NUMERIC)


def _is_unsigned(type_name: str) -> bool:
    return is_numeric(type_name) and type_name.upper().startswith("U")


def _is_float(type_name: str) -> bool:
    t = type_name.upper()
    return t.startswith(("FLOAT", "DOUBLE", "REAL"))


def _is_bool(type_name: str) -> bool:
    return type_name.upper().startswith("BOOL")


def _is_time(type_name: str) -> bool:
    return type_name.upper().startswith(("TIMESTAMP", "DATE"))


def _is_text(type_name: str) -> bool:
    return type_name.upper().startswith(("VARCHAR", "STRING", "TEXT", "CHAR"))


def _or(conds: Sequence[exp.Expression]) -> exp.Expression:
    out = conds[0]
    for c in conds[1:]:
        out = exp.Or(this=out, expression=c)
    return out


def bad_value(column: exp.Expression, type_name: str, dialect: str, *,
              infinite: bool = False) -> exp.Expression:
    """``column IS NULL`` (or NaN for floating-point columns); with ``infinite``, whether
    it is +-infinity instead.

    On DuckDB NaN is found by its hash (``HASH(x) = HASH('NaN')``): Parquet statistics
    leave NaN out of a column's min/max, and DuckDB 2.0's statistics propagation then
    folds ``ISNAN(x)`` to false for the whole file (seen with pyarrow-written files).
    """
    if infinite:
        return exp.EQ(this=exp.Abs(this=column.copy()),
                      expression=exp.Cast(this=exp.Literal.string("Infinity"),
                                          to=exp.DataType.build("DOUBLE")))
    out: exp.Expression = exp.Is(this=column.copy(), expression=exp.Null())
    if _is_float(type_name):
        if dialect == "duckdb":
            nan = exp.Cast(this=exp.Literal.string("NaN"), to=exp.DataType.build("DOUBLE"))
            is_nan: exp.Expression = exp.EQ(
                this=exp.Anonymous(this="HASH", expressions=[column.copy()]),
                expression=exp.Anonymous(this="HASH", expressions=[nan]))
        else:
            is_nan = exp.Anonymous(this="ISNAN", expressions=[column.copy()])
        out = exp.Or(this=out, expression=is_nan)
    return out


def text_example_sql(table: Table, column: str, dialect: str) -> str:
    """A value of a text column that is not a number (for error messages)."""
    c = col(column, "e")
    sel = exp.select(c).from_(aliased(table.expr, "e")).where(exp.and_(
        exp.Not(this=exp.Is(this=c.copy(), expression=exp.Null())),
        exp.Is(this=exp.TryCast(this=c.copy(), to=exp.DataType.build("DOUBLE")),
               expression=exp.Null()))).limit(1)
    return sel.sql(dialect)


class Plan:
    """Checks a config against the tables' schemas and builds the queries."""

    def __init__(self, config: AnalysisConfig, assignments: Table, events: Sequence[Table],
                 dialect: str = "duckdb") -> None:
        self.config = config
        self.assignments = assignments
        self.events = list(events)
        self.dialect = dialect
        c = config
        self._need(assignments, c.unit, "unit")
        self._need(assignments, c.variant, "variant")
        self.exposure = c.exposure or next(
            (n for n in ("first_exposure_ts", "exposure_ts") if n in assignments.columns), None)
        if c.exposure:
            self._need(assignments, c.exposure, "exposure")
        for s in c.segments:
            self._need(assignments, s, "segments")
        for t in self.events:
            self._need(t, c.unit, "unit")
        self.metrics = [self._plan_metric(i, m) for i, m in enumerate(c.metrics)]
        self._check_types()
        self.one_row_per_unit = False
        """Set by :meth:`apply_checks` when no unit has two assignment rows."""
        self.nonnegative: set[tuple[str, str]] = set()
        """(events table, column) pairs known to hold no negative value."""
        self.caps: dict[int, float] = {}
        """Per metric index: the cap of its per-unit values (see :meth:`cap_sql`)."""
        self._canonicalise()

    # -- checks ---------------------------------------------------------------------------

    def _need(self, table: Table, column: str, key: str) -> None:
        if column not in table.columns:
            raise ConfigError(
                f"column {column!r} not found in table {table.name} "
                f"(columns: {', '.join(table.columns)})", key=key, file=self.config.source)

    def _type_error(self, table: Table, column: str, problem: str) -> DataValidationError:
        return DataValidationError(f"{problem} (type {table.columns[column]})",
                                   file=table.name, column=column)

    def _check_types(self) -> None:
        """Every column's type against its role, before any SQL runs: unit ids of one
        kind (numbers or text) in every table; numbers (or booleans) for sums, ratios,
        quantiles, proportions and covariates; a time or a number for exposure and event
        times. A text column where a number is needed is named, with the rule to fix it."""
        c = self.config
        a = self.assignments
        unit_type = a.columns[c.unit]
        for t in self.events:
            other = t.columns[c.unit]
            if (is_numeric(unit_type) or _is_bool(unit_type)) != (
                    is_numeric(other) or _is_bool(other)) or _is_time(unit_type) != _is_time(other):
                raise DataValidationError(
                    f"unit ids are {other} here but {unit_type} in {a.name}: the unit "
                    "column must hold the same kind of id (all numbers or all text) in "
                    "every table", file=t.name, column=c.unit)
        if self.exposure is not None:
            et = a.columns[self.exposure]
            if not (is_numeric(et) or _is_time(et)):
                raise self._type_error(a, self.exposure, "the first-exposure column must be "
                                       "a timestamp, a date or a number of seconds")
        for mp in self.metrics:
            m = mp.metric
            t = self.events[mp.table] if mp.table is not None else a
            for column in m.value_columns:
                type_name = t.columns[column]
                if m.kind == "count_distinct":
                    continue
                if not (is_numeric(type_name) or _is_bool(type_name)):
                    rule = (" (a proportion counts a unit when a value is > 0: store "
                            "true/false as BOOLEAN or 1/0, not as text)"
                            if m.kind == "proportion" else "")
                    raise self._type_error(t, column, f"metric {m.name!r} ({m.kind}) needs "
                                           f"a numeric column{rule}")
            for column in m.covariates:
                type_name = a.columns[column]
                if not (is_numeric(type_name) or _is_bool(type_name)):
                    raise self._type_error(a, column, f"covariate of metric {m.name!r} must "
                                           "be numeric")
            if mp.table is not None and (m.window or m.cuped_days or self._window(m)):
                t = self.events[mp.table]
                ts = self._timestamp(t, m)
                if not (is_numeric(t.columns[ts]) or _is_time(t.columns[ts])):
                    raise self._type_error(t, ts, "the event time column must be a "
                                           "timestamp, a date or a number of seconds")
                if self.exposure is not None and (
                        _is_time(t.columns[ts]) != _is_time(a.columns[self.exposure])):
                    raise self._type_error(t, ts, f"event times and first exposures "
                                           f"({a.columns[self.exposure]} in {a.name}) must "
                                           "both be times or both be numbers")

    def _timestamp(self, table: Table, metric: Metric) -> str:
        key = f"metrics.{metric.name}.window"
        ts = self.config.timestamp or next(
            (n for n in ("ts", "timestamp") if n in table.columns), None)
        if ts is None or ts not in table.columns:
            raise ConfigError(f"a window needs a timestamp column in table {table.name} "
                              "(set timestamp = ...)", key=key, file=self.config.source)
        if self.exposure is None:
            raise ConfigError("a window needs the first-exposure column in the assignments "
                              "(set exposure = ...)", key=key, file=self.config.source)
        return ts

    def _plan_metric(self, index: int, m: Metric) -> MetricPlan:
        mp = MetricPlan(m, index)
        cols = m.value_columns
        key = f"metrics.{m.name}"
        if m.events is not None:
            match = [i for i, t in enumerate(self.events) if t.name == m.events]
            if not match:
                raise ConfigError(f"no events table named {m.events!r} (have: "
                                  f"{', '.join(t.name for t in self.events)})",
                                  key=f"{key}.events", file=self.config.source)
            mp.table = match[0]
            for c in cols:
                self._need(self.events[mp.table], c, f"{key}.column")
        else:
            mp.table = next((i for i, t in enumerate(self.events)
                             if all(c in t.columns for c in cols)), None)
            if mp.table is None and not all(c in self.assignments.columns for c in cols):
                missing = next(c for c in cols if not any(c in t.columns for t in self.events)
                               and c not in self.assignments.columns)
                where = ", ".join([t.name for t in self.events] + [self.assignments.name])
                raise ConfigError(f"column {missing!r} not found in any table ({where})",
                                  key=f"{key}.{self._col_key(m, missing)}",
                                  file=self.config.source)
            if mp.table is None and (m.window or m.filter or m.cuped_days):
                raise ConfigError("window, filter and cuped_days need the metric's columns "
                                  "in an events table", key=key, file=self.config.source)
        if mp.table is not None:
            t = self.events[mp.table]
            for fc in m.filter:
                self._need(t, fc, f"{key}.filter")
            if m.window or m.cuped_days:
                self._timestamp(t, m)
        for c in m.covariates:
            self._need(self.assignments, c, f"{key}.covariates")
        # variables: value(s), pre-period value(s), then covariates
        pre = f"m{index}_"
        names = ["y", "d"][:len(cols)]
        for n, c in zip(names, cols, strict=True):
            mp.variables.append(pre + n)
            mp.roles.append(("value", c))
        if m.kind == "ratio":
            mp.term = (0, 1)
        if m.cuped_days:
            for n, c in zip(names, cols, strict=True):
                mp.variables.append(pre + "p" + n)
                mp.roles.append(("pre", c))
            k = len(mp.variables)
            mp.covariates.append((k - 2, k - 1) if m.kind == "ratio" else (k - 1, None))
        for k, c in enumerate(m.covariates):
            mp.variables.append(f"{pre}c{k}")
            mp.roles.append(("cov", c))
            mp.covariates.append((len(mp.variables) - 1, None))
        return mp

    @staticmethod
    def _col_key(m: Metric, column: str) -> str:
        if m.kind != "ratio":
            return "column"
        return "numerator" if column == m.numerator else "denominator"

    # -- query pieces ---------------------------------------------------------------------

    def _epoch(self, e: exp.Expression, type_name: str) -> exp.Expression:
        return _double(e) if is_numeric(type_name) else exp.TimeToUnix(this=e)

    def _window_cond(self, t: Table, m: Metric, window: tuple[float, float] | None
                     ) -> exp.Expression | None:
        conds: list[exp.Expression] = []
        if window is not None:
            ts = self._timestamp(t, m)
            diff = exp.Sub(this=self._epoch(col(ts, "e"), t.columns[ts]),
                           expression=self._epoch(col("x_ts", "a"),
                                                  self.assignments.columns[self.exposure or ""]))
            lo, hi = window
            conds.append(exp.GTE(this=diff.copy(), expression=lit(lo * DAY)))
            if hi != float("inf"):
                conds.append(exp.LT(this=diff, expression=lit(hi * DAY)))
        for fc, vals in m.filter.items():
            c = col(fc, "e")
            conds.append(exp.EQ(this=c, expression=lit(vals[0])) if len(vals) == 1
                         else exp.In(this=c, expressions=[lit(v) for v in vals]))
        if not conds:
            return None
        out = conds[0]
        for cnd in conds[1:]:
            out = exp.And(this=out, expression=cnd)
        return out

    def _unit_agg(self, t: Table, m: Metric, column: str, cond: exp.Expression | None
                  ) -> exp.Expression:
        """Per-unit aggregate of one column under a condition (NULL when no row matches).

        Sums add DOUBLEs (exact for integers below 2**53, and far faster in DuckDB than
        its 128-bit integer sums). A proportion (any value > 0) of a column without
        negative values (booleans, unsigned, or found so by :meth:`checks_sql`) is
        ``SUM(x) > 0``: the very aggregate a mean of the same column computes, which
        the engine then computes once (a separate MAX cost 15% of the per-unit pass).
        Otherwise it is ``MAX(x) > 0`` over DOUBLEs. Distinct counts take the column as
        it is; booleans are cast first.

        NULL / NaN values: with ``nulls = "zero"`` they count as 0 (a distinct count
        ignores them); with ``nulls = "drop"`` a unit with one in the metric's rows gets
        NULL (dropped from the metric); with ``"error"`` the checks found none.
        """
        value: exp.Expression = col(column, "e")
        type_name = t.columns[column].upper()
        bad = bad_value(col(column, "e"), type_name, self.dialect)
        if m.kind in ("mean", "ratio", "quantile") or type_name.startswith("BOOL") or (
                m.kind == "proportion" and is_numeric(type_name)):
            value = _double(value)
        if m.nulls == "zero" and m.kind != "count_distinct":
            value = exp.Case(ifs=[exp.If(this=bad.copy(), true=lit(0.0))], default=value)
        inner = value if cond is None else exp.Case(ifs=[exp.If(this=cond.copy(), true=value)])
        if m.kind == "proportion":
            nonneg = (type_name.startswith("BOOL") or _is_unsigned(type_name)
                      or (t.name, column) in self.nonnegative)
            agg = exp.Sum(this=inner) if nonneg else exp.Max(this=inner)
            out: exp.Expression = _double(exp.Case(ifs=[exp.If(
                this=exp.GT(this=agg, expression=lit(0)), true=lit(1))], default=lit(0)))
        elif m.kind == "count_distinct":
            out = _double(exp.Count(this=exp.Distinct(expressions=[inner])))
        else:
            out = exp.Sum(this=inner)
        if m.nulls == "drop":
            flag = bad if cond is None else exp.and_(cond.copy(), bad)
            n_bad = exp.Sum(this=exp.Case(ifs=[exp.If(this=flag, true=lit(1))],
                                          default=lit(0)))
            out = exp.Case(ifs=[exp.If(this=exp.GT(this=n_bad, expression=lit(0)),
                                       true=exp.Null())],
                           default=exp.Coalesce(this=out, expressions=[lit(0.0)]))
        return out

    def _unit_column(self, m: Metric, column: str) -> exp.Expression:
        """A per-unit value read from the assignments (a covariate, or a metric's column
        of a one-row-per-unit table), with the metric's null policy."""
        value = _double(col(column, "s"))
        bad = bad_value(col(column, "s"), self.assignments.columns[column], self.dialect)
        if m.nulls == "zero":
            return exp.Case(ifs=[exp.If(this=bad, true=lit(0.0))], default=value)
        if m.nulls == "drop":
            return exp.Case(ifs=[exp.If(this=bad, true=exp.Null())], default=value)
        return value

    def _window(self, m: Metric) -> tuple[float, float] | None:
        if m.window is not None:
            return m.window
        t = self.events[self._mp(m).table or 0]
        ts = self.config.timestamp or next((n for n in ("ts", "timestamp") if n in t.columns),
                                           None)
        # by default, only events at or after first exposure count
        if self.exposure is not None and ts is not None and ts in t.columns:
            return (0.0, float("inf"))
        return None

    def _mp(self, m: Metric) -> MetricPlan:
        return next(p for p in self.metrics if p.metric is m)

    def _canonicalise(self) -> None:
        """Give every distinct per-unit variable one name (metrics share aggregates and
        covariates), so each is computed, and its moments taken, only once."""
        self.canon: dict[str, str] = {}
        self._agg: dict[str, exp.Expression] = {}
        self._origin: dict[str, tuple[str, int | None]] = {}  # canonical -> (a|e, table)
        self._unit_value: dict[str, exp.Expression] = {}  # canonical -> expression in u
        seen: dict[tuple[object, ...], str] = {}
        for mp in self.metrics:
            m = mp.metric
            for name, (role, column) in zip(mp.variables, mp.roles, strict=True):
                cap = self.caps.get(mp.index) if role == "value" else None
                if role == "cov" or mp.table is None:
                    agg = self._unit_column(m, column)
                    origin: tuple[str, int | None] = ("a", None)
                else:
                    t = self.events[mp.table]
                    win = self._window(m) if role == "value" else (-(m.cuped_days or 0), 0.0)
                    agg = self._unit_agg(t, m, column, self._window_cond(t, m, win))
                    origin = ("e", mp.table)
                key = (origin, agg.sql(self.dialect), m.nulls == "drop", cap)
                if key not in seen:
                    seen[key] = name
                    self._origin[name] = origin
                    self._agg[name] = agg
                    if origin[0] == "a":
                        value: exp.Expression = col(name, "a")
                    elif m.nulls == "drop":  # no events: 0; dropped: NULL
                        value = exp.Case(ifs=[exp.If(this=exp.Is(
                            this=col("u", f"e{origin[1]}"), expression=exp.Null()),
                            true=lit(0.0))], default=col(name, f"e{origin[1]}"))
                    else:
                        value = exp.Coalesce(this=col(name, f"e{origin[1]}"),
                                             expressions=[lit(0.0)])
                    if cap is not None:
                        value = exp.Least(this=value, expressions=[lit(float(cap))])
                    self._unit_value[name] = value
                self.canon[name] = seen[key]
        self._order = {c: i for i, c in enumerate(dict.fromkeys(self.canon.values()))}

    def unit_variables(self, only: set[int] | None = None) -> list[str]:
        """Canonical per-unit variables of the metrics in ``only`` (all when None): the
        columns of the ``u`` CTE that :meth:`with_unit_ctes` provides (public for
        queries built on the analysis' per-unit table, e.g. metric trees)."""
        return self._needed(only)

    def with_unit_ctes(self, final: exp.Select, only: set[int] | None = None) -> exp.Select:
        """``final`` preceded by the analysis' ``a``, ``e<k>`` and ``u`` CTEs."""
        return self._with_ctes(final, only)

    def _needed(self, only: set[int] | None) -> list[str]:
        """Canonical variables of the metrics in ``only`` (all when None), in order."""
        out: dict[str, None] = {}
        for mp in self.metrics:
            if only is None or mp.index in only:
                for v in mp.variables:
                    out[self.canon[v]] = None
        return list(out)

    def _assign_cte(self, needed: list[str]) -> exp.Select:
        c = self.config
        per_unit = self.one_row_per_unit
        variant = col(c.variant, "s")

        def first(e: exp.Expression) -> exp.Expression:
            return e if per_unit else exp.Min(this=e)

        if per_unit:
            v: exp.Expression = variant
            nv: exp.Expression = exp.Case(ifs=[exp.If(
                this=exp.Is(this=variant.copy(), expression=exp.Null()), true=lit(0))],
                default=lit(1))
        else:
            lo, hi = exp.Min(this=variant), exp.Max(this=variant.copy())
            same = exp.EQ(this=lo.copy(), expression=hi)
            v = exp.Case(ifs=[exp.If(this=same.copy(), true=lo.copy())])
            nv = exp.Case(ifs=[exp.If(this=exp.Is(this=lo.copy(), expression=exp.Null()),
                                      true=lit(0)),
                               exp.If(this=same, true=lit(1))], default=lit(2))
        sel = exp.select(exp.alias_(col(c.unit, "s"), "u"), exp.alias_(v, "v"),
                         exp.alias_(nv, "nv"))
        if self.exposure:
            sel = sel.select(exp.alias_(first(col(self.exposure, "s")), "x_ts"))
        for i, s in enumerate(c.segments):
            sel = sel.select(exp.alias_(first(col(s, "s")), f"s{i}"))
        for name in needed:
            if self._origin[name][0] == "a":
                value = self._agg[name].copy()  # the column as DOUBLE, with the null policy
                sel = sel.select(exp.alias_(value if per_unit else exp.Min(this=value), name))
        sel = sel.from_(aliased(self.assignments.expr, "s"))
        return sel if per_unit else sel.group_by(col(c.unit, "s"))

    def _events_cte(self, k: int, needed: list[str], only: set[int] | None
                    ) -> exp.Select | None:
        mine = [n for n in needed if self._origin[n] == ("e", k)]
        if not mine:
            return None
        t = self.events[k]
        unit = self.config.unit
        sel = exp.select(exp.alias_(col(unit, "e"), "u"),
                         *[exp.alias_(self._agg[n].copy(), n) for n in mine])
        needs_join = any(self._window(mp.metric) is not None or mp.metric.cuped_days
                         for mp in self.metrics
                         if mp.table == k and (only is None or mp.index in only))
        sel = sel.from_(aliased(t.expr, "e"))
        if needs_join:
            sel = sel.join(exp.to_table("a"), on=exp.EQ(this=col(unit, "e"),
                                                         expression=col("u", "a")))
        return sel.group_by(col(unit, "e"))

    def _with_ctes(self, final: exp.Select, only: set[int] | None = None) -> exp.Select:
        """Add the ``a``, ``e<k>`` and ``u`` CTEs (for the metrics in ``only``, or all)."""
        needed = self._needed(only)
        final = final.with_("a", as_=self._assign_cte(needed))
        unit = exp.select(col("v", "a"), col("nv", "a"), col("u", "a"),
                          *[exp.alias_(col(f"s{i}", "a"), f"s{i}")
                            for i in range(len(self.config.segments))])
        joined: list[int] = []
        for k in range(len(self.events)):
            cte = self._events_cte(k, needed, only)
            if cte is not None:
                final = final.with_(f"e{k}", as_=cte)
                joined.append(k)
        for name in needed:
            unit = unit.select(exp.alias_(self._unit_value[name].copy(), name))
        unit = unit.from_("a")
        for k in joined:
            unit = unit.join(exp.to_table(f"e{k}"), on=exp.EQ(
                this=col("u", "a"), expression=col("u", f"e{k}")), join_type="left")
        return final.with_("u", as_=unit)

    def _pair(self, a: str, b: str) -> str:
        """Result column of the covariance of two canonical variables."""
        a, b = sorted((a, b), key=self._order.__getitem__)
        return f"var_{a}" if a == b else f"cov_{a}__{b}"

    def moments(self, row: Mapping[str, object], mp: MetricPlan) -> Moments:
        """A metric's :class:`Moments` from one row of :meth:`stats_sql`."""
        names = [self.canon[v] for v in mp.variables]
        p = len(names)
        mean = np.array([_num(row[f"mean_{n}"]) for n in names])
        cov = np.zeros((p, p))
        for i in range(p):
            for j in range(i, p):
                cov[i, j] = cov[j, i] = _num(row[self._pair(names[i], names[j])], 0.0)
        return Moments(float(_num(row["n"])), mean, cov)

    # -- queries --------------------------------------------------------------------------

    def _sign_candidates(self) -> list[tuple[int, str]]:
        """(events table, column) of proportions whose sign is not known from the type."""
        out: dict[tuple[int, str], None] = {}
        for mp in self.metrics:
            if mp.metric.kind == "proportion" and mp.table is not None:
                t = self.events[mp.table]
                type_name = t.columns[mp.metric.value_columns[0]].upper()
                if is_numeric(type_name) and not _is_unsigned(type_name):
                    out[(mp.table, mp.metric.value_columns[0])] = None
        return list(out)

    def value_columns(self) -> list[tuple[int | None, str, tuple[str, ...]]]:
        """Every (events table or None for the assignments, column) a metric or covariate
        reads, with the metrics reading it."""
        out: dict[tuple[int | None, str], list[str]] = {}
        for mp in self.metrics:
            for column in mp.metric.value_columns:
                out.setdefault((mp.table, column), []).append(mp.metric.name)
            for column in mp.metric.covariates:
                out.setdefault((None, column), []).append(mp.metric.name)
        return [(k, column, tuple(dict.fromkeys(names)))
                for (k, column), names in out.items()]

    def checks_sql(self) -> str:
        """One query whose answers are checked before the analysis (:meth:`apply_checks`)
        and let the main query skip work.

        ``n_dup``: units with more than one assignment row; with none, ``a`` is a plain
        scan instead of a GROUP BY with variant checks. ``nn<i>``: whether a proportion's
        column has no negative value (a global MIN, which Parquet answers from its
        statistics), so the proportion reuses the column's per-unit SUM. ``rows_a`` and
        ``rows_e<k>``: row counts (an empty table is an error). ``orphans_e<k>`` and
        ``orphan_e<k>``: units with events but no assignment row, and one of them.
        ``bad<i>`` / ``inf<i>`` / ``bad_unit<i>``: NULL-or-NaN and infinite values of
        each column in :meth:`value_columns`, and a unit holding one.
        """
        c = self.config
        unit = col(c.unit, "s")
        dup = (exp.select(unit).from_(aliased(self.assignments.expr, "s")).group_by(unit.copy())
               .having(exp.GT(this=exp.Count(this=exp.Star()), expression=lit(1))))
        sel = exp.select(exp.alias_(exp.select(exp.Count(this=exp.Star())).from_(
            dup.subquery("d")).subquery(), "n_dup"))
        for i, (k, column) in enumerate(self._sign_candidates()):
            low = exp.select(exp.GTE(this=exp.Min(this=col(column, "e")), expression=lit(0)))
            low = low.from_(aliased(self.events[k].expr, "e"))
            sel = sel.select(exp.alias_(low.subquery(), f"nn{i}"))

        # one scan per table: its row count and, per checked column, the NULL/NaN and
        # infinite values and a unit holding one
        tables: list[tuple[str, Table, int | None]] = [("a", self.assignments, None)] + [
            (f"e{k}", t, k) for k, t in enumerate(self.events)]
        parts: list[exp.Expression] = []
        for key, t, k_table in tables:
            aggs: list[exp.Expression] = [exp.alias_(exp.Count(this=exp.Star()), f"rows_{key}")]
            for i, (k, column, _) in enumerate(self.value_columns()):
                if k != k_table:
                    continue
                type_name = t.columns[column]
                cv = col(column, "x")
                checks = [("bad", bad_value(cv, type_name, self.dialect))]
                if _is_float(type_name):
                    checks.append(("inf", bad_value(cv, type_name, self.dialect,
                                                    infinite=True)))
                for label, cond in checks:
                    aggs.append(exp.alias_(exp.Sum(this=exp.Case(
                        ifs=[exp.If(this=cond.copy(), true=lit(1))], default=lit(0))),
                        f"{label}{i}"))
                any_bad = _or([cond for _, cond in checks])
                aggs.append(exp.alias_(exp.Min(this=exp.Case(ifs=[exp.If(
                    this=any_bad, true=exp.Cast(this=col(c.unit, "x"),
                                                to=exp.DataType.build("TEXT")))])),
                    f"bad_unit{i}"))
            parts.append(exp.select(*aggs).from_(aliased(t.expr, "x")).subquery(f"c_{key}"))
        assigned = exp.select(exp.alias_(col(c.unit, "s"), "au")).distinct().from_(
            aliased(self.assignments.expr, "s"))
        for k, t in enumerate(self.events):
            if t.expr == self.assignments.expr:
                continue  # one table for both: no unit can be missing
            units = exp.select(exp.alias_(col(c.unit, "e"), "eu")).distinct().from_(
                aliased(t.expr, "e"))
            orphans = (exp.select(exp.alias_(exp.Count(this=exp.Star()), f"orphans_e{k}"),
                                  exp.alias_(exp.Min(this=exp.Cast(
                                      this=col("eu", "o"), to=exp.DataType.build("TEXT"))),
                                      f"orphan_e{k}"))
                       .from_(units.subquery("o"))
                       .join(assigned.subquery("p"), on=exp.EQ(this=col("eu", "o"),
                                                               expression=col("au", "p")),
                             join_type="left")
                       .where(exp.Is(this=col("au", "p"), expression=exp.Null())))
            parts.append(orphans.subquery(f"o_e{k}"))
        sel = sel.select(exp.Star()).from_(parts[0])
        for part in parts[1:]:
            sel = sel.join(part, join_type="cross")
        return sel.sql(self.dialect)

    def apply_checks(self, row: Mapping[str, object]) -> dict[str, object]:
        """Use the answers of :meth:`checks_sql` (a NULL sign check counts as unknown);
        raise on empty tables and on values a metric's null policy does not allow;
        return what the scorecard reports (``data_checks`` entries)."""
        a = self.assignments
        row = {k.lower(): v for k, v in row.items()}  # engines may change the case
        if not row["rows_a"]:
            raise DataValidationError("the assignments table has no rows", file=a.name)
        for k, t in enumerate(self.events):
            if not row[f"rows_e{k}"]:
                raise DataValidationError("the events table has no rows", file=t.name)
        self.one_row_per_unit = row["n_dup"] == 0
        self.nonnegative = {(self.events[k].name, column) for i, (k, column)
                            in enumerate(self._sign_candidates()) if row[f"nn{i}"] is True}
        orphans = {self.events[k].name: int(row[f"orphans_e{k}"] or 0)  # type: ignore[arg-type]
                   for k in range(len(self.events)) if f"orphans_e{k}" in row}
        example = next((row[f"orphan_e{k}"] for k in range(len(self.events))
                        if row.get(f"orphans_e{k}")), None)
        nulls: dict[str, dict[str, object]] = {}
        policy = {m.name: m.nulls for m in self.config.metrics}
        for i, (k, column, names) in enumerate(self.value_columns()):
            t = a if k is None else self.events[k]
            n_bad = int(row[f"bad{i}"] or 0)  # type: ignore[arg-type]
            n_inf = int(row.get(f"inf{i}") or 0)  # type: ignore[arg-type]
            unit = row[f"bad_unit{i}"]
            if n_inf:
                raise DataValidationError(
                    f"{n_inf} infinite value(s), e.g. unit {unit} (metric "
                    f"{names[0]!r}); infinite values cannot be averaged", file=t.name,
                    column=column)
            if not n_bad:
                continue
            strict = [n for n in names if policy[n] == "error"]
            if strict:
                raise DataValidationError(
                    f"{n_bad} NULL/NaN value(s), e.g. unit {unit} (metric {strict[0]!r}); "
                    'set nulls = "zero" or "drop" on the metric to allow them',
                    file=t.name, column=column)
            for n in names:
                entry = nulls.setdefault(n, {"policy": policy[n], "values": {}})
                entry["values"][column] = n_bad  # type: ignore[index]
        self._canonicalise()
        return {"units_with_events_but_no_assignment": sum(orphans.values()),
                "example_unit_without_assignment": example,
                "units_without_assignment_by_table": orphans, "nulls": nulls}

    def cap_sql(self) -> str | None:
        """The cap of every metric with ``cap = {quantile = q}``: the q-quantile (linear
        interpolation, DuckDB ``QUANTILE_CONT`` = Spark ``PERCENTILE``) of its per-unit
        values over the units in exactly one variant, all variants pooled."""
        want = [mp for mp in self.metrics if mp.metric.cap is not None
                and mp.metric.cap.quantile is not None]
        if not want:
            return None
        sel = exp.select()
        for mp in want:
            name = self.canon[mp.variables[0]]
            fn = "PERCENTILE" if self.dialect == "spark" else "QUANTILE_CONT"
            sel = sel.select(exp.alias_(exp.Anonymous(this=fn, expressions=[
                col(name, "u"), lit(float(mp.metric.cap.quantile))]), f"cap{mp.index}"))
        sel = sel.from_("u").where(exp.Not(this=exp.Is(this=col("v", "u"),
                                                       expression=exp.Null())))
        return self._with_ctes(sel, {mp.index for mp in want}).sql(self.dialect)

    def capped_count_sql(self, caps: Mapping[int, float]) -> str:
        """Per capped metric, the units whose (uncapped) per-unit value exceeds its cap."""
        sel = exp.select()
        for i, cap in caps.items():
            name = self.canon[self.metrics[i].variables[0]]
            sel = sel.select(exp.alias_(exp.Sum(this=exp.Case(ifs=[exp.If(
                this=exp.GT(this=col(name, "u"), expression=lit(float(cap))), true=lit(1))],
                default=lit(0))), f"capped{i}"))
        sel = sel.from_("u").where(exp.Not(this=exp.Is(this=col("v", "u"),
                                                       expression=exp.Null())))
        return self._with_ctes(sel, set(caps)).sql(self.dialect)

    def set_caps(self, caps: Mapping[int, float]) -> None:
        """Cap the per-unit values of these metrics (metric index -> cap)."""
        self.caps = dict(caps)
        self._canonicalise()

    def dropping(self) -> list[MetricPlan]:
        """Metrics with ``nulls = "drop"`` (other than quantiles): each gets its own
        statistics query over the units it keeps (:meth:`stats_sql` with ``metric``)."""
        return [mp for mp in self.metrics
                if mp.metric.nulls == "drop" and mp.metric.kind != "quantile"]

    def stats_sql(self, segments: bool = True, metric: MetricPlan | None = None) -> str:
        """Count, means and covariances of each metric's variables per variant and, in the
        same pass (grouping sets), per variant and value of each segment column. The row
        with a NULL variant holds the excluded units (in several variants, or none).

        Column ``g<i>`` is 0 on the rows of segment ``i`` (SQL ``GROUPING``), 1 elsewhere.
        Metrics that drop units with missing values are left out, unless ``metric`` names
        one: then the query is for it alone, over the units where none of its variables
        is NULL.
        """
        n_seg = len(self.config.segments) if segments else 0
        v = col("v", "u")
        sel = exp.select(exp.alias_(v, "v"))
        for i in range(n_seg):
            sel = sel.select(exp.alias_(col(f"s{i}", "u"), f"s{i}"),
                             exp.alias_(exp.Anonymous(this="GROUPING", expressions=[
                                 col(f"s{i}", "u")]), f"g{i}"))
        nv = col("nv", "u")
        sel = sel.select(
            exp.alias_(exp.Count(this=exp.Star()), "n"),
            exp.alias_(exp.Sum(this=exp.Case(ifs=[exp.If(this=exp.EQ(this=nv.copy(),
                                                                     expression=lit(2)),
                                                         true=lit(1))], default=lit(0))),
                       "n_conflicts"),
            exp.alias_(exp.Sum(this=exp.Case(ifs=[exp.If(this=exp.EQ(this=nv.copy(),
                                                                     expression=lit(0)),
                                                         true=lit(1))], default=lit(0))),
                       "n_missing"),
            exp.alias_(exp.Min(this=exp.Case(ifs=[exp.If(
                this=exp.EQ(this=nv.copy(), expression=lit(2)),
                true=exp.Cast(this=col("u", "u"), to=exp.DataType.build("TEXT")))])),
                "example"))
        means: dict[str, None] = {}
        pairs: dict[str, tuple[str, str]] = {}
        dropping = {p.index for p in self.dropping()}
        for mp in self.metrics:
            if mp.metric.kind == "quantile":
                continue
            if (mp.index != metric.index) if metric is not None else mp.index in dropping:
                continue
            names = [self.canon[v] for v in mp.variables]
            for i, a in enumerate(names):
                means[a] = None
                for b in names[i:]:
                    pairs.setdefault(self._pair(a, b), (a, b))
        for n in means:
            sel = sel.select(exp.alias_(exp.Avg(this=col(n, "u")), f"mean_{n}"))
        for key, (a, b) in pairs.items():
            agg = (exp.func("VAR_SAMP", col(a, "u")) if a == b
                   else exp.func("COVAR_SAMP", col(a, "u"), col(b, "u")))
            sel = sel.select(exp.alias_(agg, key))
        sel = sel.from_("u")
        if metric is not None:
            sel = sel.where(exp.and_(*[exp.Not(this=exp.Is(
                this=col(self.canon[n], "u"), expression=exp.Null())) for n in metric.variables]))
        if n_seg:
            sets: list[exp.Expression] = [exp.Paren(this=v.copy())] + [
                exp.Tuple(expressions=[v.copy(), col(f"s{i}", "u")]) for i in range(n_seg)]
            sel.set("group", exp.Group(expressions=[exp.GroupingSets(expressions=sets)]))
        else:
            sel = sel.group_by(v.copy())
        only = {metric.index} if metric is not None else (
            {mp.index for mp in self.metrics if mp.index not in dropping} if dropping else None)
        return self._with_ctes(sel, only).sql(self.dialect)

    def histogram_sql(self, mp: MetricPlan, width: float = 6.0) -> str:
        """The part of each variant's histogram of per-unit values a quantile needs.

        Per variant: the distinct per-unit values ``y`` with their unit counts ``c``, the
        cumulative count ``cum`` through ``y`` and the variant's units ``n``, for the
        values whose cumulative share lies within ``q +- width * sqrt(q (1 - q) / n)``
        (plus one neighbour on each side). Python reads the mid-quantile from it and
        resamples it (:func:`recscope.experiments.moments.histogram_quantile`): a few
        dozen rows per variant for discrete data, ~``12 sqrt(n)`` for continuous data.
        """
        q_ = float(mp.metric.q)
        y = q(self.canon[mp.variables[0]]).sql("duckdb")  # parsed as DuckDB below
        def part(text: str) -> exp.Expression:
            return sqlglot.parse_one(text, read="duckdb")

        h = part(f"SELECT u.v AS v, u.{y} AS y, COUNT(*) AS c FROM u WHERE u.v IS NOT NULL "
                 f"AND u.{y} IS NOT NULL GROUP BY u.v, u.{y}")
        k = part("SELECT v, y, c, SUM(c) OVER (PARTITION BY v ORDER BY y ROWS BETWEEN "
                 "UNBOUNDED PRECEDING AND CURRENT ROW) AS cum, SUM(c) OVER (PARTITION BY v) "
                 "AS n FROM h")
        w = part("SELECT v, y, c, cum, n, LAG(cum - c) OVER (PARTITION BY v ORDER BY y) AS "
                 "prev_start, LEAD(cum) OVER (PARTITION BY v ORDER BY y) AS next_end FROM k")
        half = f"({width!r} * SQRT({q_!r} * {1 - q_!r} / n) + 2.0 / n)"
        final = part(f"SELECT v, y, c, cum, n FROM w WHERE (prev_start IS NULL OR "
                     f"prev_start <= ({q_!r} + {half}) * n) AND (next_end IS NULL OR "
                     f"next_end >= ({q_!r} - {half}) * n)")
        assert isinstance(final, exp.Select)
        out = self._with_ctes(final, {mp.index})
        out = out.with_("h", as_=h).with_("k", as_=k).with_("w", as_=w)
        return out.sql(self.dialect)
