"""Factorial attribution: agreement with statsmodels, Shapley axioms, interval coverage."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from recscope.attribution import CellStats, attribute_metric, shapley_values
from recscope.errors import DataValidationError


def _units(true_cells: np.ndarray, n_per_cell: int, rng: np.random.Generator,
           noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    cells = np.repeat(np.arange(len(true_cells)), n_per_cell)
    y = true_cells[cells] + rng.standard_normal(cells.size) * noise * (1 + 0.5 * (cells % 2))
    return cells, y


def test_terms_match_saturated_ols_with_hc2_standard_errors() -> None:
    rng = np.random.default_rng(3)
    true = np.array([1.0, 1.3, 0.9, 1.8, 1.1, 1.2, 1.5, 2.4])
    cells = rng.integers(0, 8, 3000)
    y = true[cells] + rng.standard_normal(3000) * (1 + cells / 4)
    df = pd.DataFrame({"y": y, **{f"z{j}": (cells >> j) & 1 for j in range(3)}})
    fit = smf.ols("y ~ z0 * z1 * z2", df).fit(cov_type="HC2")
    res = attribute_metric(CellStats.from_units(cells, y, 3), ["z0", "z1", "z2"])
    for key, term in res.terms.items():
        name = ":".join(key.split("×"))
        assert term["effect"] == pytest.approx(fit.params[name], abs=1e-9)
        assert term["se"] == pytest.approx(fit.bse[name], rel=1e-9)


def test_shapley_axioms() -> None:
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 4):
        v = rng.normal(size=1 << k)
        phi = shapley_values(v)
        assert phi.sum() == pytest.approx(v[-1] - v[0])  # efficiency
    # a dummy component (no effect in any coalition) gets zero
    v = np.array([1.0, 1.0, 3.0, 3.0])  # component 0 changes nothing
    assert shapley_values(v) == pytest.approx([0.0, 2.0])
    # symmetric components get equal values; the interaction is split between them
    v = np.array([0.0, 1.0, 1.0, 3.0])
    assert shapley_values(v) == pytest.approx([1.5, 1.5])


def test_ratio_cells_from_sums_equal_unit_computation() -> None:
    rng = np.random.default_rng(1)
    cells = rng.integers(0, 4, 2000)
    den = rng.poisson(20, 2000) + 1.0
    num = rng.binomial(den.astype(int), 0.05 + 0.01 * cells).astype(float)
    st = CellStats.from_units(cells, num, 2, denominator=den)
    for c in range(4):
        m = cells == c
        assert st.value[c] == pytest.approx(num[m].sum() / den[m].sum())
    assert (st.var > 0).all()


def test_shapley_share_intervals_cover_the_truth() -> None:
    """Over 300 simulated 2×2 experiments the 95% intervals cover the true shares ~95%."""
    rng = np.random.default_rng(7)
    true = np.array([1.0, 1.4, 1.25, 1.9])  # positive interaction
    phi = shapley_values(true)
    share = phi / (true[-1] - true[0])
    hits_share = np.zeros(2)
    hits_effect = np.zeros(2)
    reps = 300
    for _ in range(reps):
        cells, y = _units(true, 400, rng)
        res = attribute_metric(CellStats.from_units(cells, y, 2), ["a", "b"], n_boot=1000,
                               seed=int(rng.integers(1 << 30)))
        for j, name in enumerate(["a", "b"]):
            c = res.shapley[name]
            hits_share[j] += c["ci_low"] <= share[j] <= c["ci_high"]
            hits_effect[j] += c["effect_ci_low"] <= phi[j] <= c["effect_ci_high"]
    assert ((hits_share / reps > 0.92) & (hits_share / reps < 0.98)).all(), hits_share / reps
    assert ((hits_effect / reps > 0.92) & (hits_effect / reps < 0.98)).all(), hits_effect / reps


def test_bad_cells_are_rejected() -> None:
    with pytest.raises(DataValidationError, match="2\\^K"):
        CellStats(np.ones(3) * 5, np.zeros(3), np.ones(3))
    with pytest.raises(DataValidationError, match="fewer than 2"):
        CellStats.from_units(np.array([0, 0, 1, 2, 3, 3]), np.arange(6.0), 2)
    st = CellStats.from_units(np.repeat(np.arange(4), 5), np.arange(20.0), 2)
    with pytest.raises(DataValidationError, match="component names"):
        attribute_metric(st, ["only-one"])


def test_interaction_term_names_and_json_shape() -> None:
    rng = np.random.default_rng(2)
    cells, y = _units(np.array([0.0, 0.2, 0.1, 0.5]), 200, rng)
    out = attribute_metric(CellStats.from_units(cells, y, 2), ["retriever", "ranker"]).to_dict()
    assert set(out["components"]) == {"retriever", "ranker"}
    assert list(out["interactions"]) == ["retriever×ranker"]
    assert {c["cell"] for c in out["cells"]} == {"baseline", "retriever", "ranker",
                                                 "retriever+ranker"}
    assert list(itertools.chain(out["total"])) == ["effect", "se", "ci_low", "ci_high",
                                                   "p_value"]
