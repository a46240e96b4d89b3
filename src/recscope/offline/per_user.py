"""Statistics over per-user values: confidence intervals and paired comparisons.

* Intervals: percentile bootstrap over users (resampling users with replacement) and the
  analytic normal interval (mean ± z·sd/√n) alongside.
* Paired comparisons on the same users: paired t-test, Wilcoxon signed-rank and a
  sign-flip randomisation test, with Holm and Benjamini-Hochberg adjustment across all
  tests of a comparison (statsmodels ``multipletests``) and effect sizes.

Random draws use a counter-based generator (``recscope.core.splitmix``, keyed by seed and
replicate), so
results are identical for a given seed whatever the number of threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
from scipy import stats as sps

from recscope.core.splitmix import step
from recscope.errors import ConfigError
from recscope.results import Effect

TESTS: tuple[str, ...] = ("t", "wilcoxon", "randomisation")
ADJUSTMENTS: dict[str, str] = {"holm": "holm", "bh": "fdr_bh", "none": "none"}


@numba.njit(cache=True, parallel=True, nogil=True)
def _bootstrap_means(values: np.ndarray, n_boot: int, seed: np.uint64) -> np.ndarray:
    """``out[b, m]``: mean of column m over a with-replacement resample of the rows."""
    n, m = values.shape  # n < 2**32: the index is a 32x32-bit multiply-shift
    out = np.empty((n_boot, m), dtype=np.float64)
    for b in numba.prange(n_boot):
        state = seed ^ (np.uint64(b + 1) * np.uint64(0xD1B54A32D192ED03))
        acc = np.zeros(m, dtype=np.float64)
        for _ in range(n):
            state, r = step(state)
            i = np.int64(((r >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32))
            for c in range(m):
                acc[c] += values[i, c]
        for c in range(m):
            out[b, c] = acc[c] / n
    return out


@numba.njit(cache=True, parallel=True, nogil=True)
def _signflip_means(diffs: np.ndarray, n_perm: int, seed: np.uint64) -> np.ndarray:
    """``out[b, m]``: mean of column m of ``diffs`` with random signs per row."""
    n, m = diffs.shape
    out = np.empty((n_perm, m), dtype=np.float64)
    for b in numba.prange(n_perm):
        state = seed ^ (np.uint64(b + 1) * np.uint64(0xA24BAED4963EE407))
        acc = np.zeros(m, dtype=np.float64)
        bits = np.uint64(0)
        left = 0
        for i in range(n):
            if left == 0:
                state, bits = step(state)
                left = 64
            s = 1.0 if (bits & np.uint64(1)) else -1.0
            bits = bits >> np.uint64(1)
            left -= 1
            for c in range(m):
                acc[c] += s * diffs[i, c]
        for c in range(m):
            out[b, c] = acc[c] / n
    return out


def _seed64(seed: int | np.random.Generator | None) -> np.uint64:
    if isinstance(seed, np.random.Generator):
        return np.uint64(seed.integers(0, 2**63))
    return np.uint64(np.random.default_rng(seed).integers(0, 2**63))


def check_bootstrap(bootstrap: int, confidence: float) -> None:
    """Refuse a negative number of resamples or a level outside (0, 1), each named."""
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) \
            or bootstrap < 0:
        raise ConfigError(f"bootstrap must be an integer >= 0, got {bootstrap!r}",
                          key="bootstrap")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}", key="confidence")


def intervals(values: np.ndarray, names: Sequence[str] | None = None, *, n_boot: int = 1000,
              confidence: float = 0.95, seed: int | np.random.Generator | None = 0,
              ) -> list[Effect]:
    """Mean and intervals of each column of ``values`` ([n_users, m], NaN rows ignored per
    column), one :class:`Effect` per column named ``names[j]`` (default ``"0"``, ``"1"``...).

    ``ci_low``/``ci_high`` hold the percentile bootstrap interval (the normal interval when
    ``n_boot=0``), ``se`` the standard error sd/sqrt(n), ``extra`` the analytic normal
    interval (``normal_low``, ``normal_high``) alongside."""
    check_bootstrap(n_boot, confidence)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    labels = [str(j) for j in range(values.shape[1])] if names is None else list(names)
    if len(labels) != values.shape[1]:
        raise ConfigError(f"{len(labels)} names for {values.shape[1]} columns", key="names")
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    alpha = 1 - confidence
    base = _seed64(seed)
    nan = float("nan")
    # columns sharing the same NaN pattern are bootstrapped together (same resamples)
    masks = ~np.isnan(values)
    groups: dict[bytes, list[int]] = {}
    for c in range(values.shape[1]):
        groups.setdefault(np.packbits(masks[:, c]).tobytes(), []).append(c)
    res: dict[int, Effect] = {}
    for cols in groups.values():
        sub = np.ascontiguousarray(values[masks[:, cols[0]]][:, cols])
        n = sub.shape[0]
        if n == 0:
            for c in cols:
                res[c] = Effect(labels[c], nan, n=0, extra={"normal_low": nan,
                                                            "normal_high": nan})
            continue
        mean = sub.mean(axis=0)
        se = sub.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.full(len(cols), np.nan)
        if n_boot > 0 and n > 1:
            boots = _bootstrap_means(sub, int(n_boot), base)
            lo = np.quantile(boots, alpha / 2, axis=0)
            hi = np.quantile(boots, 1 - alpha / 2, axis=0)
        else:
            lo, hi = mean - z * se, mean + z * se
        for j, c in enumerate(cols):
            res[c] = Effect(labels[c], float(mean[j]), float(lo[j]), float(hi[j]),
                            float(se[j]), n=n,
                            extra={"normal_low": float(mean[j] - z * se[j]),
                                   "normal_high": float(mean[j] + z * se[j])})
    return [res[c] for c in range(values.shape[1])]


@dataclass(frozen=True)
class PairedTest:
    """One metric of a paired comparison of system B against the baseline A."""

    metric: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    diff_ci_low: float
    diff_ci_high: float
    se: float
    relative: float
    cohens_dz: float
    p_t: float
    p_wilcoxon: float
    p_randomisation: float
    p_value: float
    p_value_adjusted: float = float("nan")
    p_holm: float = float("nan")
    p_bh: float = float("nan")


def paired_tests(a: np.ndarray, b: np.ndarray, metrics: list[str], *, test: str = "t",
                 n_perm: int = 10000, n_boot: int = 1000, confidence: float = 0.95,
                 seed: int | np.random.Generator | None = 0) -> list[PairedTest]:
    """Compare per-user values ``b`` against ``a`` (both [n_users, m], rows aligned).

    Rows with NaN in either system are dropped per metric. ``test`` picks which p-value is
    reported as ``p_value`` (all three are kept)."""
    if test not in TESTS:
        raise ConfigError(f"unknown test {test!r}; choose one of {TESTS}", key="test")
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ConfigError(f"paired values must align: {a.shape} vs {b.shape}", key="compare")
    base = _seed64(seed)
    p_rand = _randomisation_columns(b - a, n_perm, np.uint64(int(base) ^ 0x5DEECE66D))
    out: list[PairedTest] = []
    for c, name in enumerate(metrics):
        ok = ~(np.isnan(a[:, c]) | np.isnan(b[:, c]))
        xa, xb = a[ok, c], b[ok, c]
        d = xb - xa
        n = len(d)
        if n < 2:
            nan = float("nan")
            out.append(PairedTest(name, n, *(nan,) * 12))
            continue
        ci = intervals(d, [name], n_boot=n_boot, confidence=confidence,
                       seed=int(base) + c)[0]
        sd = d.std(ddof=1)
        dz = float(d.mean() / sd) if sd > 0 else (0.0 if d.mean() == 0 else float("inf"))
        if sd > 0:
            p_t = float(sps.ttest_rel(xb, xa).pvalue)
        else:
            p_t = 1.0 if d.mean() == 0 else 0.0
        p_w = float(sps.wilcoxon(d, zero_method="wilcox").pvalue) if np.any(d != 0) else 1.0
        p_r = float(p_rand[c])
        chosen = {"t": p_t, "wilcoxon": p_w, "randomisation": p_r}[test]
        ma = float(xa.mean())
        out.append(PairedTest(
            name, n, ma, float(xb.mean()), float(d.mean()), ci.ci_low, ci.ci_high, ci.se,
            float(d.mean() / ma) if ma != 0 else float("nan"), dz, p_t, p_w, p_r, chosen))
    return out


def _randomisation_columns(diffs: np.ndarray, n_perm: int, seed: np.uint64) -> np.ndarray:
    """Sign-flip p-value of each column (NaN rows count as zero differences, which a sign
    flip leaves unchanged, so each column is tested on its own valid rows)."""
    d = np.ascontiguousarray(np.where(np.isnan(diffs), 0.0, diffs))
    if d.shape[0] == 0:
        return np.ones(d.shape[1])
    observed = np.abs(d.mean(axis=0))
    null = np.abs(_signflip_means(d, int(n_perm), seed))
    extreme = (null >= observed[None, :] - 1e-12 * np.maximum(1.0, observed[None, :])).sum(0)
    p = (extreme + 1) / (n_perm + 1)
    return np.where(np.any(d != 0, axis=0), p, 1.0)


def randomisation_test(diffs: np.ndarray, *, n_perm: int = 10000,
                       seed: int | np.random.Generator | None = 0) -> float:
    """Two-sided sign-flip randomisation p-value of mean(diffs) = 0, with the +1
    correction (Phipson & Smyth 2010) so it is never 0."""
    d = np.asarray(diffs, dtype=np.float64).reshape(-1, 1)
    return float(_randomisation_columns(d, n_perm, _seed64(seed))[0])


def adjust(p_values: np.ndarray, method: str = "holm") -> np.ndarray:
    """Multiple-testing adjustment (``holm``, ``bh`` or ``none``); NaN p-values stay NaN."""
    from recscope.core.multiple_testing import adjust_pvalues

    if method not in ADJUSTMENTS:
        raise ConfigError(f"unknown adjustment {method!r}; choose one of "
                          f"{tuple(ADJUSTMENTS)}", key="adjust")
    return adjust_pvalues(p_values, method)
