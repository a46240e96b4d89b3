"""Which variance makes the creator-side design's intervals honest (issue 14).

The simulator's creator design randomises 150 creators whose sizes are Pareto(1.2): a few
creators hold 30-40% of an arm's impressions, so the CTR (a ratio of sums over creators)
has far fewer effective clusters than creators. This script stores, per repetition of a
setting of ``benchmarks/interference.py``, every creator's arm and totals (impressions,
clicks, saves) in the creator design's run and in the two truth replays, then scores
each small-sample treatment of :func:`recscope.experiments.clustered.compare_arms` on
them::

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/creator_variance.py collect \\
        --setting aa-nocarry --start 0 --reps 100
    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/creator_variance.py collect \\
        --setting off-nocarry --start 0 --reps 100
    .venv/bin/python benchmarks/creator_variance.py evaluate --redraws 100

``evaluate`` prints, per setting and metric, the coverage of the 95% interval and the
mean standard error of ``arm`` (the old default: ``G_a / (G_a - 1)``, Welch df on the
creator counts), ``stata`` (CR1), ``cr2`` (Bell-McCaffrey, its Satterthwaite df) and
``cr3`` (delete-one-creator jackknife, its Satterthwaite df: the creator design's
default), against the sd of estimate - truth. In an A/A setting the creators' totals do
not depend on their arms, so ``--redraws K`` re-draws the 50/50 creator assignment K
times per stored repetition: coverage over 100 x K experiments (and a randomisation-
inference test's rejection rate). Results: benchmarks/out/creator-variance.json.
``clusters --reps 4000`` asks the same of the ``cluster`` design with equal-ish and with
Pareto-sized clusters (benchmarks/out/creator-variance-clusters.json).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import interference  # the settings, world and policies of the validation

OUT = Path(__file__).resolve().parent / "out"
RECORDS = OUT / "creator-variance"
METHODS = ("arm", "stata", "cr2", "cr3")
METRICS = {"ctr": ("clk", "imp"), "exposure": ("imp", None),
           "clicks_received": ("clk", None), "saves_received": ("sav", None)}


def collect(setting: str, start: int, reps: int) -> None:
    """Append ``reps`` repetitions (seeds as in interference.py) of the creator design."""
    from recscope.experiments.assignment import Experiment
    from recscope.experiments.designs import DesignConfig
    from recscope.sim.designs import CreatorSplit, CreatorStats, plan_design

    sim, world = interference.setting_world(setting)
    days = interference.DAYS
    RECORDS.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + reps):
        t0 = time.perf_counter()
        seed = 10_000 + i
        env, pols, pre = interference.warm_start(world, sim, setting, seed)
        state = pre.state
        n = env.truth.n_users
        ic = np.asarray(env.item_creator, dtype=np.int64)
        replays = [CreatorStats(ic, env.n_creators) for _ in (0, 1)]
        for c in (0, 1):
            env.run(pols, days=days, arm=np.full(n, c, dtype=np.int64), state=state,
                    observe=replays[c])
        exp = Experiment(name="design-compare", variants=("control", "treatment"),
                         salt=f"interference:{setting}:{seed}")
        plan = plan_design(env, DesignConfig(kind="creator"), exp, days=days,
                           start_us=env.start_us + state.day * 86_400_000_000, seed=seed)
        assert plan.creator_arm is not None
        st = CreatorStats(ic, env.n_creators)
        env.run([*pols, CreatorSplit(pols[0], pols[1], plan.creator_arm[ic])], days=days,
                arm=plan.arm, state=state, novel=[False, True, False], observe=st)
        rec = {"setting": setting, "rep": i, "arm": plan.creator_arm.tolist(),
               "imp": st.impressions.tolist(), "clk": st.clicks.tolist(),
               "sav": st.saves.tolist(),
               "truth": [{"imp": r.impressions.tolist(), "clk": r.clicks.tolist(),
                          "sav": r.saves.tolist()} for r in replays]}
        with (RECORDS / f"{setting}-{start}.jsonl").open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(setting, i, round(time.perf_counter() - t0, 2), flush=True)


def _value(cols: dict[str, np.ndarray], metric: str) -> float:
    y, d = METRICS[metric]
    return float(cols[y].sum() / cols[d].sum()) if d else float(cols[y].mean())


def _effects(cols: dict[str, np.ndarray], treated: np.ndarray, metric: str
             ) -> dict[str, Any]:
    """Every method's effect for one assignment of the creators."""
    from recscope.experiments.clustered import ArmStats, compare_arms

    y, d = METRICS[metric]
    num = cols[y]
    den = cols[d] if d else np.ones(num.size)
    arms = [ArmStats.from_clusters(num[m], den[m]) for m in (~treated, treated)]
    return {k: compare_arms(metric, "t", *arms, small_sample=k) for k in METHODS}


def evaluate(redraws: int) -> dict[str, Any]:
    """Coverage and standard errors per setting, metric and method."""
    recs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(RECORDS.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            recs.setdefault(r["setting"], []).append(r)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for setting, rs in sorted(recs.items()):
        for metric in METRICS:
            err, hits, ses, eff = [], {k: 0 for k in METHODS}, {k: [] for k in METHODS}, []
            share: list[float] = []  # the largest creator's share of its arm's weight
            re_hits, re_n, ri_rej = {k: 0 for k in METHODS}, 0, 0
            for r in rs:
                cols = {k: np.asarray(r[k], dtype=float) for k in ("imp", "clk", "sav")}
                truth = (_value({k: np.asarray(v, float) for k, v in r["truth"][1].items()},
                                metric)
                         - _value({k: np.asarray(v, float) for k, v in r["truth"][0].items()},
                                  metric))
                treated = np.asarray(r["arm"]) == 1
                es = _effects(cols, treated, metric)
                err.append(es["arm"].estimate - truth)
                eff.append(es["cr3"].extra["effective_clusters"])
                d = METRICS[metric][1]
                share.append(max(float(cols[d][m].max() / cols[d][m].sum()) if d else
                                 1 / m.sum() for m in (treated, ~treated)))
                for k, e in es.items():
                    hits[k] += e.ci_low <= truth <= e.ci_high
                    ses[k].append(e.se)
                if setting.startswith("aa") and redraws:
                    draws = []
                    for _ in range(redraws):
                        t = rng.random(treated.size) < 0.5
                        if min(t.sum(), (~t).sum()) < 2:
                            continue
                        ed = _effects(cols, t, metric)
                        draws.append(ed["arm"].estimate)
                        re_n += 1
                        for k, e in ed.items():
                            re_hits[k] += e.ci_low <= 0 <= e.ci_high
                    ri_rej += np.mean(np.abs(draws) >= abs(err[-1])) < 0.05
            n = len(err)
            row: dict[str, Any] = {
                "reps": n, "sd_error": float(np.std(err, ddof=1)),
                "effective_clusters": float(np.mean(eff)),
                "largest_share_mean": float(np.mean(share)),
                "largest_share_max": float(np.max(share)),
                **{f"coverage_{k}": hits[k] / n for k in METHODS},
                **{f"mean_se_{k}": float(np.mean(ses[k])) for k in METHODS}}
            if re_n:
                row.update({"redrawn_experiments": re_n, "ri_rejects": ri_rej / n,
                            **{f"redrawn_coverage_{k}": re_hits[k] / re_n
                               for k in METHODS}})
            out.setdefault(setting, {})[metric] = row
            line = " ".join(f"{k} {row[f'coverage_{k}']:.2f} ({row[f'mean_se_{k}']:.4g})"
                            for k in METHODS)
            print(f"{setting:12s} {metric:16s} n={n} sd(err)={row['sd_error']:.4g} "
                  f"eff.clusters={row['effective_clusters']:.1f} largest share "
                  f"{row['largest_share_mean']:.2f} (max {row['largest_share_max']:.2f}) | "
                  f"{line}")
            if re_n:
                print(" " * 30 + f"redrawn ({re_n}): " + " ".join(
                    f"{k} {row[f'redrawn_coverage_{k}']:.3f}" for k in METHODS)
                    + f" | RI rejects {row['ri_rejects']:.2f}")
    (OUT / "creator-variance.json").write_text(json.dumps(out, indent=1))
    return out


def cluster_sizes(reps: int, seed: int = 1) -> list[dict[str, Any]]:
    """The same question for the ``cluster`` design: A/A coverage of a mean over 20 or 40
    clusters randomised half and half, cluster sizes uniform on 2-29 (the table of
    docs/experiments.md) or ``ceil(2 (Pareto(1.2) + 1))`` (a few large clusters),
    intra-cluster correlation 0, 0.2, 0.5; a new population every repetition."""
    from recscope.experiments.clustered import ArmStats, compare_arms

    rows = []
    for sizes_kind in ("uniform", "pareto"):
        for g in (20, 40):
            for icc in (0.0, 0.2, 0.5):
                rng = np.random.default_rng(seed)
                hits = {k: 0 for k in ("arm", "cr2", "cr3")}
                for _ in range(reps):
                    sizes = (rng.integers(2, 30, g) if sizes_kind == "uniform"
                             else np.ceil(2 * (rng.pareto(1.2, g) + 1)).astype(int))
                    cl = np.repeat(np.arange(g), sizes)
                    y = (np.sqrt(icc) * rng.normal(0, 1, g)[cl]
                         + np.sqrt(1 - icc) * rng.normal(0, 1, cl.size))
                    t = rng.permutation(np.r_[np.zeros(g // 2), np.ones(g - g // 2)]) == 1
                    tot = np.bincount(cl, y, g)
                    arms = [ArmStats.from_clusters(tot[m], sizes[m].astype(float))
                            for m in (~t, t)]
                    for k in hits:
                        e = compare_arms("y", "t", *arms, small_sample=k)  # type: ignore[arg-type]
                        hits[k] += e.ci_low <= 0 <= e.ci_high
                row = {"sizes": sizes_kind, "clusters": g, "icc": icc, "reps": reps,
                       **{f"coverage_{k}": v / reps for k, v in hits.items()}}
                rows.append(row)
                print(row, flush=True)
    (OUT / "creator-variance-clusters.json").write_text(json.dumps(rows, indent=1))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--setting", required=True, choices=sorted(interference.SETTINGS))
    c.add_argument("--start", type=int, default=0)
    c.add_argument("--reps", type=int, default=100)
    e = sub.add_parser("evaluate")
    e.add_argument("--redraws", type=int, default=100)
    k = sub.add_parser("clusters")
    k.add_argument("--reps", type=int, default=4000)
    a = ap.parse_args()
    if a.cmd == "collect":
        collect(a.setting, a.start, a.reps)
    elif a.cmd == "clusters":
        cluster_sizes(a.reps)
    else:
        evaluate(a.redraws)


if __name__ == "__main__":
    main()
