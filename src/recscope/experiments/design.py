"""Experiment design from historical data: power, minimum detectable effect, sample size.

Before an experiment runs, the team's own pre-experiment data say how noisy each metric
is. :func:`power_analysis` takes a *units* table (the population, with the covariate
columns the metrics name; no variant column), the same event tables and the same
:class:`~recscope.experiments.metrics.AnalysisConfig` that ``analyze`` uses, and computes
in the engine, with the analysis' own SQL (:class:`~recscope.experiments.sql.Plan`, fed a
derived table that gives every unit one constant variant), each metric's per-unit mean
and variance (delta method for ratios) and the variance CUPED / regression adjustment
would remove with the metric's configured covariates. From those it derives

- the minimum detectable effect (absolute and relative) at the history's sample size and
  at each listed experiment duration, given daily traffic;
- the units per arm (and days) needed to detect each listed relative effect;

each with and without CUPED. Means, proportions and distinct counts are powered for the
two-sample t test (as statsmodels' ``TTestIndPower``), ratio metrics for the z test of the
delta method (``NormalIndPower``), matching the test ``analyze`` runs. ``analyze``
corrects its p-values across every metric and treatment arm (``correction``, Holm by
default), so each comparison is planned at ``alpha / (metrics x (arms - 1))``
(Bonferroni): a test that reaches that level is rejected by Holm and by
Benjamini-Hochberg too, so the planned power holds under the analysis' correction. With
``correction = "none"`` each comparison is planned at ``alpha``. Segments, which the
analysis also corrects across, are not part of the plan.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.table import Table as RichTable
from scipy import special
from scipy.optimize import brentq
from sqlglot import exp

from recscope.errors import ConfigError, DataValidationError
from recscope.experiments import moments
from recscope.experiments.analysis import apply_caps, make_plan
from recscope.experiments.engines import Engine, Source, SqlRunner, open_tables
from recscope.experiments.metrics import AnalysisConfig
from recscope.experiments.sql import Table, aliased, col, is_numeric, lit, q
from recscope.results import Effect, Result

HISTORY = "history"
"""The constant variant every unit of the history gets."""
DEFAULT_DAYS = (7.0, 14.0, 21.0, 28.0)


# -- power formulas ------------------------------------------------------------------------

def _treatment_var(var: float, effect: float, proportion: float | None) -> float:
    """The treatment arm's per-unit variance: the control's, or for a proportion ``p``
    the control's scaled by ``(p + effect)(1 - p - effect) / (p (1 - p))``."""
    if proportion is None or not 0 < proportion < 1:
        return var
    pt = proportion + effect
    if not -1e-12 <= pt <= 1 + 1e-12:
        return math.nan  # a rate outside [0, 1]: no such effect
    pt = min(max(pt, 0.0), 1.0)  # rounding at the bounds
    return var * pt * (1 - pt) / (proportion * (1 - proportion))


def two_sample_power(effect: float, var: float, n_control: float, n_treatment: float, *,
          alpha: float = 0.05, test: str = "z", proportion: float | None = None) -> float:
    """Power of the two-sided level-``alpha`` two-sample test of an absolute ``effect``
    when the control's per-unit variance is ``var``.

    The treatment arm has the same variance, or, for a proportion metric with control
    rate ``proportion``, the Bernoulli variance at ``proportion + effect`` (scaled like
    ``var``, so a CUPED-reduced variance stays reduced). ``test="z"``: normal test
    (statsmodels ``NormalIndPower``); ``test="t"``: t test with ``n_control +
    n_treatment - 2`` degrees of freedom and a noncentral t alternative
    (``TTestIndPower``). Both rejection regions are counted.
    """
    var_t = _treatment_var(var, effect, proportion)
    if math.isnan(var_t):
        return math.nan
    se2 = var / n_control + var_t / n_treatment
    if se2 <= 0:
        return 1.0 if effect != 0 else alpha
    if test == "z":
        return moments.z_power(effect, math.sqrt(se2), alpha=alpha)
    nc = abs(effect) / math.sqrt(se2)
    df = n_control + n_treatment - 2.0
    if df <= 0:
        return math.nan
    crit = float(special.stdtrit(df, 1 - alpha / 2))
    lower = float(special.nctdtr(df, nc, -crit))
    if math.isnan(lower):  # scipy gives NaN deep in the far tail (e.g. nc 6.4, -2.6)
        lower = 0.0
    return float(1.0 - special.nctdtr(df, nc, crit) + lower)


def _z_guess(alpha: float, target: float) -> float:
    return float(-special.ndtri(alpha / 2) + special.ndtri(target))


def min_detectable_effect(var: float, n_control: float, n_treatment: float, *,
                          alpha: float = 0.05, target: float = 0.8, test: str = "z",
                          proportion: float | None = None) -> float:
    """Smallest positive absolute effect detected with probability ``target`` (see
    :func:`two_sample_power`; NaN for a metric without variance, and for a proportion when no rate
    up to 1 is detectable)."""
    if var <= 0:
        return math.nan
    if test == "t" and n_control + n_treatment <= 2:
        return math.nan
    se = math.sqrt(var * (1.0 / n_control + 1.0 / n_treatment))

    def gap(e: float) -> float:
        return two_sample_power(e, var, n_control, n_treatment, alpha=alpha, test=test,
                     proportion=proportion) - target

    cap = 1.0 - proportion if proportion is not None and 0 < proportion < 1 else math.inf
    hi = min(1.5 * _z_guess(alpha, target) * se, cap)
    while gap(hi) < 0:
        if hi >= cap:
            return math.nan
        hi = min(2 * hi, cap)
    return float(brentq(gap, 0.0, hi, xtol=1e-15 * se, rtol=1e-13))


def units_per_arm(effect: float, var: float, *, ratio: float = 1.0, alpha: float = 0.05,
                  target: float = 0.8, test: str = "z", proportion: float | None = None
                  ) -> float:
    """Control-arm size (continuous; round up) detecting ``effect`` with probability
    ``target``, the treatment arm being ``ratio`` times as large (see :func:`two_sample_power`)."""
    if effect == 0:
        raise ValueError("effect must be non-zero")
    var_t = _treatment_var(var, effect, proportion)
    if var <= 0 or math.isnan(var_t):
        return math.nan  # no variance, or a proportion pushed outside [0, 1]

    def gap(n: float) -> float:
        return two_sample_power(effect, var, n, n * ratio, alpha=alpha, test=test,
                     proportion=proportion) - target

    z_n = (var + var_t / ratio) * (_z_guess(alpha, target) / effect) ** 2
    lo = 3.0 / (1.0 + ratio) if test == "t" else 1e-9 * z_n  # t: at least one df
    if gap(lo) >= 0:
        return lo
    hi = max(2.0 * z_n, 2.0 * lo)
    while gap(hi) < 0:
        hi *= 2
    return float(brentq(gap, lo, hi, xtol=1e-12 * hi, rtol=1e-13))


# -- settings --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExperimentDesign:
    """What the experiment will look like.

    ``arms``: variants including the control; ``treatment_share``: the share of the
    experiment's units in all treatment arms together (split equally among them;
    default: every arm equal); ``units_per_day``: new units entering per day; ``days``:
    durations at which to give the MDE (default 7, 14, 21, 28 when traffic is given);
    ``mde``: relative effects (0.02 = 2%) for which to give the sample size.
    ``alpha`` None takes the metrics file's.
    """

    alpha: float | None = None
    power: float = 0.8
    arms: int = 2
    treatment_share: float | None = None
    units_per_day: float | None = None
    days: tuple[float, ...] = ()
    mde: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}", key="alpha")
        if not 0 < self.power < 1:
            raise ConfigError(f"power must be in (0, 1), got {self.power}", key="power")
        if self.alpha is not None and self.power <= self.alpha:
            raise ConfigError("power must exceed alpha", key="power")
        if self.arms < 2:
            raise ConfigError(f"arms must be at least 2 (control + treatment), got "
                              f"{self.arms}", key="variants")
        if self.treatment_share is not None and not 0 < self.treatment_share < 1:
            raise ConfigError(f"treatment share must be in (0, 1), got "
                              f"{self.treatment_share}", key="treatment_share")
        if self.units_per_day is not None and not self.units_per_day > 0:
            raise ConfigError("units per day must be positive", key="units_per_day")
        if self.days and self.units_per_day is None:
            raise ConfigError("days need the traffic: give units per day too", key="days")
        if any(not (d > 0 and math.isfinite(d)) for d in self.days):
            raise ConfigError("days must be positive", key="days")
        if any(not (r != 0 and r > -1 and math.isfinite(r)) for r in self.mde):
            raise ConfigError("relative effects (mde) must be non-zero and above -1 (a "
                              "decrease of 10% is -0.1)", key="mde")

    @property
    def shares(self) -> tuple[float, float]:
        """(control share, share of each treatment arm) of the experiment's units."""
        k = self.arms - 1
        t = self.treatment_share if self.treatment_share is not None else k / self.arms
        return 1.0 - t, t / k

    def alpha_per_comparison(self, alpha: float, metrics: int = 1,
                             correction: str = "holm") -> float:
        """Bonferroni over the family ``analyze`` corrects across (every metric and
        treatment arm), or ``alpha`` when it does not correct."""
        return alpha if correction == "none" else alpha / (metrics * (self.arms - 1))

    def horizons(self) -> tuple[float, ...]:
        if self.units_per_day is None:
            return ()
        return self.days or DEFAULT_DAYS


# -- the result --------------------------------------------------------------------------------

@dataclass
class PowerAnalysis(Result):
    """Per metric: history moments, CUPED variance reduction, MDEs and sample sizes.

    ``metrics``: one row per metric (``baseline``, ``sd``, ``sd_cuped``,
    ``variance_reduction``, ...); ``mde``: one :class:`~recscope.results.Effect` per
    metric and horizon (the history's size, then each duration) whose ``estimate`` is the
    minimum detectable effect and ``n`` the experiment's units, with ``horizon``,
    ``days``, ``n_control``, ``n_treatment``, ``mde_rel``, ``mde_cuped`` and
    ``mde_rel_cuped`` in ``extra``; ``sample_size``: per metric and relative effect; raw
    and ``*_cuped`` values side by side; ``remarks``: how the plan was made.
    """

    kind = "experiment_power"
    title = "Experiment design: power and sample size"

    settings: dict[str, Any]
    metrics: list[dict[str, Any]]
    mde: list[Effect]
    sample_size: list[dict[str, Any]]
    remarks: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    sql: list[str] = field(default_factory=list)

    def effects(self) -> list[Effect]:
        return list(self.mde)

    def to_pandas(self, which: str = "mde") -> Any:
        """``metrics``, ``mde`` or ``sample_size`` as a pandas DataFrame."""
        import pandas as pd

        rows = getattr(self, which)
        return pd.DataFrame([r.to_dict() if isinstance(r, Effect) else r for r in rows])

    def _tables(self) -> list[tuple[str, list[dict[str, str]]]]:
        out = [("Metrics in the history", [_show_metric(r) for r in self.metrics]),
               ("Minimum detectable effect", [_show_mde(r) for r in self.mde])]
        if self.sample_size:
            rows = [_show_n(r) for r in self.sample_size]
            if self.settings.get("units_per_day") is None:  # no traffic: no days
                rows = [{k: v for k, v in r.items() if not k.startswith("days")}
                        for r in rows]
            out.append(("Sample size", rows))
        return out

    def rich_table(self) -> RichTable:
        s = self.settings
        grid = RichTable.grid(padding=(1, 0))
        grid.title = (f"Experiment design: power {s['power']:.0%}, alpha {s['alpha']:g}"
                      f" ({s['alpha_per_comparison']:g} per comparison), {s['arms']} arms")
        for title, rows in self._tables():
            t = RichTable(title=title, title_justify="left")
            if not rows:
                continue
            for c in rows[0]:
                t.add_column(c, justify="left" if c in ("metric", "horizon") else "right")
            for r in rows:
                t.add_row(*r.values())
            grid.add_row(t)
        grid.caption = "\n".join(self.remarks)
        grid.caption_style = "dim"
        return grid

    def to_html(self) -> str:
        s = self.settings
        from recscope.report.html import HtmlReport

        rep = HtmlReport("Experiment design: power and sample size",
                         f"power {s['power']:.0%}, alpha {s['alpha']:g} "
                         f"({s['alpha_per_comparison']:g} per comparison), {s['arms']} arms, "
                         f"{s['history_units']:,} units in the history")
        for title, rows in self._tables():
            rep.heading(title).table(rows)
        rep.heading("Notes")
        for n in self.remarks:
            rep.paragraph(n)
        rep.heading("Settings").key_values({k: v for k, v in s.items()
                                            if not isinstance(v, list | dict)})
        if self.sql:
            rep.heading("SQL")
            for sq in self.sql:
                rep.raw(f"<pre style='white-space:pre-wrap'>{html.escape(sq)}</pre>")
        return rep.render()


def _g(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{100 * v:.2f}%"


def _int(v: Any) -> str:
    return "–" if v is None else f"{int(v):,}"


def _arms(nc: Any, nt: Any) -> str:
    """Units per arm: one number when the arms are equal, else ``control / treatment``."""
    return _int(nc) if nc == nt else f"{_int(nc)} / {_int(nt)}"


def _show_metric(r: dict[str, Any]) -> dict[str, str]:
    return {"metric": r["metric"], "kind": r["kind"], "test": r["test"],
            "units": _int(r["n"]), "mean": _g(r["baseline"]), "sd per unit": _g(r["sd"]),
            "CUPED on": ", ".join(r["covariates"]) or "–",
            "variance reduction": _pct(r["variance_reduction"]) if r["covariates"] else "–"}


def _show_mde(e: Effect) -> dict[str, str]:
    r = e.extra
    return {"metric": e.metric, "horizon": r["horizon"],
            "n per arm": _arms(r["n_control"], r["n_treatment"]),
            "MDE": _g(e.estimate), "MDE rel": _pct(r["mde_rel"]),
            "MDE CUPED": _g(r["mde_cuped"]), "MDE rel CUPED": _pct(r["mde_rel_cuped"])}


def _show_n(r: dict[str, Any]) -> dict[str, str]:
    def days(d: Any) -> str:
        return "–" if d is None else f"{d:,}"

    return {"metric": r["metric"], "effect rel": _pct(r["rel_effect"]),
            "effect": _g(r["effect"]),
            "n per arm": _arms(r["n_control"], r["n_treatment"]),
            "days": days(r["days"]),
            "n per arm CUPED": _arms(r["n_control_cuped"], r["n_treatment_cuped"]),
            "days CUPED": days(r["days_cuped"])}


# -- the history table -------------------------------------------------------------------------

def history_table(units: Table, config: AnalysisConfig, only_variant: str | None = None
                  ) -> tuple[Table, str]:
    """The units table as a derived table with a constant variant column (so the
    analysis' :class:`Plan` runs on it unchanged); returns it and the column's name.

    ``only_variant`` keeps the units whose ``config.variant`` equals it (for example a
    past experiment's control arm).
    """
    arm = "recscope_arm"
    while arm in units.columns:
        arm = "_" + arm
    sel = exp.select(exp.Star(), exp.alias_(lit(HISTORY), q(arm))).from_(
        aliased(units.expr, "h"))
    if only_variant is not None:
        vcol = config.variant
        if vcol not in units.columns:
            raise ConfigError(f"column {vcol!r} (the metrics file's variant) not found in "
                              f"table {units.name} (columns: {', '.join(units.columns)})",
                              key="history_variant", file=config.source)
        value: object = only_variant
        if is_numeric(units.columns[vcol]):
            value = _number(only_variant, vcol)
        sel = sel.where(exp.EQ(this=col(vcol, "h"), expression=lit(value)))
    return Table(units.name, exp.Subquery(this=sel), {**units.columns, arm: "VARCHAR"}), arm


def _number(text: str, column: str) -> int | float:
    """A variant value typed for a numeric column (``7``, ``7.5``, ``1e3``)."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    raise ConfigError(f"column {column!r} is numeric; {text!r} is not a number",
                      key="history_variant")


# -- the analysis ------------------------------------------------------------------------------

def power_analysis(units: Source, events: Source | Sequence[Source], config: AnalysisConfig,
                   design: ExperimentDesign | None = None, *, engine: str | Engine = "duckdb",
                   only_variant: str | None = None,
                   show_sql: Callable[[str], None] | None = None) -> PowerAnalysis:
    """Power, MDE and sample size of every metric of ``config`` from historical data.

    ``units``: one row per unit of the population (unit column, the metrics' covariates,
    a first-exposure column when metrics use windows); ``events``: as for ``analyze``.
    Per-unit aggregation and moments run in the engine (one statement); ``show_sql``
    receives it before it runs.
    """
    design = design or ExperimentDesign()
    alpha = design.alpha if design.alpha is not None else config.alpha
    if design.power <= alpha:
        raise ConfigError("power must exceed alpha", key="power")
    eng, u_tbl, ev_tbls = open_tables(engine, units, events)
    h_tbl, arm = history_table(u_tbl, config, only_variant)
    cfg = config.replace(variant=arm, control=HISTORY, variants=None, weights=None,
                         segments=(), sequential=False)
    plan = make_plan(cfg, h_tbl, ev_tbls, eng)
    run = SqlRunner(eng, [u_tbl, *ev_tbls], show_sql)
    checks = plan.apply_checks(run(plan.checks_sql())[0])
    apply_caps(plan, run)
    row = next((r for r in run(plan.stats_sql(segments=False)) if r["v"] == HISTORY), None)
    if row is None or not row["n"]:
        raise DataValidationError("no units in the history" + (
            f" with {config.variant} = {only_variant!r}" if only_variant is not None else ""),
            file=u_tbl.name)
    a_cmp = design.alpha_per_comparison(alpha, len(config.metrics), config.correction)
    share_c, share_t = design.shares
    ratio = share_t / share_c
    n_hist = float(row["n"])
    notes = _notes(design, alpha, a_cmp, share_c, share_t, len(config.metrics),
                   config.correction)
    if only_variant is None and config.variant in u_tbl.columns:
        notes.append(f"The units table has the variant column {config.variant!r}, but no "
                     "history variant was chosen: every unit is history, whatever its "
                     "variant (give --history-variant to keep one arm).")
    metric_rows: list[dict[str, Any]] = []
    mde_rows: list[dict[str, Any]] = []
    n_rows: list[dict[str, Any]] = []
    for mp in plan.metrics:
        m = mp.metric
        if m.kind == "quantile":
            notes.append(f"{m.name}: quantile metrics are not planned here (no per-unit "
                         "variance); plan on the mean of the same column instead.")
            continue
        src = row
        if mp in plan.dropping():  # units with missing values left out of this metric
            src = next((r for r in run(plan.stats_sql(segments=False, metric=mp))
                        if r["v"] == HISTORY), None) or {**row, "n": 0}
            if not src["n"]:
                raise DataValidationError(f"metric {m.name!r}: no unit without missing "
                                          "values in the history", file=u_tbl.name)
        mom = plan.moments(src, mp)
        if m.kind == "ratio" and not mom.mean[1] != 0:
            raise DataValidationError(f"metric {m.name!r}: the denominator sums to zero in "
                                      "the history", column=m.denominator)
        summary = _summarise(mom, mp.term, mp.covariates)
        covs = ([f"{m.cuped_days:g}-day pre-period"] if m.cuped_days else []) + list(
            m.covariates)
        test = m.distribution
        prop = summary["baseline"] if m.kind == "proportion" else None
        if summary["var"] == 0:
            notes.append(f"{m.name}: constant in the history, no variance to plan with.")
        metric_rows.append({"metric": m.name, "kind": m.kind, "test": test,
                            "n": int(n_hist), "covariates": covs, **summary})
        base = abs(summary["baseline"])
        horizons = [("history", n_hist, None)] + [
            (f"{d:g} days", d * (design.units_per_day or 0.0), d) for d in design.horizons()]
        for label, total, days in horizons:
            nc = math.floor(total * share_c + 1e-9)  # whole units per arm
            nt = math.floor(total * share_t + 1e-9)
            ok = nc >= 2 and nt >= 2
            e_raw, e_cup = ((min_detectable_effect(v, nc, nt, alpha=a_cmp,
                                                   target=design.power, test=test,
                                                   proportion=prop) if ok else math.nan)
                            for v in (summary["var"], summary["var_cuped"]))
            mde_rows.append(Effect(m.name, e_raw, n=float(round(total)), extra={
                "horizon": label, "days": days, "n_control": nc, "n_treatment": nt,
                "mde_rel": e_raw / base if base else math.nan, "mde_cuped": e_cup,
                "mde_rel_cuped": e_cup / base if base else math.nan}))
        for rel in design.mde:
            n_rows.append(_sample_size_row(m.name, rel, summary, a_cmp, design, ratio,
                                           share_c, test, prop))
    if any(r["baseline"] == 0 for r in metric_rows):
        notes.append("Metrics with a zero mean in the history have no relative MDE.")
    settings = {"alpha": alpha, "alpha_per_comparison": a_cmp, "power": design.power,
                "arms": design.arms, "control_share": share_c,
                "treatment_share_per_arm": share_t, "units_per_day": design.units_per_day,
                "days": list(design.horizons()), "mde": list(design.mde),
                "history_units": int(n_hist), "history_variant": only_variant,
                "correction": "bonferroni"}
    if checks["units_with_events_but_no_assignment"]:
        notes.append(f"{checks['units_with_events_but_no_assignment']:,} unit(s) have events "
                     "but are not in the units table; they were left out (e.g. "
                     f"{checks['example_unit_without_assignment']}).")
    for name, info in checks["nulls"].items():
        notes.append(f"{name}: NULL/NaN values {info['values']} handled as "
                     f"nulls = {info['policy']!r}.")
    return PowerAnalysis(settings=settings, metrics=metric_rows, mde=mde_rows,
                         sample_size=n_rows, remarks=notes, config=config.to_dict(),
                         sql=run.executed)


def _summarise(mom: moments.Moments, term: moments.Term, covariates: Sequence[moments.Term]
               ) -> dict[str, float]:
    """Baseline, per-unit variance (delta method) and the variance after CUPED."""
    raw = moments.variant_estimate(mom, term)
    var_c = raw.var
    if covariates and mom.n > 2:
        theta, centre = moments.cuped_theta(mom, term, covariates)
        var_c = moments.variant_estimate(mom, term, covariates, theta, centre).var
    return {"baseline": raw.value, "var": raw.var, "sd": math.sqrt(raw.var),
            "var_cuped": var_c, "sd_cuped": math.sqrt(var_c),
            "variance_reduction": 1.0 - var_c / raw.var if raw.var > 0 else 0.0}


def _sample_size_row(metric: str, rel: float, summary: dict[str, float], a_cmp: float,
                     design: ExperimentDesign, ratio: float, share_c: float, test: str,
                     proportion: float | None) -> dict[str, Any]:
    effect = rel * abs(summary["baseline"])
    out: dict[str, Any] = {"metric": metric, "rel_effect": rel, "effect": effect}
    for suffix, var in (("", summary["var"]), ("_cuped", summary["var_cuped"])):
        if effect == 0 or var <= 0:
            nc = math.nan
        else:
            nc = units_per_arm(effect, var, ratio=ratio, alpha=a_cmp, target=design.power,
                               test=test, proportion=proportion)
        if math.isfinite(nc):
            n_c = math.ceil(nc - 1e-9)
            n_t = math.ceil(nc * ratio - 1e-9)
            total = math.ceil(nc / share_c - 1e-9)
            days = (math.ceil(total / design.units_per_day - 1e-9)
                    if design.units_per_day else None)
        else:
            n_c = n_t = total = days = None
        out.update({f"n_control{suffix}": n_c, f"n_treatment{suffix}": n_t,
                    f"units{suffix}": total, f"days{suffix}": days})
    return out


def _notes(design: ExperimentDesign, alpha: float, a_cmp: float, share_c: float, share_t: float,
           metrics: int, correction: str) -> list[str]:
    k = (design.arms - 1) * metrics
    out = [f"Two-sided tests at alpha = {alpha:g}, power {design.power:.0%}; "
           f"allocation {share_c:.0%} control, {share_t:.0%} per treatment arm."]
    if correction != "none" and k > 1:
        out.append(f"analyze corrects ({correction}) across {metrics} metric(s) x "
                   f"{design.arms - 1} treatment arm(s): each comparison is planned at "
                   f"alpha / {k} = {a_cmp:.4g} (Bonferroni), so its power holds under "
                   "that correction (segments are not counted).")
    out.append("Two-sample t test unless a metric sets test = \"z\" (ratios: z test, delta "
               "method). The treatment arm is assumed to have the history's per-unit "
               "variance (proportions: the Bernoulli variance at the shifted rate); MDEs "
               "are increases, relative to the history's mean.")
    if design.units_per_day is not None:
        out.append(f"Traffic: {design.units_per_day:,.0f} new units per day entering the "
                   "experiment (units are assumed not to repeat across days).")
    return out


def log_metrics(result: PowerAnalysis) -> dict[str, float]:
    """Numbers logged to tracking: per metric the history's MDEs and variance reduction."""
    out: dict[str, float] = {}
    for r in result.metrics:
        out[f"{r['metric']}.variance_reduction"] = r["variance_reduction"]
    for e in result.mde:
        if e.extra["horizon"] == "history":
            out[f"{e.metric}.mde_rel"] = e.extra["mde_rel"]
            out[f"{e.metric}.mde_rel_cuped"] = e.extra["mde_rel_cuped"]
    for r in result.sample_size:
        out[f"{r['metric']}.n_control@{r['rel_effect']:g}"] = (
            float(r["n_control"]) if r["n_control"] is not None else float("nan"))
    return {k: float(np.float64(v)) for k, v in out.items() if v is not None}
