"""Multiple-testing adjustment of p-values: the one implementation in recscope.

``adjust_pvalues(p, method)`` with ``method`` one of ``holm`` (family-wise error,
step-down), ``bh`` (Benjamini-Hochberg false discovery rate, step-up), ``bonferroni`` or
``none``. A NaN p-value is a test that could not be computed: it is left out of the
family (it neither counts towards the number of tests nor is adjusted) and comes back
NaN. The results equal statsmodels' ``multipletests`` (tests check it); this module needs
only numpy, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recscope.errors import ConfigError

METHODS: tuple[str, ...] = ("holm", "bh", "bonferroni", "none")


def _holm(p: np.ndarray) -> np.ndarray:
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def _bh(p: np.ndarray) -> np.ndarray:
    m = p.size
    order = np.argsort(p, kind="stable")[::-1]
    scaled = p[order] * m / np.arange(m, 0, -1)
    out = np.empty(m)
    out[order] = np.minimum(np.minimum.accumulate(scaled), 1.0)
    return out


def adjust_pvalues(p_values: Sequence[float] | np.ndarray, method: str = "holm"
                   ) -> np.ndarray:
    """Adjusted p-values (same shape as the input); NaN p-values stay NaN and are not part
    of the family. ``method``: ``holm``, ``bh``, ``bonferroni`` or ``none``."""
    if method not in METHODS:
        raise ConfigError(f"unknown p-value adjustment {method!r} (expected one of "
                          f"{', '.join(METHODS)})", key="correction")
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.reshape(-1)
    out = np.full(flat.shape, np.nan)
    ok = ~np.isnan(flat)
    if ok.any():
        bad = flat[ok][(flat[ok] < 0) | (flat[ok] > 1)]
        if bad.size:
            raise ValueError(f"p-values must lie in [0, 1], got {bad[0]!r}")
        family = flat[ok]
        if method == "none":
            out[ok] = family
        elif method == "bonferroni":
            out[ok] = np.minimum(family * family.size, 1.0)
        elif method == "holm":
            out[ok] = _holm(family)
        else:
            out[ok] = _bh(family)
    return out.reshape(p.shape)
