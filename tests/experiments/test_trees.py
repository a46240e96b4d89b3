"""Metric trees: the decomposition's algebra, its delta-method gradients and intervals
(against analyze and a bootstrap over units on Hillstrom), and bad trees."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recscope.errors import ConfigError
from recscope.experiments import analyze
from recscope.experiments.metrics import parse_metrics
from recscope.experiments.moments import Moments
from recscope.experiments.trees import (
    TreeDecomposition,
    TreeSpec,
    contributions,
    decompose,
    decompose_experiment,
    load_metrics_with_trees,
    parse_trees,
)
from tests.experiments._data import hillstrom_parquet

TOML = """
unit = "user_id"
[metrics.saves]
kind = "mean"
column = "saves"
[metrics.requests]
kind = "mean"
column = "requests"
[metrics.ipr]
kind = "ratio"
numerator = "impressions"
denominator = "requests"
[metrics.spi]
kind = "ratio"
numerator = "saves"
denominator = "impressions"
[metrics.clicks]
kind = "mean"
column = "clicks"
[trees.saves]
parent = "saves"
op = "product"
children = ["requests", "ipr", "spi"]
by = { column = "surface", values = ["home", "search"] }
"""


def funnel(n: int = 3000, seed: int = 0, lift: float = 1.05) -> tuple[pd.DataFrame,
                                                                      pd.DataFrame]:
    """Per-unit events on two surfaces with a planted lift in requests on home."""
    rng = np.random.default_rng(seed)
    units = np.arange(n)
    variant = rng.choice(["control", "treatment"], n)
    frames = []
    for surface, base in (("home", 3.0), ("search", 1.0)):
        up = lift if surface == "home" else 1.0
        req = rng.poisson(base * np.where(variant == "treatment", up, 1.0))
        imp = rng.poisson(req * 5)
        saves = rng.binomial(imp, 0.1)
        frames.append(pd.DataFrame({"user_id": units, "surface": surface, "requests": req,
                                    "impressions": imp, "saves": saves,
                                    "clicks": saves + rng.poisson(1.0, n)}))
    return pd.DataFrame({"user_id": units, "variant": variant}), pd.concat(frames)


def config_and_trees(text: str = TOML, file: str = "m.toml"):
    data = tomllib.loads(text)
    trees = parse_trees(data.pop("trees"), file=file)
    return parse_metrics(data, source=file), trees


@pytest.mark.parametrize("op", ["product", "sum"])
@pytest.mark.parametrize("parts", [1, 3])
def test_gradients_match_finite_differences(op: str, parts: int) -> None:
    rng = np.random.default_rng(1)
    c = rng.uniform(0.5, 2.0, (parts, 3))
    t = c * rng.uniform(0.9, 1.2, (parts, 3))
    contrib, d_c, d_t = contributions(op, c, t)
    h = 1e-6
    for arr, jac, which in ((c, d_c, "c"), (t, d_t, "t")):
        for s in range(parts):
            for j in range(3):
                up, dn = arr.copy(), arr.copy()
                up[s, j] += h
                dn[s, j] -= h
                args_up = (up, t) if which == "c" else (c, up)
                args_dn = (dn, t) if which == "c" else (c, dn)
                num = (contributions(op, *args_up)[0] - contributions(op, *args_dn)[0]) / (2 * h)
                np.testing.assert_allclose(jac[:, :, s, j], num, atol=1e-7)
    # the contributions add up to the parent's relative effect
    if op == "product":
        parent = np.prod(t, axis=1).sum() / np.prod(c, axis=1).sum() - 1
    else:
        parent = t.sum() / c.sum() - 1
    assert abs(contrib.sum() - parent) < 1e-12


def test_product_at_no_change_is_finite() -> None:
    c = np.array([[1.0, 2.0, 0.5]])
    contrib, d_c, d_t = contributions("product", c, c.copy())
    assert np.all(contrib == 0)
    assert np.all(np.isfinite(d_c)) and np.all(np.isfinite(d_t))


def test_decomposition_adds_up_and_matches_analyze() -> None:
    a, ev = funnel(lift=1.15)
    config, trees = config_and_trees()
    res = decompose_experiment(a, ev, config, trees)
    parent = res.select("saves", "treatment", "parent")[0]
    kids = res.select("saves", "treatment", "child")
    parts = res.select("saves", "treatment", "part")
    cells = res.select("saves", "treatment", "part_child")
    direct = parent.extra["direct_rel_effect"]
    assert abs(sum(k.estimate for k in kids) - direct) < 1e-9
    assert abs(sum(p.estimate for p in parts) - direct) < 1e-9
    assert abs(sum(x.estimate for x in cells) - direct) < 1e-9
    assert len(cells) == 6
    # the parent's interval through the tree is the scorecard's relative interval
    card = analyze(a, ev, config)
    row = next(r for r in card.to_dict()["results"] if r["metric"] == "saves")
    assert parent.estimate == pytest.approx(row["rel_effect"], rel=1e-9)
    half = (row["rel_ci_high"] - row["rel_ci_low"]) / 2
    assert parent.ci_high - parent.estimate == pytest.approx(half, rel=1e-3)
    # the planted lift is in requests on home: that cell carries the effect
    top = max(cells, key=lambda r: r.estimate)
    assert top.metric == "requests@home" and top.ci_low > 0
    # JSON round trip
    again = TreeDecomposition.from_dict(res.to_dict())
    assert [r.estimate for r in again.estimates] == [r.estimate for r in res.estimates]


def test_sum_tree_of_surfaces() -> None:
    a, ev = funnel(seed=3)
    text = TOML.split("[trees.saves]")[0] + """
[metrics.saves_home]
kind = "mean"
column = "saves"
filter = { surface = "home" }
[metrics.saves_search]
kind = "mean"
column = "saves"
filter = { surface = "search" }
[trees.by_surface]
parent = "saves"
op = "sum"
children = ["saves_home", "saves_search"]
"""
    config, trees = config_and_trees(text)
    res = decompose_experiment(a, ev, config, trees)
    parent = res.select("by_surface", "treatment", "parent")[0]
    kids = res.select("by_surface", "treatment", "child")
    assert abs(sum(k.estimate for k in kids) - parent.extra["direct_rel_effect"]) < 1e-12


def test_children_that_do_not_multiply_to_the_parent(tmp_path: Path) -> None:
    a, ev = funnel(n=500)
    path = tmp_path / "metrics.toml"
    path.write_text(TOML.replace('children = ["requests", "ipr", "spi"]',
                                 'children = ["requests", "ipr", "clicks"]'))
    config, trees = load_metrics_with_trees(path)
    with pytest.raises(ConfigError) as exc:
        decompose_experiment(a, ev, config, trees)
    msg = str(exc.value)
    assert str(path) in msg and "trees.saves" in msg and "multiply" in msg


def test_a_missing_part_is_named(tmp_path: Path) -> None:
    a, ev = funnel(n=500)
    path = tmp_path / "metrics.toml"
    path.write_text(TOML.replace('values = ["home", "search"]', 'values = ["home"]'))
    config, trees = load_metrics_with_trees(path)
    with pytest.raises(ConfigError, match=r"trees\.saves\.by\.values"):
        decompose_experiment(a, ev, config, trees)


@pytest.mark.parametrize(("old", "new", "key"), [
    ('children = ["requests", "ipr", "spi"]', 'children = ["requests", "nope"]',
     "trees.saves.children"),
    ('op = "product"', 'op = "ratio"', "trees.saves.op"),
    ('parent = "saves"', 'parent = "saves"\nweight = 2', "trees.saves.weight"),
])
def test_bad_tree_tables(tmp_path: Path, old: str, new: str, key: str) -> None:
    path = tmp_path / "metrics.toml"
    path.write_text(TOML.replace(old, new))
    with pytest.raises(ConfigError) as exc:
        load_metrics_with_trees(path)
    assert key in str(exc.value) and str(path) in str(exc.value)


def test_tree_spec_rejects_a_parent_among_children() -> None:
    with pytest.raises(ValueError, match="own child"):
        TreeSpec(parent="a", op="sum", children=("a", "b"))


def test_hillstrom_intervals_match_a_unit_bootstrap(tmp_path: Path) -> None:
    """spend per customer = visit rate x conversions per visit x spend per conversion:
    delta-method standard errors of every contribution within 10% of a bootstrap over
    customers (1000 draws)."""
    h, _ = hillstrom_parquet(tmp_path)
    h = h[h["segment"].isin(["No E-Mail", "Womens E-Mail"])]
    x = {arm: h.loc[h["segment"] == arm, ["visit", "conversion", "spend"]].to_numpy(float)
         for arm in ("No E-Mail", "Womens E-Mail")}
    tree = TreeSpec(parent="spend", op="product", children=("visit", "cpv", "spc"))
    terms = {"visit": (0, None), "cpv": (1, 0), "spc": (2, 1), "spend": (2, None)}

    def run(xc: np.ndarray, xt: np.ndarray) -> np.ndarray:
        est = decompose("spend", tree, Moments.from_data(xc), Moments.from_data(xt), terms,
                        variant="t")
        return np.array([r.estimate for r in est.rows]), np.array([r.se for r in est.rows])

    point, se = run(x["No E-Mail"], x["Womens E-Mail"])
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(1000):
        xc, xt = x["No E-Mail"], x["Womens E-Mail"]
        boots.append(run(xc[rng.integers(0, len(xc), len(xc))],
                         xt[rng.integers(0, len(xt), len(xt))])[0])
    boot_se = np.std(boots, axis=0, ddof=1)
    np.testing.assert_allclose(se, boot_se, rtol=0.10)
    assert abs(point[1:].sum() - point[0]) < 1e-12
