"""Holdout tracking (experiments/tracking.py) against a brute-force pandas computation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.tracking import TOTAL, Design, TrackingResult, track

SURF = ("home_feed", "search")


def make_data(seed: int = 0, n: int = 400, days: int = 30, effect: float = 0.5,
              per_surface: bool = False) -> tuple[pa.Table, pa.Table]:
    """Units arriving over the period, held out at random, Poisson events per day and
    surface; exposed units get ``effect`` more clicks a day on home_feed after day 10."""
    rng = np.random.default_rng(seed)
    units = np.arange(n) * 7 + 3  # ids that are not row numbers
    held = rng.random(n) < 0.3
    held_s = {s: (rng.random(n) < 0.3) if per_surface else held for s in SURF}
    first = rng.integers(-3, days, n)
    rows = []
    for i, u in enumerate(units):
        for d in range(max(first[i], -3), days):
            if rng.random() < 0.4:
                continue
            for s in SURF:
                lam = 1.0 + (effect if s == "home_feed" and d >= 10
                             and not held_s[s][i] else 0.0)
                rows.append((u, d, s, rng.poisson(lam), rng.poisson(0.3)))
    ev = pd.DataFrame(rows, columns=["unit_id", "day", "surface", "clicks", "saves"])
    cols: dict[str, Any] = {"unit_id": units, "holdout": held}
    if per_surface:
        cols["holdout"] = held_s["home_feed"] & held_s["search"]
        for s in SURF:
            cols[f"holdout_{s}"] = held_s[s]
    return pa.table(cols), pa.Table.from_pandas(ev, preserve_index=False)


def brute(a: pa.Table, ev: pa.Table, surface: str, metric: str, lo: int, hi: int,
          look: int, start: int, per_day: bool = False) -> tuple[float, float, int, int]:
    """exposed − holdout of per-unit sums over [lo, min(hi, look)) among units whose first
    event in [start, ...) is before ``look``; and its standard error."""
    e = ev.to_pandas()
    e = e[e["day"] >= start]
    first = e.groupby("unit_id")["day"].min()
    ad = a.to_pandas().set_index("unit_id")
    if surface == TOTAL:
        if "holdout_home_feed" in ad:
            hs = ad[[f"holdout_{s}" for s in SURF]].sum(axis=1)
            arm = pd.Series(np.where(hs == len(SURF), 1.0, np.where(hs == 0, 0.0, np.nan)),
                            index=ad.index)
        else:
            arm = ad["holdout"].astype(float)
        es = e
    else:
        col = f"holdout_{surface}" if f"holdout_{surface}" in ad else "holdout"
        arm = ad[col].astype(float)
        es = e[e["surface"] == surface]
    units = first[first < look].index
    units = units[units.isin(arm.index)]
    units = units[~arm.loc[units].isna().to_numpy()]
    sel = es[(es["day"] >= lo) & (es["day"] < min(hi, look))]
    y = sel.groupby("unit_id")[metric].sum().reindex(units, fill_value=0).astype(float)
    if per_day:
        y = y / (hi - lo)
    h = arm.loc[units].to_numpy() == 1
    yh, ye = y.to_numpy()[h], y.to_numpy()[~h]
    est = ye.mean() - yh.mean()
    se = math.sqrt(ye.var(ddof=1) / ye.size + yh.var(ddof=1) / yh.size)
    return est, se, int(h.sum()), int((~h).sum())


def brute_cuped(a: pa.Table, ev: pa.Table, surface: str, metric: str, lo: int, hi: int,
                look: int, pre: int, per_day: bool) -> tuple[float, float]:
    """CUPED by hand: the covariate is the unit's sum over the ``pre`` days before 0."""
    e = ev.to_pandas()
    first = e[e["day"] >= 0].groupby("unit_id")["day"].min()
    ad = a.to_pandas().set_index("unit_id")
    arm = ad["holdout"].astype(float)
    es = e if surface == TOTAL else e[e["surface"] == surface]
    units = first[first < look].index
    sel = es[(es["day"] >= lo) & (es["day"] < min(hi, look))]
    y = sel.groupby("unit_id")[metric].sum().reindex(units, fill_value=0).astype(float)
    if per_day:
        y = y / (hi - lo)
    w = es[(es["day"] >= -pre) & (es["day"] < 0)].groupby("unit_id")[metric].sum()
    x = w.reindex(units, fill_value=0).astype(float).to_numpy()
    h = arm.loc[units].to_numpy() == 1
    yv = y.to_numpy()
    cov = sum(np.cov(yv[g], x[g])[0, 1] * (g.sum() - 1) for g in (h, ~h))
    var = sum(x[g].var(ddof=1) * (g.sum() - 1) for g in (h, ~h))
    theta = cov / var
    adj = yv - theta * (x - x.mean())
    est = adj[~h].mean() - adj[h].mean()
    se = math.sqrt(adj[~h].var(ddof=1) / (~h).sum() + adj[h].var(ddof=1) / h.sum())
    return est, se


def test_cuped_matches_brute_force_and_narrows() -> None:
    a, ev = make_data(seed=5)
    launches = ({"name": "L1", "day": 10, "surface": "home_feed"},)
    plain = track(a, ev, Design(0, 30, launches=launches))
    r = track(a, ev, Design(0, 30, launches=launches, pre_days=3))
    for x in r.values:
        est, se = brute_cuped(a, ev, x["surface"], x["metric"], x["start"], x["end"],
                              x["look"], 3, x["series"] == "window")
        assert x["estimate"] == pytest.approx(est, abs=1e-9), x
        assert x["se"] == pytest.approx(se, rel=1e-7), x
    ratio = [x["se"] / y["se"] for x, y in zip(r.values, plain.values, strict=True)
             if x["series"] == "cumulative" and x["look"] == 7]
    assert np.mean(ratio) < 1.0  # the pre-period explains part of the first week


def test_bucket_mode_matches_the_exact_estimates() -> None:
    a, ev = make_data(seed=6, n=1500, per_surface=True)
    e = ev.to_pandas()
    first = e[e["day"] >= 0].groupby("unit_id")["day"].min()
    units = a.column("unit_id").to_pylist()
    keep = [u in first.index for u in units]
    a = a.filter(pa.array(keep)).append_column(
        "first_day", pa.array([int(first[u]) for u, k in zip(units, keep, strict=True) if k]))
    launches = ({"name": "L1", "day": 10, "surface": "home_feed"},
                {"name": "L2", "day": 17, "surface": "search"})
    exact = track(a, ev, Design(0, 30, launches=launches))
    fast = track(a, ev, Design(0, 30, launches=launches, buckets=64))
    assert fast.surfaces == exact.surfaces and fast.buckets == 64
    assert any("64 hash buckets" in n for n in fast.notes())
    ratios = []
    for x, y in zip(exact.values, fast.values, strict=True):
        assert (x["series"], x["surface"], x["metric"], x["look"]) == (
            y["series"], y["surface"], y["metric"], y["look"])
        assert (x["n_holdout"], x["n_exposed"]) == (y["n_holdout"], y["n_exposed"])
        assert y["estimate"] == pytest.approx(x["estimate"], abs=1e-9)
        ratios.append(y["se"] / x["se"])
    assert 0.9 < np.mean(ratios) < 1.1 and 0.6 < min(ratios) and max(ratios) < 1.5
    with pytest.raises(DataValidationError, match="first_day"):
        track(a.drop(["first_day"]), ev, Design(0, 30, buckets=64))


def test_bucket_mode_cuped_matches_the_exact_cuped() -> None:
    """CUPED from the buckets' sums (pre-period sums per bucket and first cell) against
    the exact mode's per-unit CUPED: the same counts, estimates within a small share of
    the standard error (θ comes from the buckets), standard errors within a few percent,
    and narrower than the bucket mode without CUPED."""
    a, ev = make_data(seed=6, n=3000, per_surface=True)
    e = ev.to_pandas()
    first = e[e["day"] >= 0].groupby("unit_id")["day"].min()
    units = a.column("unit_id").to_pylist()
    keep = [u in first.index for u in units]
    a = a.filter(pa.array(keep)).append_column(
        "first_day", pa.array([int(first[u]) for u, k in zip(units, keep, strict=True) if k]))
    launches = ({"name": "L1", "day": 10, "surface": "home_feed"},)
    # heavy-tailed activity: a unit's clicks before and after the start share its rate
    rng = np.random.default_rng(1)
    rate = dict(zip(a.column("unit_id").to_pylist(), rng.gamma(0.5, 4.0, a.num_rows),
                    strict=True))
    extra = rng.poisson([rate.get(u, 1.0) for u in ev.column("unit_id").to_pylist()])
    ev = ev.set_column(ev.schema.get_field_index("clicks"), "clicks",
                       pa.array(ev.column("clicks").to_numpy() + extra))
    exact = track(a, ev, Design(0, 30, launches=launches, pre_days=3))
    fast = track(a, ev, Design(0, 30, launches=launches, pre_days=3, buckets=128))
    plain = track(a, ev, Design(0, 30, launches=launches, buckets=128))
    assert fast.pre_days == 3 and fast.buckets == 128
    gaps, ratios, shrink = [], [], []
    for x, y, z in zip(exact.values, fast.values, plain.values, strict=True):
        assert (x["series"], x["surface"], x["look"]) == (y["series"], y["surface"],
                                                          y["look"])
        assert (x["n_holdout"], x["n_exposed"]) == (y["n_holdout"], y["n_exposed"])
        gaps.append(abs(y["estimate"] - x["estimate"]) / x["se"])
        ratios.append(y["se"] / x["se"])
        if x["series"] == "cumulative" and x["look"] == 7 and x["metric"] == "clicks":
            shrink.append(y["se"] / z["se"])
    assert max(gaps) < 0.25 and np.mean(gaps) < 0.06  # θ's bucket noise, O(1/sqrt(B))
    assert 0.9 < np.mean(ratios) < 1.1 and 0.7 < min(ratios) and max(ratios) < 1.3
    assert np.mean(shrink) < 0.9  # the pre-period explains part of the first week
    # a NULL metric in the pre-period is refused, as in the period
    clicks = ev.column("clicks").to_pylist()
    clicks[int(np.flatnonzero(ev.column("day").to_numpy() < 0)[0])] = None
    bad = ev.set_column(ev.schema.get_field_index("clicks"), "clicks",
                        pa.array(clicks, pa.int64()))
    with pytest.raises(DataValidationError, match="CUPED pre-period have a NULL"):
        track(a, bad, Design(0, 30, pre_days=3, buckets=128))


def rows_of(r: TrackingResult, series: str) -> list[dict[str, Any]]:
    return [x for x in r.values if x["series"] == series]


@pytest.mark.parametrize("per_surface", [False, True])
def test_matches_brute_force(per_surface: bool) -> None:
    a, ev = make_data(per_surface=per_surface)
    launches = ({"name": "L1", "day": 10, "surface": "home_feed"},
                {"name": "L2", "day": 17, "surface": "search"})  # not on a week boundary
    design = Design(0, 30, launches=launches)
    r = track(a, ev, design)
    assert r.surfaces == list(SURF)
    assert [w["start"] for w in r.windows] == [0, 10, 17]
    checked = 0
    for x in r.values:
        per_day = x["series"] == "window"
        est, se, nh, ne = brute(a, ev, x["surface"], x["metric"], x["start"], x["end"],
                                x["look"], 0, per_day)
        assert (x["n_holdout"], x["n_exposed"]) == (nh, ne), x
        assert x["estimate"] == pytest.approx(est, abs=1e-9), x
        assert x["se"] == pytest.approx(se, rel=1e-9), x
        assert x["ci_low"] < x["naive_low"] < x["estimate"] < x["naive_high"] < x["ci_high"]
        checked += 1
    # 5 weekly looks (7, 14, 21, 28, 30) for cumulative and weekly; windows: 0-10 looks at
    # 7 and 10, 10-17 at 14 and 17, 17-30 at 21, 28, 30; 3 surface keys, 2 metrics
    assert checked == (5 + 5 + 7) * 3 * 2


def test_detects_the_effect_and_changes() -> None:
    a, ev = make_data(seed=1, n=1500, effect=1.0)
    r = track(a, ev, Design(0, 30, launches=({"name": "L1", "day": 10,
                                              "surface": "home_feed"},)))
    last = {(x["surface"], x["metric"]): x for x in rows_of(r, "cumulative")
            if x["look"] == 30}
    assert last[("home_feed", "clicks")]["ci_low"] > 0  # 20 days × ~0.6 more clicks
    win = {(x["surface"], x["window"]): x for x in rows_of(r, "window")
           if x["look"] == x["end"] and x["metric"] == "clicks"}
    assert win[("home_feed", 0)]["ci_low"] < 0 < win[("home_feed", 0)]["ci_high"]
    assert win[("home_feed", 1)]["change"] == pytest.approx(
        win[("home_feed", 1)]["estimate"] - win[("home_feed", 0)]["estimate"])
    assert win[("home_feed", 1)]["estimate"] > 0.3


def test_truth_is_matched_by_key() -> None:
    a, ev = make_data(seed=2)
    design = Design(0, 30)
    truth = [{"series": "cumulative", "surface": TOTAL, "metric": "clicks", "start": 0,
              "end": 30, "effect": 1e6}]
    r = track(a, ev, design, truth=truth)
    hit = [x for x in r.values if "true_effect" in x]
    assert len(hit) == 1 and hit[0]["look"] == 30 and hit[0]["covered"] is False


def test_result_round_trip_and_html(tmp_path: Any) -> None:
    a, ev = make_data(seed=3)
    r = track(a, ev, Design(0, 30, launches=({"name": "L1", "day": 10,
                                              "surface": "home_feed"},)))
    back = TrackingResult.load(r.save(tmp_path / "t.json"))
    assert back.values[5]["estimate"] == pytest.approx(r.values[5]["estimate"])
    html = r.to_html()
    assert "plotly" in html and "Cumulative effect" in html
    assert {row["series"] for row in r.rows()} == {"cumulative", "window 0", "window 1"}


def test_bad_inputs() -> None:
    a, ev = make_data(seed=4)
    with pytest.raises(DataValidationError, match="missing column 'holdout'"):
        track(a.drop(["holdout"]), ev, Design(0, 30))
    with pytest.raises(DataValidationError, match="missing column 'saves'"):
        track(a, ev.drop(["saves"]), Design(0, 30))
    dup = pa.concat_tables([a, a.slice(0, 2)])
    with pytest.raises(DataValidationError, match="more than once"):
        track(dup, ev, Design(0, 30))
    clicks = ev.column("clicks").to_pylist()
    clicks[3] = None
    with pytest.raises(DataValidationError, match="NULL value"):
        track(a, ev.set_column(3, "clicks", pa.array(clicks, pa.int64())), Design(0, 30))
    with pytest.raises(ConfigError, match="outside the tracked period"):
        Design(5, 30, launches=({"name": "x", "day": 2, "surface": "search"},))
    with pytest.raises(ConfigError, match="empty"):
        Design(5, 5)
    with pytest.raises(DataValidationError, match="no assigned unit"):
        track(a, ev, Design(100, 130))
