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
metric over the ``D`` days before exposure, for CUPED / regression adjustment;
``nulls = "error" | "zero" | "drop"`` (what a NULL/NaN value of the metric's columns
means; default: an error naming the column and a unit); ``cap = {quantile = 0.999}`` or
``cap = {value = 1000}`` (per-unit values of a mean metric above the cap are set to it).

Both the file and the Python objects are strict pydantic models
(:class:`recscope.config.StrictModel`): unknown keys and values of the wrong type
(``sequential = "no"``, ``alpha = "0.05"``) are :class:`~recscope.errors.ConfigError`
naming the file and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from recscope.config import StrictModel, config_error
from recscope.errors import ConfigError
from recscope.io import read_toml

MetricKind = Literal["mean", "proportion", "ratio", "count_distinct", "quantile"]
KINDS: tuple[str, ...] = ("mean", "proportion", "ratio", "count_distinct", "quantile")
NullPolicy = Literal["error", "zero", "drop"]
FilterValue = str | int | float | bool


def _tuple(value: Any) -> Any:
    """Lists (TOML arrays) become tuples; a single string becomes a 1-tuple."""
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


def _filters(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: (tuple(v) if isinstance(v, list | tuple) else (v,))
                for k, v in value.items()}
    return value


def _problem(key: str, message: str) -> PydanticCustomError:
    """A validation problem of the sub-key ``key`` (see :func:`_validate`)."""
    return PydanticCustomError("recscope", message, {"key": key})


def _validate(model: Any, data: Any, *, file: str | None, prefix: str) -> Any:
    """``model.model_validate`` with problems as ConfigError naming file and key; a
    model-level problem (:func:`_problem`) names its own sub-key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        sub = (exc.errors()[0].get("ctx") or {}).get("key")
        full = ".".join(p for p in (prefix, sub) if p)
        raise config_error(exc, file=file, prefix=full) from None


Columns = Annotated[tuple[str, ...], BeforeValidator(_tuple)]


class Cap(StrictModel):
    """Per-unit cap of a mean metric: a quantile of the per-unit values across all
    assigned units (computed in the engine) or a fixed value."""

    model_config = ConfigDict(frozen=True)

    quantile: float | None = None
    value: float | None = None

    @field_validator("quantile")
    @classmethod
    def _quantile(cls, v: float | None) -> float | None:
        if v is not None and not 0.5 <= v < 1:
            raise _problem("", f"must be in [0.5, 1), got {v}")
        return v

    @field_validator("value")
    @classmethod
    def _value(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise _problem("", f"must be a finite number, got {v}")
        return v

    @model_validator(mode="after")
    def _one(self) -> Cap:
        if (self.quantile is None) == (self.value is None):
            raise _problem("", "give exactly one of quantile or value")
        return self


class Metric(StrictModel):
    """One metric; see the module docstring for the meaning of each field.

    ``Metric("clicks", "mean", column="clicks")``: name and kind may be positional.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    kind: MetricKind
    column: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    q: float = 0.5
    window: Annotated[tuple[float, float] | None, BeforeValidator(_tuple)] = None
    filter: Annotated[dict[str, tuple[FilterValue, ...]], BeforeValidator(_filters)] = Field(
        default_factory=dict)
    covariates: Columns = ()
    cuped_days: float | None = None
    events: str | None = None
    test: Literal["t", "z"] | None = None
    nulls: NullPolicy = "error"
    cap: Cap | None = None

    def __init__(self, *args: Any, **data: Any) -> None:
        if len(args) > 2:
            raise TypeError("Metric takes at most name and kind positionally")
        data.update(zip(("name", "kind"), args, strict=False))
        super().__init__(**data)

    @model_validator(mode="after")
    def _check(self) -> Metric:
        if self.kind == "ratio":
            if not self.numerator or not self.denominator:
                raise _problem("", "a ratio metric needs numerator and denominator")
        elif not self.column:
            raise _problem("column", f"a {self.kind} metric needs a column")
        if self.kind == "quantile" and not 0.0 < self.q < 1.0:
            raise _problem("q", f"q must be in (0, 1), got {self.q}")
        if self.window is not None:
            lo, hi = self.window
            if not (math.isfinite(lo) and hi > lo):
                raise _problem("window", "window must be [start, end] days with end > start")
        if self.cuped_days is not None and not (self.cuped_days > 0
                                                and math.isfinite(self.cuped_days)):
            raise _problem("cuped_days", "cuped_days must be positive")
        if self.kind == "quantile" and (self.covariates or self.cuped_days):
            raise _problem("covariates", "quantile metrics take no covariates")
        if self.cap is not None and self.kind != "mean":
            raise _problem("cap", f"cap applies to mean metrics, not {self.kind}")
        for v in (x for vals in self.filter.values() for x in vals):
            if isinstance(v, float) and not math.isfinite(v):
                raise _problem("filter", "filter values must be finite")
        return self

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


class AnalysisConfig(StrictModel):
    """Everything ``analyze`` needs besides the data: column roles, metrics and options."""

    model_config = ConfigDict(frozen=True)

    metrics: Annotated[tuple[Metric, ...], BeforeValidator(_tuple)]
    unit: str = "user_id"
    variant: str = "variant"
    control: str = "control"
    variants: Annotated[tuple[str, ...] | None, BeforeValidator(_tuple)] = None
    weights: dict[str, float] | None = None
    exposure: str | None = None
    timestamp: str | None = None
    segments: Columns = ()
    alpha: float = 0.05
    correction: Literal["holm", "bh", "bonferroni", "none"] = "holm"
    srm_alpha: float = 0.001
    sequential: bool = False
    sequential_tau: float = 0.1
    trees: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Metric trees (``[trees.NAME]`` tables) for ``recscope launch``: kept here so one
    metrics file serves both commands; their schema is checked by
    :func:`recscope.experiments.trees.load_metrics_with_trees`, ``analyze`` ignores them."""
    source: str | None = None

    @model_validator(mode="after")
    def _check(self) -> AnalysisConfig:
        if not self.metrics:
            raise _problem("metrics", "define at least one [metrics.NAME] table")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise _problem("metrics", "metric names must be unique")
        for key in ("unit", "variant"):
            if not getattr(self, key):
                raise _problem(key, "must be a non-empty string")
        for key in ("alpha", "srm_alpha"):
            if not 0 < getattr(self, key) < 1:
                raise _problem(key, f"{key} must be in (0, 1), got {getattr(self, key)}")
        if not (self.sequential_tau > 0 and math.isfinite(self.sequential_tau)):
            raise _problem("sequential_tau", "sequential_tau must be positive")
        if self.weights is not None and not all(w > 0 and math.isfinite(w)
                                                for w in self.weights.values()):
            raise _problem("weights", "weights must map each variant to a positive number")
        return self

    def replace(self, **changes: Any) -> AnalysisConfig:
        """A copy with some fields changed (validated again)."""
        return _validate(AnalysisConfig, {**dict(self), **changes}, file=self.source,
                         prefix="")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for tracking."""
        return {
            "unit": self.unit, "variant": self.variant, "control": self.control,
            "exposure": self.exposure, "timestamp": self.timestamp,
            "segments": list(self.segments), "alpha": self.alpha,
            "correction": self.correction, "sequential": self.sequential,
            "metrics": {m.name: {"kind": m.kind, "columns": list(m.value_columns),
                                 "covariates": list(m.covariates),
                                 "cuped_days": m.cuped_days, "window": m.window,
                                 "nulls": m.nulls,
                                 "cap": None if m.cap is None else m.cap.model_dump()}
                        for m in self.metrics},
        }


def load_metrics(path: str | Path) -> AnalysisConfig:
    """Parse a metrics TOML file (format in docs/experiments.md)."""
    return parse_metrics(read_toml(path, "metrics"), source=str(Path(path)))


def parse_metrics(data: Mapping[str, Any], source: str | None = None) -> AnalysisConfig:
    """Build an :class:`AnalysisConfig` from a parsed TOML mapping, checking every key."""
    raw_metrics = data.get("metrics")
    if not isinstance(raw_metrics, Mapping) or not raw_metrics:
        unknown = sorted(k for k in data if k not in AnalysisConfig.model_fields
                         or k == "source")
        if unknown:
            raise ConfigError("unknown key", key=unknown[0], file=source)
        raise ConfigError("define at least one [metrics.NAME] table", key="metrics",
                          file=source)
    metrics = []
    for name, spec in raw_metrics.items():
        if not isinstance(spec, Mapping):
            raise ConfigError("must be a table", key=f"metrics.{name}", file=source)
        if "name" in spec:
            raise ConfigError("unknown key (the name is the table's)",
                              key=f"metrics.{name}.name", file=source)
        metrics.append(_validate(Metric, {"name": str(name), **spec}, file=source,
                                 prefix=f"metrics.{name}"))
    if "source" in data:
        raise ConfigError("unknown key", key="source", file=source)
    return _validate(AnalysisConfig, {**data, "metrics": tuple(metrics), "source": source},
                     file=source, prefix="")
