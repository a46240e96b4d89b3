"""``analyze(...)``: run the generated SQL, do the inference, return a :class:`Scorecard`."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table as RichTable

from recscope.errors import DataValidationError
from recscope.experiments import stats
from recscope.experiments.engines import Engine, Source, open_tables
from recscope.experiments.metrics import AnalysisConfig
from recscope.experiments.sql import MetricPlan, Plan
from recscope.report import HtmlReport, Result

RESULT_KEYS = ("metric", "variant", "control_mean", "treatment_mean", "effect", "ci_low",
               "ci_high", "rel_effect", "rel_ci_low", "rel_ci_high", "p_value",
               "p_value_adjusted", "n_control", "n_treatment")


@dataclass
class Scorecard(Result):
    """Per metric and treatment variant: effects, intervals, p-values; SRM and data checks.

    ``results`` follow the JSON contract (``RESULT_KEYS`` plus extra fields such as ``se``,
    ``cuped``, ``variance_reduction``, ``mde`` and, when sequential, ``seq_*``);
    ``segment_results`` hold the same per segment value. ``p_value_adjusted`` is corrected
    across every metric, variant and segment row together.
    """

    kind = "experiment_scorecard"

    results: list[dict[str, Any]]
    srm: dict[str, Any]
    data_checks: dict[str, Any]
    segment_results: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    sql: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "srm": self.srm, "data_checks": self.data_checks,
                "results": self.results, "segment_results": self.segment_results,
                "config": self.config, "sql": self.sql}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scorecard:
        return cls(results=list(data["results"]), srm=dict(data["srm"]),
                   data_checks=dict(data.get("data_checks", {})),
                   segment_results=list(data.get("segment_results", [])),
                   config=dict(data.get("config", {})), sql=list(data.get("sql", [])))

    def to_pandas(self, segments: bool = False) -> Any:
        """Results (or segment results) as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.segment_results if segments else self.results)

    def warnings(self) -> list[str]:
        """Banners: sample-ratio mismatch and units excluded for conflicting variants."""
        out = []
        if not self.srm.get("ok", True):
            obs = ", ".join(f"{k}={v}" for k, v in self.srm["observed"].items())
            out.append(f"Sample ratio mismatch: p = {self.srm['p_value']:.2e} ({obs}); "
                       "results are not trustworthy until the cause is found.")
        n_conf = self.data_checks.get("units_in_several_variants", 0)
        if n_conf:
            out.append(f"{n_conf} unit(s) were assigned to more than one variant and were "
                       f"excluded (e.g. {self.data_checks.get('example_unit')}).")
        return out

    def rich_table(self) -> RichTable:
        t = RichTable(title="Experiment scorecard", caption="\n".join(self.warnings()) or
                      f"SRM p = {self.srm['p_value']:.3g}", caption_style="bold red"
                      if self.warnings() else "dim")
        for c in ("metric", "variant", "control", "treatment", "effect [CI]",
                  "relative [CI]", "p", "p adj"):
            t.add_column(c, justify="left" if c in ("metric", "variant") else "right")
        for r in self.results:
            t.add_row(r["metric"] + (" (CUPED)" if r.get("cuped") else ""), str(r["variant"]),
                      _f(r["control_mean"]), _f(r["treatment_mean"]),
                      f"{_f(r['effect'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}]",
                      f"{_pct(r['rel_effect'])} [{_pct(r['rel_ci_low'])}, "
                      f"{_pct(r['rel_ci_high'])}]", _f(r["p_value"]),
                      _f(r["p_value_adjusted"]))
        return t

    def to_html(self) -> str:
        rep = HtmlReport("Experiment scorecard", f"{len(self.results)} comparisons")
        for w in self.warnings():
            rep.banner(w, "bad")
        if not self.warnings():
            rep.banner(f"No sample ratio mismatch (p = {self.srm['p_value']:.3g}).", "ok")
        rep.heading("Results").table([_display(r) for r in self.results])
        if self.segment_results:
            rep.heading("Segments").table([{"segment": f"{r['segment']} = {r['segment_value']}",
                                            **_display(r)} for r in self.segment_results])
        rep.heading("Sample ratio").key_values({"p_value": self.srm["p_value"],
                                                **{f"observed {k}": v for k, v in
                                                   self.srm["observed"].items()}})
        rep.heading("Data checks").key_values(self.data_checks)
        if self.sql:
            rep.heading("SQL")
            for s in self.sql:
                rep.raw(f"<pre style='white-space:pre-wrap'>{html.escape(s)}</pre>")
        return rep.render()


def _display(r: dict[str, Any]) -> dict[str, str]:
    """A scorecard row formatted for reading (the JSON keeps every number)."""
    out = {"metric": r["metric"] + (" (CUPED)" if r.get("cuped") else ""),
           "variant": str(r["variant"]), "control": _f(r["control_mean"]),
           "treatment": _f(r["treatment_mean"]),
           "effect [CI]": f"{_f(r['effect'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}]",
           "relative [CI]": f"{_pct(r['rel_effect'])} [{_pct(r['rel_ci_low'])}, "
                            f"{_pct(r['rel_ci_high'])}]",
           "p": _f(r["p_value"]), "p adjusted": _f(r["p_value_adjusted"]),
           "n": f"{r['n_control']:,} / {r['n_treatment']:,}",
           "variance reduction": _pct(r.get("variance_reduction")) if r.get("cuped") else "–",
           "MDE": _f(r.get("mde"))}
    if "seq_p_value" in r:
        out["always-valid CI"] = f"[{_f(r['seq_ci_low'])}, {_f(r['seq_ci_high'])}]"
    return out


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
            show_sql: Callable[[str], None] | None = None) -> Scorecard:
    """Analyse an experiment: per-unit aggregation and sufficient statistics run in the
    engine; each treatment is compared with the control for every metric.

    ``assignments``: one row per unit (``config.unit``, ``config.variant``, optional first
    exposure, covariates, segments). ``events``: one or more tables of per-unit events or
    per-unit values. ``show_sql`` receives every SQL statement before it runs. A first,
    cheap statement checks the assignments (one row per unit?) and the proportions'
    columns (no negative value?) to simplify the main one, so the inputs must not change
    while the analysis runs.
    """
    eng, a_tbl, ev_tbls = open_tables(engine, assignments, events)
    plan = Plan(config, a_tbl, ev_tbls, eng.dialect)
    executed: list[str] = []

    def run(sql: str) -> list[dict[str, Any]]:
        executed.append(sql)
        if show_sql is not None:
            show_sql(sql)
        return eng.execute(sql)

    plan.apply_checks(run(plan.checks_sql())[0])
    all_rows = run(plan.stats_sql())
    n_seg = len(config.segments)
    overall = [r for r in all_rows if all(r[f"g{i}"] == 1 for i in range(n_seg))]
    rows = [r for r in overall if r["v"] is not None]
    excluded = next((r for r in overall if r["v"] is None), None)
    data_checks = {
        "units": int(sum(r["n"] for r in overall)),
        "units_in_several_variants": int(excluded["n_conflicts"]) if excluded else 0,
        "units_without_variant": int(excluded["n_missing"]) if excluded else 0,
        "example_unit": excluded["example"] if excluded else None,
    }
    all_rows = [r for r in all_rows if r["v"] is not None]
    by_variant = {str(r["v"]): r for r in rows}
    raw_variant = {str(r["v"]): r["v"] for r in rows}
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
    order = [control, *treatments]
    results = [r for v in treatments for r in _compare_all(plan, by_variant, control, v,
                                                           config)]
    quant = [mp for mp in plan.metrics if mp.metric.kind == "quantile"]
    if quant:
        results += _quantiles(plan, quant, by_variant, raw_variant, control, treatments,
                              config, run)
    order_key = {m.name: i for i, m in enumerate(config.metrics)}
    results.sort(key=lambda r: (order_key[r["metric"]], order.index(r["variant"])))
    segment_results: list[dict[str, Any]] = []
    for si, seg in enumerate(config.segments):
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        for r in (r for r in all_rows if r[f"g{si}"] == 0):
            groups.setdefault(str(r[f"s{si}"]), {})[str(r["v"])] = r
        for value, byv in sorted(groups.items()):
            if control not in byv:
                continue
            for v in treatments:
                if v not in byv:
                    continue
                for r in _compare_all(plan, byv, control, v, config):
                    segment_results.append({"segment": seg, "segment_value": value, **r})
    allp = [r["p_value"] for r in results] + [r["p_value"] for r in segment_results]
    adj = stats.adjust_pvalues(allp, config.correction)
    for r, pa in zip(results + segment_results, adj, strict=True):
        r["p_value_adjusted"] = float(pa)
    counts = {v: int(by_variant[v]["n"]) for v in order}
    if config.weights:
        shares = [config.weights.get(v, 0.0) for v in order]
    else:
        shares = [1.0] * len(order)
    srm_p = stats.srm_test(list(counts.values()), shares)
    total = sum(counts.values())
    srm = {"p_value": srm_p, "ok": srm_p >= config.srm_alpha, "observed": counts,
           "expected": {v: total * s / sum(shares) for v, s in zip(order, shares,
                                                                    strict=True)},
           "alpha": config.srm_alpha}
    return Scorecard(results=results, srm=srm, data_checks=data_checks,
                     segment_results=segment_results, config=config.to_dict(),
                     sql=executed)


def _compare_all(plan: Plan, by_variant: dict[str, dict[str, Any]], control: str,
                 treatment: str, config: AnalysisConfig) -> list[dict[str, Any]]:
    out = []
    for mp in plan.metrics:
        if mp.metric.kind == "quantile":
            continue
        mc = plan.moments(by_variant[control], mp)
        mt = plan.moments(by_variant[treatment], mp)
        for name, m in ((control, mc), (treatment, mt)):
            if mp.metric.kind == "ratio" and not m.mean[1] != 0:
                raise DataValidationError(
                    f"metric {mp.metric.name!r}: the denominator sums to zero in variant "
                    f"{name!r}", column=mp.metric.denominator)
        out.append(compare_moments(mp.metric.name, treatment, mc, mt, mp.term, mp.covariates,
                                   config, mp.metric.distribution))
    return out


def compare_moments(metric: str, variant: str, mc: stats.Moments, mt: stats.Moments,
                    term: stats.Term, covariates: Sequence[stats.Term],
                    config: AnalysisConfig, distribution: str) -> dict[str, Any]:
    """One scorecard row from two variants' moments (CUPED when covariates are given)."""
    raw_c, raw_t = stats.estimate(mc, term), stats.estimate(mt, term)
    if covariates and mc.n > 1 and mt.n > 1:
        theta, centre = stats.cuped_theta(stats.pool([mc, mt]), term, covariates)
        ec = stats.estimate(mc, term, covariates, theta, centre)
        et = stats.estimate(mt, term, covariates, theta, centre)
    else:
        ec, et = raw_c, raw_t
    c = stats.compare(ec, et, alpha=config.alpha, distribution=distribution)
    raw_var = raw_c.var / raw_c.n + raw_t.var / raw_t.n
    row: dict[str, Any] = {
        "metric": metric, "variant": variant, "control_mean": c.control_mean,
        "treatment_mean": c.treatment_mean, "effect": c.effect, "ci_low": c.ci_low,
        "ci_high": c.ci_high, "rel_effect": c.rel_effect, "rel_ci_low": c.rel_ci_low,
        "rel_ci_high": c.rel_ci_high, "p_value": c.p_value, "p_value_adjusted": c.p_value,
        "n_control": int(c.n_control), "n_treatment": int(c.n_treatment), "se": c.se,
        "df": c.df, "test": distribution, "cuped": bool(covariates),
        "variance_reduction": (1 - c.se**2 / raw_var) if covariates and raw_var > 0 else 0.0,
        "mde": stats.mde(ec.var, ec.n, et.var, et.n, alpha=config.alpha),
    }
    if config.sequential:
        sd2 = (ec.var * (ec.n - 1) + et.var * (et.n - 1)) / max(ec.n + et.n - 2, 1)
        tau2 = config.sequential_tau**2 * sd2
        if tau2 > 0 and c.se > 0:
            half, lr = stats.msprt(c.effect, c.se**2, tau2, config.alpha)
            row.update(seq_ci_low=c.effect - float(half), seq_ci_high=c.effect + float(half),
                       seq_p_value=float(min(1.0, 1.0 / float(lr))))
    return row


def _quantiles(plan: Plan, quant: list[MetricPlan], by_variant: dict[str, dict[str, Any]],
               raw_variant: dict[str, Any], control: str, treatments: list[str],
               config: AnalysisConfig, run: Callable[[str], list[dict[str, Any]]]
               ) -> list[dict[str, Any]]:
    from scipy.stats import norm

    z = float(norm.isf(config.alpha / 2))
    probs: dict[tuple[int, str], tuple[float, float, float]] = {}
    for mp in quant:
        for v in [control, *treatments]:
            probs[(mp.index, raw_variant[v])] = stats.quantile_probabilities(
                mp.metric.q, float(by_variant[v]["n"]), z)
    row = run(plan.quantile_sql(probs))[0]
    est: dict[tuple[int, str], stats.Estimate] = {}
    for k, key in enumerate(sorted(probs)):
        vals = row[f"q{k}"]
        mi, v = key
        est[(mi, str(v))] = stats.quantile_estimate(float(by_variant[str(v)]["n"]),
                                                    float(vals[0]), float(vals[1]),
                                                    float(vals[2]), z)
    out = []
    for mp in quant:
        for v in treatments:
            c = stats.compare(est[(mp.index, control)], est[(mp.index, v)], alpha=config.alpha,
                              distribution="z")
            out.append({"metric": mp.metric.name, "variant": v,
                        "control_mean": c.control_mean, "treatment_mean": c.treatment_mean,
                        "effect": c.effect, "ci_low": c.ci_low, "ci_high": c.ci_high,
                        "rel_effect": c.rel_effect, "rel_ci_low": c.rel_ci_low,
                        "rel_ci_high": c.rel_ci_high, "p_value": c.p_value,
                        "p_value_adjusted": c.p_value, "n_control": int(c.n_control),
                        "n_treatment": int(c.n_treatment), "se": c.se, "df": c.df,
                        "test": "z", "cuped": False, "variance_reduction": 0.0,
                        "quantile": mp.metric.q})
    return out
