"""The one p-value adjustment: equal to statsmodels, NaN excluded from the family."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from recscope.core.multiple_testing import adjust_pvalues
from recscope.errors import ConfigError


@pytest.mark.parametrize("method,sm", [("holm", "holm"), ("bh", "fdr_bh"),
                                       ("bonferroni", "bonferroni")])
def test_equals_statsmodels(method: str, sm: str) -> None:
    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 50):
        p = rng.uniform(size=size) ** 3
        p[: size // 3] = p[0]  # ties
        np.testing.assert_allclose(adjust_pvalues(p, method), multipletests(p, method=sm)[1],
                                   rtol=0, atol=1e-15)


def test_nan_is_outside_the_family() -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03])
    out = adjust_pvalues(p, "holm")
    assert np.isnan(out[1])
    # three tests in the family, not four
    np.testing.assert_allclose(out[[0, 2, 3]], multipletests([0.01, 0.04, 0.03], method="holm")[1])
    assert np.isnan(adjust_pvalues([np.nan], "bh")).all()
    np.testing.assert_array_equal(adjust_pvalues(p, "none")[[0, 2, 3]], p[[0, 2, 3]])


def test_bad_method_and_values() -> None:
    with pytest.raises(ConfigError, match="unknown p-value adjustment"):
        adjust_pvalues([0.1], "sidak")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_pvalues([1.5], "holm")
    assert adjust_pvalues([], "holm").shape == (0,)
