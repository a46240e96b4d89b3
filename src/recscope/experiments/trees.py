"""Metric trees: a parent metric as a product or sum of child metrics, and the
decomposition of the parent's relative effect into the children's contributions.

Declared in the metrics TOML next to ``[metrics.*]``::

    [trees.saves]
    parent = "saves"                      # saves per user
    op = "product"                        # or "sum"
    children = ["requests", "impressions_per_request", "saves_per_impression"]
    by = { column = "surface", values = ["home_feed", "related", "search"] }   # optional

Every name is a metric of the same file (``mean``, ``proportion``, ``count_distinct`` or
``ratio``; quantiles are not decomposable). With ``by``, each metric is also computed on the
events of each value of ``column`` (its ``filter`` gains ``column = value``): the parent is
the sum over values of the per-value parents, and each per-value parent is the product (or
sum) of the per-value children. Both identities are checked on the data in every arm to a
relative 1e-9, or :class:`~recscope.errors.ConfigError` names the file and the tree.

The decomposition (no CUPED: the raw estimates, so the identities hold exactly):

- ``product``: with ``L_i = log(child_i,t / child_i,c)`` and ``S = sum L_i`` the parent's
  relative effect is ``r = e^S - 1`` and child ``i`` contributes ``L_i (e^S - 1) / S``
  (log-additive, shared in proportion to the log-ratios); with ``by``, value ``s``
  contributes ``w_s (e^{S_s} - 1)`` where ``w_s`` is its share of the parent in control,
  split among its children the same way.
- ``sum``: child ``i`` contributes ``(child_i,t - child_i,c) / parent_c``.

The contributions add up to the parent's relative effect exactly. Their standard errors
come from the delta method on the joint per-variant moments (means and covariance matrix of
every per-unit variable of every metric in the tree, computed in the engine by one SQL
query): the gradient of each contribution with respect to the control and treatment means
``g_c, g_t`` gives ``var = g_c' S_c g_c / n_c + g_t' S_t g_t / n_t``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BeforeValidator, ConfigDict, model_validator
from scipy import special

from recscope.config import StrictModel, validate
from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.metrics import AnalysisConfig, Metric, parse_metrics
from recscope.experiments.moments import Moments, Term, term_gradient, term_value
from recscope.io import read_toml
from recscope.results import Effect, Result

TOLERANCE = 1e-9
"""Relative tolerance of the tree identities (children make the parent) on the data."""

DECOMPOSABLE = ("mean", "proportion", "count_distinct", "ratio")


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class Breakdown(StrictModel):
    """Per-surface / per-funnel-step breakdown: the events column and its values."""

    model_config = ConfigDict(frozen=True)

    column: str
    values: Annotated[tuple[str | int, ...], BeforeValidator(_tuple)]

    @model_validator(mode="after")
    def _check(self) -> Breakdown:
        if not self.column:
            raise ValueError("column must be a non-empty string")
        if len(self.values) < 1 or len(set(self.values)) != len(self.values):
            raise ValueError("values must be a non-empty list without repeats")
        return self


class TreeSpec(StrictModel):
    """One ``[trees.NAME]`` table: ``parent = op(children)``, optionally ``by`` a column."""

    model_config = ConfigDict(frozen=True)

    parent: str
    op: Literal["product", "sum"]
    children: Annotated[tuple[str, ...], BeforeValidator(_tuple)]
    by: Breakdown | None = None

    @model_validator(mode="after")
    def _check(self) -> TreeSpec:
        if not self.children:
            raise ValueError("children must name at least one metric")
        if len(set(self.children)) != len(self.children):
            raise ValueError("children must not repeat")
        if self.parent in self.children:
            raise ValueError("the parent cannot be its own child")
        return self


def parse_trees(data: Any, *, file: str | None = None) -> dict[str, TreeSpec]:
    """The ``trees`` table of a metrics TOML, validated (errors name file and key)."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError("must be a table of [trees.NAME] tables", key="trees", file=file)
    out: dict[str, TreeSpec] = {}
    for name, spec in data.items():
        out[str(name)] = validate(TreeSpec, spec, file=file, prefix=f"trees.{name}")
    return out


def load_metrics_with_trees(path: str | Path) -> tuple[AnalysisConfig, dict[str, TreeSpec]]:
    """A metrics TOML's analysis config and its trees (checked against the metrics)."""
    data = dict(read_toml(Path(path), "metrics"))
    source = str(Path(path))
    trees = parse_trees(data.pop("trees", None), file=source)
    config = parse_metrics(data, source=source)
    for name, tree in trees.items():
        check_tree(config, name, tree)
    return config, trees


def check_tree(config: AnalysisConfig, name: str, tree: TreeSpec) -> None:
    """Every metric the tree names exists and can be decomposed."""
    metrics = {m.name: m for m in config.metrics}
    for role, metric in [("parent", tree.parent)] + [("children", c) for c in tree.children]:
        if metric not in metrics:
            raise ConfigError(f"metric {metric!r} is not defined in [metrics]",
                              key=f"trees.{name}.{role}", file=config.source)
        kind = metrics[metric].kind
        if kind not in DECOMPOSABLE:
            raise ConfigError(f"metric {metric!r} is a {kind} metric; trees take "
                              f"{', '.join(DECOMPOSABLE)}", key=f"trees.{name}.{role}",
                              file=config.source)
        if tree.by is not None and tree.by.column in metrics[metric].filter:
            raise ConfigError(f"metric {metric!r} already filters on {tree.by.column!r}",
                              key=f"trees.{name}.by.column", file=config.source)


def part_name(metric: str, value: str | int) -> str:
    """Name of a metric restricted to one breakdown value."""
    return f"{metric}@{value}"


def tree_metrics(config: AnalysisConfig, tree: TreeSpec) -> list[Metric]:
    """The metrics a tree needs: parent, children and, with ``by``, their per-value copies."""
    metrics = {m.name: m for m in config.metrics}
    names = [tree.parent, *tree.children]
    out = [metrics[n] for n in names]
    if tree.by is not None:
        for value in tree.by.values:
            for n in names:
                m = metrics[n]
                data = m.model_dump()
                data.update(name=part_name(n, value),
                            filter={**m.filter, tree.by.column: (value,)})
                out.append(Metric(**data))
    return out


# ---------------------------------------------------------------------- joint moments


@dataclass(frozen=True)
class JointMoments:
    """Per-variant moments of every per-unit variable of a set of metrics, and each
    metric's term (indices into those variables)."""

    by_variant: dict[str, Moments]
    terms: dict[str, Term]


def joint_moments(assignments: Any, events: Any, config: AnalysisConfig,
                  metrics: Sequence[Metric], *, engine: Any = "duckdb") -> JointMoments:
    """Means and the full covariance matrix of the metrics' per-unit variables per
    variant, from one SQL statement run by the engine (units in several variants are
    excluded as in ``analyze``).

    The per-unit aggregation is the experiments package's own (:class:`Plan`), so every
    metric means here exactly what it means in a scorecard.
    """
    from sqlglot import exp

    from recscope.experiments.engines import open_tables
    from recscope.experiments.sql import Plan, col

    cfg = config.replace(metrics=tuple(metrics), segments=())
    cfg = cfg.replace(metrics=tuple(m.model_copy(update={"covariates": (), "cuped_days": None})
                                    for m in cfg.metrics))
    eng, a_tbl, ev_tbls = open_tables(engine, assignments, events)
    plan = Plan(cfg, a_tbl, ev_tbls, eng.dialect)
    plan.apply_checks(eng.execute(plan.checks_sql())[0])
    # Plan's per-unit CTEs and canonical variable names (no public joint-covariance query
    # yet; requested from the experiments package).
    names = plan._needed(None)
    sel = exp.select(exp.alias_(col("v", "u"), "v"),
                     exp.alias_(exp.Count(this=exp.Star()), "n"))
    for i, n in enumerate(names):
        sel = sel.select(exp.alias_(exp.Avg(this=col(n, "u")), f"m{i}"))
    for i, a in enumerate(names):
        for j in range(i, len(names)):
            b = names[j]
            agg = (exp.func("VAR_SAMP", col(a, "u")) if i == j
                   else exp.func("COVAR_SAMP", col(a, "u"), col(b, "u")))
            sel = sel.select(exp.alias_(agg, f"c{i}_{j}"))
    sel = sel.from_("u").group_by(col("v", "u"))
    rows = eng.execute(plan._with_ctes(sel).sql(eng.dialect))
    p = len(names)
    out: dict[str, Moments] = {}
    for r in rows:
        if r["v"] is None:
            continue
        mean = np.array([_num(r[f"m{i}"]) for i in range(p)])
        cov = np.zeros((p, p))
        for i in range(p):
            for j in range(i, p):
                cov[i, j] = cov[j, i] = _num(r[f"c{i}_{j}"], 0.0)
        out[str(r["v"])] = Moments(float(r["n"]), mean, cov)
    pos = {n: i for i, n in enumerate(names)}
    terms: dict[str, Term] = {}
    for mp in plan.metrics:
        num, den = mp.term
        terms[mp.metric.name] = (pos[plan.canon[mp.variables[num]]],
                                 None if den is None else pos[plan.canon[mp.variables[den]]])
    return JointMoments(out, terms)


def _num(value: Any, default: float = math.nan) -> float:
    return default if value is None else float(value)


# ---------------------------------------------------------------------- decomposition


def _f(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``f(S) = (e^S - 1) / S`` and its derivative, with their limits near 0."""
    small = np.abs(s) < 1e-5
    safe = np.where(small, 1.0, s)
    f = np.where(small, 1 + s / 2 + s * s / 6, np.expm1(safe) / safe)
    fp = np.where(small, 0.5 + s / 3 + s * s / 8,
                  (safe * np.exp(safe) - np.expm1(safe)) / (safe * safe))
    return f, fp


def contributions(op: str, control: np.ndarray, treatment: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contributions of each (part, child) to the parent's relative effect.

    ``control`` and ``treatment`` are (parts, children) arrays of the children's values
    (one part without a breakdown). Returns the (parts, children) contributions and their
    Jacobians with respect to the control and treatment values, each of shape
    (parts, children, parts, children).
    """
    c = np.asarray(control, dtype=float)
    t = np.asarray(treatment, dtype=float)
    n_p, n_k = c.shape
    eye_k = np.eye(n_k)
    eye_p = np.eye(n_p)
    if op == "sum":
        total = c.sum()
        d = t - c
        contrib = d / total
        d_t = np.einsum("sr,ij->sirj", eye_p, eye_k) / total
        d_c = -d_t - (d / total**2)[:, :, None, None] * np.ones((1, 1, n_p, n_k))
        return contrib, d_c, d_t
    if not (np.all(c > 0) and np.all(t > 0)):
        raise DataValidationError("a product tree needs positive child values in every arm "
                                  "(log-additive decomposition)")
    log_ratio = np.log(t) - np.log(c)
    s = log_ratio.sum(axis=1)
    f, fp = _f(s)
    q = np.exp(np.log(c).sum(axis=1))
    w = q / q.sum()
    contrib = log_ratio * (f * w)[:, None]
    # d contrib[s,i] / d L[s,j] = (delta_ij f_s + L_si f'_s) w_s
    d_l = (eye_k[None, :, :] * f[:, None, None] + log_ratio[:, :, None] * fp[:, None, None]
           ) * w[:, None, None]                                  # (s, i, j)
    d_t = np.einsum("sij,sr->sirj", d_l / t[:, None, :], eye_p)
    d_c = -np.einsum("sij,sr->sirj", d_l / c[:, None, :], eye_p)
    # through the weights: d w_s / d c[r,j] = w_s (delta_sr - w_r) / c[r,j]
    dw = (w[:, None, None] * (eye_p[:, :, None] - w[None, :, None]) / c[None, :, :])
    d_c += (log_ratio * f[:, None])[:, :, None, None] * dw[:, None, :, :]
    return contrib, d_c, d_t


@dataclass(frozen=True)
class TreeEstimate:
    """A tree's decomposition for one treatment: rows of contributions with intervals."""

    rows: list[Effect]
    direct_rel_effect: float
    max_gap: float


def decompose(name: str, tree: TreeSpec, mc: Moments, mt: Moments, terms: Mapping[str, Term],
              *, variant: str, alpha: float = 0.05, source: str | None = None,
              control_name: str = "control") -> TreeEstimate:
    """Decompose the parent's relative effect (treatment ``mt`` against control ``mc``).

    Checks the tree's identities in both arms first (:data:`TOLERANCE`).
    """
    parts = [None] if tree.by is None else list(tree.by.values)

    def tname(metric: str, part: str | int | None) -> str:
        return metric if part is None else part_name(metric, part)

    grid = [[terms[tname(ch, p)] for ch in tree.children] for p in parts]
    for arm, m in ((control_name, mc), (variant, mt)):
        _check_identity(name, tree, m, terms, parts, arm, source)
    cval = np.array([[term_value(mc, tr) for tr in row] for row in grid])
    tval = np.array([[term_value(mt, tr) for tr in row] for row in grid])
    gc = np.array([[term_gradient(mc, tr) for tr in row] for row in grid])  # (s, k, p)
    gt = np.array([[term_gradient(mt, tr) for tr in row] for row in grid])
    contrib, d_c, d_t = contributions(tree.op, cval, tval)
    # gradients of each contribution with respect to the variables' means
    grad_c = np.einsum("sirj,rjv->siv", d_c, gc)
    grad_t = np.einsum("sirj,rjv->siv", d_t, gt)
    parent_term = terms[tree.parent]
    parent_c, parent_t = term_value(mc, parent_term), term_value(mt, parent_term)
    direct = parent_t / parent_c - 1
    z = float(-special.ndtri(alpha / 2))
    n = mc.n + mt.n
    n_p, n_k = contrib.shape

    def row(weights: np.ndarray, metric: str, level: str, extra: dict[str, Any]) -> Effect:
        est = float((weights * contrib).sum())
        g_c = np.einsum("si,siv->v", weights, grad_c)
        g_t = np.einsum("si,siv->v", weights, grad_t)
        var = float(g_c @ mc.cov @ g_c / mc.n + g_t @ mt.cov @ g_t / mt.n)
        se = math.sqrt(max(var, 0.0))
        p = float(2 * special.ndtr(-abs(est) / se)) if se > 0 else math.nan
        return Effect(metric, est, est - z * se, est + z * se, se, p, n, extra={
            "tree": name, "parent": tree.parent, "op": tree.op, "variant": variant,
            "level": level, "abs_contribution": est * parent_c, **extra})

    rows = [row(np.ones((n_p, n_k)), tree.parent, "parent",
                {"child": None, "part": None, "direct_rel_effect": direct,
                 "control_value": parent_c, "treatment_value": parent_t})]
    for i, child in enumerate(tree.children):
        w = np.zeros((n_p, n_k))
        w[:, i] = 1.0
        ct, cc = term_value(mt, terms[child]), term_value(mc, terms[child])
        rows.append(row(w, child, "child", {"child": child, "part": None,
                                            "child_rel_effect": ct / cc - 1,
                                            "control_value": cc, "treatment_value": ct}))
    if tree.by is not None:
        for s, part in enumerate(parts):
            w = np.zeros((n_p, n_k))
            w[s, :] = 1.0
            pt = tname(tree.parent, part)
            pc_s, pt_s = term_value(mc, terms[pt]), term_value(mt, terms[pt])
            rows.append(row(w, pt, "part", {
                "child": None, "part": part, "share_of_parent": pc_s / parent_c,
                "part_rel_effect": pt_s / pc_s - 1 if pc_s else math.nan,
                "control_value": pc_s, "treatment_value": pt_s}))
            for i, child in enumerate(tree.children):
                w = np.zeros((n_p, n_k))
                w[s, i] = 1.0
                rows.append(row(w, tname(child, part), "part_child", {
                    "child": child, "part": part,
                    "child_rel_effect": tval[s, i] / cval[s, i] - 1 if cval[s, i] else math.nan,
                    "control_value": float(cval[s, i]), "treatment_value": float(tval[s, i])}))
    total = rows[0].estimate
    gap = abs(total - direct)
    return TreeEstimate(rows, direct, gap)


def _rel_gap(a: float, b: float) -> float:
    scale = max(abs(a), abs(b), 1e-300)
    return abs(a - b) / scale


def _check_identity(name: str, tree: TreeSpec, m: Moments, terms: Mapping[str, Term],
                    parts: Sequence[str | int | None], arm: str, source: str | None) -> None:
    combine = math.prod if tree.op == "product" else math.fsum
    verb = "multiply" if tree.op == "product" else "sum"
    total = 0.0
    for part in parts:
        sfx = "" if part is None else f"@{part}"
        kids = [term_value(m, terms[c + sfx]) for c in tree.children]
        value = combine(kids)
        parent = term_value(m, terms[tree.parent + sfx])
        total += parent
        if not _rel_gap(value, parent) <= TOLERANCE:
            where = "" if part is None else f" on {tree.by.column} = {part!r}"  # type: ignore[union-attr]
            raise ConfigError(
                f"children {verb} to {value:.12g} but parent {tree.parent!r} is {parent:.12g}"
                f"{where} in arm {arm!r} (relative gap {_rel_gap(value, parent):.2e} > "
                f"{TOLERANCE:g})", key=f"trees.{name}", file=source)
    if tree.by is not None:
        parent = term_value(m, terms[tree.parent])
        if not _rel_gap(total, parent) <= TOLERANCE:
            raise ConfigError(
                f"the parts {list(tree.by.values)} of {tree.by.column!r} sum to {total:.12g} "
                f"but parent {tree.parent!r} is {parent:.12g} in arm {arm!r}: a value is "
                "missing", key=f"trees.{name}.by.values", file=source)


# ---------------------------------------------------------------------- result


@dataclass
class TreeDecomposition(Result):
    """Contributions of each child (and breakdown part) to each tree parent's relative
    effect, per treatment variant.

    Rows (``extra["level"]``): ``parent`` (the parent's relative effect through the tree,
    with ``direct_rel_effect`` from the parent metric itself), ``child`` (the child's total
    contribution), ``part`` (a breakdown value's contribution) and ``part_child``. Every
    ``estimate`` is in units of the parent's relative effect, so the ``child`` rows (and
    the ``part`` rows) add up to the ``parent`` row; ``abs_contribution`` is the same in the
    parent's units.
    """

    kind: ClassVar[str] = "tree_decomposition"
    title: ClassVar[str] = "Metric tree decomposition"

    estimates: list[Effect]
    control: str = "control"
    alpha: float = 0.05
    trees: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str | None = None

    def effects(self) -> list[Effect]:
        return list(self.estimates)

    def rich_table(self) -> Any:
        """A compact terminal table: tree, variant, row, contribution and interval (%)."""
        from recscope.report.tables import rich_table

        rows = [{"tree": r.extra["tree"], "variant": r.extra["variant"],
                 "row": ("  " if r.extra["level"] in ("child", "part_child") else "")
                 + r.metric, "contribution %": 100 * r.estimate,
                 "ci_low %": 100 * r.ci_low, "ci_high %": 100 * r.ci_high}
                for r in self.estimates]
        return rich_table(rows, title=self.title + " (percentage points of the parent's "
                          "relative effect)")

    def select(self, tree: str, variant: str, level: str | None = None) -> list[Effect]:
        """Rows of one tree and variant (and level)."""
        return [r for r in self.estimates if r.extra.get("tree") == tree
                and str(r.extra.get("variant")) == variant
                and (level is None or r.extra.get("level") == level)]

    def html_sections(self, page: Any) -> None:
        for name in self.trees:
            for variant in dict.fromkeys(str(r.extra["variant"]) for r in self.estimates
                                         if r.extra.get("tree") == name):
                page.heading(f"Tree {name}: {variant} vs {self.control}")
                page.figure(waterfall(self, name, variant))


def waterfall(result: TreeDecomposition, tree: str, variant: str) -> Any:
    """Plotly waterfall of the children's contributions (percentage points of the parent's
    relative effect) with their intervals in the hover text."""
    import plotly.graph_objects as go

    kids = result.select(tree, variant, "child")
    parent = result.select(tree, variant, "parent")[0]
    labels = [r.metric for r in kids] + [f"{parent.metric} (total)"]
    values = [100 * r.estimate for r in kids] + [100 * parent.estimate]
    text = [f"{100 * r.estimate:+.2f} pp [{100 * r.ci_low:+.2f}, {100 * r.ci_high:+.2f}]"
            for r in [*kids, parent]]
    fig = go.Figure(go.Waterfall(x=labels, y=values, measure=["relative"] * len(kids)
                                 + ["total"], text=text, textposition="outside",
                                 connector={"line": {"color": "#8c959f"}}))
    fig.update_layout(title=f"{tree}: contributions to the relative effect of "
                            f"{parent.metric} ({variant})", yaxis_title="percentage points",
                      height=380, margin={"t": 60, "b": 40}, showlegend=False)
    return fig


def decompose_experiment(assignments: Any, events: Any, config: AnalysisConfig,
                         trees: Mapping[str, TreeSpec], *, engine: Any = "duckdb",
                         variants: Sequence[str] | None = None) -> TreeDecomposition:
    """Decompose every tree for every treatment variant (or those in ``variants``)."""
    for name, tree in trees.items():
        check_tree(config, name, tree)
    rows: list[Effect] = []
    for name, tree in trees.items():
        jm = joint_moments(assignments, events, config, tree_metrics(config, tree),
                           engine=engine)
        control = str(config.control)
        if control not in jm.by_variant:
            raise DataValidationError(f"control variant {control!r} not found in the data",
                                      column=config.variant)
        treat = [v for v in sorted(jm.by_variant) if v != control]
        for v in treat if variants is None else [str(x) for x in variants]:
            if v not in jm.by_variant:
                raise DataValidationError(f"variant {v!r} not found in the data",
                                          column=config.variant)
            est = decompose(name, tree, jm.by_variant[control], jm.by_variant[v], jm.terms,
                            variant=v, alpha=config.alpha, source=config.source,
                            control_name=control)
            rows.extend(est.rows)
    return TreeDecomposition(estimates=rows, control=str(config.control), alpha=config.alpha,
                             trees={k: t.model_dump(mode="json") for k, t in trees.items()},
                             source=config.source)
