"""Offline evaluation past one process: in-process vs out-of-core stream vs Spark local.

Generates N users x top-K rankings and ~3 relevant items per user as Parquet (written in
row groups, never held whole), then runs each engine in its own subprocess and records
wall time, users/s per core and the subprocess's peak RSS (ru_maxrss of its process tree
as reported by the kernel). Results are appended to ``--out`` (JSON lines).

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/offline_spark.py \
        --users 200000 --k 100 --engines memory stream spark sql --cores 2

The 100M-user run uses the compact ``rank`` layout (shards in user order, int32 rank;
24.2 GiB instead of ~100 GB at 100M users), written by 2 processes:

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/offline_spark.py \
        --users 100000000 --k 100 --layout rank --gen-procs 2 --engines stream \
        --data /tmp/scale-100m

Engines: ``memory`` (read the files, then :func:`recscope.offline.evaluate`),
``stream`` (:func:`recscope.offline.scale.evaluate_stream`, DuckDB memory limit 2 GB;
its sorted-input path when the files are in user order, as generated here),
``stream-buckets`` (the same engine forced onto its hash-bucket path),
``spark`` (:func:`~recscope.offline.scale.evaluate_spark`: numba kernel per partition via
``mapInArrow``), ``sql`` (recall@10 alone as Spark SQL: a window rank, a join with the
truth, a group-by, to compare against the kernel inside Spark).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ["ndcg@10", "recall@10", "mrr", "map@100"]


def generate(folder: Path, n_users: int, k: int, n_items: int = 100_003, seed: int = 0,
             ) -> dict[str, str]:
    """rankings.parquet (n_users*k rows) and truth.parquet, written 50k users at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    r_path, t_path = folder / "rankings.parquet", folder / "truth.parquet"
    if r_path.exists() and t_path.exists():
        return {"rankings": str(r_path), "truth": str(t_path)}
    rng = np.random.default_rng(seed)
    step = 50_000
    rw = tw = None
    for u0 in range(0, n_users, step):
        n = min(step, n_users - u0)
        users = np.arange(u0, u0 + n, dtype=np.int64)
        base = rng.integers(0, n_items, n)
        j = np.arange(k)
        items = (base[:, None] + j[None, :] * 7919) % n_items
        score = np.broadcast_to(-j.astype(np.float64), (n, k)) + rng.random((n, k)) * 0.5
        rt = pa.table({"user_id": np.repeat(users, k), "item_id": items.ravel(),
                       "score": score.ravel()})
        # 3 distinct relevant items: list positions < k are hits, the rest are misses
        pos = np.cumsum(rng.integers(0, k, (n, 3)) + np.array([0, 1, 1]), axis=1)
        titems = (base[:, None] + pos * 7919) % n_items
        tt = pa.table({"user_id": np.repeat(users, 3), "item_id": titems.ravel()})
        if rw is None:
            rw = pq.ParquetWriter(r_path.with_suffix(".tmp"), rt.schema, compression="zstd")
            tw = pq.ParquetWriter(t_path.with_suffix(".tmp"), tt.schema, compression="zstd")
        rw.write_table(rt, row_group_size=1_000_000)
        tw.write_table(tt, row_group_size=1_000_000)
    assert rw is not None and tw is not None
    rw.close()
    tw.close()
    r_path.with_suffix(".tmp").rename(r_path)
    t_path.with_suffix(".tmp").rename(t_path)
    return {"rankings": str(r_path), "truth": str(t_path)}


def _shard(args: tuple[Path, int, int, int, int, int, int]) -> None:
    """One shard of the ``rank`` layout: users [u0, u1) in user order, 50k users per
    step, each step's draws from its own seed (so shards can be written in parallel)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder, shard, u0, u1, k, n_items, seed = args
    r_path = folder / "rankings" / f"part-{shard:05d}.parquet"
    t_path = folder / "truth" / f"part-{shard:05d}.parquet"
    if r_path.exists() and t_path.exists():
        return
    step = 50_000
    rank = pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), step))
    schema_r = pa.schema([("user_id", pa.int64()), ("item_id", pa.int32()),
                          ("rank", pa.int32())])
    schema_t = pa.schema([("user_id", pa.int64()), ("item_id", pa.int32())])
    tmp_r, tmp_t = r_path.with_suffix(".tmp"), t_path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp_r, schema_r, compression="zstd") as rw, \
            pq.ParquetWriter(tmp_t, schema_t, compression="zstd") as tw:
        for s0 in range(u0, u1, step):
            n = min(step, u1 - s0)
            rng = np.random.default_rng([seed, s0 // step])
            base = rng.integers(0, n_items, n)
            items = ((base[:, None] + np.arange(k) * 7919) % n_items).astype(np.int32)
            rw.write_table(pa.table([np.repeat(np.arange(s0, s0 + n, dtype=np.int64), k),
                                     items.ravel(), rank[: n * k]], schema=schema_r),
                           row_group_size=1_000_000)
            pos = np.cumsum(rng.integers(0, k, (n, 3)) + np.array([0, 1, 1]), axis=1)
            titems = ((base[:, None] + pos * 7919) % n_items).astype(np.int32)
            tw.write_table(pa.table([np.repeat(np.arange(s0, s0 + n, dtype=np.int64), 3),
                                     titems.ravel()], schema=schema_t),
                           row_group_size=1_000_000)
    tmp_r.rename(r_path)
    tmp_t.rename(t_path)


def generate_ranked(folder: Path, n_users: int, k: int, n_items: int = 100_003,
                    seed: int = 0, shard_users: int = 5_000_000, procs: int = 1,
                    ) -> dict[str, str]:
    """The compact layout for 100M users: ``rankings/`` and ``truth/`` folders of shards
    of ``shard_users`` users each, in user order (so the stream engine's sorted-input
    path applies); rankings as ``user_id`` int64, ``item_id`` int32 and ``rank`` int32
    (1..k, the same order as the ``score`` layout's descending scores) instead of a
    float64 score that no codec compresses: ~2.6 bytes per ranking row on disk."""

    for sub in ("rankings", "truth"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    shard_users = -(-shard_users // 50_000) * 50_000
    run_shards(_shard, [(folder, i, u0, min(u0 + shard_users, n_users), k, n_items, seed)
                        for i, u0 in enumerate(range(0, n_users, shard_users))], procs)
    return {"rankings": str(folder / "rankings"), "truth": str(folder / "truth")}


def run_shards(fn: Callable[[Any], None], jobs: list[Any], procs: int) -> None:
    """``fn(job)`` for every job: in ``procs`` spawned processes, or here when 1."""
    from multiprocessing import get_context

    if procs > 1:
        with get_context("spawn").Pool(procs) as pool:
            pool.map(fn, jobs, chunksize=1)
    else:
        for j in jobs:
            fn(j)


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Spark's JVM included)."""
    total, todo = 0, [pid]
    while todo:
        q = todo.pop()
        try:
            with open(f"/proc/{q}/statm") as fh:
                total += int(fh.read().split()[1]) * 4096
            for task in Path(f"/proc/{q}/task").iterdir():
                kids = (task / "children").read_text().split()
                todo += [int(k) for k in kids]
        except (OSError, ValueError):
            continue
    return total


def _run_sampled(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``cmd``, sampling its process tree's RSS every 0.2 s; returns the peak."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read()), peak


def _child(engine: str, files: dict[str, str], cores: int, boot: int) -> dict:
    """Run one engine in this (child) process; returns timings and the result means."""
    import os

    os.environ["NUMBA_NUM_THREADS"] = str(cores)
    import recscope.offline.inputs
    import recscope.offline.scale  # noqa: F401  (imports are not timed)

    t0 = time.perf_counter()
    out: dict = {}
    if engine == "memory":
        from recscope.offline import evaluate
        from recscope.offline.inputs import load_inputs

        data = load_inputs(files["truth"], {"a": files["rankings"]})
        t1 = time.perf_counter()
        res = evaluate(data.rankings["a"], data.truth, METRICS, bootstrap=boot)
        out["compute_s"] = time.perf_counter() - t1
        out["means"] = res.as_dict()
    elif engine in ("stream", "stream-buckets"):
        from recscope.offline.scale import evaluate_stream

        res = evaluate_stream({"a": files["rankings"]}, files["truth"], METRICS,
                              bootstrap=boot, threads=cores, memory_limit="2GB",
                              sorted_inputs=engine == "stream")
        out["means"] = res.as_dict()
        out["path"] = res.info["engine"]
    else:
        from pyspark.sql import SparkSession

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        spark = (SparkSession.builder.master(f"local[{cores}]")
                 .config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false")
                 .config("spark.driver.memory", "4g")
                 .config("spark.sql.shuffle.partitions", str(4 * cores)).getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        t_start = time.perf_counter()
        out["spark_start_s"] = t_start - t0
        if engine == "spark":
            from recscope.offline.scale import evaluate_spark

            res = evaluate_spark({"a": files["rankings"]}, files["truth"], METRICS,
                                 bootstrap=boot, session=spark, partitions=4 * cores)
            out["means"] = res.as_dict()
        else:
            spark.read.parquet(files["rankings"]).createOrReplaceTempView("r")
            spark.read.parquet(files["truth"]).createOrReplaceTempView("t")
            row = spark.sql("""
                WITH ranked AS (SELECT user_id, item_id, row_number() OVER (PARTITION BY
                       user_id ORDER BY score DESC, item_id) AS pos FROM r),
                     rel AS (SELECT user_id, count(*) AS n_rel FROM t GROUP BY user_id),
                     hits AS (SELECT r.user_id, count(*) AS h FROM ranked r JOIN t
                       ON r.user_id = t.user_id AND r.item_id = t.item_id WHERE r.pos <= 10
                       GROUP BY r.user_id)
                SELECT avg(coalesce(h, 0) / n_rel) AS recall FROM rel LEFT JOIN hits
                       ON rel.user_id = hits.user_id""").collect()[0]
            out["means"] = {"recall@10": float(row["recall"])}
        out["work_s"] = time.perf_counter() - t_start
        spark.stop()
    out["wall_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--engines", nargs="+", default=["memory", "stream", "spark", "sql"])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--data", type=Path, default=Path("benchmarks/out/offline-spark"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/offline_spark.jsonl"))
    ap.add_argument("--layout", choices=["score", "rank"], default="score",
                    help="score: one file, float64 scores (the 200k/1M/10M tables); rank: "
                         "shards in user order with an int32 rank (the 100M run)")
    ap.add_argument("--shard-users", type=int, default=5_000_000)
    ap.add_argument("--gen-procs", type=int, default=1, help="processes writing shards")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    folder = args.data / (f"u{args.users}_k{args.k}" +
                          ("_rank" if args.layout == "rank" else ""))
    if args.child:
        files = json.loads(args.child)
        print(json.dumps(_child(files.pop("engine"), files, args.cores, args.bootstrap)))
        return
    t0 = time.perf_counter()
    if args.layout == "rank":
        files = generate_ranked(folder, args.users, args.k, shard_users=args.shard_users,
                                procs=args.gen_procs)
    else:
        files = generate(folder, args.users, args.k)
    gen_s = time.perf_counter() - t0
    disk = sum(f.stat().st_size for f in folder.rglob("*.parquet"))
    print(f"data: {folder} ({gen_s:.1f} s, {disk / 2**30:.2f} GiB)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for engine in args.engines:
        p, peak = _run_sampled([sys.executable, __file__, "--users", str(args.users), "--k",
                                str(args.k), "--cores", str(args.cores), "--bootstrap",
                                str(args.bootstrap), "--data", str(args.data),
                                "--child", json.dumps({**files, "engine": engine})])
        if p.returncode:
            print(f"{engine}: failed\n{p.stderr[-2000:]}", flush=True)
            continue
        res = json.loads(p.stdout.strip().splitlines()[-1])
        work = res.get("work_s", res["wall_s"])
        row = {"engine": engine, "users": args.users, "k": args.k, "rows": args.users * args.k,
               "cores": args.cores, "bootstrap": args.bootstrap, "layout": args.layout,
               "data_gib": disk / 2**30, "generate_s": gen_s, **res,
               "users_per_s_per_core": args.users / work / args.cores,
               "peak_rss_mb": peak / 2**20}
        print(json.dumps(row), flush=True)
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
