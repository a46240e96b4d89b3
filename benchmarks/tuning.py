"""Tuning validation on ML-100K: the search with and without pruning, same seeds.

For each search space (examples/tune_als.toml, tune_bpr.toml, tune_lambdamart.toml) it
runs ``recscope.orchestration.tuning.tune`` twice with the same seed and settings, once
with the median pruner and once without, and reports: the best configuration, its test
NDCG@10 with a 95% interval against the untuned default (paired test), the trials pruned,
the epochs run in all (with and without the pruner) and the wall time. The test part
(20% of each user's items) is never seen by the search; validation is 20% of the rest.

Goals (issue 17): pruning saves >= 40% of the epochs, and the pruned search's best test
NDCG@10 lies within the 95% interval of the unpruned search's best.

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/tuning.py --trials 40 \
        --space als --space bpr --space lambdamart --out benchmarks/out/tuning
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPACES = {"als": "examples/tune_als.toml", "bpr": "examples/tune_bpr.toml",
          "lambdamart": "examples/tune_lambdamart.toml"}


def run_one(space_name: str, pruner: str, trials: int, out: Path, data: Any,
            seed: int) -> dict[str, Any]:
    """One search; returns the figures of the report."""
    from recscope.orchestration.space import load_space
    from recscope.orchestration.tuning import TuneSettings, tune

    space = load_space(ROOT / SPACES[space_name])
    t0 = time.perf_counter()
    res = tune(space, data, TuneSettings(trials=trials, pruner=pruner, seed=seed),  # type: ignore[arg-type]
               out / f"{space_name}-{pruner}", store=str(out / "store"), force=True,
               log=lambda m: print(f"  [{space_name}/{pruner}] {m}", flush=True))
    seconds = time.perf_counter() - t0
    eff = {e.extra["system"]: e for e in res.test}
    return {
        "space": space_name, "pruner": pruner, "trials": len(res.trials),
        "pruned": res.n_pruned, "epochs": res.total_epochs, "seconds": seconds,
        "best_params": res.best_params, "best_validation": res.best_value,
        "curves": res.info["curves"], "eval_every": res.info["eval_every"],
        "test_best": [eff["best"].estimate, eff["best"].ci_low, eff["best"].ci_high],
        "test_default": [eff["default"].estimate, eff["default"].ci_low,
                         eff["default"].ci_high],
        "diff": [eff["best - default"].estimate, eff["best - default"].ci_low,
                 eff["best - default"].ci_high, eff["best - default"].p_value],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--space", action="append", choices=sorted(SPACES))
    ap.add_argument("--pruner", action="append", choices=["median", "hyperband", "none"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "tuning"))
    args = ap.parse_args()
    from recscope.data.loaders import load

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load(args.data)
    rows = []
    results_file = out / "results.json"
    if results_file.exists():
        rows = json.loads(results_file.read_text())
    for name in args.space or sorted(SPACES):
        for pruner in args.pruner or ["median", "none"]:
            rows = [r for r in rows if not (r["space"] == name and r["pruner"] == pruner)]
            rows.append(run_one(name, pruner, args.trials, out, data, args.seed))
            results_file.write_text(json.dumps(rows, indent=2))
    print("\n| space | pruner | trials | pruned | epochs | wall s | best test NDCG@10 [95% CI] "
          "| default | best - default [CI], p |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, d, x = r["test_best"], r["test_default"], r["diff"]
        print(f"| {r['space']} | {r['pruner']} | {r['trials']} | {r['pruned']} | "
              f"{r['epochs']} | {r['seconds']:.0f} | {b[0]:.4f} [{b[1]:.4f}, {b[2]:.4f}] | "
              f"{d[0]:.4f} | {x[0]:+.4f} [{x[1]:+.4f}, {x[2]:+.4f}], p={x[3]:.2g} |")
    for name in {r["space"] for r in rows}:
        by = {r["pruner"]: r for r in rows if r["space"] == name}
        if "median" in by and "none" in by:
            saved = 1 - by["median"]["epochs"] / max(by["none"]["epochs"], 1)
            lo, hi = by["none"]["test_best"][1:]
            within = lo <= by["median"]["test_best"][0] <= hi
            print(f"{name}: pruning saved {saved:.0%} of epochs (goal >= 40%); pruned best "
                  f"{by['median']['test_best'][0]:.4f} within unpruned best's interval "
                  f"[{lo:.4f}, {hi:.4f}]: {within}")


if __name__ == "__main__":
    main()
