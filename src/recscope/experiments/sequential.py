"""Continuous monitoring: mixture-SPRT confidence sequences over successive looks.

:func:`monitor` takes each look's per-arm summary (count, mean, variance), as an
experimentation platform stores them, and returns the always-valid intervals and
p-values next to the naive (fixed-horizon) ones. :func:`replay` applies it to a history of
experiments such as the ASOS Digital Experiments data set and says when each could have
stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from recscope.errors import DataValidationError
from recscope.experiments.moments import always_valid_pvalues, msprt


@dataclass(frozen=True)
class Monitoring:
    """Per look: effect, naive and always-valid intervals and p-values."""

    effect: np.ndarray
    se: np.ndarray
    naive_p: np.ndarray
    seq_p: np.ndarray
    seq_low: np.ndarray
    seq_high: np.ndarray

    def first_rejection(self, alpha: float = 0.05) -> int | None:
        """Index of the first look whose always-valid p-value is below ``alpha``."""
        hit = np.flatnonzero(self.seq_p < alpha)
        return int(hit[0]) if hit.size else None


def monitor(n_c: np.ndarray, mean_c: np.ndarray, var_c: np.ndarray, n_t: np.ndarray,
            mean_t: np.ndarray, var_t: np.ndarray, *, alpha: float = 0.05,
            tau: float = 0.1) -> Monitoring:
    """Always-valid inference for ``mean_t - mean_c`` along the last axis (the looks).

    ``tau`` is the standard deviation of the mixing distribution in units of the pooled
    per-unit standard deviation (a standardised effect size of 0.1 by default). Arrays may
    have leading dimensions (many simulated experiments at once).
    """
    n_c, n_t = np.asarray(n_c, float), np.asarray(n_t, float)
    effect = np.asarray(mean_t, float) - np.asarray(mean_c, float)
    v = np.asarray(var_c, float) / n_c + np.asarray(var_t, float) / n_t
    se = np.sqrt(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        naive_p = 2 * sps.norm.sf(np.abs(effect) / se)
        sd2 = ((n_c - 1) * var_c + (n_t - 1) * var_t) / (n_c + n_t - 2)
        tau2 = tau**2 * sd2
        half, lr = msprt(effect, v, tau2, alpha)
    lr = np.where(np.isfinite(lr), lr, 0.0)
    return Monitoring(effect, se, naive_p, always_valid_pvalues(lr), effect - half,
                      effect + half)


def replay(frame: Any, *, alpha: float = 0.05, tau: float = 0.1) -> Any:
    """Replay experiments' look-by-look summaries through the sequential test.

    ``frame`` (pandas) has columns ``experiment_id, variant_id, metric_id,
    time_since_start, count_c, count_t, mean_c, mean_t, variance_c, variance_t`` (the ASOS
    layout). Returns one row per series: the fixed-horizon decision at the last look, the
    look at which the always-valid test first rejected, and whether that early decision
    agrees in sign with a significant final result.
    """
    import pandas as pd

    need = ["experiment_id", "variant_id", "metric_id", "time_since_start", "count_c",
            "count_t", "mean_c", "mean_t", "variance_c", "variance_t"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise DataValidationError("missing column for replay", column=missing[0])
    rows = []
    for key, g in frame.sort_values("time_since_start").groupby(
            ["experiment_id", "variant_id", "metric_id"], sort=True):
        g = g[(g["count_c"] > 1) & (g["count_t"] > 1)]
        if len(g) < 2:
            continue
        m = monitor(g["count_c"].to_numpy(), g["mean_c"].to_numpy(), g["variance_c"].to_numpy(),
                    g["count_t"].to_numpy(), g["mean_t"].to_numpy(), g["variance_t"].to_numpy(),
                    alpha=alpha, tau=tau)
        t = g["time_since_start"].to_numpy(float)
        final_sig = bool(m.naive_p[-1] < alpha)
        final_sign = int(np.sign(m.effect[-1]))
        first = m.first_rejection(alpha)
        rows.append({
            "experiment_id": key[0], "variant_id": key[1], "metric_id": key[2],
            "looks": len(g), "duration": t[-1], "final_effect": m.effect[-1],
            "final_p": m.naive_p[-1], "final_significant": final_sig,
            "naive_ever_significant": bool(np.any(m.naive_p < alpha)),
            "seq_stop_time": (t[first] if first is not None else np.nan),
            "seq_stopped": first is not None,
            "seq_sign": (int(np.sign(m.effect[first])) if first is not None else 0),
            "same_decision": (first is not None and final_sig
                              and int(np.sign(m.effect[first])) == final_sign),
            "seq_final_p": m.seq_p[-1],
        })
    out = pd.DataFrame(rows)
    if len(out):
        out["time_saved"] = np.where(out["same_decision"],
                                     1 - out["seq_stop_time"] / out["duration"], 0.0)
    return out
