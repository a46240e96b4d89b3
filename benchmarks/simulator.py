"""Benchmarks and validation of the simulated platform (recscope.sim.Environment).

    python benchmarks/simulator.py throughput        # impressions/s, policy time apart
    python benchmarks/simulator.py validate --reps 200
    python benchmarks/simulator.py demo              # the whole `run_story` end to end

``throughput``: the default world (20,000 users, 10,000 pins), a cheap policy (popular
retrieval, popularity ranking with Plackett–Luce noise), 7 simulated days after a 2-day
warm-up, on one core; simulation time excludes the policy's own time (reported apart).

``validate``: seeded repetitions of small experiments (2,000 users, 1,000 pins, 3 warm-up
days, 5 experiment days; each repetition re-draws every random number and the
assignment salt):
  1. A/B with interference off: coverage of the true global effect by the 95% interval
     of `recscope.experiments.analysis.analyze` (goal >= 93%).
  2. A/B with creator-side interference on: bias of the naive estimate against the true
     global effect (the baseline for interference-aware designs).
  3. 2×2 factorial: Shapley shares estimated with `recscope.attribution` versus the true
     shares from replaying every cell (goal: truth inside the interval >= 90%).
Results are printed and written to benchmarks/out/simulator.json.
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
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

from recscope.experiments.analysis import analyze
from recscope.sim import ExperimentSpec, StackPolicy, run_experiment, unit_totals
from recscope.sim.config import WorldConfig
from recscope.sim.environment import Environment
from recscope.sim.experiment_config import WorldSpec
from recscope.sim.world_model import build_truth
from recscope.sim.world_source import build_world

OUT = Path(__file__).resolve().parent / "out"


def throughput(scale: float = 1.0, days: int = 7) -> dict[str, Any]:
    cfg = WorldConfig().scaled(scale) if scale != 1.0 else WorldConfig()
    t0 = time.perf_counter()
    truth = build_truth(cfg, np.random.default_rng(np.random.SeedSequence(0).spawn(4)[0]))
    policy = StackPolicy(truth, "popular", "popularity", temperature=0.3)
    env = Environment(truth, seed=0)
    state = env.warmup(policy, days=2)  # also compiles the numba kernels
    setup = time.perf_counter() - t0
    env.policy_seconds = 0.0
    t1 = time.perf_counter()
    res = env.run([policy], days=days, state=state)
    total = time.perf_counter() - t1
    sim = total - env.policy_seconds
    out = {"users": truth.n_users, "items": truth.n_items, "days": days,
           "impressions": res.n_impressions, "requests": res.n_requests,
           "total_s": round(total, 3), "policy_s": round(env.policy_seconds, 3),
           "simulation_s": round(sim, 3), "setup_s": round(setup, 3),
           "impressions_per_s": round(res.n_impressions / sim),
           "impressions_per_s_incl_policy": round(res.n_impressions / total)}
    print(json.dumps(out, indent=2))
    return out


AB_TREATMENT = {"ranker": "affinity_quality"}

METRICS = OUT / "validate_metrics.toml"
METRICS_TEXT = """unit = "unit_id"
variant = "variant"
control = "control"
[metrics.ctr]
kind = "ratio"
numerator = "clicks"
denominator = "impressions"
[metrics.clicks]
kind = "mean"
column = "clicks"
[metrics.saves]
kind = "mean"
column = "saves"
[metrics.sessions]
kind = "mean"
column = "sessions"
"""


STRONG_SUPPLY = {"weight": 1.5, "elasticity": 1.0, "rate": 0.5}


def _spec(seed: int, layers: list[dict[str, Any]], *, supply: bool | dict[str, Any] = False,
          days: int = 5, policy: dict[str, Any] | None = None) -> ExperimentSpec:
    cs = {"enabled": True, **supply} if isinstance(supply, dict) else {"enabled": supply}
    return ExperimentSpec.model_validate({
        "name": "validate", "seed": seed, "days": days, "warmup_days": 3,
        "world": {"scale": 0.1},
        "simulation": {"creator_supply": cs},
        "policy": {"pool": 50, **(policy or {"retriever": "embedding",
                                                 "ranker": "affinity"})},
        "experiment": layers, "metrics": str(METRICS),
    })


def _ab_layers(treatment: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "ab", "variants": {"control": {}, "treatment": treatment}}]


FACTORIAL = [
    {"name": "retriever", "layer": "retrieval",
     "variants": {"control": {}, "treatment": {"retriever": "embedding_v2"}}},
    {"name": "ranker", "layer": "ranking",
     "variants": {"control": {}, "treatment": {"ranker": "affinity_quality"}}},
]


def ab_rep(world: Any, seed: int, *, supply: bool | dict[str, Any],
           treatment: dict[str, Any], days: int = 5) -> dict[str, dict[str, float]]:
    spec = _spec(seed, _ab_layers(treatment), supply=supply, days=days)
    t = run_experiment(spec, truth_world=world)
    card = analyze(t.assignments, t.events, t.metrics)
    gt = t.truth
    assert gt is not None
    out = {}
    for r in card.results:
        true = gt.true_effects(r["metric"])["treatment"]["effect"]
        out[r["metric"]] = {"estimate": r["estimate"], "ci_low": r["ci_low"],
                            "ci_high": r["ci_high"], "truth": true,
                            "covered": float(r["ci_low"] <= true <= r["ci_high"])}
    return out


def factorial_rep(world: Any, seed: int) -> dict[str, dict[str, Any]]:
    from recscope.attribution import CellStats, attribute_metric
    # a weak incumbent, so that the total effect is clearly non-zero and shares are
    # informative (a share of a null total has no meaning)
    spec = _spec(seed, FACTORIAL, policy={"retriever": "popular", "ranker": "popularity"})
    t = run_experiment(spec, truth_world=world)
    design, gt = t.cells, t.truth
    assert gt is not None
    a = t.assignments
    cells = np.array([design.cell_names.index(v) for v in a.column("variant").to_pylist()])
    tot = unit_totals(a, t.events, ["clicks", "impressions", "sessions"])
    est_cells = {"clicks": CellStats.from_units(cells, tot["clicks"], 2),
                 "sessions": CellStats.from_units(cells, tot["sessions"], 2),
                 "ctr": CellStats.from_units(cells, tot["clicks"], 2,
                                             denominator=tot["impressions"])}
    out = {}
    for m, cs in est_cells.items():
        att = attribute_metric(cs, design.components, metric=m, n_boot=2000, seed=seed)
        true = gt.shapley(m)
        row: dict[str, Any] = {"total": att.total["effect"], "true_total": true["total"],
                               "total_significant": float(att.total["p_value"] < 0.05)}
        for comp in design.components:
            s = att.shapley[comp]
            ts = true["components"][comp]["share"]
            row[comp] = {"share": s["share"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                         "true_share": ts, "covered": float(s["ci_low"] <= ts <= s["ci_high"])}
        out[m] = row
    return out


def validate(reps: int, part: str = "all") -> dict[str, Any]:
    METRICS.write_text(METRICS_TEXT)
    world = build_world(WorldSpec(scale=0.1))
    t0 = time.perf_counter()
    results: dict[str, Any] = {"reps": reps, "world": {"users": world.n_users,
                                                         "items": world.n_items}}
    if part in ("ab", "all"):
        # 1. coverage, interference off
        cov = [ab_rep(world, 1000 + s, supply=False, treatment=AB_TREATMENT)
               for s in range(reps)]
        results["ab_coverage"] = _summarise(cov)
        print("A/B coverage (interference off):",
              json.dumps(results["ab_coverage"], indent=1), flush=True)
        # 2. bias with creator-side interference (a retrieval change shifts exposure)
        n_bias = max(20, reps // 4)
        treat = {"retriever": "popular"}
        bias = [ab_rep(world, 5000 + s, supply=True, treatment=treat) for s in range(n_bias)]
        results["ab_bias_creator_supply"] = _summarise(bias)
        nobias = [ab_rep(world, 5000 + s, supply=False, treatment=treat)
                  for s in range(n_bias)]
        results["ab_bias_no_interference"] = _summarise(nobias)
        print("A/B with creator supply on:", json.dumps(results["ab_bias_creator_supply"],
                                                        indent=1), flush=True)
        print("same change, interference off:",
              json.dumps(results["ab_bias_no_interference"], indent=1), flush=True)
    if part in ("bias", "all"):
        # 2b. strong creator-side interference, 10 days; paired with the same seeds and
        # interference off, so (estimate - truth) differences isolate the interference
        n_bias = max(20, reps // 4)
        treat = {"retriever": "popular"}
        on = [ab_rep(world, 7000 + s, supply=STRONG_SUPPLY, treatment=treat, days=10)
              for s in range(n_bias)]
        off = [ab_rep(world, 7000 + s, supply=False, treatment=treat, days=10)
               for s in range(n_bias)]
        paired = {}
        for m in on[0]:
            d = np.array([(a[m]["estimate"] - a[m]["truth"]) - (b[m]["estimate"] - b[m]["truth"])
                          for a, b in zip(on, off, strict=True)])
            paired[m] = {"bias_due_to_interference": float(d.mean()),
                         "se": float(d.std(ddof=1) / np.sqrt(d.size))}
        results["strong_supply"] = {"config": STRONG_SUPPLY, "days": 10, "reps": n_bias,
                                    "on": _summarise(on), "off": _summarise(off),
                                    "paired": paired}
        print("strong creator supply:", json.dumps(results["strong_supply"], indent=1),
              flush=True)
    if part in ("shapley", "all"):
        # 3. Shapley shares, 2x2 factorial
        fac = [factorial_rep(world, 9000 + s) for s in range(reps)]
        summ: dict[str, Any] = {}
        for m in fac[0]:
            summ[m] = {comp: {
                "coverage": float(np.mean([f[m][comp]["covered"] for f in fac])),
                "mean_share": float(np.mean([f[m][comp]["share"] for f in fac])),
                "mean_true_share": float(np.mean([f[m][comp]["true_share"] for f in fac])),
                "median_ci_width": float(np.median([f[m][comp]["ci_high"]
                                                    - f[m][comp]["ci_low"] for f in fac]))}
                for comp in ("retriever", "ranker")}
            summ[m]["total_significant_share"] = float(np.mean(
                [f[m]["total_significant"] for f in fac]))
        results["shapley"] = summ
        print("Shapley share coverage:", json.dumps(summ, indent=1), flush=True)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    return results


def _summarise(reps: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    out = {}
    for m in reps[0]:
        est = np.array([r[m]["estimate"] for r in reps])
        tru = np.array([r[m]["truth"] for r in reps])
        out[m] = {"coverage": float(np.mean([r[m]["covered"] for r in reps])),
                  "mean_estimate": float(est.mean()), "mean_truth": float(tru.mean()),
                  "bias": float((est - tru).mean()),
                  "bias_se": float((est - tru).std(ddof=1) / np.sqrt(len(reps))),
                  "relative_bias": float((est - tru).mean() / tru.mean())
                  if tru.mean() else float("nan")}
    return out


def demo(scale: str) -> dict[str, Any]:
    import tempfile

    from recscope.story import run_story

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        summary = run_story(Path(d) / "demo", scale=scale)
    out = {"scale": scale, "seconds": round(time.perf_counter() - t0, 1),
           "timings": summary.get("timings")}
    print(json.dumps(out, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["throughput", "validate", "demo", "all"])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--scale", default="1.0")
    ap.add_argument("--part", choices=["ab", "bias", "shapley", "all"], default="all")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "simulator.json"
    new: dict[str, Any] = {}
    if args.what in ("throughput", "all"):
        new["throughput"] = throughput(float(args.scale) if args.what == "throughput"
                                       else 1.0)
    if args.what in ("validate", "all"):
        key = "validate" if args.part == "all" else f"validate_{args.part}"
        new[key] = validate(args.reps, args.part)
    if args.what in ("demo", "all"):
        new["demo"] = demo("default" if args.scale in ("1.0", "default") else args.scale)
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update(new)
    record["machine"] = f"{os.cpu_count()} cores ({sys.platform})"
    path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
