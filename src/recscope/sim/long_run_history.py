"""A simulated history of experiments for long-run estimators, with the long-run truth.

:func:`simulate_history` runs many two-arm experiments of varied changes on the built-in
world (retrievers, rankers and re-rankers, each with or without novelty), every one from
the same warmed-up platform but with its own random numbers and assignment:

* **history** experiments (``h000``, ...) run for ``horizon`` days with both arms kept, so
  the short-run surrogates (the first ``days`` days: ``events.parquet``, exactly what a
  two-week experiment writes) and the per-unit long-run outcome (``outcomes.parquet``:
  active days and sessions in the window ``long_window`` of days after the start, e.g.
  weeks 9–12) are both observed — the data a surrogate index is fitted on;
* **held-out** experiments (``x000``, ...) are changes of families the history never
  saw; they run for ``days`` days only, and the truth of their long-run effect comes from
  two common-random-number replays of ``horizon`` days (everyone on control, everyone
  on treatment) over the experiment's units (``truth.json``), with the settled CTR effect
  (the last two weeks of the replays) for novelty checks.

Folders are all-or-none (:func:`recscope.io.atomic_dir`); ``population.parquet`` holds
every user's pre-period activity (engagement strata for the early-readout correction).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from recscope.config import StrictModel
from recscope.core.progress import Progress, report
from recscope.data.schema import TIMESTAMP_TYPE
from recscope.errors import ConfigError
from recscope.io import atomic_dir, write_json, write_parquet, write_text
from recscope.sim.environment import Environment, SimConfig, SimResult
from recscope.sim.stacks import (
    AffinityRanker,
    EmbeddingRetriever,
    PopularRetriever,
    SlateContext,
    StackPolicy,
    WorldIndex,
)
from recscope.sim.world_model import WorldTruth

_DAY = 86_400_000_000

SURROGATES_TOML = """\
# Short-run surrogates of the long-run outcome (per unit, days since first exposure);
# the cuped_days pre-periods are covariates that adjust every effect, not surrogates.
unit = "unit_id"
variant = "variant"
control = "control"

[metrics.clicks]
kind = "mean"
column = "clicks"
cuped_days = 7

[metrics.saves]
kind = "mean"
column = "saves"
cuped_days = 7

[metrics.hides]
kind = "mean"
column = "hides"

[metrics.impressions]
kind = "mean"
column = "impressions"

[metrics.sessions]
kind = "mean"
column = "sessions"
cuped_days = 7

[metrics.active_days]
kind = "count_distinct"
column = "day"
cuped_days = 7

[metrics.sessions_week2]
kind = "mean"
column = "sessions"
window = [7, 14]

[metrics.saves_week2]
kind = "mean"
column = "saves"
window = [7, 14]

[metrics.active_days_week2]
kind = "count_distinct"
column = "day"
window = [7, 14]
"""
"""The default surrogates (``surrogates.toml`` of a simulated history)."""

LONG_OUTCOME = "active_days_long"
"""Name of the long-run outcome column in ``outcomes.parquet``."""


class HistorySpec(StrictModel):
    """Size and shape of a simulated history."""

    world_seed: int = Field(default=0, ge=0)
    scale: float = Field(default=0.5, gt=0.0, le=100.0)
    seed: int = Field(default=0, ge=0)
    history: int = Field(default=60, ge=3, le=10_000)
    held_out: int = Field(default=30, ge=0, le=10_000)
    days: int = Field(default=14, ge=7, le=60)
    warmup_days: int = Field(default=7, ge=1, le=60)
    horizon: int = Field(default=84, ge=14, le=365)
    long_window: tuple[int, int] = Field(default=(56, 84), strict=False)
    novelty_share: float = Field(default=0.5, ge=0.0, le=1.0)


# ---------------------------------------------------------------------- changes
class _ScoreRanker:
    """A ranker plus a re-ranking score: ``base + w_q·quality_est + w_p·log popularity``."""

    def __init__(self, base: Any, truth: WorldTruth, w_quality: float, w_pop: float,
                 seed: int) -> None:
        rng = np.random.default_rng(seed + 91)
        self.base = base
        q = truth.item_quality + 0.5 * rng.standard_normal(truth.n_items)
        self.extra = w_quality * q + w_pop * truth.item_log_popularity

    def scores(self, users: np.ndarray, items: np.ndarray, context: SlateContext,
               ) -> np.ndarray:
        return self.base.scores(users, items, context) + self.extra[np.maximum(items, 0)]


class _Diversify:
    """A re-ranker: the base policy's top ``3k``, at most ``per_topic`` pins per topic."""

    def __init__(self, base: StackPolicy, truth: WorldTruth, per_topic: int) -> None:
        self.base = base
        self.topic = truth.item_topic
        self.per_topic = per_topic
        self.name = f"diversify{per_topic}"

    def __call__(self, users: np.ndarray, surface: str, k: int, context: SlateContext,
                 ) -> np.ndarray:
        long = np.asarray(self.base(users, surface, 3 * k, context))
        n, m = long.shape
        topics = np.where(long >= 0, self.topic[np.maximum(long, 0)], -1)
        order = np.argsort(topics, axis=1, kind="stable")
        st = np.take_along_axis(topics, order, axis=1)
        pos = np.arange(m)[None, :].repeat(n, axis=0)
        new_group = np.ones((n, m), dtype=bool)
        new_group[:, 1:] = st[:, 1:] != st[:, :-1]
        start = np.maximum.accumulate(np.where(new_group, pos, 0), axis=1)
        rank = np.empty((n, m), dtype=np.int64)
        np.put_along_axis(rank, order, pos - start, axis=1)
        keep = (long >= 0) & (rank < self.per_topic)
        pick = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        out = np.take_along_axis(long, pick, axis=1)
        out[~np.take_along_axis(keep, pick, axis=1)] = -1
        return out


def draw_change(rng: np.random.Generator, held_out: bool) -> dict[str, Any]:
    """A random change (family and parameters); held-out changes use families and
    parameter ranges the history never has."""
    if held_out:
        family = rng.choice(["named", "diversify", "ranker_pop_quality"])
        if family == "named":
            ret, rank = [("embedding_v2", "affinity_quality"), ("embedding", "affinity"),
                         ("embedding_v2", "affinity"), ("popular", "affinity_quality"),
                         ("popular", "popularity")][int(rng.integers(5))]
            return {"family": "named", "retriever": ret, "ranker": rank}
        if family == "diversify":
            return {"family": "diversify", "per_topic": int(rng.integers(1, 4))}
        return {"family": "ranker_pop_quality", "w_quality": float(rng.uniform(-0.3, 0.4)),
                "w_pop": float(rng.uniform(0.3, 0.8))}
    family = rng.choice(["retriever", "ranker", "reranker", "temperature"])
    if family == "retriever":
        return {"family": "retriever", "noise": float(rng.uniform(0.3, 1.4)),
                "popularity_weight": float(rng.uniform(0.0, 0.6))}
    if family == "ranker":
        return {"family": "ranker", "noise": float(rng.uniform(0.3, 1.5)),
                "affinity_weight": float(rng.uniform(0.5, 5.0)),
                "quality_weight": float(rng.uniform(0.0, 0.3))}
    if family == "reranker":
        return {"family": "reranker", "w_quality": float(rng.uniform(-0.3, 0.6)),
                "w_pop": float(rng.uniform(-0.3, 0.3))}
    return {"family": "temperature", "temperature": float(rng.uniform(0.0, 2.0))}


def make_policies(truth: WorldTruth, change: dict[str, Any], index: WorldIndex,
                  seed: int) -> tuple[StackPolicy, Any]:
    """The incumbent (popular ► affinity) and the change's policy."""
    control = StackPolicy(truth, PopularRetriever(truth), AffinityRanker(truth, noise=0.8,
                          seed=0), index=index, name="control")
    f = change["family"]
    s = seed
    if f == "named":
        return control, StackPolicy(truth, change["retriever"], change["ranker"], index=index,
                                    seed=0, name="treatment")
    if f == "retriever":
        ret = EmbeddingRetriever(truth, noise=change["noise"],
                                 popularity_weight=change["popularity_weight"], seed=s)
        return control, StackPolicy(truth, ret, control.ranker, index=index, name="treatment")
    if f == "ranker":
        rk = AffinityRanker(truth, noise=change["noise"],
                            affinity_weight=change["affinity_weight"],
                            quality_weight=change["quality_weight"], seed=s)
        return control, StackPolicy(truth, control.retriever, rk, index=index,
                                    name="treatment")
    if f in ("reranker", "ranker_pop_quality"):
        rk = _ScoreRanker(control.ranker, truth, change["w_quality"], change["w_pop"], s)
        return control, StackPolicy(truth, control.retriever, rk, index=index,
                                    name="treatment")
    if f == "temperature":
        return control, StackPolicy(truth, control.retriever, control.ranker, index=index,
                                    temperature=change["temperature"], name="treatment")
    if f == "diversify":
        return control, _Diversify(control, truth, change["per_topic"])
    raise ConfigError(f"unknown change family {f!r}", key="family")


# ---------------------------------------------------------------------- per-unit data
def _active_days(res: SimResult, n_users: int, lo_day: int, hi_day: int,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per user: distinct active days and sessions with ``lo_day <= day < hi_day``."""
    c = res.columns
    d = c["day"].astype(np.int64)
    keep = (d >= lo_day) & (d < hi_day)
    u, dd = c["user"][keep], d[keep]
    pairs = np.unique(u * 100_000 + dd)
    days = np.bincount(pairs // 100_000, minlength=n_users).astype(np.float64)
    sess = np.bincount(u, (c["step"][keep] == 0).astype(np.float64), minlength=n_users)
    return days, sess


def _ctr(res: SimResult, units: np.ndarray, lo_day: int, hi_day: int) -> float:
    c = res.columns
    d = c["day"].astype(np.int64)
    mask = np.zeros(int(c["user"].max(initial=0)) + 1, dtype=bool)
    mask[units[units < mask.size]] = True
    keep = (d >= lo_day) & (d < hi_day) & mask[c["user"]]
    imp = float(c["impressions"][keep].sum())
    return float(c["clicks"][keep].sum()) / imp if imp else float("nan")


def _events(res: SimResult, keep_user: np.ndarray, end_us: int | None = None) -> pa.Table:
    c = res.columns
    m = keep_user[c["user"]]
    if end_us is not None:
        m &= c["ts"] < end_us
    return res.events_table().filter(pa.array(m))


def simulate_history(spec: HistorySpec, out_dir: str | Path, *, force: bool = False,
                     progress: Progress | None = None,
                     only: Callable[[str], bool] | None = None,
                     stop: Callable[[], bool] | None = None) -> list[str]:
    """Simulate the history and held-out experiments into ``out_dir/<name>/``.

    ``only(name)`` restricts which experiments run (chunks of one history: the changes
    and seeds depend only on ``spec``, not on which ones ran before); ``stop()``, asked
    after each experiment, ends the run early (a time budget). Returns the names
    written. A folder that exists is replaced only with ``force``.
    """
    from recscope.sim.experiment_config import WorldSpec
    from recscope.sim.world_source import build_world

    if not 0 <= spec.long_window[0] < spec.long_window[1] <= spec.horizon:
        raise ConfigError("long_window must be 0 <= start < end <= horizon",
                          key="long_window")
    out = Path(out_dir)
    truth = build_world(WorldSpec(seed=spec.world_seed, scale=spec.scale))
    n = truth.n_users
    index = WorldIndex(truth, seed=0)
    cfg = SimConfig()
    rng = np.random.default_rng(spec.seed)
    plans = []
    for k in range(spec.history + spec.held_out):
        held = k >= spec.history
        name = f"x{k - spec.history:03d}" if held else f"h{k:03d}"
        change = draw_change(rng, held)
        change["novelty"] = bool(rng.random() < spec.novelty_share)
        plans.append((name, held, change, int(rng.integers(2**31))))
    todo = [p for p in plans if only is None or only(p[0])]
    base_env = Environment(truth, cfg, seed=spec.seed)
    control0, _ = make_policies(truth, {"family": "temperature", "temperature": 0.3},
                                index, 0)
    warm = base_env.run([control0], days=spec.warmup_days, calibrate=True, stage="warm-up")
    state = warm.state
    pre_days, pre_sess = _active_days(warm, n, 0, spec.warmup_days)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "surrogates.toml", SURROGATES_TOML)
    write_parquet(out / "population.parquet", pa.table({
        "unit_id": pa.array(np.arange(n, dtype=np.int64)),
        "pre_active_days": pa.array(pre_days), "pre_sessions": pa.array(pre_sess)}))
    write_json(out / "history.json", spec.model_dump(mode="json"))
    start = state.day
    end_us = base_env.start_us + (start + spec.days) * _DAY
    lw = (start + spec.long_window[0], start + spec.long_window[1])
    written = []
    for i, (name, held, change, seed) in enumerate(todo):
        env = Environment(truth, cfg, seed=seed)
        control, treat = make_policies(truth, change, index, seed % 1000)
        arm = np.random.default_rng(seed).integers(0, 2, n)
        novel = [False, change["novelty"]]
        res = env.run([control, treat], days=spec.days if held else spec.horizon, arm=arm,
                      state=state, novel=novel, names=["control", "treatment"])
        c = res.columns
        first = res.first_exposure(n)
        exposed_early = (first >= 0) & (first < end_us)
        units = np.flatnonzero(exposed_early)
        assignments = pa.table({
            "unit_id": pa.array(units.astype(np.int64)),
            "variant": pa.array(np.where(arm[units] == 1, "treatment", "control").tolist()),
            "first_exposure_ts": pa.array(first[units], TIMESTAMP_TYPE)})
        events = pa.concat_tables([_events(warm, exposed_early),
                                   _events(res, exposed_early, end_us)])
        info: dict[str, Any] = {"name": name, "held_out": held, "change": change,
                                "seed": seed, "units": int(units.size),
                                "requests": int(c["user"].size)}
        tables: dict[str, pa.Table] = {"assignments.parquet": assignments,
                                       "events.parquet": events}
        if not held:
            days_l, sess_l = _active_days(res, n, *lw)
            tables["outcomes.parquet"] = pa.table({
                "unit_id": pa.array(units.astype(np.int64)),
                LONG_OUTCOME: pa.array(days_l[units]),
                "sessions_long": pa.array(sess_l[units])})
        else:
            vals = {}
            for a, tag in ((0, "control"), (1, "treatment")):
                rep = env.run([control, treat], days=spec.horizon,
                              arm=np.full(n, a, dtype=np.int64), state=state, novel=novel)
                days_l, sess_l = _active_days(rep, n, *lw)
                days_s, _ = _active_days(rep, n, start, start + spec.days)
                vals[tag] = {LONG_OUTCOME: float(days_l[units].mean()),
                             "sessions_long": float(sess_l[units].mean()),
                             "active_days_short_calendar": float(days_s[units].mean()),
                             "ctr_settled": _ctr(rep, units, start + spec.horizon - 14,
                                                 start + spec.horizon),
                             "ctr_short": _ctr(rep, units, start, start + spec.days)}
            info["truth"] = {"values": vals, "effects": {
                k: vals["treatment"][k] - vals["control"][k] for k in vals["control"]}}
        report(progress, "experiments", i + 1, len(todo))
        with atomic_dir(out / name, force=force) as tmp:
            for fname, t in tables.items():
                write_parquet(tmp / fname, t)
            write_text(tmp / "metrics.toml", SURROGATES_TOML)
            write_text(tmp / "truth.json" if held else tmp / "change.json",
                       json.dumps(info, indent=2) + "\n")
        written.append(name)
        if stop is not None and stop():
            break
    return written


__all__ = ["LONG_OUTCOME", "SURROGATES_TOML", "HistorySpec", "draw_change", "make_policies",
           "simulate_history"]
