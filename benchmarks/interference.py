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

Each repetition's per-design, per-metric record (estimate, interval, se, design effect,
truth, interference p-value) is appended as one JSON line, so long validations run in
chunks (``--start`` offsets the seeds; one file per chunk under benchmarks/out/interference/)
and ``report`` summarises whatever is there.
"""

from __future__ import annotations

import argparse
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
DAYS, WARMUP, SCALE = 10, 3, 0.1

POWER_USERS, POWER_CLUSTERS = 20_000, 400
"""The interference test's validation world (``power``): ten times the users of the small
world (the same 1,000 pins and creators, so a market's or a community's exposure per
creator is unchanged) in ten times the markets (``off``, ``supply``) or planted
communities (``social``): clusters keep their 50 users, the channel strengths are those of
the settings above."""
POWER_METRICS = {"ctr": ("clicks", "impressions"), "clicks": ("clicks", None),
                 "sessions": ("sessions", None)}


def run(setting: str, reps: int, start: int) -> None:
    """Append ``reps`` repetitions (seeds ``start ...``) of a setting to the JSONL."""
    import tomllib

    from recscope.experiments.metrics import parse_metrics
    from recscope.sim.environment import SimConfig

    s = SETTINGS[setting]
    config = parse_metrics(tomllib.loads(simulator.METRICS_TEXT))
    sim = SimConfig.model_validate(s["simulation"])
    world = build_world(WorldSpec(scale=SCALE))
    OUT.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + reps):
        t0 = time.perf_counter()
        seed = 10_000 + i
        rec = run_rep(world, sim, s["designs"], [BASE, {**BASE, **s["treatment"]}], config,
                      seed=seed, salt=f"interference:{setting}:{seed}", days=DAYS,
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
    from recscope.sim.environment import Environment, SimConfig
    from recscope.sim.policy_factory import PolicyFactory

    s = SETTINGS[setting]
    sim_d, design = power_setting(setting, clusters)
    env = Environment(world, SimConfig.model_validate(sim_d), seed=seed)
    factory = PolicyFactory(env.truth, seed=seed)
    pols = [factory.stack(p, nm) for p, nm in zip([BASE, {**BASE, **s["treatment"]}],
                                                  ("control", "treatment"), strict=True)]
    pre = env.run([pols[0]], days=WARMUP, calibrate=True, record=True, stage="warm-up")
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


def power_report() -> dict[str, Any]:
    """Rejection rates of the interference test per setting and metric, with and without
    CUPED, and what another share of clusters randomised as clusters would give."""
    from scipy import stats as sps

    recs: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(RECORDS.glob("power-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            recs.setdefault(r["setting"], {})[r["rep"]] = r
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
                ci = sps.beta.ppf([0.025, 0.975], [rej, rej + 1], [k - rej + 1, k - rej])
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
                    "rejects_ci": [float(np.nan_to_num(ci[0])), float(np.nan_to_num(ci[1],
                                                                                  nan=1.0))],
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


def cuped_level_check(reps: int = 600, seed: int = 1) -> dict[str, dict[str, float]]:
    """A/A of the cluster-level CUPED estimate in a clean model with heavy-tailed cluster
    totals (100 clusters of 50 units, half per arm; activity lognormal(0, 1.5), fixed
    across repetitions; outcome and pre-period Poisson in it): spread of z and the
    rejection rate at 5% for the unadjusted estimate, the adjusted one with the ``arm``
    factor (what ``compare_arms_adjusted`` reports) and with CR2-type residuals
    ``e / sqrt(1 - h)`` (leverage of the arm intercept and the pooled slope)."""
    rng = np.random.default_rng(seed)
    g, size = 100, 50
    cl = np.repeat(np.arange(g), size)
    act = rng.lognormal(0, 1.5, g * size)
    z: dict[str, list[float]] = {"unadjusted": [], "cuped": [], "cuped_cr2": []}
    for _ in range(reps):
        x = rng.poisson(act * 1.2).astype(float)
        y = rng.poisson(act * 4).astype(float)
        arm = rng.permutation(np.r_[np.zeros(g // 2), np.ones(g // 2)]).astype(int)
        ym, xm = np.bincount(cl, y, g) / size, np.bincount(cl, x, g) / size
        xc = xm - np.array([xm[arm == a].mean() for a in (0, 1)])[arm]
        yc = ym - np.array([ym[arm == a].mean() for a in (0, 1)])[arm]
        theta = float(xc @ yc / (xc @ xc))
        est, v, v2, vr = {}, {}, {}, {}
        for a in (0, 1):
            s = arm == a
            k = int(s.sum())
            est[a] = ym[s].mean() - theta * (xm[s].mean() - xm.mean())
            e = yc[s] - theta * xc[s]
            h = 1 / k + xc[s] ** 2 / (xc @ xc)
            v[a], v2[a] = float(e @ e) / (k * (k - 1)), float(np.sum(e**2 / (1 - h))) / k**2
            vr[a] = float(ym[s].var(ddof=1)) / k
        d = est[1] - est[0]
        z["unadjusted"].append((ym[arm == 1].mean() - ym[arm == 0].mean())
                               / np.sqrt(vr[0] + vr[1]))
        z["cuped"].append(d / np.sqrt(v[0] + v[1]))
        z["cuped_cr2"].append(d / np.sqrt(v2[0] + v2[1]))
    crit = 1.98  # t with about 97 df
    return {k: {"z_sd": float(np.std(x)), "rejects": float(np.mean(np.abs(x) > crit))}
            for k, x in z.items()}


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
    ap.add_argument("what", choices=["run", "report", "power", "power-report", "cuped-check"])
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="off")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--users", type=int, default=POWER_USERS,
                    help="power: users of the validation world (clusters of 50)")
    args = ap.parse_args(argv)
    if args.what == "run":
        run(args.setting, args.reps, args.start)
        return
    if args.what == "power":
        power_run(args.setting, args.reps, args.start, args.users)
        return
    if args.what == "cuped-check":
        print(json.dumps(cuped_level_check(), indent=1))
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
