"""The validation of docs/history.md in one call: the offline->online predictor on held-out
families, the priors' error reduction and calibration, and early stopping."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recscope.errors import DataValidationError


def read_asos(path: str | Path) -> Any:
    """The ASOS Digital Experiments table (Parquet or CSV) as pandas."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise DataValidationError("ASOS file not found", file=str(p))
    try:
        return pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except (OSError, ValueError) as exc:
        raise DataValidationError(f"not readable: {exc}".splitlines()[0], file=str(p)) from None


def shortcuts_cross_validated(series: list[Any], groups: list[str], *, folds: int = 2,
                              seed: int = 0, alpha: float = 0.05,
                              max_disagreement: float = 0.10) -> dict[str, Any]:
    """Early-stopping rules calibrated on some groups (experiments or families) and
    evaluated on the others; figures pooled over the folds."""
    from recscope.history.shortcuts import analyse, evaluate_rule

    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(uniq, rng.permutation(len(uniq)) % folds, strict=True))
    g = np.array([fold_of[x] for x in groups])
    full = analyse(series, alpha=alpha, max_disagreement=max_disagreement)
    pooled: dict[str, list[tuple[int, dict[str, Any]]]] = {"futility_only": [],
                                                           "always_valid_and_futility": []}
    chosen = []
    for k in range(folds):
        te = [s for s, f in zip(series, g, strict=True) if f == k]
        tr = [s for s, f in zip(series, g, strict=True) if f != k]
        if not te or not tr:
            continue
        a = analyse(te, train=tr, alpha=alpha, max_disagreement=max_disagreement)
        chosen.append(a["calibrated"])
        cal = a["calibrated"]
        if cal["futility"] is None:
            continue
        for name, eff in (("futility_only", False), ("always_valid_and_futility", True)):
            pooled[name].append((len(te), evaluate_rule(
                te, alpha=alpha, futility=cal["futility"], min_fraction=cal["min_fraction"],
                efficacy=eff)))
    out = {"series": len(series), "groups": len(uniq),
           "earliest_agreement": full["earliest_agreement"],
           "always_valid": full["always_valid"], "calibrated_per_fold": chosen,
           "max_disagreement": max_disagreement}
    for name, parts in pooled.items():
        if parts:
            n = sum(p[0] for p in parts)
            out[name] = {"series": n,
                         "days_saved_share": sum(p[0] * p[1]["days_saved_share"]
                                                 for p in parts) / n,
                         "disagreement_rate": sum(p[0] * p[1]["disagreement_rate"]
                                                  for p in parts) / n}
    return out


def run_validation(table: pa.Table, *, asos: str | Path | None = None, cost: float = 0.01,
                   file: str | None = None) -> dict[str, Any]:
    """Every figure of the validation table (see the module docstring)."""
    from recscope.history import predict, priors, shortcuts

    if not any(c.startswith("true_") for c in table.column_names):
        raise DataValidationError("validation needs the true effects (a simulated history "
                                  "from 'recscope history simulate')", file=file,
                                  column="true_clicks")
    out: dict[str, Any] = {"candidates": table.num_rows}
    out["predictor"] = {kind: predict.validate(table, kind=kind, cost=cost)
                        for kind in ("gbm", "ridge")}
    out["priors"] = [*priors.validate_corpus(table),
                     priors.validate_predicted(table, out["predictor"]["ridge"]["predictions"])]
    cs = shortcuts.corpus_to_series(table)
    out["shortcuts"] = {"simulated corpus": shortcuts_cross_validated(
        cs, [s.key.split("/")[0] for s in cs])}
    out["shortcuts"]["simulated corpus"]["groups_are"] = "candidates"
    if asos is not None:
        frame = read_asos(asos)
        out["priors"] += priors.validate_asos(frame)
        series = shortcuts.asos_to_series(frame)
        out["shortcuts"]["ASOS"] = shortcuts_cross_validated(
            series, [s.key.split("/")[0] for s in series])
        out["shortcuts"]["ASOS"]["groups_are"] = "experiments"
    return out


def _pct(x: Any) -> str:
    return "–" if x is None or not math.isfinite(float(x)) else f"{float(x):.1%}"


def print_validation(res: dict[str, Any], console: Any) -> None:
    """The validation as terminal tables."""
    from recscope.report.tables import rich_table

    rows = []
    for kind, v in res["predictor"].items():
        sp = v["spearman"]
        rows.append({"model": kind, **{f"Spearman {k}": sp[k] for k in sp},
                     "direction (|truth| >= MDE)": v["directional_accuracy"],
                     "n >= MDE": v["n_beyond_mde"], "coverage (90%)": v["coverage"],
                     "half-width": v["mean_half_width"]})
    console.print(rich_table(rows, title=f"Offline->online predictor on held-out families "
                             f"({res['candidates']} candidates)"))
    rows = [{"model": k, **{key: val for key, val in v["triage"].items()}}
            for k, v in res["predictor"].items()]
    console.print(rich_table(rows, title="Triage against running every candidate"))
    console.print(rich_table([{k: v for k, v in r.items() if k != "reliability"}
                              for r in res["priors"]], title="Empirical-Bayes priors: MSE"))
    rel = [{"data": r["data"], "held out": r["unit"], "metric": r["metric"],
            "prior": r["prior"], **b}
           for r in res["priors"]
           for b in r["reliability"]]
    console.print(rich_table(rel, title="Reliability of P(effect > 0)"))
    rows = []
    for data, s in res["shortcuts"].items():
        for rule in ("always_valid", "futility_only", "always_valid_and_futility"):
            if rule in s:
                rows.append({"data": data, "rule": rule, "series": s[rule]["series"],
                             "days saved": _pct(s[rule]["days_saved_share"]),
                             "disagreement": _pct(s[rule]["disagreement_rate"])})
        ea = s["earliest_agreement"]
        rows.append({"data": data, "rule": "earliest agreement (median share of duration)",
                     "series": s["series"], "days saved": _pct(1 - ea["median_share"]),
                     "disagreement": "0.0%"})
    console.print(rich_table(rows, title="Early stopping (futility calibrated on other "
                             "groups)"))
