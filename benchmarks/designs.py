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


def graph_child(method: str, users: int, edges: int, seed: int) -> dict[str, object]:
    from recscope.experiments.clusters import cluster_graph, cut_fraction

    t = time.perf_counter()
    src, dst, comm = community_graph(users, edges, seed)
    gen_s = time.perf_counter() - t
    rss_graph = _rss_mib()
    t = time.perf_counter()
    c = cluster_graph(users, src, dst, method=method,  # type: ignore[arg-type]
                      n_clusters=max(2, users // 100), seed=seed)
    secs = time.perf_counter() - t
    return {"method": method, "users": users, "edges": edges, "seconds": round(secs, 1),
            "generate_seconds": round(gen_s, 1), "peak_rss_mib": round(_rss_mib()),
            "graph_rss_mib": round(rss_graph), "cut_fraction": round(c.cut_fraction, 4),
            "planted_cut_fraction": round(cut_fraction(comm, src, dst), 4),
            "n_clusters": c.n_clusters, "size_median": float(np.median(c.sizes)),
            "size_max": int(c.sizes.max())}


def run_graph(args: argparse.Namespace) -> None:
    for method in args.methods:
        cmd = [sys.executable, __file__, "graph-child", method, str(args.users),
               str(args.edges), str(args.seed)]
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


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "graph-child":
        method, users, edges, seed = sys.argv[2], *map(int, sys.argv[3:6])
        print(json.dumps(graph_child(method, users, edges, seed)), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    g = sub.add_parser("graph")
    g.add_argument("--users", type=int, default=1_000_000)
    g.add_argument("--edges", type=int, default=20_000_000)
    g.add_argument("--methods", nargs="+", default=["leiden", "metis"])
    g.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("analysis")
    a.add_argument("--units", type=int, default=10_000_000)
    a.add_argument("--clusters", type=int, default=100_000)
    a.add_argument("--repeat", type=int, default=3)
    a.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    (run_graph if args.what == "graph" else run_analysis)(args)


if __name__ == "__main__":
    main()
