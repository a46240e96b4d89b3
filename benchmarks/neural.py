"""Neural components: accuracy with intervals, and CPU training throughput.

Sections (run one or all; every figure in docs/benchmarks.md "Neural models" comes from
here, with the command that produced it):

* ``lightgcn``: LightGCN on ML-100K, random 75/25 split per user (seed 0), top-10 with
  training items removed (the Microsoft Recommenders protocol; reference NDCG@10 0.420).
* ``sasrec``: SASRec against popularity and ItemKNN on ML-100K, leave-last-one-out,
  full ranking over the catalogue with training items removed; HitRate@10 and NDCG@10.
* ``objectives``: SASRec trained next-item vs. all-action (PinnerFormer-style, 7 days) on
  ML-100K with a per-user temporal cut at 80% of each history; scored on the next item
  and on every item in the 7 days after the cut.
* ``cold``: two-tower with and without item text on the built-in world (clicks and
  saves): a random 20% of items is held out entirely (cold-start items, never in
  training); each user's clicks and saves on them are ranked among all held-out items.

Training throughput (training interactions per second) and median seconds per epoch come
from each fit's learning curve. Intervals: 95% bootstrap over users (recscope.offline).

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/neural.py [SECTION ...]
        [--out benchmarks/out/neural.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RECSCOPE_DATA", ROOT.parent / "shared" / "data"))
SECTIONS = ("lightgcn", "sasrec", "objectives", "cold")
#: benchmark settings (each overridable with --lightgcn/--sasrec/--two-tower JSON)
LIGHTGCN: dict[str, Any] = {"lr": 0.01, "epochs": 150, "eval_every": 5, "patience": 4,
                            "progress": False}
SASREC: dict[str, Any] = {"max_len": 200, "n_negatives": 0, "lr": 2e-3, "epochs": 120,
                          "eval_every": 5, "patience": 4, "progress": False}
OBJECTIVES: dict[str, Any] = {"max_len": 100, "lr": 2e-3, "epochs": 100, "eval_every": 5,
                              "patience": 3, "progress": False}
TWO_TOWER: dict[str, Any] = {"epochs": 30, "progress": False}


def _ml100k() -> Any:
    from recscope.data.loaders import load_movielens

    return load_movielens(DATA / "ml-100k")


def _truth(part: Any) -> Any:
    from recscope.data import Relevance

    return Relevance.from_pairs(part.user_index, part.item_index, part.n_users, part.n_items)


def _evaluate(model: Any, users: np.ndarray, truth: Any, metrics: list[str], k: int = 10,
              exclude: Any = "train") -> Any:
    from recscope.offline import evaluate

    rankings = model.recommend(users, k, exclude=exclude)
    return evaluate(rankings, truth, metrics)


def _row(name: str, res: Any, metrics: list[str], model: Any = None) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name}
    for m in metrics:
        lo, hi = res.ci(m)
        row[m] = {"mean": res.mean(m), "ci": [lo, hi]}
    hist = getattr(model, "history", None)
    if hist is not None:
        row["best_epoch"] = hist.best_epoch
        row["epochs_run"] = len(hist.epochs)
        row["seconds_per_epoch"] = hist.seconds_per_epoch()
        row["interactions_per_s"] = hist.throughput()
        row["device"] = hist.device
    return row


def _print(title: str, rows: list[dict[str, Any]], metrics: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    t.add_column("model")
    for m in metrics:
        t.add_column(m, justify="right")
    t.add_column("s/epoch", justify="right")
    t.add_column("interactions/s", justify="right")
    for r in rows:
        cells = [f"{r[m]['mean']:.4f} [{r[m]['ci'][0]:.4f}, {r[m]['ci'][1]:.4f}]"
                 for m in metrics]
        sp = f"{r['seconds_per_epoch']:.2f}" if "seconds_per_epoch" in r else "–"
        th = f"{r['interactions_per_s']:,.0f}" if "interactions_per_s" in r else "–"
        t.add_row(r["model"], *cells, sp, th)
    Console().print(t)


# ---------------------------------------------------------------------------- sections
def lightgcn(args: argparse.Namespace) -> dict[str, Any]:
    from recscope.data import random_holdout
    from recscope.models.neural import LightGCN

    data = _ml100k()
    split = random_holdout(data, 0.25)
    metrics = ["ndcg@10", "precision@10", "recall@10", "map@10"]
    model = LightGCN(**args.lightgcn).fit(split.train)
    res = _evaluate(model, np.unique(split.test.user_index), _truth(split.test), metrics)
    rows = [_row("lightgcn", res, metrics, model)]
    _print("LightGCN, ML-100K random 75/25 per user (reference NDCG@10 0.420)", rows, metrics)
    return {"config": model.config.model_dump(mode="json"), "rows": rows,
            "curve": model.history.to_dict() if model.history else None}


def sasrec(args: argparse.Namespace) -> dict[str, Any]:
    from recscope.data import leave_last_n
    from recscope.models import get_component
    from recscope.models.neural import SASRec

    data = _ml100k()
    split = leave_last_n(data, 1)
    users = np.unique(split.test.user_index)
    truth = _truth(split.test)
    metrics = ["hit_rate@10", "ndcg@10"]
    rows = []
    for name, params in (("popularity", {}), ("itemknn", {})):
        m = get_component(name)(params).fit(split.train)
        rows.append(_row(name, _evaluate(m, users, truth, metrics), metrics))
    model = SASRec(**args.sasrec).fit(split.train)
    neg = model.cfg.n_negatives
    label = "full softmax" if neg == 0 else f"sampled softmax, {neg} negatives"
    rows.append(_row(f"sasrec ({label})", _evaluate(model, users, truth, metrics), metrics,
                     model))
    _print("ML-100K leave-last-one-out, full ranking, training items removed", rows, metrics)
    return {"config": model.config.model_dump(mode="json"), "rows": rows}


def _temporal_user_cut(data: Any, fraction: float, horizon_days: float
                       ) -> tuple[Any, Any, Any]:
    """Per user: train = the first ``fraction`` of the history; next = the first item
    after the cut; window = every item in the ``horizon_days`` after the cut."""
    seqs = data.sequences()
    ui = data.user_index
    order = np.lexsort((np.arange(len(data)), data.timestamps, ui))
    rank = np.empty(len(data), dtype=np.int64)
    counts = np.bincount(ui, minlength=data.n_users)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank[order] = np.arange(len(data)) - np.repeat(starts, counts)
    cut = np.floor(counts * fraction).astype(np.int64)
    cut_ts = np.array([seqs.timestamps[seqs.indptr[u] + cut[u]] if counts[u] > cut[u] >= 1
                       else np.iinfo(np.int64).max for u in range(data.n_users)])
    r, ts = rank, data.timestamps
    in_train = (r < cut[ui]) & (cut[ui] >= 1)
    horizon = int(horizon_days * 86_400 * 1_000_000)
    after = (r >= cut[ui]) & (cut[ui] >= 1)
    nxt = after & (r == cut[ui])
    window = after & (ts <= cut_ts[ui] + horizon)
    return data.select(in_train), data.select(nxt), data.select(window)


def objectives(args: argparse.Namespace) -> dict[str, Any]:
    from recscope.models.neural import SASRec

    data = _ml100k()
    horizon = 7.0
    train, nxt, window = _temporal_user_cut(data, 0.8, horizon)
    users = np.unique(nxt.user_index)
    metrics = ["hit_rate@10", "ndcg@10", "recall@10"]
    rows, out = [], {}
    for objective in ("next_item", "all_action"):
        model = SASRec(**{**args.objectives, "objective": objective,
                          "horizon_days": horizon}).fit(train)
        r_next = _row(f"sasrec {objective}: next item", _evaluate(
            model, users, _truth(nxt), metrics), metrics, model)
        r_win = _row(f"sasrec {objective}: {horizon:g}-day window", _evaluate(
            model, users, _truth(window), metrics), metrics, model)
        rows += [r_next, r_win]
        out[objective] = {"next": r_next, "window": r_win}
    _print(f"SASRec objectives, ML-100K, per-user temporal cut at 80%, {horizon:g}-day "
           "window", rows, metrics)
    return {"rows": rows, "by_objective": out,
            "window_items_per_user": float(len(window) / max(1, len(users)))}


def cold(args: argparse.Namespace) -> dict[str, Any]:
    from recscope.data import RankedLists, Relevance
    from recscope.models.neural import TwoTower
    from recscope.offline import evaluate
    from recscope.sim.config import WorldConfig
    from recscope.sim.world import World

    cfg = WorldConfig().scaled(args.world_scale)
    t0 = time.perf_counter()
    world = World.generate(cfg)
    gen_s = time.perf_counter() - t0
    data = world.interactions.filter(events=["click", "save"])
    rng = np.random.default_rng(0)
    active = np.unique(data.item_index)
    cold_items = np.sort(rng.choice(active, round(0.2 * len(active)), replace=False))
    is_cold = np.isin(data.item_index, cold_items)
    train, test = data.select(~is_cold), data.select(is_cold)
    has_history = np.bincount(train.user_index, minlength=data.n_users) > 0
    users = np.unique(test.user_index)
    users = users[has_history[users]].astype(np.int32)
    truth = Relevance.from_pairs(test.user_index, test.item_index, data.n_users, data.n_items)
    metrics = ["recall@10", "ndcg@10", "hit_rate@10"]
    rows = []
    cand = np.broadcast_to(cold_items, (len(users), len(cold_items)))
    for name, text in (("two_tower (ids only)", False), ("two_tower + text", True)):
        model = TwoTower(**{**args.two_tower, "text": text}).fit(train)
        s = model.score(users, cand)
        # ids only cannot tell cold items apart (all -inf): random tie-breaking, i.e. chance
        s = np.where(np.isfinite(s), s, -1e9) + rng.random(s.shape) * 1e-6
        top = np.argsort(-s, axis=1)[:, :10]
        rl = RankedLists(users, cold_items[top], np.take_along_axis(s, top, axis=1))
        row = _row(name, evaluate(rl, truth, metrics, missing="skip"), metrics, model)
        if text:
            from recscope.models.neural import TextEncoder

            row["text_encoder"] = TextEncoder(model.cfg.text_encoder, cache_dir=None
                                              ).description
        rows.append(row)
    _print(f"two-tower on cold-start items, built-in world x{args.world_scale:g} "
           f"({len(cold_items)} held-out items, {len(users)} users)", rows, metrics)
    return {"rows": rows, "world_scale": args.world_scale, "n_cold_items": len(cold_items),
            "n_users": len(users), "n_train": len(train), "n_test": len(test),
            "world_seconds": gen_s}


def _cell(r: dict[str, Any], m: str) -> str:
    return f"{r[m]['mean']:.4f} [{r[m]['ci'][0]:.4f}, {r[m]['ci'][1]:.4f}]"


def markdown(results: dict[str, Any]) -> str:
    """Tables of the saved results, for docs/benchmarks.md."""
    out: list[str] = []
    for section, metrics in (("lightgcn", ["ndcg@10", "precision@10", "recall@10", "map@10"]),
                             ("sasrec", ["hit_rate@10", "ndcg@10"]),
                             ("cold", ["recall@10", "ndcg@10", "hit_rate@10"]),
                             ("objectives", ["hit_rate@10", "ndcg@10", "recall@10"])):
        if section not in results:
            continue
        res = results[section]
        out.append(f"### {section}\n")
        out.append("| model | " + " | ".join(metrics) + " | best epoch / run | s per epoch "
                   "(median) | training interactions/s (median) |")
        out.append("|---" * (len(metrics) + 4) + "|")
        for r in res["rows"]:
            extra = (f"{r['best_epoch']} / {r['epochs_run']} | {r['seconds_per_epoch']:.2f} | "
                     f"{r['interactions_per_s']:,.0f}" if "seconds_per_epoch" in r
                     else "– | – | –")
            out.append(f"| {r['model']} | " + " | ".join(_cell(r, m) for m in metrics)
                       + f" | {extra} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "neural.json"))
    p.add_argument("--lightgcn", type=json.loads, default={},
                   help="LightGCN params (JSON), over the benchmark's defaults")
    p.add_argument("--sasrec", type=json.loads, default={})
    p.add_argument("--objectives", type=json.loads, default={},
                   help="SASRec params for the objectives comparison")
    p.add_argument("--two-tower", dest="two_tower", type=json.loads, default={})
    p.add_argument("--world-scale", type=float, default=1.0)
    p.add_argument("--markdown", action="store_true",
                   help="print the saved results as Markdown tables and exit")
    args = p.parse_args(argv)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return
    args.lightgcn = {**LIGHTGCN, **args.lightgcn}
    args.sasrec = {**SASREC, **args.sasrec}
    args.objectives = {**OBJECTIVES, **args.objectives}
    args.two_tower = {**TWO_TOWER, **args.two_tower}
    import torch

    out_path = Path(args.out)
    results: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch": torch.__version__, "cuda": torch.cuda.is_available(),
                          "threads": torch.get_num_threads()}
    for section in args.sections or SECTIONS:
        t0 = time.perf_counter()
        results[section] = globals()[section](args)
        results[section]["wall_s"] = time.perf_counter() - t0
        results[section]["command"] = " ".join(["benchmarks/neural.py", *sys.argv[1:]])
        from recscope.io import write_json

        write_json(out_path, results)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
