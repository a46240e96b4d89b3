"""Assignment: determinism, allocation, uniformity over salts, independence of layers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from recscope.errors import ConfigError
from recscope.experiments.assignment import (
    HOLDOUT,
    Experiment,
    Holdout,
    assign,
    assignment_table,
    check_layer,
    hash_units,
    unit_hash,
)

IDS = np.arange(20_000)


def test_vectorised_hash_equals_scalar_reference_for_ints_and_strings() -> None:
    ids = [0, 7, 123456789, "user-42", "ü-ñ", ""]
    vec = hash_units(["0", "7", "123456789", "user-42", "ü-ñ", ""], "s1")
    assert vec.tolist() == [unit_hash(u, "s1") for u in ids]
    assert hash_units(np.array([7, 8]), "s").tolist() == hash_units(["7", "8"], "s").tolist()


def test_assign_is_deterministic_and_batch_independent() -> None:
    e = Experiment("exp", variants=("a", "b", "c"))
    full = assign(IDS, e)
    parts = np.concatenate([assign(IDS[:7], e), assign(IDS[7:], e)])
    assert (full == parts).all()
    assert (assign(IDS[::-1], e)[::-1] == full).all()
    assert (assign(IDS, Experiment("exp", variants=("a", "b", "c"), salt="v2")) != full).mean() \
        > 0.5


def test_weights_give_planned_shares() -> None:
    e = Experiment("w", variants=("control", "t1", "t2"), weights=(2, 1, 1))
    v = assign(IDS, e)
    counts = [np.sum(v == k) for k in e.variants]
    assert sps.chisquare(counts, np.array([0.5, 0.25, 0.25]) * len(IDS)).pvalue > 1e-3
    assert e.allocation == pytest.approx({"control": 0.5, "t1": 0.25, "t2": 0.25})


def test_uniform_over_many_salts() -> None:
    """Chi-square p-values of the 4-way split over 200 salts are uniform (KS test)."""
    pvals = []
    for s in range(200):
        v = assign(IDS[:4000], Experiment(f"salt{s}", variants=("a", "b", "c", "d")))
        counts = [np.sum(v == k) for k in "abcd"]
        pvals.append(sps.chisquare(counts).pvalue)
    assert sps.kstest(pvals, "uniform").pvalue > 1e-3
    assert np.mean(np.array(pvals) < 0.05) < 0.12


def test_layers_are_independent_over_many_salts() -> None:
    """The 2x2 table of two experiments in different layers shows no association."""
    pvals = []
    for s in range(150):
        a = assign(IDS[:4000], Experiment(f"A{s}", layer=f"L1-{s}"))
        b = assign(IDS[:4000], Experiment(f"B{s}", layer=f"L2-{s}"))
        table = [[np.sum((a == x) & (b == y)) for y in ("control", "treatment")]
                 for x in ("control", "treatment")]
        pvals.append(sps.chi2_contingency(table, correction=False).pvalue)
    assert sps.kstest(pvals, "uniform").pvalue > 1e-3


def test_traffic_ranges_make_experiments_in_a_layer_exclusive() -> None:
    e1 = Experiment("one", layer="ranking", traffic=(0.0, 0.3))
    e2 = Experiment("two", layer="ranking", traffic=(0.3, 1.0))
    a, b = assign(IDS, e1), assign(IDS, e2)
    in_a = np.array([x is not None for x in a])
    in_b = np.array([x is not None for x in b])
    assert not (in_a & in_b).any()
    assert (in_a | in_b).all()
    assert abs(in_a.mean() - 0.3) < 0.02
    check_layer([e1, e2])
    with pytest.raises(ConfigError, match="overlap"):
        check_layer([e1, Experiment("three", layer="ranking", traffic=(0.2, 0.5))])


def test_holdout_is_shared_and_kept_out() -> None:
    h = Holdout(0.1, salt="2026")
    a = assign(IDS, Experiment("x", holdout=h))
    b = assign(IDS, Experiment("y", layer="other", holdout=h))
    assert ((a == HOLDOUT) == (b == HOLDOUT)).all()
    assert abs(np.mean(a == HOLDOUT) - 0.1) < 0.01
    t = assignment_table(IDS, Experiment("x", holdout=h))
    assert t.num_rows == int(np.sum(a != HOLDOUT))


@pytest.mark.parametrize("kwargs", [{"variants": ("a", "a")}, {"weights": (1.0,)},
                                    {"traffic": (0.5, 0.5)}, {"variants": ("holdout", "b")}])
def test_bad_experiments_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Experiment("bad", **kwargs)
