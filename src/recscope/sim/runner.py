"""Run a simulated online experiment and return what it did, with its ground truth.

:func:`run_experiment` assigns every user (:mod:`recscope.sim.cells`), simulates a warm-up
under the incumbent and then the experiment, replays every cell for the ground truth
(:mod:`recscope.sim.true_effects`) and returns one :class:`SimulatedExperiment`: counts,
timings, the in-memory logs and the truth. With ``out_dir`` it also writes the logs
(:mod:`recscope.sim.output`).
"""

from __future__ import annotations

import dataclasses
import time
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from recscope.core.progress import Progress
from recscope.errors import ConfigError
from recscope.experiments.assignment import Experiment, Holdout
from recscope.experiments.metrics import load_metrics, parse_metrics
from recscope.results import Effect, Result
from recscope.sim.cells import Cells, assign_cells
from recscope.sim.environment import Environment, Schedule
from recscope.sim.experiment_config import DEFAULT_METRICS, RETENTION_METRIC, ExperimentSpec
from recscope.sim.output import assignment_table, write_outputs
from recscope.sim.policy_factory import PolicyFactory
from recscope.sim.true_effects import GroundTruth, replay_cells
from recscope.sim.world_model import WorldTruth
from recscope.sim.world_source import build_world, world_log

_Memory = Annotated[Any, Field(exclude=True)]


@dataclasses.dataclass
class SimulatedExperiment(Result):
    """What :func:`run_experiment` did: counts, timings and the ground truth.

    :meth:`effects` gives the true effect of every cell against control (``estimate`` =
    the true effect, ``extra`` holds the ``variant``, ``horizon`` and the cell values).
    ``assignments``, ``events``, ``metrics`` (the parsed metric config), ``metrics_toml``
    and ``cells`` are kept in memory for analysis and are not part of the JSON.
    """

    kind: ClassVar[str] = "simulated_experiment"
    title: ClassVar[str] = "Simulated experiment: true effects"

    name: str
    seed: int
    days: int
    warmup_days: int
    n_users: int
    n_items: int
    n_units: int
    units_per_variant: dict[str, int]
    cell_names: list[str]
    components: list[str]
    impressions: int
    requests: int
    warmup_impressions: int
    seconds: float
    daily: list[dict[str, Any]]
    truth: GroundTruth | None = None
    design: dict[str, Any] | None = None
    assignments: _Memory = None
    events: _Memory = None
    metrics: _Memory = None
    metrics_toml: _Memory = None
    cells: _Memory = None

    def effects(self) -> list[Effect]:
        return [] if self.truth is None else self.truth.effects()

    def notes(self) -> list[str]:
        if self.truth is None:
            return ["No ground truth: the experiment ran without the replays (--no-truth)."]
        return []

    def rich_table(self) -> Any:
        """True metric values per cell (the estimates come from ``experiment analyze``)."""
        from rich.table import Table

        t = Table(title=f"simulated experiment {self.name}: true values")
        t.add_column("metric")
        if self.truth is None:
            return t
        for c in self.truth.cells:
            t.add_column(f"true {c}", justify="right")
        for m in self.truth.metrics:
            t.add_row(m, *[f"{self.truth.short_run[m][c]:.4g}" for c in self.truth.cells])
        return t

    def save_to(self, out_dir: str | Path, *, force: bool = True) -> Path:
        """Write the logs, metrics, truth and summary into ``out_dir`` (all or none)."""
        if self.assignments is None:
            from recscope.errors import ConfigError

            raise ConfigError("this result was loaded from JSON and holds no logs to write",
                              key="assignments")
        return write_outputs(out_dir, self, force=force)


def run_experiment(spec: ExperimentSpec, out_dir: str | Path | None = None, *,
                   truth_world: WorldTruth | None = None, progress: Progress | None = None,
                   parts: dict[tuple[str, str], Any] | None = None,
                   force: bool = True, spec_file: str | None = None) -> SimulatedExperiment:
    """Simulate ``spec``; write the logs and truth under ``out_dir`` when given.

    ``parts`` maps ``("retriever" | "ranker", name)`` to stage objects (for example
    :class:`~recscope.sim.stacks.ComponentRetriever` around a fitted recscope component)
    that the spec's variants can name besides the built-in ones. ``progress(stage, done,
    total)`` reports simulated days of the ``warm-up``, ``experiment`` and ``ground
    truth`` stages. ``force``: see :func:`recscope.sim.output.write_outputs`.

    With a ``[design]`` other than ``unit`` (:mod:`recscope.sim.designs`) users are
    assigned by cluster (the assignments get ``cluster_id`` and, hierarchical, ``mode``)
    or the experiment is a switchback: ``assignments`` is then the schedule (``region``,
    ``slice``, ``variant``) and the events carry ``region``, ``slice`` and ``arm``.
    ``spec_file`` names the experiment file in errors.
    """
    t0 = time.perf_counter()
    truth = truth_world if truth_world is not None else build_world(spec.world)
    metrics_text = _metrics_text(spec)
    analysis = parse_metrics(tomllib.loads(metrics_text), source=spec.metrics)
    env = Environment(truth, spec.simulation, seed=spec.seed)
    cells = assign_cells(spec, truth.n_users)
    factory = PolicyFactory(truth, seed=spec.seed, parts=parts,
                            train_data=lambda: world_log(spec.world))
    policies = [factory.stack(s, n) for s, n in zip(cells.cell_specs, cells.cell_names,
                                                    strict=True)]
    from recscope.sim.designs import EngagementStats

    engagement = EngagementStats.for_designs(env, [spec.design])
    warm = env.run([policies[0]], days=spec.warmup_days, calibrate=True, progress=progress,
                   names=[cells.cell_names[0]], stage="warm-up", observe=engagement)
    state = warm.state
    plan = None
    if spec.design is not None and spec.design.kind == "creator":
        raise ConfigError("a creator-side design is simulated by `recscope experiment "
                          "design-compare` (its units and logs are creators); simulate runs "
                          "unit, cluster, hierarchical and switchback designs",
                          key="design.kind", file=spec_file)
    if spec.design is not None and spec.design.kind != "unit":
        from recscope.sim.designs import plan_design

        plan = plan_design(env, spec.design, design_experiment(spec), days=spec.days,
                           start_us=env.start_us + state.day * 86_400_000_000,
                           seed=spec.seed, file=spec_file, engagement=engagement)
        arm: Any = plan.arm if isinstance(plan.arm, Schedule) else np.maximum(plan.arm, 0)
    else:
        arm = np.where(cells.in_experiment, cells.user_cell, 0)
    res = env.run(policies, days=spec.days, arm=arm, state=state, progress=progress,
                  names=cells.cell_names, stage="experiment")
    first = res.first_exposure(truth.n_users)
    if plan is not None:
        from recscope.sim.designs import design_tables

        assignments, events, units = design_tables(plan, res, env, cells.cell_names)
    else:
        units = np.flatnonzero((first >= 0) & cells.in_experiment)
        assignments = assignment_table(cells, units, first)
        events = pa.concat_tables([warm.events_table(), res.events_table()])
        keep = np.zeros(truth.n_users, dtype=bool)
        keep[units] = True
        events = events.filter(pa.array(keep[events.column("unit_id").to_numpy()]))
    gt: GroundTruth | None = None
    if spec.truth:
        exposure = np.full(truth.n_users, -1, dtype=np.int64)
        exposure[units] = first[units]
        gt = replay_cells(env, policies, state, days=spec.days, units=units,
                          exposure=exposure, metrics=analysis.metrics,
                          cell_names=cells.cell_names, long_run_days=spec.long_run_days,
                          components=cells.components, progress=progress)
    counts = dict(zip(*np.unique(assignments.column("variant").to_numpy(zero_copy_only=False),
                                 return_counts=True), strict=True))
    result = SimulatedExperiment(
        name=spec.name, seed=spec.seed, days=spec.days, warmup_days=spec.warmup_days,
        n_users=truth.n_users, n_items=truth.n_items, n_units=int(units.size),
        units_per_variant={str(k): int(v) for k, v in counts.items()},
        cell_names=cells.cell_names, components=cells.components,
        design=None if plan is None else {"kind": plan.design.kind, "label": plan.label,
                                          **plan.design.model_dump(), **plan.clustering},
        impressions=res.n_impressions, requests=res.n_requests,
        warmup_impressions=warm.n_impressions,
        seconds=round(time.perf_counter() - t0, 3), daily=res.daily, truth=gt,
        assignments=assignments, events=events, metrics=analysis, metrics_toml=metrics_text,
        cells=cells)
    if out_dir is not None:
        result.save_to(out_dir, force=force)
    return result


def design_experiment(spec: ExperimentSpec) -> Experiment:
    """The assignment experiment of a one-layer, two-variant spec, with the salt, layer,
    traffic and holdout :func:`recscope.sim.cells.assign_cells` would use."""
    x = spec.experiment[0]
    treat = next(v for v in x.variants if v != "control")
    return Experiment(name=x.name, variants=("control", treat), layer=x.layer or x.name,
                      traffic=tuple(x.traffic),
                      salt=x.salt or f"{spec.name}:{x.name}:{spec.seed}",
                      holdout=Holdout(x.holdout, salt=spec.name) if x.holdout else None)


def _metrics_text(spec: ExperimentSpec) -> str:
    if spec.metrics is not None:
        p = Path(spec.metrics)
        load_metrics(p)  # validate early, with the file's name in errors
        return p.read_text(encoding="utf-8")
    return DEFAULT_METRICS + (RETENTION_METRIC if spec.days >= 14 else "")


__all__ = ["Cells", "SimulatedExperiment", "run_experiment"]
