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

``evaluate --protocol cv``: grouped, family-stratified 10-fold cross-validation over all
the experiments pooled (kinds the history has seen; ``results_cv.json``);
``--protocol new-kind-stats``: the new-kind split on the same experiment-level
statistics; ``--widen``: a surrogacy error growing with the change's Mahalanobis
distance from the training experiments (fitted on their leave-one-out errors).
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


def simulate(out: Path, budget: float, spec_args: dict[str, Any],
             shard: tuple[int, int] = (0, 1)) -> bool:
    """Simulate the experiments not yet written, until ``budget`` seconds; True when
    every experiment is there. ``shard = (i, n)``: only every n-th missing experiment
    from the i-th (n processes share one hold of the lock, one core each)."""
    from recscope.sim.long_run_history import HistorySpec, simulate_history

    spec = HistorySpec(**spec_args)
    names = ([f"h{k:03d}" for k in range(spec.history)]
             + [f"x{k:03d}" for k in range(spec.held_out)])
    t0 = time.perf_counter()
    left = [n for n in names if not (out / n / "metrics.toml").exists()]
    todo = set(left[shard[0]::shard[1]])
    last = [t0]

    def stop() -> bool:
        now = time.perf_counter()
        per, last[0] = now - last[0], now
        return now - t0 + 1.5 * per > budget

    def prog(_stage: str, i: float, n: float) -> None:
        print(f"{i:.0f}/{n:.0f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    written = simulate_history(spec, out, force=True, only=todo.__contains__, stop=stop,
                               progress=prog)
    left = [n for n in left if n not in written and n in todo]
    return not left


def _arm_means(ut: Any, variant: str) -> np.ndarray:
    """Per-surrogate means over the units of ``variant`` in a unit table."""
    return ut.x[ut.variants == variant].mean(axis=0)


def evaluate(out: Path, n_boot: int = 1000, held_out: bool = True, cuped: bool = True
             ) -> dict[str, Any]:
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
    model = fit_surrogate(tables, long=LONG_OUTCOME, metric="active_days", cuped=cuped)
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
    """The issue's figures over the new-kind ``rows`` of :func:`evaluate` (surrogate vs
    naive error, coverage, decisions, novelty, engagement, by family), with counts."""
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


# ------------------------------------------------------------------ novelty
def novelty_evaluate(out: Path, n_boot: int = 500, max_sessions: int = 30
                     ) -> dict[str, Any]:
    """The settled CTR effect projected by day and by session since first exposure on
    every held-out experiment ``x*`` (14 days read), against the truth of its CRN
    replays (the CTR effect over the experiment's units in the last 14 of 84 days);
    coverage reported separately for runs with and without novelty, as fitted and with
    the interval scaled by a factor calibrated on the other runs (leave one run out)."""
    from recscope.experiments.novelty import daily_effects, interval_scale, project_settled

    t0 = time.perf_counter()
    rows = []
    for d in sorted(p for p in out.iterdir() if p.is_dir() and p.name.startswith("x")
                    and (p / "truth.json").exists()):
        info = json.loads((d / "truth.json").read_text())
        a, e = str(d / "assignments.parquet"), str(d / "events.parquet")
        truth = info["truth"]["effects"]["ctr_settled"]
        row: dict[str, Any] = {"name": d.name, "family": info["change"]["family"],
                               "novelty": info["change"]["novelty"], "truth": truth,
                               "ctr_short_truth": info["truth"]["effects"]["ctr_short"]}
        for by in ("day", "session"):
            daily = daily_effects(a, e, days=14, by=by, max_sessions=max_sessions)
            res = project_settled(daily, n_boot=n_boot, seed=0)
            st = res.settled
            two_week = float(np.average([x.estimate for x in daily],
                                        weights=[1 / x.se ** 2 for x in daily]))
            row[by] = {"settled": st.estimate, "ci_low": st.ci_low, "ci_high": st.ci_high,
                       "covered": bool(st.ci_low <= truth <= st.ci_high),
                       "abs_error": abs(st.estimate - truth), "shape": st.extra["shape"],
                       "tau": res.tau, "amplitude": res.amplitude,
                       "trend_p_value": res.trend_p_value, "points": len(daily),
                       "pooled": two_week, "pooled_abs_error": abs(two_week - truth),
                       "width": st.ci_high - st.ci_low}
        rows.append(row)
    summary: dict[str, Any] = {"experiments": len(rows), "n_boot": n_boot,
                               "max_sessions": max_sessions}
    for by in ("day", "session"):
        for tag, sel in (("novelty_on", [r for r in rows if r["novelty"]]),
                         ("novelty_off", [r for r in rows if not r["novelty"]])):
            if not sel:
                continue
            summary[f"{by}_{tag}"] = {
                "runs": len(sel), "covered": int(sum(r[by]["covered"] for r in sel)),
                "coverage": float(np.mean([r[by]["covered"] for r in sel])),
                "settled_mae": float(np.mean([r[by]["abs_error"] for r in sel])),
                "pooled_mae": float(np.mean([r[by]["pooled_abs_error"] for r in sel])),
                "mean_width": float(np.mean([r[by]["width"] for r in sel])),
                "trend_flagged": int(sum(r[by]["trend_p_value"] < 0.05 for r in sel))}
    # calibrated: each run's interval scaled by the factor learnt (split-conformal,
    # recscope.experiments.novelty.interval_scale) from the *other* runs' errors only
    for by in ("day", "session"):
        cov = []
        for i, r in enumerate(rows):
            others = [x for j, x in enumerate(rows) if j != i]
            f = interval_scale([x[by]["settled"] for x in others],
                               [x[by]["ci_low"] for x in others],
                               [x[by]["ci_high"] for x in others],
                               [x["truth"] for x in others])
            s = r[by]["settled"]
            lo = s - f * (s - r[by]["ci_low"])
            hi = s + f * (r[by]["ci_high"] - s)
            r[by]["calibrated"] = {"scale": f, "ci_low": lo, "ci_high": hi,
                                   "covered": bool(lo <= r["truth"] <= hi)}
            cov.append(r)
        for tag, nov in (("novelty_on", True), ("novelty_off", False)):
            sel = [r for r in cov if r["novelty"] == nov]
            if sel:
                summary[f"{by}_{tag}"]["calibrated"] = {
                    "covered": int(sum(r[by]["calibrated"]["covered"] for r in sel)),
                    "median_scale": float(np.median([r[by]["calibrated"]["scale"]
                                                     for r in sel])),
                    "mean_width": float(np.mean([r[by]["calibrated"]["ci_high"]
                                                 - r[by]["calibrated"]["ci_low"]
                                                 for r in sel]))}
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["rows"] = rows
    return summary


# ------------------------------------------------------------------ grouped CV protocol
def experiment_stats(out: Path, cuped: bool = True) -> list[dict[str, Any]]:
    """Per experiment (history ``h*`` and held-out ``x*``): the surrogates' effects ``dx``
    with their sampling covariance ``V``, and the long-run target: for a history
    experiment its observed effect (with ``Var`` and ``Cov(dx, dy)``), for a held-out one
    the CRN truth (no sampling noise). With ``cuped`` every effect is regression-adjusted
    on the pre-period covariates among the surrogates (as ``recscope longrun fit``
    does). Cached beside the history in ``cv_stats_<hash>[_raw].json``, the hash of
    ``surrogates.toml`` and of the code computing the effects (experiments added later
    are computed and appended)."""
    import hashlib
    import inspect

    import pyarrow.parquet as pq

    from recscope.experiments.metrics import load_metrics
    from recscope.experiments.surrogate import (
        _effects,
        adjust,
        attach_outcome,
        covariates,
        unit_features,
    )
    from recscope.sim.long_run_history import LONG_OUTCOME

    code = "".join(inspect.getsource(f) for f in (_effects, adjust)).encode()
    key = hashlib.sha256((out / "surrogates.toml").read_bytes() + code).hexdigest()[:8]
    cache = out / f"cv_stats_{key}{'' if cuped else '_raw'}.json"
    dirs = sorted(p for p in out.iterdir() if p.is_dir() and p.name[0] in "hx"
                  and (p / "metrics.toml").exists())
    cached = {r["name"]: r for r in json.loads(cache.read_text())} if cache.exists() else {}
    if all(d.name in cached for d in dirs):
        return [cached[d.name] for d in dirs]
    cfg = load_metrics(out / "surrogates.toml")
    rows = []
    for d in dirs:
        if d.name in cached:  # experiments added since: only those are computed
            rows.append(cached[d.name])
            continue
        ut = unit_features(str(d / "assignments.parquet"), str(d / "events.parquet"), cfg,
                           name=d.name)
        treated = ut.variants == "treatment"
        i_ad = ut.features.index("active_days")
        # pre-period covariates adjust every effect (as recscope longrun fit does)
        cov = covariates(ut.features) if cuped else None
        row: dict[str, Any] = {"name": d.name, "features": ut.features,
                               "n_t": int(treated.sum()), "n_c": int((~treated).sum()),
                               "ad_c": float(ut.x[~treated, i_ad].mean())}
        if d.name.startswith("h"):
            ut = attach_outcome(ut, pq.read_table(d / "outcomes.parquet"), LONG_OUTCOME,
                                unit="unit_id", file=str(d / "outcomes.parquet"))
            assert ut.y is not None
            dx, dy, v, c, vy = _effects(ut.x, ut.y, treated, cov)
            info = json.loads((d / "change.json").read_text())
            row.update(target="observed", y_n=int(ut.y.size), y_sum=float(ut.y.sum()),
                       y_sumsq=float((ut.y ** 2).sum()),
                       y_control_mean=float(ut.y[~treated].mean()))
        else:
            dx, _, v, _, _ = _effects(ut.x, np.zeros(ut.x.shape[0]), treated, cov)
            info = json.loads((d / "truth.json").read_text())
            dy, c, vy = info["truth"]["effects"][LONG_OUTCOME], np.zeros(len(dx)), 0.0
            row["target"] = "truth"
        row.update(family=info["change"]["family"], dx=dx.tolist(), V=v.tolist(),
                   C=c.tolist(), dy=float(dy), var_dy=float(vy))
        rows.append(row)
    cache.write_text(json.dumps(rows) + "\n")
    return rows


def stratified_folds(families: list[str], k: int, seed: int) -> np.ndarray:
    """Fold of each experiment: within each family the experiments are shuffled and dealt
    round the folds (continuing where the previous family stopped), so every fold holds
    out a share of each family and every family stays in every fold's training set."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(families), dtype=int)
    start = 0
    for fam in sorted(set(families)):
        idx = np.flatnonzero(np.array(families) == fam)
        rng.shuffle(idx)
        fold[idx] = (start + np.arange(idx.size)) % k
        start = (start + idx.size) % k
    return fold


def _noise(th: np.ndarray, s: dict[str, Any]) -> float:
    """Sampling variance of ``dy − th · dx`` for one experiment."""
    v, c = np.asarray(s["V"]), np.asarray(s["C"])
    return float(s["var_dy"] + th @ v @ th - 2 * th @ c)


def fit_fold(train: list[dict[str, Any]], ridge: float, widen: bool
             ) -> dict[str, Any]:
    """``theta`` on the training experiments and the surrogacy error learnt from *their*
    leave-one-out errors only, with the product's own functions
    (:func:`recscope.experiments.surrogate.loo_errors` and ``surrogacy_error``): ``tau2``
    (mean squared error beyond sampling noise) or, with ``widen``, ``tau2(d²) = a + b ·
    d²`` against the Mahalanobis distance ``d²`` of each training experiment's short-run
    effects from the other training experiments' (a change unlike the history is
    expected to be projected worse, by as much as the history itself shows).
    ``max_d2``: the largest leave-one-out ``d²``, beyond which a projection is flagged
    as an extrapolation."""
    from recscope.experiments.surrogate import _theta, loo_errors, surrogacy_error

    dx = np.array([s["dx"] for s in train])
    dy = np.array([s["dy"] for s in train])
    vv = np.array([s["V"] for s in train])
    cc = np.array([s["C"] for s in train])
    var_dy = np.array([s["var_dy"] for s in train])
    theta = _theta(dx, dy, vv, cc, ridge)
    loo = loo_errors(dx, dy, vv, cc, var_dy, ridge)
    tau2, a, b = surrogacy_error((dy - loo.projected) ** 2 - loo.noise, loo.distance)
    if not widen:
        a, b = tau2, 0.0
    return {"theta": theta, "tau2": tau2, "a": a, "b": b, "dx": dx, "dy": dy, "V": vv,
            "C": cc, "max_d2": float(loo.distance.max())}


def noisy_targets(stats: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """``stats`` with each CRN-truth target replaced by truth plus normal noise of the
    median sampling variance of the history's observed long-run effects (and that
    variance as its ``var_dy``): the held-out experiments as a platform's own history
    would hold them, for training only (a sensitivity check of the CV)."""
    rng = np.random.default_rng(seed + 1000)
    var = float(np.median([s["var_dy"] for s in stats if s["target"] == "observed"]))
    return [dict(s, dy=s["dy"] + float(rng.normal(0.0, math.sqrt(var))), var_dy=var)
            if s["target"] == "truth" else s for s in stats]


def cv_evaluate(out: Path, folds: int = 10, seed: int = 0, n_boot: int = 1000,
                ridge: float = 0.03, widen: bool = False, split: str = "cv",
                cuped: bool = True, noisy: bool = False) -> dict[str, Any]:
    """Grouped, family-stratified ``folds``-fold cross-validation over every simulated
    experiment (history and held-out pooled): each fold's experiments are projected by a
    map fitted on the other folds only, its interval from the other folds' bootstrap
    and leave-one-out surrogacy error plus the experiment's own sampling noise.
    ``split="new-kind"``: one fold instead, the held-out ``x*`` projected from the
    history ``h*`` (the new-kind protocol on the same machinery, to compare ``widen``).
    ``noisy``: the training folds see the held-out experiments' targets with noise
    (:func:`noisy_targets`); the test experiments are still scored on their truth."""
    from recscope.experiments.surrogate import _theta, mahalanobis2

    t0 = time.perf_counter()
    stats = experiment_stats(out, cuped)
    fit_stats = noisy_targets(stats, seed) if noisy else stats
    if split == "cv":
        fold = stratified_folds([s["family"] for s in stats], folds, seed)
    else:
        fold, folds = np.array([int(s["target"] == "truth") for s in stats]), 2
    i_ad = stats[0]["features"].index("active_days")
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(folds) if split == "cv" else [1]:
        train = [s for s, g in zip(fit_stats, fold, strict=True) if g != f]
        m = fit_fold(train, ridge, widen)
        k = len(train)
        boot = np.array([_theta(m["dx"][p], m["dy"][p], m["V"][p], m["C"][p], ridge)
                         for p in rng.integers(0, k, size=(n_boot, k))])
        hist = [s for s in train if s["target"] == "observed"]
        y_n = sum(s["y_n"] for s in hist)
        y_mean = sum(s["y_sum"] for s in hist) / y_n
        sd_long = math.sqrt((sum(s["y_sumsq"] for s in hist) - y_n * y_mean ** 2)
                            / (y_n - 1))
        long_control = float(np.mean([s["y_control_mean"] for s in hist]))
        for s, g in zip(stats, fold, strict=True):
            if g != f:
                continue
            dx = np.asarray(s["dx"])
            est = float(m["theta"] @ dx)
            d2 = mahalanobis2(m["dx"], dx)
            tau2 = m["a"] + m["b"] * d2 if widen else m["tau2"]
            # the test experiment's own sampling noise: its surrogates' effects (and,
            # for an observed target, the observed long-run effect's noise)
            var = tau2 + max(_noise(m["theta"], s), 0.0)
            draws = boot @ dx + rng.normal(0.0, math.sqrt(var), n_boot)
            lo, hi = np.quantile(draws - draws.mean() + est, [0.025, 0.975])
            naive = dx[i_ad] / s["ad_c"] * long_control
            mde = 2.8 * sd_long * math.sqrt(1 / s["n_t"] + 1 / s["n_c"])
            rows.append({"name": s["name"], "family": s["family"], "target": s["target"],
                         "fold": int(f), "truth": s["dy"], "estimate": est,
                         "ci_low": float(lo), "ci_high": float(hi), "naive": naive,
                         "mde": mde, "d2": d2, "max_d2": m["max_d2"],
                         "extrapolation": bool(d2 > m["max_d2"]),
                         "covered": bool(lo <= s["dy"] <= hi),
                         "abs_error": abs(est - s["dy"]),
                         "naive_abs_error": abs(naive - s["dy"])})
    res = {"protocol": split, "folds": folds, "seed": seed, "ridge": ridge,
           "widen": widen, "cuped": cuped, "noisy_targets": noisy,
           "experiments": len(stats), "n_boot": n_boot,
           "seconds": round(time.perf_counter() - t0, 1)}
    res["pooled"] = cv_summary(rows)
    for tgt in ("truth", "observed"):
        res[f"target_{tgt}"] = cv_summary([r for r in rows if r["target"] == tgt])
    res["d2_train_loo"] = {"note": "Mahalanobis d2 of each test experiment from its "
                           "training experiments (history LOO d2 is about the number of "
                           "surrogates)", "test_median": float(np.median(
                               [r["d2"] for r in rows]))}
    res["by_family"] = {fam: cv_summary([r for r in rows if r["family"] == fam])
                        for fam in sorted({r["family"] for r in rows})}
    res["rows"] = rows
    return res


def cv_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's figures over ``rows``, each with its count (``{"n": 0}`` for none)."""
    if not rows:
        return {"n": 0}
    err = np.array([r["abs_error"] for r in rows])
    nerr = np.array([r["naive_abs_error"] for r in rows])
    big = [r for r in rows if abs(r["truth"]) >= r["mde"]]
    agree = [(r["estimate"] > 0) == (r["truth"] > 0) for r in big]
    return {"n": len(rows), "surrogate_mae": float(err.mean()),
            "naive_mae": float(nerr.mean()), "error_ratio": float(err.mean() / nerr.mean()),
            "covered": int(sum(r["covered"] for r in rows)),
            "coverage": float(np.mean([r["covered"] for r in rows])),
            "mean_width": float(np.mean([r["ci_high"] - r["ci_low"] for r in rows])),
            "decision_n": len(big), "decision_agree": int(sum(agree)),
            "decision_rate": float(np.mean(agree)) if agree else None,
            "extrapolations": int(sum(r.get("extrapolation", False) for r in rows)),
            "extrapolations_covered": int(sum(r["covered"] for r in rows
                                              if r.get("extrapolation", False))),
            "inside_covered": int(sum(r["covered"] for r in rows
                                      if not r.get("extrapolation", False)))}


def main(argv: list[str] | None = None) -> int:
    """Run one step; print its figures and write them beside the history."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["simulate", "evaluate", "history", "novelty"],
                    help="history: only the leave-one-out figures on the history; "
                    "novelty: the settled-effect projection by day and by session on "
                    "every held-out experiment (results_novelty.json)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/long_run")
    ap.add_argument("--budget", type=float, default=840.0)
    ap.add_argument("--history", type=int, default=60)
    ap.add_argument("--held-out", type=int, default=40)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--shard", default="0/1", metavar="I/N",
                    help="simulate: only every N-th missing experiment from the I-th")
    ap.add_argument("--protocol", choices=["new-kind", "new-kind-stats", "cv"],
                    default="new-kind",
                    help="evaluate: new-kind = fit on h*, project the x* (kinds the "
                    "history never has); new-kind-stats = the same on the CV's "
                    "experiment-level statistics (normal draws of the new experiment's "
                    "effects instead of its unit bootstrap; implied by --widen); cv = "
                    "grouped, family-stratified cross-validation over every experiment "
                    "(kinds the history has seen)")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-cuped", action="store_true",
                    help="effects not regression-adjusted on the pre-period covariates "
                    "(the earlier estimator, for comparison)")
    ap.add_argument("--noisy-targets", action="store_true",
                    help="cv: the training folds see each held-out experiment's CRN truth "
                    "plus the noise of an observed long-run effect (as a platform's "
                    "history would); scored on the truth")
    ap.add_argument("--widen", action="store_true",
                    help="surrogacy error growing with the Mahalanobis distance of "
                    "the change's short-run effects from the training experiments'")
    a = ap.parse_args(argv)
    if a.step == "simulate":
        i, n = (int(v) for v in a.shard.split("/"))
        done = simulate(a.out, a.budget, {"history": a.history, "held_out": a.held_out,
                                          "scale": a.scale}, (i, n))
        print("complete" if done else "partial: run again to continue")
        return 0 if done else 3
    if a.step == "novelty":
        res = novelty_evaluate(a.out, min(a.n_boot, 500))
        name = "results_novelty.json"
    elif a.step == "evaluate" and a.protocol == "cv":
        res = cv_evaluate(a.out, a.folds, a.seed, a.n_boot, widen=a.widen,
                          cuped=not a.no_cuped, noisy=a.noisy_targets)
        name = (f"results_cv{'_widen' if a.widen else ''}{'_raw' if a.no_cuped else ''}"
                f"{'_noisy' if a.noisy_targets else ''}"
                f"{f'_seed{a.seed}' if a.seed else ''}.json")
    elif a.step == "evaluate" and (a.widen or a.protocol == "new-kind-stats"):
        res = cv_evaluate(a.out, seed=a.seed, n_boot=a.n_boot, widen=a.widen,
                          split="new-kind", cuped=not a.no_cuped)
        name = (f"results_new_kind_stats{'_widen' if a.widen else ''}"
                f"{'_raw' if a.no_cuped else ''}.json")
    else:
        res = evaluate(a.out, a.n_boot, held_out=a.step == "evaluate",
                       cuped=not a.no_cuped)
        name = ("results" if a.step == "evaluate" else "history_loo") + (
            "_raw" if a.no_cuped else "") + ".json"
    (a.out / name).write_text(json.dumps(res, indent=2, default=float) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
