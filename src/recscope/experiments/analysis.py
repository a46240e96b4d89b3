"""``analyze(...)``: run the generated SQL, do the inference, return a :class:`Scorecard`."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.table import Table as RichTable

from recscope.core.multiple_testing import adjust_pvalues
from recscope.errors import DataValidationError
from recscope.experiments import moments
from recscope.experiments.engines import Engine, Source, SqlRunner, open_tables
from recscope.experiments.metrics import AnalysisConfig
from recscope.experiments.sql import MetricPlan, Plan, Table, text_example_sql
from recscope.results import Effect, Result

RESULT_KEYS = ("metric", "estimate", "ci_low", "ci_high", "se", "p_value", "n", "variant",
               "control_mean", "treatment_mean", "rel_effect", "rel_ci_low", "rel_ci_high",
               "p_value_adjusted", "n_control", "n_treatment", "not_computable")
"""Keys every scorecard row has (the JSON contract; more follow per metric kind)."""

N_BOOT = 1000
"""Bootstrap resamples for quantile metrics' standard errors."""


@dataclass
class Scorecard(Result):
    """Per metric and treatment variant: effects, intervals, p-values; SRM and data checks.

    ``results``: one :class:`~recscope.results.Effect` per metric and treatment variant;
    ``estimate`` is the treatment minus the control, ``extra`` holds ``variant``, the two
    variants' values, the relative effect with its interval, ``p_value_adjusted``
    (corrected across every computable metric, variant and segment row together),
    ``n_control`` / ``n_treatment``, ``se``'s degrees of freedom ``df``, ``test``,
    ``cuped``, ``variance_reduction``, ``mde``, ``not_computable`` (the reason, or None),
    and, when sequential, ``seq_*``. ``segment_results`` hold the same per segment value.
    """

    kind = "experiment_scorecard"
    title = "Experiment scorecard"

    results: list[Effect]
    srm: dict[str, Any]
    data_checks: dict[str, Any]
    segment_results: list[Effect] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    sql: list[str] = field(default_factory=list)

    def effects(self) -> list[Effect]:
        return list(self.results)

    def notes(self) -> list[str]:
        """Banners: sample-ratio mismatch, excluded or unassigned units, missing values,
        caps, and comparisons that could not be computed."""
        out = []
        if not self.srm.get("ok", True):
            obs = ", ".join(f"{k} = {v:,}" for k, v in self.srm["observed"].items())
            out.append(f"Sample ratio mismatch: p = {self.srm['p_value']:.2e} ({obs}); "
                       "results are not trustworthy until the cause is found.")
        dc = self.data_checks
        n_conf = dc.get("units_in_several_variants", 0)
        if n_conf:
            out.append(f"{n_conf:,} unit(s) were assigned to more than one variant and were "
                       f"excluded (e.g. {dc.get('example_unit')}).")
        n_none = dc.get("units_without_variant", 0)
        if n_none:
            out.append(f"{n_none:,} assigned unit(s) have no variant (NULL) and were "
                       "excluded.")
        n_orph = dc.get("units_with_events_but_no_assignment", 0)
        if n_orph:
            out.append(f"{n_orph:,} unit(s) have events but no assignment row and were left "
                       f"out (e.g. {dc.get('example_unit_without_assignment')}).")
        for metric, info in dc.get("nulls", {}).items():
            counts = ", ".join(f"{c}: {k:,}" for c, k in info["values"].items())
            how = ("counted as 0" if info["policy"] == "zero" else
                   f"their units dropped from the metric ({info.get('units_dropped', 0):,} "
                   "unit(s))")
            out.append(f"{metric}: NULL/NaN values ({counts}) {how}.")
        for metric, cap in dc.get("caps", {}).items():
            rule = (f"quantile {cap['quantile']:g} of all units" if cap.get("quantile")
                    is not None else "a fixed value")
            out.append(f"{metric}: per-unit values capped at {cap['value']:.6g} ({rule}; "
                       f"{cap['units_capped']:,} unit(s) capped).")
        bad = [e for e in self.results + self.segment_results if e.extra.get("not_computable")]
        if bad:
            e = bad[0]
            out.append(f"{len(bad)} comparison(s) could not be computed and are left out of "
                       f"the {self.config.get('correction', 'holm')} correction (e.g. "
                       f"{e.metric} / {e.extra.get('variant')}: {e.extra['not_computable']}).")
        return out

    def warnings(self) -> list[str]:
        """The banners (alias of :meth:`notes`)."""
        return self.notes()

    def _display(self, e: Effect) -> dict[str, Any]:
        x = e.extra
        out = {"metric": e.metric + (" (CUPED)" if x.get("cuped") else ""),
               "variant": str(x.get("variant")), "control": x.get("control_mean"),
               "treatment": x.get("treatment_mean"),
               "estimate": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high,
               "relative [CI]": f"{_pct(x.get('rel_effect'))} [{_pct(x.get('rel_ci_low'))}, "
                                f"{_pct(x.get('rel_ci_high'))}]",
               "p_value": e.p_value, "p adjusted": x.get("p_value_adjusted")}
        if x.get("not_computable"):
            out["p_value"] = "not computable"
        return out

    def rich_table(self) -> RichTable:
        from recscope.report.tables import rich_table

        return rich_table([self._display(e) for e in self.results], title=self.title,
                          notes=self.notes() or [f"SRM p = {self.srm['p_value']:.3g}"])

    def to_html(self) -> str:
        from recscope.report.html import HtmlReport

        rep = HtmlReport(self.title, f"{len(self.results)} comparisons")
        for w in self.notes():
            rep.banner(w, "bad")
        if self.srm.get("ok", True):
            rep.banner(f"No sample ratio mismatch (p = {self.srm['p_value']:.3g}).", "ok")
        rows = [{**self._display(e), "n": f"{e.extra['n_control']:,} / "
                 f"{e.extra['n_treatment']:,}", "MDE": e.extra.get("mde"),
                 "variance reduction": (_pct(e.extra.get("variance_reduction"))
                                        if e.extra.get("cuped") else "–"),
                 **({"always-valid CI": f"[{_f(e.extra['seq_ci_low'])}, "
                                        f"{_f(e.extra['seq_ci_high'])}]"}
                    if "seq_ci_low" in e.extra else {})} for e in self.results]
        rep.heading("Results").table(rows)
        if self.segment_results:
            rep.heading("Segments").table([
                {"segment": f"{e.extra['segment']} = {e.extra['segment_value']}",
                 **self._display(e)} for e in self.segment_results])
        rep.heading("Sample ratio").key_values({"p_value": self.srm["p_value"],
                                                **{f"observed {k}": v for k, v in
                                                   self.srm["observed"].items()}})
        rep.heading("Data checks").key_values({k: v for k, v in self.data_checks.items()
                                               if not isinstance(v, dict)})
        if self.sql:
            rep.heading("SQL")
            for s in self.sql:
                rep.raw(f"<pre style='white-space:pre-wrap'>{html.escape(s)}</pre>")
        return rep.render()


def _f(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{100 * v:+.2f}%"


def analyze(assignments: Source, events: Source | Sequence[Source], config: AnalysisConfig,
            *, engine: str | Engine = "duckdb",
            show_sql: Callable[[str], None] | None = None, seed: int = 0) -> Scorecard:
    """Analyse an experiment: per-unit aggregation and sufficient statistics run in the
    engine; each treatment is compared with the control for every metric.

    ``assignments``: one row per unit (``config.unit``, ``config.variant``, optional first
    exposure, covariates, segments). ``events``: one or more tables of per-unit events or
    per-unit values. ``show_sql`` receives every SQL statement before it runs. A first,
    cheap statement checks the data (empty tables, unassigned units, missing values, one
    row per unit?, no negative value in proportions' columns?) to refuse bad data and
    simplify the main one, so the inputs must not change while the analysis runs.
    ``seed`` seeds the bootstrap of quantile metrics.
    """
    eng, a_tbl, ev_tbls = open_tables(engine, assignments, events)
    plan = make_plan(config, a_tbl, ev_tbls, eng)
    run = SqlRunner(eng, [a_tbl, *ev_tbls], show_sql)
    checks = plan.apply_checks(run(plan.checks_sql())[0])
    caps = apply_caps(plan, run)
    all_rows = run(plan.stats_sql())
    n_seg = len(config.segments)
    overall = [r for r in all_rows if all(r[f"g{i}"] == 1 for i in range(n_seg))]
    rows = [r for r in overall if r["v"] is not None]
    excluded = next((r for r in overall if r["v"] is None), None)
    data_checks: dict[str, Any] = {
        "units": int(sum(r["n"] for r in overall)),
        "units_in_several_variants": int(excluded["n_conflicts"]) if excluded else 0,
        "units_without_variant": int(excluded["n_missing"]) if excluded else 0,
        "example_unit": excluded["example"] if excluded else None,
        **checks, "caps": caps,
    }
    all_rows = [r for r in all_rows if r["v"] is not None]
    by_variant = {str(r["v"]): r for r in rows}
    raw_variant = {str(r["v"]): r["v"] for r in rows}
    control = str(config.control)
    treatments = _check_variants(config, by_variant, a_tbl)
    order = [control, *treatments]
    # metrics that drop units with missing values: their own statistics rows
    drop_rows: dict[int, list[dict[str, Any]]] = {}
    for mp in plan.dropping():
        drop_rows[mp.index] = [r for r in run(plan.stats_sql(metric=mp)) if r["v"] is not None]
        kept = sum(r["n"] for r in drop_rows[mp.index]
                   if all(r[f"g{i}"] == 1 for i in range(n_seg)))
        entry = data_checks["nulls"].setdefault(mp.metric.name,
                                                {"policy": "drop", "values": {}})
        entry["units_dropped"] = int(sum(by_variant[v]["n"] for v in order) - kept)

    def rows_for(mp: MetricPlan, segment: tuple[int, str] | None) -> dict[str, dict[str, Any]]:
        src = drop_rows.get(mp.index, all_rows)
        if segment is None:
            pick = [r for r in src if all(r[f"g{i}"] == 1 for i in range(n_seg))]
        else:
            si, value = segment
            pick = [r for r in src if r[f"g{si}"] == 0 and str(r[f"s{si}"]) == value]
        return {str(r["v"]): r for r in pick}

    results = [_compare(plan, mp, rows_for(mp, None), control, v, config)
               for v in treatments for mp in plan.metrics if mp.metric.kind != "quantile"]
    rng = np.random.default_rng(seed)
    for mp in plan.metrics:
        if mp.metric.kind == "quantile":
            results += _quantile_rows(plan, mp, run(plan.histogram_sql(mp)), raw_variant,
                                      control, treatments, config, rng)
    order_key = {m.name: i for i, m in enumerate(config.metrics)}
    results.sort(key=lambda e: (order_key[e.metric], order.index(e.extra["variant"])))
    segment_results: list[Effect] = []
    for si, seg in enumerate(config.segments):
        values = sorted({str(r[f"s{si}"]) for r in all_rows if r[f"g{si}"] == 0})
        for value in values:
            for v in treatments:
                for mp in plan.metrics:
                    if mp.metric.kind == "quantile":
                        continue
                    byv = rows_for(mp, (si, value))
                    if control not in byv or v not in byv:
                        continue
                    e = _compare(plan, mp, byv, control, v, config)
                    segment_results.append(Effect(e.metric, e.estimate, e.ci_low, e.ci_high,
                                                  e.se, e.p_value, e.n, {
                                                      "segment": seg, "segment_value": value,
                                                      **e.extra}))
    family = results + segment_results
    adj = adjust_pvalues([e.p_value for e in family], config.correction)
    for e, pa in zip(family, adj, strict=True):
        e.extra["p_value_adjusted"] = float(pa)
    data_checks["not_computable"] = sum(1 for e in family if e.extra.get("not_computable"))
    counts = {v: int(by_variant[v]["n"]) for v in order}
    shares = ([config.weights.get(v, 0.0) for v in order] if config.weights
              else [1.0] * len(order))
    srm_p = moments.srm_test(list(counts.values()), shares)
    total = sum(counts.values())
    srm = {"p_value": srm_p, "ok": srm_p >= config.srm_alpha, "observed": counts,
           "expected": {v: total * s / sum(shares) for v, s in zip(order, shares,
                                                                    strict=True)},
           "alpha": config.srm_alpha}
    return Scorecard(results=results, srm=srm, data_checks=data_checks,
                     segment_results=segment_results, config=config.to_dict(),
                     sql=run.executed)


def make_plan(config: AnalysisConfig, main: Table, events: Sequence[Table], eng: Engine
              ) -> Plan:
    """The analysis' :class:`Plan`; a text column where a number is needed is named with
    one of its values that is not a number (read from the engine)."""
    try:
        return Plan(config, main, events, eng.dialect)
    except DataValidationError as exc:
        table = next((t for t in [main, *events]
                      if t.name == exc.file and exc.column in t.columns), None)
        if (table is None or exc.column is None or ("needs a numeric column" not in exc.problem
                and "must be numeric" not in exc.problem)):
            raise
        try:
            found = eng.execute(text_example_sql(table, exc.column, eng.dialect))
        except Exception:  # the example is a courtesy: the type error stands without it
            raise exc from None
        if not found:
            raise
        value = next(iter(found[0].values()))
        raise DataValidationError(f"{exc.problem}; e.g. {value!r} is not a number",
                                  file=exc.file, column=exc.column) from None


def _check_variants(config: AnalysisConfig, by_variant: dict[str, Any], a_tbl: Table
                    ) -> list[str]:
    control = str(config.control)
    if control not in by_variant:
        raise DataValidationError(
            f"control variant {control!r} not found in the data (variants present: "
            f"{', '.join(sorted(by_variant)) or 'none'})", file=a_tbl.name,
            column=config.variant)
    if config.variants is not None:
        absent = [v for v in config.variants if v not in by_variant]
        if absent:
            raise DataValidationError(
                f"variant {absent[0]!r} listed in the config is absent from the data "
                f"(present: {', '.join(sorted(by_variant))})", file=a_tbl.name,
                column=config.variant)
        unexpected = sorted(set(by_variant) - set(config.variants))
        if unexpected:
            raise DataValidationError(
                f"variant {unexpected[0]!r} in the data is not listed in the config",
                file=a_tbl.name, column=config.variant)
    treatments = [v for v in sorted(by_variant) if v != control]
    if not treatments:
        raise DataValidationError("no treatment variant in the data (only the control)",
                                  file=a_tbl.name, column=config.variant)
    return treatments


def apply_caps(plan: Plan, run: SqlRunner) -> dict[str, dict[str, Any]]:
    """Compute quantile caps in the engine, set every cap on the plan, and count the
    units each cap changes (reported in ``data_checks.caps``)."""
    caps: dict[int, float] = {}
    info: dict[str, dict[str, Any]] = {}
    sql = plan.cap_sql()
    found = run(sql)[0] if sql is not None else {}
    for mp in plan.metrics:
        cap = mp.metric.cap
        if cap is None:
            continue
        value = cap.value if cap.value is not None else found[f"cap{mp.index}"]
        if value is None or not math.isfinite(float(value)):
            raise DataValidationError(f"metric {mp.metric.name!r}: the cap could not be "
                                      "computed (no units)", column=mp.metric.column)
        caps[mp.index] = float(value)
        info[mp.metric.name] = {"quantile": cap.quantile, "value": float(value)}
    if not caps:
        return info
    counts = run(plan.capped_count_sql(caps))[0]
    for mp in plan.metrics:
        if mp.index in caps:
            info[mp.metric.name]["units_capped"] = int(counts[f"capped{mp.index}"] or 0)
    plan.set_caps(caps)
    return info


def _not_computable(mc: moments.Moments, mt: moments.Moments, mp: MetricPlan,
                    control: str, treatment: str) -> str | None:
    for name, m in ((control, mc), (treatment, mt)):
        if m.n < 2:
            return f"fewer than 2 units in variant {name!r}"
        if mp.term[1] is not None and not m.mean[mp.term[1]] != 0:
            return f"the denominator sums to zero in variant {name!r}"
        if not (np.all(np.isfinite(m.mean)) and np.all(np.isfinite(m.cov))):
            return f"the metric is not finite (NaN) in variant {name!r}"
    return None


def _compare(plan: Plan, mp: MetricPlan, by_variant: dict[str, dict[str, Any]],
             control: str, treatment: str, config: AnalysisConfig) -> Effect:
    mc = plan.moments(by_variant[control], mp)
    mt = plan.moments(by_variant[treatment], mp)
    reason = _not_computable(mc, mt, mp, control, treatment)
    if reason is not None:
        return _empty(mp.metric.name, treatment, mc.n, mt.n, reason, bool(mp.covariates))
    return compare_moments(mp.metric.name, treatment, mc, mt, mp.term, mp.covariates,
                           config, mp.metric.distribution)


def _empty(metric: str, variant: str, n_control: float, n_treatment: float, reason: str,
           cuped: bool = False) -> Effect:
    """A row for a comparison that cannot be computed: NaN numbers and the reason."""
    nan = math.nan
    return Effect(metric, nan, n=n_control + n_treatment, extra={
        "variant": variant, "control_mean": nan, "treatment_mean": nan, "rel_effect": nan,
        "rel_se": nan, "rel_ci_low": nan, "rel_ci_high": nan, "p_value_adjusted": nan,
        "n_control": int(n_control), "n_treatment": int(n_treatment), "df": nan,
        "not_computable": reason, "test": None, "cuped": cuped,
        "variance_reduction": nan, "mde": nan})


def _row(metric: str, variant: str, c: moments.Comparison, distribution: str,
         reason: str | None, extra: dict[str, Any]) -> Effect:
    """The scorecard row of one comparison (NaN inference when ``reason`` says why)."""
    ok = reason is None
    nan = math.nan
    return Effect(
        metric, c.effect, c.ci_low if ok else nan, c.ci_high if ok else nan,
        c.se if ok else nan, c.p_value if ok else nan, c.n_control + c.n_treatment,
        extra={"variant": variant, "control_mean": c.control_mean,
               "treatment_mean": c.treatment_mean, "rel_effect": c.rel_effect,
               "rel_se": c.rel_se if ok else nan,
               "rel_ci_low": c.rel_ci_low if ok else nan,
               "rel_ci_high": c.rel_ci_high if ok else nan,
               "p_value_adjusted": c.p_value if ok else nan,
               "n_control": int(c.n_control), "n_treatment": int(c.n_treatment),
               "df": c.df, "not_computable": reason, "test": distribution, **extra})


def compare_moments(metric: str, variant: str, mc: moments.Moments, mt: moments.Moments,
                    term: moments.Term, covariates: Sequence[moments.Term],
                    config: AnalysisConfig, distribution: str) -> Effect:
    """One scorecard row from two variants' moments (CUPED when covariates are given).

    A comparison without variance in either variant (``se`` 0) has no test: it is
    reported as not computable rather than as p = 0 or 1.
    """
    raw_c = moments.variant_estimate(mc, term)
    raw_t = moments.variant_estimate(mt, term)
    if covariates and mc.n > 1 and mt.n > 1:
        theta, centre = moments.cuped_theta(moments.pool([mc, mt]), term, covariates)
        ec = moments.variant_estimate(mc, term, covariates, theta, centre)
        et = moments.variant_estimate(mt, term, covariates, theta, centre)
    else:
        ec, et = raw_c, raw_t
    c = moments.compare_variants(ec, et, alpha=config.alpha, distribution=distribution)
    reason = None
    if not math.isfinite(c.se) or not math.isfinite(c.effect):
        reason = "the metric is not finite (NaN) in a variant"
    elif c.se == 0:
        reason = "no variance in either variant"
    raw_var = raw_c.var / raw_c.n + raw_t.var / raw_t.n
    extra: dict[str, Any] = {
        "cuped": bool(covariates),
        "variance_reduction": (1 - c.se**2 / raw_var) if covariates and raw_var > 0 else 0.0,
        "mde": (moments.mde(ec.var, ec.n, et.var, et.n, alpha=config.alpha)
                if reason is None else math.nan),
    }
    if config.sequential and reason is None:
        sd2 = (ec.var * (ec.n - 1) + et.var * (et.n - 1)) / max(ec.n + et.n - 2, 1)
        tau2 = config.sequential_tau**2 * sd2
        if tau2 > 0 and c.se > 0:
            half, lr = moments.msprt(c.effect, c.se**2, tau2, config.alpha)
            extra.update(seq_ci_low=c.effect - float(half), seq_ci_high=c.effect + float(half),
                         seq_p_value=float(min(1.0, 1.0 / float(lr))))
    return _row(metric, variant, c, distribution, reason, extra)


def _quantile_rows(plan: Plan, mp: MetricPlan, hist: list[dict[str, Any]],
                   raw_variant: dict[str, Any], control: str, treatments: list[str],
                   config: AnalysisConfig, rng: np.random.Generator) -> list[Effect]:
    """Quantile comparisons: each variant's mid-quantile and its bootstrap standard error
    from the window of its histogram the engine returned, then a z test."""
    q = float(mp.metric.q)
    est: dict[str, moments.VariantEstimate] = {}
    for v in [control, *treatments]:
        rows = sorted((r for r in hist if str(r["v"]) == v), key=lambda r: r["y"])
        if not rows:
            continue
        x = np.array([float(r["y"]) for r in rows])
        c = np.array([float(r["c"]) for r in rows])
        n = float(rows[0]["n"])
        below = float(rows[0]["cum"]) - c[0]
        value, se = moments.histogram_quantile(x, c, below, n, q, n_boot=N_BOOT, rng=rng)
        est[v] = moments.VariantEstimate(value, se * se * n, n)
    out = []
    for v in treatments:
        if control not in est or v not in est:
            out.append(_empty(mp.metric.name, v, est[control].n if control in est else 0,
                              est[v].n if v in est else 0, "no units with a value"))
            continue
        ec, et = est[control], est[v]
        if min(ec.n, et.n) < 2:
            out.append(_empty(mp.metric.name, v, ec.n, et.n,
                              "fewer than 2 units in a variant"))
            continue
        c = moments.compare_variants(ec, et, alpha=config.alpha, distribution="z")
        reason = "no variance in either variant" if not c.se > 0 else None
        out.append(_row(mp.metric.name, v, c, "z", reason, {
            "cuped": False, "variance_reduction": 0.0, "mde": math.nan, "quantile": q,
            "quantile_method": "mid-quantile, unit bootstrap"}))
    return out
