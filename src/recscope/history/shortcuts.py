"""Shortcuts for experiments, learned from the history of look-by-look readouts.

For every past readout series (ASOS: experiment x variant x metric; the simulated
corpus: candidate x metric, one look a day) the **final decision** is ``launch`` (the last
look is significant and positive), ``rollback`` (significant and negative) or ``none``.

* **Earliest agreement**: the first look from which the naive decision at every later look
  equals the final one, as a share of the duration.
* **Stopping rule**: at each look, stop for efficacy when the always-valid (mSPRT) p-value
  of :func:`recscope.experiments.sequential.monitor` is below ``alpha`` (decision by the
  sign); stop for futility (decision ``none``) once at least ``min_fraction`` of the
  information has accrued and the conditional power under the current trend,
  ``CP = 1 - Phi((z_{1-alpha/2} - |z_t| / sqrt(f)) / sqrt(1 - f))`` (``f``: units seen /
  final units, or days elapsed / planned days), is below
  ``futility``. ``min_fraction`` and ``futility`` are chosen on the history
  (:func:`calibrate`): the largest saving whose disagreement with the final decision stays
  within ``max_disagreement``. Disagreement rate and the share of experiment-days saved
  are reported for the always-valid rule alone, the futility rule alone and both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from recscope.errors import DataValidationError


@dataclass(frozen=True)
class Series:
    """One readout series: per look, time, effect, SE, naive and always-valid p-values
    and the information fraction (units seen / final units, or elapsed / planned time)."""

    key: str
    time: np.ndarray
    effect: np.ndarray
    se: np.ndarray
    naive_p: np.ndarray
    seq_p: np.ndarray
    info: np.ndarray


def decision(effect: float, p: float, alpha: float) -> str:
    """``launch`` / ``rollback`` when significant, else ``none``."""
    if not (math.isfinite(effect) and math.isfinite(p)) or p >= alpha:
        return "none"
    return "launch" if effect > 0 else "rollback"


def earliest_agreement(s: Series, alpha: float = 0.05) -> float:
    """Share of the duration after which every look's naive decision equals the final."""
    d = [decision(e, p, alpha) for e, p in zip(s.effect, s.naive_p, strict=True)]
    i = len(d) - 1
    while i > 0 and d[i - 1] == d[-1]:
        i -= 1
    return float(s.time[i] / s.time[-1])


def conditional_power(z: np.ndarray, f: np.ndarray, alpha: float) -> np.ndarray:
    """Conditional power under the current trend at information fraction ``f``."""
    za = sps.norm.ppf(1 - alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        cp = sps.norm.sf((za - np.abs(z) / np.sqrt(f)) / np.sqrt(np.maximum(1 - f, 1e-12)))
    return np.where(f >= 1, (np.abs(z) > za).astype(float), cp)


def stop(s: Series, *, alpha: float = 0.05, futility: float | None = None,
         min_fraction: float = 0.3, efficacy: bool = True) -> tuple[int, str]:
    """Look index at which the rule stops and its decision (the last look if never)."""
    f = s.info
    z = s.effect / s.se
    cp = conditional_power(z, f, alpha) if futility is not None else None
    for i in range(len(s.time) - 1):
        if efficacy and s.seq_p[i] < alpha:
            return i, "launch" if s.effect[i] > 0 else "rollback"
        if cp is not None and futility is not None and f[i] >= min_fraction \
                and cp[i] < futility:
            return i, "none"
    i = len(s.time) - 1
    return i, decision(float(s.effect[i]), float(s.naive_p[i]), alpha)


def evaluate_rule(series: list[Series], **rule: Any) -> dict[str, Any]:
    """Share of experiment-days saved and disagreement with the final decision."""
    alpha = rule.get("alpha", 0.05)
    saved, dis, stopped = [], [], 0
    for s in series:
        i, dec = stop(s, **rule)
        final = decision(float(s.effect[-1]), float(s.naive_p[-1]), alpha)
        saved.append(1 - s.time[i] / s.time[-1])
        dis.append(dec != final)
        stopped += i < len(s.time) - 1
    return {"series": len(series), "stopped_early": stopped,
            "days_saved_share": float(np.mean(saved)) if saved else math.nan,
            "disagreement_rate": float(np.mean(dis)) if dis else math.nan}


def calibrate(series: list[Series], *, alpha: float = 0.05, max_disagreement: float = 0.05,
              ) -> dict[str, Any]:
    """The futility threshold and minimum information fraction with the largest saving
    whose disagreement rate stays within ``max_disagreement``."""
    best: dict[str, Any] = {"futility": None, "min_fraction": 1.0, "days_saved_share": 0.0,
                            "disagreement_rate": math.nan}
    for fut in (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2):
        for mf in (0.2, 0.3, 0.4, 0.5, 0.6, 0.8):
            r = evaluate_rule(series, alpha=alpha, futility=fut, min_fraction=mf,
                              efficacy=True)
            if r["disagreement_rate"] <= max_disagreement and \
                    r["days_saved_share"] > best["days_saved_share"]:
                best = {"futility": fut, "min_fraction": mf, **r}
    return best


def analyse(series: list[Series], *, alpha: float = 0.05, max_disagreement: float = 0.05,
            train: list[Series] | None = None) -> dict[str, Any]:
    """Earliest agreement, and the rules (futility calibrated on ``train``, default the
    same series) evaluated on ``series``."""
    if not series:
        raise DataValidationError("no readout series with at least two looks")
    ea = np.array([earliest_agreement(s, alpha) for s in series])
    cal = calibrate(train if train is not None else series, alpha=alpha,
                    max_disagreement=max_disagreement)
    out = {
        "series": len(series),
        "earliest_agreement": {"median_share": float(np.median(ea)),
                               "mean_share": float(np.mean(ea)),
                               "share_agreeing_by_half": float(np.mean(ea <= 0.5))},
        "always_valid": evaluate_rule(series, alpha=alpha, efficacy=True),
        "calibrated": {"futility": cal["futility"], "min_fraction": cal["min_fraction"]},
    }
    if cal["futility"] is not None:
        out["futility_only"] = evaluate_rule(series, alpha=alpha, futility=cal["futility"],
                                             min_fraction=cal["min_fraction"],
                                             efficacy=False)
        out["always_valid_and_futility"] = evaluate_rule(
            series, alpha=alpha, futility=cal["futility"], min_fraction=cal["min_fraction"],
            efficacy=True)
    return out


def asos_to_series(frame: Any, tau: float = 0.1) -> list[Series]:
    """ASOS look-by-look summaries as series (absolute effect; mSPRT per look)."""
    from recscope.experiments.sequential import monitor

    out = []
    f = frame[(frame["count_c"] > 1) & (frame["count_t"] > 1)].sort_values("time_since_start")
    for key, g in f.groupby(["experiment_id", "variant_id", "metric_id"], sort=True):
        if len(g) < 2:
            continue
        m = monitor(g["count_c"].to_numpy(), g["mean_c"].to_numpy(), g["variance_c"].to_numpy(),
                    g["count_t"].to_numpy(), g["mean_t"].to_numpy(), g["variance_t"].to_numpy(),
                    tau=tau)
        ok = np.isfinite(m.se) & (m.se > 0)
        if ok.sum() < 2:
            continue
        n = (g["count_c"] + g["count_t"]).to_numpy(float)[ok]
        out.append(Series(f"{key[0]}/{key[1]}/{key[2]}",
                          g["time_since_start"].to_numpy(float)[ok], m.effect[ok], m.se[ok],
                          m.naive_p[ok], m.seq_p[ok], n / n[-1]))
    return out


def corpus_to_series(table: Any, metrics: list[str] | None = None) -> list[Series]:
    """The corpus' daily cumulative readouts as series (one look a day)."""
    from recscope.history.store import online_metrics

    out = []
    ids = table.column("candidate_id").to_pylist()
    for m in metrics or online_metrics(table):
        cols = [f"online_{m}_daily_{s}" for s in ("estimate", "se", "p_value", "seq_p")]
        if any(c not in table.column_names for c in cols):
            continue
        data = [table.column(c).to_pylist() for c in cols]
        for i, cid in enumerate(ids):
            vals = [np.asarray(d[i] if d[i] is not None else [], float) for d in data]
            ok = np.isfinite(vals[0]) & np.isfinite(vals[1]) & (vals[1] > 0)
            if ok.sum() < 2:
                continue
            days = np.arange(1, vals[0].size + 1, dtype=float)[ok]
            out.append(Series(f"{cid}/{m}", days, *(v[ok] for v in vals),
                              days / vals[0].size))
    return out
