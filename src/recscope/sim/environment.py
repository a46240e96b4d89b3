"""The simulated platform: users visit, policies serve slates, users respond and return.

:class:`Environment` drives the built-in world's TRUE preference model
(:class:`recscope.sim.world_model.WorldTruth`) day by day:

1. **Visits.** User ``u`` opens ``Poisson(λ_u · exp(β · s_u))`` sessions a day, where
   ``λ_u`` is the world's heavy-tailed activity times ``sessions_per_day`` and ``s_u`` is
   the user's satisfaction; session start times follow the world's diurnal curve.
2. **Requests.** A session is a sequence of requests, each naming a surface (home feed,
   related after a click, search with a query topic from the user's interests), exactly
   as in the world's log. The policy of the user's arm returns a slate.
3. **Responses.** :func:`recscope.sim.behaviour.respond`: position-biased examination,
   click, save, hide, leaving after a hide, and the decision to make another request.
4. **Satisfaction.** Each active day, ``s_u ← m·s_u + (1−m)·(v̄_u − v_ref)/scale``, where
   ``v̄_u`` is the user's mean session value (``clicks + 2·saves − 2·hides``, curiosity
   clicks excluded) and ``v_ref`` the platform's mean under the incumbent policy; idle
   days shrink ``s_u`` toward 0. Satisfaction sets tomorrow's visit rate, so better
   slates compound into retention while novelty clicks do not.
5. **Interference** (off by default, :mod:`recscope.sim.interference`): creator supply
   (exposure raises creators' output, which makes their pins more engaging for everyone)
   and social spillover (saves appear in followers' home feeds, across arms); with
   ``regions > 1`` each region is its own market with its own creator supply.
6. **Assignment.** ``run`` serves user ``u`` the policy of a static per-user ``arm``, or
   of a :class:`Schedule` (switchback: an arm per region and time slice, fixed for a
   session at its start).

Every random number is counter-based (:mod:`recscope.sim.crn`), so a replay of the same
users under other policies reuses the same numbers: :mod:`recscope.sim.true_effects`
builds true effects from such replays.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import ConfigDict, Field

from recscope.config import StrictModel
from recscope.core.progress import Progress, report
from recscope.data.schema import TIMESTAMP_TYPE
from recscope.errors import ConfigError
from recscope.sim import crn
from recscope.sim.behaviour import SlateResponse, respond
from recscope.sim.config import SURFACES
from recscope.sim.interference import (
    CreatorSupplyConfig,
    SocialConfig,
    SocialGraph,
    regions_of,
)
from recscope.sim.stacks import PolicyLike, SlateContext, as_policy, slates_of
from recscope.sim.world_model import WorldTruth, window_end

_SECOND = 1_000_000
_DAY = 86_400 * _SECOND


class SimConfig(StrictModel):
    """Parameters of users' behaviour over time (the world keeps their preferences)."""

    model_config = ConfigDict(frozen=True)

    sessions_per_day: float = Field(default=0.4, gt=0.0, le=50.0,
                                    description="mean sessions a day of an average user")
    max_sessions_per_day: int = Field(default=8, ge=1, le=100)
    satisfaction_effect: float = Field(default=0.8, ge=0.0, le=10.0,
                                       description="β: visit rate × exp(β · satisfaction)")
    satisfaction_memory: float = Field(default=0.7, ge=0.0, lt=1.0,
                                       description="weight of yesterday's satisfaction")
    satisfaction_scale: float = Field(default=2.0, gt=0.0, le=100.0,
                                      description="session value per unit of satisfaction")
    satisfaction_clip: float = Field(default=3.0, gt=0.0, le=20.0)
    idle_decay: float = Field(default=0.9, ge=0.0, le=1.0,
                              description="satisfaction kept per day without a visit")
    value_click: float = Field(default=1.0, ge=0.0)
    value_save: float = Field(default=2.0, ge=0.0)
    value_hide: float = Field(default=2.0, ge=0.0)
    leave_after_hide: float = Field(default=0.25, ge=0.0, le=1.0)
    continue_click: float = Field(default=0.25, ge=0.0, le=10.0)
    continue_save: float = Field(default=0.25, ge=0.0, le=10.0)
    continue_hide: float = Field(default=0.5, ge=0.0, le=10.0)
    continue_no_click: float = Field(default=0.4, ge=0.0, le=10.0)
    novelty: float = Field(default=0.4, ge=0.0, le=10.0,
                           description="attraction-logit boost of a policy new to the user")
    novelty_sessions: float = Field(default=4.0, gt=0.0, le=1000.0,
                                    description="e-folding of novelty, in sessions")
    creator_supply: CreatorSupplyConfig = Field(default_factory=CreatorSupplyConfig)
    social: SocialConfig = Field(default_factory=SocialConfig)
    regions: int = Field(default=1, ge=1, le=10_000,
                         description="markets: users split by a hash, each region keeps "
                         "its own creator supply (recscope.sim.interference)")


@dataclass(frozen=True)
class Schedule:
    """Switchback assignment: the arm of every (time slice, region).

    ``arms[s, r]`` is the policy index of region ``r`` in slice ``s``; slice ``s`` covers
    ``[start_us + s·slice_us, start_us + (s+1)·slice_us)`` (times past the last slice keep
    the last slice's arm). A session is served the arm of its region at its start.
    """

    arms: np.ndarray  # int64 [n_slices, n_regions]
    region: np.ndarray  # int64 [n_users]
    start_us: int
    slice_us: int

    def arm_at(self, users: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Policy index of each (user, time)."""
        s = np.clip((np.asarray(ts, np.int64) - self.start_us) // self.slice_us, 0,
                    self.arms.shape[0] - 1)
        return self.arms[s, self.region[users]]

    def slice_of(self, ts: np.ndarray) -> np.ndarray:
        """Time slice of each timestamp (-1 before the first)."""
        s = (np.asarray(ts, np.int64) - self.start_us) // self.slice_us
        return np.where(s < 0, -1, np.minimum(s, self.arms.shape[0] - 1))


@dataclass
class SimState:
    """Everything that carries over from one simulated day to the next."""

    day: int
    satisfaction: np.ndarray
    novelty_seen: np.ndarray
    supply: np.ndarray
    exposure_ref: np.ndarray
    ref_days: int = 0
    value_sum: float = 0.0
    value_n: int = 0
    value_ref: float = float("nan")
    pending_social: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def copy(self) -> SimState:
        return copy.deepcopy(self)


@dataclass
class SlateObservation:
    """One batch of served slates and the users' responses (for observers of a run)."""

    day: int
    step: int
    surface: str
    users: np.ndarray  # int64 [n]
    arm: np.ndarray  # int64 [n] policy index
    items: np.ndarray  # int64 [n, k] as shown (after social inserts)
    ts: np.ndarray  # int64 [n] request time (µs)
    session: np.ndarray  # int64 [n]
    keys: np.ndarray  # uint64 [n] request keys (as in SlateContext.keys)
    response: SlateResponse


@dataclass
class SimResult:
    """Per-request records of a run (one row per request, time-ordered within a day)."""

    columns: dict[str, np.ndarray]
    n_days: int
    start_day: int
    policy_names: list[str]
    state: SimState
    daily: list[dict[str, Any]]

    @property
    def n_requests(self) -> int:
        return int(self.columns["user"].size)

    @property
    def n_impressions(self) -> int:
        return int(self.columns["impressions"].sum())

    def first_exposure(self, n_users: int) -> np.ndarray:
        """First request timestamp of each user in this run (int64 µs; -1 if none)."""
        first = np.full(n_users, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, self.columns["user"], self.columns["ts"])
        first[first == np.iinfo(np.int64).max] = -1
        return first

    def events_table(self, user_ids: pa.Array | None = None, *,
                     region: np.ndarray | None = None) -> pa.Table:
        """The event log: ``unit_id``, ``ts`` and metric columns, one row per request.

        With ``region`` (the market of every user index) it also carries ``arm`` (the
        policy index that served the request) and ``region``: what a switchback analysis
        needs, since a user's arm changes with time there.
        """
        c = self.columns
        unit = pa.array(c["user"]) if user_ids is None else user_ids.take(pa.array(c["user"]))
        extra = {} if region is None else {
            "arm": pa.array(c["arm"].astype(np.int32)),
            "region": pa.array(np.asarray(region, np.int32)[c["user"]])}
        return pa.table({
            "unit_id": unit,
            "ts": pa.array(c["ts"], TIMESTAMP_TYPE),
            "day": pa.array(c["day"].astype(np.int32)),
            "surface": pa.array(list(SURFACES), pa.string()).take(pa.array(c["surface"])),
            "session_id": pa.array(c["session"]),
            "sessions": pa.array((c["step"] == 0).astype(np.int32)),
            "requests": pa.array(np.ones(c["user"].size, dtype=np.int32)),
            "impressions": pa.array(c["impressions"]),
            "clicks": pa.array(c["clicks"]),
            "saves": pa.array(c["saves"]),
            "hides": pa.array(c["hides"]),
            "session_end": pa.array(c["quit"].astype(np.int32)),
            **extra,
        })



class Environment:
    """The simulated platform over a world's true preference model.

    ``world`` is a :class:`WorldTruth` or any object with a ``truth`` attribute (the
    built-in world, a calibrated world). ``seed`` fixes every random number.
    """

    def __init__(self, world: Any, config: SimConfig | None = None, *, seed: int = 0) -> None:
        truth = world if isinstance(world, WorldTruth) else getattr(world, "truth", None)
        if not isinstance(truth, WorldTruth):
            raise ConfigError("world must be a WorldTruth or have a .truth", key="world")
        self.truth = truth
        self.config = config or SimConfig()
        self.seed = int(seed)
        wc = truth.config
        pref = wc.preferences
        self.user_vec = np.ascontiguousarray(truth.user_vectors, dtype=np.float64)
        self.item_vec = np.ascontiguousarray(truth.item_vectors, dtype=np.float64)
        norm = np.linalg.norm(self.item_vec, axis=1, keepdims=True)
        self.item_unit = np.ascontiguousarray(self.item_vec / np.maximum(norm, 1e-12))
        self.user_bias = np.ascontiguousarray(truth.user_bias, dtype=np.float64)
        self.item_quality = np.ascontiguousarray(truth.item_quality, dtype=np.float64)
        self.item_static = np.ascontiguousarray(
            pref.quality_weight * truth.item_quality
            + pref.popularity_weight * truth.item_log_popularity, dtype=np.float64)
        self.item_topic = np.ascontiguousarray(truth.item_topic, dtype=np.int64)
        self.item_creator = np.ascontiguousarray(truth.item_creator, dtype=np.int64)
        self.n_creators = int(truth.creator_topic.size)
        self.rate = self.config.sessions_per_day * np.asarray(truth.user_activity, np.float64)
        self.topic_cdf = np.cumsum(truth.user_topics, axis=1)
        self.start_us = window_end(wc)
        sc = wc.sessions
        grid = np.linspace(0.0, 24.0, 24 * 60 + 1)
        dens = 1.0 + sc.diurnal_amplitude * np.cos(2 * np.pi * (grid - sc.peak_hour) / 24.0)
        cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2)])
        self._diurnal = (cdf / cdf[-1], grid)
        cont = 1.0 - 1.0 / sc.mean_requests
        self.continue_logit = float(np.log(max(cont, 1e-6) / max(1 - cont, 1e-6)))
        self._params = {s: self._surface_params(s) for s in SURFACES}
        self.policy_seconds = 0.0
        """Cumulative wall time spent inside policies (reported apart from simulation)."""
        self.region = regions_of(truth.n_users, self.config.regions, self.seed)
        """The market (region) of every user (all 0 with one region)."""
        self.social: SocialGraph | None = None
        if self.config.social.enabled:
            self.social = SocialGraph.build(truth, self.config.social, seed=self.seed)

    # ------------------------------------------------------------------ set-up
    def _surface_params(self, surface: str) -> np.ndarray:
        wc = self.truth.config
        s, p, c = wc.surfaces.get(surface), wc.preferences, self.config
        return np.array([
            s.click_base, s.position_decay,
            p.search_mismatch_penalty if surface == "search" else 0.0,
            p.related_similarity_weight if surface == "related" else 0.0,
            p.affinity_weight, p.save_base, p.save_quality_weight, p.save_affinity_weight,
            p.hide_base, p.hide_affinity_weight, p.hide_quality_weight, c.leave_after_hide,
            self.continue_logit, c.continue_click, c.continue_save, c.continue_hide,
            c.continue_no_click], dtype=np.float64)

    def initial_state(self) -> SimState:
        """Day 0: neutral satisfaction, no novelty seen, every creator at base supply."""
        t = self.truth
        shape = (self.n_creators,) if self.config.regions == 1 else (
            self.config.regions, self.n_creators)
        return SimState(day=0, satisfaction=np.zeros(t.n_users),
                        novelty_seen=np.zeros(t.n_users), supply=np.ones(shape),
                        exposure_ref=np.zeros(shape),
                        pending_social=np.full((t.n_users, self.config.social.inserts), -1,
                                               dtype=np.int64))

    def warmup(self, policy: Any, days: int = 7, progress: Progress | None = None,
               stage: str = "warm-up") -> SimState:
        """Run ``days`` under the incumbent ``policy`` and calibrate the references
        (mean session value, creators' usual exposure); returns the state to start from."""
        return self.run([policy], days=days, calibrate=True, record=False,
                        progress=progress, stage=stage).state

    # ------------------------------------------------------------------ main loop
    def run(self, policies: Sequence[Any], *, days: int,
            arm: np.ndarray | Schedule | None = None,
            state: SimState | None = None, novel: Sequence[bool] | None = None,
            calibrate: bool = False, record: bool = True, progress: Progress | None = None,
            names: Sequence[str] | None = None, stage: str = "simulate",
            observe: Callable[[SlateObservation], None] | None = None) -> SimResult:
        """Simulate ``days`` days; user ``u`` is served ``policies[arm[u]]`` (or, with a
        :class:`Schedule`, the policy of its region in the time slice of the session).

        ``policies[0]`` is the incumbent; others are new to users (novelty) unless
        ``novel`` says otherwise. ``state`` (default :meth:`initial_state`) is not
        modified; the final state is in the result. ``progress(stage, day, days)`` is
        called after every simulated day; ``observe`` (optional) receives every batch of
        slates with the users' per-slot responses (the HTTP traffic driver sends them to
        a service as feedback).
        """
        if days < 1:
            raise ConfigError("days must be at least 1", key="days")
        pols = [as_policy(p) for p in policies]
        n_users = self.truth.n_users
        if isinstance(arm, Schedule):
            a = arm.arms
            r = np.asarray(arm.region)
            if (a.ndim != 2 or r.shape != (n_users,) or r.min() < 0 or r.max() >= a.shape[1]
                    or a.min() < 0 or a.max() >= len(pols) or arm.slice_us <= 0):
                raise ConfigError(f"schedule must hold one policy index in [0, {len(pols)}) "
                                  "per slice and region, and a region per user", key="arm")
        else:
            arm = np.zeros(n_users, dtype=np.int64) if arm is None else np.asarray(arm,
                                                                                   np.int64)
            if arm.shape != (n_users,) or arm.min() < 0 or arm.max() >= len(pols):
                raise ConfigError(f"arm must be one policy index in [0, {len(pols)}) per "
                                  "user", key="arm")
        is_novel = np.array([i > 0 for i in range(len(pols))] if novel is None else novel,
                            dtype=bool)
        st = (state or self.initial_state()).copy()
        start_day = st.day
        cols: dict[str, list[np.ndarray]] = {k: [] for k in _COLUMNS}
        daily: list[dict[str, Any]] = []
        for i in range(days):
            self._day(st, pols, arm, is_novel, cols if record else None, daily, calibrate,
                      observe)
            report(progress, stage, i + 1, days)
        merged = {k: (np.concatenate(v) if v else np.zeros(0, dtype=_COLUMNS[k]))
                  for k, v in cols.items()}
        pnames = list(names) if names is not None else [
            getattr(p, "name", f"policy{j}") for j, p in enumerate(policies)]
        return SimResult(merged, days, start_day, pnames, st, daily)

    def _day(self, st: SimState, pols: list[PolicyLike], arm: np.ndarray | Schedule,
             is_novel: np.ndarray, cols: dict[str, list[np.ndarray]] | None,
             daily: list[dict[str, Any]], calibrate: bool,
             observe: Callable[[SlateObservation], None] | None = None) -> None:
        cfg, wc = self.config, self.truth.config
        sc = wc.sessions
        n_users = self.truth.n_users
        d = st.day
        users_all = np.arange(n_users, dtype=np.int64)
        # 1. visits
        rate = self.rate * np.exp(cfg.satisfaction_effect * np.clip(
            st.satisfaction, -cfg.satisfaction_clip, cfg.satisfaction_clip))
        if self.social is not None and cfg.social.visit_pull > 0:
            rate = rate * (1.0 + cfg.social.visit_pull
                           * (st.pending_social >= 0).sum(axis=1))
        u_visit = crn.uniforms(crn.keys(self.seed, users_all, d), crn.VISIT)
        n_sess = _poisson_inv(rate, u_visit, cfg.max_sessions_per_day)
        user = np.repeat(users_all, n_sess)
        j = np.arange(user.size) - np.repeat(np.cumsum(n_sess) - n_sess, n_sess)
        skey = crn.keys(self.seed, user, d, j)
        hours = np.interp(crn.uniforms(skey, crn.TIME), *self._diurnal)
        t = self.start_us + d * _DAY + (hours * 3600 * _SECOND).astype(np.int64)
        order = np.argsort(t, kind="stable")
        user, skey, t = user[order], skey[order], t[order]
        n = user.size
        session_id = d * 10_000_000 + np.arange(n, dtype=np.int64)
        sess_arm = arm.arm_at(user, t) if isinstance(arm, Schedule) else arm[user]
        markets = self.config.regions > 1
        novelty = np.where(is_novel[sess_arm],
                           cfg.novelty * np.exp(-st.novelty_seen[user] / cfg.novelty_sessions),
                           0.0)
        last_click = np.full(n, -1, dtype=np.int64)
        prev_top = np.full(n, -1, dtype=np.int64)
        prev_clicked = np.zeros(n, dtype=bool)
        value = np.zeros(n)
        exposure = np.zeros(st.supply.shape).ravel()
        saves_u: list[np.ndarray] = []
        saves_i: list[np.ndarray] = []
        pending = st.pending_social
        bonus = self._item_bonus(st)
        flat_bonus = bonus if bonus.ndim == 1 else np.zeros(self.truth.n_items)
        n_imp = n_clk = 0
        active = np.arange(n)
        for step in range(sc.max_requests):
            if active.size == 0:
                break
            rkey = crn.mix_np(skey[active], step)
            u1 = crn.uniforms(rkey, crn.SURFACE)
            if step == 0:
                surf = np.where(u1 < sc.first_search_share, 2, 0)
            else:
                u2 = crn.uniforms(rkey, crn.SURFACE2)
                p_rel = np.where(prev_clicked[active], sc.related_after_click,
                                 sc.related_no_click)
                surf = np.where(u1 < p_rel, 1, np.where(u2 < sc.search_share, 2, 0))
                has_seed = (last_click[active] >= 0) | (prev_top[active] >= 0)
                surf = np.where((surf == 1) & ~has_seed, 0, surf)
                gap = -np.log1p(-crn.uniforms(rkey, crn.GAP)) * sc.mean_gap_seconds
                t[active] += (gap * _SECOND).astype(np.int64)
            query = np.full(active.size, -1, dtype=np.int64)
            srch = surf == 2
            if srch.any():
                qu = crn.uniforms(rkey[srch], crn.QUERY)
                query[srch] = np.minimum(
                    (qu[:, None] > self.topic_cdf[user[active[srch]]]).sum(axis=1),
                    self.truth.n_topics - 1)
            seed = np.where(last_click[active] >= 0, last_click[active], prev_top[active])
            for code, sname in enumerate(SURFACES):
                sel_mask = surf == code
                if not sel_mask.any():
                    continue
                rows = active[sel_mask]
                k = wc.surfaces.get(sname).slate_size
                q = np.where(code == 2, query[sel_mask], -1)
                sd = np.where(code == 1, seed[sel_mask], -1)
                keys_r = rkey[sel_mask]
                items = np.full((rows.size, k), -1, dtype=np.int64)
                for a in np.unique(sess_arm[rows]):
                    g = sess_arm[rows] == a
                    ctx = SlateContext(day=d, step=step, query_topic=q[g], seed_item=sd[g],
                                       keys=keys_r[g])
                    tp = time.perf_counter()
                    items[g] = slates_of(pols[a](user[rows[g]], sname, k, ctx), int(g.sum()), k)
                    self.policy_seconds += time.perf_counter() - tp
                boost = None
                if self.social is not None and code == 0:
                    items, boost = self.social.insert(items, pending, user[rows])
                if markets and bonus.ndim == 2:
                    # each market's supply: the pin's gain where the user lives
                    mb = np.where(items >= 0, bonus[self.region[user[rows]][:, None],
                                                    self.item_creator[np.maximum(items, 0)]],
                                  0.0)
                    boost = mb if boost is None else boost + mb
                resp = respond(user[rows], items, keys_r, user_vec=self.user_vec,
                               item_vec=self.item_vec, item_unit=self.item_unit,
                               user_bias=self.user_bias, item_static=self.item_static,
                               item_quality=self.item_quality, item_topic=self.item_topic,
                               item_bonus=flat_bonus, slot_boost=boost, query=q,
                               seed=sd,
                               novelty=novelty[rows], params=self._params[sname])
                if observe is not None:
                    observe(SlateObservation(d, step, sname, user[rows],
                                             sess_arm[rows].astype(np.int64), items,
                                             t[rows].copy(), session_id[rows], keys_r, resp))
                real = resp.clicks - resp.curiosity
                value[rows] += (cfg.value_click * real + cfg.value_save * resp.saves
                                - cfg.value_hide * resp.hides)
                shown_items = items[resp.shown]
                cre = self.item_creator[shown_items]
                if markets:
                    reg = np.broadcast_to(self.region[user[rows]][:, None], items.shape)
                    cre = reg[resp.shown] * self.n_creators + cre
                exposure += np.bincount(cre, minlength=exposure.size)
                if self.social is not None and resp.saved.any():
                    r_idx, c_idx = np.nonzero(resp.saved)
                    saves_u.append(user[rows[r_idx]])
                    saves_i.append(items[r_idx, c_idx])
                n_imp += int(resp.impressions.sum())
                n_clk += int(resp.clicks.sum())
                if cols is not None:
                    cols["user"].append(user[rows])
                    cols["ts"].append(t[rows].copy())
                    cols["day"].append(np.full(rows.size, d, dtype=np.int32))
                    cols["surface"].append(np.full(rows.size, code, dtype=np.int8))
                    cols["session"].append(session_id[rows])
                    cols["step"].append(np.full(rows.size, step, dtype=np.int16))
                    cols["impressions"].append(resp.impressions)
                    cols["clicks"].append(resp.clicks)
                    cols["saves"].append(resp.saves)
                    cols["hides"].append(resp.hides)
                    cols["quit"].append(resp.quit)
                    cols["arm"].append(sess_arm[rows].astype(np.int16))
                last_click[rows] = np.where(resp.last_click >= 0, resp.last_click,
                                            last_click[rows])
                prev_clicked[rows] = resp.clicks > 0
                prev_top[rows] = np.where(items[:, 0] >= 0, items[:, 0], prev_top[rows])
                scroll = wc.surfaces.get(sname).scroll_seconds
                t[rows] += (resp.impressions * scroll * _SECOND).astype(np.int64)
                surf[sel_mask] = np.where(resp.quit, -1, code)
            active = active[surf >= 0]
        self._end_of_day(st, user, value, sess_arm, is_novel,
                         exposure.reshape(st.supply.shape), saves_u, saves_i, calibrate)
        daily.append({"day": d, "sessions": int(n), "active_users": int((n_sess > 0).sum()),
                      "impressions": n_imp, "clicks": n_clk,
                      "mean_satisfaction": float(st.satisfaction.mean())})
        st.day += 1

    def _item_bonus(self, st: SimState) -> np.ndarray:
        """Attraction gain of every pin (per region and pin with several markets)."""
        cs = self.config.creator_supply
        if not cs.enabled:
            return np.zeros(self.truth.n_items)
        return cs.weight * np.log(st.supply[..., self.item_creator])

    def _end_of_day(self, st: SimState, user: np.ndarray, value: np.ndarray,
                    sess_arm: np.ndarray, is_novel: np.ndarray, exposure: np.ndarray,
                    saves_u: list[np.ndarray], saves_i: list[np.ndarray],
                    calibrate: bool) -> None:
        cfg = self.config
        n_users = self.truth.n_users
        cnt = np.bincount(user, minlength=n_users)
        tot = np.bincount(user, value, minlength=n_users)
        on = cnt > 0
        if calibrate and user.size:
            # reference = the mean over active users of their mean session value
            st.value_sum += float((tot[on] / cnt[on]).sum())
            st.value_n += int(on.sum())
            st.value_ref = st.value_sum / st.value_n
            st.exposure_ref = (st.exposure_ref * st.ref_days + exposure) / (st.ref_days + 1)
            st.ref_days += 1
        if np.isfinite(st.value_ref):
            mean_v = np.where(on, tot / np.maximum(cnt, 1), 0.0)
            m = cfg.satisfaction_memory
            target = np.clip((mean_v - st.value_ref) / cfg.satisfaction_scale,
                             -cfg.satisfaction_clip, cfg.satisfaction_clip)
            st.satisfaction = np.where(on, m * st.satisfaction + (1 - m) * target,
                                       cfg.idle_decay * st.satisfaction)
        st.novelty_seen += np.bincount(user, is_novel[sess_arm].astype(np.float64),
                                       minlength=n_users)
        cs = cfg.creator_supply
        if cs.enabled and st.ref_days > 0 and not calibrate:
            target = ((exposure + 1.0) / (st.exposure_ref + 1.0)) ** cs.elasticity
            st.supply = np.clip((1 - cs.rate) * st.supply + cs.rate * target,
                                cs.min_supply, cs.max_supply)
        if self.social is not None:
            st.pending_social = self.social.spread(
                st.pending_social, np.concatenate(saves_u) if saves_u else np.zeros(0, np.int64),
                np.concatenate(saves_i) if saves_i else np.zeros(0, np.int64), st.day,
                self.seed)


_COLUMNS: dict[str, Any] = {"user": np.int64, "ts": np.int64, "day": np.int32,
                            "surface": np.int8, "session": np.int64, "step": np.int16,
                            "impressions": np.int32, "clicks": np.int32, "saves": np.int32,
                            "hides": np.int32, "quit": np.bool_, "arm": np.int16}


def _poisson_inv(rate: np.ndarray, u: np.ndarray, cap: int) -> np.ndarray:
    """Poisson(rate) draws by inversion of uniforms ``u``, capped at ``cap``."""
    p = np.exp(-rate)
    cdf = p.copy()
    n = np.zeros(rate.size, dtype=np.int64)
    for k in range(1, cap + 1):
        more = u >= cdf
        if not more.any():
            break
        n += more
        p = p * rate / k
        cdf = cdf + p
    return n
