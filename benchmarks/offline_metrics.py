"""Offline ranking metrics: recscope against ranx (cold and warm) and pytrec_eval.

Every system gets the same generated rankings (top-100 per user, distinct scores) and
truth (20 relevant items per user, about 6 of them in the list) and computes the
aggregates NDCG@10, Recall@10, MRR, MAP@100 and HitRate@10, end to end from the NumPy
arrays: building the peer's input dictionaries is part of its time, as it is for a user.
Each measurement runs in a fresh process, so memory is its own and "cold" means cold:

* time: wall clock of the call, from arrays to the five means;
* extra memory: peak RSS during the call minus RSS just before (sampled every 2 ms),
  compared with the size of the input arrays.

``ranx warm`` runs a small evaluation first, so its numba functions are compiled before
timing; ``recscope`` is always measured after a small warm-up as well, and ``recscope
cold`` is the fresh-process time including compilation (or the on-disk numba cache).

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/offline_metrics.py \\
        [--sizes 10000,100000,1000000] [--peers-up-to 100000] [--skip-ranx]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import threading
import time
from typing import Any

import numpy as np

K = 100
N_REL = 20
N_ITEMS = 50021  # prime: item j of user u is (a_u * j + b_u) mod N_ITEMS, distinct in j
METRICS = {"recscope": ["ndcg@10", "recall@10", "mrr", "map@100", "hit_rate@10"],
           "ranx": ["ndcg@10", "recall@10", "mrr", "map@100", "hit_rate@10"],
           "pytrec_eval": ["ndcg_cut_10", "recall_10", "recip_rank", "map_cut_100",
                           "success_10"]}


def generate(n_users: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rankings (items, scores [n, 100]) and truth CSR (indptr, indices) as arrays."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, N_ITEMS, n_users, dtype=np.int64)
    b = rng.integers(0, N_ITEMS, n_users, dtype=np.int64)
    j = np.arange(K, dtype=np.int64)
    items = ((a[:, None] * j[None, :] + b[:, None]) % N_ITEMS).astype(np.int32)
    scores = np.broadcast_to(np.arange(K, 0, -1, dtype=np.float32), (n_users, K)).copy()
    # relevant: h_u in-list positions (distinct: stride coprime with 100) + the rest outside
    h = rng.binomial(N_REL, 0.3, n_users)
    c = rng.integers(0, K, n_users)
    strides = np.array([1, 3, 7, 9, 11, 13, 17, 19, 21, 23, 27, 29, 31, 33, 37, 39])
    s = strides[rng.integers(0, len(strides), n_users)]
    t = np.arange(N_REL)
    pos_in = (c[:, None] + t[None, :] * s[:, None]) % K
    pos_out = K + (c[:, None] + t[None, :] * 7) % (3 * K)
    pos = np.where(t[None, :] < h[:, None], pos_in, pos_out)
    rel = ((a[:, None] * pos + b[:, None]) % N_ITEMS).astype(np.int32)
    rel.sort(axis=1)
    indptr = np.arange(0, (n_users + 1) * N_REL, N_REL, dtype=np.int64)
    return {"items": items, "scores": scores, "indptr": indptr, "indices": rel.ravel()}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples RSS in a thread; ``extra`` is the peak minus RSS at start."""

    def __enter__(self) -> PeakRSS:
        self.start = _rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def extra(self) -> int:
        return self.peak - self.start


def run_recscope(d: dict[str, np.ndarray], bootstrap: int = 0) -> dict[str, float]:
    from recscope.data import RankedLists, Relevance
    from recscope.offline import evaluate

    n = len(d["items"])
    res = evaluate(RankedLists(np.arange(n, dtype=np.int32), d["items"], d["scores"]),
                   Relevance(d["indptr"], d["indices"], n_items=N_ITEMS),
                   METRICS["recscope"], bootstrap=bootstrap)
    return dict(zip(METRICS["recscope"], (res.mean(m) for m in METRICS["recscope"]),
                    strict=True))


def _dicts(d: dict[str, np.ndarray], qrels_value: type) -> tuple[dict, dict]:
    items, scores, indptr, indices = d["items"], d["scores"], d["indptr"], d["indices"]
    qrels = {}
    run = {}
    for u in range(len(items)):
        q = f"q{u}"
        qrels[q] = {str(i): qrels_value(1) for i in indices[indptr[u]:indptr[u + 1]].tolist()}
        run[q] = dict(zip(map(str, items[u].tolist()), scores[u].tolist(), strict=True))
    return qrels, run


def run_ranx(d: dict[str, np.ndarray]) -> dict[str, float]:
    import ranx

    qrels, run = _dicts(d, int)
    out = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), METRICS["ranx"])
    return {m: float(out[m]) for m in METRICS["ranx"]}


def run_pytrec(d: dict[str, np.ndarray]) -> dict[str, float]:
    import pytrec_eval

    qrels, run = _dicts(d, int)
    ev = pytrec_eval.RelevanceEvaluator(qrels, set(METRICS["pytrec_eval"]))
    per = ev.evaluate(run)
    return {m: float(np.mean([v[m] for v in per.values()])) for m in METRICS["pytrec_eval"]}


def _case(system: str, n_users: int, queue: Any) -> None:
    """One measurement in a fresh process; puts a dict on ``queue``."""
    data = generate(n_users)
    input_bytes = sum(v.nbytes for v in data.values())
    if system in ("recscope", "recscope+bootstrap", "ranx warm"):
        small = generate(200, seed=1)
        (run_ranx if system == "ranx warm" else run_recscope)(small)
    fn = {"recscope": run_recscope, "recscope cold": run_recscope,
          "recscope+bootstrap": lambda x: run_recscope(x, bootstrap=1000),
          "ranx warm": run_ranx, "ranx cold": run_ranx, "pytrec_eval": run_pytrec}[system]
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        means = fn(data)
        seconds = time.perf_counter() - t0
    queue.put({"system": system, "n_users": n_users, "seconds": seconds,
               "extra_bytes": mem.extra, "input_bytes": input_bytes,
               "means": list(means.values())})


def measure(system: str, n_users: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_case, args=(system, n_users, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--peers-up-to", type=int, default=100_000,
                    help="largest size given to ranx/pytrec_eval (they do not fit 1M in 24 GB)")
    ap.add_argument("--skip-ranx", action="store_true")
    ap.add_argument("--json", default=None, help="write all measurements here")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GB, "
          f"python {platform.python_version()}")
    rows: list[dict[str, Any]] = []
    for n in [int(x) for x in args.sizes.split(",")]:
        systems = ["recscope cold", "recscope", "recscope+bootstrap"]
        if n <= args.peers_up_to:
            systems += ["pytrec_eval"] + ([] if args.skip_ranx else ["ranx warm", "ranx cold"])
        by: dict[str, dict[str, Any]] = {}
        for s in systems:
            r = measure(s, n)
            by[s] = r
            rows.append(r)
            print(f"{n:>9,} users  {s:<20} {r['seconds']:9.3f} s  "
                  f"{n / r['seconds']:>12,.0f} users/s  extra {r['extra_bytes'] / 2**20:8.0f} MiB"
                  f"  (input {r['input_bytes'] / 2**20:.0f} MiB)", flush=True)
        ref = by["recscope"]
        for s, r in by.items():
            if s.startswith("recscope"):
                continue
            agree = np.allclose(r["means"], ref["means"], atol=1e-9)
            print(f"{n:>9,} users  {s} / recscope: time x{r['seconds'] / ref['seconds']:.1f}, "
                  f"extra memory x{r['extra_bytes'] / max(ref['extra_bytes'], 1):.1f}; "
                  f"means agree to 1e-9: {agree}", flush=True)
        print(f"{n:>9,} users  recscope extra memory / input arrays: "
              f"{ref['extra_bytes'] / ref['input_bytes']:.2f}", flush=True)
    if args.json:
        from recscope.io import write_json

        write_json(args.json, rows)


if __name__ == "__main__":
    main()
