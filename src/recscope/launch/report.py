"""The launch report: one self-contained HTML page for a leadership reader.

Order: the decision and its reasons (each with the number behind it), the primary and
guardrail effects against their thresholds, the metric tree (waterfall of the children's
contributions, per-surface contributions), which component earned the gain (attribution),
offline and off-policy predictions beside the online result, the long-run projection and,
in the simulator, the truth beside the decision. Plotly is inlined; no network.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from recscope.report.html import HtmlReport

if TYPE_CHECKING:
    from recscope.launch.decide import LaunchDecision

_LEVEL = {"ship": "ok", "iterate": "warn", "stop": "bad"}
_HEADLINE = {"ship": "SHIP", "iterate": "ITERATE: not ready to ship", "stop": "STOP"}


def _pct(x: Any) -> str:
    return "–" if x is None or not math.isfinite(float(x)) else f"{100 * float(x):+.2f}%"


def _share(x: Any) -> str:
    return "–" if x is None or not math.isfinite(float(x)) else f"{100 * float(x):.1f}%"


def _num(x: Any) -> str:
    return "–" if x is None or not math.isfinite(float(x)) else f"{float(x):.4g}"


def _stat(c: Any) -> str:
    """A check's deciding number, in percent for relative effects."""
    check = c.extra["check"]
    if check in ("primary", "guardrail", "gate:long_run"):
        return f"{_pct(c.extra['value'])} vs {_pct(c.extra['threshold'])}"
    return f"{_num(c.extra['value'])} vs {_num(c.extra['threshold'])}"


def effects_figure(d: LaunchDecision) -> Any:
    """Primary and guardrail relative effects with their one-sided intervals and the
    thresholds they were tested against."""
    import plotly.graph_objects as go

    rows = [c for c in d.checks if c.extra["check"] in ("primary", "guardrail")]
    names = [f"{c.extra['check']}: {c.metric}" for c in rows]
    est = [100 * c.estimate for c in rows]
    fig = go.Figure(go.Scatter(
        x=est, y=names, mode="markers", marker={"size": 11, "color": "#0969da"},
        error_x={"type": "data", "symmetric": False,
                 "array": [100 * (c.ci_high - c.estimate) for c in rows],
                 "arrayminus": [100 * (c.estimate - c.ci_low) for c in rows]},
        name="effect (one-sided bounds)"))
    thr_x, thr_y = [], []
    for c, n in zip(rows, names, strict=True):
        t = c.extra["threshold"]
        if c.extra["check"] == "guardrail" and c.extra.get("direction") == "decrease":
            thr_x.append(100 * t)
        elif c.extra["check"] == "guardrail":
            thr_x.append(-100 * t)
        else:
            thr_x.append(100 * (t if c.extra.get("direction") == "increase" else -t))
        thr_y.append(n)
    fig.add_trace(go.Scatter(x=thr_x, y=thr_y, mode="markers", name="threshold",
                             marker={"symbol": "line-ns-open", "size": 22, "color": "#cf222e",
                                     "line": {"width": 3}}))
    fig.add_vline(x=0, line={"color": "#8c959f", "dash": "dot"})
    fig.update_layout(title="Relative effects with their one-sided bounds (%)", height=120 +
                      45 * len(rows), margin={"t": 50, "b": 40, "l": 10}, xaxis_title="%")
    return fig


def parts_figure(rows: list[Any]) -> Any:
    """Per-part (surface, funnel step) contributions with intervals."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(
        x=[str(r.extra["part"]) for r in rows], y=[100 * r.estimate for r in rows],
        error_y={"type": "data", "symmetric": False,
                 "array": [100 * (r.ci_high - r.estimate) for r in rows],
                 "arrayminus": [100 * (r.estimate - r.ci_low) for r in rows]},
        marker_color="#2da44e"))
    fig.update_layout(title="Contribution of each part (percentage points)", height=320,
                      margin={"t": 50, "b": 40}, yaxis_title="pp")
    return fig


def tree_waterfall(rows: list[Any]) -> Any:
    """Waterfall of the children's contributions to the parent's relative effect."""
    import plotly.graph_objects as go

    kids = [r for r in rows if r.extra["level"] == "child"]
    parent = next(r for r in rows if r.extra["level"] == "parent")
    fig = go.Figure(go.Waterfall(
        x=[r.metric for r in kids] + [f"{parent.metric} (total)"],
        y=[100 * r.estimate for r in kids] + [100 * parent.estimate],
        measure=["relative"] * len(kids) + ["total"],
        text=[f"{100 * r.estimate:+.2f} [{100 * r.ci_low:+.2f}, {100 * r.ci_high:+.2f}]"
              for r in [*kids, parent]], textposition="outside",
        connector={"line": {"color": "#8c959f"}}))
    fig.update_layout(title=f"Where the change in {parent.metric} came from (percentage "
                            "points of its relative effect)", height=400, showlegend=False,
                      margin={"t": 60, "b": 40}, yaxis_title="pp")
    return fig


def attribution_figure(rows: list[Any], metric: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(
        x=[r.extra["component"] for r in rows], y=[r.estimate for r in rows],
        error_y={"type": "data", "symmetric": False,
                 "array": [r.ci_high - r.estimate for r in rows],
                 "arrayminus": [r.estimate - r.ci_low for r in rows]},
        marker_color="#8250df"))
    fig.update_layout(title=f"{metric}: effect earned by each component (Shapley, 95% CI)",
                      height=320, margin={"t": 50, "b": 40})
    return fig


def render_report(d: LaunchDecision) -> str:
    """The whole page (see the module docstring)."""
    page = HtmlReport(f"Launch decision: {d.name}",
                      f"{d.variant} vs {d.control}" + (f" · team {d.team}" if d.team else "")
                      + (f" · components: {', '.join(d.components)}" if d.components else ""))
    page.banner(f"Decision: {_HEADLINE[d.decision]}", _LEVEL[d.decision])
    page.heading("Why")
    page.table([{"check": c.extra["check"], "metric": c.metric, "finding": c.extra["text"],
                 "deciding number": f"{c.extra['statistic']}: {_stat(c)}",
                 "source": c.extra["source"]} for c in d.reasons()],
               ["check", "metric", "finding", "deciding number", "source"])
    others = [c for c in d.checks if c not in d.reasons()]
    if others:
        page.paragraph("Other checks: " + "; ".join(c.extra["text"] for c in others), "note")
    if d.truth:
        page.heading("Ground truth (simulator)")
        verdict = {"good": "the change is truly good: shipping is right",
                   "bad": "the change is truly bad: it must not ship",
                   "marginal": "the change truly helps, by less than the minimum practical "
                               "effect"}.get(d.truth_verdict, "")
        right = ((d.truth_verdict == "good" and d.decision == "ship")
                 or (d.truth_verdict == "bad" and d.decision != "ship")
                 or (d.truth_verdict == "marginal" and d.decision != "ship"))
        if verdict:
            page.banner(f"Truth: {verdict}. Decision {d.decision}: "
                        f"{'consistent with' if right else 'differs from'} the truth.",
                        "ok" if right else "warn")
        page.table([{"metric": m, "estimated": _pct(e.estimate),
                     "interval (95%)": f"[{_pct(e.ci_low)}, {_pct(e.ci_high)}]",
                     "true (short run)": _pct(d.truth.get(m, {}).get("short_run")),
                     "true (long run)": _pct(d.truth.get(m, {}).get("long_run"))}
                    for m, e in ((e.metric, e) for e in d.experiment)])
    page.heading("Primary metrics and guardrails")
    page.figure(effects_figure(d))
    page.table([{"metric": e.metric, "relative effect": _pct(e.estimate),
                 "95% interval": f"[{_pct(e.ci_low)}, {_pct(e.ci_high)}]",
                 "control": _num(e.extra.get("control_mean")),
                 "treatment": _num(e.extra.get("treatment_mean")), "p": _num(e.p_value)}
                for e in d.experiment])
    if d.tree:
        parent = next(r for r in d.tree if r.extra["level"] == "parent")
        page.heading(f"Metric tree: {parent.metric} = {parent.extra['op']} of its parts")
        page.figure(tree_waterfall(d.tree))
        page.table([{"part": r.metric, "contribution": _pct(r.estimate),
                     "95% interval": f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}]",
                     "in units": _num(r.extra.get("abs_contribution")),
                     "own relative change": _pct(r.extra.get("child_rel_effect"))}
                    for r in d.tree if r.extra["level"] in ("parent", "child")])
        parts = [r for r in d.tree if r.extra["level"] == "part"]
        if parts:
            page.heading("Per surface")
            page.figure(parts_figure(parts))
            page.table([{"part": r.extra["part"], "contribution": _pct(r.estimate),
                         "95% interval": f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}]",
                         "share of control": _share(r.extra.get("share_of_parent")),
                         "own relative change": _pct(r.extra.get("part_rel_effect"))}
                        for r in parts])
    if d.attribution:
        metric = d.primary_metric if any(r.metric == d.primary_metric
                                         for r in d.attribution) else d.attribution[0].metric
        rows = [r for r in d.attribution if r.metric == metric]
        page.heading("Which component earned it")
        page.figure(attribution_figure(rows, metric))
        page.table([{"component": r.extra["component"], "effect": _num(r.estimate),
                     "95% interval": f"[{_num(r.ci_low)}, {_num(r.ci_high)}]",
                     "share": _share(r.extra.get("share"))} for r in rows])
    if d.offline or d.ope:
        page.heading("Predictions before launch vs the online result")
        online = next((e for e in d.experiment if e.metric == d.primary_metric), None)
        rows_p: list[dict[str, Any]] = []
        if online is not None:
            rows_p.append({"source": "online experiment", "what": d.primary_metric,
                           "estimate": _pct(online.estimate),
                           "interval": f"[{_pct(online.ci_low)}, {_pct(online.ci_high)}]"})
        for r in d.offline:
            rel = r.extra.get("relative")
            rows_p.append({"source": "offline benchmark", "what": r.metric
                           + (f" ({r.extra['system']})" if r.extra.get("system") else ""),
                           "estimate": _pct(rel) if rel is not None else _num(r.estimate),
                           "interval": f"[{_num(r.ci_low)}, {_num(r.ci_high)}]"})
        for r in d.ope:
            rows_p.append({"source": f"off-policy ({r.extra.get('estimator')})",
                           "what": r.metric, "estimate": _num(r.estimate),
                           "interval": f"[{_num(r.ci_low)}, {_num(r.ci_high)}]"})
        page.table(rows_p)
    if d.long_run or any("long_run" in v for v in d.truth.values()):
        page.heading("Long run")
        rows_l = [{"metric": r.metric, "projected": _pct(r.estimate),
                   "interval": f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}]",
                   "true (simulator)": _pct(d.truth.get(r.metric, {}).get("long_run"))}
                  for r in d.long_run]
        if not rows_l:
            rows_l = [{"metric": m, "true long-run effect (simulator)": _pct(v["long_run"])}
                      for m, v in d.truth.items() if "long_run" in v]
        page.table(rows_l)
    page.heading("All checks")
    page.table(d.rows())
    return page.render()
