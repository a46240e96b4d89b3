"""Benchmarks of recscope.models: accuracy on ML-100K, fit time, recommend throughput,
and ANN recall against exact search.

    python benchmarks/models.py ml100k [--seed 2026] [--json out.json]
    python benchmarks/models.py world  [--users 20000 --items 10000 --impressions 1000000]
    python benchmarks/models.py ann    [--items 200000 --dim 64 --queries 2000]

``ml100k`` follows the Microsoft Recommenders protocol (random 75/25 split stratified
by user, top-10, items seen in training removed) and compares with its published
numbers (BPR/Cornac NDCG@10 0.442, P@10 0.388, R@10 0.213, MAP 0.133; SAR NDCG@10
0.383). Metrics, intervals (bootstrap over users) and paired tests come from
recscope.offline. Run heavy modes under ``flock /tmp/recscope-heavy.lock``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RECSCOPE_DATA", ROOT.parent / "shared" / "data"))
METRICS = ["ndcg@10", "precision@10", "recall@10", "map@10"]
PUBLISHED = {"bpr (Cornac, MS Recommenders)": {"ndcg@10": 0.442, "precision@10": 0.388,
                                               "recall@10": 0.213, "map@10": 0.133},
             "sar (MS Recommenders)": {"ndcg@10": 0.383}}


def _systems() -> dict[str, Any]:
    """name -> (factory) of every system measured on ML-100K."""
    from recscope.models import get_component
    from recscope.pipeline import Pipeline

    def comp(name: str, **params: Any) -> Any:
        return lambda: get_component(name)(params)

    return {
        "random": comp("random"),
        "popularity": comp("popularity"),
        "itemknn": comp("itemknn", neighbors=50, shrink=50.0),
        "ease": comp("ease", l2=500.0),
        "als": comp("als", factors=32, regularization=0.1, alpha=1.0),
        "bpr": comp("bpr"),
        "bpr (Cornac settings)": comp("bpr", factors=200, learning_rate=0.01,
                                      regularization=0.001, iterations=100),
        "bpr (implicit backend)": comp("bpr", backend="implicit"),
        "pipeline (examples/ml100k.toml)":
            lambda: Pipeline.from_toml(ROOT / "examples" / "ml100k.toml"),
        "pipeline (same union, RRF, no ranker)": lambda: Pipeline(
            {"retrievers": [r.model_dump() for r in
                            Pipeline.from_toml(ROOT / "examples" / "ml100k.toml")
                            .config.retrievers]}),
    }


def _throughput(model: Any, n_users: int, k: int = 100) -> float:
    users = np.arange(n_users, dtype=np.int32)
    model.recommend(users[:8], k)  # warm-up (lazy imports, compiled kernels)
    t0 = time.perf_counter()
    model.recommend(users, k)
    return n_users / (time.perf_counter() - t0)


def run_ml100k(seed: int, bootstrap: int, only: list[str] | None) -> dict[str, Any]:
    from recscope.data import Relevance, random_holdout
    from recscope.data.loaders import load
    from recscope.offline import evaluate
    from recscope.offline.compare import compare

    data = load(DATA / "ml-100k", "movielens")
    split = random_holdout(data, 0.25, seed=seed)
    truth = Relevance.from_csr(split.test.to_csr())
    users = np.flatnonzero(truth.counts() > 0).astype(np.int32)
    results: dict[str, Any] = {}
    evals = {}
    models = {}
    for name, factory in _systems().items():
        if only and not any(o in name for o in only):
            continue
        model = factory()
        t0 = time.perf_counter()
        model.fit(split.train)
        fit_s = time.perf_counter() - t0
        rl = model.recommend(users, 10)
        res = evaluate(rl, truth, METRICS, bootstrap=bootstrap, seed=0)
        evals[name] = res
        models[name] = model
        row = {"fit_seconds": fit_s, "users_per_second_top100":
               _throughput(model, split.train.n_users)}
        for m in METRICS:
            lo, hi = res.ci(m)
            row[m] = {"mean": res.mean(m), "ci_low": lo, "ci_high": hi}
        results[name] = row
        print(f"{name:34s} NDCG@10 {res.mean('ndcg@10'):.4f} [{row['ndcg@10']['ci_low']:.4f},"
              f" {row['ndcg@10']['ci_high']:.4f}]  P@10 {res.mean('precision@10'):.4f}  "
              f"R@10 {res.mean('recall@10'):.4f}  MAP@10 {res.mean('map@10'):.4f}  "
              f"fit {fit_s:.1f}s  {row['users_per_second_top100']:,.0f} users/s",
              flush=True)
    tests: dict[str, Any] = {}
    for base in ("bpr", "ease"):
        if base in evals and len(evals) > 1:
            cmp = compare({base: evals[base], **{k: v for k, v in evals.items() if k != base}},
                          baseline=base, test="t", adjustment="holm")
            tests[base] = {s: {t.metric: {"diff": t.diff, "ci_low": t.diff_ci_low,
                                          "ci_high": t.diff_ci_high,
                                          "p_adjusted": t.p_value_adjusted}
                               for t in ts} for s, ts in cmp.tests.items()}
    extra = {}
    pipe = next((m for n, m in models.items() if n.startswith("pipeline")), None)
    if pipe is not None and pipe.ranker is not None:
        extra["ranker_train_report"] = pipe.ranker.train_report
        extra["ranker_feature_gain"] = pipe.ranker.feature_importance()
        extra["versions"] = pipe.versions()
    return {"protocol": {"data": "ml-100k", "split": "random_holdout 0.25 per user",
                         "seed": seed, "k": 10, "users": len(users),
                         "bootstrap": bootstrap, "exclude": "train items"},
            "systems": results, "paired_tests": tests, "published": PUBLISHED, **extra}


def markdown_ml100k(out: dict[str, Any]) -> str:
    """The results table as Markdown (for docs/benchmarks.md)."""
    def fmt(row: dict[str, Any], m: str) -> str:
        v = row[m]
        return f"{v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"

    lines = ["| system | NDCG@10 [95% CI] | P@10 | R@10 | MAP@10 | ΔNDCG vs BPR (Holm p) "
             "| ΔNDCG vs EASE (Holm p) | fit s | users/s (top-100) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in out["systems"].items():
        cells = []
        for base in ("bpr", "ease"):
            t = out["paired_tests"].get(base, {}).get(name, {})
            t = next((v for k, v in t.items() if k.startswith("ndcg")), None)
            cells.append("—" if t is None else f"{t['diff']:+.3f} (p={t['p_adjusted']:.1g})")
        lines.append(f"| {name} | {fmt(row, 'ndcg@10')} | {fmt(row, 'precision@10')} | "
                     f"{fmt(row, 'recall@10')} | {fmt(row, 'map@10')} | {cells[0]} | "
                     f"{cells[1]} | {row['fit_seconds']:.1f} | "
                     f"{row['users_per_second_top100']:,.0f} |")
    for name, vals in out["published"].items():
        get = [f"{vals[m]:.3f}" if m in vals else "—" for m in METRICS]
        lines.append(f"| *published: {name}* | {get[0]} | {get[1]} | {get[2]} | {get[3]} "
                     "| | | | |")
    return "\n".join(lines)


def run_world(n_users: int, n_items: int, n_impressions: int) -> dict[str, Any]:
    from recscope.models import get_component
    from recscope.pipeline import Pipeline
    from recscope.sim.config import WorldConfig
    from recscope.sim.world import World

    t0 = time.perf_counter()
    world = World.generate(WorldConfig(n_users=n_users, n_items=n_items,
                                       n_impressions=n_impressions))
    gen_s = time.perf_counter() - t0
    train = world.interactions.filter(events=["click", "save"])
    systems = {
        "popularity": lambda: get_component("popularity")(),
        "itemknn": lambda: get_component("itemknn")(neighbors=100),
        "ease": lambda: get_component("ease")(l2=500.0),
        "als": lambda: get_component("als")(factors=64),
        "bpr": lambda: get_component("bpr")(factors=64, iterations=100),
        "ann (als, flat)": lambda: get_component("ann")(
            source={"component": "als", "params": {"factors": 64}}),
        "pipeline (examples/home_feed.toml)":
            lambda: Pipeline.from_toml(ROOT / "examples" / "home_feed.toml"),
    }
    rows = {}
    for name, factory in systems.items():
        model = factory()
        t0 = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - t0
        n = min(train.n_users, 2000)
        ups = _throughput(model, n)
        rows[name] = {"fit_seconds": fit_s, "users_per_second_top100": ups}
        print(f"{name:36s} fit {fit_s:6.1f}s  {ups:8,.0f} users/s (top-100)", flush=True)
    return {"world": {"n_users": n_users, "n_items": n_items, "n_impressions": n_impressions,
                      "train_rows": len(train), "generate_seconds": gen_s}, "systems": rows}


def run_ann(n_items: int, dim: int, n_queries: int, seed: int) -> dict[str, Any]:
    """Recall@100 and speed-up of IVF against exact inner-product search, on ALS
    embeddings of ML-100K and on a synthetic clustered catalogue."""
    import faiss

    from recscope.data.loaders import load
    from recscope.models import get_component

    out: dict[str, Any] = {}
    data = load(DATA / "ml-100k", "movielens")
    for index in ("flat", "ivf"):
        ann = get_component("ann")(source={"component": "als", "params": {"factors": 32}},
                                   index=index, nlist=32, nprobe=4, recall_k=100,
                                   recall_users=943).fit(data)
        out[f"ml-100k als32 {index}"] = ann.index_report
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((256, dim)).astype(np.float32)
    items = (centers[rng.integers(0, 256, n_items)]
             + 0.5 * rng.standard_normal((n_items, dim))).astype(np.float32)
    queries = (centers[rng.integers(0, 256, n_queries)]
               + 0.5 * rng.standard_normal((n_queries, dim))).astype(np.float32)
    exact = faiss.IndexFlatIP(dim)
    exact.add(items)
    t0 = time.perf_counter()
    _, truth = exact.search(queries, 100)
    exact_s = time.perf_counter() - t0
    nlist = int(4 * np.sqrt(n_items))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.train(items)
    ivf.add(items)
    for nprobe in (4, 16, 64):
        ivf.nprobe = nprobe
        t0 = time.perf_counter()
        _, got = ivf.search(queries, 100)
        s = time.perf_counter() - t0
        recall = np.mean([len(np.intersect1d(a, b)) / 100 for a, b in zip(got, truth,
                                                                       strict=True)])
        out[f"synthetic {n_items} x {dim} ivf{nlist} nprobe={nprobe}"] = {
            "recall_at_k": float(recall), "k": 100, "users": n_queries,
            "exact_seconds": exact_s, "index_seconds": s, "speedup": exact_s / s}
    for name, r in out.items():
        print(f"{name:45s} recall@100 {r['recall_at_k']:.3f}  speed-up x{r['speedup']:.1f} "
              f"(exact {r['exact_seconds'] * 1e3:.0f} ms, index {r['index_seconds'] * 1e3:.0f}"
              f" ms, {int(r['users'])} queries)", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["ml100k", "world", "ann"])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--only", nargs="*", help="ml100k: systems whose name contains these")
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=None)
    ap.add_argument("--impressions", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)
    print(f"machine: {os.uname().machine}, {os.cpu_count()} cores; python {sys.version.split()[0]}")
    if args.mode == "ml100k":
        out = run_ml100k(args.seed, args.bootstrap, args.only)
        md = markdown_ml100k(out)
        print(md)
        if args.markdown:
            args.markdown.write_text(md + "\n")
    elif args.mode == "world":
        out = run_world(args.users, args.items or 10_000, args.impressions)
    else:
        out = run_ann(args.items or 200_000, args.dim, args.queries, args.seed)
    if args.json:
        from recscope.io import write_json

        write_json(args.json, out)


if __name__ == "__main__":
    main()
