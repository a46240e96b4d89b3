"""Long-term holdouts and accumulating launches in the simulator (sim/long_run.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from recscope.errors import ConfigError
from recscope.experiments.assignment import HOLDOUT, Experiment, assign
from recscope.sim.long_run import (
    LongRunTruth,
    _Policies,
    holdout_experiment,
    holdout_masks,
    parse_long_run,
    run_long_run,
    schedule,
)
from recscope.sim.policy_factory import PolicyFactory
from recscope.sim.stacks import SlateContext
from recscope.sim.world_source import build_world

BASE: dict[str, Any] = {
    "name": "t", "seed": 3, "weeks": 2, "warmup_days": 2, "world": {"scale": 0.03},
    "policy": {"retriever": "embedding", "ranker": "affinity"},
    "holdout": {"share": 0.2, "salt": "s"},
    "launch": [{"day": 4, "surface": "home_feed", "change": {"ranker": "affinity_quality"}},
               {"day": 9, "surface": "search", "change": {"ranker": "popularity"}}],
}


def spec(**over: Any) -> Any:
    return parse_long_run({**BASE, **over}, file="x.toml")


@pytest.mark.parametrize(("over", "message"), [
    ({"holdout": {"share": 0.0}}, "holdout.share must be above 0 and below 0.5"),
    ({"holdout": {"share": 0.5}}, "holdout.share must be above 0 and below 0.5"),
    ({"holdout": {"surfaces": {"home_feed": 0.7}}}, "holdout.surfaces.home_feed must be"),
    ({"holdout": {"surfaces": {"feed": 0.1}}}, "unknown surface 'feed'"),
    ({"holdout": {"share": 0.1, "surfaces": {"search": 0.1}}}, "exactly one of"),
    ({"holdout": {"share": 0.1, "start_day": 5}}, "before the holdout starts"),
    ({"launch": [{"day": 1, "surface": "feed", "change": {"ranker": "affinity"}}]},
     "unknown surface 'feed'"),
    ({"launch": [{"day": 1, "surface": "search", "change": {"retriever": "random"}}]},
     "cannot change the retriever"),
    ({"launch": [{"day": 14, "surface": "search", "change": {"ranker": "affinity"}}]},
     "after the last simulated day"),
    ({"launch": [{"day": 1, "surface": "search", "change": {"colour": "red"}}]},
     "unknown key 'colour'"),
    ({"launch": []}, "at least 1"),
])
def test_bad_specs_name_the_file_and_problem(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        spec(**over)
    assert "x.toml" in str(err.value)


def test_holdout_is_the_assignment_layers_holdout() -> None:
    units = np.arange(20_000)
    s = spec()
    mask = holdout_masks(s.holdout, units)
    assert set(np.unique(mask)) == {0, 7}
    assert abs((mask == 7).mean() - 0.2) < 0.01
    # an experiment that names the same holdout keeps exactly these units out
    other = Experiment("ranker-test", holdout=holdout_experiment(0.2, "s").holdout)
    assert np.array_equal(assign(units, other) == HOLDOUT, mask == 7)
    per = spec(holdout={"surfaces": {"home_feed": 0.1, "search": 0.3}, "salt": "s"})
    m = holdout_masks(per.holdout, units)
    home, related, search = (m & 1) > 0, (m & 2) > 0, (m & 4) > 0
    assert not related.any()
    assert abs(home.mean() - 0.1) < 0.01 and abs(search.mean() - 0.3) < 0.015
    assert abs((home & search).mean() - 0.03) < 0.006  # independent salts


def test_launches_accumulate_and_dispatch_by_surface() -> None:
    s = spec(launch=[
        {"day": 4, "surface": "home_feed", "change": {"ranker": "affinity_quality"}},
        {"day": 7, "surface": "home_feed", "change": {"retriever": "popular"}},
        {"day": 7, "surface": "search", "change": {"ranker": "popularity"}}])
    segs = schedule(s)
    assert [(g.start, g.end, g.launched) for g in segs] == [(0, 4, []), (4, 7, [1]),
                                                            (7, 14, [2, 3])]
    assert segs[2].stacks["home_feed"] == {"retriever": "popular",
                                           "ranker": "affinity_quality"}
    assert segs[2].stacks["related"] == dict(s.policy)
    truth = build_world(s.world)
    pols = _Policies(PolicyFactory(truth, seed=3), s)
    arms, novel = pols.arms(segs[2], {"home_feed", "search"})
    # new to users unless held out of both launched surfaces (masks 5 and 7)
    assert novel == [m & 5 != 5 for m in range(8)]
    users = np.arange(5)
    ctx = SlateContext(day=0, step=0, query_topic=np.zeros(5, np.int64),
                       seed_item=np.zeros(5, np.int64), keys=np.arange(5, dtype=np.uint64))
    held = arms[7](users, "home_feed", 10, ctx)
    exposed = arms[0](users, "home_feed", 10, ctx)
    assert np.array_equal(held, pols.incumbent(users, "home_feed", 10, ctx))
    assert not np.array_equal(held, exposed)
    # mask 1 = held out of home_feed only: incumbent there, launched on search
    assert np.array_equal(arms[1](users, "home_feed", 10, ctx), held)
    assert np.array_equal(arms[1](users, "search", 10, ctx), arms[0](users, "search", 10, ctx))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    out = tmp_path_factory.mktemp("lr") / "out"
    return run_long_run(spec(), out), out


def test_run_writes_the_contract(run: tuple[Any, Path]) -> None:
    result, out = run
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "assignments.parquet", "events.parquet", "launches.json", "summary.json",
        "truth.json"]
    a = pq.read_table(out / "assignments.parquet")
    assert a.column_names == ["unit_id", "variant", "holdout", "holdout_home_feed",
                              "holdout_related", "holdout_search", "first_exposure_ts",
                              "first_day"]
    held = a.column("holdout").to_numpy(zero_copy_only=False)
    assert 0.1 < held.mean() < 0.3
    assert set(a.column("variant").to_pylist()) == {"holdout", "exposed"}
    ev = pq.read_table(out / "events.parquet")
    day = ev.column("day").to_numpy()
    assert day.min() == -2 and day.max() == 13  # warm-up days are negative
    assert set(ev.column("surface").to_pylist()) <= {"home_feed", "related", "search"}
    assert (ev.column("week").to_numpy() == np.floor_divide(day, 7)).all()
    assert result.n_units == a.num_rows


def test_truth_is_zero_before_the_first_launch(run: tuple[Any, Path]) -> None:
    _, out = run
    t = LongRunTruth.load(out / "truth.json")
    pre = [r for r in t.values if r["series"] == "window" and r["index"] == 0]
    assert pre and all(r["effect"] == 0.0 for r in pre)  # days 0-3: identical replays
    after = t.lookup("cumulative", "home_feed", "impressions")
    assert after[2] != 0.0  # the launches changed what users saw
    clicks = t.lookup("cumulative", "total", "clicks")
    parts = sum(t.lookup("cumulative", s, "clicks")[2]
                for s in ("home_feed", "related", "search"))
    assert clicks[2] == pytest.approx(parts)


def test_per_surface_holdout_run(tmp_path: Path) -> None:
    s = spec(holdout={"surfaces": {"home_feed": 0.3, "search": 0.3}, "salt": "p"})
    r = run_long_run(s, tmp_path / "p")
    a = pq.read_table(tmp_path / "p" / "assignments.parquet")
    assert a.column_names == ["unit_id", "variant", "holdout", "holdout_home_feed",
                              "holdout_search", "first_exposure_ts", "first_day"]
    both = a.column("holdout_home_feed").to_numpy(zero_copy_only=False) & a.column(
        "holdout_search").to_numpy(zero_copy_only=False)
    assert np.array_equal(a.column("holdout").to_numpy(zero_copy_only=False), both)
    assert set(a.column("variant").to_pylist()) == {"holdout", "exposed", "partial"}
    assert r.truth is not None
    assert r.truth.worlds == ["all", "none", "home_feed:on", "home_feed:off", "search:on",
                              "search:off"]
    # the home feed's launch is on from day 4: forcing it on vs off moves home impressions
    assert r.truth.lookup("cumulative", "home_feed", "impressions")[2] != 0.0
