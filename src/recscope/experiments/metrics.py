"""Metric definitions (Python objects or a TOML file) for experiment analysis.

A metric turns each unit's events into one or two per-unit numbers, then compares their
per-variant mean (or ratio of sums, or quantile) between control and treatment:

``mean``            mean per unit of ``SUM(column)`` over the unit's events
``proportion``      share of units with ``column > 0`` in at least one event
``ratio``           ``SUM(numerator) / SUM(denominator)`` over units (delta method)
``count_distinct``  mean per unit of ``COUNT(DISTINCT column)``
``quantile``        the ``q``-quantile across units of ``SUM(column)``

Options: ``window = [start, end]`` in days relative to the unit's first exposure;
``filter = {column = value | [values]}`` on events; ``covariates = [columns]`` of the
assignments table (pre-period, one value per unit) and/or ``cuped_days = D``, the same
metric over the ``D`` days before exposure, for CUPED / regression adjustment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recscope.errors import ConfigError
from recscope.io import read_toml

MetricKind = Literal["mean", "proportion", "ratio", "count_distinct", "quantile"]
KINDS: tuple[str, ...] = ("mean", "proportion", "ratio", "count_distinct", "quantile")
FilterValue = str | int | float | bool


@dataclass(frozen=True)
class Metric:
    """One metric; see the module docstring for the meaning of each field."""

    name: str
    kind: MetricKind
    column: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    q: float = 0.5
    window: tuple[float, float] | None = None
    filter: Mapping[str, tuple[FilterValue, ...]] = field(default_factory=dict)
    covariates: tuple[str, ...] = ()
    cuped_days: float | None = None
    events: str | None = None
    test: Literal["t", "z"] | None = None

    def __post_init__(self) -> None:
        key = f"metrics.{self.name}"
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}",
                              key=f"{key}.kind")
        if self.kind == "ratio":
            if not self.numerator or not self.denominator:
                raise ConfigError("a ratio metric needs numerator and denominator",
                                  key=key)
        elif not self.column:
            raise ConfigError(f"a {self.kind} metric needs a column", key=f"{key}.column")
        if self.kind == "quantile" and not 0.0 < self.q < 1.0:
            raise ConfigError(f"q must be in (0, 1), got {self.q}", key=f"{key}.q")
        if self.window is not None:
            lo, hi = self.window
            if not (math.isfinite(lo) and hi > lo):
                raise ConfigError("window must be [start, end] days with end > start",
                                  key=f"{key}.window")
        if self.cuped_days is not None and not self.cuped_days > 0:
            raise ConfigError("cuped_days must be positive", key=f"{key}.cuped_days")
        if self.kind == "quantile" and (self.covariates or self.cuped_days):
            raise ConfigError("quantile metrics take no covariates", key=f"{key}.covariates")
        if self.test not in (None, "t", "z"):
            raise ConfigError("test must be 't' or 'z'", key=f"{key}.test")

    @property
    def value_columns(self) -> tuple[str, ...]:
        """Event columns aggregated per unit (numerator first)."""
        if self.kind == "ratio":
            return (str(self.numerator), str(self.denominator))
        return (str(self.column),)

    @property
    def distribution(self) -> Literal["t", "z"]:
        """Welch t for means and proportions, normal for delta-method and quantile metrics."""
        if self.test is not None:
            return self.test
        return "t" if self.kind in ("mean", "proportion", "count_distinct") else "z"


@dataclass(frozen=True)
class AnalysisConfig:
    """Everything ``analyze`` needs besides the data: column roles, metrics and options."""

    metrics: tuple[Metric, ...]
    unit: str = "user_id"
    variant: str = "variant"
    control: str = "control"
    variants: tuple[str, ...] | None = None
    weights: Mapping[str, float] | None = None
    exposure: str | None = None
    timestamp: str | None = None
    segments: tuple[str, ...] = ()
    alpha: float = 0.05
    correction: Literal["holm", "bh", "none"] = "holm"
    srm_alpha: float = 0.001
    sequential: bool = False
    sequential_tau: float = 0.1
    source: str | None = None

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ConfigError("no metrics defined", key="metrics", file=self.source)
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ConfigError("metric names must be unique", key="metrics", file=self.source)
        if not 0 < self.alpha < 1:
            raise ConfigError("alpha must be in (0, 1)", key="alpha", file=self.source)
        if self.correction not in ("holm", "bh", "none"):
            raise ConfigError("correction must be holm, bh or none", key="correction",
                              file=self.source)
        if not self.sequential_tau > 0:
            raise ConfigError("sequential_tau must be positive", key="sequential_tau",
                              file=self.source)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for tracking."""
        return {
            "unit": self.unit, "variant": self.variant, "control": self.control,
            "exposure": self.exposure, "timestamp": self.timestamp,
            "segments": list(self.segments), "alpha": self.alpha,
            "correction": self.correction, "sequential": self.sequential,
            "metrics": {m.name: {"kind": m.kind, "columns": list(m.value_columns),
                                 "covariates": list(m.covariates),
                                 "cuped_days": m.cuped_days, "window": m.window}
                        for m in self.metrics},
        }


_TOP_KEYS = {"unit", "variant", "control", "variants", "weights", "exposure", "timestamp",
             "segments", "alpha", "correction", "srm_alpha", "sequential", "sequential_tau",
             "metrics"}
_METRIC_KEYS = {"kind", "column", "numerator", "denominator", "q", "window", "filter",
                "covariates", "cuped_days", "events", "test"}


def load_config(path: str | Path) -> AnalysisConfig:
    """Parse a metrics TOML file (format in docs/experiments.md)."""
    return parse_config(read_toml(path, "metrics"), source=str(Path(path)))


def parse_config(data: Mapping[str, Any], source: str | None = None) -> AnalysisConfig:
    """Build an :class:`AnalysisConfig` from a parsed TOML mapping, checking every key."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})",
                          key=sorted(unknown)[0], file=source)
    raw_metrics = data.get("metrics")
    if not isinstance(raw_metrics, Mapping) or not raw_metrics:
        raise ConfigError("define at least one [metrics.NAME] table", key="metrics",
                          file=source)
    metrics = []
    for name, spec in raw_metrics.items():
        try:
            metrics.append(_parse_metric(str(name), spec))
        except ConfigError as exc:
            raise ConfigError(exc.problem, key=exc.key, file=source) from None
    try:
        return AnalysisConfig(
            metrics=tuple(metrics),
            unit=_str(data, "unit", "user_id", source),
            variant=_str(data, "variant", "variant", source),
            control=str(data.get("control", "control")),
            variants=(tuple(str(v) for v in _list(data, "variants", source))
                      if "variants" in data else None),
            weights=(_weights(data["weights"], source) if "weights" in data else None),
            exposure=_opt_str(data, "exposure", source),
            timestamp=_opt_str(data, "timestamp", source),
            segments=tuple(str(s) for s in _list(data, "segments", source)),
            alpha=float(data.get("alpha", 0.05)),
            correction=data.get("correction", "holm"),
            srm_alpha=float(data.get("srm_alpha", 0.001)),
            sequential=bool(data.get("sequential", False)),
            sequential_tau=float(data.get("sequential_tau", 0.1)),
            source=source,
        )
    except ConfigError as exc:
        raise ConfigError(exc.problem, key=exc.key, file=source) from None


def _parse_metric(name: str, spec: Any) -> Metric:
    key = f"metrics.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError("must be a table", key=key)
    unknown = set(spec) - _METRIC_KEYS
    if unknown:
        raise ConfigError(f"unknown key (allowed: {', '.join(sorted(_METRIC_KEYS))})",
                          key=f"{key}.{sorted(unknown)[0]}")
    if "kind" not in spec:
        raise ConfigError("missing kind", key=f"{key}.kind")
    window = spec.get("window")
    if window is not None:
        if (not isinstance(window, list) or len(window) != 2
                or not all(isinstance(w, int | float) for w in window)):
            raise ConfigError("window must be [start, end] in days", key=f"{key}.window")
        window = (float(window[0]), float(window[1]))
    filt: dict[str, tuple[FilterValue, ...]] = {}
    for col, val in dict(spec.get("filter", {})).items():
        vals = tuple(val) if isinstance(val, list) else (val,)
        if not vals or not all(isinstance(v, str | int | float | bool) for v in vals):
            raise ConfigError("filter values must be strings, numbers or booleans",
                              key=f"{key}.filter.{col}")
        filt[str(col)] = vals
    covs = spec.get("covariates", [])
    if isinstance(covs, str):
        covs = [covs]
    if not isinstance(covs, list) or not all(isinstance(c, str) for c in covs):
        raise ConfigError("covariates must be a list of column names",
                          key=f"{key}.covariates")
    for k in ("column", "numerator", "denominator", "events"):
        if k in spec and not isinstance(spec[k], str):
            raise ConfigError("must be a column name (string)", key=f"{key}.{k}")
    return Metric(
        name=name, kind=spec["kind"], column=spec.get("column"),
        numerator=spec.get("numerator"), denominator=spec.get("denominator"),
        q=float(spec.get("q", 0.5)), window=window, filter=filt,
        covariates=tuple(covs),
        cuped_days=(float(spec["cuped_days"]) if "cuped_days" in spec else None),
        events=spec.get("events"), test=spec.get("test"),
    )


def _str(data: Mapping[str, Any], key: str, default: str, source: str | None) -> str:
    v = data.get(key, default)
    if not isinstance(v, str) or not v:
        raise ConfigError("must be a non-empty string", key=key, file=source)
    return v


def _opt_str(data: Mapping[str, Any], key: str, source: str | None) -> str | None:
    return _str(data, key, "", source) if key in data else None


def _list(data: Mapping[str, Any], key: str, source: str | None) -> Sequence[Any]:
    v = data.get(key, [])
    if not isinstance(v, list):
        raise ConfigError("must be a list", key=key, file=source)
    return v


def _weights(v: Any, source: str | None) -> dict[str, float]:
    if not isinstance(v, Mapping) or not all(isinstance(w, int | float) and w > 0
                                             for w in v.values()):
        raise ConfigError("weights must map each variant to a positive number",
                          key="weights", file=source)
    return {str(k): float(w) for k, w in v.items()}
