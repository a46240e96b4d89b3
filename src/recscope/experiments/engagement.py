"""Engagement bias: the early readout reweighted to the population's engagement strata.

Engaged users visit first, so the units in an experiment's first days are mostly heavy
users, and an early readout estimates the effect *on them* (the Pinterest post "Trapped
in the present": a lift measured early shrank a month later). :func:`engagement_readout`
takes the units exposed in the first ``days`` days, splits them into strata of a
pre-period engagement variable (quantile bins of the *whole population*, from a
population table with one row per user whether or not they arrived), estimates the effect
on a per-unit metric in each stratum, and reports both

* the early readout as is (the early arrivers' mix of strata), and
* the post-stratified readout ``Σ_s share_s · effect_s`` with the population's shares,
  ``se = sqrt(Σ share_s² · se_s²)``.

Strata with fewer than 2 early units in an arm cannot be estimated; their population
share is reported (``share_missing``) and the others are renormalised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from recscope.errors import DataValidationError
from recscope.results import Effect, Result

_DAY_S = 86_400


@dataclass
class EngagementReadout(Result):
    """Early readout as is and reweighted to the population's engagement strata."""

    kind: ClassVar[str] = "engagement_readout"
    title: ClassVar[str] = "Early readout: early arrivers vs population engagement mix"

    metric: str
    stratum: str
    days: int
    readouts: list[Effect]
    strata: list[dict[str, Any]]
    share_missing: float = 0.0
    notes_: list[str] = field(default_factory=list)

    def effects(self) -> list[Effect]:
        return list(self.readouts)

    def notes(self) -> list[str]:
        return list(self.notes_)

    def html_sections(self, page: Any) -> None:
        page.heading("Strata").table(self.strata)


def _bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile edges of the population's engagement (ties merged; zero its own bin)."""
    pos = values[values > 0]
    inner = np.unique(np.quantile(pos, np.linspace(0, 1, n_bins)[1:-1])) if pos.size else []
    return np.unique(np.concatenate([[0.0], inner]))


def engagement_readout(assignments: Any, events: Any, population: Any, *, stratum: str,
                       column: str = "sessions", days: int = 7, window: int | None = None,
                       n_bins: int = 4, unit: str = "unit_id", variant: str = "variant",
                       control: str = "control", exposure: str = "first_exposure_ts",
                       ts: str = "ts", engine: Any = "duckdb") -> EngagementReadout:
    """The early readout of the per-unit sum of ``column`` over ``window`` days since
    exposure (default ``days``) among units exposed in the experiment's first ``days``
    days, as is and reweighted to the strata of ``population[stratum]``.

    Returns an :class:`EngagementReadout`; its ``readouts`` rows are ``early`` (as is) and
    ``reweighted`` per treatment variant.
    """
    from recscope.experiments.engines import open_tables, source_name

    win = days if window is None else window
    eng, a_tbl, (e_tbl, p_tbl) = open_tables(engine, assignments, [events, population])
    for t, cols in ((a_tbl, (unit, variant, exposure)), (e_tbl, (unit, ts, column)),
                    (p_tbl, (unit, stratum))):
        for c in cols:
            if c not in t.columns:
                raise DataValidationError(f"column {c!r} not found (have: "
                                          f"{', '.join(t.columns)})", file=t.name, column=c)
    pop = eng.execute(f'SELECT CAST("{stratum}" AS DOUBLE) AS s FROM '
                      f'{p_tbl.expr.sql(eng.dialect)}')
    values = np.array([math.nan if r["s"] is None else r["s"] for r in pop], dtype=float)
    if values.size == 0 or not np.isfinite(values).all():
        raise DataValidationError("the population's engagement is empty or has missing "
                                  "values", file=source_name(population), column=stratum)
    edges = _bins(values, n_bins)
    pop_bin = np.searchsorted(edges, values, side="right") - 1
    shares = np.bincount(pop_bin, minlength=edges.size) / values.size
    case = " ".join(f"WHEN p.s >= {float(e)!r} THEN {i}" for i, e in
                    reversed(list(enumerate(edges))))
    a_sql, e_sql = a_tbl.expr.sql(eng.dialect), e_tbl.expr.sql(eng.dialect)
    p_sql = p_tbl.expr.sql(eng.dialect)
    sql = f"""
    WITH a AS (SELECT "{unit}" AS u, MIN("{variant}") AS v, MIN("{exposure}") AS x
               FROM {a_sql} GROUP BY 1 HAVING COUNT(DISTINCT "{variant}") = 1),
    start AS (SELECT MIN(x) AS t0 FROM a),
    early AS (SELECT a.* FROM a, start WHERE a.x < start.t0 + INTERVAL {int(days)} DAY),
    p AS (SELECT "{unit}" AS u, CAST("{stratum}" AS DOUBLE) AS s FROM {p_sql}),
    y AS (SELECT early.u, early.v, COALESCE(SUM(CAST(e."{column}" AS DOUBLE)), 0) AS y
          FROM early LEFT JOIN {e_sql} AS e ON e."{unit}" = early.u
               AND e."{ts}" >= early.x AND e."{ts}" < early.x + INTERVAL {int(win)} DAY
          GROUP BY 1, 2)
    SELECT y.v, CASE {case} ELSE NULL END AS b, COUNT(*) AS n, SUM(y.y) AS sy,
           SUM(y.y * y.y) AS syy, COUNT(p.u) AS matched
    FROM y LEFT JOIN p ON p.u = y.u GROUP BY 1, 2"""
    rows = eng.execute(sql)
    unmatched = sum(int(r["n"]) - int(r["matched"]) for r in rows)
    if unmatched:
        raise DataValidationError(f"{unmatched} early unit(s) have no row in the population",
                                  file=source_name(population), column=unit)
    cells = {(str(r["v"]), int(r["b"])): r for r in rows}
    variants = sorted({v for v, _ in cells})
    if control not in variants:
        raise DataValidationError(f"control variant {control!r} has no early unit",
                                  file=source_name(assignments), column=variant)
    readouts: list[Effect] = []
    strata: list[dict[str, Any]] = []
    missing = 0.0
    for v in (x for x in variants if x != control):
        tot = {arm: _moments([cells[(arm, b)] for b in range(edges.size)
                              if (arm, b) in cells]) for arm in (control, v)}
        est = tot[v][0] - tot[control][0]
        se = math.sqrt(tot[v][1] + tot[control][1])
        readouts.append(_effect(f"{column} ({win}d)", est, se,
                                tot[v][2] + tot[control][2], v, "early"))
        parts, weights = [], []
        missing = 0.0
        for b in range(edges.size):
            mc = _moments([cells[(control, b)]]) if (control, b) in cells else None
            mt = _moments([cells[(v, b)]]) if (v, b) in cells else None
            early_share = sum(int(cells[(arm, b)]["n"]) for arm in (control, v)
                              if (arm, b) in cells) / max(tot[v][2] + tot[control][2], 1)
            upper = f"{edges[b + 1]:g})" if b + 1 < edges.size else "inf)"
            row = {"variant": v, "stratum": f"{stratum} in [{edges[b]:g}, {upper}",
                   "population_share": float(shares[b]), "early_share": early_share}
            if mc is None or mt is None or mc[2] < 2 or mt[2] < 2:
                missing += shares[b]
                strata.append({**row, "estimate": math.nan, "se": math.nan})
                continue
            parts.append((mt[0] - mc[0], mt[1] + mc[1]))
            weights.append(shares[b])
            strata.append({**row, "estimate": mt[0] - mc[0], "se": math.sqrt(mt[1] + mc[1])})
        w = np.asarray(weights) / max(sum(weights), 1e-300)
        rw = float(sum(wi * p[0] for wi, p in zip(w, parts, strict=True)))
        rse = math.sqrt(sum(wi * wi * p[1] for wi, p in zip(w, parts, strict=True)))
        readouts.append(_effect(f"{column} ({win}d)", rw, rse,
                                tot[v][2] + tot[control][2], v, "reweighted",
                                share_missing=float(missing)))
    notes = [f"Early units: exposed in the first {days} days; the population has "
             f"{values.size:,} users in {edges.size} strata of {stratum}."]
    if missing > 0:
        notes.append(f"{100 * missing:.1f}% of the population is in strata without early "
                     "units in both arms; the other strata were renormalised.")
    return EngagementReadout(f"{column} ({win}d)", stratum, days, readouts, strata,
                             float(missing), notes)


def _moments(rows: list[dict[str, Any]]) -> tuple[float, float, int]:
    """Mean, variance of the mean and count of per-unit values from summed rows."""
    n = sum(int(r["n"]) for r in rows)
    if n == 0:
        return math.nan, math.nan, 0
    sy = sum(float(r["sy"]) for r in rows)
    syy = sum(float(r["syy"]) for r in rows)
    mean = sy / n
    var = (syy - n * mean * mean) / max(n - 1, 1)
    return mean, max(var, 0.0) / n, n


def _effect(metric: str, est: float, se: float, n: int, variant: str, readout: str,
            **extra: Any) -> Effect:
    z = est / se if se > 0 else math.nan
    return Effect(metric, est, est - 1.96 * se, est + 1.96 * se, se,
                  math.erfc(abs(z) / math.sqrt(2)) if math.isfinite(z) else math.nan, n,
                  extra={"variant": variant, "readout": readout, **extra})


__all__ = ["EngagementReadout", "engagement_readout"]
