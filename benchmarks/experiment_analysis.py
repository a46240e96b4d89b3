"""Experiment analysis at scale: recscope on DuckDB vs a bare GROUP BY floor vs tea-tasting.

A generated experiment (default 10M units, 100M events, 10 metrics with CUPED) is written
to Parquet under benchmarks/out/ (git-ignored), then three pipelines run on the same files:

- floor: one DuckDB pass ``GROUP BY unit_id`` summing the event columns as DOUBLE (no join,
  no stats);
- recscope: ``analyze(...)`` on DuckDB: per-unit aggregation, join with the assignments
  (covariate), sufficient statistics, CUPED inference for 10 metrics;
- tea-tasting (in its own Python 3.12 env, benchmarks/setup_tea_env.sh): the same per-unit
  relation in DuckDB, aggregated and analysed by tea-tasting lazily through narwhals.

Prints seconds, the ratios, and the largest difference between recscope's and
tea-tasting's effects, intervals and p-values. Run it under the heavy-job lock:

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/experiment_analysis.py
    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/experiment_analysis.py \
        --units 1000000 --events-per-unit 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recscope.experiments.analysis import analyze
from recscope.experiments.assignment import Experiment, assign
from recscope.experiments.engines import DuckDBEngine
from recscope.experiments.metrics import parse_metrics

OUT = Path(__file__).resolve().parent / "out"
EVENT_COLUMNS = ("clicks", "views", "revenue", "dwell", "carts")
METRICS: dict[str, dict[str, str]] = {
    "clicks": {"kind": "mean", "column": "clicks"},
    "views": {"kind": "mean", "column": "views"},
    "revenue": {"kind": "mean", "column": "revenue"},
    "dwell": {"kind": "mean", "column": "dwell"},
    "carts": {"kind": "mean", "column": "carts"},
    "buyers": {"kind": "proportion", "column": "revenue"},
    "clickers": {"kind": "proportion", "column": "clicks"},
    "ctr": {"kind": "ratio", "numerator": "clicks", "denominator": "views"},
    "revenue_per_click": {"kind": "ratio", "numerator": "revenue", "denominator": "clicks"},
    "dwell_per_view": {"kind": "ratio", "numerator": "dwell", "denominator": "views"},
}


def generate(units: int, per_unit: int, folder: Path, seed: int = 0,
             chunk: int = 5_000_000) -> tuple[Path, Path]:
    """Assignments (unit_id, variant, pre_activity) and events, written chunk by chunk."""
    folder.mkdir(parents=True, exist_ok=True)
    a_path, e_path = folder / "assignments.parquet", folder / "events.parquet"
    if a_path.exists() and e_path.exists():
        return a_path, e_path
    rng = np.random.default_rng(seed)
    ids = np.arange(units, dtype=np.int64)
    variant = assign(ids, Experiment("bench", variants=("control", "treatment")))
    activity = rng.gamma(2.0, 1.0, units).astype(np.float32)
    pre = (activity * per_unit * (1 + 0.3 * rng.standard_normal(units))).astype(np.float32)
    pq.write_table(pa.table({"unit_id": ids, "variant": pa.array(variant.tolist()),
                             "pre_activity": pre}), a_path)
    treated = variant == "treatment"
    weights = activity / activity.sum()
    total = units * per_unit
    with pq.ParquetWriter(e_path, pa.schema([
            ("unit_id", pa.int64()), ("clicks", pa.int8()), ("views", pa.int8()),
            ("revenue", pa.float32()), ("dwell", pa.float32()), ("carts", pa.int8())])) as w:
        done = 0
        while done < total:
            k = min(chunk, total - done)
            who = rng.choice(units, size=k, p=weights)
            lift = np.where(treated[who], 1.02, 1.0)
            views = rng.integers(1, 4, k).astype(np.int8)
            clicks = (rng.random(k) < 0.1 * lift).astype(np.int8)
            carts = (clicks & (rng.random(k) < 0.3)).astype(np.int8)
            revenue = (carts * rng.exponential(20.0, k)).astype(np.float32)
            dwell = rng.exponential(30.0 * lift, k).astype(np.float32)
            w.write_table(pa.table({"unit_id": who.astype(np.int64), "clicks": clicks,
                                    "views": views, "revenue": revenue, "dwell": dwell,
                                    "carts": carts}), row_group_size=1_000_000)
            done += k
    return a_path, e_path


def floor(events: Path, threads: int | None, memory_limit: str | None) -> float:
    """One bare GROUP BY pass over the events (results consumed inside DuckDB).

    Sums are of DOUBLEs, DuckDB's fastest sum (integer sums go through 128-bit integers).
    """
    eng = DuckDBEngine(threads=threads, memory_limit=memory_limit)
    sums = ", ".join(f"SUM(CAST({c} AS DOUBLE)) AS {c}" for c in EVENT_COLUMNS)
    outer = ", ".join(f"SUM({c})" for c in EVENT_COLUMNS)
    t0 = time.perf_counter()
    eng.execute(f"SELECT COUNT(*), {outer} FROM (SELECT unit_id, {sums} "
                f"FROM read_parquet('{events}') GROUP BY unit_id)")
    return time.perf_counter() - t0


def recscope_run(assignments: Path, events: Path, threads: int | None,
                 memory_limit: str | None) -> tuple[float, list[dict]]:
    metrics = {name: {**spec, "covariates": ["pre_activity"], "test": "t"}
               for name, spec in METRICS.items()}
    cfg = parse_metrics({"unit": "unit_id", "variant": "variant", "control": "control",
                        "metrics": metrics})
    eng = DuckDBEngine(threads=threads, memory_limit=memory_limit)
    t0 = time.perf_counter()
    card = analyze(str(assignments), str(events), cfg, engine=eng)
    return time.perf_counter() - t0, card.results


def tea_run(python: Path, assignments: Path, events: Path, threads: int | None,
            memory_limit: str | None) -> dict | None:
    if not python.exists():
        print(f"tea-tasting skipped: {python} missing (run benchmarks/setup_tea_env.sh)")
        return None
    unit_cols = {}
    for c in EVENT_COLUMNS:
        unit_cols[c] = f"SUM(CAST({c} AS DOUBLE))"
    unit_cols["buyer"] = "MAX(CASE WHEN revenue > 0 THEN 1.0 ELSE 0.0 END)"
    unit_cols["clicker"] = "MAX(CASE WHEN clicks > 0 THEN 1.0 ELSE 0.0 END)"
    metrics = {}
    for name, spec in METRICS.items():
        if spec["kind"] == "proportion":
            metrics[name] = {"kind": "mean",
                             "column": "buyer" if spec["column"] == "revenue" else "clicker"}
        else:
            metrics[name] = spec
    job = {"assignments": str(assignments), "events": str(events), "threads": threads,
           "memory_limit": memory_limit, "unit_columns": unit_cols, "metrics": metrics}
    proc = subprocess.run([str(python), str(Path(__file__).with_name("_tea_worker.py"))],
                          input=json.dumps(job), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print("tea-tasting failed:", proc.stderr[-2000:])
        return None
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=10_000_000)
    ap.add_argument("--events-per-unit", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--memory-limit", default=None,
                    help="DuckDB memory_limit for all three (default: DuckDB's, 80%% of RAM)")
    ap.add_argument("--tea-python", type=Path, default=OUT / "tea-venv" / "bin" / "python")
    ap.add_argument("--repeat", type=int, default=1, help="runs per pipeline (best taken)")
    args = ap.parse_args()
    folder = OUT / f"experiment_{args.units}_{args.events_per_unit}"
    t0 = time.perf_counter()
    a_path, e_path = generate(args.units, args.events_per_unit, folder)
    print(f"data: {args.units:,} units, {args.units * args.events_per_unit:,} events "
          f"({time.perf_counter() - t0:.0f} s to prepare) in {folder}")
    floors, ours, teas = [], [], []
    results: list[dict] = []
    tea = None
    for _ in range(args.repeat):  # interleaved, so shared-machine load hits all alike
        floors.append(floor(e_path, args.threads, args.memory_limit))
        t, results = recscope_run(a_path, e_path, args.threads, args.memory_limit)
        ours.append(t)
        got = tea_run(args.tea_python, a_path, e_path, args.threads, args.memory_limit)
        if got is not None:
            teas.append(got["seconds"])
            tea = got
    t_floor, t_rs = min(floors), min(ours)
    print("seconds per run: floor " + ", ".join(f"{x:.1f}" for x in floors) + "; recscope "
          + ", ".join(f"{x:.1f}" for x in ours) + "; tea-tasting "
          + ", ".join(f"{x:.1f}" for x in teas) + " (best of each is used)")
    print(f"floor (bare GROUP BY)      {t_floor:8.1f} s")
    print(f"recscope analyze (DuckDB)  {t_rs:8.1f} s   {t_rs / t_floor:5.2f}x floor")
    if tea is not None:
        t_tea = min(teas)
        print(f"tea-tasting {tea['version']:<14} {t_tea:8.1f} s   {t_tea / t_floor:5.2f}x floor"
              f"   recscope is {t_tea / t_rs:4.2f}x faster")
        diff = {"effect": 0.0, "ci": 0.0, "p_value": 0.0, "rel_effect": 0.0}
        ours = {r["metric"]: r for r in results}
        for r in tea["results"]:
            o = ours[r["metric"]]
            diff["effect"] = max(diff["effect"], abs(o["estimate"] - r["effect_size"]))
            diff["ci"] = max(diff["ci"], abs(o["ci_low"] - r["effect_size_ci_lower"]),
                             abs(o["ci_high"] - r["effect_size_ci_upper"]))
            diff["p_value"] = max(diff["p_value"], abs(o["p_value"] - r["pvalue"]))
            diff["rel_effect"] = max(diff["rel_effect"],
                                     abs(o["rel_effect"] - r["rel_effect_size"]))
        print("largest |recscope - tea-tasting| over 10 metrics: " +
              ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
    for r in results:
        print(f"  {r['metric']:<18} effect {r['estimate']:+.5g}  p {r['p_value']:.3g}  "
              f"variance reduction {r['variance_reduction']:.1%}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
