"""Long-term holdouts and launches that accumulate over weeks, with their ground truth.

A long-run file (``examples/long_run.toml``, ``docs/long_run.md``) names the world, the
incumbent stack, a holdout and a schedule of launches::

    weeks = 12
    [holdout]
    share = 0.1              # global: 10% of units that no launch reaches
    # surfaces = {home_feed = 0.1, search = 0.2}   # or one holdout per surface
    [[launch]]
    day = 7
    surface = "home_feed"
    change = {ranker = "affinity_quality"}

**Assignment.** The holdout is :class:`recscope.experiments.assignment.Holdout` and units
are placed by :func:`~recscope.experiments.assignment.assign`, the same function every
experiment uses: an experiment that names the same ``Holdout`` (share and salt) keeps
exactly these units out, so the holdout coexists with layered and factorial experiments.
A per-surface holdout hashes each surface with its own salt (``<salt>:<surface>``), so the
surfaces' holdouts are independent. Every user gets a mask with one bit per surface it is
held out of; the policy it is served dispatches by surface: the incumbent stack on a held
surface, the incumbent with every launch on that surface so far applied elsewhere.

**Launches.** A launch is a stack override (like an experiment variant) on one surface
from its ``day`` on; launches on one surface apply in order and accumulate. Each launch is
new to the users it reaches (their novelty counter restarts), so curiosity clicks come
back with every launch and fade.

**Experiments.** ``[[experiment]]`` tables run A/B (or A/B/n) tests on one surface for a
window of days inside the long run, among the units the holdout does not hold out of
that surface (held-out units never enter: the experiment's assignment names the
holdout). Each has its own layer and salt, so its split is independent of the holdout's
(:func:`experiment_cells`); a variant overrides the surface's current launched stack.
Each writes ``experiments/<name>/`` with the files ``recscope experiment analyze`` reads
(``assignments.parquet``, ``events.parquet``, ``metrics.toml``) and its ``truth.json``
(replays of its window with every unit in it given each variant in turn). The holdout's
truth replays the experiments too, every unit with its would-be variant.

**Truth.** Common-random-number replays of the same users from the same post-warm-up
state: "every launch to everyone" against "no launch at all" give the true cumulative
effect in total and per surface (global holdout); with per-surface holdouts, surface
``s``'s truth replays the realised masks with ``s`` forced on and off. Effects are
per-unit sums over the tracked units (those who visited by the end of the look), week by
week and per launch window, computed exactly as ``recscope track`` computes them.
"""

from __future__ import annotations

import dataclasses
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import ConfigDict, Field, model_validator

from recscope.config import StrictModel, validate
from recscope.core.progress import Progress, report
from recscope.data.schema import TIMESTAMP_TYPE
from recscope.experiments.assignment import HOLDOUT, Experiment, Holdout, assign
from recscope.experiments.metrics import parse_metrics
from recscope.io import atomic_dir, read_toml, write_json, write_parquet, write_text
from recscope.results import Effect, Result
from recscope.sim.config import SURFACES
from recscope.sim.environment import Environment, SimConfig, SimResult, SimState
from recscope.sim.experiment_config import (
    DEFAULT_METRICS,
    NAMED_POLICIES,
    RETENTION_METRIC,
    STACK_KEYS,
    WorldSpec,
)
from recscope.sim.policy_factory import PolicyFactory
from recscope.sim.stacks import SlateContext
from recscope.sim.true_effects import GroundTruth, event_columns, metric_value
from recscope.sim.world_model import WorldTruth
from recscope.sim.world_source import build_world, world_log

TOTAL = "total"
"""The surface key of effects over every surface together."""
EXPOSED = "exposed"
"""Variant label of units that every launch reaches (global holdout)."""
PARTIAL = "partial"
"""Variant label of units held out of some surfaces only (per-surface holdouts)."""
SUM_COLUMNS: tuple[str, ...] = ("sessions", "requests", "impressions", "clicks", "saves",
                                "hides")
"""Event columns whose per-unit sums the truth covers (plus ``active_days``)."""
TRUTH_METRICS: tuple[str, ...] = (*SUM_COLUMNS, "active_days")
FILES: tuple[str, ...] = ("assignments.parquet", "events.parquet", "launches.json",
                          "truth.json", "summary.json")
"""Every file :func:`run_long_run` writes (and ``experiments/<name>/`` per experiment:
:data:`EXPERIMENT_FILES`)."""
EXPERIMENT_FILES: tuple[str, ...] = ("assignments.parquet", "events.parquet", "metrics.toml",
                                     "truth.json")
"""The files of each ``[[experiment]]``'s folder (those of a simulated A/B test)."""
_ALL = (1 << len(SURFACES)) - 1
_DAY_US = 86_400_000_000


class _Frozen(StrictModel):
    model_config = ConfigDict(frozen=True)


def _check_share(value: float, key: str) -> None:
    if not 0.0 < value < 0.5:
        raise ValueError(f"{key} must be above 0 and below 0.5 (got {value}): a holdout "
                         "of 0 measures nothing and one of half or more is not a holdout")


class HoldoutSpec(_Frozen):
    """A long-term holdout: one ``share`` for every surface, or one per surface."""

    share: float | None = Field(default=None, description="global share held out")
    surfaces: dict[str, float] | None = Field(default=None,
                                              description="share held out per surface")
    salt: str = Field(default="long-term-holdout", min_length=1)
    start_day: int = Field(default=0, ge=0, description="first day the holdout is in place "
                           "(day 0 = the first day after the warm-up)")

    @model_validator(mode="after")
    def _check(self) -> HoldoutSpec:
        if (self.share is None) == (self.surfaces is None):
            raise ValueError("set exactly one of holdout.share (one holdout for every "
                             "surface) and holdout.surfaces (one per surface)")
        if self.share is not None:
            _check_share(self.share, "holdout.share")
        for s, v in (self.surfaces or {}).items():
            if s not in SURFACES:
                raise ValueError(f"holdout.surfaces: unknown surface {s!r} (expected one of "
                                 f"{', '.join(SURFACES)})")
            _check_share(v, f"holdout.surfaces.{s}")
        if self.surfaces is not None and not self.surfaces:
            raise ValueError("holdout.surfaces is empty")
        return self

    @property
    def per_surface(self) -> bool:
        return self.surfaces is not None

    def shares(self) -> dict[str, float]:
        """Share held out of each surface (0 where a per-surface holdout leaves it out)."""
        if self.share is not None:
            return {s: self.share for s in SURFACES}
        return {s: float((self.surfaces or {}).get(s, 0.0)) for s in SURFACES}


class LaunchSpec(_Frozen):
    """One launch: a stack override on one surface from ``day`` on."""

    day: int = Field(ge=0, description="first day of the launch (0 = after the warm-up)")
    surface: str
    change: dict[str, Any]
    name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> LaunchSpec:
        if self.surface not in SURFACES:
            raise ValueError(f"unknown surface {self.surface!r} (expected one of "
                             f"{', '.join(SURFACES)})")
        if not self.change:
            raise ValueError("change is empty (a launch overrides at least one stack key)")
        bad = set(self.change) - STACK_KEYS
        if bad:
            raise ValueError(f"change: unknown key {sorted(bad)[0]!r} (allowed: "
                             f"{', '.join(sorted(STACK_KEYS))})")
        if self.surface != "home_feed" and "retriever" in self.change:
            raise ValueError(f"a launch on {self.surface!r} cannot change the retriever: the "
                             "simulator's related and search surfaces draw candidates from "
                             "the seed pin and the query, and only the ranker orders them")
        return self


_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class RunningExperimentSpec(_Frozen):
    """An A/B (or A/B/n) test on one surface during days ``[start_day, end_day)`` among
    the units the holdout does not hold out of that surface: its own layer and salt, so
    its split is independent of the holdout's (see :func:`experiment_cells`)."""

    name: str = Field(pattern=_NAME, max_length=100)
    surface: str
    start_day: int = Field(ge=0, description="first day (0 = the first after the warm-up)")
    end_day: int = Field(ge=1, description="day after the last day of the experiment")
    variants: dict[str, dict[str, Any]]
    weights: list[float] | None = None
    layer: str | None = None
    traffic: tuple[float, float] = Field(default=(0.0, 1.0), strict=False)
    salt: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_holdout(cls, data: Any) -> Any:
        if isinstance(data, dict) and "holdout" in data:
            raise ValueError("an experiment never includes the long-term holdout's units "
                             "(they are kept out by the holdout's own hash); remove its "
                             "'holdout' key")
        return data

    @model_validator(mode="after")
    def _check(self) -> RunningExperimentSpec:
        if self.surface not in SURFACES:
            raise ValueError(f"unknown surface {self.surface!r} (expected one of "
                             f"{', '.join(SURFACES)})")
        if self.end_day <= self.start_day:
            raise ValueError(f"end_day ({self.end_day}) must be after start_day "
                             f"({self.start_day})")
        if len(self.variants) < 2 or "control" not in self.variants:
            raise ValueError("an experiment needs at least two variants, one called "
                             "'control'")
        for v, change in self.variants.items():
            bad = set(change) - STACK_KEYS
            if bad:
                raise ValueError(f"variant {v!r}: unknown key {sorted(bad)[0]!r} (allowed: "
                                 f"{', '.join(sorted(STACK_KEYS))})")
            if "pipeline" in change:
                raise ValueError("pipeline stacks are not supported in long-run files")
            if self.surface != "home_feed" and "retriever" in change:
                raise ValueError(f"variant {v!r} on {self.surface!r} cannot change the "
                                 "retriever (only the home feed has one)")
        if self.weights is not None and (len(self.weights) != len(self.variants)
                                         or min(self.weights) < 0 or sum(self.weights) <= 0):
            raise ValueError("weights: one non-negative number per variant")
        lo, hi = self.traffic
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"traffic must satisfy 0 <= start < end <= 1, got "
                             f"{list(self.traffic)}")
        return self

    def variant_names(self) -> list[str]:
        """``control`` first, then the other variants in file order."""
        return ["control", *(v for v in self.variants if v != "control")]

    def assignment(self, spec: LongRunSpec, *, with_holdout: bool = True) -> Experiment:
        """The :class:`~recscope.experiments.assignment.Experiment` that places units:
        layer (default the name) and salt (default ``<run>:<name>:<seed>``) of its own, and
        the holdout of its surface (held-out units get :data:`HOLDOUT`)."""
        names = self.variant_names()
        w = None if self.weights is None else [
            self.weights[list(self.variants).index(v)] for v in names]
        held = None
        share = spec.holdout.shares()[self.surface]
        if with_holdout and share > 0:
            salt = (spec.holdout.salt if spec.holdout.share is not None
                    else f"{spec.holdout.salt}:{self.surface}")
            held = holdout_experiment(share, salt).holdout
        return Experiment(name=self.name, variants=tuple(names), weights=w,
                          layer=self.layer or self.name, traffic=tuple(self.traffic),
                          salt=self.salt or f"{spec.name}:{self.name}:{spec.seed}",
                          holdout=held)


class LongRunSpec(_Frozen):
    """A simulated long-term holdout with launches (see the module docstring)."""

    name: str = "long-run"
    seed: int = Field(default=0, ge=0)
    weeks: int = Field(default=12, ge=1, le=104)
    warmup_days: int = Field(default=7, ge=1, le=365)
    truth: bool = True
    world: WorldSpec = Field(default_factory=WorldSpec)
    simulation: SimConfig = Field(default_factory=SimConfig)
    policy: dict[str, Any] = Field(default_factory=lambda: dict(NAMED_POLICIES["baseline"]))
    holdout: HoldoutSpec
    launch: list[LaunchSpec] = Field(min_length=1)
    experiment: list[RunningExperimentSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> LongRunSpec:
        bad = set(self.policy) - STACK_KEYS
        if bad:
            raise ValueError(f"policy: unknown key {sorted(bad)[0]!r}")
        if "pipeline" in self.policy or any("pipeline" in x.change for x in self.launch):
            raise ValueError("pipeline stacks are not supported in long-run files")
        for i, x in enumerate(self.launch):
            if x.day < self.holdout.start_day:
                raise ValueError(f"launch[{i}] (day {x.day}) is scheduled before the holdout "
                                 f"starts (holdout.start_day = {self.holdout.start_day})")
            if x.day >= self.days:
                raise ValueError(f"launch[{i}] (day {x.day}) is after the last simulated day "
                                 f"({self.days - 1}; weeks = {self.weeks})")
        if self.holdout.start_day >= self.days:
            raise ValueError("holdout.start_day is after the last simulated day")
        names = [x.name for x in self.launch if x.name]
        if len(set(names)) != len(names):
            raise ValueError("launch names must be distinct")
        for i, e in enumerate(self.experiment):
            if e.end_day > self.days:
                raise ValueError(f"experiment[{i}] ({e.name!r}, days {e.start_day} to "
                                 f"{e.end_day - 1}) ends after the last simulated day "
                                 f"({self.days - 1}; weeks = {self.weeks})")
        names = [e.name for e in self.experiment]
        if len(set(names)) != len(names):
            raise ValueError("experiment names must be distinct")
        for i, a in enumerate(self.experiment):
            for b in self.experiment[i + 1:]:
                same_time = a.start_day < b.end_day and b.start_day < a.end_day
                if same_time and (a.layer or a.name) == (b.layer or b.name) and (
                        a.traffic[0] < b.traffic[1] and b.traffic[0] < a.traffic[1]):
                    raise ValueError(f"experiments {a.name!r} and {b.name!r} run at the same "
                                     f"time in layer {a.layer or a.name!r} with overlapping "
                                     "traffic (give them disjoint traffic ranges or "
                                     "different layers)")
        return self

    @property
    def days(self) -> int:
        return 7 * self.weeks

    def launches(self) -> list[dict[str, Any]]:
        """The launches in day order (stable), each with its ``id`` (1, 2, ...) and name."""
        order = sorted(range(len(self.launch)), key=lambda i: self.launch[i].day)
        return [{"id": k + 1, "name": self.launch[i].name or f"launch{k + 1}",
                 "day": self.launch[i].day, "surface": self.launch[i].surface,
                 "change": dict(self.launch[i].change)} for k, i in enumerate(order)]


def is_long_run(data: dict[str, Any]) -> bool:
    """Whether a parsed simulator TOML is a long-run file (it has ``[[launch]]``)."""
    return "launch" in data


def parse_long_run(data: dict[str, Any], *, file: str | None = None) -> LongRunSpec:
    """Validate a mapping into a :class:`LongRunSpec`; errors name the key and file."""
    return validate(LongRunSpec, data, file=file)


def load_long_run(path: str | Path) -> LongRunSpec:
    """Read a long-run TOML file (world paths relative to the file)."""
    p = Path(path)
    spec = parse_long_run(read_toml(p, "long-run"), file=str(p))
    base = p.resolve().parent

    def rel(x: str | None) -> str | None:
        return None if x is None or Path(x).is_absolute() else str((base / x).resolve())

    return spec.model_copy(update={"world": spec.world.model_copy(update={
        "config": rel(spec.world.config), "movielens": rel(spec.world.movielens),
        "obd": rel(spec.world.obd)})})


# ---------------------------------------------------------------------- assignment
def holdout_masks(holdout: HoldoutSpec, units: Sequence[object] | np.ndarray) -> np.ndarray:
    """Per unit, a bit per surface (bit ``i`` = ``SURFACES[i]``) it is held out of.

    Placement is :func:`~recscope.experiments.assignment.assign` with a
    :class:`~recscope.experiments.assignment.Holdout` (salt ``holdout.salt``, or
    ``<salt>:<surface>`` per surface), so any experiment naming the same holdout excludes
    the same units."""
    mask = np.zeros(len(units), dtype=np.int64)
    if holdout.share is not None:
        held = holdout_experiment(holdout.share, holdout.salt)
        mask[assign(units, held) == HOLDOUT] = _ALL
        return mask
    for i, s in enumerate(SURFACES):
        share = (holdout.surfaces or {}).get(s)
        if share:
            held = holdout_experiment(share, f"{holdout.salt}:{s}")
            mask[assign(units, held) == HOLDOUT] |= 1 << i
    return mask


def holdout_experiment(share: float, salt: str) -> Experiment:
    """The one-variant experiment whose :data:`HOLDOUT` units are the holdout (a launch
    reaches every other unit)."""
    return Experiment(name=f"launches:{salt}", variants=(EXPOSED,),
                      holdout=Holdout(share, salt=salt))


# ---------------------------------------------------------------------- policies
class SurfacePolicy:
    """Serves each surface with its own policy (the simulator passes the surface)."""

    def __init__(self, by_surface: dict[str, Any], name: str) -> None:
        self.by_surface = by_surface
        self.name = name

    def __call__(self, users: np.ndarray, surface: str, k: int, context: SlateContext) -> Any:
        return self.by_surface[surface](users, surface, k, context)


def experiment_cells(spec: LongRunSpec, units: np.ndarray, *, with_holdout: bool = True,
                     ) -> np.ndarray:
    """Per ``[[experiment]]`` and unit, the variant index (0 = control) or -1 (held out of
    the experiment's surface, or outside its traffic): int64 [experiments, units].

    ``with_holdout=False`` places every unit as if there were no holdout: the variant hash
    does not depend on the holdout's, so the held-out units' would-be variants are the
    split the exposed population stands for (the truth's "launch to everyone" world)."""
    out = np.full((len(spec.experiment), len(units)), -1, dtype=np.int64)
    for i, e in enumerate(spec.experiment):
        v = assign(units, e.assignment(spec, with_holdout=with_holdout))
        lut = {n: k for k, n in enumerate(e.variant_names())}
        out[i] = [lut.get(x, -1) if x is not None else -1 for x in v]
    return out


def world_cells(spec: LongRunSpec, would_be: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Experiment cells of a world with held-out ``mask``: the would-be variant
    (:func:`experiment_cells` without the holdout) unless held out of the surface."""
    out = would_be.copy()
    for i, e in enumerate(spec.experiment):
        out[i][(mask & (1 << SURFACES.index(e.surface))) != 0] = -1
    return out


@dataclasses.dataclass
class _Segment:
    start: int
    end: int
    launched: list[int]  # ids of launches switched on at ``start``
    stacks: dict[str, dict[str, Any]]  # per surface, the launched stack
    active: list[int] = dataclasses.field(default_factory=list)  # experiments running
    started: list[int] = dataclasses.field(default_factory=list)  # experiments from start


def schedule(spec: LongRunSpec) -> list[_Segment]:
    """Days ``[0, days)`` cut at every launch day and experiment boundary, with each
    surface's launched stack and the experiments running."""
    launches = spec.launches()
    cuts = sorted({0, *(x["day"] for x in launches),
                   *(d for e in spec.experiment for d in (e.start_day, e.end_day)
                     if d < spec.days)})
    stacks = {s: dict(spec.policy) for s in SURFACES}
    out = []
    for a, b in zip(cuts, [*cuts[1:], spec.days], strict=True):
        ids = []
        for x in launches:
            if x["day"] == a:
                stacks[x["surface"]] = {**stacks[x["surface"]], **x["change"]}
                ids.append(x["id"])
        active = [i for i, e in enumerate(spec.experiment) if e.start_day <= a < e.end_day]
        started = [i for i in active if spec.experiment[i].start_day == a]
        out.append(_Segment(a, b, ids, {s: dict(v) for s, v in stacks.items()}, active,
                            started))
    return out


class _Policies:
    """The policies of each segment: arm = held-out mask + 8 × the experiments' cells
    (each experiment a digit: 0 not in it, 1 + variant index)."""

    def __init__(self, factory: PolicyFactory, spec: LongRunSpec) -> None:
        self.factory = factory
        self.incumbent = factory.stack(dict(spec.policy), "incumbent")
        self._cache: dict[str, Any] = {}
        self.launches = {x["id"]: x for x in spec.launches()}
        self.experiments = [(e.surface, [e.variants[v] for v in e.variant_names()])
                            for e in spec.experiment]
        self.radix = [int(np.prod([len(v) + 1 for _, v in self.experiments[:i]]))
                      for i in range(len(self.experiments))]
        self.n_combos = int(np.prod([len(v) + 1 for _, v in self.experiments]))

    def stack(self, s: dict[str, Any]) -> Any:
        key = repr(sorted(s.items()))
        if key not in self._cache:
            self._cache[key] = self.factory.stack(s, key)
        return self._cache[key]

    def arm(self, mask: np.ndarray, cells: np.ndarray, active: Sequence[int]) -> np.ndarray:
        """Every user's policy index in a segment where experiments ``active`` run."""
        arm = mask.astype(np.int64).copy()
        for i in active:
            arm += (_ALL + 1) * self.radix[i] * (cells[i] + 1)
        return arm

    def arms(self, seg: _Segment, seen: set[str]) -> tuple[list[Any], list[bool]]:
        """Policies of every arm and whether each is new to its users (a launch on one
        of its exposed surfaces has happened, or it is in an experiment's variant that
        changes the stack)."""
        pols, novel = [], []
        for combo in range(self.n_combos):
            digits = [combo // r % (len(v) + 1) for r, (_, v) in zip(
                self.radix, self.experiments, strict=True)]
            for m in range(_ALL + 1):
                by = {}
                new = any(not m >> i & 1 and s in seen for i, s in enumerate(SURFACES))
                for i, s in enumerate(SURFACES):
                    st = dict(seg.stacks[s]) if not m >> i & 1 else None
                    for e in seg.active:
                        surf, changes = self.experiments[e]
                        if digits[e] and surf == s and st is not None:
                            st.update(changes[digits[e] - 1])
                            new |= bool(changes[digits[e] - 1])
                    by[s] = self.incumbent if st is None else self.stack(st)
                pols.append(SurfacePolicy(by, f"arm{combo * (_ALL + 1) + m}"))
                novel.append(new)
        return pols, novel


def simulate_masks(env: Environment, policies: _Policies, segments: Sequence[_Segment],
                   mask: np.ndarray, state: SimState, *, cells: np.ndarray | None = None,
                   first: int = 0, last: int | None = None,
                   states: list[SimState] | None = None, progress: Progress | None = None,
                   stage: str = "simulate", offset: float = 0.0, total: float | None = None,
                   ) -> list[SimResult]:
    """Run segments ``first .. last - 1`` from ``state`` (the state at the start of
    segment ``first``) with users' held-out ``mask`` and experiment ``cells``; a launch
    restarts the novelty of the users it reaches, and so does an experiment's variant
    that changes the stack. ``states`` (optional) receives the state at the start of
    every segment run, before those restarts."""
    out: list[SimResult] = []
    last = len(segments) if last is None else last
    cells = (np.full((len(policies.experiments), mask.size), -1, np.int64)
             if cells is None else cells)
    seen = {policies.launches[lid]["surface"] for g in segments[:first] for lid in g.launched}
    st = state
    days = segments[last - 1].end
    total = float(days) if total is None else total
    for seg in segments[first:last]:
        if states is not None:
            states.append(st)
        if seg.launched or seg.started:
            st = st.copy()
            for lid in seg.launched:
                s = policies.launches[lid]["surface"]
                seen.add(s)
                bit = 1 << SURFACES.index(s)
                st.novelty_seen[(mask & bit) == 0] = 0.0
            for e in seg.started:
                changed = [k for k, c in enumerate(policies.experiments[e][1]) if c]
                st.novelty_seen[np.isin(cells[e], changed)] = 0.0
        pols, novel = policies.arms(seg, seen)

        def tick(_s: str, i: float, _n: float, a: int = seg.start) -> None:
            report(progress, stage, offset + a + i, total)

        res = env.run(pols, days=seg.end - seg.start, arm=policies.arm(mask, cells, seg.active),
                      state=st, novel=novel, progress=tick, names=[p.name for p in pols])
        out.append(res)
        st = res.state
    return out


# ---------------------------------------------------------------------- truth
def _columns(results: Sequence[SimResult], warmup_days: int) -> dict[str, np.ndarray]:
    c = {k: np.concatenate([r.columns[k] for r in results]) for k in
         ("user", "day", "surface", "step", "impressions", "clicks", "saves", "hides", "ts")}
    return {"user": c["user"], "day": c["day"].astype(np.int64) - warmup_days,
            "surface": c["surface"].astype(np.int64), "ts": c["ts"],
            "sessions": (c["step"] == 0).astype(np.float64),
            "requests": np.ones(c["user"].size), "impressions": c["impressions"].astype(float),
            "clicks": c["clicks"].astype(float), "saves": c["saves"].astype(float),
            "hides": c["hides"].astype(float)}


def looks(start: int, end: int, week_start: int) -> list[int]:
    """Look days (exclusive ends) of the period ``[start, end)``: every week end of the
    weeks counted from ``week_start`` that falls inside, and ``end``."""
    first = week_start + 7 * ((start - week_start) // 7 + 1)
    return [*range(first, end, 7), end]


def windows(launches: Sequence[dict[str, Any]], start: int, end: int,
            ) -> list[dict[str, Any]]:
    """Launch windows: ``[start, first launch)`` (if not empty), then from each launch day
    to the next; launches on the same day share a window."""
    days = sorted({x["day"] for x in launches})
    cuts = ([start] if not days or days[0] > start else []) + days
    out = []
    for a, b in zip(cuts, [*cuts[1:], end], strict=True):
        ids = [x["id"] for x in launches if x["day"] == a]
        out.append({"window": len(out), "start": a, "end": b, "launches": ids})
    return out


def _cell_sums(cols: dict[str, np.ndarray], index: np.ndarray, n: int,
               cuts: np.ndarray) -> np.ndarray:
    """Per tracked unit (``index[user]`` >= 0), cell of days (between consecutive
    ``cuts``) and surface key (each surface, then all of them): the sums of
    :data:`SUM_COLUMNS` and the number of active days; float32 [n, cells, 4, metrics]."""
    n_cells, n_keys = cuts.size - 1, len(SURFACES) + 1
    day = cols["day"]
    keep = (day >= cuts[0]) & (day < cuts[-1]) & (index[cols["user"]] >= 0)
    row = index[cols["user"][keep]]
    cell = np.searchsorted(cuts, day[keep], side="right") - 1
    surf = cols["surface"][keep]
    out = np.zeros((n, n_cells, n_keys, len(TRUTH_METRICS)), dtype=np.float32)
    size = n * n_cells * n_keys
    flat = (row * n_cells + cell) * n_keys
    for j, c in enumerate(SUM_COLUMNS):
        v = cols[c][keep]
        by_surface = np.bincount(flat + surf, v, minlength=size).reshape(n, n_cells, n_keys)
        by_surface[:, :, -1] = by_surface[:, :, :-1].sum(axis=2)
        out[..., j] = by_surface
    span = int(cuts[-1] - cuts[0])
    for key in range(n_keys):
        sel = slice(None) if key == n_keys - 1 else surf == key
        active = np.unique(row[sel] * span + day[keep][sel] - cuts[0])
        r, d = active // span, active % span + cuts[0]
        c = np.searchsorted(cuts, d, side="right") - 1
        np.add.at(out[..., key, -1], (r, c), 1.0)
    return out


def _effects_of(worlds: dict[str, dict[str, np.ndarray]], first_day: np.ndarray,
                bounds: Sequence[tuple[str, int, int, int, int]], n_users: int,
                pairs: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """Rows of true values: for each (series, index, lo, hi, look) of ``bounds`` and each
    surface key, the mean over units with ``first_day < look`` of every metric (a window's
    per-unit sum is divided by its length in days)."""
    units = np.flatnonzero(first_day > np.iinfo(np.int64).min)
    index = np.full(n_users, -1, dtype=np.int64)
    index[units] = np.arange(units.size)
    fd = first_day[units]
    cuts = np.array(sorted({d for b in bounds for d in b[2:4]}), dtype=np.int64)
    sums = {w: _cell_sums(c, index, units.size, cuts) for w, c in worlds.items()}
    keys = [*SURFACES, TOTAL]
    rows = []
    for series, idx, lo, hi, look in bounds:
        tracked = fd < look
        n = int(tracked.sum())
        c0, c1 = int(np.searchsorted(cuts, lo)), int(np.searchsorted(cuts, hi))
        scale = 1.0 / (hi - lo) if series == "window" else 1.0
        for key, (on, off) in pairs.items():
            k = keys.index(key)
            a = sums[on][tracked, c0:c1, k, :].sum(axis=1, dtype=np.float64)
            b = sums[off][tracked, c0:c1, k, :].sum(axis=1, dtype=np.float64)
            for j, m in enumerate(TRUTH_METRICS):
                va = float(a[:, j].mean() * scale) if n else float("nan")
                vb = float(b[:, j].mean() * scale) if n else float("nan")
                rows.append({"series": series, "index": idx, "surface": key, "metric": m,
                             "start": lo, "end": hi, "n": n, "launched": va,
                             "holdout": vb, "effect": va - vb})
    return rows


@dataclasses.dataclass
class LongRunTruth(Result):
    """True effects of the launches (CRN replays), per surface and metric: ``weekly``
    (the week's per-unit sum), ``cumulative`` (per-unit sum since the holdout started)
    and ``window`` (per-unit daily mean over a launch window)."""

    kind: ClassVar[str] = "long_run_truth"
    title: ClassVar[str] = "Ground truth of the launches (common-random-number replays)"

    start_day: int
    days: int
    worlds: list[str]
    values: list[dict[str, Any]]

    def effects(self) -> list[Effect]:
        return [Effect(f"{r['metric']}", r["effect"], n=r["n"], extra={
            "surface": r["surface"], "series": r["series"], "index": r["index"],
            "start": r["start"], "end": r["end"], "launched": r["launched"],
            "holdout": r["holdout"]}) for r in self.values]

    def lookup(self, series: str, surface: str, metric: str) -> dict[int, float]:
        """True effect by index (week number or window) of one series."""
        return {r["index"]: r["effect"] for r in self.values if r["series"] == series
                and r["surface"] == surface and r["metric"] == metric}


def true_effects(env: Environment, policies: _Policies, segments: Sequence[_Segment],
                 spec: LongRunSpec, mask: np.ndarray, state: SimState,
                 first_day: np.ndarray, *, would_be: np.ndarray | None = None,
                 progress: Progress | None = None) -> LongRunTruth:
    """Replay the worlds the holdout's comparisons stand for and tabulate true effects.

    Experiments run in every world as in the real one among the units not held out of
    their surface, with each unit's would-be variant (``would_be``, from
    :func:`experiment_cells` without the holdout): the exposed arm's mean is the mean of
    "every unit exposed, the experiments splitting them as they split the exposed"."""
    n_users = env.truth.n_users
    ho = spec.holdout
    worlds: dict[str, np.ndarray] = {"all": np.zeros(n_users, np.int64),
                                     "none": np.full(n_users, _ALL, np.int64)}
    pairs: dict[str, tuple[str, str]] = {TOTAL: ("all", "none")}
    for i, s in enumerate(SURFACES):
        if ho.per_surface and (ho.surfaces or {}).get(s):
            worlds[f"{s}:on"] = mask & ~(1 << i)
            worlds[f"{s}:off"] = mask | (1 << i)
            pairs[s] = (f"{s}:on", f"{s}:off")
        else:  # compared like the total: held out of every held surface, or of none
            pairs[s] = ("all", "none")
    cols = {}
    total = float(len(worlds) * spec.days)
    for w, (name, m) in enumerate(worlds.items()):
        cells = None if would_be is None else world_cells(spec, would_be, m)
        res = simulate_masks(env, policies, segments, m, state, cells=cells,
                             progress=progress, stage="ground truth", offset=w * spec.days,
                             total=total)
        cols[name] = _columns(res, spec.warmup_days)
    start, end = ho.start_day, spec.days
    bounds: list[tuple[str, int, int, int, int]] = []
    for k, look in enumerate(looks(start, end, start)):
        bounds.append(("weekly", k + 1, look - 7 if look - 7 >= start else start, look, look))
        bounds.append(("cumulative", k + 1, start, look, look))
    for win in windows(spec.launches(), start, end):
        bounds.append(("window", win["window"], win["start"], win["end"], win["end"]))
    rows = _effects_of(cols, first_day, bounds, n_users, pairs)
    return LongRunTruth(start, end, list(worlds), rows)


def experiment_metrics(e: RunningExperimentSpec) -> str:
    """The experiment's metrics file: the simulator's default metrics (and week-2
    retention when it runs two weeks or more)."""
    return DEFAULT_METRICS + (RETENTION_METRIC if e.end_day - e.start_day >= 14 else "")


def experiment_truth(env: Environment, policies: _Policies, segments: Sequence[_Segment],
                     spec: LongRunSpec, index: int, mask: np.ndarray, cells: np.ndarray,
                     states: Sequence[SimState], units: np.ndarray, exposure: np.ndarray,
                     *, progress: Progress | None = None) -> GroundTruth:
    """The experiment's true effects: CRN replays of its window from the state at its
    start, every unit in it given one variant after another (holdout, launches and the
    other experiments as they were), each metric computed over its units from first
    exposure as ``experiment analyze`` computes it."""
    e = spec.experiment[index]
    first = next(k for k, g in enumerate(segments) if g.start == e.start_day)
    last = next(k for k, g in enumerate(segments) if g.end == e.end_day) + 1
    metrics = parse_metrics(tomllib.loads(experiment_metrics(e))).metrics
    names = e.variant_names()
    values: dict[str, dict[str, float]] = {m.name: {} for m in metrics}
    n_users = env.truth.n_users
    days = e.end_day - e.start_day
    for v, name in enumerate(names):
        forced = cells.copy()
        forced[index][cells[index] >= 0] = v
        res = simulate_masks(env, policies, segments, mask, states[first], cells=forced,
                             first=first, last=last, progress=progress,
                             stage=f"ground truth of {e.name}", offset=v * days - e.start_day,
                             total=float(len(names) * days))
        ev = {k: np.concatenate([event_columns(r)[k] for r in res])
              for k in event_columns(res[0])}
        for m in metrics:
            values[m.name][name] = metric_value(ev, units, exposure, m, n_users)
    return GroundTruth(names, [m.name for m in metrics], values, n_units=int(units.size),
                       days=days)


# ---------------------------------------------------------------------- the run
@dataclasses.dataclass
class LongRunSimulation(Result):
    """What :func:`run_long_run` did: sizes, the launches and the truth's headline."""

    kind: ClassVar[str] = "long_run_simulation"
    title: ClassVar[str] = "Simulated long-term holdout: true cumulative effects"

    name: str
    seed: int
    weeks: int
    warmup_days: int
    n_users: int
    n_units: int
    n_held: dict[str, int]
    launches: list[dict[str, Any]]
    holdout: dict[str, Any]
    requests: int
    impressions: int
    seconds: float
    truth: LongRunTruth | None = None
    experiments: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    assignments: Annotated[Any, Field(exclude=True)] = None
    events: Annotated[Any, Field(exclude=True)] = None
    experiment_data: Annotated[Any, Field(exclude=True)] = None

    def effects(self) -> list[Effect]:
        """The true effect on clicks at the last look, per surface."""
        if self.truth is None:
            return []
        last = max(r["index"] for r in self.truth.values if r["series"] == "cumulative")
        return [e for e in self.truth.effects() if e.extra["series"] == "cumulative"
                and e.extra["index"] == last and e.metric in ("clicks", "saves")]

    def rows(self) -> list[dict[str, Any]]:
        """Table rows: per surface and metric, the true cumulative effect at the end."""
        return [{"surface": e.extra["surface"], "metric": e.metric,
                 "days": f"{e.extra['start']}-{e.extra['end']}", "n": e.n,
                 "holdout_value": e.extra["holdout"], "launched_value": e.extra["launched"],
                 "true_effect": e.estimate} for e in self.effects()]

    def notes(self) -> list[str]:
        return [] if self.truth is not None else ["No ground truth (--no-truth)."]


def run_long_run(spec: LongRunSpec, out_dir: str | Path | None = None, *,
                 truth_world: WorldTruth | None = None, progress: Progress | None = None,
                 force: bool = True) -> LongRunSimulation:
    """Simulate the holdout and the launches; write the logs and truth under ``out_dir``.

    ``progress(stage, done, total)`` reports simulated days of the ``warm-up``,
    ``launches`` and ``ground truth`` stages.
    """
    t0 = time.perf_counter()
    truth = truth_world if truth_world is not None else build_world(spec.world)
    env = Environment(truth, spec.simulation, seed=spec.seed)
    factory = PolicyFactory(truth, seed=spec.seed, train_data=lambda: world_log(spec.world))
    policies = _Policies(factory, spec)
    n_users = truth.n_users
    mask = holdout_masks(spec.holdout, np.arange(n_users, dtype=np.int64))
    warm = env.run([policies.incumbent], days=spec.warmup_days, calibrate=True,
                   progress=progress, stage="warm-up", names=["incumbent"])
    segments = schedule(spec)
    ids = np.arange(n_users, dtype=np.int64)
    cells = experiment_cells(spec, ids)
    states: list[SimState] = []
    runs = simulate_masks(env, policies, segments, mask, warm.state, cells=cells,
                          states=states, progress=progress, stage="launches")
    cols = _columns(runs, spec.warmup_days)
    start = spec.holdout.start_day
    first_day = np.full(n_users, np.iinfo(np.int64).min, dtype=np.int64)
    first_ts = np.full(n_users, np.iinfo(np.int64).max, dtype=np.int64)
    in_period = cols["day"] >= start
    np.minimum.at(first_ts, cols["user"][in_period], cols["ts"][in_period])
    units = np.flatnonzero(first_ts < np.iinfo(np.int64).max)
    first_day[units] = (first_ts[units] - env.start_us) // _DAY_US - spec.warmup_days
    gt = None
    if spec.truth:
        gt = true_effects(env, policies, segments, spec, mask, warm.state, first_day,
                          would_be=experiment_cells(spec, ids, with_holdout=False),
                          progress=progress)
    assignments = _assignment_table(units, mask, first_ts, first_day, spec.holdout)
    everything = pa.concat_tables([warm.events_table(), *[r.events_table() for r in runs]])
    events = _events_table(everything, units, n_users, spec.warmup_days, start)
    summaries, data = [], []
    for i in range(len(spec.experiment)):
        summary, tables = _experiment_output(env, policies, segments, spec, i, mask, cells,
                                             states, cols, everything, progress=progress)
        summaries.append(summary)
        data.append(tables)
    held = {s: int(((mask[units] >> i) & 1).sum()) for i, s in enumerate(SURFACES)}
    held[TOTAL] = int(assignments.column("holdout").to_numpy(zero_copy_only=False).sum())
    result = LongRunSimulation(
        name=spec.name, seed=spec.seed, weeks=spec.weeks, warmup_days=spec.warmup_days,
        n_users=n_users, n_units=int(units.size), n_held=held, launches=spec.launches(),
        holdout=spec.holdout.model_dump(), requests=sum(r.n_requests for r in runs),
        impressions=sum(r.n_impressions for r in runs),
        seconds=round(time.perf_counter() - t0, 3), truth=gt, experiments=summaries,
        assignments=assignments, events=events, experiment_data=data)
    if out_dir is not None:
        write_long_run(out_dir, result, spec, force=force)
    return result


def _experiment_output(env: Environment, policies: _Policies, segments: Sequence[_Segment],
                       spec: LongRunSpec, index: int, mask: np.ndarray, cells: np.ndarray,
                       states: Sequence[SimState], cols: dict[str, np.ndarray],
                       everything: pa.Table, *, progress: Progress | None = None,
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """One experiment's summary and files: its units (in it, with a request in its
    window; first exposure = that first request), their events from a week before the
    window (the CUPED pre-period) to its end, the metrics file and the truth."""
    e = spec.experiment[index]
    n_users = env.truth.n_users
    names = np.asarray(e.variant_names(), dtype=object)
    inside = (cols["day"] >= e.start_day) & (cols["day"] < e.end_day)
    first = np.full(n_users, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, cols["user"][inside], cols["ts"][inside])
    units = np.flatnonzero((first < np.iinfo(np.int64).max) & (cells[index] >= 0))
    exposure = np.full(n_users, -1, dtype=np.int64)
    exposure[units] = first[units]
    assignments = pa.table({
        "unit_id": pa.array(units.astype(np.int64)),
        "variant": pa.array(names[cells[index][units]].tolist(), pa.string()),
        "first_exposure_ts": pa.array(first[units], TIMESTAMP_TYPE)})
    ev = _events_table(everything, units, n_users, spec.warmup_days, spec.holdout.start_day)
    day = ev.column("day").to_numpy()
    lo = max(e.start_day - 7, -spec.warmup_days)
    events = ev.filter(pa.array((day >= lo) & (day < e.end_day)))
    truth = None
    if spec.truth:
        truth = experiment_truth(env, policies, segments, spec, index, mask, cells, states,
                                 units, exposure, progress=progress)
    counts = dict(zip(*np.unique(cells[index][units], return_counts=True), strict=True))
    summary = {"name": e.name, "surface": e.surface, "start_day": e.start_day,
               "end_day": e.end_day, "variants": dict(e.variants),
               "layer": e.layer or e.name, "traffic": list(e.traffic),
               "salt": e.assignment(spec).experiment_salt, "n_units": int(units.size),
               "units_per_variant": {str(names[k]): int(v) for k, v in counts.items()},
               "folder": f"experiments/{e.name}",
               "true_effects": [] if truth is None else [
                   {"metric": x.metric, "variant": x.extra["variant"], "effect": x.estimate}
                   for x in truth.effects()]}
    return summary, {"assignments": assignments, "events": events,
                     "metrics": experiment_metrics(e), "truth": truth}


def _assignment_table(units: np.ndarray, mask: np.ndarray, first_ts: np.ndarray,
                      first_day: np.ndarray, holdout: HoldoutSpec) -> pa.Table:
    """One row per unit: ``holdout`` = held out of every surface that has a holdout,
    ``holdout_<surface>`` per such surface, the variant label and first exposure."""
    m = mask[units]
    held = [i for i, s in enumerate(SURFACES) if holdout.shares()[s] > 0]
    full = sum(1 << i for i in held)
    variant = np.where((m & full) == full, HOLDOUT, np.where(m == 0, EXPOSED, PARTIAL))
    cols: dict[str, Any] = {
        "unit_id": pa.array(units.astype(np.int64)),
        "variant": pa.array(variant.tolist(), pa.string()),
        "holdout": pa.array((m & full) == full),
    }
    for i in held:
        cols[f"holdout_{SURFACES[i]}"] = pa.array(((m >> i) & 1).astype(bool))
    cols["first_exposure_ts"] = pa.array(first_ts[units], TIMESTAMP_TYPE)
    cols["first_day"] = pa.array(first_day[units].astype(np.int32))
    return pa.table(cols)


def _events_table(events: pa.Table, units: np.ndarray, n_users: int, warmup_days: int,
                  start: int) -> pa.Table:
    keep = np.zeros(n_users, dtype=bool)
    keep[units] = True
    ev = events.filter(pa.array(keep[events.column("unit_id").to_numpy()]))
    day = ev.column("day").to_numpy().astype(np.int32) - warmup_days
    ev = ev.set_column(ev.schema.get_field_index("day"), "day", pa.array(day))
    week = np.floor_divide(day - start, 7).astype(np.int32)
    return ev.add_column(ev.schema.get_field_index("day") + 1, "week", pa.array(week))


def write_long_run(out_dir: str | Path, result: LongRunSimulation, spec: LongRunSpec, *,
                   force: bool = True) -> Path:
    """Write the run's files (:data:`FILES`) all at once."""
    with atomic_dir(out_dir, force=force) as tmp:
        write_parquet(tmp / "assignments.parquet", result.assignments)
        write_parquet(tmp / "events.parquet", result.events)
        write_json(tmp / "launches.json", {
            "name": spec.name, "start_day": spec.holdout.start_day, "days": spec.days,
            "weeks": spec.weeks, "warmup_days": spec.warmup_days,
            "holdout": spec.holdout.model_dump(), "surfaces": list(SURFACES),
            "launches": spec.launches(),
            "experiments": [{k: x[k] for k in ("name", "surface", "start_day", "end_day",
                                               "variants", "layer", "traffic", "salt",
                                               "folder")} for x in result.experiments]})
        if result.truth is not None:
            write_json(tmp / "truth.json", result.truth.to_dict())
        for x, d in zip(result.experiments, result.experiment_data or [], strict=True):
            folder = tmp / x["folder"]
            folder.mkdir(parents=True)
            a, e, m, t = EXPERIMENT_FILES
            write_parquet(folder / a, d["assignments"])
            write_parquet(folder / e, d["events"])
            write_text(folder / m, d["metrics"])
            if d["truth"] is not None:
                write_json(folder / t, {"experiment": x["name"], **d["truth"].to_dict()})
        write_json(tmp / "summary.json", {**result.to_dict(),
                                          "spec": spec.model_dump(mode="json")})
    return Path(out_dir)
