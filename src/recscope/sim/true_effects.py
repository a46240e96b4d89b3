"""Ground truth by common random numbers: the true effect of any change, per metric.

The estimand of an online experiment is the *global* effect: the metric when every unit
gets the change minus the metric when none does. The simulator can measure it directly:
it replays the same users, from the same starting state and with the same counter-based
random numbers, once per cell (all control, all treatment, or every cell of a 2^K
factorial), and computes each metric over the experiment's units exactly as the analysis
would (per-unit aggregates after first exposure, then the mean, proportion, ratio of sums
or quantile across units). Without interference a unit's outcome in the experiment equals
its outcome in the world of its own cell, so the A/B estimate is unbiased for this truth;
with interference the gap between them is the bias of the naive estimate.

``short_run``: the metric over the experiment's duration; ``long_run``: the same per-unit
aggregate over the last 7 days of a longer replay (windows relative to exposure are
replaced by that calendar week), which shows effects that fade (novelty) or compound
(satisfaction and retention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from recscope.core.progress import Progress, report
from recscope.errors import ConfigError
from recscope.experiments.metrics import Metric
from recscope.io import jsonable
from recscope.results import Effect, Result
from recscope.sim.config import SURFACES
from recscope.sim.environment import Environment, SimResult, SimState

_DAY_US = 86_400_000_000


def event_columns(result: SimResult) -> dict[str, np.ndarray]:
    """The event-log columns of a run as numpy arrays (names as in the Parquet log)."""
    c = result.columns
    return {"unit": c["user"], "ts": c["ts"], "day": c["day"].astype(np.int64),
            "surface": np.asarray(SURFACES, dtype=object)[c["surface"]],
            "session_id": c["session"], "sessions": (c["step"] == 0).astype(np.int64),
            "requests": np.ones(c["user"].size, dtype=np.int64),
            "impressions": c["impressions"].astype(np.int64),
            "clicks": c["clicks"].astype(np.int64), "saves": c["saves"].astype(np.int64),
            "hides": c["hides"].astype(np.int64),
            "session_end": c["quit"].astype(np.int64)}


def per_unit(events: dict[str, np.ndarray], units: np.ndarray, exposure: np.ndarray,
             metric: Metric, n_users: int, *, calendar: tuple[int, int] | None = None,
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-unit values of ``metric`` for ``units`` (numerator and denominator for ratios).

    Events count from the unit's first exposure (``exposure``, µs, per user index), within
    the metric's window, after its filters; ``calendar`` = (start µs, end µs) replaces the
    relative window by absolute times (long-run truth).
    """
    u = events["unit"]
    keep = np.ones(u.size, dtype=bool)
    x = exposure[u]
    ts = events["ts"]
    if calendar is not None:
        keep &= (ts >= calendar[0]) & (ts < calendar[1]) & (x >= 0)
    else:
        lo, hi = metric.window if metric.window is not None else (0.0, np.inf)
        diff = ts - x
        keep &= (x >= 0) & (diff >= lo * _DAY_US)
        if np.isfinite(hi):
            keep &= diff < hi * _DAY_US
    for col, vals in metric.filter.items():
        if col not in events:
            raise ConfigError(f"filter column {col!r} is not in the simulated events",
                              key=f"metrics.{metric.name}.filter")
        keep &= np.isin(events[col], np.asarray(vals, dtype=events[col].dtype))
    for col in metric.value_columns:
        if col not in events:
            raise ConfigError(f"column {col!r} is not in the simulated events (have "
                              f"{', '.join(sorted(events))})", key=f"metrics.{metric.name}")
    uk = u[keep]

    def total(col: str) -> np.ndarray:
        return np.bincount(uk, events[col][keep].astype(np.float64), minlength=n_users)[units]

    if metric.kind == "ratio":
        return total(str(metric.numerator)), total(str(metric.denominator))
    if metric.kind == "proportion":
        pos = events[str(metric.column)][keep] > 0
        return (np.bincount(uk[pos], minlength=n_users)[units] > 0).astype(np.float64), None
    if metric.kind == "count_distinct":
        vals = events[str(metric.column)][keep]
        pairs = np.unique(np.stack([uk, np.unique(vals, return_inverse=True)[1]]), axis=1)
        return np.bincount(pairs[0], minlength=n_users)[units].astype(np.float64), None
    return total(str(metric.column)), None


def metric_value(events: dict[str, np.ndarray], units: np.ndarray, exposure: np.ndarray,
                 metric: Metric, n_users: int, *, calendar: tuple[int, int] | None = None,
                 ) -> float:
    """The metric over ``units``: mean, proportion, ratio of sums or quantile."""
    y, d = per_unit(events, units, exposure, metric, n_users, calendar=calendar)
    if units.size == 0:
        return float("nan")
    if d is not None:
        return float(y.sum() / d.sum()) if d.sum() > 0 else float("nan")
    if metric.kind == "quantile":
        return float(np.quantile(y, metric.q))
    return float(y.mean())


@dataclass
class GroundTruth(Result):
    """True metric values of every cell, short-run and long-run, and derived effects.

    Its :meth:`effects` rows are the true effects of each cell against control
    (``estimate`` = true effect, ``extra``: ``variant``, ``horizon``, ``rel_effect``,
    ``control_value``, ``variant_value``); intervals are NaN because nothing is sampled.
    """

    kind: ClassVar[str] = "ground_truth"
    title: ClassVar[str] = "Ground truth (common-random-number replays)"

    cells: list[str]
    metrics: list[str]
    short_run: dict[str, dict[str, float]]
    long_run: dict[str, dict[str, float]] = field(default_factory=dict)
    components: list[str] = field(default_factory=list)
    n_units: int = 0
    days: int = 0
    long_run_days: int = 0

    def true_effects(self, metric: str, *, long_run: bool = False,
                     ) -> dict[str, dict[str, float]]:
        """Effect of each cell against the first (control) cell: absolute and relative."""
        vals = (self.long_run if long_run else self.short_run).get(metric, {})
        if not vals:
            return {}
        c = vals[self.cells[0]]
        return {cell: {"effect": v - c, "rel_effect": (v - c) / c if c else float("nan")}
                for cell, v in vals.items() if cell != self.cells[0]}

    def shapley(self, metric: str, *, long_run: bool = False) -> dict[str, Any]:
        """True Shapley values and shares of each component (2^K cells in bit order)."""
        if not self.components:
            return {}
        from recscope.attribution import shapley_values

        vals = (self.long_run if long_run else self.short_run)[metric]
        v = np.array([vals[c] for c in self.cells])
        phi = shapley_values(v)
        total = float(v[-1] - v[0])
        out: dict[str, Any] = {"total": total, "components": {}}
        for name, p in zip(self.components, phi, strict=True):
            out["components"][name] = {"effect": float(p),
                                       "share": float(p / total) if total else float("nan")}
        if len(self.components) == 2:
            out["interaction"] = float(v[3] - v[2] - v[1] + v[0])
        return out

    def effects(self) -> list[Effect]:
        """One row per metric, non-control cell and horizon: the true effect."""
        rows: list[Effect] = []
        horizons = [("short_run", self.short_run)] + (
            [("long_run", self.long_run)] if self.long_run else [])
        for horizon, vals in horizons:
            for m in self.metrics:
                control = vals[m][self.cells[0]]
                for cell, e in self.true_effects(m, long_run=horizon == "long_run").items():
                    rows.append(Effect(m, e["effect"], n=self.n_units, extra={
                        "variant": cell, "horizon": horizon, "rel_effect": e["rel_effect"],
                        "control_value": control, "variant_value": vals[m][cell]}))
        return rows

    def attribution(self) -> dict[str, Any]:
        """True Shapley attribution per metric (and long-run), for factorial designs."""
        if not self.components:
            return {}
        out: dict[str, Any] = {m: self.shapley(m) for m in self.metrics}
        if self.long_run:
            out.update({f"{m} (long run)": self.shapley(m, long_run=True)
                        for m in self.metrics})
        return out

    def to_dict(self) -> dict[str, Any]:
        """The fields, plus the derived true ``effects`` rows and ``attribution`` (which
        :meth:`from_dict` recomputes rather than reads)."""
        return {**super().to_dict(),
                **jsonable({"effects": [e.to_dict() for e in self.effects()],
                            "attribution": self.attribution()})}


def replay_cells(env: Environment, policies: Sequence[Any], state: SimState, *, days: int,
                 units: np.ndarray, exposure: np.ndarray, metrics: Sequence[Metric],
                 cell_names: Sequence[str], long_run_days: int = 0,
                 components: Sequence[str] = (),
                 progress: Progress | None = None) -> GroundTruth:
    """Replay every cell for all users from ``state``; metric values over ``units``.

    ``policies[c]`` is cell ``c``'s policy (cell 0 the incumbent); ``exposure`` holds the
    experiment's first-exposure times per user index (the same in every replay: a user's
    first visit happens before anything the policies do can affect it).
    """
    horizon = max(days, long_run_days)
    n_users = env.truth.n_users
    short: dict[str, dict[str, float]] = {m.name: {} for m in metrics}
    long: dict[str, dict[str, float]] = {m.name: {} for m in metrics} if long_run_days else {}
    end_us = env.start_us + (state.day + days) * _DAY_US
    lr = (env.start_us + (state.day + horizon - 7) * _DAY_US,
          env.start_us + (state.day + horizon) * _DAY_US)
    for c, name in enumerate(cell_names):
        arm = np.full(n_users, c, dtype=np.int64)

        def step(_stage: str, i: float, _n: float, c: int = c) -> None:
            report(progress, "ground truth", c * horizon + i, len(cell_names) * horizon)

        res = env.run(policies, days=horizon, arm=arm, state=state, progress=step)
        ev = event_columns(res)
        in_exp = ev["ts"] < end_us
        short_ev = {k: v[in_exp] for k, v in ev.items()}
        for m in metrics:
            short[m.name][name] = metric_value(short_ev, units, exposure, m, n_users)
            if long_run_days:
                long[m.name][name] = metric_value(ev, units, exposure, m, n_users, calendar=lr)
    return GroundTruth(list(cell_names), [m.name for m in metrics], short, long,
                       list(components), int(units.size), days, long_run_days)
