"""The simulator's experiment file: a TOML schema (strict pydantic models).

An experiment file (documented in ``docs/simulator.md``) names the world, the incumbent
stack, one ``[[experiment]]`` table per layer (variants as overrides of the stack, a named
built-in policy, allocation weights, traffic range, holdout) and the duration; an optional
``[design]`` table (:class:`recscope.experiments.designs.DesignConfig`) randomises
clusters, regions or time slices instead of users, and ``[[compare]]`` tables name more
designs for the design advisor (``recscope experiment design-compare``).
:func:`load_experiment` reads it; :func:`recscope.sim.run_experiment` runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from recscope.config import StrictModel, validate
from recscope.experiments.designs import GRAPHS, DesignConfig
from recscope.io import read_toml
from recscope.sim.environment import SimConfig

DEFAULT_METRICS = """\
# Metrics of the simulated platform's event log (format: docs/experiments.md).
unit = "unit_id"
variant = "variant"
control = "control"

[metrics.ctr]
kind = "ratio"
numerator = "clicks"
denominator = "impressions"

[metrics.clicks]
kind = "mean"
column = "clicks"

[metrics.saves]
kind = "mean"
column = "saves"

[metrics.hides]
kind = "mean"
column = "hides"

[metrics.sessions]
kind = "mean"
column = "sessions"

[metrics.active_days]
kind = "count_distinct"
column = "day"
"""

RETENTION_METRIC = """
[metrics.retained_week2]
kind = "proportion"
column = "sessions"
window = [7, 14]
"""

#: Named built-in policies a variant may use (``policy = "NAME"``).
NAMED_POLICIES: dict[str, dict[str, Any]] = {
    "popular": {"retriever": "popular", "ranker": "popularity"},
    "random": {"retriever": "random", "ranker": "popularity", "temperature": 100.0},
    "baseline": {"retriever": "popular", "ranker": "affinity"},
    "candidate": {"retriever": "embedding_v2", "ranker": "affinity_quality"},
}
STACK_KEYS = frozenset({"retriever", "ranker", "temperature", "pool", "policy", "pipeline"})
"""Keys a stack (the incumbent policy or a variant's override) may set."""


class _Frozen(StrictModel):
    model_config = ConfigDict(frozen=True)


class WorldSpec(_Frozen):
    """Which world: the built-in one (scaled, seeded, or from a world TOML) or one
    calibrated from real logs (``movielens`` folder, optional ``obd`` folder)."""

    seed: int = Field(default=0, ge=0)
    scale: float = Field(default=1.0, gt=0.0, le=100.0)
    config: str | None = None
    movielens: str | None = None
    obd: str | None = None


class LayerSpec(_Frozen):
    """One experiment in its own layer: variants are overrides of the stack."""

    name: str
    layer: str | None = None
    variants: dict[str, dict[str, Any]]
    weights: list[float] | None = None
    traffic: tuple[float, float] = Field(default=(0.0, 1.0), strict=False)
    salt: str | None = None
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> LayerSpec:
        if len(self.variants) < 2:
            raise ValueError("an experiment needs at least two variants")
        if "control" not in self.variants:
            raise ValueError("one variant must be called 'control'")
        for v, spec in self.variants.items():
            bad = set(spec) - STACK_KEYS
            if bad:
                raise ValueError(f"variant {v!r}: unknown key {sorted(bad)[0]!r} "
                                 f"(allowed: {', '.join(sorted(STACK_KEYS))})")
        return self


class ExperimentSpec(_Frozen):
    """A simulated online experiment (see the module docstring)."""

    name: str = "experiment"
    seed: int = Field(default=0, ge=0)
    days: int = Field(default=14, ge=1, le=365)
    warmup_days: int = Field(default=7, ge=1, le=365)
    long_run_days: int = Field(default=0, ge=0, le=730,
                               description="replay horizon for long-run truth (0: off)")
    truth: bool = True
    world: WorldSpec = Field(default_factory=WorldSpec)
    simulation: SimConfig = Field(default_factory=SimConfig)
    policy: dict[str, Any] = Field(default_factory=lambda: dict(NAMED_POLICIES["baseline"]))
    experiment: list[LayerSpec]
    metrics: str | None = None
    design: DesignConfig | None = Field(
        default=None, description="how units are randomised (recscope.sim.designs): unit, "
        "cluster, hierarchical or switchback; default the unit A/B test")
    compare: list[DesignConfig] = Field(
        default_factory=list, description="more designs for `experiment design-compare`")

    @model_validator(mode="after")
    def _check(self) -> ExperimentSpec:
        names = [e.name for e in self.experiment]
        if not names or len(set(names)) != len(names):
            raise ValueError("experiment names must be distinct and at least one is needed")
        if self.long_run_days and self.long_run_days < self.days:
            raise ValueError("long_run_days must be 0 or at least days")
        bad = set(self.policy) - STACK_KEYS
        if bad:
            raise ValueError(f"unknown policy key {sorted(bad)[0]!r}")
        if self.design is not None and self.design.kind != "unit" and (
                len(self.experiment) != 1 or len(self.experiment[0].variants) != 2):
            raise ValueError("a [design] other than unit needs one [[experiment]] with two "
                             "variants")
        return self


def parse_experiment(data: dict[str, Any], *, file: str | None = None) -> ExperimentSpec:
    """Validate a mapping into an :class:`ExperimentSpec`; errors name key and file."""
    return validate(ExperimentSpec, data, file=file)


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Read an experiment TOML file; relative paths inside are relative to the file."""
    p = Path(path)
    spec = parse_experiment(read_toml(p, "experiment"), file=str(p))
    base = p.resolve().parent

    def rel(x: str | None) -> str | None:
        return None if x is None else str((base / x).resolve()) if not Path(x).is_absolute() \
            else x

    world = spec.world.model_copy(update={"config": rel(spec.world.config),
                                          "movielens": rel(spec.world.movielens),
                                          "obd": rel(spec.world.obd)})

    def stack(v: dict[str, Any]) -> dict[str, Any]:
        return {**v, "pipeline": rel(v["pipeline"])} if "pipeline" in v else v

    layers = [x.model_copy(update={"variants": {k: stack(v) for k, v in x.variants.items()}})
              for x in spec.experiment]

    def design(d: DesignConfig | None) -> DesignConfig | None:
        if d is not None and d.kind == "switchback":
            d.n_slices(spec.days * 24.0, file=p)  # a slice longer than the experiment
        if d is None or d.graph is None or d.graph in GRAPHS:
            return d
        return d.model_copy(update={"graph": rel(d.graph)})

    return spec.model_copy(update={"world": world, "metrics": rel(spec.metrics),
                                   "policy": stack(spec.policy), "experiment": layers,
                                   "design": design(spec.design),
                                   "compare": [design(d) for d in spec.compare]})
