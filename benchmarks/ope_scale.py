"""Off-policy estimates out of core: the stream engine on a scored log of N rounds.

Generates a scored log (``round_id``, ``reward``, ``pscore``, ``pi``, ``q_hat``,
``v_hat``) from :class:`recscope.ope.synthetic.SyntheticBandit` (10 actions, softmax
logging and evaluation policies, reward model ``q̂ = clip(0.8 q + 0.05)``) as zstd
Parquet shards written 1M rounds at a time (each million from its own seed, so shards
can be written in parallel and the in-memory path can rebuild the same rounds), then
runs each engine in its own subprocess and records wall time, rounds/s per core, CPU
seconds and the peak RSS of the subprocess's tree (sampled every 0.2 s). Results are
appended to ``--out`` (JSON lines); with both engines, the parent checks that their
estimates agree to 1e-9.

    nice .venv/bin/python benchmarks/ope_scale.py --rounds 1000000 \
        --engines memory stream
    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/ope_scale.py \
        --rounds 100000000 --engines stream --gen-procs 2

(100M rounds: 392 s on 2 cores, 2.3 GiB peak. ``--data`` defaults to
``benchmarks/out/ope-scale`` (git-ignored); delete it afterwards: ~32 bytes per round.)

Engines: ``stream`` (:func:`recscope.ope.scale.ope_stream`, the function behind
``recscope ope --engine stream``: ``pyarrow.dataset`` batches of <= 1M rows, Poisson
bootstrap keyed by ``round_id``) and ``memory`` (the in-memory estimators,
:meth:`recscope.ope.estimators.Estimator.run` on the whole log with its policy and
reward model in memory, multinomial bootstrap; the log is rebuilt in memory from the
same seeds, timed apart as ``load_s``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from offline_spark import _run_sampled, run_shards  # benchmarks/offline_spark.py

ESTIMATORS = ["ips", "snips", "dr", "sndr"]
STEP = 1_000_000  # rounds drawn (and written as one row group) at a time


def _draw(step: int, n: int, seed: int) -> tuple[Any, Any, np.ndarray]:
    """Rounds [step*STEP, step*STEP + n): logged feedback, evaluation policy, q̂ [n, A]."""
    from recscope.ope.synthetic import SyntheticBandit

    env = SyntheticBandit(n_actions=10, dim=5, seed=seed)
    fb, q = env.log(n, np.random.default_rng([seed, step]))
    return fb, env.target(fb), np.clip(q * 0.8 + 0.05, 0.0, 1.0)


def _shard(args: tuple[Path, int, int, int, int]) -> None:
    """One Parquet shard of the scored log: rounds [r0, r1), written STEP at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recscope.ope.estimators import Inputs

    folder, shard, r0, r1, seed = args
    path = folder / f"part-{shard:05d}.parquet"
    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    schema = pa.schema([(c, pa.int64() if c == "round_id" else pa.float64())
                        for c in ("round_id", "reward", "pscore", "pi", "q_hat", "v_hat")])
    with pq.ParquetWriter(tmp, schema, compression="zstd") as w:
        for s0 in range(r0, r1, STEP):
            n = min(STEP, r1 - s0)
            fb, dist, q_hat = _draw(s0 // STEP, n, seed)
            inp = Inputs(fb, dist, q_hat)
            w.write_table(pa.table([np.arange(s0, s0 + n, dtype=np.int64), fb.reward,
                                    fb.pscore, inp.pi, inp.q_logged, inp.v], schema=schema),
                          row_group_size=STEP)
    tmp.rename(path)


def generate(folder: Path, n_rounds: int, seed: int = 0, shard_rounds: int = 10_000_000,
             procs: int = 1) -> str:
    """The scored log as shards of ``shard_rounds`` rounds (a multiple of 1M)."""

    folder.mkdir(parents=True, exist_ok=True)
    shard_rounds = -(-shard_rounds // STEP) * STEP
    run_shards(_shard, [(folder, i, r0, min(r0 + shard_rounds, n_rounds), seed)
                        for i, r0 in enumerate(range(0, n_rounds, shard_rounds))], procs)
    return str(folder)


def _child(engine: str, data: str, n_rounds: int, seed: int, cores: int, boot: int,
           ) -> dict[str, Any]:
    """Run one engine in this (child) process; returns timings and the estimates."""
    import os
    import resource

    os.environ["NUMBA_NUM_THREADS"] = str(cores)
    import recscope.ope.estimators
    import recscope.ope.scale  # noqa: F401  (imports are not timed)

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    if engine == "stream":
        from recscope.ope.scale import ope_stream

        res = ope_stream(data, ESTIMATORS, policy_column="pi", bootstrap=boot, seed=0)
        rows = res.estimates
    else:
        from recscope.ope.action_dists import ActionDist
        from recscope.ope.estimators import Inputs, make_estimator
        from recscope.ope.feedback import LoggedFeedback

        parts = [_draw(s, min(STEP, n_rounds - s * STEP), seed)
                 for s in range(-(-n_rounds // STEP))]
        fbs = [p[0] for p in parts]
        fb = LoggedFeedback(
            context=np.concatenate([f.context for f in fbs]),
            action=np.concatenate([f.action for f in fbs]),
            position=np.concatenate([f.position for f in fbs]),
            reward=np.concatenate([f.reward for f in fbs]),
            pscore=np.concatenate([f.pscore for f in fbs]), n_actions=fbs[0].n_actions,
            len_list=1, item_ids=fbs[0].item_ids, source="synthetic")
        dist = ActionDist.per_round(np.concatenate([p[1].probs for p in parts]))
        inp = Inputs(fb, dist, np.concatenate([p[2] for p in parts]))
        del parts, fbs
        out["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = [make_estimator(e).run(inp, n_bootstrap=boot, seed=0) for e in ESTIMATORS]
    out["wall_s"] = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = ru.ru_utime + ru.ru_stime
    out["estimates"] = {r["estimator"]: {"estimate": r.estimate, "se": r.se,
                                         "ci_low": r.ci_low, "ci_high": r.ci_high,
                                         "ess": r["diagnostics"]["ess"]} for r in rows}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1_000_000)
    ap.add_argument("--engines", nargs="+", choices=["memory", "stream"],
                    default=["memory", "stream"])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=500, help="the CLI's default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=Path("benchmarks/out/ope-scale"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/ope_scale.jsonl"))
    ap.add_argument("--shard-rounds", type=int, default=10_000_000)
    ap.add_argument("--gen-procs", type=int, default=1, help="processes writing shards")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    folder = args.data / f"r{args.rounds}_s{args.seed}"
    if args.child:
        print(json.dumps(_child(args.child, str(folder), args.rounds, args.seed, args.cores,
                                args.bootstrap)))
        return
    t0 = time.perf_counter()
    generate(folder, args.rounds, args.seed, args.shard_rounds, args.gen_procs)
    gen_s = time.perf_counter() - t0
    disk = sum(f.stat().st_size for f in folder.glob("*.parquet"))
    print(f"data: {folder} ({gen_s:.1f} s, {disk / 2**30:.2f} GiB)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    for engine in args.engines:
        p, peak = _run_sampled([sys.executable, __file__, "--rounds", str(args.rounds),
                                "--cores", str(args.cores), "--bootstrap",
                                str(args.bootstrap), "--seed", str(args.seed), "--data",
                                str(args.data), "--child", engine])
        if p.returncode:
            print(f"{engine}: failed\n{p.stderr[-2000:]}", flush=True)
            continue
        res = json.loads(p.stdout.strip().splitlines()[-1])
        done[engine] = res
        row = {"engine": engine, "rounds": args.rounds, "cores": args.cores,
               "bootstrap": args.bootstrap, "estimators": ESTIMATORS, "data_gib": disk / 2**30,
               "generate_s": gen_s, **res,
               "rounds_per_s_per_core": args.rounds / res["wall_s"] / args.cores,
               "peak_rss_mb": peak / 2**20}
        if engine == "stream" and "memory" in done:
            mem = done["memory"]
            diff = max(abs(res["estimates"][e]["estimate"] - mem["estimates"][e]["estimate"])
                       for e in res["estimates"])
            row["parity_max_abs_diff"] = diff
            row["parity_ok"] = diff <= 1e-9
            row["se_ratio_stream_over_memory"] = {
                e: res["estimates"][e]["se"] / mem["estimates"][e]["se"]
                for e in res["estimates"]}
            row["wall_ratio_stream_over_memory"] = res["wall_s"] / mem["wall_s"]
        print(json.dumps(row), flush=True)
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
