"""Attribution from experiment logs: factorial cells aggregated inside the engine.

Input is a factorial experiment in the experiments package's format: an assignments table
with one row per unit and *layer* (each layer randomises one component on or off, the
control value meaning "off"), or one row per unit with one column per component (the
"wide" format ``recscope simulate`` writes; name the columns as ``components``), and one
or more events tables. The engine pivots the layers
into one cell per unit (a bit mask), then the experiments package's SQL computes per-cell
sufficient statistics of every metric; Python sees 2^K rows per metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlglot import exp

from recscope.attribution.factorial import CellStats, MetricAttribution, attribute_metric
from recscope.errors import ConfigError, DataValidationError
from recscope.experiments import moments
from recscope.experiments.analysis import apply_caps, make_plan
from recscope.experiments.engines import Engine, Source, SqlRunner, make_engine, source_name
from recscope.experiments.metrics import AnalysisConfig
from recscope.experiments.sql import MetricPlan, Plan, Table, aliased, col, lit, q
from recscope.results import Effect, Result

CELL = "recscope_cell"
MAX_BOOT = 1_000_000


@dataclass
class AttributionResult(Result):
    """Per metric: the total effect, each component's Shapley value and share, the main
    effects and the interactions, as :class:`~recscope.results.Effect` rows (see
    :meth:`MetricAttribution.effects`); ``cells`` per metric; ``data_checks``; ``sql``."""

    kind = "attribution"
    title = "Attribution of the full-stack effect (Shapley values and shares)"

    components: list[str]
    estimates: list[Effect]
    cells: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    data_checks: dict[str, Any] = field(default_factory=dict)
    sql: list[str] = field(default_factory=list)

    def effects(self) -> list[Effect]:
        return list(self.estimates)

    def by_metric(self) -> dict[str, dict[str, Any]]:
        """``{metric: {"total": Effect, "components": {name: Effect}, "main_effects":
        {...}, "interactions": {...}}}`` for reading one number from Python."""
        out: dict[str, dict[str, Any]] = {}
        key = {"shapley": "components", "main_effect": "main_effects",
               "interaction": "interactions"}
        for e in self.estimates:
            m = out.setdefault(e.metric, {"total": None, "components": {}, "main_effects": {},
                                          "interactions": {}})
            if e.extra["role"] == "total":
                m["total"] = e
            else:
                m[key[e.extra["role"]]][e.extra["term"]] = e
        return out

    def notes(self) -> list[str]:
        out = []
        if self.data_checks.get("units_excluded"):
            out.append(f"{self.data_checks['units_excluded']:,} unit(s) with a missing or "
                       "conflicting layer were excluded.")
        shaky = sorted({e.metric for e in self.estimates if e.extra.get("share_note")})
        if shaky:
            out.append("Shares are unstable for " + ", ".join(shaky) + " (the total effect's "
                       "interval includes 0, or a share lies outside its interval): read the "
                       "Shapley values in metric units instead.")
        return out

    def _display(self) -> list[dict[str, Any]]:
        rows = []
        for e in self.estimates:
            x = e.extra
            share = ("" if x["role"] != "shapley" else
                     f"{_pct(x['share'])} [{_pct(x['share_ci_low'])}, "
                     f"{_pct(x['share_ci_high'])}]" + (" (unstable)" if x["share_note"]
                                                       else ""))
            rows.append({"metric": e.metric, "term": x["term"] if x["role"] != "interaction"
                         else f"interaction {x['term']}", "estimate": e.estimate,
                         "ci_low": e.ci_low, "ci_high": e.ci_high, "share [CI]": share})
        return rows

    def rich_table(self) -> Any:
        from recscope.report.tables import rich_table

        return rich_table(self._display(), title=self.title, notes=self.notes())

    def to_html(self) -> str:
        import plotly.graph_objects as go

        from recscope.report.html import HtmlReport

        rep = HtmlReport("Attribution", f"components: {', '.join(self.components)}")
        for note in self.notes():
            rep.banner(note, "warn")
        for name, m in self.by_metric().items():
            rep.heading(f"Metric {name}")
            rep.table([r for r in self._display() if r["metric"] == name])
            comps = list(m["components"])
            eff = [m["components"][c].estimate for c in comps]
            lo = [m["components"][c].ci_low for c in comps]
            hi = [m["components"][c].ci_high for c in comps]
            fig = go.Figure(go.Bar(x=comps, y=eff, error_y={
                "type": "data", "symmetric": False,
                "array": [h - e for h, e in zip(hi, eff, strict=True)],
                "arrayminus": [e - lo_ for e, lo_ in zip(eff, lo, strict=True)]}))
            fig.update_layout(title=f"{name}: Shapley value per component (95% CI)",
                              height=320, margin={"t": 40, "b": 30})
            rep.figure(fig)
            if name in self.cells:
                rep.table(self.cells[name])
        rep.heading("Data checks").key_values({k: v for k, v in self.data_checks.items()
                                               if not isinstance(v, dict)})
        return rep.render()


def _pct(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"


def _cells_sql(a: Table, config: AnalysisConfig, layer: str, components: Sequence[str],
               exposure: str | None) -> exp.Select:
    """One row per unit: its cell bit mask, NULL when a layer is missing or conflicting."""
    c = config
    bit = exp.Case(ifs=[exp.If(this=exp.EQ(this=col(layer, "s"), expression=lit(name)),
                               true=lit(1 << j)) for j, name in enumerate(components)],
                   default=lit(0))
    on = exp.Case(ifs=[exp.If(this=exp.NEQ(this=col(c.variant, "s"), expression=lit(c.control)),
                              true=bit)], default=lit(0))
    k = len(components)
    complete = exp.and_(
        exp.EQ(this=exp.Count(this=exp.Distinct(expressions=[col(layer, "s")])),
               expression=lit(k)),
        exp.EQ(this=exp.Count(this=exp.Star()), expression=lit(k)))
    sel = exp.select(
        exp.alias_(col(c.unit, "s"), c.unit),
        exp.alias_(exp.Case(ifs=[exp.If(this=complete, true=exp.Sum(this=on))]), CELL))
    if exposure:
        sel = sel.select(exp.alias_(exp.Min(this=col(exposure, "s")), exposure))
    in_layers = exp.In(this=col(layer, "s"), expressions=[lit(n) for n in components])
    src = aliased(a.expr, "s")
    return sel.from_(src).where(in_layers).group_by(col(c.unit, "s"))


def _wide_cells_sql(a: Table, config: AnalysisConfig, layer: str, components: Sequence[str],
                    exposure: str | None) -> exp.Select:
    """Cells from one column per component (value != control means on); a unit whose rows
    disagree gets NULL (excluded and counted)."""
    del layer  # the wide format has no layer column
    c = config
    bits: exp.Expression = lit(0)
    for j, name in enumerate(components):
        on = exp.Case(ifs=[exp.If(this=exp.NEQ(this=col(name, "s"), expression=lit(c.control)),
                                  true=lit(1 << j))], default=lit(0))
        bits = exp.Add(this=bits, expression=on)
    inner = exp.select(exp.alias_(col(c.unit, "s"), c.unit), exp.alias_(bits, "b"))
    if exposure:
        inner = inner.select(exp.alias_(col(exposure, "s"), exposure))
    src = aliased(a.expr, "s")
    lo, hi = exp.Min(this=col("b", "w")), exp.Max(this=col("b", "w"))
    sel = exp.select(exp.alias_(col(c.unit, "w"), c.unit), exp.alias_(
        exp.Case(ifs=[exp.If(this=exp.EQ(this=lo, expression=hi), true=lo.copy())]), CELL))
    if exposure:
        sel = sel.select(exp.alias_(exp.Min(this=col(exposure, "w")), exposure))
    return sel.from_(exp.Subquery(this=inner.from_(src), alias=q("w"))).group_by(
        col(c.unit, "w"))


def attribute(assignments: Source, events: Source | Sequence[Source], config: AnalysisConfig,
              *, layer: str = "layer", components: Sequence[str] | None = None,
              engine: str | Engine = "duckdb", n_boot: int = 4000, seed: int = 0,
              show_sql: Callable[[str], None] | None = None) -> AttributionResult:
    """Decompose each metric's full-stack effect over the components (layers) of a 2^K
    factorial experiment; see the module docstring for the input formats."""
    if not 100 <= n_boot <= MAX_BOOT:
        raise ConfigError(f"the bootstrap needs 100 to {MAX_BOOT:,} draws, got {n_boot}",
                          key="bootstrap")
    eng = make_engine(engine) if isinstance(engine, str) else engine
    a_tbl = eng.table(assignments, source_name(assignments))
    for column, key in ((config.unit, "unit"), (config.variant, "variant")):
        if column not in a_tbl.columns:
            raise ConfigError(f"column {column!r} not found in {a_tbl.name} "
                              f"(columns: {', '.join(a_tbl.columns)})", key=key,
                              file=config.source)
    wide = layer not in a_tbl.columns
    if wide and not components:
        raise ConfigError(f"column {layer!r} not found in {a_tbl.name} (columns: "
                          f"{', '.join(a_tbl.columns)}): name the layer column, or the "
                          "component columns of a one-row-per-unit table", key="layer",
                          file=config.source)
    ev_sources = [events] if not isinstance(events, list | tuple) else list(events)
    ev_tbls = [eng.table(s, f"{source_name(s)}#{i}") for i, s in enumerate(ev_sources)]
    run = SqlRunner(eng, [a_tbl, *ev_tbls], show_sql)

    if wide:
        present = [c for c in a_tbl.columns if c not in (config.unit, config.variant)]
        where = f"columns of {a_tbl.name}"
    else:
        present = [str(r["l"]) for r in run(
            exp.select(exp.alias_(col(layer), "l")).distinct().from_(a_tbl.expr.copy())
            .order_by(col(layer)).sql(eng.dialect))]
        where = "the data (layers: " + ", ".join(present) + ")"
    comps = list(components) if components else present
    missing = [c for c in comps if c not in present]
    if missing:
        raise DataValidationError(f"component {missing[0]!r} not in {where}", file=a_tbl.name,
                                  column=None if wide else layer)
    if not 1 <= len(comps) <= 6:
        raise ConfigError(f"attribution needs 1 to 6 component layers, got {len(comps)}",
                          key="components")
    for m in config.metrics:
        if m.kind == "quantile":
            raise ConfigError("quantile metrics cannot be attributed (not a mean of units)",
                              key=f"metrics.{m.name}", file=config.source)
    exposure = config.exposure or next(
        (n for n in ("first_exposure_ts", "exposure_ts") if n in a_tbl.columns), None)
    cells_sel = (_wide_cells_sql if wide else _cells_sql)(a_tbl, config, layer, comps,
                                                          exposure)
    cols = {config.unit: a_tbl.columns[config.unit], CELL: "BIGINT"}
    if exposure:
        cols[exposure] = a_tbl.columns[exposure]
    cells_tbl = Table(f"{a_tbl.name} (cells)", exp.Subquery(this=cells_sel), cols)
    cfg = AnalysisConfig(metrics=config.metrics, unit=config.unit, variant=CELL,
                         control="0", exposure=exposure, timestamp=config.timestamp,
                         alpha=config.alpha, source=config.source)
    plan = make_plan(cfg, cells_tbl, ev_tbls, eng)
    checks = plan.apply_checks(run(plan.checks_sql())[0])
    apply_caps(plan, run)
    rows = run(plan.stats_sql(segments=False))
    drop_rows = {mp.index: run(plan.stats_sql(segments=False, metric=mp))
                 for mp in plan.dropping()}
    excluded = next((r for r in rows if r["v"] is None), None)
    by_cell = {int(r["v"]): r for r in rows if r["v"] is not None}
    n_cells = 1 << len(comps)
    absent = [c for c in range(n_cells) if c not in by_cell]
    if absent:
        raise DataValidationError(f"factorial cell {absent[0]} (bit mask over "
                                  f"{', '.join(comps)}) has no units", file=a_tbl.name,
                                  column=layer)
    estimates: list[Effect] = []
    cells: dict[str, list[dict[str, Any]]] = {}
    for mp in plan.metrics:
        src = by_cell
        if mp.index in drop_rows:
            src = {int(r["v"]): r for r in drop_rows[mp.index] if r["v"] is not None}
        missing = [c for c in range(n_cells) if c not in src]
        if missing:
            raise DataValidationError(f"metric {mp.metric.name!r}: factorial cell "
                                      f"{missing[0]} has no unit without missing values",
                                      file=a_tbl.name)
        n = np.array([float(src[c]["n"]) for c in range(n_cells)])
        value, var = (np.array(v) for v in zip(*(_cell_value(plan, src[c], mp)
                                                 for c in range(n_cells)), strict=True))
        res: MetricAttribution = attribute_metric(CellStats(n, value, var), comps,
                                                  metric=mp.metric.name, alpha=config.alpha,
                                                  n_boot=n_boot, seed=seed)
        estimates += res.effects()
        cells[mp.metric.name] = res.cell_rows()
    data_checks = {"units": int(sum(r["n"] for r in rows)),
                   "units_excluded": int(excluded["n"]) if excluded else 0,
                   "cells": {str(c): int(by_cell[c]["n"]) for c in range(n_cells)},
                   **checks}
    return AttributionResult(comps, estimates, cells, data_checks, run.executed)


def _cell_value(plan: Plan, row: dict[str, Any], mp: MetricPlan) -> tuple[float, float]:
    """A cell's metric value and squared standard error (delta method for ratios)."""
    m = plan.moments(row, mp)
    if mp.term[1] is not None and m.mean[mp.term[1]] == 0:
        raise DataValidationError("ratio denominator is zero in a factorial cell",
                                  column=mp.metric.name)
    g = moments.term_gradient(m, mp.term)
    return moments.term_value(m, mp.term), float(g @ m.cov @ g) / m.n
