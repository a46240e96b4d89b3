"""Reading what a launch decision weighs: the experiment (a scorecard JSON or the raw
tables), the offline benchmark, the off-policy estimate, the attribution, the long-run
projection and, in the simulator, the truth. Each becomes :class:`Effect` rows.

``--experiment DIR`` is a folder holding either

- the raw tables as ``recscope simulate --out DIR`` writes them: ``assignments.parquet``,
  ``events.parquet`` and ``metrics.toml`` (analysed here, metric trees included), or
- ``scorecard.json`` from ``recscope experiment analyze --json DIR/scorecard.json``,
  optionally with ``trees.json`` from ``recscope launch decompose --json DIR/trees.json``.

The raw tables win when both are present. ``truth.json`` (the simulator's ground truth),
when present, is put beside the decision.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy import special

from recscope.errors import ConfigError
from recscope.experiments.trees import TreeDecomposition
from recscope.results import Effect

RAW_FILES = ("assignments.parquet", "events.parquet", "metrics.toml")


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path`` (errors name the file)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found", file=str(p)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the {what}: {exc}", file=str(p)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"the {what} must be a JSON object", file=str(p))
    return data


def _rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("results", "estimates", "effects", "tests", "rows"):
        if isinstance(data.get(key), list):
            return [r for r in data[key] if isinstance(r, dict)]
    return []


def _f(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class Experiment:
    """What the decision reads from an experiment: per (metric, variant) relative effects
    (``estimate`` relative, ``se`` its standard error; ``extra``: ``variant``, absolute
    ``effect``, ``control_mean``, ``treatment_mean``), SRM, trees and truth."""

    effects: list[Effect]
    control: str
    srm: dict[str, Any]
    source: str
    trees: TreeDecomposition | None = None
    truth: dict[str, Any] | None = None
    metrics_config: Any = None
    raw: dict[str, Any] = field(default_factory=dict)
    tree_names: list[str] = field(default_factory=list)

    def variants(self) -> list[str]:
        return list(dict.fromkeys(str(e.extra["variant"]) for e in self.effects))

    def metrics(self) -> list[str]:
        return list(dict.fromkeys(e.metric for e in self.effects))

    def get(self, metric: str, variant: str) -> Effect | None:
        return next((e for e in self.effects if e.metric == metric
                     and str(e.extra["variant"]) == variant), None)


def scorecard_effects(card: Any, *, source: str) -> list[Effect]:
    """Relative-effect rows from a :class:`~recscope.experiments.Scorecard` (its rows'
    ``rel_effect`` with ``rel_se``, or the standard error back-solved from the relative
    interval at the scorecard's alpha)."""
    alpha = _f((card.config or {}).get("alpha", 0.05))
    z = float(-special.ndtri((alpha if math.isfinite(alpha) else 0.05) / 2))
    out = []
    for e in card.results:
        x = e.extra
        if "variant" not in x:
            raise ConfigError("a scorecard row needs a 'variant'", key="results", file=source)
        rel = _f(x.get("rel_effect"))
        rel_se = _f(x.get("rel_se"))
        if not math.isfinite(rel_se):
            rel_se = (_f(x.get("rel_ci_high")) - _f(x.get("rel_ci_low"))) / (2 * z)
        n = e.n if math.isfinite(e.n) else _f(x.get("n_control")) + _f(x.get("n_treatment"))
        out.append(Effect(e.metric, rel, rel - z * rel_se, rel + z * rel_se, rel_se,
                          e.p_value, n, extra={"variant": str(x["variant"]),
                                               "effect": e.estimate,
                                               "control_mean": _f(x.get("control_mean")),
                                               "treatment_mean": _f(x.get("treatment_mean")),
                                               "not_computable": x.get("not_computable")}))
    if not out:
        raise ConfigError("no result rows in the scorecard", key="results", file=source)
    return out


def load_scorecard(path: str | Path) -> Any:
    """A scorecard JSON through :meth:`Scorecard.load` (problems name the file)."""
    from pydantic import ValidationError

    from recscope.experiments import Scorecard

    try:
        return Scorecard.load(path)
    except ValidationError as exc:
        from recscope.config import config_error

        raise config_error(exc, file=path) from None
    except ConfigError as exc:
        if exc.file is None:
            raise ConfigError(str(exc.problem), key=exc.key, file=str(path)) from None
        raise


def load_experiment(folder: str | Path, *, trees: str | None = None,
                    metrics: str | Path | None = None, engine: str = "duckdb") -> Experiment:
    """Read ``--experiment DIR`` (layout in the module docstring). ``trees``: the one tree
    to decompose (all when None); ``metrics``: a metrics TOML used instead of the folder's
    (e.g. one that adds metric trees)."""
    d = Path(folder)
    if not d.is_dir():
        raise ConfigError("experiment folder not found", file=str(d))
    truth = read_json(d / "truth.json", "truth") if (d / "truth.json").is_file() else None
    metrics_path = Path(metrics) if metrics is not None else d / "metrics.toml"
    if metrics is not None and not metrics_path.is_file():
        raise ConfigError("metrics file not found", file=str(metrics_path))
    if all((d / f).is_file() for f in RAW_FILES[:2]) and metrics_path.is_file():
        from recscope.experiments.trees import load_metrics_with_trees

        config, specs = load_metrics_with_trees(metrics_path)
        return experiment_from_tables(d / "assignments.parquet", d / "events.parquet", config,
                                      specs, tree=trees, truth=truth, source=str(d),
                                      engine=engine)
    card_path = d / "scorecard.json"
    if not card_path.is_file():
        raise ConfigError("the experiment folder holds neither scorecard.json nor "
                          f"{', '.join(RAW_FILES)}", file=str(d))
    card = load_scorecard(card_path)
    control = str((card.config or {}).get("control", "control"))
    dec = None
    if (d / "trees.json").is_file():
        dec = TreeDecomposition.load(d / "trees.json")
    return Experiment(scorecard_effects(card, source=str(card_path)), control,
                      dict(card.srm or {}), str(card_path), dec, truth, None, card.to_dict(),
                      tree_names=list(dec.trees) if dec is not None else [])


def experiment_from_tables(assignments: Any, events: Any, config: Any,
                           specs: dict[str, Any], *, tree: str | None = None,
                           truth: dict[str, Any] | None = None, source: str = "tables",
                           engine: Any = "duckdb") -> Experiment:
    """Analyse the tables (``analyze``) and decompose the metric trees (``tree``: only that
    one; all when None): the experiment a decision reads."""
    from recscope.experiments import analyze
    from recscope.experiments.trees import decompose_experiment

    card = analyze(assignments, events, config, engine=engine)
    chosen = specs if tree is None else {k: v for k, v in specs.items() if k == tree}
    dec = (decompose_experiment(assignments, events, config, chosen, engine=engine)
           if chosen else None)
    return Experiment(scorecard_effects(card, source=source), str(config.control),
                      dict(card.srm or {}), source, dec, truth, config, card.to_dict(),
                      tree_names=list(specs))


def truth_effects(truth: dict[str, Any], variant: str) -> dict[str, dict[str, float]]:
    """True relative effects of ``variant`` per metric from a simulator ``truth.json``:
    ``{metric: {"short_run": rel, "long_run": rel}}`` (long run when present)."""
    cells = truth.get("cells") or []
    if not cells or variant not in cells:
        return {}
    control = cells[0]
    out: dict[str, dict[str, float]] = {}
    for horizon in ("short_run", "long_run"):
        for metric, vals in (truth.get(horizon) or {}).items():
            c, v = _f(vals.get(control)), _f(vals.get(variant))
            if math.isfinite(c) and c != 0 and math.isfinite(v):
                out.setdefault(metric, {})[horizon] = v / c - 1
    return out


def offline_effects(path: str | Path) -> tuple[list[Effect], str]:
    """Rows of an ``evaluate`` JSON: an evaluation (values) or a paired comparison
    (system − baseline differences, extra ``system``). Returns the rows and the kind."""
    data = read_json(path, "offline benchmark")
    kind = str(data.get("kind", ""))
    if kind == "comparison":
        from recscope.offline.compare import ComparisonResult

        return list(ComparisonResult.from_dict(data).tests), kind
    if kind == "evaluation":
        from recscope.offline.evaluate import EvaluationResult

        return list(EvaluationResult.from_dict(data).estimates), kind
    return [Effect.from_dict(r) for r in _rows(data)], kind or "effects"


def ope_effects(path: str | Path) -> tuple[list[Effect], float | None]:
    """Rows of an ``ope`` JSON (one per estimator) and the logging policy's value."""
    from recscope.ope.result import OPEResult

    data = read_json(path, "off-policy estimate")
    res = OPEResult.from_dict(data)
    return list(res.estimates), res.logging_value


def attribution_effects(path: str | Path) -> list[Effect]:
    """Per (metric, component) Shapley effects of an ``attribute`` JSON, with shares
    (extra ``component``, ``share``, ``share_ci_low``, ``share_ci_high``)."""
    return attribution_rows(read_json(path, "attribution"), source=str(path))


def attribution_rows(data: dict[str, Any], *, source: str = "attribution") -> list[Effect]:
    """:func:`attribution_effects` on the parsed JSON: an ``attribution`` result (its
    ``shapley`` rows), a per-metric dict ``{"metrics": {metric: MetricAttribution.to_dict()}}``
    (what the demo holds in memory), or effect rows with a ``component``."""
    out: list[Effect] = []
    if data.get("kind") == "attribution" and isinstance(data.get("estimates"), list):
        from recscope.attribution.analysis import AttributionResult

        res = AttributionResult.from_dict(data)
        totals = {e.metric: e.estimate for e in res.estimates if e.extra.get("role") == "total"}
        for e in res.estimates:
            if e.extra.get("role") == "shapley":
                out.append(Effect(e.metric, e.estimate, e.ci_low, e.ci_high, e.se, e.p_value,
                                  e.n, extra={"component": str(e.extra["term"]),
                                              "share": _f(e.extra.get("share")),
                                              "share_ci_low": _f(e.extra.get("share_ci_low")),
                                              "share_ci_high": _f(e.extra.get("share_ci_high")),
                                              "total": totals.get(e.metric, math.nan)}))
    elif isinstance(data.get("metrics"), dict):
        for metric, m in data["metrics"].items():
            for comp, c in (m.get("components") or {}).items():
                lo, hi = _f(c.get("effect_ci_low")), _f(c.get("effect_ci_high"))
                out.append(Effect(str(metric), _f(c.get("effect")), lo, hi,
                                  _f(c.get("se", (hi - lo) / (2 * 1.959963984540054))),
                                  _f(c.get("p_value")), _f(c.get("n")), extra={
                                      "component": str(comp), "share": _f(c.get("share")),
                                      "share_ci_low": _f(c.get("ci_low")),
                                      "share_ci_high": _f(c.get("ci_high")),
                                      "total": _f((m.get("total") or {}).get("effect"))}))
    else:
        out = [Effect.from_dict(r) for r in _rows(data) if "component" in r]
    if not out:
        raise ConfigError("no component rows in the attribution", file=source)
    return out


def long_run_effects(path: str | Path) -> list[Effect]:
    """Relative long-run effects (``estimate`` relative when the rows carry
    ``rel_effect``) from any result JSON with effect rows; rows with a ``horizon`` other
    than ``long_run`` are skipped."""
    data = read_json(path, "long-run projection")
    out = []
    for r in _rows(data):
        if r.get("horizon") not in (None, "long_run"):
            continue
        e = Effect.from_dict(r)
        if "rel_effect" in r:
            rel = _f(r["rel_effect"])
            scale = rel / e.estimate if e.estimate else math.nan
            e = Effect(e.metric, rel, e.ci_low * scale, e.ci_high * scale, e.se * abs(scale),
                       e.p_value, e.n, extra=dict(e.extra))
        out.append(e)
    if not out:
        raise ConfigError("no long-run rows", file=str(path))
    return out
