"""tea-tasting side of benchmarks/experiment_analysis.py (runs in its own Python 3.12 env).

Reads a JSON job on stdin: the Parquet paths and metric specs. Builds the per-unit table as
a DuckDB relation (the same GROUP BY the floor runs) and lets tea-tasting compute its
aggregates on it lazily (through narwhals) and analyse. Prints timings and results as JSON.
"""

from __future__ import annotations

import json
import sys
import time

import duckdb
import tea_tasting as tt


def main() -> None:
    job = json.load(sys.stdin)
    con = duckdb.connect()
    if job.get("threads"):
        con.execute(f"SET threads = {int(job['threads'])}")
    if job.get("memory_limit"):
        con.execute(f"SET memory_limit = '{job['memory_limit']}'")
    t0 = time.perf_counter()
    aggs = ", ".join(f"{expr} AS {name}" for name, expr in job["unit_columns"].items())
    rel = con.sql(
        f"SELECT a.variant, a.pre_activity, "
        f"{', '.join(f'COALESCE(e.{n}, 0) AS {n}' for n in job['unit_columns'])} "
        f"FROM read_parquet('{job['assignments']}') a LEFT JOIN "
        f"(SELECT unit_id, {aggs} FROM read_parquet('{job['events']}') GROUP BY unit_id) e "
        f"USING (unit_id)")
    metrics = {}
    for name, spec in job["metrics"].items():
        if spec["kind"] == "ratio":
            metrics[name] = tt.RatioOfMeans(spec["numerator"], spec["denominator"],
                                            "pre_activity", None)
        else:
            metrics[name] = tt.Mean(spec["column"], "pre_activity")
    result = tt.Experiment(metrics, variant="variant").analyze(rel, control="control")
    elapsed = time.perf_counter() - t0
    rows = [{k: (float(v) if isinstance(v, int | float) else v) for k, v in r.items()}
            for r in result.to_dicts()]
    print(json.dumps({"seconds": elapsed, "results": rows, "version": tt.__version__}))


if __name__ == "__main__":
    main()
