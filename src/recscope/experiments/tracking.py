"""Longitudinal tracking of a long-term holdout: the cumulative effect of launches, weekly.

:func:`track` reads a holdout's assignment table (``unit_id``, ``holdout`` and optionally
``holdout_<surface>`` per surface) and its events (``unit_id``, ``day``, ``surface`` and
metric columns) and reports, per surface and over all surfaces (``total``), the effect
``exposed − holdout`` of three per-unit quantities:

* ``cumulative``: the unit's sum of the metric since the holdout started, at the end of
  every week (the cumulative effect of every launch so far);
* ``weekly``: the unit's sum over the week (the effect of the launches live that week);
* ``window``: the unit's daily mean over a launch window (from one launch day to the
  next), at the window's end, and its change from the previous window.

Units count from their first event in the tracked period (a unit that has not visited
yet is not in the comparison); a unit without events on a surface counts as 0 there. With
per-surface holdouts, surface ``s`` compares units held out of ``s`` with the others, and
``total`` compares units held out of every surface with units held out of none.

Intervals are always valid (:func:`recscope.experiments.sequential.monitor`, a mixture
SPRT): a reader may look every week and stop at any week without breaking the coverage.
The per-week fixed-horizon intervals are reported beside them (``naive_low``/``naive_high``)
to show what peeking would cost.

All per-unit work happens in the engine, in one query
(:func:`tracking_sql`): events are aggregated per unit, surface and cell of days (the
cells are cut at every look and window boundary), then running sums per unit give each
series' value at each look as a difference array (a value enters at the look after its
cell and leaves at the look after the unit's next active cell), so the engine returns a
few rows per arm, surface and look whatever the number of units. The same SQL runs on
DuckDB and Spark (generated with SQLGlot).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import sqlglot
from scipy import stats as sps
from sqlglot import exp

from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.engines import Engine, SqlRunner, open_tables
from recscope.experiments.sequential import monitor
from recscope.experiments.sql import Table, is_numeric
from recscope.results import Effect, Result

TOTAL = "total"
DEFAULT_METRICS: tuple[str, ...] = ("clicks", "saves")
SERIES: tuple[str, ...] = ("cumulative", "weekly", "window")


@dataclasses.dataclass(frozen=True)
class Design:
    """What to track: the period, the weeks' origin, the launch windows and the metrics."""

    start_day: int
    end_day: int
    metrics: tuple[str, ...] = DEFAULT_METRICS
    launches: tuple[dict[str, Any], ...] = ()
    surfaces: tuple[str, ...] = ()
    alpha: float = 0.05
    tau: float = 0.1
    pre_days: int = 0
    """CUPED: days before ``start_day`` whose per-unit sums are each series' covariate
    (0: no adjustment)."""
    buckets: int = 0
    """0: exact per-unit statistics. B > 0: warehouse mode, one join and one small
    aggregation: units are hashed into B buckets per arm and the variance comes from the
    buckets' sums (delta method); needs ``first_day`` in the assignment table. CUPED
    works in both modes (in this one from the buckets' pre-period sums)."""

    def __post_init__(self) -> None:
        if self.end_day <= self.start_day:
            raise ConfigError(f"the tracked period is empty (days {self.start_day} to "
                              f"{self.end_day})", key="days")
        if not self.metrics:
            raise ConfigError("no metric to track", key="metrics")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}", key="alpha")
        if not self.tau > 0:
            raise ConfigError(f"tau must be positive, got {self.tau}", key="tau")
        if self.buckets and not 16 <= self.buckets <= 100_000:
            raise ConfigError(f"buckets must be 0 or 16 to 100000, got {self.buckets}",
                              key="buckets")
        if self.pre_days < 0:
            raise ConfigError(f"pre_days must be 0 or more, got {self.pre_days}",
                              key="pre_days")
        for x in self.launches:
            if not self.start_day <= int(x["day"]) < self.end_day:
                raise ConfigError(f"launch {x.get('name', x.get('id'))!r} (day {x['day']}) "
                                  f"is outside the tracked period [{self.start_day}, "
                                  f"{self.end_day})", key="launches")

    def week_looks(self) -> list[int]:
        """Look days (exclusive ends) of the weekly series: every 7 days and the end."""
        return [*range(self.start_day + 7, self.end_day, 7), self.end_day]

    def windows(self) -> list[dict[str, Any]]:
        """Launch windows: before the first launch (if any days), then launch to launch."""
        days = sorted({int(x["day"]) for x in self.launches})
        cuts = ([self.start_day] if not days or days[0] > self.start_day else []) + days
        out = []
        for a, b in zip(cuts, [*cuts[1:], self.end_day], strict=True):
            names = [str(x.get("name", x.get("id"))) for x in self.launches
                     if int(x["day"]) == a]
            out.append({"window": len(out), "start": a, "end": b, "launches": names})
        return out

    def cuts(self) -> list[int]:
        """Every cell boundary: week looks, window starts and the period's start."""
        return sorted({self.start_day, *self.week_looks(),
                       *(w["start"] for w in self.windows())})

    def parts(self) -> dict[str, list[tuple[int, int, list[int]]]]:
        """Per series kind, its partitions: (first cell, end cell, look cells)."""
        cuts = self.cuts()
        pos = {d: i for i, d in enumerate(cuts)}
        looks = [pos[d] for d in self.week_looks()]
        weekly = []
        prev = 0
        for k in looks:
            weekly.append((prev, k, [k]))
            prev = k
        win = []
        for w in self.windows():
            a, b = pos[w["start"]], pos[w["end"]]
            win.append((a, b, [k for k in looks if a < k < b] + [b]))
        return {"cumulative": [(0, looks[-1], looks)], "weekly": weekly, "window": win}


def quantities(design: Design) -> list[tuple[str, int, int, int]]:
    """Every (series, partition, first cell, look cell) the query sums: the per-unit value
    of a series at a look is the sum of the unit's cells ``[first, look)``."""
    out = []
    for kind, parts in design.parts().items():
        for p, (lo, _hi, looks) in enumerate(parts):
            out += [(kind, p, lo, k) for k in looks]
    return out


# ---------------------------------------------------------------------- SQL
def _check_columns(assign: Table, events: Table, design: Design) -> tuple[list[str], bool]:
    """Check the inputs' columns; returns the per-surface holdout surfaces and whether the
    events have a surface column."""
    need_a = ["unit_id", "holdout"]
    for c in need_a:
        if c not in assign.columns:
            raise DataValidationError(f"missing column {c!r} (a holdout's assignment table "
                                      "needs unit_id and holdout)", file=assign.name, column=c)
    for c in ("unit_id", "day", *design.metrics):
        if c not in events.columns:
            raise DataValidationError(f"missing column {c!r} (events need unit_id, day, "
                                      "surface and every tracked metric)", file=events.name,
                                      column=c)
    for c in ("day", *design.metrics):
        if not is_numeric(events.columns[c]):
            raise DataValidationError(f"column {c!r} must be numeric, not "
                                      f"{events.columns[c]}", file=events.name, column=c)
    per = sorted(c.removeprefix("holdout_") for c in assign.columns
                 if c.startswith("holdout_"))
    return per, "surface" in events.columns


def _cell_expr(cuts: Sequence[int], day: str = "day") -> str:
    """The cell index of ``day`` (arithmetic when the cells are weeks)."""
    weeks = all(c - cuts[0] == 7 * i for i, c in enumerate(cuts[:-1]))
    if weeks and cuts[-1] - cuts[-2] <= 7:
        return f"CAST(FLOOR(({day} - {cuts[0]}) / 7.0) AS INT)"
    whens = " ".join(f"WHEN {day} < {c} THEN {i}" for i, c in enumerate(cuts[1:]))
    return f"CASE {whens} END"


def _qi(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql("duckdb")


_names = itertools.count()


@dataclasses.dataclass(frozen=True)
class Stage:
    """The one pass over the events: ``setup`` materialises per-unit, per-surface,
    per-cell sums as the table ``name`` (a cached view on Spark); ``cleanup`` drops it."""

    name: str
    setup: list[str]
    cleanup: list[str]


def stage_sql(events: Table, design: Design, dialect: str) -> Stage:
    """The statements of the events' aggregation (rows with a NULL day or metric are
    counted in ``bad``/a NULL cell, so the analysis can refuse them)."""
    cuts = design.cuts()
    ms = [_qi(m) for m in design.metrics]
    name = f"recscope_track_{next(_names)}"
    surf = "CAST(surface AS VARCHAR)" if "surface" in events.columns else f"'{TOTAL}'"
    cell = _cell_expr(cuts)
    first = cuts[0]
    if design.pre_days:  # the pre-period is cell -1
        cell = f"CASE WHEN day < {cuts[0]} THEN -1 ELSE {cell} END"
        first = cuts[0] - design.pre_days
    counts = " + ".join(f"COUNT({m})" for m in ms)
    sums = ", ".join(f"SUM(CAST({m} AS DOUBLE)) AS {m}" for m in ms)
    stage1 = (f"SELECT unit_id, {surf} AS surface, {cell} AS cell, {sums}, "
              f"COUNT(*) * {len(ms)} - ({counts}) AS bad "
              f"FROM __events__ WHERE (day >= {first} AND day < {cuts[-1]}) OR day IS NULL "
              f"GROUP BY unit_id, {surf}, {cell}")
    if dialect == "spark":
        setup = [f"CREATE OR REPLACE TEMPORARY VIEW {name} AS {stage1}", f"CACHE TABLE {name}"]
        cleanup = [f"UNCACHE TABLE IF EXISTS {name}", f"DROP VIEW IF EXISTS {name}"]
    else:
        setup = [f"CREATE OR REPLACE TEMP TABLE {name} AS {stage1}"]
        cleanup = [f"DROP TABLE IF EXISTS {name}"]
    return Stage(name, [_render(x, events, events, dialect) for x in setup],
                 [_render(x, events, events, dialect) for x in cleanup])


def tracking_sql(assign: Table, events: Table, design: Design, dialect: str, stage: str,
                 ) -> tuple[str, str]:
    """The two queries on the stage table ``stage``: per arm and surface, the sums and
    sums of squares of every series' per-unit value at every look (:func:`quantities`;
    the cells are pivoted to one row per unit and surface, so there is no window
    function and no join per look), and the units per arm and first cell (with units
    that have no assignment and rows with NULLs). Identifiers come from the
    data's schema and are quoted; numbers are literals: no user text is pasted in."""
    per, has_surface = _check_columns(assign, events, design)
    ms = [_qi(m) for m in design.metrics]
    surfaces = list(design.surfaces)
    arm_s = {s: (f"CAST(a.{_qi('holdout_' + s)} AS INT)" if s in per
                 else "a.total_arm") for s in surfaces}
    if per:
        hs = " + ".join(f"CAST({_qi('holdout_' + s)} AS INT)" for s in per)
        total_arm = f"CASE WHEN {hs} = {len(per)} THEN 1 WHEN {hs} = 0 THEN 0 END"
    else:
        total_arm = "CAST(holdout AS INT)"
    a_cte = (f"a AS (SELECT {', '.join(['unit_id', *(_qi('holdout_' + s) for s in per)])}, "
             f"CAST(holdout AS INT) AS holdout, {total_arm} AS total_arm FROM __assign__)")
    e = f"SELECT * FROM {stage} WHERE unit_id IS NOT NULL AND cell IS NOT NULL"
    n_cells = len(design.cuts()) - 1
    cuped = design.pre_days > 0
    cells = [*range(n_cells), *([-1] if cuped else [])]
    xn = {c: ("pre" if c < 0 else str(c)) for c in cells}
    xs = [f"x_{xn[c]}_{i}" for c in cells for i in range(len(ms))]
    pivot = ", ".join(f"SUM(CASE WHEN cell = {c} THEN {m} ELSE 0 END) AS x_{xn[c]}_{i}"
                      for c in cells for i, m in enumerate(ms))
    p_cte = f"SELECT unit_id, surface, {pivot} FROM e GROUP BY unit_id, surface"
    if has_surface:
        pt = (f"SELECT * FROM p UNION ALL SELECT unit_id, '{TOTAL}' AS surface, "
              f"{', '.join(f'SUM({x}) AS {x}' for x in xs)} FROM p GROUP BY unit_id")
    else:
        pt = "SELECT * FROM p"
    arm_case = " ".join(f"WHEN '{s}' THEN {x}" for s, x in arm_s.items())
    arm = f"CASE pt.surface {arm_case} ELSE a.total_arm END" if arm_s else "a.total_arm"
    values = []
    nq = len(quantities(design))
    for j, (_kind, _part, lo, look) in enumerate(quantities(design)):
        for i in range(len(ms)):
            values.append(f"({' + '.join(f'x_{c}_{i}' for c in range(lo, look))}) AS v_{j}_{i}")
    stats = ", ".join(f"SUM(v_{j}_{i}) AS s_{j}_{i}, SUM(v_{j}_{i} * v_{j}_{i}) AS q_{j}_{i}"
                      for j in range(nq) for i in range(len(ms)))
    if not cuped:
        main = (f"WITH {a_cte}, e AS ({e}), p AS ({p_cte}), pt AS ({pt}), "
                f"v AS (SELECT {arm} AS arm, pt.surface AS surface, {', '.join(values)} "
                "FROM pt JOIN a ON pt.unit_id = a.unit_id) "
                f"SELECT arm, surface, {stats} FROM v WHERE arm IS NOT NULL "
                "GROUP BY arm, surface")
    else:  # per first cell too: the covariate's sums depend on which units are in a look
        values += [f"x_pre_{i} AS w_{i}" for i in range(len(ms))]
        stats += ", " + ", ".join(
            f"SUM(w_{i}) AS sw_{i}, SUM(w_{i} * w_{i}) AS qw_{i}" for i in range(len(ms)))
        stats += ", " + ", ".join(f"SUM(v_{j}_{i} * w_{i}) AS c_{j}_{i}"
                                  for j in range(nq) for i in range(len(ms)))
        main = (f"WITH {a_cte}, e AS ({e}), f AS (SELECT unit_id, MIN(CASE WHEN cell >= 0 "
                "THEN cell END) AS fc FROM e GROUP BY unit_id), "
                f"p AS ({p_cte}), pt AS ({pt}), "
                f"v AS (SELECT {arm} AS arm, pt.surface AS surface, f.fc AS fc, "
                f"{', '.join(values)} FROM pt JOIN a ON pt.unit_id = a.unit_id "
                "JOIN f ON pt.unit_id = f.unit_id) "
                f"SELECT arm, surface, fc, {stats} FROM v WHERE arm IS NOT NULL AND fc IS "
                "NOT NULL GROUP BY arm, surface, fc")
    arm_cols = "".join(f", {x} AS {_qi('arm_' + s)}" for s, x in arm_s.items())
    arm_keys = "".join(f", {x}" for x in arm_s.values())
    units = (f"WITH {a_cte}, f AS (SELECT unit_id, MIN(CASE WHEN cell >= 0 THEN cell END) "
             "AS fc, SUM(bad) AS bad, "
             f"SUM(CASE WHEN cell IS NULL THEN 1 ELSE 0 END) AS no_day FROM {stage} "
             "GROUP BY unit_id) "
             f"SELECT a.total_arm AS arm_total{arm_cols}, f.fc AS fc, "
             "CASE WHEN a.unit_id IS NULL THEN 1 ELSE 0 END AS unassigned, "
             "CASE WHEN f.unit_id IS NULL THEN 1 ELSE 0 END AS null_unit, "
             "COUNT(*) AS n, SUM(f.bad) AS bad, SUM(f.no_day) AS no_day "
             "FROM f LEFT JOIN a ON f.unit_id = a.unit_id "
             f"GROUP BY a.total_arm{arm_keys}, f.fc, "
             "CASE WHEN a.unit_id IS NULL THEN 1 ELSE 0 END, "
             "CASE WHEN f.unit_id IS NULL THEN 1 ELSE 0 END")
    return _render(main, assign, events, dialect), _render(units, assign, events, dialect)


def bucket_sql(assign: Table, events: Table, design: Design, dialect: str,
               ) -> tuple[str, ...]:
    """Warehouse mode: events joined to the assignment and summed per holdout flags,
    bucket, surface and cell (a few thousand groups, one pass); units counted per
    flags, bucket and first cell from the assignment's ``first_day``; and the events'
    rows in the period (those of units without an assignment are the difference).
    With CUPED (``pre_days``) a fourth query sums the pre-period's events per flags,
    bucket, surface and the unit's first cell (the covariate's bucket sums: which units
    a look counts depends on their first cell)."""
    per, has_surface = _check_columns(assign, events, design)
    if "first_day" not in assign.columns:
        raise DataValidationError("missing column 'first_day' (the bucket mode counts units "
                                  "from the assignment's first day)", file=assign.name,
                                  column="first_day")
    cuts = design.cuts()
    ms = [_qi(m) for m in design.metrics]
    flags = ["CAST(a.holdout AS INT) AS h", *(f"CAST(a.{_qi('holdout_' + s)} AS INT) AS "
                                              f"{_qi('h_' + s)}" for s in per)]
    keys = ["h", *(_qi("h_" + s) for s in per)]
    a_cte = (f"a AS (SELECT unit_id, {', '.join(flags)}, HASH(unit_id) % {design.buckets} "
             f"AS b, first_day FROM __assign__ a)")
    surf = "CAST(e.surface AS VARCHAR)" if has_surface else f"'{TOTAL}'"
    cell = _cell_expr(cuts, "e.day")
    sums = ", ".join(f"SUM(CAST(e.{m} AS DOUBLE)) AS s_{i}, COUNT(e.{m}) AS k_{i}"
                     for i, m in enumerate(ms))
    group = ", ".join([*keys, "b", surf, cell])
    # an inner join (a LEFT JOIN doubled the time on DuckDB); events of units without an
    # assignment are counted apart, from the day column alone
    main = (f"WITH {a_cte} SELECT {', '.join(keys)}, b, {surf} AS surface, {cell} AS cell, "
            f"{sums}, COUNT(*) AS rows FROM __events__ e JOIN a ON e.unit_id = a.unit_id "
            f"WHERE e.day >= {cuts[0]} AND e.day < {cuts[-1]} GROUP BY {group}")
    fc = (f"CASE WHEN first_day < {cuts[0]} THEN 0 ELSE "
          f"{_cell_expr(cuts, 'first_day')} END")
    units = (f"WITH {a_cte} SELECT {', '.join(keys)}, b, {fc} AS fc, COUNT(*) AS n FROM a "
             f"WHERE first_day < {cuts[-1]} GROUP BY {', '.join(keys)}, b, {fc}")
    rows = ("SELECT COUNT(*) AS rows, SUM(CASE WHEN day IS NULL THEN 1 ELSE 0 END) AS no_day "
            f"FROM __events__ WHERE (day >= {cuts[0]} AND day < {cuts[-1]}) OR day IS NULL")
    queries = [main, units, rows]
    if design.pre_days:
        pre_fc = (f"CASE WHEN a.first_day < {cuts[0]} THEN 0 ELSE "
                  f"{_cell_expr(cuts, 'a.first_day')} END")
        group = ", ".join([*keys, "b", surf, pre_fc])
        queries.append(
            f"WITH {a_cte} SELECT {', '.join(keys)}, b, {surf} AS surface, {pre_fc} AS fc, "
            f"{sums}, COUNT(*) AS rows FROM __events__ e JOIN a ON e.unit_id = a.unit_id "
            f"WHERE e.day >= {cuts[0] - design.pre_days} AND e.day < {cuts[0]} "
            f"AND a.first_day < {cuts[-1]} GROUP BY {group}")
    return tuple(_render(x, assign, events, dialect) for x in queries)


def _bucket_stats(design: Design, sums: list[dict[str, Any]], units: list[dict[str, Any]],
                  per: list[str], pre: Sequence[dict[str, Any]] = (),
                  ) -> tuple[list[str], dict[tuple[str, int], Any]]:
    """Per surface key and arm: the buckets' cell sums [bucket, cell, metric], unit
    counts by first cell [bucket, first cell + 1] and the pre-period's sums by first
    cell [bucket, first cell + 1, metric] (zeros without CUPED)."""
    n_cells = len(design.cuts()) - 1
    nm = len(design.metrics)
    surfaces = sorted({str(r["surface"]) for r in sums if r["surface"] is not None
                       and str(r["surface"]) != TOTAL})
    keys = [*surfaces, TOTAL]
    bucket_ids = sorted({r["b"] for r in units if r["b"] is not None})
    bi = {b: i for i, b in enumerate(bucket_ids)}
    out: dict[tuple[str, int], Any] = {}

    def arm_of(row: dict[str, Any], key: str) -> Any:
        if key in per:
            return row[f"h_{key}"]
        if not per:
            return row["h"]
        hs = [row[f"h_{s}"] for s in per]
        return 1 if all(h == 1 for h in hs) else 0 if all(h == 0 for h in hs) else None

    for key in keys:
        for arm in (0, 1):
            out[(key, arm)] = (np.zeros((len(bucket_ids), n_cells, nm)),
                               np.zeros((len(bucket_ids), n_cells + 2)),
                               np.zeros((len(bucket_ids), n_cells + 2, nm)))
    for r in pre:
        if r["b"] is None or r["b"] not in bi or r["fc"] is None:
            continue
        for key in (str(r["surface"]), TOTAL) if str(r["surface"]) != TOTAL else (TOTAL,):
            arm = arm_of(r, key)
            if arm is None or (key, int(arm)) not in out:
                continue
            w = out[(key, int(arm))][2]
            for i in range(nm):
                w[bi[r["b"]], int(r["fc"]) + 1, i] += r[f"s_{i}"] or 0.0
    for r in units:
        for key in keys:
            arm = arm_of(r, key)
            if arm is not None and r["fc"] is not None:
                out[(key, int(arm))][1][bi[r["b"]], int(r["fc"]) + 1] += r["n"]
    for r in sums:
        if r["b"] is None or r["b"] not in bi or r["cell"] is None:
            continue
        for key in (str(r["surface"]), TOTAL) if str(r["surface"]) != TOTAL else (TOTAL,):
            arm = arm_of(r, key)
            if arm is None:
                continue
            x = out[(key, int(arm))][0]
            for i in range(nm):
                x[bi[r["b"]], int(r["cell"]), i] += r[f"s_{i}"] or 0.0
    return surfaces, out


def _bucket_series(design: Design, stats: dict[tuple[str, int], Any], keys: list[str],
                   ) -> list[dict[str, Any]]:
    """Per look: each arm's mean (sum over units / units) and its variance by the delta
    method over the buckets, as a per-unit variance for the always-valid monitor.

    With CUPED the covariate is the pre-period sum: θ is the pooled within-arm regression
    of the buckets' residual sums (``Σ y − mean_y · n`` on ``Σ w − mean_w · n``, the
    linearised per-bucket totals), the adjusted mean is ``mean_y − θ (mean_w − pooled
    mean_w)`` and its variance the buckets' spread of ``r_y − θ r_w``: the exact mode's
    CUPED with the unit-level moments replaced by the buckets' (same estimand, θ from
    2B − 2 degrees of freedom)."""
    cuts = design.cuts()
    out = []
    windows = design.windows()
    cuped = design.pre_days > 0
    for kind, parts in design.parts().items():
        for p, (lo, hi, look_pos) in enumerate(parts):
            scale = 1.0 / (cuts[hi] - cuts[lo]) if kind == "window" else 1.0
            for s in keys:
                for i, m in enumerate(design.metrics):
                    res = {1: ([], [], []), 0: ([], [], [])}
                    for look in look_pos:
                        per_arm = {}
                        for arm in (1, 0):  # holdout (1) is the control
                            x, cnt, w = stats[(s, arm)]
                            nb = cnt[:, :look + 1].sum(axis=1)
                            sb = x[:, lo:look, i].sum(axis=1) * scale
                            wb = w[:, :look + 1, i].sum(axis=1)
                            n = nb.sum()
                            with np.errstate(divide="ignore", invalid="ignore"):
                                my = sb.sum() / n if n > 0 else np.nan
                                mw = wb.sum() / n if n > 0 else np.nan
                            per_arm[arm] = (nb, n, my, mw, sb - my * nb, wb - mw * nb)
                        theta = 0.0
                        if cuped:
                            num = sum(float((v[4] * v[5]).sum()) for v in per_arm.values())
                            den = sum(float((v[5] ** 2).sum()) for v in per_arm.values())
                            theta = num / den if den > 0 and math.isfinite(num) else 0.0
                        n_all = per_arm[0][1] + per_arm[1][1]
                        with np.errstate(divide="ignore", invalid="ignore"):
                            mw_all = (per_arm[0][3] * per_arm[0][1] + per_arm[1][3]
                                      * per_arm[1][1]) / n_all if n_all > 0 else np.nan
                        for arm, (nb, n, my, mw, ry, rw) in per_arm.items():
                            b = int((nb > 0).sum())
                            r = ry - theta * rw if cuped else ry
                            mean = my - theta * (mw - mw_all) if cuped else my
                            with np.errstate(divide="ignore", invalid="ignore"):
                                var_mean = (b / (b - 1) * (r**2).sum() / n**2
                                            if b > 1 else np.nan)
                            res[arm][0].append(n)
                            res[arm][1].append(mean)
                            res[arm][2].append(var_mean * n)
                    arms = [tuple(np.array(v) for v in res[arm]) for arm in (1, 0)]
                    out += _rows(design, kind, p, lo, hi, look_pos, s, m, windows, *arms[0],
                                 *arms[1])
    _add_increments(out)
    return out


def checks_sql(assign: Table, dialect: str) -> str:
    """Rows and distinct units of the assignment table, and rows with NULLs."""
    return _render("SELECT COUNT(*) AS rows_a, COUNT(DISTINCT unit_id) AS units_a, "
                   "SUM(CASE WHEN unit_id IS NULL OR holdout IS NULL THEN 1 ELSE 0 END) "
                   "AS null_a FROM __assign__", assign, assign, dialect)


def _render(sql: str, assign: Table, events: Table, dialect: str) -> str:
    """Parse DuckDB-dialect SQL, put the engine's table expressions in, print it for
    ``dialect``."""
    if "__events__" not in sql and "__assign__" not in sql and dialect == "spark" \
            and sql.split()[0] in ("CACHE", "UNCACHE", "DROP"):
        return sql
    tree = sqlglot.parse_one(sql, read="duckdb")

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.name in ("__events__", "__assign__"):
            src = events if node.name == "__events__" else assign
            t = src.expr.copy() if isinstance(src.expr, exp.Table) else exp.Table(
                this=src.expr.copy())
            if node.alias:
                t.set("alias", exp.TableAlias(this=exp.to_identifier(node.alias)))
            return t
        return node

    return tree.transform(swap).sql(dialect)


# ---------------------------------------------------------------------- result
@dataclasses.dataclass
class TrackingResult(Result):
    """Weekly cumulative, weekly and per-window effects of a holdout's launches."""

    kind: ClassVar[str] = "holdout_tracking"
    title: ClassVar[str] = "Long-term holdout: effect of the launches (exposed − holdout)"

    sources: dict[str, str]
    start_day: int
    end_day: int
    metrics: list[str]
    surfaces: list[str]
    launches: list[dict[str, Any]]
    windows: list[dict[str, Any]]
    alpha: float
    tau: float
    values: list[dict[str, Any]]
    per_surface: list[str] = dataclasses.field(default_factory=list)
    n_unassigned: int = 0
    sql: list[str] = dataclasses.field(default_factory=list)
    buckets: int = 0
    n_unassigned_rows: int = 0
    pre_days: int = 0

    def effects(self) -> list[Effect]:
        """Every row: ``estimate`` the effect, ``ci_low``/``ci_high`` always valid."""
        out = []
        for r in self.values:
            extra = {k: v for k, v in r.items() if k not in
                     ("metric", "estimate", "ci_low", "ci_high", "se", "p_value", "n")}
            out.append(Effect(r["metric"], r["estimate"], r["ci_low"], r["ci_high"], r["se"],
                              r["p_value"], r["n"], extra))
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Table rows: the cumulative effect at the last look, then every launch window
        at its end (``covered``: whether the interval holds the simulator's truth)."""
        out = []
        for r in self.values:
            if not ((r["series"] == "cumulative" and r["look"] == self.end_day)
                    or (r["series"] == "window" and r["look"] == r["end"])):
                continue
            row = {"series": r["series"] if r["series"] == "cumulative"
                   else f"window {r['window']}", "surface": r["surface"],
                   "metric": r["metric"], "days": f"{r['start']}-{r['end']}",
                   "n_holdout": r["n_holdout"], "n_exposed": r["n_exposed"],
                   "estimate": r["estimate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                   "rel_effect": r["rel_effect"]}
            if "true_effect" in r:
                row["true_effect"] = r["true_effect"]
                row["covered"] = r["covered"]
            out.append(row)
        return out

    def notes(self) -> list[str]:
        out = []
        if self.n_unassigned:
            out.append(f"{self.n_unassigned:,} units have events in the tracked period but "
                       "no row in the assignment table; they are left out.")
        if self.n_unassigned_rows:
            out.append(f"{self.n_unassigned_rows:,} event rows belong to units without a "
                       "row in the assignment table; they are left out.")
        if self.buckets:
            out.append(f"Warehouse mode: variances from {self.buckets} hash buckets of units "
                       "per arm (delta method), not from every unit"
                       + (f"; CUPED on the {self.pre_days} days before the start from the "
                          "buckets' sums." if self.pre_days else "."))
        if any(not math.isfinite(r["estimate"]) for r in self.values):
            out.append("Some looks have fewer than two units in an arm: no estimate there.")
        return out

    def to_frame_all(self) -> Any:
        """Every look of every series as a pandas DataFrame (``series.csv``)."""
        import pandas as pd

        return pd.DataFrame(self.values)

    def series(self, kind: str, surface: str, metric: str) -> list[dict[str, Any]]:
        """The rows of one series in look order."""
        return sorted((r for r in self.values if r["series"] == kind
                       and r["surface"] == surface and r["metric"] == metric),
                      key=lambda r: (r["window"] if kind == "window" else 0, r["look"]))

    def to_html(self) -> str:
        """The plots first (the effect over time), then the tables."""
        from recscope.report.html import HtmlReport

        page = HtmlReport(self.title)
        for note in self.notes():
            page.banner(note, "bad")
        self.html_sections(page)
        return page.render()

    def html_sections(self, page: Any) -> None:
        import plotly.graph_objects as go

        page.heading("Cumulative effect over time (always-valid 95% intervals)")
        colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
        for m in self.metrics:
            fig = go.Figure()
            for i, s in enumerate([*self.surfaces, TOTAL]):
                rows = [r for r in self.series("cumulative", s, m)
                        if math.isfinite(r["estimate"])]
                if not rows:
                    continue
                x = [r["look"] for r in rows]
                c = colors[i % len(colors)]
                fig.add_trace(go.Scatter(
                    x=x + x[::-1], y=[r["ci_high"] for r in rows] + [r["ci_low"]
                                                                     for r in rows][::-1],
                    fill="toself", line={"width": 0}, fillcolor=c, opacity=0.15,
                    hoverinfo="skip", showlegend=False))
                fig.add_trace(go.Scatter(x=x, y=[r["estimate"] for r in rows],
                                         mode="lines+markers", name=s, line={"color": c}))
                truth = [r.get("true_effect") for r in rows]
                if all(t is not None and math.isfinite(t) for t in truth):
                    fig.add_trace(go.Scatter(x=x, y=truth, mode="lines", name=f"{s} (truth)",
                                             line={"color": c, "dash": "dot"}))
            for x in self.launches:
                fig.add_vline(x=int(x["day"]), line={"dash": "dash", "color": "grey"})
            fig.update_layout(title=f"{m}: cumulative effect per unit (exposed − holdout)",
                              xaxis_title="day since the holdout started (launches dashed)",
                              yaxis_title=f"effect on {m} per unit", height=420)
            page.figure(fig)
        page.heading("Cumulative effect at the end, and per launch window")
        page.table(self.rows())
        page.heading("Weekly effect")
        page.table([{c: r[c] for c in ("surface", "metric", "look", "n_holdout", "n_exposed",
                                       "estimate", "ci_low", "ci_high", "naive_low",
                                       "naive_high")}
                    for r in self.values if r["series"] == "weekly"])
        page.heading("Launches").table([{k: (", ".join(f"{a} = {b}" for a, b in v.items())
                                             if isinstance(v, dict) else v)
                                         for k, v in x.items()} for x in self.launches])


# ---------------------------------------------------------------------- analysis
def track(assignments: Any, events: Any, design: Design, *, engine: str | Engine = "duckdb",
          show_sql: Callable[[str], None] | None = None,
          truth: Any = None) -> TrackingResult:
    """Track the holdout: run the queries and build the always-valid series.

    ``truth`` (optional, a :class:`recscope.sim.long_run.LongRunTruth` or its rows) adds
    the true effect and whether the interval covers it to every row.
    """
    eng, a, evs = open_tables(engine, assignments, events)
    ev = evs[0]
    _check_columns(a, ev, design)
    runner = SqlRunner(eng, [a, ev], show_sql)
    chk = runner(checks_sql(a, eng.dialect))[0]
    if not chk["rows_a"]:
        raise DataValidationError("the assignment table is empty", file=a.name)
    if chk["null_a"]:
        raise DataValidationError(f"{chk['null_a']:,} rows have a NULL unit_id or holdout",
                                  file=a.name, column="holdout")
    if chk["rows_a"] != chk["units_a"]:
        raise DataValidationError(f"{chk['rows_a'] - chk['units_a']:,} units appear more "
                                  "than once (one row per unit expected)", file=a.name,
                                  column="unit_id")
    if design.buckets:
        return _track_buckets(a, ev, design, eng, runner, truth)
    stage = stage_sql(ev, design, eng.dialect)
    try:
        for stmt in stage.setup:
            runner(stmt)
        surfaces = design.surfaces
        if not surfaces and "surface" in ev.columns:
            rows = runner(f"SELECT DISTINCT surface AS s FROM {stage.name} "
                          "WHERE surface IS NOT NULL")
            surfaces = tuple(sorted(str(r["s"]) for r in rows if str(r["s"]) != TOTAL))
        design = dataclasses.replace(design, surfaces=tuple(surfaces))
        main, units = tracking_sql(a, ev, design, eng.dialect, stage.name)
        sums = runner(main)
        cnt = runner(units)
    finally:
        for stmt in stage.cleanup:
            try:
                eng.execute(stmt)
            except Exception:
                pass
    if any(r["null_unit"] for r in cnt):
        raise DataValidationError("rows with a NULL unit_id", file=ev.name, column="unit_id")
    bad = sum(int(r["bad"] or 0) for r in cnt)
    if bad:
        raise DataValidationError(f"{bad:,} rows in the tracked period have a NULL value in "
                                  f"a tracked metric ({', '.join(design.metrics)})",
                                  file=ev.name)
    no_day = sum(int(r["no_day"] or 0) for r in cnt)
    if no_day:
        raise DataValidationError(f"{no_day:,} rows have a NULL day", file=ev.name,
                                  column="day")
    if not any(r["fc"] is not None and not r["unassigned"] for r in cnt):
        raise DataValidationError(f"no assigned unit has events in the tracked period (days "
                                  f"{design.start_day} to {design.end_day - 1})", file=ev.name)
    per, _ = _check_columns(a, ev, design)
    values = _series(design, sums, [r for r in cnt if not r["unassigned"]])
    if truth is not None:
        _add_truth(values, truth)
    return TrackingResult(
        sources={"assignments": a.name, "events": ev.name}, start_day=design.start_day,
        end_day=design.end_day, metrics=list(design.metrics), surfaces=list(surfaces),
        launches=[dict(x) for x in design.launches], windows=design.windows(),
        alpha=design.alpha, tau=design.tau, values=values, per_surface=per,
        n_unassigned=sum(int(r["n"]) for r in cnt if r["unassigned"] and r["fc"] is not None),
        sql=runner.executed, pre_days=design.pre_days)


def _track_buckets(a: Table, ev: Table, design: Design, eng: Engine, runner: SqlRunner,
                   truth: Any) -> TrackingResult:
    """The warehouse mode of :func:`track` (``design.buckets`` > 0)."""
    main, units, rows, *pre_q = bucket_sql(a, ev, design, eng.dialect)
    sums = runner(main)
    cnt = runner(units)
    total = runner(rows)[0]
    pre = runner(pre_q[0]) if pre_q else []
    bad_pre = sum(int(r["rows"]) - int(r[f"k_{i}"]) for r in pre
                  for i in range(len(design.metrics)))
    if bad_pre:
        raise DataValidationError(f"{bad_pre:,} rows in the CUPED pre-period have a NULL "
                                  f"value in a tracked metric ({', '.join(design.metrics)})",
                                  file=ev.name)
    if total["no_day"]:
        raise DataValidationError(f"{total['no_day']:,} rows have a NULL day", file=ev.name,
                                  column="day")
    bad = sum(int(r["rows"]) - int(r[f"k_{i}"]) for r in sums
              for i in range(len(design.metrics)))
    if bad:
        raise DataValidationError(f"{bad:,} rows in the tracked period have a NULL value in "
                                  f"a tracked metric ({', '.join(design.metrics)})",
                                  file=ev.name)
    if any(r["surface"] is None for r in sums):
        raise DataValidationError("rows with a NULL surface", file=ev.name, column="surface")
    if not cnt:
        raise DataValidationError(f"no assigned unit has a first_day in the tracked period "
                                  f"(before day {design.end_day})", file=a.name,
                                  column="first_day")
    per, _ = _check_columns(a, ev, design)
    surfaces, stats = _bucket_stats(design, sums, cnt, per, pre)
    if design.surfaces:
        surfaces = [x for x in surfaces if x in design.surfaces]
    design = dataclasses.replace(design, surfaces=tuple(surfaces))
    values = _bucket_series(design, stats, [*surfaces, TOTAL])
    if truth is not None:
        _add_truth(values, truth)
    unassigned = int(total["rows"] or 0) - sum(int(r["rows"]) for r in sums)
    result = TrackingResult(
        sources={"assignments": a.name, "events": ev.name}, start_day=design.start_day,
        end_day=design.end_day, metrics=list(design.metrics), surfaces=list(surfaces),
        launches=[dict(x) for x in design.launches], windows=design.windows(),
        alpha=design.alpha, tau=design.tau, values=values, per_surface=per,
        n_unassigned=0, sql=runner.executed, buckets=design.buckets,
        n_unassigned_rows=unassigned, pre_days=design.pre_days)
    return result


def _series(design: Design, sums: list[dict[str, Any]], counts: list[dict[str, Any]],
            ) -> list[dict[str, Any]]:
    """Per-look statistics from the engine's sums (units counted by first cell) and the
    always-valid monitor on every series."""
    cuts = design.cuts()
    n_pos = len(cuts) + 1
    keys = [*design.surfaces, TOTAL]
    # units per key, arm, first cell
    n_first = {k: np.zeros((2, n_pos)) for k in keys}
    for row in counts:
        for k in keys:
            a = row.get("arm_total" if k == TOTAL else f"arm_{k}")
            if a is None or row["fc"] is None:
                continue
            n_first[k][int(a), int(row["fc"]) + 1] += row["n"]
    n_at = {k: np.cumsum(v, axis=1) for k, v in n_first.items()}  # n_at[k][a, pos]
    nm = len(design.metrics)
    qs = quantities(design)
    index = {(kind, p, look): j for j, (kind, p, _lo, look) in enumerate(qs)}
    # (surface, arm) -> [first cell + 1, quantity, sum|squares|cross with covariate, metric]
    acc: dict[tuple[str, int], np.ndarray] = {}
    cov: dict[tuple[str, int], np.ndarray] = {}  # -> [first cell + 1, sum|squares, metric]
    for row in sums:
        if row["arm"] is None or row["surface"] not in keys:
            continue
        key = (row["surface"], int(row["arm"]))
        a = acc.setdefault(key, np.zeros((n_pos, len(qs), 3, nm)))
        w = cov.setdefault(key, np.zeros((n_pos, 2, nm)))
        f = int(row["fc"]) + 1 if "fc" in row else 0
        for i in range(nm):
            for j in range(len(qs)):
                a[f, j, 0, i] += row[f"s_{j}_{i}"] or 0.0
                a[f, j, 1, i] += row[f"q_{j}_{i}"] or 0.0
                a[f, j, 2, i] += row.get(f"c_{j}_{i}") or 0.0
            w[f, 0, i] += row.get(f"sw_{i}") or 0.0
            w[f, 1, i] += row.get(f"qw_{i}") or 0.0
    acc = {k: np.cumsum(v, axis=0) for k, v in acc.items()}  # units with first cell < pos
    cov = {k: np.cumsum(v, axis=0) for k, v in cov.items()}
    out = []
    windows = design.windows()
    for kind, parts in design.parts().items():
        for p, (lo, hi, look_pos) in enumerate(parts):
            rows_j = [index[(kind, p, k)] for k in look_pos]
            for s in keys:
                length = cuts[hi] - cuts[lo]
                scale = 1.0 / length if kind == "window" else 1.0
                for i, m in enumerate(design.metrics):
                    arms = []
                    for arm in (1, 0):  # holdout (1) is the control
                        a = acc.get((s, arm), np.zeros((n_pos, len(qs), 3, nm)))
                        w = cov.get((s, arm), np.zeros((n_pos, 2, nm)))
                        lp = np.asarray(look_pos)
                        arms.append(_moments(n_at[s][arm, look_pos],
                                             a[lp, rows_j, 0, i] * scale,
                                             a[lp, rows_j, 1, i] * scale**2,
                                             a[lp, rows_j, 2, i] * scale,
                                             w[lp, 0, i], w[lp, 1, i]))
                    (n_h, m_h, v_h), (n_e, m_e, v_e) = _cuped(arms, design.pre_days > 0)
                    out += _rows(design, kind, p, lo, hi, look_pos, s, m, windows, n_h, m_h,
                                 v_h, n_e, m_e, v_e)
    _add_increments(out)
    return out


def _rows(design: Design, kind: str, p: int, lo: int, hi: int, look_pos: Sequence[int],
          s: str, m: str, windows: list[dict[str, Any]], n_h: np.ndarray, m_h: np.ndarray,
          v_h: np.ndarray, n_e: np.ndarray, m_e: np.ndarray, v_e: np.ndarray,
          ) -> list[dict[str, Any]]:
    """One series' rows: per look, the arms, the effect and its always-valid interval."""
    cuts = design.cuts()
    out = []
    ok = (n_h > 1) & (n_e > 1) & np.isfinite(v_h) & np.isfinite(v_e)
    mon = monitor(np.where(ok, n_h, 2), m_h, v_h, np.where(ok, n_e, 2), m_e, v_e,
                  alpha=design.alpha, tau=design.tau)
    z = sps.norm.ppf(1 - design.alpha / 2)
    nan = float("nan")
    for j, lp in enumerate(look_pos):
        good = bool(ok[j]) and np.isfinite(mon.effect[j])
        est = float(mon.effect[j]) if good else nan
        se = float(mon.se[j]) if good else nan
        out.append({
            "series": kind, "surface": s, "metric": m,
            "window": windows[p]["window"] if kind == "window" else None,
            "start": cuts[lo], "end": cuts[hi], "look": cuts[lp],
            "week": (cuts[lp] - design.start_day + 6) // 7,
            "n": int(n_h[j] + n_e[j]), "n_holdout": int(n_h[j]), "n_exposed": int(n_e[j]),
            "mean_holdout": float(m_h[j]) if good else nan,
            "mean_exposed": float(m_e[j]) if good else nan,
            "estimate": est, "se": se,
            "ci_low": float(mon.seq_low[j]) if good else nan,
            "ci_high": float(mon.seq_high[j]) if good else nan,
            "p_value": float(mon.seq_p[j]) if good else nan,
            "naive_low": est - z * se, "naive_high": est + z * se,
            "naive_p": float(mon.naive_p[j]) if good else nan,
            "rel_effect": (est / float(m_h[j]) if good and m_h[j] else nan),
        })
    return out


def _moments(n: np.ndarray, sv: np.ndarray, svv: np.ndarray, svw: np.ndarray,
             sw: np.ndarray, sww: np.ndarray) -> dict[str, np.ndarray]:
    """Means, variances and the covariance of a series and its covariate, per look."""
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(n > 1, n - 1, np.nan)
        return {"n": n, "mv": np.where(n > 0, sv / n, np.nan),
                "mw": np.where(n > 0, sw / n, np.nan), "sw": sw,
                "vv": np.maximum((svv - sv**2 / n) / d, 0.0),
                "ww": np.maximum((sww - sw**2 / n) / d, 0.0),
                "vw": (svw - sv * sw / n) / d}


def _cuped(arms: list[dict[str, np.ndarray]], adjust: bool,
           ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(n, mean, variance) per arm; with ``adjust``, CUPED: the series minus θ times the
    pre-period covariate's deviation from the pooled mean (θ from the pooled within-arm
    covariance), which leaves the effect unbiased and removes the covariate's share of
    the variance."""
    if not adjust:
        return [(x["n"], x["mv"], x["vv"]) for x in arms]
    h, e = arms
    with np.errstate(divide="ignore", invalid="ignore"):
        num = h["vw"] * (h["n"] - 1) + e["vw"] * (e["n"] - 1)
        den = h["ww"] * (h["n"] - 1) + e["ww"] * (e["n"] - 1)
        theta = np.where(den > 0, num / den, 0.0)
        mw_all = (h["sw"] + e["sw"]) / (h["n"] + e["n"])
    return [(x["n"], x["mv"] - theta * (x["mw"] - mw_all),
             np.maximum(x["vv"] - 2 * theta * x["vw"] + theta**2 * x["ww"], 0.0))
            for x in arms]


def _add_increments(rows: list[dict[str, Any]]) -> None:
    """Each window's final row gets ``change`` = its effect minus the previous window's."""
    final: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["series"] == "window" and r["look"] == r["end"]:
            final.setdefault((r["surface"], r["metric"]), []).append(r)
    for rs in final.values():
        rs.sort(key=lambda r: r["window"])
        prev = None
        for r in rs:
            r["change"] = (r["estimate"] - prev["estimate"]) if prev else float("nan")
            prev = r


def _add_truth(values: list[dict[str, Any]], truth: Any) -> None:
    """Add ``true_effect`` and ``covered`` where the truth has the same quantity."""
    rows = truth.values if hasattr(truth, "values") else truth
    lut: dict[tuple[Any, ...], float] = {}
    for t in rows:
        lut[(t["series"], t["surface"], t["metric"], t["start"], t["end"])] = t["effect"]
    for r in values:
        if r["series"] == "window" and r["look"] != r["end"]:
            continue
        key = (r["series"], r["surface"], r["metric"], r["start"], r["look"])
        if key in lut:
            t = lut[key]
            r["true_effect"] = t
            r["covered"] = (bool(r["ci_low"] <= t <= r["ci_high"])
                            if math.isfinite(r["estimate"]) else None)
