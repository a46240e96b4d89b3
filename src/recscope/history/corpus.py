"""A simulated history to learn from: many candidate stacks on one built-in world, each with
every signal a team sees before and after an experiment, and the truth.

Everything expensive is shared: one world and its logged history, one held-out split, one
warm-up per simulator variant, one baseline replay per variant. Each candidate then costs
a few vectorised numpy passes and a few simulated days:

* **offline**: NDCG@10 and recall@20 of its top-10/20 home-feed lists for the held-out
  users against the last 20% of the log (clicks and saves), paired with the baseline
  (mean per-user difference, normal 95% interval);
* **OPE**: self-normalised IPS of its click rate on the top home-feed slot from the
  world's logged slates (exact logging propensities), the candidate as a softmax over its
  scores of the logged pool; reported relative to the baseline's estimate on the same log;
* **replay**: a short common-random-number replay (``replay_days`` days, a
  ``replay_share`` of users, no novelty and no interference: a simplified simulator) of
  the candidate and the baseline on the same users; relative clicks per user;
* **online**: a 50/50 A/B test in the simulated platform for ``days`` days (novelty on for
  some candidates, creator-supply interference on for others), read out day by day with
  :func:`recscope.experiments.sequential.monitor` (fixed-horizon and always-valid);
* **truth**: the global effect (every user on the candidate vs every user on the
  baseline, common random numbers between the two) over the experiment's days, and over
  the last week of ``long_run_days`` (the long-run effect).

The experiment, the replay and the truth each draw their own random numbers (simulator
seeds ``seed + 1``, ``+ 3``, ``+ 2``): a readout whose noise were shared with the truth
would look more accurate than it is.

Effects are relative (``candidate / baseline - 1``) on clicks, saves and sessions per user.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from recscope.errors import ConfigError

Progress = Callable[[str, int, int], None]
METRICS = ("clicks", "saves", "sessions")
PRIMARY = "clicks"
Z95 = float(sps.norm.ppf(0.975))


@dataclass(frozen=True)
class CorpusConfig:
    """Size of the simulated history (defaults: ~1 s a candidate on one core)."""

    n: int = 200
    seed: int = 0
    world_scale: float = 0.1
    log_impressions: int = 300_000
    warmup_days: int = 3
    days: int = 14
    long_run_days: int = 28
    replay_days: int = 2
    replay_share: float = 0.25
    ope_beta: float = 2.0
    eval_users: int = 2000
    novelty_share: float = 0.5
    interference_share: float = 0.3
    online_days: int = 0  # the A/B test's days; 0: ``days`` (the truth's window)

    def __post_init__(self) -> None:
        checks = {"n": self.n >= 1, "world_scale": self.world_scale > 0,
                  "days": self.days >= 2, "long_run_days": self.long_run_days >= self.days,
                  "replay_days": self.replay_days >= 1,
                  "replay_share": 0 < self.replay_share <= 1,
                  "warmup_days": self.warmup_days >= 1, "ope_beta": self.ope_beta > 0,
                  "online_days": self.online_days == 0 or self.online_days >= 2}
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"invalid value {getattr(self, key)!r}", key=key)

    @classmethod
    def tiny(cls, n: int = 12, seed: int = 0) -> CorpusConfig:
        """A corpus for tests: a 600-user world and short runs (a few seconds)."""
        return cls(n=n, seed=seed, world_scale=0.03, log_impressions=60_000, warmup_days=1,
                   days=4, long_run_days=6, replay_days=1, replay_share=0.5, eval_users=600)


# ---------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class CandidateSpec:
    """One candidate stack: retriever ► ranker ► re-ranker with hyper-parameters, and the
    simulator features switched on during its experiment."""

    candidate_id: str
    family: str
    retriever: dict[str, Any]
    ranker: dict[str, Any]
    reranker: dict[str, Any]
    temperature: float
    novelty: bool
    interference: bool

    def to_dict(self) -> dict[str, Any]:
        return {"candidate_id": self.candidate_id, "family": self.family,
                "retriever": self.retriever, "ranker": self.ranker,
                "reranker": self.reranker, "temperature": self.temperature,
                "novelty": self.novelty, "interference": self.interference}


BASELINE_SPEC = CandidateSpec(
    "baseline", "embedding/affinity/none",
    {"kind": "embedding", "noise": 0.8, "popularity_weight": 0.2, "pool": 100},
    {"kind": "affinity", "noise": 0.8, "affinity_weight": 3.0, "popularity_weight": 0.3},
    {"kind": "none"}, 0.3, False, False)


def sample_candidates(n: int, seed: int, novelty_share: float = 0.5,
                      interference_share: float = 0.3) -> list[CandidateSpec]:
    """``n`` candidate stacks drawn at random: the family is (retriever kind, ranker kind,
    re-ranker kind); hyper-parameters vary within a family."""
    rng = np.random.default_rng([seed, 19])
    out = []
    for i in range(n):
        rk = rng.choice(["embedding", "embedding", "embedding", "popular", "random"])
        if rk == "embedding":
            ret = {"kind": "embedding", "noise": round(float(rng.uniform(0.2, 1.4)), 3),
                   "popularity_weight": round(float(rng.uniform(0.0, 0.6)), 3),
                   "pool": int(rng.choice([50, 100, 150]))}
        else:
            ret = {"kind": str(rk), "pool": int(rng.choice([50, 100, 150]))}
        kk = rng.choice(["affinity", "affinity", "affinity_quality", "affinity_quality",
                         "popularity"])
        if kk == "popularity":
            rank: dict[str, Any] = {"kind": "popularity"}
        else:
            rank = {"kind": str(kk), "noise": round(float(rng.uniform(0.2, 1.4)), 3),
                    "affinity_weight": round(float(rng.uniform(1.0, 5.0)), 3),
                    "popularity_weight": round(float(rng.uniform(0.0, 0.8)), 3)}
            if kk == "affinity_quality":
                rank["quality_weight"] = round(float(rng.uniform(0.05, 0.4)), 3)
                rank["quality_noise"] = round(float(rng.uniform(0.2, 1.0)), 3)
        ek = rng.choice(["none", "none", "diversity", "demote_popular"])
        if ek == "diversity":
            rr: dict[str, Any] = {"kind": "diversity", "max_per_topic": int(rng.integers(1, 4))}
        elif ek == "demote_popular":
            rr = {"kind": "demote_popular", "head_share": round(float(rng.uniform(0.02, 0.2)), 3),
                  "penalty": round(float(rng.uniform(1.0, 6.0)), 3)}
        else:
            rr = {"kind": "none"}
        family = f"{ret['kind']}/{rank['kind']}/{rr['kind']}"
        out.append(CandidateSpec(
            f"c{seed:02d}-{i:04d}", family, ret, rank, rr,
            round(float(rng.uniform(0.1, 0.6)), 3), bool(rng.random() < novelty_share),
            bool(rng.random() < interference_share)))
    return out


class Reranked:
    """A policy whose top-``2k`` slate is re-ranked to ``k`` (topic diversity, or the
    popular head moved down), so re-rankers are a real third stage."""

    def __init__(self, inner: Any, spec: dict[str, Any], item_topic: np.ndarray,
                 head: np.ndarray) -> None:
        self.inner = inner
        self.spec = spec
        self.item_topic = item_topic
        self.head = head
        self.name = getattr(inner, "name", "policy") + f"+{spec['kind']}"

    def __call__(self, users: np.ndarray, surface: str, k: int, context: Any) -> np.ndarray:
        items = np.asarray(self.inner(users, surface, 2 * k, context))
        return rerank(items, k, self.spec, self.item_topic, self.head)


def rerank(items: np.ndarray, k: int, spec: dict[str, Any], item_topic: np.ndarray,
           head: np.ndarray) -> np.ndarray:
    """Re-rank each row of ``items`` (-1 pads) and keep ``k``: stable sort by a penalty."""
    m = items.shape[1]
    pos = np.broadcast_to(np.arange(m, dtype=np.float64), items.shape)
    valid = items >= 0
    safe = np.maximum(items, 0)
    if spec["kind"] == "diversity":
        topic = np.where(valid, item_topic[safe], -1 - np.arange(m))
        same = (topic[:, :, None] == topic[:, None, :]) & np.tri(m, k=-1, dtype=bool)[None]
        seen = same.sum(axis=2)  # earlier items of the same topic
        key = pos + m * (seen >= spec["max_per_topic"])
    elif spec["kind"] == "demote_popular":
        key = pos + spec["penalty"] * (head[safe] < spec["head_share"])
    else:
        key = pos.copy()
    key = np.where(valid, key, np.inf)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(items, order, axis=1)


# ---------------------------------------------------------------------- the shared world
@dataclass
class _Shared:
    cfg: CorpusConfig
    world: Any
    truth: Any
    index: Any
    eval_users: np.ndarray
    relevance: Any
    base_offline: dict[str, np.ndarray]
    split_fingerprint: str
    ope_rows: dict[str, np.ndarray]
    head: np.ndarray
    envs: dict[tuple[bool, bool], Any] = field(default_factory=dict)
    states: dict[tuple[bool, bool], Any] = field(default_factory=dict)
    truth_envs: dict[tuple[bool, bool], Any] = field(default_factory=dict)
    truth_states: dict[tuple[bool, bool], Any] = field(default_factory=dict)
    base_runs: dict[tuple[bool, bool], dict[str, np.ndarray]] = field(default_factory=dict)
    replay_env: Any = None
    replay_state: Any = None
    replay_base: dict[str, np.ndarray] = field(default_factory=dict)
    base_ope: tuple[np.ndarray, float] | None = None
    baseline: CandidateSpec = BASELINE_SPEC
    components: dict[str, Any] = field(default_factory=dict)
    parts: dict[tuple[str, str, int], Any] = field(default_factory=dict)


def _world(cfg: CorpusConfig) -> Any:
    from recscope.sim import World, WorldConfig

    wc = WorldConfig(seed=cfg.seed).scaled(cfg.world_scale)
    wc = wc.model_copy(update={"n_impressions": cfg.log_impressions})
    return World.generate(wc)


def _seed_of(name: str) -> int:
    """A stable 32-bit seed from a name."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def build_policy(spec: CandidateSpec, shared: _Shared, *, temperature: float | None = None,
                 ) -> Any:
    """The simulator policy of a candidate (built-in stages with its hyper-parameters)."""
    from recscope.sim.stacks import (
        AffinityRanker,
        ComponentRanker,
        ComponentRetriever,
        EmbeddingRetriever,
        PopularityRanker,
        StackPolicy,
    )

    t = shared.truth
    seed = _seed_of(spec.candidate_id)
    r = spec.retriever
    retriever: Any = r["kind"]
    k = spec.ranker
    if r["kind"] in shared.components:  # a fitted recscope component (the demo's)
        key = ("retriever", r["kind"], 0)
        if key not in shared.parts:  # its pools are computed once for every user
            shared.parts[key] = ComponentRetriever(shared.components[r["kind"]], t.n_users)
        retriever = shared.parts[key]
    elif r["kind"] == "embedding":
        retriever = EmbeddingRetriever(t, noise=r["noise"], pool=r["pool"],
                                       popularity_weight=r["popularity_weight"], seed=seed)
    if k["kind"] in shared.components:
        ranker: Any = ComponentRanker(shared.components[k["kind"]])
    elif k["kind"] == "popularity":
        ranker = PopularityRanker(t)
    else:
        ranker = AffinityRanker(t, noise=k["noise"], affinity_weight=k["affinity_weight"],
                                popularity_weight=k["popularity_weight"],
                                quality_weight=k.get("quality_weight", 0.0),
                                quality_noise=k.get("quality_noise", 0.5), seed=seed)
    temp = spec.temperature if temperature is None else temperature
    pol: Any = StackPolicy(t, retriever, ranker, pool=int(r["pool"]), temperature=temp,
                           index=shared.index, seed=seed, name=spec.candidate_id)
    if spec.reranker["kind"] != "none":
        pol = Reranked(pol, spec.reranker, t.item_topic, shared.head)
    return pol


def _context(n: int, seed: int) -> Any:
    from recscope.sim.stacks import SlateContext

    keys = (np.arange(n, dtype=np.uint64) + np.uint64(seed) * np.uint64(1_000_003))
    return SlateContext(day=0, step=0, query_topic=np.full(n, -1, np.int64),
                        seed_item=np.full(n, -1, np.int64), keys=keys)


def _offline_values(policy: Any, shared: _Shared) -> dict[str, np.ndarray]:
    """Per held-out user NDCG@10 and recall@20 of the policy's home-feed lists."""
    from recscope.data.rankings import RankedLists
    from recscope.offline import evaluate

    users = shared.eval_users
    items = np.asarray(policy(users, "home_feed", 20, _context(users.size, 7)))
    lists = RankedLists(users.astype(np.int32), items.astype(np.int32),
                        np.zeros(items.shape, np.float32))
    res = evaluate(lists, shared.relevance, ["ndcg@10", "recall@20"], bootstrap=0)
    return {"ndcg@10": res.values("ndcg@10"), "recall@20": res.values("recall@20")}


def _ope_rows(world: Any) -> dict[str, np.ndarray]:
    """Logged top home-feed slots: user, item, exact propensity, click."""
    t = world.interactions.table
    ev = t.column("event").to_numpy(zero_copy_only=False)
    surf = t.column("surface").to_numpy(zero_copy_only=False)
    pos = t.column("position").to_numpy()
    req = t.column("request_id").to_numpy()
    user = t.column("user_id").to_numpy()
    item = t.column("item_id").to_numpy()
    prop = t.column("propensity").to_numpy()
    top = (surf == "home_feed") & (pos == 0)
    imp = np.flatnonzero(top & (ev == "impression"))
    clicked = set(zip(req[top & (ev == "click")].tolist(), item[top & (ev == "click")].tolist(),
                      strict=True))
    reward = np.array([(r, i) in clicked for r, i in zip(req[imp].tolist(), item[imp].tolist(),
                                                         strict=True)], dtype=np.float64)
    ok = np.isfinite(prop[imp]) & (prop[imp] > 0)
    imp = imp[ok]
    return {"user": user[imp].astype(np.int64), "item": item[imp].astype(np.int64),
            "pscore": prop[imp].astype(np.float64), "reward": reward[ok]}


def _ope_weights(spec: CandidateSpec, shared: _Shared) -> np.ndarray:
    """Importance weights pi_e(a | u) / pi_0(a | u) of the logged top slots."""
    rows = shared.ope_rows
    users = np.unique(rows["user"])
    pol = build_policy(spec, shared, temperature=0.0)
    inner = pol.inner if isinstance(pol, Reranked) else pol
    pool, _ = shared.world.policy.home_pools(users)
    pool = np.asarray(pool, dtype=np.int64)
    ctx = _context(users.size, 11)
    safe = np.maximum(pool, 0)
    s = np.asarray(inner.ranker.scores(users, safe, ctx), dtype=np.float64)
    if spec.reranker["kind"] == "demote_popular":
        s = s - 0.5 * spec.reranker["penalty"] * (shared.head[safe] < spec.reranker["head_share"])
    retrieved = np.asarray(inner.retriever.candidates(users, inner.pool, ctx))
    in_ret = (safe[:, :, None] == retrieved[:, None, :]).any(axis=2) & (pool >= 0)
    allowed = np.where(in_ret.any(axis=1, keepdims=True), in_ret, pool >= 0)
    allowed &= np.isfinite(s)  # a component scores what it cannot rank as -inf
    with warnings.catch_warnings():  # a row with nothing allowed: probability 0
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = np.nanmean(np.where(allowed, s, np.nan), axis=1, keepdims=True)
        sd = np.nanstd(np.where(allowed, s, np.nan), axis=1, keepdims=True)
    z = np.where(allowed, (np.where(allowed, s, 0.0) - np.nan_to_num(mu))
                 / np.where(sd > 0, sd, 1.0), -np.inf)
    z = shared.cfg.ope_beta * z
    top = z.max(axis=1, keepdims=True)
    p = np.exp(z - np.where(np.isfinite(top), top, 0.0))
    tot = p.sum(axis=1, keepdims=True)
    p = np.divide(p, tot, out=np.zeros_like(p), where=tot > 0)
    row = np.searchsorted(users, rows["user"])
    hit = pool[row] == rows["item"][:, None]
    pi_e = np.where(hit, p[row], 0.0).sum(axis=1)
    return pi_e / rows["pscore"]


def _snips(w: np.ndarray, r: np.ndarray) -> tuple[float, np.ndarray]:
    """Self-normalised IPS value and its per-round influence (for a paired SE)."""
    sw = w.sum()
    if sw <= 0:
        return math.nan, np.full(w.size, math.nan)
    v = float((w * r).sum() / sw)
    return v, w * (r - v) / (sw / w.size)


def _user_day(result: Any, n_users: int, days: int, start: int) -> dict[str, np.ndarray]:
    """Per user per day totals [n_users, days] of clicks, saves and sessions."""
    c = result.columns
    idx = c["user"] * days + (c["day"] - start)
    out = {}
    for m, col in (("clicks", c["clicks"]), ("saves", c["saves"]),
                   ("sessions", (c["step"] == 0).astype(np.int64))):
        out[m] = np.bincount(idx, weights=col, minlength=n_users * days).reshape(n_users, days)
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    sb = float(b.sum())
    return float(a.sum()) / sb - 1.0 if sb > 0 else math.nan


SIM_VARIANTS = tuple((nov, itf) for nov in (False, True) for itf in (False, True))


def prepare(cfg: CorpusConfig, progress: Progress | None = None, *, world: Any = None,
            components: dict[str, Any] | None = None,
            baseline: CandidateSpec = BASELINE_SPEC,
            variants: tuple[tuple[bool, bool], ...] = SIM_VARIANTS) -> _Shared:
    """Generate the world (or take ``world``), split its log, and run everything the
    candidates share. ``components``: fitted recscope components that candidate specs
    may name as a retriever or ranker kind; ``baseline``: what every candidate is
    compared with; ``variants``: the (novelty, interference) simulator variants to warm
    up (none: only the pre-experiment signals can be computed)."""
    from recscope.data.rankings import Relevance
    from recscope.data.splits import temporal_split_fraction
    from recscope.sim import Environment, SimConfig
    from recscope.sim.stacks import WorldIndex

    world = _world(cfg) if world is None else world
    truth = world.truth
    pos = world.interactions.filter(events=["click", "save"])
    sp = temporal_split_fraction(pos, 0.2)
    held = sp.test.to_csr("binary")
    rel = Relevance.from_csr((held - held.multiply(sp.train.to_csr("binary"))).tocsr())
    users = np.flatnonzero(rel.counts() > 0).astype(np.int64)[:cfg.eval_users]
    pop_rank = np.argsort(np.argsort(-truth.item_popularity, kind="stable"), kind="stable")
    head = pop_rank / truth.n_items  # popularity rank as a share of the catalogue
    shared = _Shared(cfg, world, truth, WorldIndex(truth, pool=150, seed=cfg.seed), users, rel,
                     {}, sp.test.fingerprint(), _ope_rows(world), head, baseline=baseline,
                     components=dict(components or {}))
    base = build_policy(baseline, shared)
    shared.base_offline = _offline_values(build_policy(baseline, shared, temperature=0.0),
                                          shared)
    w_b = _ope_weights(baseline, shared)
    v_b, infl_b = _snips(w_b, shared.ope_rows["reward"])
    shared.base_ope = (infl_b, v_b)
    warm_variants(shared, variants, progress)
    renv = Environment(world, SimConfig(novelty=0.0), seed=cfg.seed + 3)
    shared.replay_env = renv
    shared.replay_state = renv.warmup(base, days=cfg.warmup_days)
    run = renv.run([base], days=cfg.replay_days, state=shared.replay_state)
    rb = _user_day(run, truth.n_users, cfg.replay_days, shared.replay_state.day)
    shared.replay_base = rb
    if progress is not None:
        progress("prepare", len(variants) + 1, len(variants) + 1)
    return shared


def warm_variants(shared: _Shared, variants: tuple[tuple[bool, bool], ...],
                  progress: Progress | None = None) -> None:
    """Warm up the experiment and truth simulators of each (novelty, interference)
    variant, and run the baseline's truth once per variant."""
    from recscope.sim import Environment, SimConfig
    from recscope.sim.interference import CreatorSupplyConfig

    # independent random numbers for the experiment, the truth and the replay: the
    # readout's error and the replay's must not be coupled to the truth's draws
    cfg, world, truth = shared.cfg, shared.world, shared.truth
    base = build_policy(shared.baseline, shared)
    for i, (nov, itf) in enumerate(variants):
        sim = SimConfig(novelty=0.4 if nov else 0.0,
                        creator_supply=CreatorSupplyConfig(enabled=itf, weight=1.5))
        env = Environment(world, sim, seed=cfg.seed + 1)
        shared.envs[(nov, itf)] = env
        shared.states[(nov, itf)] = env.warmup(base, days=cfg.warmup_days)
        tenv = Environment(world, sim, seed=cfg.seed + 2)
        st = tenv.warmup(base, days=cfg.warmup_days)
        shared.truth_envs[(nov, itf)], shared.truth_states[(nov, itf)] = tenv, st
        run = tenv.run([base], days=cfg.long_run_days, state=st)
        shared.base_runs[(nov, itf)] = _user_day(run, truth.n_users, cfg.long_run_days, st.day)
        if progress is not None:
            progress("prepare", i + 1, len(variants) + 1)


def pre_experiment(spec: CandidateSpec, shared: _Shared) -> dict[str, Any]:
    """A candidate's record with the signals measured before any experiment: offline
    deltas, OPE and replay (what :func:`recscope.history.predict.predict_candidate`
    needs)."""
    return _pre_experiment(spec, shared)[0]


def _pre_experiment(spec: CandidateSpec, shared: _Shared,
                    ) -> tuple[dict[str, Any], np.random.Generator]:
    """:func:`pre_experiment`, and the candidate's random stream (its A/B split comes
    next from the same stream)."""
    cfg, truth = shared.cfg, shared.truth
    rec: dict[str, Any] = {**spec.to_dict(), "model_version": f"{spec.family}@{spec.candidate_id}",
                           "experiment": f"exp-{spec.candidate_id}",
                           "split_fingerprint": shared.split_fingerprint,
                           "world_seed": cfg.seed, "source": "simulated"}
    # offline
    vals = _offline_values(build_policy(spec, shared, temperature=0.0), shared)
    offline = {}
    for m, v in vals.items():
        b = shared.base_offline[m]
        ok = np.isfinite(v) & np.isfinite(b)
        d = v[ok] - b[ok]
        se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else math.nan
        est = float(d.mean()) if d.size else math.nan
        offline[m] = {"estimate": est, "ci_low": est - Z95 * se, "ci_high": est + Z95 * se,
                      "se": se, "n": int(d.size), "baseline": float(b[ok].mean())}
    rec["offline"] = offline
    # OPE (relative to the baseline's estimate on the same log)
    assert shared.base_ope is not None
    infl_b, v_b = shared.base_ope
    w = _ope_weights(spec, shared)
    v_c, infl_c = _snips(w, shared.ope_rows["reward"])
    rel = v_c / v_b - 1.0 if v_b > 0 else math.nan
    # delta method for the ratio of two SNIPS on the same rounds
    g = infl_c / v_b - v_c * infl_b / v_b**2
    se = float(g.std(ddof=1) / np.sqrt(g.size))
    ess = float(w.sum() ** 2 / (w**2).sum()) if (w > 0).any() else 0.0
    rec["ope"] = {"estimate": rel, "ci_low": rel - Z95 * se, "ci_high": rel + Z95 * se,
                  "se": se, "n": int(w.size), "value": v_c, "baseline_value": v_b,
                  "ess": ess}
    # short replay on a simplified simulator (no novelty, no interference)
    pol = build_policy(spec, shared)
    base = build_policy(shared.baseline, shared)
    env, st = shared.replay_env, shared.replay_state
    # each candidate draws its own replay users and its own A/B split, so readout errors
    # are independent across candidates (a shared split is one draw of user
    # heterogeneity common to every readout)
    rng = np.random.default_rng([cfg.seed, _seed_of(spec.candidate_id)])
    n_rep = max(2, round(cfg.replay_share * truth.n_users))
    replay_users = np.sort(rng.choice(truth.n_users, n_rep, replace=False))
    arm = np.zeros(truth.n_users, np.int64)
    arm[replay_users] = 1
    run = env.run([base, pol], days=cfg.replay_days, arm=arm, state=st, novel=[False, False])
    rep = _user_day(run, truth.n_users, cfg.replay_days, st.day)
    c = rep[PRIMARY][replay_users].sum(axis=1)
    b = shared.replay_base[PRIMARY][replay_users].sum(axis=1)
    mb = b.mean()
    rel = c.mean() / mb - 1.0 if mb > 0 else math.nan
    g = (c - (1 + rel) * b) / mb
    se = float(g.std(ddof=1) / np.sqrt(g.size))
    rec["replay"] = {"estimate": rel, "ci_low": rel - Z95 * se, "ci_high": rel + Z95 * se,
                     "se": se, "n": int(g.size)}
    rec["changed"] = [s for s, a, b in (("retriever", spec.retriever, shared.baseline.retriever),
                                        ("ranker", spec.ranker, shared.baseline.ranker),
                                        ("reranker", spec.reranker, shared.baseline.reranker))
                      if a != b]
    return rec, rng


def evaluate_candidate(spec: CandidateSpec, shared: _Shared) -> dict[str, Any]:
    """Every signal and the truth of one candidate (one history record)."""
    from recscope.experiments.sequential import monitor

    cfg, truth = shared.cfg, shared.truth
    rec, rng = _pre_experiment(spec, shared)
    pol = build_policy(spec, shared)
    base = build_policy(shared.baseline, shared)
    # online A/B test, read out every day
    key = (spec.novelty, spec.interference)
    env, st = shared.envs[key], shared.states[key]
    ab_arm = (rng.random(truth.n_users) < 0.5).astype(np.int64)
    days = cfg.online_days or cfg.days
    run = env.run([base, pol], days=days, arm=ab_arm, state=st)
    ab = _user_day(run, truth.n_users, days, st.day)
    rec["online"] = {}
    rec["online_daily"] = {}
    t_mask = ab_arm == 1
    for m in METRICS:
        cum = np.cumsum(ab[m], axis=1)
        xc, xt = cum[~t_mask], cum[t_mask]
        mon = monitor(np.full(days, xc.shape[0]), xc.mean(0), xc.var(0, ddof=1),
                      np.full(days, xt.shape[0]), xt.mean(0), xt.var(0, ddof=1))
        mc, mt = xc.mean(0), xt.mean(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel_d = mt / mc - 1.0
            rel_se = np.sqrt(xt.var(0, ddof=1) / xt.shape[0] / mc**2
                             + mt**2 * xc.var(0, ddof=1) / xc.shape[0] / mc**4)
        rec["online_daily"][m] = {"estimate": rel_d.tolist(), "se": rel_se.tolist(),
                                  "p_value": mon.naive_p.tolist(), "seq_p": mon.seq_p.tolist()}
        est, s = float(rel_d[-1]), float(rel_se[-1])
        rec["online"][m] = {"estimate": est, "ci_low": est - Z95 * s, "ci_high": est + Z95 * s,
                            "se": s, "p_value": float(mon.naive_p[-1]),
                            "n": int(truth.n_users), "control_mean": float(mc[-1]),
                            "mde": 2.8 * s}
    on = rec["online"][PRIMARY]
    rec["decision"] = ("launch" if on["p_value"] < 0.05 and on["estimate"] > 0 else
                       "rollback" if on["p_value"] < 0.05 else "inconclusive")
    # truth: every user on the candidate vs every user on the baseline, common random
    # numbers between the two (independent of the experiment's)
    env, st = shared.truth_envs[key], shared.truth_states[key]
    run = env.run([base, pol], days=cfg.long_run_days, arm=np.ones(truth.n_users, np.int64),
                  state=st, novel=[False, True])
    tr = _user_day(run, truth.n_users, cfg.long_run_days, st.day)
    bt = shared.base_runs[key]
    last = slice(cfg.long_run_days - min(7, cfg.long_run_days), cfg.long_run_days)
    rec["truth"] = {m: {"effect": _rel(tr[m][:, :cfg.days], bt[m][:, :cfg.days]),
                        "long_run": _rel(tr[m][:, last], bt[m][:, last])} for m in METRICS}
    return rec


def simulate_corpus(cfg: CorpusConfig, progress: Progress | None = None, *,
                    shared: _Shared | None = None, specs: list[CandidateSpec] | None = None,
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Simulate ``cfg.n`` candidates (or ``specs``, on a ``shared`` set-up from
    :func:`prepare`); returns their records and timings/metadata."""
    t0 = time.perf_counter()
    shared = prepare(cfg, progress) if shared is None else shared
    t1 = time.perf_counter()
    if specs is None:
        specs = sample_candidates(cfg.n, cfg.seed, cfg.novelty_share, cfg.interference_share)
    recs = []
    for i, spec in enumerate(specs):
        recs.append(evaluate_candidate(spec, shared))
        if progress is not None:
            progress("candidates", i + 1, len(specs))
    t2 = time.perf_counter()
    meta = {"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
            "world": {"users": shared.truth.n_users, "items": shared.truth.n_items,
                      "log_rows": len(shared.world.interactions)},
            "baseline": shared.baseline.to_dict(), "split_fingerprint": shared.split_fingerprint,
            "timings": {"prepare_s": round(t1 - t0, 3), "candidates_s": round(t2 - t1, 3),
                        "per_candidate_s": round((t2 - t1) / max(len(specs), 1), 4)}}
    return recs, meta
