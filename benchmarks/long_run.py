"""Validation of the long-run estimators against the simulator's long-run truth (issue 15).

Two steps, each under the heavy lock (``flock /tmp/recscope-heavy.lock``):

``simulate``: a history of simulated experiments (:mod:`recscope.sim.long_run_history`,
written where ``--out`` says), in chunks that stop after ``--budget`` seconds and resume
where they stopped (folders already written are kept; exit status 3 while incomplete)::

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/long_run.py simulate \
        --out benchmarks/out/long_run --budget 840      # repeat until "complete"

``evaluate``: fits the surrogate index on the history experiments and checks, on every
held-out experiment (changes of families the history never saw, with the truth from
common-random-number replays), the surrogate projection against the naive "two-week
effect = long-run effect" readout, interval coverage, the decision "long-run effect > 0",
the novelty projection of the settled CTR effect, and the engagement-reweighted early
readout; writes ``results.json`` beside the history and prints the figures::

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/long_run.py evaluate \
        --out benchmarks/out/long_run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def simulate(out: Path, budget: float, spec_args: dict[str, Any]) -> bool:
    """Simulate the experiments not yet written, until ``budget`` seconds; True when
    every experiment is there."""
    from recscope.sim.long_run_history import HistorySpec, simulate_history

    spec = HistorySpec(**spec_args)
    names = ([f"h{k:03d}" for k in range(spec.history)]
             + [f"x{k:03d}" for k in range(spec.held_out)])
    t0 = time.perf_counter()
    left = [n for n in names if not (out / n / "metrics.toml").exists()]
    todo = set(left)
    last = [t0]

    def stop() -> bool:
        now = time.perf_counter()
        per, last[0] = now - last[0], now
        return now - t0 + 1.5 * per > budget

    def prog(_stage: str, i: float, n: float) -> None:
        print(f"{i:.0f}/{n:.0f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    written = simulate_history(spec, out, force=True, only=todo.__contains__, stop=stop,
                               progress=prog)
    left = [n for n in left if n not in written]
    return not left


def _arm_means(ut: Any, variant: str) -> np.ndarray:
    return ut.x[ut.variants == variant].mean(axis=0)


def evaluate(out: Path, n_boot: int = 1000, held_out: bool = True) -> dict[str, Any]:
    """Fit on ``h*``, evaluate on ``x*`` (unless not ``held_out``); every figure with its
    repetitions."""
    import pyarrow.parquet as pq

    from recscope.experiments.engagement import engagement_readout
    from recscope.experiments.metrics import load_metrics
    from recscope.experiments.novelty import daily_effects, project_settled
    from recscope.experiments.surrogate import attach_outcome, fit_surrogate, unit_features
    from recscope.sim.long_run_history import LONG_OUTCOME

    cfg = load_metrics(out / "surrogates.toml")
    hist = sorted(p for p in out.iterdir() if p.name.startswith("h") and p.is_dir())
    held = sorted(p for p in out.iterdir() if p.name.startswith("x") and p.is_dir()
                  and held_out)
    hist = [p for p in hist if (p / "outcomes.parquet").exists()]
    t0 = time.perf_counter()
    tables = [attach_outcome(unit_features(str(d / "assignments.parquet"),
                                           str(d / "events.parquet"), cfg, name=d.name),
                             pq.read_table(d / "outcomes.parquet"), LONG_OUTCOME,
                             unit="unit_id", file=str(d / "outcomes.parquet"))
              for d in hist]
    model = fit_surrogate(tables, long=LONG_OUTCOME, metric="active_days")
    fit_s = time.perf_counter() - t0
    population = pq.read_table(out / "population.parquet")
    rows = []
    for d in held:
        info = json.loads((d / "truth.json").read_text())
        truth = info["truth"]["effects"][LONG_OUTCOME]
        ut = unit_features(str(d / "assignments.parquet"), str(d / "events.parquet"), cfg,
                           name=d.name)
        ad_c = _arm_means(ut, "control")[ut.features.index("active_days")]
        ad_t = _arm_means(ut, "treatment")[ut.features.index("active_days")]
        (e,) = model.project(ut, n_boot=n_boot, seed=0)
        # naive: the two-week relative lift in active days lasts (applied to the
        # history's long-run control level; no truth is used)
        naive = (ad_t - ad_c) / ad_c * model.long_control_mean
        sd_long = math.sqrt(model_long_var(tables))
        n_t = int((ut.variants == "treatment").sum())
        n_c = int((ut.variants == "control").sum())
        mde = 2.8 * sd_long * math.sqrt(1 / n_t + 1 / n_c)
        nres = project_settled(daily_effects(str(d / "assignments.parquet"),
                                             str(d / "events.parquet"), days=14), seed=0)
        nov = {"settled": nres.settled.estimate, "ci_low": nres.settled.ci_low,
               "ci_high": nres.settled.ci_high, "trend_p_value": nres.trend_p_value,
               "first_days": nres.first_days, "tau": nres.tau}
        eng = engagement_readout(str(d / "assignments.parquet"), str(d / "events.parquet"),
                                 population, stratum="pre_sessions", days=3, window=7)
        full = engagement_readout(str(d / "assignments.parquet"),
                                  str(d / "events.parquet"), population,
                                  stratum="pre_sessions", days=7, window=7)
        rows.append({
            "name": d.name, "change": info["change"], "truth": truth,
            "estimate": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high,
            "naive": naive, "unit_level": e.extra["unit_level"], "mde": mde, "covered": bool(e.ci_low <= truth <= e.ci_high),
            "abs_error": abs(e.estimate - truth), "naive_abs_error": abs(naive - truth),
            "novelty": info["change"]["novelty"],
            "ctr_settled_truth": info["truth"]["effects"]["ctr_settled"],
            "ctr_short_truth": info["truth"]["effects"]["ctr_short"],
            "novelty_projection": {k: nov[k] for k in ("settled", "ci_low", "ci_high",
                                                      "trend_p_value", "first_days")},
            "engagement": {
                "early_3d": eng.readouts[0].estimate, "early_3d_se": eng.readouts[0].se,
                "reweighted_3d": eng.readouts[1].estimate,
                "reweighted_3d_se": eng.readouts[1].se,
                "cohort_7d": full.readouts[0].estimate, "cohort_7d_se": full.readouts[0].se},
        })
    out = summarise(model, rows, fit_s, len(hist)) if rows else {}
    out["history_loo"] = history_loo(model, tables)
    return out


def history_loo(model: Any, tables: list[Any]) -> dict[str, Any]:
    """Leave-one-experiment-out on the history itself: the experiment-level map and the
    unit-level index against each held-out history experiment's *observed* long-run effect
    (noisy: its sampling sd is reported beside)."""
    from recscope.experiments.surrogate import _gram, _solve

    grams = [_gram(t.x, t.y) for t in tables]
    total = np.sum(grams, axis=0)
    exp_err, unit_err, naive_err, noise = [], [], [], []
    i_ad = model.features.index("active_days")
    for k, (t, e) in enumerate(zip(tables, model.experiments, strict=True)):
        b = _solve(total - grams[k])[1:]
        dx = np.asarray(e["dx"])
        treated = t.variants == "treatment"
        ad_c = t.x[~treated, i_ad].mean()
        naive = dx[i_ad] / ad_c * model.long_control_mean
        exp_err.append(abs(e["observed"] - e["projected"]))
        unit_err.append(abs(e["observed"] - float(b @ dx)))
        naive_err.append(abs(e["observed"] - naive))
        noise.append(math.sqrt(max(e["error_var"], 0.0)))
    return {"experiments": len(tables),
            "experiment_level_mae": float(np.mean(exp_err)),
            "unit_level_mae": float(np.mean(unit_err)),
            "naive_mae": float(np.mean(naive_err)),
            "error_sampling_sd": float(np.mean(noise)),
            "note": "errors against the observed (noisy) long-run effect; sampling noise "
                    "alone gives the experiment-level map a mean absolute error of about "
                    "0.8 x error_sampling_sd"}


def model_long_var(tables: list[Any]) -> float:
    """Per-unit variance of the long-run outcome over the history (for the MDE)."""
    return float(np.var(np.concatenate([t.y for t in tables]), ddof=1))


def summarise(model: Any, rows: list[dict[str, Any]], fit_s: float, n_hist: int
              ) -> dict[str, Any]:
    err = np.array([r["abs_error"] for r in rows])
    nerr = np.array([r["naive_abs_error"] for r in rows])
    cov = np.array([r["covered"] for r in rows])
    big = [r for r in rows if abs(r["truth"]) >= r["mde"]]
    agree = [(r["estimate"] > 0) == (r["truth"] > 0) for r in big]
    agree_all = [(r["estimate"] > 0) == (r["truth"] > 0) for r in rows]
    nov = [r for r in rows if r["novelty"]]
    nov_cov = [r["novelty_projection"]["ci_low"] <= r["ctr_settled_truth"]
               <= r["novelty_projection"]["ci_high"] for r in nov]
    first_cov = [r["novelty_projection"]["ci_low"] <= r["ctr_settled_truth"]
                 <= r["novelty_projection"]["ci_high"] for r in rows if not r["novelty"]]
    eng = [r["engagement"] for r in rows]
    early_gap = [abs(g["early_3d"] - g["cohort_7d"]) for g in eng]
    rw_gap = [abs(g["reweighted_3d"] - g["cohort_7d"]) for g in eng]
    families: dict[str, dict[str, float]] = {}
    for fam in sorted({r["change"]["family"] for r in rows}):
        sel = [r for r in rows if r["change"]["family"] == fam]
        families[fam] = {"n": len(sel),
                         "surrogate_mae": float(np.mean([r["abs_error"] for r in sel])),
                         "naive_mae": float(np.mean([r["naive_abs_error"] for r in sel])),
                         "covered": int(sum(r["covered"] for r in sel))}
    return {
        "history_experiments": n_hist,
        "by_family": families,
        "engagement": {"n": len(eng), "mean_abs_gap_early_vs_7d_cohort": float(
            np.mean(early_gap)), "mean_abs_gap_reweighted_vs_7d_cohort": float(
            np.mean(rw_gap)), "reweighted_closer": int(sum(
                a < b for a, b in zip(rw_gap, early_gap, strict=True)))}, "held_out": len(rows), "fit_seconds": round(fit_s, 1),
        "model": {"r2": model.r2, "surrogacy_sd": math.sqrt(model.tau2),
                  "features": model.features, "coef": model.coef},
        "surrogate_mean_abs_error": float(err.mean()),
        "naive_mean_abs_error": float(nerr.mean()),
        "unit_level_mean_abs_error": float(np.mean([abs(r["unit_level"] - r["truth"])
                                                    for r in rows])),
        "error_ratio": float(err.mean() / nerr.mean()),
        "coverage": float(cov.mean()), "covered": int(cov.sum()),
        "decision_n": len(big), "decision_agree": int(sum(agree)),
        "decision_rate": float(np.mean(agree)) if agree else float("nan"),
        "decision_rate_all": float(np.mean(agree_all)),
        "novelty_runs": len(nov), "novelty_covered": int(sum(nov_cov)),
        "novelty_rate": float(np.mean(nov_cov)) if nov_cov else float("nan"),
        "no_novelty_runs_covered": f"{sum(first_cov)}/{len(first_cov)}",
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["simulate", "evaluate", "history"],
                    help="history: only the leave-one-out figures on the history")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/long_run")
    ap.add_argument("--budget", type=float, default=840.0)
    ap.add_argument("--history", type=int, default=60)
    ap.add_argument("--held-out", type=int, default=40)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--n-boot", type=int, default=1000)
    a = ap.parse_args(argv)
    if a.step == "simulate":
        done = simulate(a.out, a.budget, {"history": a.history, "held_out": a.held_out,
                                          "scale": a.scale})
        print("complete" if done else "partial: run again to continue")
        return 0 if done else 3
    res = evaluate(a.out, a.n_boot, held_out=a.step == "evaluate")
    name = "results.json" if a.step == "evaluate" else "history_loo.json"
    (a.out / name).write_text(json.dumps(res, indent=2, default=float) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
