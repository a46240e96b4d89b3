"""Factorial attribution: main effects, interactions and Shapley shares with intervals.

Everything is computed from per-cell sufficient statistics (count, sums, sums of squares,
cross-products for ratios), so cells can be aggregated inside a warehouse and only 2^K
rows per metric reach Python. Cells are indexed by bit mask (bit k = component k on).

Standard errors: the saturated factorial regression y ~ (z_1 + ... + z_K)^K fitted by
OLS has coefficients that are contrasts of cell means, and its HC2 (heteroscedasticity-
robust) covariance equals the contrast of the independent cell variances s²_S / n_S; that
is what is used here (tests check it against statsmodels). Shapley values are the same
kind of linear contrast; their shares of the total (phi_k / total) get percentile intervals
from a parametric bootstrap of the cell values, which needs no unit-level data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from recscope.attribution.shapley import interaction_weights, shapley_weights, total_weights
from recscope.errors import DataValidationError
from recscope.results import Effect


@dataclass(frozen=True)
class CellStats:
    """Value of one metric in each of the 2^K cells and the squared standard error of it."""

    n: np.ndarray
    value: np.ndarray
    var: np.ndarray

    def __post_init__(self) -> None:
        _check_counts(self.n)

    @property
    def k(self) -> int:
        return len(self.n).bit_length() - 1

    @classmethod
    def from_sums(cls, n: np.ndarray, s: np.ndarray, ss: np.ndarray) -> CellStats:
        """Per-unit mean metric from count, sum and sum of squares per cell."""
        n, s, ss = (np.asarray(a, dtype=np.float64) for a in (n, s, ss))
        _check_counts(n)
        mean = s / n
        var = (ss - n * mean**2) / (n - 1)
        return cls(n, mean, np.maximum(var, 0.0) / n)

    @classmethod
    def from_ratio_sums(cls, n: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray,
                        syy: np.ndarray, sxy: np.ndarray) -> CellStats:
        """Ratio of sums (for example clicks / impressions) with its delta-method variance."""
        n, sx, sy, sxx, syy, sxy = (np.asarray(a, dtype=np.float64)
                                    for a in (n, sx, sy, sxx, syy, sxy))
        _check_counts(n)
        mx, my = sx / n, sy / n
        if (my == 0).any():
            raise DataValidationError("ratio denominator sums to zero in a cell",
                                      column="denominator", row=int(np.flatnonzero(my == 0)[0]))
        vx = (sxx - n * mx**2) / (n - 1)
        vy = (syy - n * my**2) / (n - 1)
        cxy = (sxy - n * mx * my) / (n - 1)
        r = mx / my
        var = (vx - 2 * r * cxy + r**2 * vy) / (my**2 * n)
        return cls(n, r, np.maximum(var, 0.0))

    @classmethod
    def from_units(cls, cells: np.ndarray, y: np.ndarray, k: int,
                   denominator: np.ndarray | None = None) -> CellStats:
        """From unit-level cell indices and values (and a denominator for ratios)."""
        cells = np.asarray(cells, dtype=np.int64)
        size = 1 << k
        n = np.bincount(cells, minlength=size).astype(np.float64)
        y = np.asarray(y, dtype=np.float64)
        sx = np.bincount(cells, y, size)
        sxx = np.bincount(cells, y * y, size)
        if denominator is None:
            return cls.from_sums(n, sx, sxx)
        d = np.asarray(denominator, dtype=np.float64)
        return cls.from_ratio_sums(n, sx, np.bincount(cells, d, size), sxx,
                                   np.bincount(cells, d * d, size), np.bincount(cells, y * d, size))


def _check_counts(n: np.ndarray) -> None:
    c = len(n)
    if c < 2 or c & (c - 1):
        raise DataValidationError(f"need 2^K cells, got {c}", column="cell")
    small = np.flatnonzero(np.asarray(n) < 2)
    if small.size:
        raise DataValidationError(f"cell {int(small[0])} has fewer than 2 units",
                                  column="cell", row=int(small[0]))


@dataclass
class MetricAttribution:
    """Attribution of one metric's full-stack effect to K components."""

    metric: str
    components: list[str]
    cells: CellStats
    total: dict[str, float]
    shapley: dict[str, dict[str, float]]
    terms: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "total": self.total,
            "components": self.shapley,
            "interactions": {k: v for k, v in self.terms.items() if "×" in k},
            "main_effects": {k: v for k, v in self.terms.items() if "×" not in k},
            "cells": [{"cell": _cell_name(c, self.components), "n": int(self.cells.n[c]),
                       "value": float(self.cells.value[c]),
                       "se": float(np.sqrt(self.cells.var[c]))}
                      for c in range(len(self.cells.n))],
        }


    def effects(self) -> list[Effect]:
        """The estimate rows: the total, each component's Shapley value (``ci_low`` /
        ``ci_high`` its bootstrap interval; ``share`` with ``share_ci_low`` /
        ``share_ci_high``), the main effects and the interactions. ``extra`` names the
        ``term`` and its ``role`` (``total``, ``shapley``, ``main_effect``,
        ``interaction``); ``share_note`` says when a share is not to be read."""
        n = float(np.sum(self.cells.n))
        t = self.total
        total_clear = t["ci_low"] > 0 or t["ci_high"] < 0
        out = [Effect(self.metric, t["effect"], t["ci_low"], t["ci_high"], t["se"],
                      t["p_value"], n, {"term": "total", "role": "total", "share": 1.0,
                                        "share_ci_low": float("nan"),
                                        "share_ci_high": float("nan"), "share_note": None})]
        for comp, v in self.shapley.items():
            note = None
            if not total_clear:
                note = "the total effect's interval includes 0: the share is unstable"
            elif not v["ci_low"] <= v["share"] <= v["ci_high"]:
                note = "the share lies outside its bootstrap interval: unstable"
            out.append(Effect(self.metric, v["effect"], v["effect_ci_low"],
                              v["effect_ci_high"], v["se"], float("nan"), n, {
                                  "term": comp, "role": "shapley", "share": v["share"],
                                  "share_ci_low": v["ci_low"], "share_ci_high": v["ci_high"],
                                  "share_note": note}))
        for term, v in self.terms.items():
            out.append(Effect(self.metric, v["effect"], v["ci_low"], v["ci_high"], v["se"],
                              v["p_value"], n, {
                                  "term": term,
                                  "role": "interaction" if "×" in term else "main_effect",
                                  "share": float("nan"), "share_ci_low": float("nan"),
                                  "share_ci_high": float("nan"), "share_note": None}))
        return out

    def cell_rows(self) -> list[dict[str, Any]]:
        """Per cell: its name, units, value and standard error."""
        return [{"cell": _cell_name(c, self.components), "n": int(self.cells.n[c]),
                 "value": float(self.cells.value[c]),
                 "se": float(np.sqrt(self.cells.var[c]))} for c in range(len(self.cells.n))]


def _cell_name(mask: int, components: list[str]) -> str:
    on = [name for j, name in enumerate(components) if mask >> j & 1]
    return "+".join(on) if on else "baseline"


def attribute_metric(cells: CellStats, components: list[str], *, metric: str = "metric",
                     alpha: float = 0.05, n_boot: int = 4000, seed: int = 0,
                     ) -> MetricAttribution:
    """Total effect, Shapley values and shares, main effects and interactions of one metric."""
    k = cells.k
    if len(components) != k:
        raise DataValidationError(f"{len(components)} component names for {k} factors",
                                  column="components")
    z = stats.norm.ppf(1 - alpha / 2)
    v, var = cells.value, cells.var
    w_phi, w_tot = shapley_weights(k), total_weights(k)

    def contrast(c: np.ndarray) -> dict[str, float]:
        est = float(c @ v)
        se = float(np.sqrt((c**2) @ var))
        p = float(2 * stats.norm.sf(abs(est) / se)) if se > 0 else float("nan")
        return {"effect": est, "se": se, "ci_low": est - z * se, "ci_high": est + z * se,
                "p_value": p}

    total = contrast(w_tot)
    rng = np.random.default_rng(seed)
    draws = v + rng.standard_normal((n_boot, len(v))) * np.sqrt(var)
    phi_b = draws @ w_phi.T
    tot_b = draws @ w_tot
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    shapley: dict[str, dict[str, float]] = {}
    for j, name in enumerate(components):
        c = contrast(w_phi[j])
        share_b = phi_b[:, j] / tot_b
        shapley[name] = {
            "effect": c["effect"], "se": c["se"],
            "effect_ci_low": float(np.percentile(phi_b[:, j], lo)),
            "effect_ci_high": float(np.percentile(phi_b[:, j], hi)),
            "share": c["effect"] / total["effect"] if total["effect"] != 0 else float("nan"),
            "ci_low": float(np.percentile(share_b, lo)),
            "ci_high": float(np.percentile(share_b, hi)),
        }
    terms = {"×".join(components[a] for a in key): contrast(c)
             for key, c in interaction_weights(k).items()}
    return MetricAttribution(metric, list(components), cells, total, shapley, terms)


def shapley_values(cell_values: np.ndarray) -> np.ndarray:
    """Exact Shapley values of known cell values (for ground truth from a simulator)."""
    v = np.asarray(cell_values, dtype=np.float64)
    return shapley_weights(len(v).bit_length() - 1) @ v
