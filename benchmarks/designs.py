"""Interference-aware designs at scale: graph clustering and cluster-level analysis.

Two benchmarks (run them under the heavy-job lock):

``graph``: a synthetic follow graph with community structure (community sizes
log-normal around 100, 80% of each user's edges inside her community, activity
log-normal) is clustered by Leiden and by METIS (:func:`recscope.experiments.clusters.
cluster_graph`, target 100 users per cluster), each in its own child process so peak
memory is per method. Prints seconds, peak RSS (and the RSS the graph alone needed) and
the cut fraction, next to the planted communities' cut::

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/designs.py graph \
        --users 1000000 --edges 20000000

With ``--engagement CREATORS`` the graph is a user-creator engagement graph instead
(creators in groups of 10 with planted audiences, 80% of a user's clicks inside her
group's creators, Pareto(1.2) creator popularity), clustered by
:func:`~recscope.experiments.clusters.cluster_bipartite`::

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/designs.py graph \
        --users 1000000 --edges 20000000 --engagement 10000

``validate``: the statistics by simulation (numpy, through the same
:func:`~recscope.experiments.clustered.compare_arms`, :func:`interference_test` and
:func:`switchback_effect` the analysis uses): A/A coverage of cluster-robust and naive
intervals, the interference test's level and power, switchback A/A coverage::

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/designs.py validate --reps 4000

``analysis``: 10M units in 100k clusters (Parquet under benchmarks/out/designs/), the
same events analysed unit by unit (``analyze``) and by cluster (``analyze_design``,
kind = "cluster") on DuckDB, alternating, ``--repeat`` times; prints the medians and the
ratio cluster / unit::

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/designs.py analysis \
        --units 10000000 --clusters 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out" / "designs"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def community_graph(users: int, edges: int, seed: int = 0, p_in: float = 0.8
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(src, dst, community) of a follow graph with planted communities."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.lognormal(np.log(100), 0.6, users // 50), 10, 2000).astype(np.int64)
    sizes = sizes[np.cumsum(sizes) <= users]
    sizes = np.r_[sizes, users - sizes.sum()] if sizes.sum() < users else sizes
    sizes = sizes[sizes > 0]
    start = np.r_[0, np.cumsum(sizes)[:-1]]
    comm = np.repeat(np.arange(len(sizes)), sizes)
    activity = rng.lognormal(0, 1, users)
    p = activity / activity.sum()
    src = rng.choice(users, edges, p=p).astype(np.int64)
    c = comm[src]
    inside = rng.random(edges) < p_in
    dst = np.where(inside, start[c] + (rng.random(edges) * sizes[c]).astype(np.int64),
                   rng.integers(0, users, edges))
    return src, dst, comm


def engagement_graph(users: int, creators: int, edges: int, seed: int = 0,
                     p_in: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, creator, audience) of a user-creator engagement graph with planted
    audiences: creators in groups of 10, every user in one group's audience; a click goes
    to a creator of her group with probability ``p_in``, else to any creator; creators'
    popularity Pareto(1.2), users' activity log-normal."""
    if creators < 10 or creators % 10:
        raise SystemExit(f"--engagement must be a multiple of 10, got {creators}")
    rng = np.random.default_rng(seed)
    groups = creators // 10
    audience = rng.integers(0, groups, users)
    pop = rng.pareto(1.2, creators) + 1.0
    activity = rng.lognormal(0, 1, users)
    user = rng.choice(users, edges, p=activity / activity.sum()).astype(np.int64)
    # inside: a creator of the user's group (creator c is in group c % groups), by
    # popularity within the group; outside: any creator by popularity
    members = np.arange(creators).reshape(10, groups)
    w = pop[members]  # [10, groups]
    cum = np.cumsum(w / w.sum(axis=0), axis=0)
    g = audience[user]
    slot = (rng.random(edges)[None, :] > cum[:, g]).sum(axis=0)
    inside = members[np.minimum(slot, members.shape[0] - 1), g]
    anyone = rng.choice(creators, edges, p=pop / pop.sum())
    creator = np.where(rng.random(edges) < p_in, inside, anyone).astype(np.int64)
    return user, creator, audience


def graph_child(method: str, users: int, edges: int, seed: int, creators: int = 0
                ) -> dict[str, object]:
    from recscope.experiments.clusters import cluster_bipartite, cluster_graph, cut_fraction

    t = time.perf_counter()
    if creators:
        src, dst, comm = engagement_graph(users, creators, edges, seed)
    else:
        src, dst, comm = community_graph(users, edges, seed)
    gen_s = time.perf_counter() - t
    rss_graph = _rss_mib()
    t = time.perf_counter()
    k = max(2, users // 100)
    if creators:
        c = cluster_bipartite(users, creators, src, dst, method=method,  # type: ignore[arg-type]
                              n_clusters=k, seed=seed)
        # the planted audiences' cut: engagement outside the user's group of creators
        planted = float(np.mean(comm[src] != dst % (creators // 10)))
    else:
        c = cluster_graph(users, src, dst, method=method,  # type: ignore[arg-type]
                          n_clusters=k, seed=seed)
        planted = cut_fraction(comm, src, dst)
    secs = time.perf_counter() - t
    return {"method": method, "users": users, "creators": creators, "edges": edges,
            "seconds": round(secs, 1), "generate_seconds": round(gen_s, 1),
            "peak_rss_mib": round(_rss_mib()), "graph_rss_mib": round(rss_graph),
            "cut_fraction": round(c.cut_fraction, 4),
            "planted_cut_fraction": round(planted, 4),
            "n_clusters": c.n_clusters, "size_median": float(np.median(c.sizes)),
            "size_max": int(c.sizes.max())}


def run_graph(args: argparse.Namespace) -> None:
    for method in args.methods:
        cmd = [sys.executable, __file__, "graph-child", method, str(args.users),
               str(args.edges), str(args.seed), str(args.engagement)]
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(json.dumps({"method": method, "users": args.users, "edges": args.edges,
                              "failed": out.stderr.strip().splitlines()[-1:],
                              "seconds": round(time.perf_counter() - t, 1)}), flush=True)
            continue
        print(out.stdout.strip().splitlines()[-1], flush=True)


# -- analysis ---------------------------------------------------------------------------------

def generate(units: int, clusters: int, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Assignments (unit_id, variant, cluster_id: whole clusters per arm) and one events row
    per unit (clicks, views, revenue) with outcomes correlated within clusters."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    a_path, e_path = folder / f"assign_{units}_{clusters}.parquet", \
        folder / f"events_{units}_{clusters}.parquet"
    if a_path.exists() and e_path.exists():
        return a_path, e_path
    rng = np.random.default_rng(seed)
    cl = rng.integers(0, clusters, units)
    arm = rng.integers(0, 2, clusters)
    level = rng.lognormal(0, 0.5, clusters)
    v = arm[cl]
    views = rng.poisson(5 * level[cl]) + 1
    clicks = rng.binomial(views, np.clip(0.1 * (1 + 0.02 * v), 0, 1))
    revenue = np.round(rng.exponential(3.0, units) * (clicks > 0), 2)
    ids = np.arange(units, dtype=np.int64)
    pq.write_table(pa.table({"unit_id": ids, "variant": pa.array(
        np.where(v == 1, "treatment", "control")), "cluster_id": cl.astype(np.int64)}),
        a_path)
    pq.write_table(pa.table({"unit_id": ids, "clicks": clicks.astype(np.int64),
                             "views": views.astype(np.int64), "revenue": revenue}), e_path)
    return a_path, e_path


def run_analysis(args: argparse.Namespace) -> None:
    from recscope.experiments.analysis import analyze
    from recscope.experiments.clustered import analyze_design
    from recscope.experiments.metrics import AnalysisConfig, Metric

    t = time.perf_counter()
    a_path, e_path = generate(args.units, args.clusters, OUT, args.seed)
    gen = time.perf_counter() - t
    cfg = AnalysisConfig(unit="unit_id", correction="none", metrics=[
        Metric("clicks", "mean", column="clicks"), Metric("revenue", "mean", column="revenue"),
        Metric("clickers", "proportion", column="clicks"),
        Metric("ctr", "ratio", numerator="clicks", denominator="views")])
    times: dict[str, list[float]] = {"unit": [], "cluster": []}
    last = {}
    for _ in range(args.repeat):
        for kind in ("unit", "cluster"):
            t = time.perf_counter()
            if kind == "unit":
                res = analyze(str(a_path), str(e_path), cfg)
            else:
                res = analyze_design(str(a_path), str(e_path), cfg, {"kind": "cluster"})
            times[kind].append(time.perf_counter() - t)
            last[kind] = res
    unit, cluster = (statistics.median(times[k]) for k in ("unit", "cluster"))
    ctr_u = next(e for e in last["unit"].results if e.metric == "ctr")
    ctr_c = next(e for e in last["cluster"].results if e.metric == "ctr")
    print(json.dumps({"units": args.units, "clusters": args.clusters,
                      "generate_seconds": round(gen, 1), "repeat": args.repeat,
                      "unit_seconds": [round(x, 2) for x in times["unit"]],
                      "cluster_seconds": [round(x, 2) for x in times["cluster"]],
                      "unit_median": round(unit, 2), "cluster_median": round(cluster, 2),
                      "ratio": round(cluster / unit, 3),
                      "ctr_estimate_equal": abs(ctr_u.estimate - ctr_c.estimate) < 1e-12,
                      "ctr_se_unit": ctr_u.se, "ctr_se_cluster": ctr_c.se,
                      "ctr_design_effect": ctr_c.extra["design_effect"]}), flush=True)


# -- validation by simulation -----------------------------------------------------------------

def _arm(tot: np.ndarray, n: np.ndarray, unit_ss: float) -> object:
    from recscope.experiments.clustered import ArmStats

    return ArmStats(float(len(tot)), float(n.sum()), float(tot.sum()), float(n.sum()),
                    float(tot @ tot), float(n @ n), float(tot @ n), float(unit_ss),
                    float(n.sum()), float(tot.sum()))


def validate_cluster_aa(reps: int, n_clusters: int, icc: float, seed: int
                        ) -> dict[str, float]:
    """A/A coverage of 95% intervals: cluster-robust (arm and Stata CR1 factors) and the
    naive unit-level one, clusters of 2-29 units, intra-cluster correlation ``icc``."""
    from recscope.experiments.clustered import compare_arms

    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 30, n_clusters)
    cl = np.repeat(np.arange(n_clusters), sizes)
    hits = {"arm": 0, "stata": 0, "unit": 0}
    half = n_clusters // 2
    for _ in range(reps):
        y = (rng.normal(0, np.sqrt(icc), n_clusters)[cl]
             + rng.normal(0, np.sqrt(1 - icc), len(cl)))
        arm = rng.permutation(np.r_[np.zeros(half), np.ones(n_clusters - half)]).astype(int)
        tot, ss = np.bincount(cl, y, n_clusters), np.bincount(cl, y * y, n_clusters)
        arms = [_arm(tot[arm == k], sizes[arm == k], ss[arm == k].sum()) for k in (0, 1)]
        for key in ("arm", "stata"):
            e = compare_arms("y", "t", *arms, small_sample=key)  # type: ignore[arg-type]
            hits[key] += e.ci_low <= 0 <= e.ci_high
        hits["unit"] += abs(e.estimate) <= 1.96 * e.extra["se_unit"]
    return {f"coverage_{k}": v / reps for k, v in hits.items()}


def validate_interference(reps: int, spill: float, seed: int) -> float:
    """Rejection rate at 5% of the hierarchical interference test (200 clusters of 5-14
    units, half randomised as clusters, effect 0.1 + ``spill`` x treated share)."""
    from recscope.experiments.clustered import compare_arms, interference_test

    rng = np.random.default_rng(seed)
    g = 200
    sizes = rng.integers(5, 15, g)
    cl = np.repeat(np.arange(g), sizes)
    rejected = 0
    for _ in range(reps):
        cluster_mode = rng.random(g) < 0.5
        t = np.where(cluster_mode[cl], rng.integers(0, 2, g)[cl],
                     rng.integers(0, 2, len(cl)))
        share = np.bincount(cl, t, g) / sizes
        y = rng.normal(0, 1, g)[cl] + rng.normal(0, 1, len(cl)) + 0.1 * t + spill * share[cl]
        effects = []
        for is_cluster in (True, False):
            m = cluster_mode[cl] == is_cluster
            key = cl if is_cluster else np.arange(len(cl))
            arms = []
            for k in (0, 1):
                sel = m & (t == k)
                u, inv = np.unique(key[sel], return_inverse=True)
                arms.append(_arm(np.bincount(inv, y[sel], len(u)),
                                 np.bincount(inv, None, len(u)), float(y[sel] @ y[sel])))
            effects.append(compare_arms("y", "t", *arms))
        rejected += interference_test(*effects).p_value < 0.05
    return rejected / reps


def validate_switchback(reps: int, n_slices: int, rho: float, seed: int
                        ) -> dict[str, float]:
    """A/A coverage of the switchback's Newey-West and i.i.d.-cell 95% intervals with
    AR(1) demand (``rho``) over slices, 2 regions, the automatic lag."""
    from recscope.experiments.clustered import newey_west_lag, switchback_effect

    rng = np.random.default_rng(seed)
    lag = newey_west_lag(n_slices)
    hit_hac = hit_iid = 0
    reg = np.repeat([0, 1], n_slices)
    sl = np.tile(np.arange(n_slices), 2)
    for _ in range(reps):
        ar = np.zeros((2, n_slices))
        for s in range(1, n_slices):
            ar[:, s] = rho * ar[:, s - 1] + rng.normal(0, 0.3, 2)
        den = rng.poisson(200, 2 * n_slices).astype(float) + 1
        num = rng.poisson(den * 0.1 * np.exp(ar.ravel())).astype(float)
        treated = rng.random(2 * n_slices) < 0.5
        if treated.sum() < 2 or (~treated).sum() < 2:
            continue
        est, se, se_iid = switchback_effect(reg, sl, treated, num, den, lag=lag)
        hit_hac += abs(est) <= 1.96 * se
        hit_iid += abs(est) <= 1.96 * se_iid
    return {"coverage_hac": hit_hac / reps, "coverage_iid": hit_iid / reps, "lag": lag}


def run_validate(args: argparse.Namespace) -> None:
    for g in (20, 40, 100):
        for icc in (0.0, 0.2, 0.5):
            out = validate_cluster_aa(args.reps, g, icc, args.seed)
            print(json.dumps({"check": "cluster A/A", "clusters": g, "icc": icc,
                              "reps": args.reps, **out}), flush=True)
    for spill in (0.0, 0.25, 0.5, 1.0):
        reps = args.reps // 2
        rate = validate_interference(reps, spill, args.seed)
        print(json.dumps({"check": "interference test", "spill": spill, "reps": reps,
                          "rejection_rate": rate}), flush=True)
    for n_slices, rho in ((28, 0.0), (28, 0.7), (84, 0.7)):
        out = validate_switchback(args.reps, n_slices, rho, args.seed)
        print(json.dumps({"check": "switchback A/A", "slices": n_slices, "regions": 2,
                          "rho": rho, "reps": args.reps, **out}), flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "graph-child":
        method, users, edges, seed, creators = sys.argv[2], *map(int, sys.argv[3:7])
        print(json.dumps(graph_child(method, users, edges, seed, creators)), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    g = sub.add_parser("graph")
    g.add_argument("--users", type=int, default=1_000_000)
    g.add_argument("--edges", type=int, default=20_000_000)
    g.add_argument("--methods", nargs="+", default=["leiden", "metis"])
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--engagement", type=int, default=0, metavar="CREATORS",
                   help="cluster a user-creator engagement graph with this many creators "
                   "(cluster_bipartite) instead of a follow graph")
    a = sub.add_parser("analysis")
    a.add_argument("--units", type=int, default=10_000_000)
    a.add_argument("--clusters", type=int, default=100_000)
    a.add_argument("--repeat", type=int, default=3)
    a.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("validate")
    v.add_argument("--reps", type=int, default=4000)
    v.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    {"graph": run_graph, "analysis": run_analysis, "validate": run_validate}[args.what](args)


if __name__ == "__main__":
    main()
