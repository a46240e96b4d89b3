"""Online experiments in the simulated platform, with their ground truth.

An experiment file (TOML, documented in ``docs/simulator.md``) names the world, the
incumbent stack, one ``[[experiment]]`` table per layer (variants as overrides of the
stack, a named built-in policy, allocation weights, traffic range, holdout) and the
duration. :func:`run_experiment` assigns every user with
:func:`recscope.experiments.assignment.assign` (one salt per layer, so layers are
orthogonal and a 2-layer, 2-variant design is a 2×2 factorial), simulates a warm-up under
the incumbent and then the experiment, and writes

* ``assignments.parquet``: ``unit_id``, ``variant`` (the cell), ``first_exposure_ts`` and
  one column per layer with that layer's variant;
* ``events.parquet``: ``unit_id``, ``ts`` and metric columns (one row per request,
  including the warm-up, which is the pre-exposure period for CUPED);
* ``metrics.toml``: the metric definitions, ready for ``recscope experiment analyze``;
* ``truth.json``: the true value of every metric in every cell, short- and long-run, the
  true effects and, for factorial designs, the true Shapley shares.
"""

from __future__ import annotations

import itertools
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recscope.errors import ConfigError
from recscope.experiments.assignment import HOLDOUT, Experiment, Holdout, assign
from recscope.experiments.metrics import load_config, parse_config
from recscope.io import read_toml, write_json, write_parquet, write_text
from recscope.report import HtmlReport, Result
from recscope.sim.config import WorldConfig, load_world_config
from recscope.sim.environment import Environment, SimConfig
from recscope.sim.ground_truth import GroundTruth, replay_cells
from recscope.sim.policies import RANKERS, RETRIEVERS, StackPolicy, WorldIndex
from recscope.sim.truth import WorldTruth, build_truth

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
_STACK_KEYS = {"retriever", "ranker", "temperature", "pool", "policy", "pipeline"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorldSpec(_Strict):
    """Which world: the built-in one (scaled, seeded, or from a world TOML) or one
    calibrated from real logs (``movielens`` folder, optional ``obd`` folder)."""

    seed: int = Field(default=0, ge=0)
    scale: float = Field(default=1.0, gt=0.0, le=100.0)
    config: str | None = None
    movielens: str | None = None
    obd: str | None = None


class LayerSpec(_Strict):
    """One experiment in its own layer: variants are overrides of the stack."""

    name: str
    layer: str | None = None
    variants: dict[str, dict[str, Any]]
    weights: list[float] | None = None
    traffic: tuple[float, float] = (0.0, 1.0)
    salt: str | None = None
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> LayerSpec:
        if len(self.variants) < 2:
            raise ValueError("an experiment needs at least two variants")
        if "control" not in self.variants:
            raise ValueError("one variant must be called 'control'")
        for v, spec in self.variants.items():
            bad = set(spec) - _STACK_KEYS
            if bad:
                raise ValueError(f"variant {v!r}: unknown key {sorted(bad)[0]!r} "
                                 f"(allowed: {', '.join(sorted(_STACK_KEYS))})")
        return self


class ExperimentSpec(_Strict):
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

    @model_validator(mode="after")
    def _check(self) -> ExperimentSpec:
        names = [e.name for e in self.experiment]
        if not names or len(set(names)) != len(names):
            raise ValueError("experiment names must be distinct and at least one is needed")
        if self.long_run_days and self.long_run_days < self.days:
            raise ValueError("long_run_days must be 0 or at least days")
        bad = set(self.policy) - _STACK_KEYS
        if bad:
            raise ValueError(f"unknown policy key {sorted(bad)[0]!r}")
        return self


def parse_experiment(data: dict[str, Any], *, file: str | None = None) -> ExperimentSpec:
    """Validate a mapping into an :class:`ExperimentSpec`; errors name key and file."""
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or None
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(msg, key=key, file=file) from None


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
    return spec.model_copy(update={"world": world, "metrics": rel(spec.metrics),
                                   "policy": stack(spec.policy), "experiment": layers})


def build_world(spec: WorldSpec) -> WorldTruth:
    """The world's truth: calibrated from real logs, or the built-in world (same truth as
    :meth:`recscope.sim.World.generate` with that config, without generating the log)."""
    if spec.movielens is not None:
        from recscope.sim.calibrate import calibrate_world

        return calibrate_world(spec.movielens, obd=spec.obd, seed=spec.seed).truth
    cfg = load_world_config(spec.config) if spec.config else WorldConfig()
    cfg = cfg.model_copy(update={"seed": spec.seed})
    if spec.scale != 1.0:
        cfg = cfg.scaled(spec.scale)
    seeds = np.random.SeedSequence(cfg.seed).spawn(4)
    return build_truth(cfg, np.random.default_rng(seeds[0]))


def world_log(spec: WorldSpec) -> Any:
    """Training data for pipeline variants: the clicks and saves of the built-in world's
    log (same config and seed as :func:`build_world`), or the MovieLens ratings of a
    calibrated world (whose indices are the world's)."""
    if spec.movielens is not None:
        from recscope.data.loaders import load_movielens

        return load_movielens(spec.movielens)
    from recscope.sim.world import World

    cfg = load_world_config(spec.config) if spec.config else WorldConfig()
    cfg = cfg.model_copy(update={"seed": spec.seed})
    if spec.scale != 1.0:
        cfg = cfg.scaled(spec.scale)
    return World.generate(cfg).interactions.filter(events=["click", "save"])


class PolicyFactory:
    """Builds stack policies from specs, sharing components between cells."""

    def __init__(self, truth: WorldTruth, seed: int = 0,
                 parts: dict[tuple[str, str], Any] | None = None,
                 train_data: Callable[[], Any] | None = None) -> None:
        self.truth = truth
        self.seed = seed
        self.index = WorldIndex(truth, seed=seed)
        self._parts: dict[tuple[str, str], Any] = dict(parts or {})
        self._train_data = train_data
        self._train: Any = None
        self._pipelines: dict[str, Any] = {}

    def pipeline(self, path: str) -> Any:
        """A recscope :class:`~recscope.pipeline.Pipeline` from its TOML file, fitted on
        the clicks and saves of the world's log (once per file)."""
        if path not in self._pipelines:
            from recscope.pipeline import Pipeline

            if self._train_data is None:
                raise ConfigError("pipeline variants need the world's log to train on",
                                  key="pipeline")
            if self._train is None:
                self._train = self._train_data()
            self._pipelines[path] = Pipeline.from_toml(path).fit(self._train)
        return self._pipelines[path]

    def part(self, kind: str, name: str) -> Any:
        """The retriever or ranker called ``name``: one given to the factory (for
        example a fitted recscope component), else a built-in one."""
        if (kind, name) in self._parts:
            return self._parts[(kind, name)]
        table = RETRIEVERS if kind == "retriever" else RANKERS
        if name not in table:
            raise ConfigError(f"unknown built-in {kind} {name!r}; expected one of "
                              f"{sorted(table)}", key=kind)
        if (kind, name) not in self._parts:
            self._parts[(kind, name)] = table[name](self.truth, self.seed)
        return self._parts[(kind, name)]

    def stack(self, spec: dict[str, Any], name: str) -> StackPolicy:
        """The stack of a variant: built-in or given parts, a named policy, or a recscope
        pipeline (``pipeline = "file.toml"``: its ranked lists are the candidates and its
        scores order them, with Plackett–Luce noise of ``temperature``)."""
        s = dict(spec)
        if "pipeline" in s:
            from recscope.sim.policies import ComponentRanker, ComponentRetriever

            pipe = self.pipeline(str(s["pipeline"]))
            return StackPolicy(self.truth, ComponentRetriever(pipe, self.truth.n_users),
                               ComponentRanker(pipe), pool=int(s.get("pool", 100)),
                               temperature=float(s.get("temperature", 0.3)),
                               index=self.index, seed=self.seed, name=name)
        if "policy" in s:
            named = s.pop("policy")
            if named not in NAMED_POLICIES:
                raise ConfigError(f"unknown named policy {named!r}; expected one of "
                                  f"{sorted(NAMED_POLICIES)}", key="policy")
            s = {**NAMED_POLICIES[named], **s}
        return StackPolicy(self.truth, self.part("retriever", s.get("retriever", "popular")),
                           self.part("ranker", s.get("ranker", "affinity")),
                           pool=int(s.get("pool", 100)),
                           temperature=float(s.get("temperature", 0.3)), index=self.index,
                           seed=self.seed, name=name)


@dataclass
class Design:
    """Cells of the design and every user's cell and per-layer variant."""

    layers: list[LayerSpec]
    cell_names: list[str]
    cell_specs: list[dict[str, Any]]
    user_cell: np.ndarray
    user_variants: list[np.ndarray]
    in_experiment: np.ndarray

    @property
    def components(self) -> list[str]:
        """Layer names when the design is a 2^K factorial with K >= 2."""
        if len(self.layers) >= 2 and all(len(x.variants) == 2 for x in self.layers):
            return [x.name for x in self.layers]
        return []


def make_design(spec: ExperimentSpec, n_users: int) -> Design:
    """Assign every user in every layer and enumerate the cells (layer 0 = lowest digit)."""
    layers = spec.experiment
    units = np.arange(n_users, dtype=np.int64)
    variant_names = [["control", *[v for v in x.variants if v != "control"]] for x in layers]
    user_variants = []
    idx = np.zeros(n_users, dtype=np.int64)
    radix = 1
    in_exp = np.zeros(n_users, dtype=bool)
    for x, names in zip(layers, variant_names, strict=True):
        weights = None
        if x.weights is not None:
            if len(x.weights) != len(x.variants):
                raise ConfigError("one weight per variant", key=f"experiment.{x.name}.weights")
            order = list(x.variants)
            weights = [x.weights[order.index(v)] for v in names]
        e = Experiment(name=x.name, variants=tuple(names), weights=weights,
                       layer=x.layer or x.name, traffic=tuple(x.traffic),
                       salt=x.salt or f"{spec.name}:{x.name}:{spec.seed}",
                       holdout=Holdout(x.holdout, salt=spec.name) if x.holdout else None)
        v = assign(units, e)
        ok = np.array([a is not None and a != HOLDOUT for a in v])
        lut = {n: i for i, n in enumerate(names)}
        vi = np.array([lut[a] if o else 0 for a, o in zip(v, ok, strict=True)], dtype=np.int64)
        user_variants.append(np.where(ok, v, None))
        in_exp |= ok
        idx += vi * radix
        radix *= len(names)
    cell_names, cell_specs = [], []
    for combo in itertools.product(*[range(len(n)) for n in variant_names[::-1]]):
        combo = combo[::-1]
        specv = dict(spec.policy)
        parts = []
        for x, names, c in zip(layers, variant_names, combo, strict=True):
            specv.update(x.variants[names[c]])
            if c:
                parts.append(x.name if names[c] == "treatment" and len(layers) > 1 else
                             (names[c] if len(layers) == 1 else f"{x.name}={names[c]}"))
        cell_names.append("+".join(parts) if parts else "control")
        cell_specs.append(specv)
    # itertools.product with reversed lists yields layer 0 as the fastest digit
    return Design(list(layers), cell_names, cell_specs, idx, user_variants, in_exp)


class SimulatedExperiment(Result):
    """What :func:`run_experiment` did: counts, timings, output files and the truth."""

    kind = "simulated_experiment"

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return self.data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulatedExperiment:
        return cls(data)

    def rich_table(self) -> Any:
        from rich.table import Table

        t = Table(title=f"simulated experiment {self.data['name']}")
        t.add_column("metric")
        cells = self.data["truth"]["cells"] if self.data.get("truth") else []
        for c in cells:
            t.add_column(f"true {c}", justify="right")
        for m, entry in (self.data.get("truth") or {}).get("metrics", {}).items():
            t.add_row(m, *[f"{entry['cells'][c]:.4g}" for c in cells])
        return t

    def to_html(self) -> str:
        rep = HtmlReport(f"Simulated experiment {self.data['name']}",
                         f"{self.data['n_units']:,} units, {self.data['days']} days")
        rep.key_values({k: v for k, v in self.data.items()
                        if isinstance(v, int | float | str)})
        truth = self.data.get("truth") or {}
        rows = [{"metric": m, **{f"true {c}": v for c, v in e["cells"].items()}}
                for m, e in truth.get("metrics", {}).items()]
        if rows:
            rep.heading("Ground truth per cell").table(rows)
        return rep.render()


Progress = Callable[[str, int, int], None]


def run_experiment(spec: ExperimentSpec, out_dir: str | Path | None = None, *,
                   truth_world: WorldTruth | None = None, progress: Progress | None = None,
                   parts: dict[tuple[str, str], Any] | None = None,
                   ) -> tuple[SimulatedExperiment, dict[str, Any]]:
    """Simulate ``spec``; write the logs and truth under ``out_dir`` when given.

    ``parts`` maps ``("retriever" | "ranker", name)`` to stage objects (for example
    :class:`~recscope.sim.policies.ComponentRetriever` around a fitted recscope
    component) that the spec's variants can name besides the built-in ones.

    Returns the summary and the in-memory tables (``assignments``, ``events``,
    ``metrics`` config, ``truth`` :class:`GroundTruth`, ``daily`` stats).
    """
    t0 = time.perf_counter()
    truth = truth_world if truth_world is not None else build_world(spec.world)
    metrics_text = _metrics_text(spec)
    analysis = parse_config(tomllib.loads(metrics_text), source=spec.metrics)
    env = Environment(truth, spec.simulation, seed=spec.seed)
    design = make_design(spec, truth.n_users)
    factory = PolicyFactory(truth, seed=spec.seed, parts=parts,
                            train_data=lambda: world_log(spec.world))
    policies = [factory.stack(s, n) for s, n in zip(design.cell_specs, design.cell_names,
                                                    strict=True)]

    def tick(stage: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda i, n: progress(stage, i, n))

    warm = env.run([policies[0]], days=spec.warmup_days, calibrate=True,
                   progress=tick("warm-up"), names=[design.cell_names[0]])
    state = warm.state
    arm = np.where(design.in_experiment, design.user_cell, 0)
    res = env.run(policies, days=spec.days, arm=arm, state=state,
                  progress=tick("experiment"), names=design.cell_names)
    first = res.first_exposure(truth.n_users)
    units = np.flatnonzero((first >= 0) & design.in_experiment)
    assignments = _assignment_table(design, units, first)
    pre = warm.events_table()
    exp_events = res.events_table()
    events = pa.concat_tables([pre, exp_events])
    keep = np.zeros(truth.n_users, dtype=bool)
    keep[units] = True
    events = events.filter(pa.array(keep[events.column("unit_id").to_numpy()]))
    gt: GroundTruth | None = None
    if spec.truth:
        exposure = np.full(truth.n_users, -1, dtype=np.int64)
        exposure[units] = first[units]
        gt = replay_cells(env, policies, state, days=spec.days, units=units,
                          exposure=exposure, metrics=analysis.metrics,
                          cell_names=design.cell_names, long_run_days=spec.long_run_days,
                          components=design.components, progress=tick("ground truth"))
    counts = dict(zip(*np.unique(assignments.column("variant").to_numpy(zero_copy_only=False),
                                 return_counts=True), strict=True))
    summary = {
        "name": spec.name, "seed": spec.seed, "days": spec.days,
        "warmup_days": spec.warmup_days, "n_users": truth.n_users,
        "n_items": truth.n_items, "n_units": int(units.size),
        "units_per_variant": {str(k): int(v) for k, v in counts.items()},
        "cells": design.cell_names, "components": design.components,
        "impressions": res.n_impressions, "requests": res.n_requests,
        "warmup_impressions": warm.n_impressions,
        "seconds": round(time.perf_counter() - t0, 3),
        "daily": res.daily,
        "truth": gt.to_dict() if gt is not None else None,
    }
    result = SimulatedExperiment(summary)
    if out_dir is not None:
        out = Path(out_dir)
        write_parquet(out / "assignments.parquet", assignments)
        write_parquet(out / "events.parquet", events)
        write_text(out / "metrics.toml", metrics_text)
        if gt is not None:
            write_json(out / "truth.json", {"experiment": spec.name, **gt.to_dict()})
        write_json(out / "summary.json", summary)
    return result, {"assignments": assignments, "events": events, "metrics": analysis,
                    "truth": gt, "daily": res.daily, "design": design}


def _metrics_text(spec: ExperimentSpec) -> str:
    if spec.metrics is not None:
        p = Path(spec.metrics)
        load_config(p)  # validate early, with the file's name in errors
        return p.read_text(encoding="utf-8")
    return DEFAULT_METRICS + (RETENTION_METRIC if spec.days >= 14 else "")


def _assignment_table(design: Design, units: np.ndarray, first: np.ndarray) -> pa.Table:
    from recscope.data.schema import TIMESTAMP_TYPE

    cols: dict[str, Any] = {
        "unit_id": pa.array(units.astype(np.int64)),
        "variant": pa.array(np.asarray(design.cell_names, dtype=object)[
            design.user_cell[units]].tolist(), pa.string()),
        "first_exposure_ts": pa.array(first[units], TIMESTAMP_TYPE),
    }
    if len(design.layers) == 1:
        v = design.user_variants[0][units]
        cols["variant"] = pa.array(v.tolist(), pa.string())
    else:
        for x, v in zip(design.layers, design.user_variants, strict=True):
            cols[x.name] = pa.array(v[units].tolist(), pa.string())
    return pa.table(cols)


def unit_totals(assignments: pa.Table, events: pa.Table, columns: list[str],
                ) -> dict[str, np.ndarray]:
    """Per-unit sums of event ``columns`` at or after each unit's first exposure, aligned
    with the rows of ``assignments`` (units without events get 0)."""
    ids = assignments.column("unit_id").to_numpy()
    first = assignments.column("first_exposure_ts").cast(pa.int64()).to_numpy()
    order = np.argsort(ids, kind="stable")
    units = events.column("unit_id").to_numpy()
    ts = events.column("ts").cast(pa.int64()).to_numpy()
    pos = np.searchsorted(ids[order], units)
    pos = np.minimum(pos, ids.size - 1)
    found = ids[order][pos] == units
    row = order[pos]
    keep = found & (ts >= first[row])
    return {c: np.bincount(row[keep], events.column(c).to_numpy()[keep].astype(np.float64),
                           minlength=ids.size) for c in columns}
