"""Validation of interference-aware designs against the simulator's ground truth (issue 14).

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/interference.py run \
        --setting supply --reps 50 --start 0      # appends to benchmarks/out/interference/
    .venv/bin/python benchmarks/interference.py report   # tables from the JSONL

Settings (small world: 2,000 users, 1,000 pins, 3 warm-up + 10 experiment days; each
repetition re-draws every random number and the assignment salt; the designs of one
repetition share its world and its truth replays):

``off``     both channels off (markets and a planted follow graph exist, but supply does
            not respond and nothing spreads): every design should be unbiased, cover 95%,
            and the interference test reject at most 5%.
``supply``  strong creator-side interference (``weight = 1.5``, ``elasticity = 1.0``,
            ``rate = 0.5``, as in docs/benchmarks.md "Creator-side interference, strong")
            in 40 markets (``simulation.regions = 40``); the change moves retrieval from
            ``embedding`` to ``popular``.
``social``  strong social spillover: a follow graph with 40 planted communities (95% of
            follows inside), every save shared (``share = 1``), up to 3 waiting pins with
            ``boost = 3`` and ``visit_pull = 3`` (waiting pins bring followers back); the
            change is the ranker ``affinity -> affinity_quality``.

``off-long`` the ``off`` setting over 28 days (``days`` of a setting; 10 otherwise) with
            switchbacks of 120 h / 72 h, 168 h / 120 h and 336 h / 240 h (slice / burn-in):
            how long a switchback must be for the platform's user-state carry-over;
``off-burn-in`` the same with burn-ins of 7 days (224 h and 336 h slices) and 8 days (336 h);
``off-6weeks`` 42 days with 336 h / 240 h and 504 h / 288 h switchbacks;
``off-6weeks-burn-in`` the same 42 days with 504 h slices and 336 h or 384 h of burn-in;
``off-6weeks-nonovelty`` the ``off-6weeks`` designs without novelty.
``engagement-supply``, ``engagement-off-nocarry``: clusters of the user-creator engagement
            graph (Leiden, METIS) under strong supply and with everything off.
``creator-*``: the unit and creator designs of the setting named, for the creator design
            with origin credit.

``power`` / ``power-report``: the interference test in a world of 20,000 (``--users``)
users; ``cuped-candidates``: candidate small-sample treatments of its cluster-level CUPED
slope on the stored power records; ``cuped-check``: the same in a clean A/A model.

Each repetition's per-design, per-metric record (estimate, interval, se, design effect,
truth, interference p-value) is appended as one JSON line, so long validations run in
chunks (``--start`` offsets the seeds; one file per chunk under benchmarks/out/interference/)
and ``report`` summarises whatever is there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

import simulator  # benchmarks/simulator.py: the same validation metrics and supply setting
from recscope.experiments.designs import DesignConfig
from recscope.sim.designs import design_label, run_rep, summarise
from recscope.sim.experiment_config import WorldSpec
from recscope.sim.world_source import build_world

OUT = Path(__file__).resolve().parent / "out"
RECORDS = OUT / "interference"
"""One JSON-lines file per (setting, first seed) chunk, so parallel chunks never share one."""

STRONG_SUPPLY = {"enabled": True, **simulator.STRONG_SUPPLY}
STRONG_SOCIAL = {"enabled": True, "communities": 40, "in_community": 0.95, "share": 1.0,
                 "boost": 3.0, "mean_follows": 6, "position": 0, "inserts": 3,
                 "visit_pull": 3.0}
QUIET_SOCIAL = {**STRONG_SOCIAL, "share": 0.0, "visit_pull": 0.0}
BASE = {"retriever": "embedding", "ranker": "affinity", "pool": 50}

SWITCHBACKS = [DesignConfig(kind="switchback", slice_hours=48, burn_in_hours=24, regions=40),
               DesignConfig(kind="switchback", slice_hours=120, burn_in_hours=72,
                            regions=40)]
NO_RELATED = {"related_after_click": 0.0, "related_no_click": 0.0}
"""Session settings without the related-pins surface: a session's later requests go to the
home feed or search, so a click no longer seeds the next slate."""
SETTINGS: dict[str, dict[str, Any]] = {
    "off": {"simulation": {"regions": 40, "social": QUIET_SOCIAL},
            "treatment": {"retriever": "popular"},
            "designs": [DesignConfig(kind="unit"),
                        DesignConfig(kind="cluster", graph="social", n_clusters=40),
                        DesignConfig(kind="cluster", graph="regions"),
                        DesignConfig(kind="hierarchical", graph="regions"),
                        SWITCHBACKS[0], DesignConfig(kind="creator")]},
    # the off setting without user-state carry-over (satisfaction does not move visits,
    # no novelty): where a switchback's assumptions hold
    "off-nocarry": {"simulation": {"regions": 40, "social": QUIET_SOCIAL,
                                   "satisfaction_effect": 0.0, "novelty": 0.0},
                    "treatment": {"retriever": "popular"},
                    "designs": [DesignConfig(kind="unit"),
                                DesignConfig(kind="cluster", graph="regions"),
                                DesignConfig(kind="switchback", slice_hours=24, regions=40),
                                SWITCHBACKS[0], DesignConfig(kind="creator")]},
    # an A/A change (treatment = control) without carry-over: every design's own
    # assumptions hold, so every design should be unbiased (truth 0) and cover 95%
    "aa-nocarry": {"simulation": {"regions": 40, "social": QUIET_SOCIAL,
                                  "satisfaction_effect": 0.0, "novelty": 0.0},
                   "treatment": {},
                   "designs": [DesignConfig(kind="unit"),
                               DesignConfig(kind="cluster", graph="regions"),
                               DesignConfig(kind="switchback", slice_hours=24, regions=40),
                               DesignConfig(kind="creator")]},
    # the off setting (carry-over on): switchback bias against slice length and burn-in
    "off-slices": {"simulation": {"regions": 40, "social": QUIET_SOCIAL},
                   "treatment": {"retriever": "popular"},
                   "designs": [DesignConfig(kind="unit"),
                               DesignConfig(kind="switchback", slice_hours=24, regions=40),
                               DesignConfig(kind="switchback", slice_hours=72,
                                            burn_in_hours=48, regions=40),
                               SWITCHBACKS[1]]},
    # the off setting over 28 days (``days``): slices and burn-ins as long as the
    # carry-over (satisfaction 90% gone after 6.5 days; novelty over 4 sessions)
    "off-long": {"simulation": {"regions": 40, "social": QUIET_SOCIAL},
                 "treatment": {"retriever": "popular"}, "days": 28,
                 "designs": [DesignConfig(kind="unit"), SWITCHBACKS[1],
                             DesignConfig(kind="switchback", slice_hours=168,
                                          burn_in_hours=120, regions=40),
                             DesignConfig(kind="switchback", slice_hours=336,
                                          burn_in_hours=240, regions=40)]},
    # the same 28 days: burn-ins of 7 and 8 days (satisfaction 92% and 94% gone)
    "off-burn-in": {"simulation": {"regions": 40, "social": QUIET_SOCIAL},
                    "treatment": {"retriever": "popular"}, "days": 28,
                    "designs": [DesignConfig(kind="unit"),
                                DesignConfig(kind="switchback", slice_hours=224,
                                             burn_in_hours=168, regions=40),
                                DesignConfig(kind="switchback", slice_hours=336,
                                             burn_in_hours=168, regions=40),
                                DesignConfig(kind="switchback", slice_hours=336,
                                             burn_in_hours=192, regions=40)]},
    # 42 days: does a 10-day burn-in still suffice when the experiment (and the truth's
    # drift) runs longer, and a 12-day one
    "off-6weeks": {"simulation": {"regions": 40, "social": QUIET_SOCIAL},
                   "treatment": {"retriever": "popular"}, "days": 42,
                   "designs": [DesignConfig(kind="unit"),
                               DesignConfig(kind="switchback", slice_hours=336,
                                            burn_in_hours=240, regions=40),
                               DesignConfig(kind="switchback", slice_hours=504,
                                            burn_in_hours=288, regions=40)]},
    # the same 42 days with burn-ins of 14 and 16 days (21-day slices: two per market)
    "off-6weeks-burn-in": {"simulation": {"regions": 40, "social": QUIET_SOCIAL},
                           "treatment": {"retriever": "popular"}, "days": 42,
                           "designs": [DesignConfig(kind="unit"),
                                       DesignConfig(kind="switchback", slice_hours=504,
                                                    burn_in_hours=336, regions=40),
                                       DesignConfig(kind="switchback", slice_hours=504,
                                                    burn_in_hours=384, regions=40)]},
    # off-nocarry without the related-pins surface (``sessions``: the world's session
    # settings): a session's later requests go to the home feed or search, so a click no
    # longer seeds the next slate; where the creator design's assumption holds (no path
    # between creators through the users; benchmarks/creator_bias.py)
    "off-nocarry-norelated": {"simulation": {"regions": 40, "social": QUIET_SOCIAL,
                                             "satisfaction_effect": 0.0, "novelty": 0.0},
                              "sessions": NO_RELATED,
                              "treatment": {"retriever": "popular"},
                              "designs": [DesignConfig(kind="unit"),
                                          DesignConfig(kind="cluster", graph="regions"),
                                          DesignConfig(kind="creator")]},
    "supply": {"simulation": {"regions": 40, "creator_supply": STRONG_SUPPLY},
               "treatment": {"retriever": "popular"},
               "designs": [DesignConfig(kind="unit"),
                           DesignConfig(kind="cluster", graph="regions"),
                           DesignConfig(kind="hierarchical", graph="regions"),
                           *SWITCHBACKS, DesignConfig(kind="creator")]},
    "social": {"simulation": {"social": STRONG_SOCIAL},
               "treatment": {"ranker": "affinity_quality"},
               "designs": [DesignConfig(kind="unit"),
                           DesignConfig(kind="cluster", graph="social", n_clusters=40),
                           DesignConfig(kind="cluster", graph="social", method="metis",
                                        n_clusters=40),
                           DesignConfig(kind="hierarchical", graph="social", n_clusters=40)]},
}
# the off-6weeks designs without novelty (satisfaction still carries over): is the
# residual the novelty, which wears off with a user's treated sessions, not with time?
SETTINGS["off-6weeks-nonovelty"] = {**SETTINGS["off-6weeks"], "simulation": {
    **SETTINGS["off-6weeks"]["simulation"], "novelty": 0.0}}
# clusters of the user-creator engagement graph (the warm-up's clicks; Leiden and METIS,
# 40 clusters as the markets), beside the unit design and the markets
ENGAGEMENT = [DesignConfig(kind="cluster", graph="engagement", n_clusters=40),
              DesignConfig(kind="cluster", graph="engagement", method="metis", n_clusters=40)]
SETTINGS["engagement-supply"] = {**SETTINGS["supply"], "designs": [
    DesignConfig(kind="unit"), *ENGAGEMENT, DesignConfig(kind="cluster", graph="regions")]}
SETTINGS["engagement-off-nocarry"] = {**SETTINGS["off-nocarry"], "designs": [
    DesignConfig(kind="unit"), *ENGAGEMENT]}
# the creator design alone (beside the unit design), for its validation after it
# credited related-pins slates to the creator whose pin started them (records apart from
# those of the settings they copy)
for _name in ("off-nocarry", "off", "supply", "aa-nocarry"):
    SETTINGS[f"creator-{_name}"] = {**SETTINGS[_name], "designs": [
        DesignConfig(kind="unit"), DesignConfig(kind="creator")]}
DAYS, WARMUP, SCALE = 10, 3, 0.1

POWER_USERS, POWER_CLUSTERS = 20_000, 400
"""The interference test's validation world (``power``): ten times the users of the small
world (the same 1,000 pins and creators, so a market's or a community's exposure per
creator is unchanged) in ten times the markets (``off``, ``supply``) or planted
communities (``social``): clusters keep their 50 users, the channel strengths are those of
the settings above."""
POWER_METRICS = {"ctr": ("clicks", "impressions"), "clicks": ("clicks", None),
                 "sessions": ("sessions", None)}


def setting_world(setting: str, scale: float = SCALE, sessions: dict[str, float] | None = None
                  ) -> tuple[Any, Any]:
    """A setting's simulator configuration and the small world (``scale``) with the
    setting's session overrides and ``sessions`` applied."""
    from recscope.sim.environment import SimConfig

    s = SETTINGS[setting]
    world = build_world(WorldSpec(scale=scale))
    update = {**s.get("sessions", {}), **(sessions or {})}
    if update:
        world = dataclasses.replace(world, config=world.config.model_copy(update={
            "sessions": world.config.sessions.model_copy(update=update)}))
    return SimConfig.model_validate(s["simulation"]), world


def warm_start(world: Any, sim: Any, setting: str, seed: int, *, record: bool = False
               ) -> tuple[Any, list[Any], Any]:
    """One repetition's environment, its control and treatment stacks, and the warm-up
    run under control (calibrating; ``record`` keeps its events for a pre-period)."""
    from recscope.sim.environment import Environment
    from recscope.sim.policy_factory import PolicyFactory

    env = Environment(world, sim, seed=seed)
    factory = PolicyFactory(env.truth, seed=seed)
    pols = [factory.stack(p, nm) for p, nm in zip(
        [BASE, {**BASE, **SETTINGS[setting]["treatment"]}], ("control", "treatment"),
        strict=True)]
    pre = env.run([pols[0]], days=WARMUP, calibrate=True, record=record, stage="warm-up")
    return env, pols, pre


def run(setting: str, reps: int, start: int) -> None:
    """Append ``reps`` repetitions (seeds ``start ...``) of a setting to the JSONL."""
    import tomllib

    from recscope.experiments.metrics import parse_metrics

    s = SETTINGS[setting]
    config = parse_metrics(tomllib.loads(simulator.METRICS_TEXT))
    sim, world = setting_world(setting)
    OUT.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + reps):
        t0 = time.perf_counter()
        seed = 10_000 + i
        rec = run_rep(world, sim, s["designs"], [BASE, {**BASE, **s["treatment"]}], config,
                      seed=seed, salt=f"interference:{setting}:{seed}",
                      days=s.get("days", DAYS),
                      warmup_days=WARMUP, n_permutations=0, skip_unassignable=True)
        rec.update({"setting": setting, "rep": i, "seconds": round(time.perf_counter() - t0,
                                                                     2)})
        RECORDS.mkdir(parents=True, exist_ok=True)
        with (RECORDS / f"{setting}-{start}.jsonl").open("a") as f:
            f.write(json.dumps(rec, default=float) + "\n")
        print(setting, i, rec["seconds"], flush=True)


def power_world(users: int = POWER_USERS) -> Any:
    """The small world's truth with ``users`` users (pins, creators unchanged)."""
    from recscope.sim.world_model import build_truth
    from recscope.sim.world_source import world_config

    cfg = world_config(WorldSpec(scale=SCALE))
    k = users / cfg.n_users
    cfg = cfg.model_copy(update={"n_users": users,
                                 "n_impressions": round(cfg.n_impressions * k)})
    return build_truth(cfg, np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(4)[0]))


def power_setting(setting: str, clusters: int = POWER_CLUSTERS
                  ) -> tuple[dict[str, Any], DesignConfig]:
    """A setting's simulation with ``clusters`` markets or planted communities, and its
    hierarchical design."""
    s = SETTINGS[setting]
    sim = dict(s["simulation"])
    if "regions" in sim:
        sim["regions"] = clusters
    if "social" in sim:
        sim["social"] = {**sim["social"], "communities": clusters}
    if setting == "social":
        return sim, DesignConfig(kind="hierarchical", graph="social", method="metis",
                                 n_clusters=clusters)
    return sim, DesignConfig(kind="hierarchical", graph="regions")


def power_rep(world: Any, setting: str, seed: int, clusters: int = POWER_CLUSTERS
              ) -> dict[str, Any]:
    """One hierarchical experiment in the power world: the warm-up (recorded: each
    user's pre-period sums are the CUPED covariates), then the design's run. Stored
    per metric: the cluster half's cluster totals ``[y, d, pre_y, pre_d]`` with their
    arms, and the unit half's per-arm moments of the same four per-unit variables
    (sufficient statistics of every analysis ``power-report`` applies)."""
    from recscope.experiments import moments
    from recscope.experiments.assignment import Experiment
    from recscope.sim.designs import plan_design
    from recscope.sim.environment import SimConfig

    sim_d, design = power_setting(setting, clusters)
    env, pols, pre = warm_start(world, SimConfig.model_validate(sim_d), setting, seed,
                                record=True)
    start_us = env.start_us + pre.state.day * 86_400_000_000
    exp = Experiment(name="design-compare", variants=("control", "treatment"),
                     salt=f"interference-power:{setting}:{seed}")
    plan = plan_design(env, design, exp, days=DAYS, start_us=start_us, seed=seed)
    res = env.run(pols, days=DAYS, arm=plan.arm, state=pre.state)
    n = env.truth.n_users

    def per_user(r: Any) -> dict[str, np.ndarray]:
        c = r.columns
        out = {k: np.bincount(c["user"], c[k].astype(float), minlength=n)
               for k in ("clicks", "impressions")}
        out["sessions"] = np.bincount(c["user"], (c["step"] == 0).astype(float), minlength=n)
        return out

    post, prev = per_user(res), per_user(pre)
    active = res.first_exposure(n) >= 0
    arm = np.asarray(plan.arm)
    assert plan.cluster is not None and plan.mode is not None
    by_cluster = active & (plan.mode == "cluster")
    by_unit = active & (plan.mode == "unit")
    ids, g = np.unique(plan.cluster[by_cluster], return_inverse=True)
    c_arm = np.zeros(ids.size, dtype=np.int64)
    c_arm[g] = arm[by_cluster]
    rec: dict[str, Any] = {"cluster_arm": c_arm.tolist(), "metrics": {}}
    for m, (yk, dk) in POWER_METRICS.items():
        ones = np.ones(n)
        u = np.stack([post[yk], post[dk] if dk else ones, prev[yk],
                      prev[dk] if dk else ones], axis=1)
        tot = np.zeros((ids.size, 4))
        np.add.at(tot, g, u[by_cluster])
        unit = {}
        for a in (0, 1):
            mm = moments.Moments.from_data(u[by_unit & (arm == a)])
            unit[str(a)] = {"n": mm.n, "mean": mm.mean.tolist(), "cov": mm.cov.tolist()}
        rec["metrics"][m] = {"cluster_totals": tot.tolist(), "unit": unit}
    return rec


def power_run(setting: str, reps: int, start: int, users: int = POWER_USERS) -> None:
    """Append ``reps`` power repetitions (seeds ``start ...``) to
    power-<setting>[-<users>]-<start>.jsonl; clusters hold 50 users."""
    world = power_world(users)
    clusters = users // 50
    RECORDS.mkdir(parents=True, exist_ok=True)
    tag = setting if users == POWER_USERS else f"{setting}-{users}"
    for i in range(start, start + reps):
        t0 = time.perf_counter()
        seed = 20_000 + i
        rec = power_rep(world, setting, seed, clusters)
        rec.update({"setting": tag, "rep": i, "seed": seed, "users": users,
                    "seconds": round(time.perf_counter() - t0, 2)})
        with (RECORDS / f"power-{tag}-{start}.jsonl").open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print("power", setting, i, rec["seconds"], flush=True)


def _unit_arm_stats(m: dict[str, Any]) -> tuple[Any, Any]:
    """ArmStats (singleton clusters) and Moments of a unit half's arm from its moments."""
    from recscope.experiments import moments
    from recscope.experiments.clustered import ArmStats

    n, mean, cov = float(m["n"]), np.asarray(m["mean"]), np.asarray(m["cov"])
    ss = (n - 1) * cov + n * np.outer(mean, mean)
    stats = ArmStats(n, n, n * mean[0], n * mean[1], ss[0, 0], ss[1, 1], ss[0, 1],
                     ss[0, 0], ss[1, 1], ss[0, 1])
    return stats, moments.Moments(n, mean, cov)


def _cluster_arm_stats(tot: np.ndarray) -> tuple[Any, Any]:
    """ArmStats and Moments of an arm's cluster totals ``[y, d, pre_y, pre_d]`` (units
    are not stored: ``n`` counts clusters; the unit-level sums, used only for the design
    effect, are NaN)."""
    from recscope.experiments import moments
    from recscope.experiments.clustered import ArmStats

    nan = float("nan")
    stats = ArmStats(float(len(tot)), float(len(tot)), float(tot[:, 0].sum()), float(tot[:, 1].sum()),
                     float(tot[:, 0] @ tot[:, 0]), float(tot[:, 1] @ tot[:, 1]),
                     float(tot[:, 0] @ tot[:, 1]), nan, nan, nan)
    return stats, moments.Moments.from_data(tot)


def power_tests(rec: dict[str, Any], metric: str, cuped: bool) -> dict[str, float]:
    """The hierarchical analysis of one stored repetition: cluster part, unit part and
    the interference test, with or without CUPED on the pre-period (the functions of
    :mod:`recscope.experiments.clustered`)."""
    from recscope.experiments.clustered import (
        compare_arms,
        compare_arms_adjusted,
        interference_test,
    )

    m = rec["metrics"][metric]
    tot = np.asarray(m["cluster_totals"])
    arm = np.asarray(rec["cluster_arm"])
    out: dict[str, float] = {}
    parts = {"cluster": [_cluster_arm_stats(tot[arm == a]) for a in (0, 1)],
             "unit": [_unit_arm_stats(m["unit"][str(a)]) for a in (0, 1)]}
    eff = {}
    for part, ((sc, mc), (st, mt)) in parts.items():
        if cuped:
            e = compare_arms_adjusted(metric, "treatment", sc, st, mc, mt, [(2, 3)])
        else:
            e = compare_arms(metric, "treatment", sc, st)
        eff[part] = e
        out[f"{part}_estimate"], out[f"{part}_se"] = e.estimate, e.se
        out[f"{part}_df"] = float(e.extra.get("df", float("nan")))
    it = interference_test(eff["cluster"], eff["unit"])
    out.update(diff=it.estimate, diff_se=it.se, p=it.p_value, df=float(it.extra.get(
        "df", float("nan"))), clusters=float(len(tot)))
    return out


def _power_records() -> dict[str, dict[int, dict[str, Any]]]:
    """The stored power repetitions per setting tag (``power-<tag>-<start>.jsonl``: a
    world size other than 20,000 users is its own tag, e.g. ``social-60000``), by
    repetition; a line cut by a time-out is skipped, a re-run repetition replaces the
    old one."""
    recs: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(RECORDS.glob("power-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            recs.setdefault(r["setting"], {})[r["rep"]] = r
    return recs


def _rate_ci(rej: int, n: int) -> list[float]:
    """Clopper-Pearson 95% interval of a rejection rate ``rej / n``."""
    from scipy import stats as sps

    ci = sps.beta.ppf([0.025, 0.975], [rej, rej + 1], [n - rej + 1, n - rej])
    return [float(np.nan_to_num(ci[0])), float(np.nan_to_num(ci[1], nan=1.0))]


def power_report() -> dict[str, Any]:
    """Rejection rates of the interference test per setting and metric, with and without
    CUPED, and what another share of clusters randomised as clusters would give."""
    from scipy import stats as sps

    recs = _power_records()
    out: dict[str, Any] = {}
    for setting, by_rep in sorted(recs.items()):
        reps = list(by_rep.values())
        rows = []
        for metric in POWER_METRICS:
            for cuped in (False, True):
                t = [power_tests(r, metric, cuped) for r in reps]
                p = np.array([x["p"] for x in t])
                ok = np.isfinite(p)
                k, rej = int(ok.sum()), int((p[ok] < 0.05).sum())
                vc = np.mean([x["cluster_se"] ** 2 for x in t])
                vu = np.mean([x["unit_se"] ** 2 for x in t])
                diff = float(np.mean([x["diff"] for x in t]))
                # another share s of clusters as clusters: each half's variance scales
                # with 1 / its share; the best share minimises their sum
                s_opt = float(np.sqrt(vc) / (np.sqrt(vc) + np.sqrt(vu)))
                v_opt = (np.sqrt(vc * 0.5) + np.sqrt(vu * 0.5)) ** 2

                def power(v: float, d: float = diff) -> float:
                    z = abs(d) / np.sqrt(v)
                    return float(sps.norm.sf(1.96 - z) + sps.norm.cdf(-1.96 - z))

                rows.append({
                    "metric": metric, "cuped": cuped, "reps": k, "rejects": rej / k,
                    "rejects_ci": _rate_ci(rej, k),
                    "mean_diff": diff, "sd_diff": float(np.std([x["diff"] for x in t],
                                                               ddof=1)),
                    "mean_se_diff": float(np.mean([x["diff_se"] for x in t])),
                    "se_cluster": float(np.sqrt(vc)), "se_unit": float(np.sqrt(vu)),
                    "cluster_estimate": float(np.mean([x["cluster_estimate"] for x in t])),
                    "unit_estimate": float(np.mean([x["unit_estimate"] for x in t])),
                    "median_df": float(np.median([x["df"] for x in t])),
                    "power_at_half": power(vc + vu), "best_share": s_opt,
                    "power_at_best_share": power(float(v_opt))})
        out[setting] = {"reps": len(reps), "rows": rows,
                        "seconds_per_rep": float(np.mean([r["seconds"] for r in reps])),
                        "clusters": float(np.mean([len(r["cluster_arm"]) for r in reps]))}
    return out


def power_markdown(summary: dict[str, Any]) -> str:
    """The docs' table of the interference test."""
    lines = ["| setting | metric | CUPED | reps | rejects (95% CI) | mean cluster − unit "
             "| s.e. of the difference (mean / sd) | s.e. cluster / unit half | median df "
             "| best share (predicted power: at 0.5 → best) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for setting, s in summary.items():
        for r in s["rows"]:
            lines.append(
                f"| {setting} | {r['metric']} | {'yes' if r['cuped'] else 'no'} | "
                f"{r['reps']} | {r['rejects']:.0%} ({r['rejects_ci'][0]:.1%}–"
                f"{r['rejects_ci'][1]:.1%}) | {r['mean_diff']:.3g} | "
                f"{r['mean_se_diff']:.3g} / {r['sd_diff']:.3g} | {r['se_cluster']:.3g} / "
                f"{r['se_unit']:.3g} | {r['median_df']:.0f} | {r['best_share']:.2f} "
                f"({r['power_at_half']:.0%} → {r['power_at_best_share']:.0%}) |")
    return "\n".join(lines)


CUPED_VARIANTS = ("delta", "df", "ancova", "cross_arm", "cross_fit", "jackknife",
                  "unit_theta")
"""Candidate small-sample treatments of the cluster-level CUPED comparison
(:func:`cuped_variants`); ``delta`` is what ``compare_arms_adjusted`` reports."""
_MET, _COV = (0, 1), (2, 3)


def _adjusted(mc: Any, mt: Any, theta_c: float, theta_t: float, centre: float) -> float:
    """Adjusted treatment minus control: each arm's ratio minus its slope times its
    covariate ratio's distance from ``centre``."""
    from recscope.experiments import moments

    def one(m: Any, th: float) -> float:
        return moments.term_value(m, _MET) - th * (moments.term_value(m, _COV) - centre)

    return one(mt, theta_t) - one(mc, theta_c)


def _resid_var(m: Any, theta: float) -> float:
    """Variance of an arm's adjusted ratio at a given slope: the delta method on its
    clusters' totals (ddof 1), divided by the cluster count."""
    from recscope.experiments import moments

    h = moments.term_gradient(m, _MET) - theta * moments.term_gradient(m, _COV)
    return float(h @ m.cov @ h) / m.n


def _slope(parts: list[Any]) -> tuple[float, float]:
    """Pooled CUPED slope and centre of some arms' moments (``moments.cuped_theta``)."""
    from recscope.experiments import moments

    theta, centre = moments.cuped_theta(moments.pool(parts), _MET, [_COV])
    return float(theta[0]), float(centre[0])


def cuped_variants(tc: np.ndarray, tt: np.ndarray, *, external: list[Any] | None = None,
                   rng: np.random.Generator | None = None
                   ) -> dict[str, tuple[float, float, float]]:
    """The cluster-level CUPED difference (metric ``y / d``, covariate ``pre_y / pre_d``
    over cluster totals ``[y, d, pre_y, pre_d]`` of control ``tc`` and treatment ``tt``)
    under each candidate treatment of the estimated slope: ``(estimate, variance, df)``.

    ``delta``: pooled slope, delta-method variance per arm (``compare_arms_adjusted``);
    ``df``: each arm's residual variance times ``(G_a - 1) / (G_a - 2)`` and Welch df on
    ``G_a - 2`` (one slope estimated); ``ancova``: ``df`` plus the homoskedastic cost of
    the slope, ``(dx)^2 s^2 / Sxx``; ``cross_arm``: each arm adjusted with the slope of
    the other arm (the residual variance is not fitted to the arm's own clusters);
    ``cross_fit``: two random folds per arm, each fold's difference adjusted with the
    other fold's pooled slope, averaged; ``jackknife``: delete-one-cluster jackknife per
    arm of the ``delta`` estimate (slope re-estimated each time); ``unit_theta``: the
    slope of ``external`` moments (the unit half of a hierarchical design: data
    independent of these clusters)."""
    from recscope.experiments import moments
    from recscope.experiments.clustered import welch_df

    mc, mt = moments.Moments.from_data(tc), moments.Moments.from_data(tt)
    gc, gt = mc.n, mt.n
    theta, centre = _slope([mc, mt])
    est = _adjusted(mc, mt, theta, theta, centre)
    vc, vt = _resid_var(mc, theta), _resid_var(mt, theta)
    out = {"delta": (est, vc + vt, welch_df([vc, vt], [gc - 1, gt - 1]))}
    fc, ft = (gc - 1) / (gc - 2), (gt - 1) / (gt - 2)
    df2 = welch_df([vc * fc, vt * ft], [gc - 2, gt - 2])
    out["df"] = (est, vc * fc + vt * ft, df2)
    pooled = moments.pool([mc, mt])
    gx = moments.term_gradient(pooled, _COV)
    sxx = float(gx @ pooled.cov @ gx) * (pooled.n - 1)
    dx = moments.term_value(mt, _COV) - moments.term_value(mc, _COV)
    s2 = ((gc - 1) * gc * vc + (gt - 1) * gt * vt) / (gc + gt - 3)
    out["ancova"] = (est, vc * fc + vt * ft + (dx * dx * s2 / sxx if sxx > 0 else 0.0), df2)
    th_c, _ = _slope([mt])
    th_t, _ = _slope([mc])
    ac, at = _resid_var(mc, th_c), _resid_var(mt, th_t)
    out["cross_arm"] = (_adjusted(mc, mt, th_c, th_t, centre), ac + at,
                        welch_df([ac, at], [gc - 1, gt - 1]))
    if rng is not None:
        kc, kt = rng.permutation(len(tc)) % 2, rng.permutation(len(tt)) % 2
        e, vs, dfs = 0.0, [], []
        for k in (0, 1):
            mck, mtk = (moments.Moments.from_data(tc[kc == k]),
                        moments.Moments.from_data(tt[kt == k]))
            th_o, _ = _slope([moments.Moments.from_data(tc[kc != k]),
                              moments.Moments.from_data(tt[kt != k])])
            w = (mck.n + mtk.n) / (gc + gt)
            e += w * _adjusted(mck, mtk, th_o, th_o, centre)
            vs += [w * w * _resid_var(mck, th_o), w * w * _resid_var(mtk, th_o)]
            dfs += [mck.n - 1, mtk.n - 1]
        out["cross_fit"] = (e, sum(vs), welch_df(vs, dfs))

    def jackknife(t: np.ndarray, other: Any, treated: bool) -> float:
        n, s, p = len(t), t.sum(axis=0), t.T @ t
        es = np.empty(n)
        for i in range(n):
            mean = (s - t[i]) / (n - 1)
            cov = (p - np.outer(t[i], t[i]) - (n - 1) * np.outer(mean, mean)) / (n - 2)
            m = moments.Moments(float(n - 1), mean, cov)
            a, b = (other, m) if treated else (m, other)
            th, ce = _slope([a, b])
            es[i] = _adjusted(a, b, th, th, ce)
        return (n - 1) / n * float(((es - es.mean()) ** 2).sum())

    jc, jt = jackknife(tc, mt, False), jackknife(tt, mc, True)
    out["jackknife"] = (est, jc + jt, welch_df([jc, jt], [gc - 1, gt - 1]))
    if external is not None:
        th_u, _ = _slope(external)
        uc, ut = _resid_var(mc, th_u), _resid_var(mt, th_u)
        out["unit_theta"] = (_adjusted(mc, mt, th_u, th_u, centre), uc + ut,
                             welch_df([uc, ut], [gc - 1, gt - 1]))
    return out


def cuped_level_check(reps: int = 4000, clusters: int = 100, sigma: float = 1.5,
                      seed: int = 1) -> dict[str, dict[str, float]]:
    """A/A of the cluster-level CUPED estimate in a clean model with heavy-tailed cluster
    totals (``clusters`` clusters of 50 units, half per arm; activity lognormal(0,
    ``sigma``), fixed across repetitions; outcome and pre-period Poisson in it): spread of
    the statistic and the rejection rate at 5% (t reference with each variant's df) for
    the unadjusted estimate (``compare_arms``) and every variant of
    :func:`cuped_variants` (``unit_theta``: the slope of an independent unit-level draw of
    the same population)."""
    from recscope.experiments import moments
    from recscope.experiments.clustered import _t_crit_p, compare_arms

    rng = np.random.default_rng(seed)
    size = 50
    cl = np.repeat(np.arange(clusters), size)
    act = rng.lognormal(0, sigma, clusters * size)
    half = np.r_[np.zeros(clusters // 2), np.ones(clusters - clusters // 2)].astype(int)
    stats: dict[str, list[tuple[float, float]]] = {}
    for _ in range(reps):
        x = rng.poisson(act * 1.2).astype(float)
        y = rng.poisson(act * 4).astype(float)
        arm = rng.permutation(half)
        tot = np.stack([np.bincount(cl, y, clusters), np.full(clusters, float(size)),
                        np.bincount(cl, x, clusters), np.full(clusters, float(size))], axis=1)
        units = np.stack([rng.poisson(act * 4), np.ones(act.size),
                          rng.poisson(act * 1.2), np.ones(act.size)], axis=1).astype(float)
        res = cuped_variants(tot[arm == 0], tot[arm == 1], rng=rng,
                             external=[moments.Moments.from_data(units)])
        raw = compare_arms("y", "t", *(_cluster_arm_stats(tot[arm == a])[0] for a in (0, 1)))
        res["unadjusted"] = (raw.estimate, raw.se**2, float(raw.extra["df"]))
        for k, (e, v, df) in res.items():
            z = e / np.sqrt(v)
            stats.setdefault(k, []).append((z, _t_crit_p(z, df, 0.05)[1]))
    return {k: {"z_sd": float(np.std([z for z, _ in x])),
                "rejects": float(np.mean([p < 0.05 for _, p in x])), "reps": reps,
                "clusters": clusters, "sigma": sigma}
            for k, x in stats.items()}


def cuped_candidates(settings: list[str] | None = None) -> dict[str, Any]:
    """Every :func:`cuped_variants` variant of the cluster half on the stored power
    records, with the unit half as ``power_tests`` adjusts it: the interference test's
    rejection rate, the mean reported s.e. of the difference and the difference's sd over
    repetitions, per setting and metric."""

    from recscope.experiments.clustered import (
        _t_crit_p,
        compare_arms,
        compare_arms_adjusted,
        welch_df,
    )

    recs = _power_records()
    out: dict[str, Any] = {}
    for setting in settings or sorted(recs):
        reps = [recs[setting][k] for k in sorted(recs[setting])]
        rows = []
        for metric in POWER_METRICS:
            got: dict[str, list[tuple[float, float, float]]] = {}
            for r in reps:
                m = r["metrics"][metric]
                tot, arm = np.asarray(m["cluster_totals"]), np.asarray(r["cluster_arm"])
                (sc, mc), (st, mt) = (_unit_arm_stats(m["unit"][str(a)]) for a in (0, 1))
                unit = compare_arms_adjusted(metric, "t", sc, st, mc, mt, [_COV])
                unit0 = compare_arms(metric, "t", sc, st)
                res = cuped_variants(tot[arm == 0], tot[arm == 1], external=[mc, mt],
                                     rng=np.random.default_rng(r["seed"]))
                raw = compare_arms(metric, "t", *(_cluster_arm_stats(tot[arm == a])[0]
                                                  for a in (0, 1)))
                res["unadjusted"] = (raw.estimate, raw.se**2, float(raw.extra["df"]))
                for k, (e, v, df) in res.items():
                    u = unit0 if k == "unadjusted" else unit
                    d, se = e - u.estimate, float(np.sqrt(v + u.se**2))
                    dfd = welch_df([v, u.se**2], [df, float(u.extra["df"])])
                    got.setdefault(k, []).append((d, se, _t_crit_p(d / se, dfd, 0.05)[1]))
            for k, x in got.items():
                a = np.asarray(x)
                rej, n = int((a[:, 2] < 0.05).sum()), len(a)
                rows.append({"metric": metric, "variant": k, "reps": n, "rejects": rej / n,
                             "rejects_ci": _rate_ci(rej, n),
                             "mean_se_diff": float(a[:, 1].mean()),
                             "sd_diff": float(a[:, 0].std(ddof=1))})
        out[setting] = rows
    return out


def cuped_markdown(summary: dict[str, Any]) -> str:
    """Rejection rates per variant (columns) for each setting and metric (rows)."""
    names = [*CUPED_VARIANTS, "unadjusted"]
    lines = ["| setting | metric | reps | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for setting, rows in summary.items():
        for metric in POWER_METRICS:
            by = {r["variant"]: r for r in rows if r["metric"] == metric}
            cells = [f"{by[k]['rejects']:.1%} ({by[k]['mean_se_diff'] / by[k]['sd_diff']:.2f})"
                     if k in by else "—" for k in names]
            n = next(iter(by.values()))["reps"]
            lines.append(f"| {setting} | {metric} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report() -> dict[str, Any]:
    """Summaries per setting: the DesignComparison rows plus bias cuts against unit."""
    recs: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(p for p in RECORDS.glob("*.jsonl") if not p.name.startswith("power-")):
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a time-out
                continue
            recs.setdefault(r["setting"], {})[r["rep"]] = r  # a re-run rep replaces the old
    out: dict[str, Any] = {}
    for setting, by_rep in recs.items():
        reps = list(by_rep.values())
        designs = [design_label(d) for d in SETTINGS[setting]["designs"]]
        metrics = ["ctr", "clicks", "saves", "sessions", "exposure", "clicks_received",
                   "saves_received"]
        rows = summarise(reps, designs, metrics)
        naive = {r["metric"]: r for r in rows if r["design"] == "unit"}
        for r in rows:
            # the cut of the RELATIVE bias (bias / truth): a switchback's truth is per
            # active unit-slice, not per unit, so only relative biases compare across designs
            n0 = naive.get(r["metric"])
            r["rel_bias"] = r["bias"] / r["truth"] if r["truth"] else float("nan")
            b0 = n0["bias"] / n0["truth"] if n0 and n0["truth"] else float("nan")
            r["bias_cut"] = 1 - abs(r["rel_bias"]) / abs(b0) if b0 else float("nan")
            r["bias_over_se"] = r["bias"] / r["bias_se"] if r["bias_se"] else float("nan")
        skipped = {d: sum(d in r.get("skipped", {}) for r in reps) for d in designs}
        out[setting] = {"reps": len(reps), "rows": rows, "skipped": skipped,
                        "clustering": reps[0]["clustering"],
                        "seconds_per_rep": float(np.mean([r["seconds"] for r in reps]))}
    return out


def markdown(summary: dict[str, Any]) -> str:
    """The docs' tables."""
    lines = []
    for setting, s in summary.items():
        lines.append(f"\n**{setting}** ({s['reps']} repetitions, "
                     f"{s['seconds_per_rep']:.1f} s each)\n")
        lines.append("| design | metric | mean estimate | mean truth | bias ± s.e. | bias/s.e. "
                     "| relative bias | cut vs unit | RMSE | coverage | MDE | design effect | "
                     "interference test rejects |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in s["rows"]:
            if r["metric"] not in ("ctr", "clicks", "sessions", "exposure"):
                continue
            rej = r.get("interference_rejects")
            lines.append(
                f"| {r['design']} | {r['metric']} | {r['estimate']:.4g} | {r['truth']:.4g} | "
                f"{r['bias']:.3g} ± {r['bias_se']:.2g} | {r['bias_over_se']:.1f} | "
                f"{r['rel_bias']:+.0%} | "
                f"{'—' if r['design'] == 'unit' or r['bias_cut'] != r['bias_cut'] else format(r['bias_cut'], '.0%')} | "
                f"{r['rmse']:.3g} | {r['coverage']:.0%} | {r['mde']:.3g} | "
                f"{r['design_effect']:.2g} | {'' if rej is None else format(rej, '.0%')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["run", "report", "power", "power-report", "cuped-check",
                                     "cuped-candidates"])
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="off")
    ap.add_argument("--reps", type=int, default=None,
                    help="repetitions (run, power: 50; cuped-check: 4000)")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--users", type=int, default=POWER_USERS,
                    help="power: users of the validation world (clusters of 50)")
    ap.add_argument("--clusters", type=int, default=100, help="cuped-check: clusters")
    ap.add_argument("--sigma", type=float, default=1.5,
                    help="cuped-check: sd of the log activity (the tail of the totals)")
    ap.add_argument("--seed", type=int, default=1, help="cuped-check: random seed")
    ap.add_argument("--settings", nargs="*", default=None,
                    help="cuped-candidates: power settings (default: all stored)")
    args = ap.parse_args(argv)
    if args.reps is None:
        args.reps = 4000 if args.what == "cuped-check" else 50
    if args.what == "run":
        run(args.setting, args.reps, args.start)
        return
    if args.what == "power":
        power_run(args.setting, args.reps, args.start, args.users)
        return
    if args.what == "cuped-check":
        res = cuped_level_check(args.reps, args.clusters, args.sigma, args.seed)
        print(f"{args.reps} A/A repetitions, {args.clusters} clusters of 50, "
              f"lognormal(0, {args.sigma:g}) activity, seed {args.seed}")
        print("| variant | sd of the statistic | rejects at 5% |\n|---|---|---|")
        for k, v in res.items():
            print(f"| {k} | {v['z_sd']:.3f} | {v['rejects']:.2%} |")
        return
    if args.what == "cuped-candidates":
        cs = cuped_candidates(args.settings)
        (OUT / "interference_cuped.json").write_text(json.dumps(cs, indent=1) + "\n")
        print(cuped_markdown(cs))
        return
    if args.what == "power-report":
        ps = power_report()
        (OUT / "interference_power.json").write_text(json.dumps(ps, indent=1) + "\n")
        print(power_markdown(ps))
        return
    summary = report()
    (OUT / "interference.json").write_text(json.dumps(summary, indent=1, default=float)
                                           + "\n")
    print(markdown(summary))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
