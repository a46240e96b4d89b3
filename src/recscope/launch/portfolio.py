"""The portfolio view: cumulative estimated impact of several decided launches, by team
and by component, with intervals.

Each launch contributes its primary metric's relative effect ``r`` (standard error
``se``); launches compound multiplicatively, so impacts add on the log scale:
``log(1 + r)`` with standard error ``se / (1 + r)`` (delta method), launches independent.
A group's cumulative impact is ``exp(sum) - 1`` with the interval mapped the same way.
By component, a launch with an attribution of its primary metric gives each component its
Shapley share of ``log(1 + r)``; a launch without one gives the whole to its components
taken together (``"a + b"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from scipy import special

from recscope.errors import ConfigError
from recscope.launch.decide import LaunchDecision
from recscope.results import Effect, Result


@dataclass
class Portfolio(Result):
    """Cumulative impact rows (extra ``group`` = ``team`` | ``component`` | ``all``,
    ``name``, ``launches``) and the launches counted."""

    kind: ClassVar[str] = "launch_portfolio"
    title: ClassVar[str] = "Launch portfolio: cumulative estimated impact"

    metric: str
    impacts: list[Effect]
    launches: list[dict[str, Any]] = field(default_factory=list)
    shipped_only: bool = True
    confidence: float = 0.95

    def effects(self) -> list[Effect]:
        return list(self.impacts)

    def rows(self) -> list[dict[str, Any]]:
        return [{"group": e.extra["group"], "name": e.extra["name"], "metric": e.metric,
                 "cumulative impact": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high,
                 "se (log scale)": e.se, "launches": e.extra["launches"]}
                for e in self.impacts]

    def html_sections(self, page: Any) -> None:
        import plotly.graph_objects as go

        page.heading("Launches counted").table(self.launches)
        for group in ("team", "component"):
            rows = [e for e in self.impacts if e.extra["group"] == group]
            if not rows:
                continue
            fig = go.Figure(go.Bar(
                x=[e.extra["name"] for e in rows], y=[100 * e.estimate for e in rows],
                error_y={"type": "data", "symmetric": False,
                         "array": [100 * (e.ci_high - e.estimate) for e in rows],
                         "arrayminus": [100 * (e.estimate - e.ci_low) for e in rows]}))
            fig.update_layout(title=f"Cumulative impact on {self.metric} by {group} (%, "
                                    f"{100 * self.confidence:.0f}% CI)", height=340,
                              margin={"t": 50, "b": 40})
            page.figure(fig)


def _impact(metric: str, parts: list[tuple[float, float]], z: float, group: str, name: str,
            launches: list[str]) -> Effect:
    s = math.fsum(p for p, _ in parts)
    se = math.sqrt(math.fsum(v * v for _, v in parts))
    return Effect(metric, math.expm1(s), math.expm1(s - z * se), math.expm1(s + z * se), se,
                  n=len(launches), extra={"group": group, "name": name,
                                          "launches": ", ".join(launches)})


def portfolio(decisions: Sequence[LaunchDecision], *, metric: str | None = None,
              shipped_only: bool = True, confidence: float = 0.95,
              sources: Sequence[str] | None = None) -> Portfolio:
    """Cumulative impact on ``metric`` (default: the first launch's primary metric) of the
    shipped launches (all decided launches with ``shipped_only=False``)."""
    if not decisions:
        raise ConfigError("give at least one decided launch")
    metric = metric or decisions[0].primary_metric
    z = float(-special.ndtri((1 - confidence) / 2))
    by_team: dict[str, list[tuple[float, float]]] = {}
    by_comp: dict[str, list[tuple[float, float]]] = {}
    names: dict[tuple[str, str], list[str]] = {}
    overall: list[tuple[float, float]] = []
    counted = []
    for i, d in enumerate(decisions):
        src = sources[i] if sources else d.name
        e = next((x for x in d.experiment if x.metric == metric), None)
        if e is None:
            raise ConfigError(f"metric {metric!r} is not in this launch's experiment",
                              key="experiment", file=src)
        if shipped_only and d.decision != "ship":
            continue
        if not (math.isfinite(e.estimate) and math.isfinite(e.se) and e.estimate > -1):
            raise ConfigError(f"the effect on {metric!r} is not computable", key="experiment",
                              file=src)
        log_r, se = math.log1p(e.estimate), e.se / (1 + e.estimate)
        overall.append((log_r, se))
        counted.append({"launch": d.name, "team": d.team or "(none)", "decision": d.decision,
                        "relative effect": e.estimate, "se": e.se,
                        "components": ", ".join(d.components), "source": src})
        team = d.team or "(none)"
        by_team.setdefault(team, []).append((log_r, se))
        names.setdefault(("team", team), []).append(d.name)
        attr = [a for a in d.attribution if a.metric == metric
                and math.isfinite(a.extra.get("share", math.nan))]
        if attr:
            for a in attr:
                share = a.extra["share"]
                total = a.extra.get("total", math.nan)
                # the component's share of the log effect; its s.e. from its Shapley value
                rel_se = (abs(a.se / total) if total and math.isfinite(a.se) else 0.0)
                comp = a.extra["component"]
                by_comp.setdefault(comp, []).append(
                    (share * log_r, math.hypot(share * se, rel_se * abs(log_r))))
                names.setdefault(("component", comp), []).append(d.name)
        else:
            comp = " + ".join(d.components) or "(unspecified)"
            by_comp.setdefault(comp, []).append((log_r, se))
            names.setdefault(("component", comp), []).append(d.name)
    impacts = []
    if overall:
        impacts.append(_impact(metric, overall, z, "all", "all launches",
                               [c["launch"] for c in counted]))
    for group, table in (("team", by_team), ("component", by_comp)):
        for name, parts in sorted(table.items()):
            impacts.append(_impact(metric, parts, z, group, name, names[(group, name)]))
    return Portfolio(metric=metric, impacts=impacts, launches=counted,
                     shipped_only=shipped_only, confidence=confidence)


def load_decisions(paths: Sequence[str | Path]) -> list[LaunchDecision]:
    """Decided launches from their JSON files (``recscope launch decide --json``)."""
    return [LaunchDecision.load(p) for p in paths]
