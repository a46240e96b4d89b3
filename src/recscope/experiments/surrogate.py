"""Surrogate index: a long-run effect projected from a short experiment's surrogates.

Athey, Chetty, Imbens & Kang (2019): on a *history* of experiments where both the
short-run surrogates ``S`` (per unit: 14-day clicks, saves, sessions, active days, ...)
and the long-run outcome ``Y`` (e.g. active days in weeks 9–12) are observed, learn how
``Y`` follows from ``S``; in a new two-week experiment, project the long-run effect from
the surrogates' effects, provided they carry all of the treatment's effect on ``Y``
(surrogacy).

Two fits, both linear:

* the *unit-level* index ``E[Y | S]`` pooled over the history's units (the original
  estimator; kept as a diagnostic), and
* the *experiment-level* map used for the projection: across the history's comparisons,
  long-run effect ≈ ``theta`` · short-run effects, with the short-run effects' sampling
  noise removed by the method of moments (as in Netflix's work on many weak experiments,
  Bibaut et al. 2023) and a small ridge on standardised effects. Where a change keeps
  acting after the surrogates are read (satisfaction compounding into retention), the
  relation *across users* understates the relation *across treatments*; the history's
  experiments measure the latter directly.

Per-unit surrogates come from the experiments package's own per-unit SQL
(:class:`recscope.experiments.sql.Plan`), so a surrogate means exactly what the same
metric means in a scorecard. The projection's interval combines a bootstrap over the new
experiment's units (Poisson weights within arms) with a bootstrap over the history's
comparisons (``theta`` refitted), plus the *surrogacy error* variance ``tau2``: the
history's leave-one-experiment-out squared errors beyond their sampling noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.analysis import Scorecard
from recscope.experiments.metrics import AnalysisConfig
from recscope.results import Effect, Result

WIDEN = True
"""Default of ``widen`` (see :func:`fit_surrogate`): on the simulated history, widening
leaves intervals for changes like the history's as they were (grouped CV: mean width
0.39 either way) and brings those for kinds of change the history lacks from 68 to
85 of 90 covered, 76% to 94% (docs/long_run.md)."""

RIDGE = 1e-6
"""Ridge penalty, relative to each standardised feature's variance (numerical safety)."""

METHOD = ("surrogate index (experiment-level, noise-corrected; bootstrap over units and "
          "history experiments + surrogacy error)")


@dataclass
class UnitTable:
    """Per-unit surrogates (and, in a history, the long-run outcome) of one experiment."""

    name: str
    unit_ids: np.ndarray
    variants: np.ndarray
    features: list[str]
    x: np.ndarray
    y: np.ndarray | None = None


def unit_features(assignments: Any, events: Any, config: AnalysisConfig, *,
                  engine: Any = "duckdb", name: str = "experiment") -> UnitTable:
    """Per-unit values of every variable of ``config``'s metrics, computed in the engine.

    Features are named after their metric: ``clicks``; ratios give ``ctr.numerator`` and
    ``ctr.denominator``; ``cuped_days`` gives ``<metric>.pre``; covariates
    ``<metric>.cov.<column>``. Units in several variants or without one are left out.
    """
    from sqlglot import exp

    from recscope.experiments.engines import open_tables
    from recscope.experiments.sql import Plan, col

    if any(m.kind == "quantile" for m in config.metrics):
        bad = next(m.name for m in config.metrics if m.kind == "quantile")
        raise ConfigError("quantile metrics cannot be surrogates (use a mean)",
                          key=f"metrics.{bad}", file=config.source)
    eng, a_tbl, ev_tbls = open_tables(engine, assignments, events)
    plan = Plan(config.replace(segments=()), a_tbl, ev_tbls, eng.dialect)
    plan.apply_checks(eng.execute(plan.checks_sql())[0])
    names: dict[str, str] = {}
    for mp in plan.metrics:
        m = mp.metric
        for k, (v, (role, column)) in enumerate(zip(mp.variables, mp.roles, strict=True)):
            part = ("" if m.kind != "ratio" else
                    (".numerator" if k % 2 == 0 else ".denominator"))
            label = {"value": f"{m.name}{part}", "pre": f"{m.name}.pre{part}",
                     "cov": f"{m.name}.cov.{column}"}[role]
            names.setdefault(plan.canon[v], label)
    canon = list(names)
    sel = exp.select(exp.alias_(col("u", "u"), "unit"), exp.alias_(col("v", "u"), "v"),
                     *[exp.alias_(col(c, "u"), f"f{i}") for i, c in enumerate(canon)])
    sel = sel.from_("u").where(exp.EQ(this=col("nv", "u"), expression=exp.Literal.number(1)))
    sel = sel.order_by(col("u", "u"))
    rows = eng.execute(plan.with_unit_ctes(sel).sql(eng.dialect))
    if not rows:
        raise DataValidationError("no assigned unit", file=a_tbl.name, column=config.unit)
    x = np.array([[math.nan if r[f"f{i}"] is None else float(r[f"f{i}"])
                   for i in range(len(canon))] for r in rows], dtype=np.float64)
    bad_rows = ~np.isfinite(x)
    if bad_rows.any():
        i, j = np.argwhere(bad_rows)[0]
        raise DataValidationError(f"surrogate {names[canon[j]]!r} is missing (NULL/NaN) for "
                                  f"unit {rows[i]['unit']!r}", file=a_tbl.name)
    return UnitTable(name, np.array([r["unit"] for r in rows]),
                     np.array([str(r["v"]) for r in rows], dtype=object),
                     [names[c] for c in canon], x)


def attach_outcome(table: UnitTable, outcomes: pa.Table, column: str, *, unit: str,
                   file: str) -> UnitTable:
    """``table`` with the long-run outcome ``column`` of ``outcomes`` (one row per unit)."""
    if unit not in outcomes.column_names:
        raise DataValidationError(f"no unit column {unit!r}", file=file, column=unit)
    if column not in outcomes.column_names:
        raise DataValidationError(
            f"the long-run outcome {column!r} is not a column (have: "
            f"{', '.join(c for c in outcomes.column_names if c != unit)})", file=file,
            column=column)
    ids = outcomes.column(unit).to_numpy(zero_copy_only=False)
    if np.unique(ids).size != ids.size:
        raise DataValidationError("a unit has more than one row", file=file, column=unit)
    try:
        vals = pc.cast(outcomes.column(column), pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataValidationError("the long-run outcome must be numeric", file=file,
                                  column=column) from None
    order = np.argsort(ids, kind="stable")
    pos = np.minimum(np.searchsorted(ids[order], table.unit_ids), ids.size - 1)
    found = ids[order][pos] == table.unit_ids
    if not found.all():
        missing = table.unit_ids[~found]
        raise DataValidationError(f"{missing.size} assigned unit(s) have no row (e.g. unit "
                                  f"{missing[0]!r})", file=file, column=unit)
    y = vals[order][pos]
    if not np.isfinite(y).all():
        row = int(order[pos][~np.isfinite(y)][0])
        raise DataValidationError("the long-run outcome is missing (NULL/NaN)", file=file,
                                  column=column, row=row)
    return UnitTable(table.name, table.unit_ids, table.variants, table.features, table.x, y)


# ---------------------------------------------------------------------- the model
def _gram(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = np.column_stack([np.ones(x.shape[0]), x, y])
    return z.T @ z


def _solve(gram: np.ndarray) -> np.ndarray:
    """Intercept and coefficients from a Gram matrix of ``[1, x, y]`` (ridge on the
    centred features, scaled to their variance)."""
    p = gram.shape[0] - 2
    n = gram[0, 0]
    mean = gram[0, 1:p + 1] / n
    sxx = gram[1:p + 1, 1:p + 1] / n - np.outer(mean, mean)
    sxy = gram[1:p + 1, p + 1] / n - mean * gram[0, p + 1] / n
    lam = RIDGE * np.maximum(np.diag(sxx), 1e-12)
    beta = np.linalg.lstsq(sxx + np.diag(lam), sxy, rcond=None)[0]
    return np.concatenate([[gram[0, p + 1] / n - mean @ beta], beta])


def covariates(features: Sequence[str]) -> np.ndarray:
    """Which features are pre-period covariates rather than surrogates: a metric's
    ``cuped_days`` pre-period (``<metric>.pre``, ``<metric>.pre.numerator``) and its
    covariates (``<metric>.cov.<column>``)."""
    return np.array([f.endswith(".pre") or ".pre." in f or ".cov." in f
                     for f in features], dtype=bool)


def adjust(z: np.ndarray, treated: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``z`` (units × columns) regression-adjusted on its pre-period covariate columns
    ``cov`` (CUPED with several covariates): ``z − (P − mean P) · B``, ``B`` the OLS
    slopes of ``z`` on ``P`` pooled within arms. Differences of means keep their
    expectation (the pre-period is balanced by randomisation) and lose the variance the
    pre-period explains; the covariate columns' own differences become 0."""
    if not cov.any():
        return z
    p = z[:, cov]
    zc, pc = z.copy(), p.copy()
    for arm in (treated, ~treated):
        zc[arm] -= zc[arm].mean(axis=0)
        pc[arm] -= pc[arm].mean(axis=0)
    b = np.linalg.lstsq(pc, zc, rcond=None)[0]
    out = z - (p - p.mean(axis=0)) @ b
    out[:, cov] = p.mean(axis=0)  # exactly (not up to rounding) without any difference
    return out


def _effects(x: np.ndarray, y: np.ndarray, treated: np.ndarray,
             cov: np.ndarray | None = None,
             ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, float]:
    """Treatment − control differences of the surrogates' and the outcome's means, and
    their sampling (co)variances: ``dx``, ``dy``, ``V = Var(dx)``, ``C = Cov(dx, dy)``,
    ``Var(dy)``; with ``cov`` (a mask of pre-period covariate columns of ``x``) the
    surrogates and the outcome are first regression-adjusted on them (:func:`adjust`)."""
    z = np.column_stack([x, y])
    if cov is not None and cov.any():
        z = adjust(z, treated, np.concatenate([cov, [False]]))
    a, b = z[treated], z[~treated]
    d = a.mean(axis=0) - b.mean(axis=0)
    s = (np.atleast_2d(np.cov(a, rowvar=False)) / a.shape[0]
         + np.atleast_2d(np.cov(b, rowvar=False)) / b.shape[0])
    return d[:-1], float(d[-1]), s[:-1, :-1], s[:-1, -1], float(s[-1, -1])


def _theta(dx: np.ndarray, dy: np.ndarray, v: np.ndarray, c: np.ndarray,
           ridge: float) -> np.ndarray:
    """Experiment-level regression of long-run effects on short-run effects, corrected
    for the sampling noise of the short-run effects (method of moments: the summed
    sampling covariances are subtracted), with a ridge on standardised effects."""
    ss = np.diag(dx.T @ dx)
    live = ss > 1e-24 * max(float(ss.max(initial=0.0)), 1e-300)
    if not live.all():  # columns that never move (adjusted covariates): weight 0
        out = np.zeros(dx.shape[1])
        if live.any():
            out[live] = _theta(dx[:, live], dy, v[:, live][:, :, live], c[:, live], ridge)
        return out
    a = dx.T @ dx - v.sum(axis=0)
    b = dx.T @ dy - c.sum(axis=0)
    scale = np.sqrt(np.maximum(ss / max(dx.shape[0], 1), 1e-300))
    a_s = a / np.outer(scale, scale)
    lam = ridge * dx.shape[0]
    w, vecs = np.linalg.eigh((a_s + a_s.T) / 2)
    # directions the noise correction leaves without signal are not identified: dropped
    keep = w > 1e-6 * max(float(w.max()), 1e-300)
    coef_s = vecs[:, keep] @ ((vecs[:, keep].T @ (b / scale)) / (w[keep] + lam))
    return coef_s / scale


def mahalanobis2(ref: np.ndarray, x: np.ndarray) -> float:
    """Squared Mahalanobis distance of the short-run effects ``x`` from the rows of
    ``ref`` (a history's comparisons), with the pseudo-inverse of their covariance:
    directions the history never moved count only through the components it did
    measure. About the number of surrogates for a change like the history's."""
    cov = np.atleast_2d(np.cov(ref, rowvar=False))
    diff = np.asarray(x, dtype=np.float64) - ref.mean(axis=0)
    return float(diff @ np.linalg.pinv(cov, rcond=1e-8, hermitian=True) @ diff)


@dataclass
class LooErrors:
    """Leave-one-comparison-out on a history: per comparison the projection from the
    others, the sampling variance of its error, and its distance from the others."""

    projected: np.ndarray
    noise: np.ndarray
    distance: np.ndarray


def loo_errors(dx: np.ndarray, dy: np.ndarray, v: np.ndarray, c: np.ndarray,
               var_dy: np.ndarray, ridge: float) -> LooErrors:
    """Each comparison projected by the map fitted on the others (``theta`` refitted),
    with the sampling variance of ``dy − theta · dx`` and the comparison's Mahalanobis
    distance from the others' short-run effects."""
    proj, noise, dist = [], [], []
    for k in range(dx.shape[0]):
        keep = np.arange(dx.shape[0]) != k
        th = _theta(dx[keep], dy[keep], v[keep], c[keep], ridge)
        proj.append(float(th @ dx[k]))
        noise.append(float(var_dy[k] + th @ v[k] @ th - 2 * th @ c[k]))
        dist.append(mahalanobis2(dx[keep], dx[k]))
    return LooErrors(np.array(proj), np.array(noise), np.array(dist))


def surrogacy_error(excess: np.ndarray, distance: np.ndarray) -> tuple[float, float, float]:
    """The surrogacy error variance from a history's leave-one-out *excess* squared
    errors (squared error minus sampling variance): ``tau2`` (their mean, at least 0)
    and the line ``tau2(d²) = a + b · d²`` (``b ≥ 0``, ``a ≥ 0``) fitted by least
    squares against the comparisons' distances, so that a change far from the history
    is given the error the history itself shows for its far-out comparisons."""
    tau2 = max(0.0, float(excess.mean()))
    if excess.size < 3 or np.ptp(distance) <= 0:
        return tau2, tau2, 0.0
    design = np.column_stack([np.ones(distance.size), distance])
    b = max(float(np.linalg.lstsq(design, excess, rcond=None)[0][1]), 0.0)
    a = max(float(excess.mean() - b * distance.mean()), 0.0)
    return tau2, a, b


@dataclass
class SurrogateModel(Result):
    """A fitted surrogate index and what the history says about it.

    Two stages. ``coef`` (intercept then one per feature): the unit-level surrogate
    index ``E[Y | S]`` pooled over the history's units (Athey et al.), kept as a
    diagnostic (``unit_level`` in projections, ``r2``). ``theta`` (one per feature): the
    experiment-level map from short-run effects to the long-run effect, fitted across
    the history's comparisons with the short-run effects' sampling noise removed — the
    projection uses it, because when the treatment's effect keeps compounding after the
    surrogates are read (satisfaction into retention) the unit-level relation across
    users attenuates it. ``experiments``: per history comparison its short-run effects
    ``dx`` with sampling covariance ``V``/``C``, observed long-run effect and
    leave-one-experiment-out projection (:meth:`effects` shows them). ``tau2``: the
    surrogacy error variance (leave-one-out squared error beyond sampling noise);
    ``tau2_intercept`` + ``tau2_slope`` · d²: the same against each comparison's
    Mahalanobis distance d² from the others (used when ``widen``).
    ``history_max_distance``: the largest such leave-one-out d², the edge of the
    history's range — a new change further out is flagged as an extrapolation.
    ``metrics_toml``: the surrogates' definitions, applied unchanged to new experiments.
    """

    kind: ClassVar[str] = "surrogate_model"
    title: ClassVar[str] = "Surrogate index: history experiments, observed vs projected"

    long: str
    metric: str
    features: list[str]
    coef: list[float]
    theta: list[float]
    ridge: float
    tau2: float
    control: str
    long_control_mean: float
    metrics_toml: str
    experiments: list[dict[str, Any]]
    n_units: int
    r2: float
    sources: list[str] = field(default_factory=list)
    tau2_intercept: float = math.nan
    tau2_slope: float = 0.0
    history_max_distance: float = math.nan
    widen: bool = False
    cuped: bool = False

    def effects(self) -> list[Effect]:
        return [Effect(self.long, e["projected"], n=e["n"], extra={
            "experiment": e["name"], "variant": e["variant"], "observed": e["observed"],
            "observed_se": math.sqrt(e["observed_var"]),
            "error": e["observed"] - e["projected"],
            "distance": e.get("distance", math.nan)}) for e in self.experiments]

    def notes(self) -> list[str]:
        out = [f"{len(self.experiments)} history comparisons, {self.n_units:,} units; "
               f"unit-level R² = {self.r2:.3f}; surrogacy error sd = "
               f"{math.sqrt(self.tau2):.4g} (leave-one-experiment-out, beyond sampling "
               "noise). 'estimate' is the leave-one-out projection, 'distance' the "
               "comparison's Mahalanobis d² from the others."]
        if math.isfinite(self.history_max_distance):
            moving = int((~covariates(self.features)).sum()) if self.cuped else len(
                self.features)
            out.append(f"History range: leave-one-out d² up to "
                       f"{self.history_max_distance:.3g} for {moving} "
                       "surrogates; a new change further out is flagged as an "
                       "extrapolation. Surrogacy error variance against d²: "
                       f"{self.tau2_intercept:.3g} + {self.tau2_slope:.3g} · d² "
                       f"({'used' if self.widen else 'not used'} for intervals).")
            if len(self.experiments) <= moving:
                out.append(f"Only {len(self.experiments)} history comparisons for {moving} "
                           "surrogates: the distance sees only the directions the history "
                           "moved, so a change moving in another is not flagged. More "
                           "comparisons than surrogates make the flag reliable.")
        return out

    def max_distance(self) -> float:
        """``history_max_distance`` (recomputed from the comparisons' effects for a
        model written before it was stored)."""
        if math.isfinite(self.history_max_distance):
            return self.history_max_distance
        dx = self._arrays()[0]
        keep = ~np.eye(dx.shape[0], dtype=bool)
        return max(mahalanobis2(dx[keep[k]], dx[k]) for k in range(dx.shape[0]))

    def surrogacy_var(self, distance: float) -> float:
        """The surrogacy error variance of a projection at Mahalanobis ``distance``:
        ``tau2``, or with ``widen`` ``tau2_intercept + tau2_slope · distance``."""
        if self.widen and math.isfinite(self.tau2_intercept) and math.isfinite(distance):
            return self.tau2_intercept + self.tau2_slope * distance
        return self.tau2

    def _arrays(self) -> tuple[np.ndarray, ...]:
        e = self.experiments
        return (np.array([x["dx"] for x in e]), np.array([x["observed"] for x in e]),
                np.array([x["V"] for x in e]), np.array([x["C"] for x in e]))

    # -- applying -------------------------------------------------------------------------
    def project(self, table: UnitTable, *, n_boot: int = 1000, seed: int = 0,
                alpha: float = 0.05, control: str | None = None) -> list[Effect]:
        """Projected long-run effect of every treatment of ``table`` against its control.

        ``estimate`` = ``theta`` · (treatment − control surrogate means); the interval is
        the percentile interval of a bootstrap over the new experiment's units (Poisson
        weights) and the history's comparisons (``theta`` refitted), each draw plus a
        normal surrogacy error of variance :meth:`surrogacy_var`. ``se`` is the sd of
        the draws. ``extra``: ``unit_level`` (the unit-level index's projection, for
        comparison); ``distance`` (Mahalanobis d² of the change's short-run effects from
        the history's), ``history_max_distance`` and ``extrapolation`` (the change lies
        beyond every history comparison's leave-one-out distance: the projection
        extrapolates the history's linear map to a kind of change it has not seen).
        """
        table = check_features(self, table)
        ctrl = control or self.control
        theta = np.asarray(self.theta)
        rng = np.random.default_rng(seed)
        dx, dy, v, c = self._arrays()
        k = dx.shape[0]
        picks = rng.integers(0, k, size=(n_boot, k))
        boot = np.array([_theta(dx[p], dy[p], v[p], c[p], self.ridge) for p in picks])
        in_c = table.variants == ctrl
        if not in_c.any():
            raise DataValidationError(f"control variant {ctrl!r} not found in the data",
                                      file=table.name)
        cov = covariates(self.features) if self.cuped else np.zeros(0, dtype=bool)
        edge = self.max_distance()
        wc = rng.poisson(1.0, size=(n_boot, int(in_c.sum()))).astype(np.float64)
        out = []
        for var in sorted(set(table.variants) - {ctrl}):
            xt, xc = table.x[table.variants == var], table.x[in_c]
            if cov.any():  # the same regression adjustment as the history's effects
                both = np.concatenate([xt, xc])
                arm = np.arange(both.shape[0]) < xt.shape[0]
                both = adjust(both, arm, cov)
                xt, xc = both[arm], both[~arm]
            mc = (wc @ xc) / np.maximum(wc.sum(axis=1), 1.0)[:, None]
            diff = xt.mean(axis=0) - xc.mean(axis=0)
            est = float(theta @ diff)
            d2 = mahalanobis2(dx, diff)
            tau2 = self.surrogacy_var(d2)
            wt = rng.poisson(1.0, size=(n_boot, xt.shape[0])).astype(np.float64)
            mt = (wt @ xt) / np.maximum(wt.sum(axis=1), 1.0)[:, None]
            draws = np.einsum("bp,bp->b", boot, mt - mc)
            draws = draws + rng.normal(0.0, math.sqrt(max(tau2, 0.0)), n_boot)
            centred = draws - draws.mean() + est
            lo, hi = np.quantile(centred, [alpha / 2, 1 - alpha / 2])
            se = float(draws.std(ddof=1))
            p = math.erfc(abs(est / se) / math.sqrt(2)) if se > 0 else math.nan
            out.append(Effect(self.long, est, float(lo), float(hi), se, p,
                              int(xt.shape[0] + xc.shape[0]), extra={
                                  "variant": var, "method": METHOD, "for_metric": self.metric,
                                  "unit_level": float(np.asarray(self.coef)[1:] @ diff),
                                  "surrogacy_sd": math.sqrt(max(tau2, 0.0)),
                                  "widened": bool(self.widen),
                                  "distance": d2,
                                  "history_max_distance": edge,
                                  "extrapolation": bool(d2 > edge),
                                  "n_boot": n_boot, "history_comparisons": k}))
        return out


def check_features(model: SurrogateModel, table: UnitTable) -> UnitTable:
    """``table`` with the model's surrogates in the model's order; a surrogate the new
    experiment lacks is an error naming it."""
    missing = [f for f in model.features if f not in table.features]
    if missing:
        raise DataValidationError(f"surrogate {missing[0]!r} of the long-run model is "
                                  "missing from this experiment", file=table.name)
    idx = [table.features.index(f) for f in model.features]
    return UnitTable(table.name, table.unit_ids, table.variants, list(model.features),
                     table.x[:, idx], table.y)


def fit_surrogate(history: Sequence[UnitTable], *, long: str, metric: str | None = None,
                  control: str = "control", metrics_toml: str = "",
                  ridge: float = 0.03, widen: bool = WIDEN,
                  cuped: bool = True) -> SurrogateModel:
    """Fit the surrogate index on ``history`` (each with its outcome ``y``).

    Every history table needs the same features, a control and at least one treatment;
    at least 3 comparisons (more than features is better: ``ridge``, on standardised
    effects and per comparison, keeps a short history stable). ``widen``: projections
    use the distance-dependent surrogacy error ``tau2(d²)`` instead of the constant
    ``tau2`` (both are stored; see :meth:`SurrogateModel.project`). ``cuped``: every
    experiment's effects (history and new) are regression-adjusted on the pre-period
    covariates among the features (:func:`covariates`), which then carry no weight in
    the map; this removes much of the sampling noise of projections and of the
    history's observed long-run effects.
    """
    feats = history[0].features if history else []
    for h in history:
        if h.y is None:
            raise DataValidationError("no long-run outcome", file=h.name)
        if h.features != feats:
            raise DataValidationError("its surrogates differ from the first history's",
                                      file=h.name)
        if not (h.variants == control).any():
            raise DataValidationError(f"no unit in the control variant {control!r}",
                                      file=h.name)
    comps: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    for h in history:
        for v in sorted(set(h.variants) - {control}):
            sel = (h.variants == v) | (h.variants == control)
            if min(int((h.variants == v).sum()), int((h.variants == control).sum())) < 2:
                raise DataValidationError(f"fewer than 2 units in {v!r} or the control",
                                          file=h.name)
            comps.append((h.name, v, sel, h.variants[sel] == v))
    if len(comps) < 3:
        raise ConfigError(f"a surrogate index needs at least 3 history comparisons (got "
                          f"{len(comps)})", key="--history")
    by_name = {h.name: h for h in history}
    cov = covariates(feats) if cuped else None
    stats = [_effects(by_name[n].x[sel], by_name[n].y[sel], t, cov)  # type: ignore[index]
             for n, _v, sel, t in comps]
    dx = np.array([s[0] for s in stats])
    dy = np.array([s[1] for s in stats])
    vv = np.array([s[2] for s in stats])
    cc = np.array([s[3] for s in stats])
    theta = _theta(dx, dy, vv, cc, ridge)
    loo = loo_errors(dx, dy, vv, cc, np.array([s[4] for s in stats]), ridge)
    exps: list[dict[str, Any]] = []
    for k, ((name, v, sel, _t), st) in enumerate(zip(comps, stats, strict=True)):
        exps.append({"name": name, "variant": v, "n": int(sel.sum()),
                     "observed": st[1], "projected": float(loo.projected[k]),
                     "observed_var": st[4], "error_var": float(loo.noise[k]),
                     "distance": float(loo.distance[k]), "dx": st[0].tolist(),
                     "V": st[2].tolist(), "C": st[3].tolist()})
    tau2, tau2_a, tau2_b = surrogacy_error((dy - loo.projected) ** 2 - loo.noise,
                                           loo.distance)
    grams = np.sum([_gram(h.x, h.y) for h in history], axis=0)  # type: ignore[arg-type]
    coef = _solve(grams)
    y_all = np.concatenate([h.y for h in history])  # type: ignore[misc]
    x_all = np.concatenate([h.x for h in history])
    resid = y_all - coef[0] - x_all @ coef[1:]
    r2 = float(1 - resid.var() / y_all.var()) if y_all.var() > 0 else math.nan
    ctrl_y = np.concatenate([h.y[h.variants == control] for h in history])  # type: ignore[index]
    return SurrogateModel(long=long, metric=metric or long, features=list(feats),
                          coef=coef.tolist(), theta=theta.tolist(), ridge=ridge, tau2=tau2,
                          control=control, long_control_mean=float(ctrl_y.mean()),
                          metrics_toml=metrics_toml, experiments=exps,
                          n_units=int(grams[0, 0]), r2=r2,
                          sources=[h.name for h in history], tau2_intercept=tau2_a,
                          tau2_slope=tau2_b,
                          history_max_distance=float(loo.distance.max()), widen=widen,
                          cuped=bool(cuped and covariates(feats).any()))


MODEL_FILE = "model.json"


def load_model(path: str | Path) -> SurrogateModel:
    """A model folder written by ``recscope longrun fit`` (its ``model.json``)."""
    p = Path(path)
    f = p / MODEL_FILE if p.is_dir() else p
    if not f.is_file():
        raise ConfigError(f"no {MODEL_FILE} here (write one with recscope longrun fit)",
                          key="--long-run", file=str(p))
    return SurrogateModel.load(f)


# ---------------------------------------------------------------------- scorecard
@dataclass
class LongRunScorecard(Scorecard):
    """A scorecard whose rows may carry a ``long_run`` object (``estimate``, ``ci_low``,
    ``ci_high``, ``se``, ``method``, ``outcome``), shown beside the short-run effect;
    ``long_run`` lists every projection (also those of metrics not in the scorecard)."""

    long_run: list[Effect] = field(default_factory=list)

    def rich_table(self) -> Any:
        from rich.console import Group

        from recscope.report.tables import rich_table

        lr = rich_table([{"outcome": e.metric, "variant": e.extra["variant"],
                          "for metric": e.extra["for_metric"], "estimate": e.estimate,
                          "ci_low": e.ci_low, "ci_high": e.ci_high, "se": e.se,
                          "distance d²": e.extra.get("distance"),
                          "history max d²": e.extra.get("history_max_distance"),
                          "extrapolation": "YES" if e.extra.get("extrapolation") else "no"}
                         for e in self.long_run], title="Projected long-run effects "
                        "(surrogate index)")
        return Group(super().rich_table(), lr)

    def notes(self) -> list[str]:
        """The scorecard's banners, and one per projection that extrapolates."""
        out = super().notes()
        for e in self.long_run:
            if e.extra.get("extrapolation"):
                out.append(
                    f"Long-run projection of {e.metric} for {e.extra['variant']} is an "
                    f"extrapolation: the change's short-run effects lie at Mahalanobis "
                    f"d² = {e.extra['distance']:.3g} from the history's, beyond its "
                    f"range (d² up to {e.extra['history_max_distance']:.3g}); the "
                    "history has no change of this kind, so the projection and its "
                    "interval rest on extending its linear map"
                    + (" (interval widened with d²)." if e.extra.get("widened")
                       else " (interval not widened: treat it as too narrow)."))
        return out

    def _display(self, e: Effect) -> dict[str, Any]:
        out = super()._display(e)
        lr = e.extra.get("long_run")
        if lr:
            out["long run [CI]"] = (f"{lr['outcome']}: {lr['estimate']:+.4g} "
                                    f"[{lr['ci_low']:+.4g}, {lr['ci_high']:+.4g}]"
                                    + (" (extrapolation)" if lr.get("extrapolation")
                                       else ""))
        return out


def add_long_run(card: Scorecard, projections: Sequence[Effect]) -> LongRunScorecard:
    """``card`` with each projection attached to its metric's row of the same variant."""
    rows = []
    for e in card.results:
        extra = dict(e.extra)
        for pr in projections:
            if pr.extra["for_metric"] == e.metric and pr.extra["variant"] == extra["variant"]:
                extra["long_run"] = {"estimate": pr.estimate, "ci_low": pr.ci_low,
                                     "ci_high": pr.ci_high, "se": pr.se,
                                     "method": pr.extra["method"], "outcome": pr.metric,
                                     "extrapolation": pr.extra.get("extrapolation"),
                                     "distance": pr.extra.get("distance"),
                                     "history_max_distance":
                                         pr.extra.get("history_max_distance")}
        rows.append(Effect(e.metric, e.estimate, e.ci_low, e.ci_high, e.se, e.p_value, e.n,
                           extra))
    return LongRunScorecard(results=rows, srm=card.srm, data_checks=card.data_checks,
                            segment_results=card.segment_results, config=card.config,
                            sql=card.sql, long_run=list(projections))


__all__ = ["LongRunScorecard", "LooErrors", "SurrogateModel", "UnitTable", "add_long_run",
           "adjust", "attach_outcome", "check_features", "covariates", "fit_surrogate",
           "load_model", "loo_errors",
           "mahalanobis2", "surrogacy_error", "unit_features"]
