"""Validation of metric trees and launch decisions (docs/launch.md).

Four studies, each printing its figures and writing them to benchmarks/out/launch-*.json:

- ``trees``: a 3-surface funnel (requests x impressions/request x saves/impression) with
  planted effects, decomposed by the real SQL path (DuckDB) in each repetition: the largest
  gap between the contributions' sum and the parent's directly estimated relative effect,
  and the coverage of the true contributions by their 95% intervals; for the first
  repetitions, delta-method standard errors against a bootstrap over units;
- ``hillstrom``: spend per customer = visit rate x conversions per visit x spend per
  conversion (Womens E-Mail vs No E-Mail), delta-method vs bootstrap standard errors;
- ``decisions``: simulated launches with planted true effects (good, small but practical,
  null, harmful, guardrail breach, guardrail exactly at its margin), each analysed by
  ``analyze`` and decided by ``decide``: the rate of shipping a change whose true primary
  effect is <= 0 or whose true guardrail harm is >= its margin, and the power;
- ``sim``: launches on the built-in simulator (``recscope.sim.run_experiment``, truth from
  its common-random-number replays), decided by ``decide_simulated``.

Run under the heavy-job lock::

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/launch.py trees --reps 200
    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/launch.py hillstrom
    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/launch.py decisions --reps 250
    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/launch.py sim --reps 200 --scale 0.5
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
sys.path.insert(0, str(ROOT))

SURFACES = ("home_feed", "related", "search")
# per surface: requests per user, impressions per request, saves per impression
CONTROL = np.array([[3.0, 6.0, 0.05], [1.0, 4.0, 0.08], [0.6, 8.0, 0.03]])
LIFT = np.array([[1.04, 1.00, 1.02], [1.00, 1.03, 1.00], [0.98, 1.00, 1.05]])


def funnel_tables(n: int, rng: np.random.Generator, params_c: np.ndarray,
                  params_t: np.ndarray) -> tuple[pa.Table, pa.Table]:
    """Assignments and per-(unit, surface) events with heterogeneous users."""
    units = np.arange(n, dtype=np.int64)
    treated = rng.random(n) < 0.5
    activity = rng.gamma(4.0, 0.25, n)  # mean 1, shared across surfaces
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("unit_id", "surface", "requests",
                                                         "impressions", "saves")}
    for s, name in enumerate(SURFACES):
        p = np.where(treated[:, None], params_t[s], params_c[s])
        req = rng.poisson(p[:, 0] * activity)
        imp = rng.poisson(req * p[:, 1])
        saves = rng.binomial(imp, p[:, 2])
        cols["unit_id"].append(units)
        cols["surface"].append(np.full(n, name))
        cols["requests"].append(req)
        cols["impressions"].append(imp)
        cols["saves"].append(saves)
    events = pa.table({k: np.concatenate(v) for k, v in cols.items()})
    assign = pa.table({"unit_id": units,
                       "variant": np.where(treated, "treatment", "control")})
    return assign, events


def funnel_config() -> tuple[Any, Any]:
    from recscope.experiments.trees import load_metrics_with_trees

    return load_metrics_with_trees(ROOT / "examples" / "launch_metrics.toml")


def true_rows(params_c: np.ndarray, params_t: np.ndarray) -> dict[str, float]:
    """The true contribution of every row (metric name -> value)."""
    from recscope.experiments.trees import contributions

    def children(p: np.ndarray) -> np.ndarray:
        req = p[:, 0]
        return np.stack([req, p[:, 1], p[:, 2]], axis=1)  # per-surface children

    c, t = children(params_c), children(params_t)
    contrib, _, _ = contributions("product", c, t)
    names = ["requests", "impressions_per_request", "saves_per_impression"]
    out = {"saves": float(contrib.sum())}
    for i, k in enumerate(names):
        out[k] = float(contrib[:, i].sum())
    for s, surf in enumerate(SURFACES):
        out[f"saves@{surf}"] = float(contrib[s].sum())
        for i, k in enumerate(names):
            out[f"{k}@{surf}"] = float(contrib[s, i])
    return out


def study_trees(reps: int, n: int, n_boot: int, boot_reps: int, seed: int,
                fast: bool = False) -> dict[str, Any]:
    from recscope.experiments.moments import Moments
    from recscope.experiments.trees import decompose_experiment

    config, trees = funnel_config()
    truth = true_rows(CONTROL, CONTROL * LIFT)
    rng = np.random.default_rng(seed)
    covered: dict[str, int] = {}
    max_gap = 0.0
    sql_vs_numpy = math.nan
    ratios: list[np.ndarray] = []
    t0 = time.perf_counter()
    for r in range(reps):
        a, ev = funnel_tables(n, rng, CONTROL, CONTROL * LIFT)
        if fast:
            rows = _numpy_rows(a, ev)
        else:
            rows = decompose_experiment(a, ev, config, trees).select("saves", "treatment")
        parent = rows[0]
        kids = [x for x in rows if x.extra["level"] == "child"]
        parts = [x for x in rows if x.extra["level"] == "part"]
        cells = [x for x in rows if x.extra["level"] == "part_child"]
        direct = parent.extra["direct_rel_effect"]
        for group in (kids, parts, cells):
            max_gap = max(max_gap, abs(sum(x.estimate for x in group) - direct))
        for x in rows:
            covered[x.metric] = covered.get(x.metric, 0) + int(
                x.ci_low <= truth[x.metric] <= x.ci_high)
        if r == 0 and not fast:
            ref = _numpy_rows(a, ev)
            sql_vs_numpy = max(max(abs(x.estimate - y.estimate), abs(x.se - y.se))
                               for x, y in zip(rows, ref, strict=True))
        if r < boot_reps:
            ratios.append(_bootstrap_ratio(a, ev, rows, n_boot, rng, Moments))
    per_row = {k: v / reps for k, v in covered.items()}
    ratio = np.array(ratios)
    out = {"reps": reps, "units": n, "moments": "numpy" if fast else "SQL (DuckDB)",
           "seconds": round(time.perf_counter() - t0, 1),
           "max_abs_gap_sum_vs_direct": max_gap,
           "max_abs_diff_sql_vs_numpy_first_rep": sql_vs_numpy,
           "coverage_min": min(per_row.values()), "coverage_mean": float(np.mean(list(
               per_row.values()))), "coverage": per_row,
           "bootstrap_reps": boot_reps, "bootstrap_draws": n_boot,
           "se_delta_over_bootstrap_min": float(ratio.min()) if ratios else math.nan,
           "se_delta_over_bootstrap_max": float(ratio.max()) if ratios else math.nan,
           "se_delta_over_bootstrap_mean": float(ratio.mean()) if ratios else math.nan}
    return out


def _unit_matrix(a: pa.Table, ev: pa.Table) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Per-unit variables in numpy (each surface's requests, impressions, saves and their
    totals), the variant of each unit, and every tree metric's term over them."""
    variant = a.column("variant").to_numpy(zero_copy_only=False)
    surf = ev.column("surface").to_numpy(zero_copy_only=False)
    cols, names = [], []
    for s in SURFACES:
        m = surf == s  # one row per unit and surface, units in order
        for c in ("requests", "impressions", "saves"):
            cols.append(ev.column(c).to_numpy()[m].astype(float))
            names.append(f"{c}@{s}")
    x = np.stack(cols, axis=1)
    tot = np.stack([x[:, i::3].sum(1) for i in range(3)], axis=1)
    full = np.concatenate([x, tot], axis=1)
    idx = {nm: i for i, nm in enumerate(names)}
    k = len(names)
    idx.update({"requests": k, "impressions": k + 1, "saves": k + 2})
    terms: dict[str, tuple[int, int | None]] = {}
    for sfx in ["", *[f"@{s}" for s in SURFACES]]:
        terms["saves" + sfx] = (idx["saves" + sfx], None)
        terms["requests" + sfx] = (idx["requests" + sfx], None)
        terms["impressions_per_request" + sfx] = (idx["impressions" + sfx],
                                                  idx["requests" + sfx])
        terms["saves_per_impression" + sfx] = (idx["saves" + sfx], idx["impressions" + sfx])
    return variant, full, terms


def _numpy_rows(a: pa.Table, ev: pa.Table) -> list[Any]:
    """The decomposition from moments computed in numpy (same code after the moments)."""
    from recscope.experiments.moments import Moments
    from recscope.experiments.trees import decompose

    _, trees = funnel_config()
    variant, full, terms = _unit_matrix(a, ev)
    est = decompose("saves", trees["saves"], Moments.from_data(full[variant == "control"]),
                    Moments.from_data(full[variant == "treatment"]), terms,
                    variant="treatment")
    return [e for e in est.rows]


def _bootstrap_ratio(a: pa.Table, ev: pa.Table, rows: list[Any], n_boot: int,
                     rng: np.random.Generator, moments_cls: Any) -> np.ndarray:
    """Delta-method s.e. over a bootstrap over units of each row (per-unit variables
    computed in numpy, decomposed with the same code)."""
    from recscope.experiments.trees import decompose

    _, trees = funnel_config()
    variant, full, terms = _unit_matrix(a, ev)
    xc, xt = full[variant == "control"], full[variant == "treatment"]
    boots = []
    for _ in range(n_boot):
        bc = xc[rng.integers(0, len(xc), len(xc))]
        bt = xt[rng.integers(0, len(xt), len(xt))]
        est = decompose("saves", trees["saves"], moments_cls.from_data(bc),
                        moments_cls.from_data(bt), terms, variant="treatment")
        boots.append([r.estimate for r in est.rows])
    boot_se = np.std(np.array(boots), axis=0, ddof=1)
    delta_se = np.array([r.se for r in rows])
    return delta_se / boot_se


def study_hillstrom(n_boot: int, seed: int) -> dict[str, Any]:
    import pandas as pd

    from recscope.experiments.moments import Moments
    from recscope.experiments.trees import TreeSpec, decompose

    data = Path(__import__("os").environ.get("RECSCOPE_DATA", ROOT.parent / "shared" /
                                             "data")) / "hillstrom" / "hillstrom.csv"
    h = pd.read_csv(data)
    x = {arm: h.loc[h["segment"] == arm, ["visit", "conversion", "spend"]].to_numpy(float)
         for arm in ("No E-Mail", "Womens E-Mail", "Mens E-Mail")}
    tree = TreeSpec(parent="spend", op="product", children=("visit", "cpv", "spc"))
    terms = {"visit": (0, None), "cpv": (1, 0), "spc": (2, 1), "spend": (2, None)}
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"bootstrap_draws": n_boot}
    for arm in ("Womens E-Mail", "Mens E-Mail"):
        xc, xt = x["No E-Mail"], x[arm]
        est = decompose("spend", tree, Moments.from_data(xc), Moments.from_data(xt), terms,
                        variant=arm)
        boots = []
        for _ in range(n_boot):
            e = decompose("spend", tree, Moments.from_data(xc[rng.integers(0, len(xc),
                                                                           len(xc))]),
                          Moments.from_data(xt[rng.integers(0, len(xt), len(xt))]), terms,
                          variant=arm)
            boots.append([r.estimate for r in e.rows])
        b = np.array(boots)
        out[arm] = [{"row": r.metric, "contribution": r.estimate, "se_delta": r.se,
                     "se_bootstrap": float(b[:, i].std(ddof=1)),
                     "ci_delta": [r.ci_low, r.ci_high],
                     "ci_bootstrap_percentile": [float(np.quantile(b[:, i], 0.025)),
                                                 float(np.quantile(b[:, i], 0.975))]}
                    for i, r in enumerate(est.rows)]
        out[arm + " gap"] = abs(sum(r.estimate for r in est.rows[1:]) - est.direct_rel_effect)
    return out


SCENARIOS = {  # true relative effects: (primary saves, guardrail hides)
    "good": (0.03, 0.0),
    "good_small": (0.015, -0.01),
    "null": (0.0, 0.0),
    "harmful": (-0.02, 0.0),
    "guardrail_breach": (0.03, 0.04),
    "guardrail_at_margin": (0.03, 0.02),
}
LAUNCH = """
name = "planted"
variant = "treatment"
alpha = 0.05
[primary.saves]
min_effect = 0.01
[guardrails.hides]
direction = "decrease"
margin = 0.02
"""
METRICS = """
unit = "unit_id"
[metrics.saves]
kind = "mean"
column = "saves"
[metrics.hides]
kind = "mean"
column = "hides"
"""


def study_decisions(reps: int, n: int, seed: int) -> dict[str, Any]:
    from recscope.experiments import analyze, parse_metrics
    from recscope.launch import LaunchConfig, decide
    from recscope.launch.decide import truth_verdict
    from recscope.launch.inputs import Experiment, scorecard_effects

    cfg = LaunchConfig.model_validate({**tomllib.loads(LAUNCH), "source": "planted"})
    metrics = parse_metrics(tomllib.loads(METRICS))
    rng = np.random.default_rng(seed)
    tally: dict[str, dict[str, int]] = {}
    bad_total = bad_shipped = good_total = good_shipped = 0
    t0 = time.perf_counter()
    for name, (e_s, e_h) in SCENARIOS.items():
        truth = {"saves": {"short_run": e_s}, "hides": {"short_run": e_h}}
        verdict = truth_verdict(cfg, truth)
        counts = {"ship": 0, "iterate": 0, "stop": 0}
        for _ in range(reps):
            units = np.arange(n, dtype=np.int64)
            treated = rng.random(n) < 0.5
            activity = rng.gamma(2.0, 0.5, n)
            saves = rng.poisson(2.0 * activity * np.where(treated, 1 + e_s, 1.0))
            hides = rng.poisson(1.0 * activity * np.where(treated, 1 + e_h, 1.0))
            a = pa.table({"unit_id": units, "variant": np.where(treated, "treatment",
                                                                "control")})
            ev = pa.table({"unit_id": units, "saves": saves, "hides": hides})
            card = analyze(a, ev, metrics)
            exp = Experiment(scorecard_effects(card, source="planted"), "control", card.srm,
                             "planted")
            d = decide(cfg, exp)
            counts[d.decision] += 1
        tally[name] = {**counts, "truth": verdict}  # type: ignore[dict-item]
        if verdict == "bad":
            bad_total += reps
            bad_shipped += counts["ship"]
        if verdict == "good":
            good_total += reps
            good_shipped += counts["ship"]
    return {"reps_per_scenario": reps, "units": n, "launches": reps * len(SCENARIOS),
            "seconds": round(time.perf_counter() - t0, 1), "scenarios": {
                k: {"true_primary": SCENARIOS[k][0], "true_guardrail": SCENARIOS[k][1],
                    **v, "ship_rate": v["ship"] / reps} for k, v in tally.items()},
            "bad_launches": bad_total, "bad_shipped_rate": bad_shipped / max(bad_total, 1),
            "good_launches": good_total, "power": good_shipped / max(good_total, 1)}


SIM_SPEC = """
name = "launch-{i}"
seed = {seed}
days = 7
warmup_days = 3
metrics = "{metrics}"

[world]
scale = {scale}

[policy]
retriever = "embedding"
ranker = "affinity"

[[experiment]]
name = "ranker"
[experiment.variants.control]
[experiment.variants.treatment]
{change}
"""
SIM_LAUNCH = """
name = "sim-ranker"
variant = "treatment"
tree = "saves"
[primary.saves]
min_effect = 0.01
[guardrails.hides]
direction = "decrease"
margin = 0.05
"""


def study_sim(reps: int, scale: float, seed: int) -> dict[str, Any]:
    from recscope.launch import LaunchConfig, decide_simulated
    from recscope.sim import parse_experiment, run_experiment

    OUT.mkdir(parents=True, exist_ok=True)
    full = ROOT / "examples" / "launch_metrics.toml"
    plain = OUT / "launch_sim_metrics.toml"  # the simulator's metrics without [trees]
    text = full.read_text()
    plain.write_text(text.split("[trees.")[0])
    cfg = LaunchConfig.model_validate({**tomllib.loads(SIM_LAUNCH), "source": "sim"})
    changes = ['ranker = "affinity_quality"', 'ranker = "affinity"', 'ranker = "popularity"',
               'retriever = "embedding_v2"', 'retriever = "popular"']
    runs = []
    t0 = time.perf_counter()
    for i in range(reps):
        change = changes[i % len(changes)]
        spec = parse_experiment(tomllib.loads(SIM_SPEC.format(
            i=i, seed=seed + i, metrics=plain, scale=scale, change=change)))
        res = run_experiment(spec)  # in memory; truth from the common-random-number replays
        d = decide_simulated(cfg, res, metrics=full)
        runs.append({"change": change, "decision": d.decision, "truth": d.truth_verdict,
                     "true_saves": d.truth.get("saves", {}).get("short_run"),
                     "estimated_saves": next(c.estimate for c in d.checks
                                             if c.metric == "saves"),
                     "true_hides": d.truth.get("hides", {}).get("short_run")})
        print(runs[-1], flush=True)
    bad = [r for r in runs if r["truth"] == "bad"]
    good = [r for r in runs if r["truth"] == "good"]
    by_change = {c: {d: sum(r["change"] == c and r["decision"] == d for r in runs)
                     for d in ("ship", "iterate", "stop")} for c in changes}
    for c in changes:
        by_change[c]["truth"] = ", ".join(sorted({r["truth"] for r in runs
                                                  if r["change"] == c}))  # type: ignore[assignment]
    return {"reps": reps, "scale": scale, "seconds": round(time.perf_counter() - t0, 1),
            "runs": runs, "by_change": by_change, "bad": len(bad),
            "bad_shipped": sum(r["decision"] == "ship" for r in bad),
            "bad_shipped_rate": sum(r["decision"] == "ship" for r in bad) / max(len(bad), 1),
            "good": len(good), "good_shipped": sum(r["decision"] == "ship" for r in good),
            "power": sum(r["decision"] == "ship" for r in good) / max(len(good), 1),
            "marginal": sum(r["truth"] == "marginal" for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", choices=["trees", "hillstrom", "decisions", "sim"])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--units", type=int, default=None,
                    help="units per launch (default: 6000 for trees, 200000 for decisions)")
    ap.add_argument("--bootstrap", type=int, default=400)
    ap.add_argument("--bootstrap-reps", type=int, default=5)
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fast", action="store_true",
                    help="trees: per-unit moments in numpy instead of the SQL engine")
    args = ap.parse_args()
    if args.study == "trees":
        res = study_trees(args.reps, args.units or 6000, args.bootstrap, args.bootstrap_reps, args.seed,
                          args.fast)
    elif args.study == "hillstrom":
        res = study_hillstrom(args.bootstrap, args.seed)
    elif args.study == "decisions":
        res = study_decisions(args.reps, args.units or 200_000, args.seed)
    else:
        res = study_sim(args.reps, args.scale, args.seed)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"launch-{args.study}{'-fast' if args.fast else ''}.json"
    path.write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps({k: v for k, v in res.items() if k not in ("coverage", "runs")},
                     indent=1, default=float))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
