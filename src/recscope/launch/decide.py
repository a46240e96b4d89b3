"""The launch decision: ``ship``, ``iterate`` or ``stop``, with every reason tied to the
number that caused it.

Rules (``launch.toml`` in :mod:`recscope.launch.config`; levels after correction):

- **primary** (one-sided superiority at ``alpha_primary``): with ``g`` the relative effect in
  the good direction and ``lo``/``hi`` its one-sided bounds, it *wins* when ``lo > 0`` and
  ``g >= min_effect``; ``hi < 0`` (confidently worse) or ``hi < min_effect`` (confidently
  smaller than practical) means *stop*; anything else means *iterate*;
- **guardrail** (one-sided non-inferiority at ``alpha_guardrail``): with ``h`` the relative
  harm, it *passes* when its upper bound is below ``margin``; a lower bound above
  ``margin`` (confidently breached) means *stop*; anything else means *iterate*;
- **sample ratio mismatch**: *iterate* (the experiment cannot be trusted);
- **gates** (offline, off-policy, long run): a failed gate means its ``on_fail``.

``stop`` if any check says stop; else ``ship`` when the primaries win (all, or any with
``require = "any"``), every guardrail passes and every gate passes; else ``iterate``.
Shipping a change whose true primary effect is <= 0 therefore happens with probability at
most ``alpha_primary`` per primary, and shipping one that breaches a guardrail's margin
with probability at most ``alpha_guardrail`` (docs/launch.md measures both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from scipy import special

from recscope.errors import ConfigError
from recscope.launch.config import LaunchConfig
from recscope.launch.inputs import Experiment, truth_effects
from recscope.results import Effect, Result

DECISIONS = ("ship", "iterate", "stop")


def _z(alpha: float) -> float:
    """One-sided critical value."""
    return float(-special.ndtri(alpha))


def _pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:+.2f}%"


def check_primary(metric: str, e: Effect, direction: str, min_effect: float, alpha: float,
                  source: str) -> Effect:
    """The primary metric's check row (extra: status, outcome, bound, threshold, text)."""
    sign = 1.0 if direction == "increase" else -1.0
    g, se = sign * e.estimate, e.se
    z = _z(alpha)
    lo, hi = g - z * se, g + z * se
    p = float(special.ndtr(-g / se)) if se > 0 else math.nan
    level = f"one-sided {100 * (1 - alpha):.4g}%"
    if not (math.isfinite(g) and math.isfinite(se)):
        status, outcome, stat, bound, thr = "not computable", "iterate", "estimate", g, 0.0
        text = f"{metric}: the effect could not be computed"
    elif lo > 0 and g >= min_effect:
        status, outcome, stat, bound, thr = "win", "ship", f"{level} lower bound", lo, 0.0
        text = (f"{metric} improved by {_pct(g)} (lower bound {_pct(lo)} > 0, at least the "
                f"minimum practical effect {_pct(min_effect)})")
    elif hi < 0:
        status, outcome, stat, bound, thr = "loss", "stop", f"{level} upper bound", hi, 0.0
        text = f"{metric} got worse: {_pct(g)} (upper bound {_pct(hi)} < 0)"
    elif min_effect > 0 and hi < min_effect:
        status, outcome, stat, bound, thr = ("below practical", "stop", f"{level} upper bound",
                                             hi, min_effect)
        text = (f"{metric}: {_pct(g)}, confidently below the minimum practical effect "
                f"(upper bound {_pct(hi)} < {_pct(min_effect)})")
    elif lo > 0:
        status, outcome, stat, bound, thr = ("small win", "iterate", "estimate", g, min_effect)
        text = (f"{metric} improved significantly ({_pct(g)}, lower bound {_pct(lo)}) but less "
                f"than the minimum practical effect {_pct(min_effect)}")
    else:
        status, outcome, stat, bound, thr = ("inconclusive", "iterate", f"{level} lower bound",
                                             lo, 0.0)
        text = (f"{metric}: {_pct(g)} is not significant (lower bound {_pct(lo)} <= 0); more "
                "data or a stronger change is needed")
    return Effect(metric, e.estimate, sign * lo if sign > 0 else sign * hi,
                  sign * hi if sign > 0 else sign * lo, se, p, e.n, extra={
                      "check": "primary", "direction": direction, "status": status,
                      "outcome": outcome, "statistic": stat, "value": bound,
                      "threshold": thr, "alpha": alpha, "source": source, "text": text,
                      "variant": e.extra.get("variant")})


def check_guardrail(metric: str, e: Effect, direction: str, margin: float, alpha: float,
                    source: str) -> Effect:
    """The guardrail's non-inferiority check row."""
    sign = 1.0 if direction == "decrease" else -1.0  # harm = a move away from the good side
    h, se = sign * e.estimate, e.se
    z = _z(alpha)
    lo, hi = h - z * se, h + z * se
    p = float(special.ndtr((h - margin) / se)) if se > 0 else math.nan
    level = f"one-sided {100 * (1 - alpha):.4g}%"
    worse = "increase" if direction == "decrease" else "decrease"
    if not (math.isfinite(h) and math.isfinite(se)):
        status, outcome, stat, bound = "not computable", "iterate", "estimate", h
        text = f"guardrail {metric}: the effect could not be computed"
    elif hi < margin:
        status, outcome, stat, bound = "pass", "ship", f"{level} upper bound of harm", hi
        text = (f"guardrail {metric} holds: harm {_pct(h)} (upper bound {_pct(hi)} < margin "
                f"{_pct(margin)})")
    elif lo > margin:
        status, outcome, stat, bound = "breach", "stop", f"{level} lower bound of harm", lo
        text = (f"guardrail {metric} breached: {worse} of {_pct(h)} (lower bound {_pct(lo)} > "
                f"margin {_pct(margin)})")
    else:
        status, outcome, stat, bound = "inconclusive", "iterate", f"{level} upper bound", hi
        text = (f"guardrail {metric}: harm {_pct(h)} cannot be ruled out beyond the margin "
                f"(upper bound {_pct(hi)} >= {_pct(margin)})")
    return Effect(metric, e.estimate, e.estimate - z * se, e.estimate + z * se, se, p, e.n,
                  extra={"check": "guardrail", "direction": direction, "status": status,
                         "outcome": outcome, "statistic": stat, "value": bound,
                         "threshold": margin, "alpha": alpha, "source": source, "text": text,
                         "variant": e.extra.get("variant")})


def combine(checks: Sequence[Effect], require: str = "all") -> str:
    """The decision from the check rows (rules in the module docstring)."""
    outcomes = [c.extra["outcome"] for c in checks]
    if "stop" in outcomes:
        return "stop"
    prim = [c for c in checks if c.extra["check"] == "primary"]
    others = [c for c in checks if c.extra["check"] != "primary"
              and c.extra["outcome"] != "info"]
    wins = [c.extra["outcome"] == "ship" for c in prim]
    primary_ok = all(wins) if require == "all" else any(wins)
    if primary_ok and all(c.extra["outcome"] == "ship" for c in others):
        return "ship"
    return "iterate"


@dataclass
class LaunchDecision(Result):
    """A launch decision: ``decision`` and the check rows behind it (``checks``: one per
    primary, guardrail, SRM and gate, each with ``status``, ``outcome``, the ``statistic``
    and ``value`` that decided it, its ``threshold`` and ``source``), plus the evidence shown
    in the report: metric tree contributions, offline and off-policy rows, attribution,
    long-run projection and, in the simulator, the truth."""

    kind: ClassVar[str] = "launch_decision"
    title: ClassVar[str] = "Launch decision"

    name: str
    decision: str
    variant: str
    control: str
    checks: list[Effect]
    team: str = ""
    components: list[str] = field(default_factory=list)
    primary_metric: str = ""
    min_effect: float = 0.0
    experiment: list[Effect] = field(default_factory=list)
    tree: list[Effect] = field(default_factory=list)
    offline: list[Effect] = field(default_factory=list)
    ope: list[Effect] = field(default_factory=list)
    attribution: list[Effect] = field(default_factory=list)
    long_run: list[Effect] = field(default_factory=list)
    truth: dict[str, dict[str, float]] = field(default_factory=dict)
    truth_verdict: str = ""
    sources: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def effects(self) -> list[Effect]:
        return list(self.checks)

    def rows(self) -> list[dict[str, Any]]:
        return [{"check": c.extra["check"], "metric": c.metric, "status": c.extra["status"],
                 "outcome": c.extra["outcome"], "estimate": c.estimate,
                 "statistic": c.extra["statistic"], "value": c.extra["value"],
                 "threshold": c.extra["threshold"], "source": c.extra["source"]}
                for c in self.checks]

    def reasons(self) -> list[Effect]:
        """The checks that decided: the stops for ``stop``, the non-passing checks for
        ``iterate``, every check for ``ship``."""
        if self.decision == "ship":
            return [c for c in self.checks if c.extra["outcome"] != "info"]
        if self.decision == "stop":
            return [c for c in self.checks if c.extra["outcome"] == "stop"]
        return [c for c in self.checks if c.extra["outcome"] not in ("ship", "info")]

    def notes(self) -> list[str]:
        return [f"Decision: {self.decision.upper()} ({self.variant} vs {self.control})"]

    def to_html(self) -> str:
        from recscope.launch.report import render_report

        return render_report(self)


def _gate_offline(cfg: LaunchConfig, rows: list[Effect], kind: str, source: str) -> Effect:
    gate = cfg.gates.offline
    assert gate is not None
    cand = [r for r in rows if r.metric == gate.metric
            and (gate.system is None or r.extra.get("system") == gate.system)]
    if not cand:
        have = sorted({r.metric + (f" ({r.extra['system']})" if r.extra.get("system") else "")
                       for r in rows})
        raise ConfigError(f"metric {gate.metric!r}"
                          + (f" of system {gate.system!r}" if gate.system else "")
                          + f" is not in {source} (has: {', '.join(have)})",
                          key="gates.offline.metric", file=cfg.source)
    r = cand[0]
    what = "difference to the baseline" if kind == "comparison" else "value"
    ok = r.ci_low > gate.threshold
    text = (f"offline {gate.metric} {what} {r.estimate:.4g} [{r.ci_low:.4g}, {r.ci_high:.4g}]: "
            f"lower bound {'>' if ok else '<='} {gate.threshold:g}")
    return Effect(r.metric, r.estimate, r.ci_low, r.ci_high, r.se, r.p_value, r.n, extra={
        "check": "gate:offline", "status": "pass" if ok else "fail",
        "outcome": "ship" if ok else gate.on_fail, "statistic": "interval lower bound",
        "value": r.ci_low, "threshold": gate.threshold, "source": source, "text": text,
        "relative": r.extra.get("relative"), "system": r.extra.get("system")})


def _gate_ope(cfg: LaunchConfig, rows: list[Effect], logging_value: float | None,
              source: str) -> Effect:
    gate = cfg.gates.ope
    assert gate is not None
    r = next((x for x in rows if x.extra.get("estimator") == gate.estimator), None)
    if r is None:
        have = sorted(str(x.extra.get("estimator")) for x in rows)
        raise ConfigError(f"estimator {gate.estimator!r} is not in {source} (has: "
                          f"{', '.join(have)})", key="gates.ope.estimator", file=cfg.source)
    if gate.min_lift is not None:
        if not logging_value:
            raise ConfigError("min_lift needs the logging policy's value, which the OPE "
                              "file lacks", key="gates.ope.min_lift", file=cfg.source)
        thr = logging_value * (1 + gate.min_lift)
    else:
        thr = float(gate.threshold)  # type: ignore[arg-type]
    ok = r.ci_low > thr
    text = (f"off-policy {gate.estimator} value {r.estimate:.4g} [{r.ci_low:.4g}, "
            f"{r.ci_high:.4g}]: lower bound {'>' if ok else '<='} {thr:.4g}")
    return Effect("policy_value", r.estimate, r.ci_low, r.ci_high, r.se, r.p_value, r.n, extra={
        "check": "gate:ope", "status": "pass" if ok else "fail",
        "outcome": "ship" if ok else gate.on_fail, "statistic": "interval lower bound",
        "value": r.ci_low, "threshold": thr, "source": source, "text": text,
        "estimator": gate.estimator, "logging_value": logging_value})


def _gate_long_run(cfg: LaunchConfig, rows: list[Effect], source: str) -> Effect:
    gate = cfg.gates.long_run
    assert gate is not None
    r = next((x for x in rows if x.metric == gate.metric), None)
    if r is None:
        raise ConfigError(f"metric {gate.metric!r} is not in {source}",
                          key="gates.long_run.metric", file=cfg.source)
    ok = r.ci_low > gate.threshold
    text = (f"long-run {gate.metric} {_pct(r.estimate)} [{_pct(r.ci_low)}, {_pct(r.ci_high)}]:"
            f" lower bound {'>' if ok else '<='} {_pct(gate.threshold)}")
    return Effect(r.metric, r.estimate, r.ci_low, r.ci_high, r.se, r.p_value, r.n, extra={
        "check": "gate:long_run", "status": "pass" if ok else "fail",
        "outcome": "ship" if ok else gate.on_fail, "statistic": "interval lower bound",
        "value": r.ci_low, "threshold": gate.threshold, "source": source, "text": text})


def _variant(cfg: LaunchConfig, exp: Experiment) -> str:
    variants = exp.variants()
    if cfg.variant is not None:
        if cfg.variant not in variants:
            raise ConfigError(f"variant {cfg.variant!r} is not in the experiment (has: "
                              f"{', '.join(variants)})", key="variant", file=cfg.source)
        return cfg.variant
    if len(variants) != 1:
        raise ConfigError(f"the experiment has {len(variants)} treatment variants "
                          f"({', '.join(variants)}): name one", key="variant",
                          file=cfg.source)
    return variants[0]


def decide(cfg: LaunchConfig, exp: Experiment, *, offline: tuple[list[Effect], str] | None
           = None, offline_source: str = "offline", ope: tuple[list[Effect], float | None]
           | None = None, ope_source: str = "ope", attribution: list[Effect] | None = None,
           long_run: list[Effect] | None = None, long_run_source: str = "long-run"
           ) -> LaunchDecision:
    """Decide on ``cfg``'s variant of ``exp`` (rules in the module docstring). Gates
    declared in ``cfg`` need their input; inputs without a gate are shown, not judged."""
    for gate, given, flag in ((cfg.gates.offline, offline, "--offline"),
                              (cfg.gates.ope, ope, "--ope"),
                              (cfg.gates.long_run, long_run, "--long-run")):
        if gate is not None and given is None:
            key = {"--offline": "offline", "--ope": "ope", "--long-run": "long_run"}[flag]
            raise ConfigError(f"this gate needs {flag}", key=f"gates.{key}", file=cfg.source)
    cfg.check_metrics(exp.metrics(), f"experiment {exp.source}")
    if cfg.tree is not None and cfg.tree not in exp.tree_names:
        raise ConfigError(f"tree {cfg.tree!r} is not among the experiment's metric trees "
                          f"(has: {', '.join(exp.tree_names) or 'none'}; trees come from the "
                          "metrics TOML's [trees.NAME] or the folder's trees.json)",
                          key="tree", file=cfg.source)
    variant = _variant(cfg, exp)
    checks: list[Effect] = []
    srm_p = exp.srm.get("p_value")
    if srm_p is not None:
        ok = bool(exp.srm.get("ok", True))
        checks.append(Effect("sample_ratio", float(srm_p), p_value=float(srm_p), extra={
            "check": "srm", "status": "pass" if ok else "mismatch",
            "outcome": "ship" if ok else "iterate", "statistic": "SRM chi-square p-value",
            "value": float(srm_p), "threshold": exp.srm.get("alpha", 0.001),
            "source": exp.source, "text": ("no sample ratio mismatch" if ok else
                                           "sample ratio mismatch: find the cause before "
                                           "reading any effect")}))
    for metric, p in cfg.primary.items():
        e = exp.get(metric, variant)
        assert e is not None
        checks.append(check_primary(metric, e, p.direction, p.min_effect, cfg.alpha_primary(),
                                    exp.source))
    for metric, g in cfg.guardrails.items():
        e = exp.get(metric, variant)
        assert e is not None
        checks.append(check_guardrail(metric, e, g.direction, g.margin, cfg.alpha_guardrail(),
                                      exp.source))
    if cfg.gates.offline is not None and offline is not None:
        checks.append(_gate_offline(cfg, offline[0], offline[1], offline_source))
    if cfg.gates.ope is not None and ope is not None:
        checks.append(_gate_ope(cfg, ope[0], ope[1], ope_source))
    if cfg.gates.long_run is not None and long_run is not None:
        checks.append(_gate_long_run(cfg, long_run, long_run_source))
    decision = combine(checks, cfg.require)
    tree_rows: list[Effect] = []
    if exp.trees is not None:
        name = cfg.tree or next(iter(exp.trees.trees), None)
        if name is not None:
            tree_rows = [r for r in exp.trees.estimates if r.extra.get("tree") == name
                         and str(r.extra.get("variant")) == variant]
    truth = truth_effects(exp.truth, variant) if exp.truth else {}
    first = next(iter(cfg.primary))
    return LaunchDecision(
        name=cfg.name, decision=decision, variant=variant, control=exp.control, checks=checks,
        team=cfg.team, components=list(cfg.components), primary_metric=first,
        min_effect=cfg.primary[first].min_effect,
        experiment=[e for e in exp.effects if str(e.extra["variant"]) == variant],
        tree=tree_rows, offline=list(offline[0]) if offline else [],
        ope=list(ope[0]) if ope else [], attribution=list(attribution or []),
        long_run=list(long_run or []), truth=truth,
        truth_verdict=truth_verdict(cfg, truth) if truth else "",
        sources={"experiment": exp.source}, config=cfg.model_dump(mode="json"))


def truth_verdict(cfg: LaunchConfig, truth: dict[str, dict[str, float]]) -> str:
    """What the simulator's truth says the right call was: ``good`` (every primary truly
    improves by its minimum practical effect and no guardrail truly breaches its margin),
    ``bad`` (a primary's true effect <= 0 or a guardrail breaches), or ``marginal``."""
    bad = False
    good = True
    for metric, p in cfg.primary.items():
        t = truth.get(metric, {}).get("short_run", math.nan)
        g = t if p.direction == "increase" else -t
        if not math.isfinite(g):
            return ""
        bad |= g <= 0
        good &= g >= p.min_effect
    for metric, gr in cfg.guardrails.items():
        t = truth.get(metric, {}).get("short_run", math.nan)
        h = t if gr.direction == "decrease" else -t
        if not math.isfinite(h):
            return ""
        bad |= h >= gr.margin
    return "bad" if bad else ("good" if good else "marginal")
