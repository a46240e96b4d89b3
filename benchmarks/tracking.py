"""Long-term holdout tracking: coverage against the simulator's truth, and speed.

Parts (run the heavy ones under ``flock /tmp/recscope-heavy.lock``; docs/long_run.md has the
figures):

``coverage``: repetitions of ``examples/long_run.toml`` (12 weeks, 10% holdout, four
launches on three surfaces) on a smaller world, each with its own simulator seed and
holdout salt; ``recscope.experiments.tracking.track`` on each run's files; whether the
always-valid interval of the cumulative effect covers the true cumulative effect (CRN
replays) per surface and metric, at week 12 and at every week at once, with the
fixed-horizon interval beside it. Results append one JSON line per repetition, so the
repetitions can be run in chunks (``--first``, ``--reps``)::

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/tracking.py coverage \\
        --reps 25 --first 0
    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/tracking.py coverage \\
        --reps 25 --first 25
    .venv/bin/python benchmarks/tracking.py summary

``draws``: one simulated population, its replays once, and the error estimate − truth
over many holdout salts (``bench-<k>``, as ``coverage`` names them), unadjusted and with
a numpy CUPED, per chunk of salts: how much of ``coverage``'s mean error is the luck of
its draws (the world is the same in every repetition)::

    nice -n 19 .venv/bin/python benchmarks/tracking.py draws --seed 1003 --salts 300

``spark``: the same tracking on DuckDB and on Spark (local mode) over one simulated run;
prints the Spark statements (the plan for 10M units / 1B events is the same SQL) and the
largest relative difference::

    .venv/bin/python benchmarks/tracking.py spark out/long-run

``perf``: synthetic events of ``--units`` units over 12 weeks and three surfaces
(written once by DuckDB), then, on DuckDB, the time of a bare per-unit GROUP BY over the
same events, of a GROUP BY at the tracking's grain (unit, surface, week), and of the
whole tracking (every series, every look); prints the ratios::

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/tracking.py perf \\
        --units 1000000 --events 30000000

``perf-cuped``: the bucket mode with CUPED (the synthetic events' first week as the
pre-period) against the bucket mode without it and a bare GROUP BY, and its standard
errors against the exact mode's CUPED::

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/tracking.py perf-cuped \\
        --units 1000000 --events 100000000
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).parent / "out"
COVERAGE = OUT / "tracking_coverage.jsonl"


def coverage(reps: int, first: int, scale: float, out: Path, *, experiment: bool = True,
             modes: int = 4) -> None:
    """Run repetitions ``first .. first + reps - 1`` and append their coverage lines
    (with the example's ``[[experiment]]`` running beside the holdout unless
    ``experiment`` is false; the first ``modes`` tracking modes)."""
    import tempfile

    from recscope.experiments.analysis import analyze
    from recscope.experiments.metrics import load_metrics
    from recscope.experiments.tracking import Design, track
    from recscope.sim.long_run import load_long_run, run_long_run

    base = load_long_run(Path(__file__).parent.parent / "examples" / "long_run.toml")
    if not experiment:
        base = base.model_copy(update={"experiment": []})
    out.parent.mkdir(parents=True, exist_ok=True)
    for rep in range(first, first + reps):
        t0 = time.perf_counter()
        spec = base.model_copy(update={
            "seed": 1000 + rep,
            "world": base.world.model_copy(update={"scale": scale}),
            "holdout": base.holdout.model_copy(update={"salt": f"bench-{rep}"})})
        with tempfile.TemporaryDirectory() as tmp:
            sim = run_long_run(spec, Path(tmp) / "sim")
            assert sim.truth is not None
            exp_rows = []
            # the A/B test inside the long run: experiment analyze on its folder as is,
            # against its CRN truth
            for x in sim.experiments:
                folder = Path(tmp) / "sim" / x["folder"]
                card = analyze(str(folder / "assignments.parquet"),
                               [str(folder / "events.parquet")],
                               load_metrics(folder / "metrics.toml"))
                true = {(t["metric"], t["variant"]): t["effect"] for t in x["true_effects"]}
                for e in card.results:
                    t = true[(e.metric, e.extra["variant"])]
                    exp_rows.append({"experiment": x["name"], "metric": e.metric,
                                     "variant": e.extra["variant"], "estimate": e.estimate,
                                     "se": e.se, "ci_low": e.ci_low, "ci_high": e.ci_high,
                                     "true": t, "covered": bool(e.ci_low <= t <= e.ci_high),
                                     "n": e.n})
            rows = []
            # plain, CUPED on the warm-up week, the warehouse mode (64 buckets) and the
            # warehouse mode with CUPED
            for mode, pre, buckets in (("plain", 0, 0), ("cuped", spec.warmup_days, 0),
                                       ("buckets", 0, 64),
                                       ("buckets_cuped", spec.warmup_days, 64))[:modes]:
                r = track(Path(tmp) / "sim" / "assignments.parquet",
                          Path(tmp) / "sim" / "events.parquet",
                          Design(spec.holdout.start_day, spec.days, launches=tuple(
                              spec.launches()), pre_days=pre, buckets=buckets),
                          truth=sim.truth.values)
                for x in r.values:
                    if "true_effect" not in x or not math.isfinite(x["estimate"]):
                        continue
                    t = x["true_effect"]
                    rows.append({k: x[k] for k in (
                        "series", "surface", "metric", "window", "look", "estimate", "se",
                        "ci_low", "ci_high", "n_holdout", "n_exposed")} | {
                        "mode": mode, "true": t, "covered": x["covered"],
                        "naive_covered": bool(x["naive_low"] <= t <= x["naive_high"])})
        line = {"rep": rep, "seed": spec.seed, "scale": scale, "n_units": sim.n_units,
                "experiment": bool(spec.experiment), "experiment_rows": exp_rows,
                "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"rep {rep}: {sim.n_units:,} units, {line['seconds']} s", flush=True)


def summary(path: Path) -> dict[str, Any]:
    """Coverage per surface and metric over the repetitions in ``path``."""
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    reps = sorted({x["rep"] for x in lines})
    out: dict[str, Any] = {"repetitions": len(reps), "scale": sorted({x["scale"]
                                                                      for x in lines})}
    table: dict[tuple[str, str, str], dict[str, list[Any]]] = {}

    def mode_of(r: dict[str, Any]) -> str:  # early lines had a "cuped" flag
        return r.get("mode") or ("cuped" if r.get("cuped") else "plain")

    modes = ("plain", "cuped", "buckets", "buckets_cuped")
    for line in lines:
        for cuped in modes:
            cum = [r for r in line["rows"] if r["series"] == "cumulative"
                   and mode_of(r) == cuped]
            if not cum:
                continue
            last = max(r["look"] for r in cum)
            for key in sorted({(r["surface"], r["metric"]) for r in cum}):
                mine = [r for r in cum if (r["surface"], r["metric"]) == key]
                d = table.setdefault((cuped, *key), {
                    "final": [], "final_naive": [], "all_weeks": [], "all_weeks_naive": [],
                    "window": [], "width": []})
                fin = next(r for r in mine if r["look"] == last)
                d["final"].append(fin["covered"])
                d["final_naive"].append(fin["naive_covered"])
                d["width"].append(fin["ci_high"] - fin["ci_low"])
                d["all_weeks"].append(all(r["covered"] for r in mine))
                d["all_weeks_naive"].append(all(r["naive_covered"] for r in mine))
                d["window"] += [r["covered"] for r in line["rows"] if r["series"] == "window"
                                and mode_of(r) == cuped
                                and (r["surface"], r["metric"]) == key]
    out["repetitions_per_mode"] = {c: sum(any(mode_of(r) == c for r in x["rows"])
                                          for x in lines) for c in modes}
    out["repetitions_with_experiment"] = sum(bool(x.get("experiment")) for x in lines)
    exp: dict[tuple[str, str], dict[str, list[float]]] = {}
    for line in lines:
        for r in line.get("experiment_rows", []):
            d = exp.setdefault((r["experiment"], r["metric"]), {
                "covered": [], "error": [], "true": [], "width": []})
            d["covered"].append(r["covered"])
            d["error"].append(r["estimate"] - r["true"])
            d["true"].append(r["true"])
            d["width"].append(r["ci_high"] - r["ci_low"])
    out["experiment"] = {f"{e}/{m}": {
        "reps": len(d["covered"]), "coverage": round(float(np.mean(d["covered"])), 3),
        "mean_true": float(f"{np.mean(d['true']):.4g}"),
        "mean_error": float(f"{np.mean(d['error']):.3g}"),
        "sd_error": float(f"{np.std(d['error'], ddof=1):.3g}") if len(d["error"]) > 1
        else None, "mean_width": float(f"{np.mean(d['width']):.4g}")}
        for (e, m), d in sorted(exp.items())}
    out["coverage"] = {f"{c}/{s}/{m}": {
        k: round(float(np.mean(v)), 3) for k, v in d.items()}
        for (c, s, m), d in sorted(table.items())}
    out["seconds_per_rep"] = round(float(np.mean([x["seconds"] for x in lines])), 1)
    return out


def make_events(path: Path, units: int, events: int, seed: int = 0) -> None:
    """Synthetic holdout data written by DuckDB: 10% held out, heavy-tailed activity,
    12 weeks, three surfaces, clicks and saves, exposed units +5% clicks after day 14."""
    import duckdb

    path.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute(f"SELECT setseed({(seed % 1000) / 1000})")

    # unit drawn with a heavy tail: floor(units * u^2) puts more events on low ids
    con.execute(f"""COPY (
        SELECT CAST(FLOOR({units} * POW(random(), 2)) AS BIGINT) AS unit_id,
               CAST(FLOOR(random() * 84) AS INTEGER) AS day,
               CASE WHEN random() < 0.6 THEN 'home_feed' WHEN random() < 0.6 THEN 'related'
                    ELSE 'search' END AS surface,
               CAST(random() < 0.12 AS INTEGER) AS clicks,
               CAST(random() < 0.03 AS INTEGER) AS saves
        FROM range({events})) TO '{path}/events.parquet' (FORMAT parquet,
        ROW_GROUP_SIZE 1000000)""")
    # the assignment table, with each unit's first day (first exposure) as platforms log it
    con.execute(f"""COPY (SELECT u.range AS unit_id, hash(u.range, 'h') % 10 = 0 AS holdout,
        f.first_day FROM range({units}) u JOIN (SELECT unit_id, MIN(day) AS first_day
        FROM read_parquet('{path}/events.parquet') GROUP BY unit_id) f ON f.unit_id = u.range)
        TO '{path}/assignments.parquet' (FORMAT parquet)""")


def perf(units: int, events: int, folder: Path, repeat: int) -> dict[str, Any]:
    """Time the bare GROUP BYs and the tracking on the same events (DuckDB, 2 threads)."""
    import duckdb

    from recscope.experiments.engines import DuckDBEngine
    from recscope.experiments.tracking import Design, track

    data = folder / f"u{units}_e{events}_v2"
    if not (data / "events.parquet").exists():
        t0 = time.perf_counter()
        make_events(data, units, events)
        print(f"wrote {events:,} events in {time.perf_counter() - t0:.0f} s", flush=True)
    ev = data / "events.parquet"
    design = Design(0, 84, launches=(
        {"name": "a", "day": 14, "surface": "home_feed"},
        {"name": "b", "day": 35, "surface": "search"},
        {"name": "c", "day": 56, "surface": "related"}))

    def bare(sql: str) -> float:
        con = duckdb.connect()
        con.execute("SET threads = 2")
        t0 = time.perf_counter()
        con.execute(f"CREATE TEMP TABLE t AS {sql}")
        return time.perf_counter() - t0

    res: dict[str, Any] = {"units": units, "events": events, "threads": 2}
    by_unit, by_grain, tracking, bucketed = [], [], [], []
    for _ in range(repeat):
        by_unit.append(bare(f"SELECT unit_id, SUM(clicks) AS c, SUM(saves) AS s FROM "
                            f"read_parquet('{ev}') GROUP BY unit_id"))
        by_grain.append(bare(f"SELECT unit_id, surface, CAST(FLOOR(day / 7.0) AS INT) AS w, "
                             f"SUM(clicks) AS c, SUM(saves) AS s FROM read_parquet('{ev}') "
                             "GROUP BY unit_id, surface, CAST(FLOOR(day / 7.0) AS INT)"))
        eng = DuckDBEngine(threads=2)
        t0 = time.perf_counter()
        r = track(data / "assignments.parquet", ev, design, engine=eng)
        tracking.append(time.perf_counter() - t0)
        eng = DuckDBEngine(threads=2)
        t0 = time.perf_counter()
        rb = track(data / "assignments.parquet", ev, dataclasses.replace(design, buckets=256),
                   engine=eng)
        bucketed.append(time.perf_counter() - t0)
    same = {(x["series"], x["surface"], x["metric"], x["window"], x["look"]): x
            for x in rb.values}
    se_ratio = [same[(x["series"], x["surface"], x["metric"], x["window"], x["look"])]["se"]
                / x["se"] for x in r.values if x["se"] > 0]
    res.update({"bare_group_by_unit_s": round(min(by_unit), 2),
                "bare_group_by_unit_surface_week_s": round(min(by_grain), 2),
                "tracking_s": round(min(tracking), 2),
                "ratio_vs_group_by_unit": round(min(tracking) / min(by_unit), 2),
                "ratio_vs_group_by_grain": round(min(tracking) / min(by_grain), 2),
                "tracking_buckets_256_s": round(min(bucketed), 2),
                "buckets_ratio_vs_group_by_unit": round(min(bucketed) / min(by_unit), 2),
                "buckets_se_over_exact_se": [round(float(np.min(se_ratio)), 3),
                                             round(float(np.mean(se_ratio)), 3),
                                             round(float(np.max(se_ratio)), 3)],
                "rows": len(r.values)})
    return res


def perf_cuped(units: int, events: int, folder: Path, repeat: int) -> dict[str, Any]:
    """CUPED in the bucket mode at scale: the synthetic events' first week (days 0-6) is
    the pre-period and days 7-83 are tracked; times of a bare per-unit GROUP BY, of the
    bucket mode without and with CUPED (B = 256), and the standard errors of the bucket
    CUPED against the exact mode's CUPED (run once)."""
    import duckdb

    from recscope.experiments.engines import DuckDBEngine
    from recscope.experiments.tracking import Design, track

    data = folder / f"u{units}_e{events}_v2"
    if not (data / "events.parquet").exists():
        t0 = time.perf_counter()
        make_events(data, units, events)
        print(f"wrote {events:,} events in {time.perf_counter() - t0:.0f} s", flush=True)
    ev, asg = data / "events.parquet", data / "assignments_from7.parquet"
    if not asg.exists():  # first_day = the first day in the tracked period (days 7-83)
        con = duckdb.connect()
        con.execute(f"""COPY (SELECT a.unit_id, a.holdout, f.first_day FROM
            read_parquet('{data}/assignments.parquet') a JOIN (SELECT unit_id, MIN(day) AS
            first_day FROM read_parquet('{ev}') WHERE day >= 7 GROUP BY unit_id) f
            ON f.unit_id = a.unit_id) TO '{asg}' (FORMAT parquet)""")
    design = Design(7, 84, launches=(
        {"name": "a", "day": 14, "surface": "home_feed"},
        {"name": "b", "day": 35, "surface": "search"},
        {"name": "c", "day": 56, "surface": "related"}), buckets=256)
    cuped = dataclasses.replace(design, pre_days=7)
    bare, plain, adjusted = [], [], []
    for _ in range(repeat):
        con = duckdb.connect()
        con.execute("SET threads = 2")
        t0 = time.perf_counter()
        con.execute(f"CREATE TEMP TABLE t AS SELECT unit_id, SUM(clicks) AS c, SUM(saves) AS s "
                    f"FROM read_parquet('{ev}') GROUP BY unit_id")
        bare.append(time.perf_counter() - t0)
        for d, times in ((design, plain), (cuped, adjusted)):
            t0 = time.perf_counter()
            r = track(asg, ev, d, engine=DuckDBEngine(threads=2))
            times.append(time.perf_counter() - t0)
            if d is design:
                rp = r
            else:
                rc = r
    t0 = time.perf_counter()
    exact = track(asg, ev, dataclasses.replace(cuped, buckets=0),
                  engine=DuckDBEngine(threads=2))
    t_exact = time.perf_counter() - t0

    def key(x: dict[str, Any]) -> tuple[Any, ...]:
        return x["series"], x["surface"], x["metric"], x["window"], x["look"]

    ex = {key(x): x for x in exact.values}
    pl = {key(x): x for x in rp.values}
    se_ratio = [x["se"] / ex[key(x)]["se"] for x in rc.values if ex[key(x)]["se"] > 0]
    gap = [abs(x["estimate"] - ex[key(x)]["estimate"]) / ex[key(x)]["se"] for x in rc.values
           if ex[key(x)]["se"] > 0]
    shrink = [x["se"] / pl[key(x)]["se"] for x in rc.values if pl[key(x)]["se"] > 0]
    return {"units": units, "events": events, "threads": 2, "buckets": 256, "pre_days": 7,
            "bare_group_by_unit_s": round(min(bare), 2),
            "buckets_s": round(min(plain), 2), "buckets_cuped_s": round(min(adjusted), 2),
            "buckets_ratio": round(min(plain) / min(bare), 2),
            "buckets_cuped_ratio": round(min(adjusted) / min(bare), 2),
            "exact_cuped_s": round(t_exact, 1),
            "se_buckets_cuped_over_exact_cuped": [round(float(f(se_ratio)), 3)
                                                  for f in (np.min, np.mean, np.max)],
            "estimate_gap_in_exact_se": [round(float(f(gap)), 3) for f in (np.mean, np.max)],
            "se_cuped_over_plain_buckets": [round(float(f(shrink)), 3)
                                            for f in (np.min, np.mean, np.max)],
            "rows": len(rc.values)}


def spark_check(folder: Path) -> dict[str, Any]:
    """The same tracking on DuckDB and Spark (local[2]) over one simulated run's files:
    largest relative difference of estimates and intervals, and the Spark SQL."""
    from recscope.experiments.engines import SparkEngine
    from recscope.experiments.tracking import Design, track

    plan = json.loads((folder / "launches.json").read_text())
    design = Design(plan["start_day"], plan["days"], launches=tuple(plan["launches"]))
    a, e = folder / "assignments.parquet", folder / "events.parquet"
    t0 = time.perf_counter()
    r1 = track(a, e, design)
    t1 = time.perf_counter()
    r2 = track(a, e, design, engine=SparkEngine())
    t2 = time.perf_counter()

    def key(x: dict[str, Any]) -> tuple[Any, ...]:
        return x["series"], x["surface"], x["metric"], x["window"], x["look"]

    other = {key(x): x for x in r2.values}
    worst, counts_equal = 0.0, True
    for x in r1.values:
        y = other[key(x)]
        counts_equal &= (x["n_holdout"], x["n_exposed"]) == (y["n_holdout"], y["n_exposed"])
        for f in ("estimate", "se", "ci_low", "ci_high"):
            worst = max(worst, abs(x[f] - y[f]) / max(1e-12, abs(x[f])))
    return {"rows": len(r1.values), "same_rows": len(r1.values) == len(r2.values),
            "counts_equal": counts_equal, "max_rel_diff": worst,
            "duckdb_s": round(t1 - t0, 1), "spark_s": round(t2 - t1, 1),
            "spark_sql": r2.sql}


def draws(seed: int, salts: int, scale: float, chunks: tuple[int, ...] = (0, 50, 75)
          ) -> dict[str, Any]:
    """Estimate − truth of the example (no ``[[experiment]]``) over many holdout draws
    of one simulated population: whether the realised run is the CRN replays unit by
    unit, then, per surface, the mean error of exposed − holdout over the salts
    ``bench-<k>`` (as ``coverage`` names them) in the ``chunks`` of k, unadjusted and with
    a pooled-θ CUPED on the warm-up week's clicks (numpy).

    The realised run of a draw equals the replays ("every launch" for its exposed, "no
    launch" for its held out), so every draw's error is computed from the two replays."""
    from recscope.sim import long_run as lr
    from recscope.sim.config import SURFACES
    from recscope.sim.environment import Environment
    from recscope.sim.policy_factory import PolicyFactory
    from recscope.sim.world_source import build_world, world_log

    base = lr.load_long_run(Path(__file__).parent.parent / "examples" / "long_run.toml")
    spec = base.model_copy(update={"experiment": [], "seed": seed,
                                   "world": base.world.model_copy(update={"scale": scale})})
    truth = build_world(spec.world)
    env = Environment(truth, spec.simulation, seed=spec.seed)
    factory = PolicyFactory(truth, seed=spec.seed, train_data=lambda: world_log(spec.world))
    policies = lr._Policies(factory, spec)
    n = truth.n_users
    ids = np.arange(n, dtype=np.int64)
    warm = env.run([policies.incumbent], days=spec.warmup_days, calibrate=True,
                   names=["incumbent"])
    pre = np.bincount(warm.columns["user"], warm.columns["clicks"].astype(float),
                      minlength=n)
    segments = lr.schedule(spec)

    def mask_of(k: int) -> np.ndarray:
        return lr.holdout_masks(spec.holdout.model_copy(update={"salt": f"bench-{k}"}), ids)

    per: dict[str, dict[str, np.ndarray]] = {}
    for name, m in (("all", np.zeros(n, np.int64)), ("none", np.full(n, lr._ALL, np.int64)),
                    ("real", mask_of(0))):
        cols = lr._columns(lr.simulate_masks(env, policies, segments, m, warm.state),
                           spec.warmup_days)
        keep = cols["day"] >= 0
        per[name] = {s: np.bincount(cols["user"][keep & (cols["surface"] == i)],
                                    cols["clicks"][keep & (cols["surface"] == i)], minlength=n)
                     for i, s in enumerate(SURFACES)}
        per[name]["visited"] = (np.bincount(cols["user"][keep], minlength=n) > 0).astype(float)
    held0 = mask_of(0) > 0
    same = {s: float(np.mean(np.where(held0, per["none"][s], per["all"][s])
                             == per["real"][s])) for s in SURFACES}
    errors: dict[str, list[tuple[float, float]]] = {s: [] for s in SURFACES}
    for k in range(salts):
        held = mask_of(k) > 0
        ex = ~held & (per["all"]["visited"] > 0)
        ho = held & (per["none"]["visited"] > 0)
        units = ex | ho
        x, t = pre[units], ex[units]
        for s in SURFACES:
            a, b = per["all"][s], per["none"][s]
            true = a[units].mean() - b[units].mean()
            y = np.where(held, b, a)[units]
            theta = np.cov(y, x)[0, 1] / x.var(ddof=1)
            yc = y - theta * (x - x.mean())
            errors[s].append((y[t].mean() - y[~t].mean() - true,
                              yc[t].mean() - yc[~t].mean() - true))
    out: dict[str, Any] = {"seed": seed, "scale": scale, "salts": salts,
                           "real_equals_replays": same, "surfaces": {}}
    bounds = [c for c in chunks if c < salts] + [salts]
    for s in SURFACES:
        e = np.array(errors[s])
        rows = []
        for lo, hi in itertools.pairwise(bounds):
            se = (e[lo:hi].std(axis=0, ddof=1) / np.sqrt(hi - lo) if hi - lo > 1
                  else np.full(2, np.nan))
            rows.append({"salts": f"{lo}-{hi - 1}",
                         "plain": round(float(e[lo:hi, 0].mean()), 3),
                         "plain_se": round(float(se[0]), 3),
                         "cuped": round(float(e[lo:hi, 1].mean()), 3),
                         "cuped_se": round(float(se[1]), 3)})
        out["surfaces"][s] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("coverage")
    c.add_argument("--reps", type=int, default=25)
    c.add_argument("--first", type=int, default=0)
    c.add_argument("--scale", type=float, default=0.25)
    c.add_argument("--out", type=Path, default=COVERAGE)
    c.add_argument("--no-experiment", action="store_true",
                   help="drop the example's [[experiment]] (the holdout alone)")
    c.add_argument("--modes", type=int, default=4, choices=range(1, 5),
                   help="tracking modes: plain, cuped, buckets, buckets_cuped (first N)")
    s = sub.add_parser("summary")
    s.add_argument("--out", type=Path, default=COVERAGE)
    p = sub.add_parser("perf")
    p.add_argument("--units", type=int, default=1_000_000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--data", type=Path, default=OUT / "tracking_data")
    q = sub.add_parser("perf-cuped")
    q.add_argument("--units", type=int, default=1_000_000)
    q.add_argument("--events", type=int, default=10_000_000)
    q.add_argument("--repeat", type=int, default=2)
    q.add_argument("--data", type=Path, default=OUT / "tracking_data")
    d = sub.add_parser("draws")
    d.add_argument("--seed", type=int, default=1003)
    d.add_argument("--salts", type=int, default=300)
    d.add_argument("--scale", type=float, default=0.25)
    k = sub.add_parser("spark")
    k.add_argument("folder", type=Path, help="a `recscope simulate` long-run folder")
    a = ap.parse_args()
    if a.cmd == "coverage":
        coverage(a.reps, a.first, a.scale, a.out, experiment=not a.no_experiment,
                 modes=a.modes)
    elif a.cmd == "summary":
        print(json.dumps(summary(a.out), indent=2))
    elif a.cmd == "spark":
        res = spark_check(a.folder)
        for stmt in res.pop("spark_sql"):
            print(stmt + ";\n")
        print(json.dumps(res, indent=2))
    elif a.cmd == "draws":
        print(json.dumps(draws(a.seed, a.salts, a.scale), indent=2))
    elif a.cmd == "perf-cuped":
        print(json.dumps(perf_cuped(a.units, a.events, a.data, a.repeat), indent=2))
    else:
        print(json.dumps(perf(a.units, a.events, a.data, a.repeat), indent=2))


if __name__ == "__main__":
    main()
