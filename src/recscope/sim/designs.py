"""Interference-aware designs in the simulator, and the design advisor.

:func:`plan_design` turns a :class:`recscope.experiments.designs.DesignConfig` into what
the simulator serves: a policy index per user (``unit``, ``cluster``, ``hierarchical``),
a :class:`~recscope.sim.environment.Schedule` (``switchback``) or an arm per creator
(``creator``: every user's slate holds the control ranking's pins of control creators
and the treatment ranking's pins of treatment creators, merged by rank,
:class:`CreatorSplit`; the units are creators and the metrics are on the creator side:
exposure, clicks and saves, CTR of their pins, with a related-pins slate credited to the
creator whose pin started it (:class:`CreatorStats`); analysed by
:func:`~recscope.experiments.clustered.analyze_design` with every creator its own cluster
and the creator design's CR3 jackknife variance with Satterthwaite df, since a few
creators hold much of an arm's exposure). Every design assigns
through the functions of :mod:`recscope.experiments.designs` (the one assignment hash),
so the simulator and a service assign identically. Where the clusters come from
(``design.graph``):

- ``"social"``: the simulated follow graph (``simulation.social``), partitioned with
  :func:`recscope.experiments.clusters.cluster_graph` (Leiden or METIS);
- ``"regions"``: the simulator's markets (``simulation.regions``): a cluster is a region,
  whose users share that market's creator supply;
- ``"engagement"``: the user–creator engagement graph of the warm-up (each user's clicks
  on each creator's pins, :class:`EngagementStats`), partitioned with
  :func:`recscope.experiments.clusters.cluster_bipartite`: users who engage with the same
  creators share a cluster;
- a path: an edge list of user indices (``read_edges``; an id that is not a user of the
  world is an error naming the file, column and row), or a ready-made clustering (a
  table with ``unit_id`` and ``cluster_id``: every user once, in one cluster);
- not given: ``"social"`` when the social channel is on, else ``"regions"`` when there
  are several markets.

:func:`compare_designs` is the design advisor (``recscope experiment design-compare``):
seeded repetitions of the same change under every design, each judged against the
ground truth: the global all-treatment versus all-control replay with common random
numbers, measured with the design's own metric definition (per unit after first
exposure for user designs; per (region, slice) cell after burn-in for switchbacks). A
repetition re-draws every random number of the platform and the assignment salt; the
world and the truth replays are shared by the designs of one repetition.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from scipy import stats

from recscope.core.progress import Progress, report
from recscope.data.schema import TIMESTAMP_TYPE
from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.assignment import Experiment, assign
from recscope.experiments.designs import (
    GRAPHS,
    DesignConfig,
    assign_clusters,
    check_arms,
    hierarchical_assign,
    switchback_schedule,
)
from recscope.experiments.metrics import AnalysisConfig, Metric
from recscope.results import Effect, Result
from recscope.sim.environment import Environment, Schedule, SimResult
from recscope.sim.true_effects import event_columns, metric_value

_HOUR_US = 3_600_000_000
_DAY_US = 24 * _HOUR_US
Z_MDE = float(stats.norm.ppf(0.975) + stats.norm.ppf(0.8))
"""MDE multiplier: two-sided 5% test with 80% power (MDE = 2.80 × SE)."""


@dataclasses.dataclass
class DesignPlan:
    """How one design assigns the simulated users (see the module docstring)."""

    design: DesignConfig
    label: str
    arm: np.ndarray | Schedule
    cluster: np.ndarray | None = None
    mode: np.ndarray | None = None
    schedule: np.ndarray | None = None  # [region, slice] variant index
    creator_arm: np.ndarray | None = None  # creator design: variant index per creator
    clustering: dict[str, Any] = dataclasses.field(default_factory=dict)


def design_label(d: DesignConfig) -> str:
    """A short readable name: ``unit``, ``cluster:social``, ``switchback:72h/48h`` ..."""
    if d.kind == "switchback":
        return (f"switchback:{d.slice_hours:g}h/{d.burn_in_hours:g}h"
                + (f"x{d.regions}" if d.regions > 1 else ""))
    if d.kind in ("cluster", "hierarchical"):
        g = d.graph or "auto"
        return (f"{d.kind}:{g if g in (*GRAPHS, 'auto') else Path(g).name}"
                + (":metis" if d.method == "metis" and g != "regions" else ""))
    return d.kind


def _graph_source(env: Environment, d: DesignConfig, file: str | None) -> str:
    g = d.graph
    if g is None:
        if env.social is not None:
            return "social"
        if env.config.regions > 1:
            return "regions"
        raise ConfigError(f"a {d.kind} design in the simulator needs clusters: the social "
                          "graph (simulation.social.enabled), markets (simulation.regions > "
                          "1) or a graph file (design.graph)", key="design.graph", file=file)
    if g == "social" and env.social is None:
        raise ConfigError("graph = 'social' needs the social channel (simulation.social."
                          "enabled = true)", key="design.graph", file=file)
    if g == "regions" and env.config.regions < 4:
        raise ConfigError("graph = 'regions' needs at least 4 markets (simulation.regions)",
                          key="design.graph", file=file)
    return g


def user_clusters(env: Environment, d: DesignConfig, *, seed: int, file: str | None = None,
                  base: Path | None = None, engagement: EngagementStats | None = None,
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """A cluster id per user for a cluster or hierarchical design, and a summary.
    ``engagement``: the warm-up's user–creator clicks (``graph = "engagement"``)."""
    from recscope.experiments.clusters import cluster_bipartite, cluster_graph, read_edges

    n = env.truth.n_users
    g = _graph_source(env, d, file)
    if g == "engagement":
        if engagement is None:
            raise ConfigError("graph = 'engagement' needs the warm-up's clicks "
                              "(EngagementStats)", key="design.graph", file=file)
        u, c, w = engagement.edges()
        if not u.size:
            raise ConfigError("graph = 'engagement' found no clicks in the warm-up: give it "
                              "warm-up days (warmup_days)", key="warmup_days", file=file)
        cb = cluster_bipartite(n, env.n_creators, u, c, weights=w, method=d.method,
                               n_clusters=d.n_clusters, seed=seed)
        return cb.cluster, {"graph": g, **cb.summary()}
    if g == "regions":
        sizes = np.bincount(env.region)
        return env.region.copy(), {"graph": "regions", "n_clusters": int(sizes.size),
                                   "cut_fraction": float("nan"),
                                   "size_min": int(sizes.min()), "size_max": int(sizes.max())}
    if g == "social":
        assert env.social is not None
        src, dst = env.social.edges
        weights = None
    else:
        p = Path(g) if Path(g).is_absolute() or base is None else base / g
        table = _cluster_table(p, n)
        if table is not None:
            sizes = np.bincount(np.unique(table, return_inverse=True)[1])
            return table, {"graph": str(p), "table": True, "n_clusters": int(sizes.size),
                           "cut_fraction": float("nan"), "size_min": int(sizes.min()),
                           "size_max": int(sizes.max())}
        edges = read_edges(p, units=np.arange(n, dtype=np.int64))
        src, dst, weights = edges.src, edges.dst, edges.weights
    cl = cluster_graph(n, src, dst, weights=weights, method=d.method,
                       n_clusters=d.n_clusters, seed=seed)
    return cl.cluster, {"graph": g, **cl.summary()}


def _cluster_table(path: Path, n_users: int) -> np.ndarray | None:
    """A ready-made clustering: a file with ``unit_id`` and ``cluster_id`` columns (every
    user of the world once); None when the file is an edge list instead."""
    from recscope.errors import DataValidationError
    from recscope.experiments.clusters import read_table
    from recscope.experiments.designs import check_unique_clusters

    t = read_table(path)
    if "cluster_id" not in t.column_names:
        return None
    file = str(path)
    if "unit_id" not in t.column_names:
        raise DataValidationError("a cluster table needs a unit_id column beside cluster_id",
                                  file=file, column="unit_id")
    u = t.column("unit_id").to_numpy(zero_copy_only=False)
    c = t.column("cluster_id").to_numpy(zero_copy_only=False)
    if u.dtype.kind not in "iu":
        raise DataValidationError("unit ids must be the world's user indices (integers)",
                                  file=file, column="unit_id")
    bad = (u < 0) | (u >= n_users)
    if bad.any():
        row = int(np.argmax(bad)) + 1
        raise DataValidationError(f"unit {u[row - 1]} is not a user of the world (0 to "
                                  f"{n_users - 1})", file=file, column="unit_id", row=row)
    check_unique_clusters(u, c, file=file)
    uniq_u, first = np.unique(u, return_index=True)
    if uniq_u.size != n_users:
        missing = int(np.setdiff1d(np.arange(n_users), uniq_u)[0])
        raise DataValidationError(f"user {missing} has no cluster ({n_users - uniq_u.size:,} "
                                  "users missing; every user of the world needs one)",
                                  file=file, column="unit_id")
    out = np.empty(n_users, dtype=c.dtype)
    out[uniq_u] = c[first]
    return np.unique(out, return_inverse=True)[1].astype(np.int64)


def plan_design(env: Environment, d: DesignConfig, experiment: Experiment, *, days: int,
                start_us: int, seed: int = 0, file: str | None = None,
                base: Path | None = None,
                cache: dict[Any, tuple[np.ndarray, dict[str, Any]]] | None = None,
                engagement: EngagementStats | None = None) -> DesignPlan:
    """Assign the world's users (or its region × time cells) under design ``d``.

    ``experiment`` must have the variants ``("control", "treatment")`` (index 0 is the
    incumbent, served by policy 0). ``start_us``: when the experiment starts (switchback
    slice 0). Users outside the experiment's traffic get -1 and are served control.
    ``cache`` (a dict) keeps clusterings between designs on the same graph;
    ``engagement``: the warm-up's clicks, for ``graph = "engagement"``.
    """
    n = env.truth.n_users
    label = design_label(d)
    if d.kind == "unit":
        names = list(experiment.variants)
        v = assign(np.arange(n, dtype=np.int64), experiment)
        arm = np.array([names.index(x) if x in names else -1 for x in v], dtype=np.int64)
        return DesignPlan(d, label, arm)
    if d.kind in ("cluster", "hierarchical"):
        key = (d.graph, d.method, d.n_clusters, seed)
        if cache is not None and key in cache:
            cluster, summary = cache[key][0], dict(cache[key][1])
        else:
            cluster, summary = user_clusters(env, d, seed=seed, file=file, base=base,
                                             engagement=engagement)
            if cache is not None:
                cache[key] = (cluster, dict(summary))
        # too few clusters per arm: the cluster table's fault, else the design's
        where = summary["graph"] if summary.pop("table", False) else file
        if d.kind == "cluster":
            arm = assign_clusters(cluster, experiment)
            check_arms(arm, cluster, 2, file=where)
            return DesignPlan(d, label, arm, cluster=cluster, clustering=summary)
        arm, mode = hierarchical_assign(cluster, experiment, d.cluster_share)
        by_cluster = mode == "cluster"
        check_arms(arm[by_cluster], cluster[by_cluster], 2, file=where)
        return DesignPlan(d, label, arm, cluster=cluster, mode=mode, clustering=summary)
    if d.kind == "switchback":
        n_slices = d.n_slices(days * 24.0, file=file)
        if d.regions not in (1, env.config.regions):
            raise ConfigError(f"design.regions must be 1 or the simulator's "
                              f"{env.config.regions} markets (simulation.regions), got "
                              f"{d.regions}", key="design.regions", file=file)
        sched = switchback_schedule(n_slices, d.regions, experiment)
        r, s = np.meshgrid(np.arange(d.regions), np.arange(n_slices), indexing="ij")
        check_arms(sched.ravel(), (r * n_slices + s).ravel(), 2, file=file,
                   what="switchback cells")
        region = env.region if d.regions > 1 else np.zeros(n, dtype=np.int64)
        sch = Schedule(np.ascontiguousarray(sched.T), region, int(start_us),
                       round(d.slice_hours * _HOUR_US))
        return DesignPlan(d, label, sch, schedule=sched,
                          clustering={"n_slices": n_slices, "n_regions": d.regions})
    if d.kind == "creator":
        creators = np.arange(env.n_creators, dtype=np.int64)
        carm = assign_clusters(creators, experiment)
        check_arms(carm, creators, 2, file=file, what="creators")
        return DesignPlan(d, label, np.full(n, 2, dtype=np.int64), creator_arm=carm,
                          clustering={"n_creators": int(env.n_creators)})
    raise ConfigError(f"design kind {d.kind!r} is not simulated", key="design.kind",
                      file=file)


CREATOR_METRICS = """unit = "unit_id"
variant = "variant"
control = "control"
[metrics.ctr]
kind = "ratio"
numerator = "clicks"
denominator = "impressions"
[metrics.exposure]
kind = "mean"
column = "impressions"
[metrics.clicks_received]
kind = "mean"
column = "clicks"
[metrics.saves_received]
kind = "mean"
column = "saves"
"""
"""Creator-side metrics of a creator-randomised experiment (per creator over the run;
a related-pins slate counts for the creator whose pin started it, :class:`CreatorStats`)."""


class CreatorSplit:
    """The slate of a creator-side experiment: the control ranking's pins of control
    creators and the treatment ranking's pins of treatment creators, interleaved by their
    rank in their own ranking (ties: control first on even request keys).

    ``seeds`` (None until :class:`CreatorStats` credits by origin) maps the key of every
    related-pins request to its seed pin, which only the policy is told."""

    def __init__(self, control: Any, treatment: Any, item_arm: np.ndarray) -> None:
        self.control, self.treatment = control, treatment
        self.item_arm = np.asarray(item_arm, dtype=np.int64)
        self.name = "creator-split"
        self.seeds: dict[int, int] | None = None

    def __call__(self, users: np.ndarray, surface: str, k: int, context: Any) -> np.ndarray:
        from recscope.sim.stacks import slates_of

        if self.seeds is not None and surface == "related":
            self.seeds.update(zip(np.asarray(context.keys).tolist(),
                                  np.asarray(context.seed_item).tolist(), strict=True))
        n, m = users.size, 2 * k
        a = slates_of(self.control(users, surface, m, context), n, m)
        b = slates_of(self.treatment(users, surface, m, context), n, m)
        items = np.concatenate([a, b], axis=1)
        arm = self.item_arm[np.maximum(items, 0)]
        keep = (items >= 0) & (arm == np.repeat([0, 1], m)[None, :])
        odd = (np.asarray(context.keys, dtype=np.uint64) & np.uint64(1)).astype(bool)
        tie = np.where(odd[:, None], np.repeat([0.5, 0.0], m)[None, :],
                       np.repeat([0.0, 0.5], m)[None, :])
        rank = np.tile(np.arange(m, dtype=np.float64), 2)[None, :] + tie
        rank = np.where(keep, rank, np.inf)
        order = np.argsort(rank, axis=1, kind="stable")[:, :k]
        out = np.take_along_axis(items, order, axis=1)
        out[~np.isfinite(np.take_along_axis(rank, order, axis=1))] = -1
        return out


class CreatorStats:
    """Per-creator impressions, clicks and saves during a run (an ``observe`` callback of
    :meth:`Environment.run`).

    By default every pin's events count for its own creator. With ``split`` (the run's
    :class:`CreatorSplit`) they are credited by **origin**: a home-feed or search pin
    counts for its own creator, and a whole related-pins slate for the creator whose pin
    started it (its seed: the pin the user last clicked, else the previous slate's top
    pin, itself credited by origin when it was on a related slate). Totals over all
    creators are the same either way, so the global truth is too; what changes is which
    arm a related slate counts for. Why: a related slate's pins are the seed's neighbours,
    whoever ranked the slate before it, so in a creator split, where every user's seeds
    come from merged slates, both arms' creators get the same mix of seeds and the part of
    a change's effect that flows through what users click next (the related slates of an
    all-treatment world are seeded by treatment clicks) would cancel between the arms
    (benchmarks/creator_bias.py; docs/experiments.md)."""

    def __init__(self, item_creator: np.ndarray, n_creators: int,
                 split: CreatorSplit | None = None) -> None:
        self.item_creator = item_creator
        self.n = n_creators
        self.impressions = np.zeros(n_creators)
        self.clicks = np.zeros(n_creators)
        self.saves = np.zeros(n_creators)
        self.split = split
        if split is not None and split.seeds is None:
            split.seeds = {}
        # per session: (last clicked pin, its origin, last top pin, its origin)
        self._session: dict[int, tuple[int, int, int, int]] = {}
        self._day = -1
        self.unseen_seeds = 0  # related slates whose seed the session never showed

    def __call__(self, obs: Any) -> None:
        r = obs.response
        valid = obs.items >= 0
        c = self.credit(obs)
        for arr, mask in ((self.impressions, r.shown), (self.clicks, r.clicked),
                          (self.saves, r.saved)):
            arr += np.bincount(c[mask & valid], minlength=self.n)

    def credit(self, obs: Any) -> np.ndarray:
        """The creator each slot of an observed batch counts for (call it once per batch,
        in order: by origin it follows each session's possible next seeds, as the
        environment picks them, with their origins)."""
        own = self.item_creator[np.maximum(obs.items, 0)]
        if self.split is None:
            return own
        assert self.split.seeds is not None
        if obs.day != self._day:  # sessions end with their day
            self._session.clear()
            self._day = obs.day
        credit = own
        if obs.surface == "related":
            origin = np.empty(obs.items.shape[0], dtype=np.int64)
            for i, (sess, key) in enumerate(zip(obs.session.tolist(), obs.keys.tolist(),
                                                strict=True)):
                seed = self.split.seeds.pop(key)
                st = self._session.get(sess)
                if st is not None and seed == st[0]:
                    origin[i] = st[1]
                elif st is not None and seed == st[2]:
                    origin[i] = st[3]
                else:  # not shown in this session: the seed's own creator
                    origin[i] = self.item_creator[max(seed, 0)]
                    self.unseen_seeds += 1
            credit = np.broadcast_to(origin[:, None], own.shape)
        last, top = obs.response.last_click, obs.items[:, 0]
        last_origin = np.where(obs.surface == "related", credit[:, 0],
                               self.item_creator[np.maximum(last, 0)])
        for i, sess in enumerate(obs.session.tolist()):
            st = self._session.get(sess, (-1, -1, -1, -1))
            if last[i] >= 0:
                st = (int(last[i]), int(last_origin[i]), st[2], st[3])
            if top[i] >= 0:
                st = (st[0], st[1], int(top[i]), int(credit[i, 0]))
            self._session[sess] = st
        return credit

    def values(self, config: AnalysisConfig) -> dict[str, float]:
        """The creator metrics over all creators (means per creator, CTR of all pins)."""
        cols = {"impressions": self.impressions, "clicks": self.clicks, "saves": self.saves}
        out = {}
        for m in config.metrics:
            if m.kind == "ratio":
                den = cols[str(m.denominator)].sum()
                out[m.name] = float(cols[str(m.numerator)].sum() / den) if den else math.nan
            else:
                out[m.name] = float(cols[str(m.column)].mean())
        return out

    def tables(self, creator_arm: np.ndarray, names: Sequence[str]
               ) -> tuple[pa.Table, pa.Table]:
        """Assignments (a creator per row) and per-creator events for the analysis."""
        ids = pa.array(np.arange(self.n, dtype=np.int64))
        a = pa.table({"unit_id": ids, "variant": pa.array(
            np.asarray(names, dtype=object)[creator_arm].tolist(), pa.string())})
        e = pa.table({"unit_id": ids, "impressions": pa.array(self.impressions),
                      "clicks": pa.array(self.clicks), "saves": pa.array(self.saves)})
        return a, e


class EngagementStats:
    """Each user's clicks on each creator's pins during a run (an ``observe`` callback of
    :meth:`Environment.run`): the user–creator engagement graph of ``graph =
    "engagement"`` designs, read from the warm-up, i.e. the logs before the experiment."""

    def __init__(self, item_creator: np.ndarray, n_users: int, n_creators: int) -> None:
        self.item_creator = item_creator
        self.n_users, self.n_creators = n_users, n_creators
        self._users: list[np.ndarray] = []
        self._creators: list[np.ndarray] = []

    @classmethod
    def for_designs(cls, env: Environment, designs: Sequence[DesignConfig | None]
                    ) -> EngagementStats | None:
        """The warm-up's observer when a design clusters the engagement graph, else None."""
        if not any(d is not None and d.graph == "engagement" for d in designs):
            return None
        return cls(np.asarray(env.item_creator, dtype=np.int64), env.truth.n_users,
                   env.n_creators)

    def __call__(self, obs: Any) -> None:
        hit = obs.response.clicked & (obs.items >= 0)
        rows, cols = np.nonzero(hit)
        self._users.append(obs.users[rows])
        self._creators.append(self.item_creator[obs.items[rows, cols]])

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(user, creator, clicks)``, one row per pair that has clicks."""
        from scipy import sparse

        u = np.concatenate([np.empty(0, np.int64), *self._users])
        c = np.concatenate([np.empty(0, np.int64), *self._creators])
        m = sparse.coo_matrix((np.ones(u.size), (u, c)),
                              shape=(self.n_users, self.n_creators)).tocsr()
        m.sum_duplicates()
        m = m.tocoo()
        return m.row.astype(np.int64), m.col.astype(np.int64), m.data


# -- tables of a design run ---------------------------------------------------------------------

def session_start(res: SimResult) -> np.ndarray:
    """The start time of the session of every request (µs)."""
    c = res.columns
    _, inv = np.unique(c["session"], return_inverse=True)
    first = np.full(int(inv.max()) + 1 if inv.size else 0, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, inv, c["ts"])
    return first[inv]


def design_tables(plan: DesignPlan, res: SimResult, env: Environment,
                  names: Sequence[str] = ("control", "treatment"),
                  pre: SimResult | None = None,
                  ) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """The assignment (or switchback schedule) table, the events table and the units.

    Unit-level designs: one assignment row per exposed user in the experiment
    (``unit_id``, ``variant``, ``first_exposure_ts``, plus ``cluster_id`` and ``mode``
    where the design has them); ``pre`` (the recorded warm-up) adds the units' events
    before the experiment, which metric windows leave out and ``cuped_days`` reads as
    the pre-period. Switchback: one row per (``region``, ``slice``) cell with its
    ``variant``; events carry ``region`` and ``slice`` (the cell whose arm served the
    request's session).
    """
    n = env.truth.n_users
    first = res.first_exposure(n)
    label = np.asarray(names, dtype=object)
    if isinstance(plan.arm, Schedule):
        sch = plan.arm
        assert plan.schedule is not None
        r, s = np.meshgrid(np.arange(plan.schedule.shape[0]),
                           np.arange(plan.schedule.shape[1]), indexing="ij")
        schedule = pa.table({"region": pa.array(r.ravel().astype(np.int64)),
                             "slice": pa.array(s.ravel().astype(np.int64)),
                             "variant": pa.array(label[plan.schedule.ravel()].tolist(),
                                                 pa.string())})
        ev = res.events_table(region=sch.region)
        ev = ev.append_column("slice", pa.array(sch.slice_of(session_start(res))))
        units = np.flatnonzero(first >= 0)
        return schedule, ev, units
    arm = np.asarray(plan.arm)
    units = np.flatnonzero((first >= 0) & (arm >= 0))
    cols: dict[str, Any] = {
        "unit_id": pa.array(units.astype(np.int64)),
        "variant": pa.array(label[arm[units]].tolist(), pa.string()),
        "first_exposure_ts": pa.array(first[units], TIMESTAMP_TYPE)}
    if plan.cluster is not None:
        cols["cluster_id"] = pa.array(plan.cluster[units].astype(np.int64))
    if plan.mode is not None:
        cols["mode"] = pa.array(plan.mode[units].tolist(), pa.string())
    keep = np.zeros(n, dtype=bool)
    keep[units] = True
    ev = res.events_table()
    if pre is not None:
        ev = pa.concat_tables([pre.events_table(), ev])
    ev = ev.filter(pa.array(keep[ev.column("unit_id").to_numpy()]))
    return pa.table(cols), ev, units


# -- truth on a design's own metric definition ----------------------------------------------------

def cell_metric_value(events: dict[str, np.ndarray], cell: np.ndarray, keep: np.ndarray,
                      metric: Metric) -> float:
    """A metric as a switchback analysis defines it: sums per (unit, cell) after the
    burn-in (``keep``), then a ratio of sums over cells (a mean is per active unit-cell)."""
    k = keep.copy()
    for col, vals in metric.filter.items():
        k &= np.isin(events[col], np.asarray(vals, dtype=events[col].dtype))
    u, c = events["unit"][keep], cell[keep]
    pairs, inv = np.unique(np.stack([u, c]), axis=1, return_inverse=True)
    inv = inv.ravel()
    n_pairs = pairs.shape[1]
    kk = k[keep]

    def per_pair(col: str) -> np.ndarray:
        return np.bincount(inv, np.where(kk, events[col][keep], 0).astype(np.float64),
                           minlength=n_pairs)

    if n_pairs == 0:
        return float("nan")
    if metric.kind == "ratio":
        den = per_pair(str(metric.denominator)).sum()
        return float(per_pair(str(metric.numerator)).sum() / den) if den else float("nan")
    if metric.kind == "proportion":
        return float(np.mean(per_pair(str(metric.column)) > 0))
    return float(per_pair(str(metric.column)).sum() / n_pairs)


def design_truth(plan: DesignPlan, replays: Sequence[SimResult], units: np.ndarray,
                 exposure: np.ndarray, metrics: Sequence[Metric], n_users: int,
                 ) -> dict[str, float]:
    """True effect (all treatment minus all control) of every metric, measured as the
    design's analysis measures it."""
    out: dict[str, float] = {}
    evs = [event_columns(r) for r in replays]
    if isinstance(plan.arm, Schedule):
        sch, d = plan.arm, plan.design
        vals = []
        for r, ev in zip(replays, evs, strict=True):
            start = session_start(r)
            sl = sch.slice_of(start)
            cell = sch.region[ev["unit"]] * (sch.arms.shape[0] + 1) + sl
            offset = ev["ts"] - sch.start_us - sl * sch.slice_us
            keep = (sl >= 0) & (offset >= d.burn_in_hours * _HOUR_US)
            vals.append({m.name: cell_metric_value(ev, cell, keep, m) for m in metrics
                         if m.kind in ("mean", "proportion", "ratio")})
        return {k: vals[1][k] - vals[0][k] for k in vals[0]}
    for m in metrics:
        a = metric_value(evs[0], units, exposure, m, n_users)
        b = metric_value(evs[1], units, exposure, m, n_users)
        out[m.name] = b - a
    return out


# -- one repetition --------------------------------------------------------------------------

def _effect_rows(plan: DesignPlan, assignments: pa.Table, events: pa.Table,
                 config: AnalysisConfig, *, seed: int, n_permutations: int,
                 ) -> dict[str, dict[str, float]]:
    """The design's analysis: per metric estimate, interval, se, design effect (and the
    interference test's p-value for hierarchical designs)."""
    out: dict[str, dict[str, float]] = {}
    if plan.design.kind == "unit":
        from recscope.experiments.analysis import analyze

        card = analyze(assignments, events, config)
        for e in card.results:
            out[e.metric] = {"estimate": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high,
                             "se": e.se, "design_effect": 1.0}
        return out
    from recscope.experiments.clustered import analyze_design

    start = None
    if isinstance(plan.arm, Schedule):
        start = plan.arm.start_us / 1e6
    res = analyze_design(assignments, events, config, plan.design, start=start,
                         n_permutations=n_permutations, seed=seed)
    for e in res.results:
        part = e.extra.get("part")
        if part == "interference":
            out.setdefault(e.metric, {})["p_interference"] = e.p_value
            continue
        if part == "unit":
            continue
        out.setdefault(e.metric, {}).update({
            "estimate": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high, "se": e.se,
            "design_effect": float(e.extra.get("design_effect", float("nan"))),
            **{k: float(e.extra[k]) for k in ("df", "effective_clusters", "se_cr1")
               if e.extra.get(k) is not None}})
    return out


def run_rep(truth_world: Any, sim_config: Any, designs: Sequence[DesignConfig],
            policy_specs: Sequence[dict[str, Any]], config: AnalysisConfig, *, seed: int,
            salt: str, days: int, warmup_days: int, file: str | None = None,
            base: Path | None = None, n_permutations: int = 200,
            parts: dict[tuple[str, str], Any] | None = None,
            step: Callable[[], None] | None = None,
            skip_unassignable: bool = False) -> dict[str, Any]:
    """One repetition: warm-up, the two truth replays, then every design; returns per
    design label and metric the estimate, interval, se, design effect and truth.

    ``skip_unassignable``: a design whose draw leaves fewer than 2 clusters (or cells)
    in an arm is skipped in this repetition (listed under ``skipped``) instead of
    raising; a team would re-randomise such a draw."""
    from recscope.sim.policy_factory import PolicyFactory

    env = Environment(truth_world, sim_config, seed=seed)
    factory = PolicyFactory(env.truth, seed=seed, parts=parts)
    pols = [factory.stack(s, n) for s, n in zip(policy_specs, ("control", "treatment"),
                                                 strict=True)]
    # the warm-up is recorded when a metric reads a pre-period (cuped_days): its events
    # are the units' history before the experiment (CUPED in every user design's analysis)
    wants_pre = any(m.cuped_days for m in config.metrics)
    engagement = EngagementStats.for_designs(env, designs)
    warm = env.run([pols[0]], days=warmup_days, calibrate=True, record=wants_pre,
                   stage="warm-up", observe=engagement)
    state = warm.state
    start_us = env.start_us + state.day * _DAY_US
    n = env.truth.n_users
    has_creator = any(d.kind == "creator" for d in designs)
    item_creator = np.asarray(env.item_creator, dtype=np.int64)
    replay_stats = [CreatorStats(item_creator, env.n_creators) for _ in (0, 1)]
    replays = [env.run(pols, days=days, arm=np.full(n, c, dtype=np.int64), state=state,
                       observe=replay_stats[c] if has_creator else None) for c in (0, 1)]
    experiment = Experiment(name="design-compare", variants=("control", "treatment"),
                            salt=salt)
    out: dict[str, Any] = {"seed": seed, "designs": {}, "clustering": {}, "skipped": {}}
    cache: dict[Any, Any] = {}
    for d in designs:
        try:
            plan = plan_design(env, d, experiment, days=days, start_us=start_us, seed=seed,
                               file=file, base=base, cache=cache, engagement=engagement)
        except DataValidationError as exc:
            if not skip_unassignable or "per arm" not in str(exc):
                raise
            out["skipped"][design_label(d)] = str(exc)
            if step is not None:
                step()
            continue
        if plan.creator_arm is not None:
            import tomllib

            from recscope.experiments.metrics import parse_metrics

            cconf = parse_metrics(tomllib.loads(CREATOR_METRICS))
            split = CreatorSplit(pols[0], pols[1], plan.creator_arm[item_creator])
            # related-pins slates credited to the creator whose pin started them
            stats_ = CreatorStats(item_creator, env.n_creators, split=split)
            env.run([*pols, split], days=days, arm=plan.arm, state=state,
                    novel=[False, True, False], observe=stats_)
            a_tbl, ev_tbl = stats_.tables(plan.creator_arm, ("control", "treatment"))
            # every creator is its own cluster: analyze_design's creator default (CR3,
            # the delete-one-creator jackknife, with its Satterthwaite df) accounts for
            # a few creators holding much of an arm's exposure
            rows = _effect_rows(plan, a_tbl.append_column("cluster_id",
                                                          a_tbl.column("unit_id")),
                                ev_tbl, cconf, seed=seed, n_permutations=0)
            vals = [r.values(cconf) for r in replay_stats]
            true = {k: vals[1][k] - vals[0][k] for k in vals[0]}
        else:
            res = env.run(pols, days=days, arm=plan.arm, state=state)
            a_tbl, ev_tbl, units = design_tables(
                plan, res, env, pre=warm if wants_pre and not isinstance(plan.arm, Schedule)
                else None)
            exposure = res.first_exposure(n)
            rows = _effect_rows(plan, a_tbl, ev_tbl, config, seed=seed,
                                n_permutations=n_permutations)
            true = design_truth(plan, replays, units, exposure, config.metrics, n)
        for m, r in rows.items():
            r["truth"] = true.get(m, float("nan"))
        out["designs"][plan.label] = rows
        out["clustering"][plan.label] = plan.clustering
        if step is not None:
            step()
    return out


# -- the comparison ---------------------------------------------------------------------------

@dataclasses.dataclass
class DesignComparison(Result):
    """Per design and metric over seeded repetitions: mean estimate, truth, bias, RMSE,
    coverage of the truth by the 95% interval, MDE and design effect.

    Row fields: ``estimate`` = mean estimate over repetitions, ``ci_low``/``ci_high`` =
    the 95% interval of that mean (so a bias is significant when the truth lies
    outside), ``se`` = its standard error; ``extra``: ``design``, ``truth`` (mean true
    effect), ``bias`` (mean of estimate − truth) and ``bias_se``, ``rmse``, ``coverage``
    (share of repetitions whose own interval holds their truth), ``mde`` (2.80 × the mean
    standard error a single experiment reports: the effect detected with 80% power at
    5%), ``se_per_experiment``, ``sd`` (spread of the estimates), ``design_effect``
    (mean over repetitions of the analysis' variance inflation against unit
    randomisation on the same data), ``reps``, for cluster and creator designs the mean
    ``effective_clusters`` and ``df`` of their analyses and, for hierarchical designs,
    ``interference_rejects`` (share of repetitions whose interference test has p < 0.05).
    """

    kind: ClassVar[str] = "design_comparison"
    title: ClassVar[str] = "Design comparison: bias and variance against the true effect"

    experiment: str
    reps: int
    days: int
    designs: list[str]
    metrics: list[str]
    rows_: list[dict[str, Any]]
    clustering: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    cautions: list[str] = dataclasses.field(default_factory=list)

    def effects(self) -> list[Effect]:
        out = []
        for r in self.rows_:
            extra = {k: v for k, v in r.items() if k not in (
                "metric", "estimate", "ci_low", "ci_high", "se")}
            out.append(Effect(r["metric"], r["estimate"], r["ci_low"], r["ci_high"], r["se"],
                              float("nan"), self.reps, extra))
        return out

    def notes(self) -> list[str]:
        out = [f"{self.reps} seeded repetitions of {self.days} days; truth = all treatment "
               "minus all control (common random numbers), in each design's own metric "
               "definition."]
        if self.reps < 20:
            out.append(f"Only {self.reps} repetitions: bias, coverage and RMSE are rough.")
        for d, k in self.skipped.items():
            out.append(f"{d}: {k} repetition(s) skipped, their draw left fewer than 2 "
                       "clusters or cells in an arm (use more, smaller clusters).")
        return out + list(self.cautions)

    def rich_table(self) -> Any:
        """design, metric, mean estimate, truth, bias, RMSE, coverage, MDE, design effect."""
        from recscope.report.tables import rich_table

        keys = ("design", "metric", "estimate", "truth", "bias", "bias_se", "rmse",
                "coverage", "mde", "design_effect", "interference_rejects")
        rows = [{k: r.get(k) for k in keys if k in r} for r in self.rows_]
        return rich_table(rows, title=self.title, notes=self.notes())

    def records(self) -> list[dict[str, Any]]:
        """One flat object per design and metric (the ``designs.json`` content)."""
        return [e.to_dict() for e in self.effects()]

    def html_sections(self, page: Any) -> None:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        mets = self.metrics
        fig = make_subplots(rows=1, cols=len(mets), subplot_titles=mets,
                            horizontal_spacing=0.08)
        for j, m in enumerate(mets, start=1):
            rs = [r for r in self.rows_ if r["metric"] == m]
            x = [r["design"] for r in rs]
            fig.add_trace(go.Scatter(
                x=x, y=[r["estimate"] for r in rs], mode="markers", name="mean estimate",
                marker={"size": 9, "color": "#1f77b4"}, showlegend=j == 1,
                error_y={"type": "data", "array": [r["mde"] / Z_MDE * 1.96 for r in rs],
                         "visible": True}), row=1, col=j)
            fig.add_trace(go.Scatter(
                x=x, y=[r["truth"] for r in rs], mode="markers", name="true effect",
                marker={"symbol": "line-ew-open", "size": 22, "color": "#d62728",
                        "line": {"width": 3}}, showlegend=j == 1), row=1, col=j)
            fig.update_yaxes(title_text="effect", row=1, col=j)
            fig.update_xaxes(title_text="design", row=1, col=j)
        fig.update_layout(height=420, title="Mean estimate (bars: a single experiment's 95% "
                          "interval) and the true effect, per design")
        page.figure(fig)
        if self.clustering:
            page.heading("Clusters and slices per design")
            page.table([{"design": k, **v} for k, v in self.clustering.items()])


def summarise(reps: Sequence[dict[str, Any]], designs: Sequence[str],
              metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of a :class:`DesignComparison` from the repetitions' records (NaN
    estimates, e.g. a metric a design cannot analyse, are left out of its row)."""
    rows = []
    for d in designs:
        for m in metrics:
            rec = [r["designs"][d][m] for r in reps if m in r["designs"].get(d, {})
                   and math.isfinite(r["designs"][d][m].get("estimate", float("nan")))
                   and math.isfinite(r["designs"][d][m].get("truth", float("nan")))]
            if not rec:
                continue
            est = np.array([x["estimate"] for x in rec])
            tru = np.array([x["truth"] for x in rec])
            se = np.array([x["se"] for x in rec])
            err = est - tru
            k = len(rec)
            sd = float(est.std(ddof=1)) if k > 1 else float("nan")
            se_mean = sd / math.sqrt(k) if k > 1 else float("nan")
            cov = np.mean([x["ci_low"] <= x["truth"] <= x["ci_high"] for x in rec])
            de = np.array([x.get("design_effect", float("nan")) for x in rec])
            row: dict[str, Any] = {
                "design": d, "metric": m, "estimate": float(est.mean()),
                "ci_low": float(est.mean() - 1.96 * se_mean),
                "ci_high": float(est.mean() + 1.96 * se_mean), "se": se_mean,
                "truth": float(tru.mean()), "bias": float(err.mean()),
                "bias_se": float(err.std(ddof=1) / math.sqrt(k)) if k > 1 else float("nan"),
                "rmse": float(np.sqrt(np.mean(err**2))), "coverage": float(cov),
                "mde": float(Z_MDE * se.mean()), "se_per_experiment": float(se.mean()),
                "sd": sd, "design_effect": float(np.nanmean(de)) if np.isfinite(de).any()
                else float("nan"), "reps": k}
            for key in ("effective_clusters", "df"):  # cluster and creator designs
                vals = [x[key] for x in rec if key in x]
                if vals:
                    row[key] = float(np.mean(vals))
            p = [x["p_interference"] for x in rec if "p_interference" in x]
            if p:
                row["interference_rejects"] = float(np.mean(np.asarray(p) < 0.05))
            rows.append(row)
    return rows


def design_cautions(sim_config: Any, designs: Sequence[DesignConfig]) -> list[str]:
    """What a design assumes that the simulated platform does not grant: carry-over of
    user state across switchback slices (satisfaction sets the next days' visits, a new
    policy's novelty wears off over sessions; creator supply re-settles at ``rate`` a
    day), and the creator-side design's own estimand (every user sees both arms, so what
    users carry to later sessions and creators' supply reach both arms' creators alike;
    measured in benchmarks/creator_bias.py). A switchback is unbiased only when its
    slices are longer than the carry-over and the burn-in covers it (Bojinov,
    Simchi-Levi and Zhao 2023)."""
    out = []
    carry = []
    fade: list[tuple[float, str]] = []  # days each carry-over needs to fade, and why
    if sim_config.satisfaction_effect > 0:
        m = sim_config.satisfaction_memory
        days90 = math.log(0.1) / math.log(m) if 0 < m < 1 else 0.0
        carry.append(f"satisfaction sets visits (memory {m:g} a day: 90% gone after "
                     f"{days90:.1f} days)")
        fade.append((math.log(0.05) / math.log(m) if 0 < m < 1 else 0.0,
                     "satisfaction 95% gone"))
    if sim_config.novelty > 0:
        carry.append(f"a new policy's novelty wears off over {sim_config.novelty_sessions:g} "
                     "of a user's sessions under it, not with time, so a market switched to "
                     "treatment meets it afresh")
        fade.append((sim_config.novelty_sessions * math.log(20) / sim_config.sessions_per_day,
                     "the novelty 95% worn off at the visit rate"))
    if sim_config.creator_supply.enabled:
        r = sim_config.creator_supply.rate
        carry.append(f"creator supply re-settles at rate {r:g} a day")
        fade.append((math.log(0.05) / math.log(1 - r) if r < 1 else 0.0,
                     "supply 95% re-settled"))
    # measured on the default platform (docs/benchmarks.md, off-long / off-burn-in /
    # off-6weeks*): over 42 days burn-ins of 10-16 days leave 8-14% of the CTR effect, and
    # none without novelty (off-6weeks-nonovelty); satisfaction alone needs about 10 days
    need, why = max(fade, default=(0.0, ""))
    need *= 24
    for d in designs:
        if d.kind == "switchback" and carry:
            short = (f"; this design's is {d.burn_in_hours:g} h"
                     if d.burn_in_hours < need else "")
            out.append(f"{design_label(d)}: users carry state across slices ("
                       f"{'; '.join(carry)}). A switchback is unbiased only when slices are "
                       "longer than that carry-over and the burn-in covers it; shorter "
                       "slices bias it even without interference. This platform's "
                       f"carry-over implies a burn-in of at least {need:.0f} h ({why})"
                       f"{short}; a longer experiment may need more.")
        shared = [x for x, on in (
            ("a new policy's novelty", sim_config.novelty > 0),
            ("satisfaction carried to later sessions", sim_config.satisfaction_effect > 0),
            ("creator supply, which follows both arms' exposure",
             sim_config.creator_supply.enabled)) if on]
        if d.kind == "creator" and shared:
            out.append("creator: every user sees both arms' pins. Related-pins slates count "
                       "for the creator whose pin started them, so what users click next "
                       f"stays with the arm that ranked it, but {' and '.join(shared)} "
                       "reach both arms' creators alike: it estimates the change's effect "
                       "on a creator's pins against the other arm's, not its global "
                       "effect; read its creator-side metrics.")
    return out


def default_designs(sim_config: Any, days: int, n_users: int = 20_000
                    ) -> list[DesignConfig]:
    """The designs worth comparing for a simulator configuration: the unit A/B test, and
    those that match its interference channels (graph clusters on the social graph,
    market clusters and market × time switchbacks with creator supply). Graph clusters
    hold about 50 users (20 to 200 clusters), so that the hierarchical design's cluster
    half has clusters enough in each arm."""
    out = [DesignConfig(kind="unit")]
    regions = sim_config.regions
    if sim_config.social.enabled:
        k = int(min(200, max(20, n_users // 50)))
        out.append(DesignConfig(kind="cluster", graph="social", n_clusters=k))
        out.append(DesignConfig(kind="hierarchical", graph="social", n_clusters=k))
    if regions >= 4:
        out.append(DesignConfig(kind="cluster", graph="regions"))
        if not sim_config.social.enabled and regions >= 16:
            out.append(DesignConfig(kind="hierarchical", graph="regions"))
    slice_h = 24.0 * max(1, min(3, days // 4))
    out.append(DesignConfig(kind="switchback", slice_hours=slice_h,
                            burn_in_hours=slice_h - 24.0 if slice_h > 24 else 12.0,
                            regions=regions))
    return out


def compare_designs(spec: Any, designs: Sequence[DesignConfig] | None = None, *, reps: int,
                    truth_world: Any = None, file: str | None = None,
                    n_permutations: int = 200, progress: Progress | None = None,
                    ) -> DesignComparison:
    """Run ``spec``'s change under every design for ``reps`` seeded repetitions.

    ``spec`` is an :class:`~recscope.sim.experiment_config.ExperimentSpec` with one
    two-variant experiment (control and one treatment). ``designs`` default to the
    spec's ``[design]`` and ``[[compare]]`` tables, or :func:`default_designs`; the unit
    design (the naive A/B test) is always included first. ``progress(stage, done,
    total)`` is called after every design of every repetition.
    """
    import tomllib

    from recscope.experiments.metrics import parse_metrics
    from recscope.sim.runner import _metrics_text
    from recscope.sim.world_source import build_world

    if reps < 1:
        raise ConfigError(f"reps must be at least 1, got {reps}", key="--reps")
    if len(spec.experiment) != 1 or len(spec.experiment[0].variants) != 2:
        raise ConfigError("design-compare needs one [[experiment]] with two variants "
                          "(control and a treatment)", key="experiment", file=file)
    layer = spec.experiment[0]
    treat = next(v for v in layer.variants if v != "control")
    policy_specs = [{**spec.policy, **layer.variants["control"]},
                    {**spec.policy, **layer.variants[treat]}]
    world = truth_world if truth_world is not None else build_world(spec.world)
    chosen = list(designs) if designs is not None else spec_designs(spec)
    if not chosen:
        chosen = default_designs(spec.simulation, spec.days, world.n_users)
    if not any(d.kind == "unit" for d in chosen):
        chosen = [DesignConfig(kind="unit"), *chosen]
    labels = [design_label(d) for d in chosen]
    if len(set(labels)) != len(labels):
        dup = next(x for x in labels if labels.count(x) > 1)
        raise ConfigError(f"design {dup!r} is listed twice", key="compare", file=file)
    text = _metrics_text(spec)
    config = parse_metrics(tomllib.loads(text), source=spec.metrics)
    base = Path(file).resolve().parent if file else None
    t0 = time.perf_counter()
    records = []
    total = reps * len(chosen)
    done = [0]

    def step() -> None:
        done[0] += 1
        report(progress, "designs", done[0], total)

    for i in range(reps):
        seed = spec.seed + i
        # a design that cannot be assigned in the first repetition is refused (bad
        # input); later unlucky draws (< 2 clusters in an arm) are skipped and counted
        records.append(run_rep(world, spec.simulation, chosen, policy_specs, config,
                               seed=seed, salt=f"{spec.name}:{seed}", days=spec.days,
                               warmup_days=spec.warmup_days, file=file, base=base,
                               n_permutations=n_permutations, step=step,
                               skip_unassignable=i > 0))
    metrics = [m.name for m in config.metrics]
    if any(d.kind == "creator" for d in chosen):
        metrics += [x for x in ("exposure", "clicks_received", "saves_received")
                    if x not in metrics]
    rows = summarise(records, labels, metrics)
    clustering = {k: v for k, v in records[0]["clustering"].items() if v}
    skipped = {d: sum(d in r["skipped"] for r in records) for d in labels}
    return DesignComparison(spec.name, reps, spec.days, labels, metrics, rows, clustering,
                            round(time.perf_counter() - t0, 1),
                            {k: v for k, v in skipped.items() if v},
                            design_cautions(spec.simulation, chosen))


def spec_designs(spec: Any) -> list[DesignConfig]:
    """The designs an experiment file names: its ``[design]`` and ``[[compare]]``."""
    out = []
    if getattr(spec, "design", None) is not None:
        out.append(spec.design)
    out.extend(getattr(spec, "compare", None) or [])
    return out
