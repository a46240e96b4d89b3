"""Long-term holdouts and accumulating launches in the simulator (sim/long_run.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from recscope.errors import ConfigError
from recscope.experiments.assignment import HOLDOUT, Experiment, assign
from recscope.sim.config import SURFACES
from recscope.sim.environment import Environment
from recscope.sim.long_run import (
    _ALL,
    LongRunTruth,
    _columns,
    _Policies,
    experiment_cells,
    holdout_experiment,
    holdout_masks,
    parse_long_run,
    run_long_run,
    schedule,
    simulate_masks,
    world_cells,
)
from recscope.sim.policy_factory import PolicyFactory
from recscope.sim.stacks import SlateContext
from recscope.sim.true_effects import GroundTruth
from recscope.sim.world_source import build_world, world_log

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
    s = spec(holdout={"surfaces": {"home_feed": 0.3, "search": 0.3}, "salt": "p"},
             experiment=[EXP])
    r = run_long_run(s, tmp_path / "p")
    # the experiment on the home feed takes the units not held out of the home feed,
    # whether or not they are held out of search
    ab = pq.read_table(tmp_path / "p" / "experiments" / "ab" / "assignments.parquet")
    flags = pq.read_table(tmp_path / "p" / "assignments.parquet").to_pandas().set_index(
        "unit_id").loc[ab.column("unit_id").to_numpy()]
    assert not flags["holdout_home_feed"].any() and flags["holdout_search"].any()
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


# ---------------------------------------------------------------------- [[experiment]]
EXP: dict[str, Any] = {"name": "ab", "surface": "home_feed", "start_day": 5, "end_day": 12,
                       "variants": {"control": {}, "treatment": {"retriever": "embedding_v2"}}}


@pytest.mark.parametrize(("exp", "message"), [
    ({**EXP, "end_day": 15}, "ends after the last simulated day"),
    ({**EXP, "end_day": 5}, "end_day (5) must be after start_day (5)"),
    ({**EXP, "start_day": -1}, "experiment.0.start_day"),
    ({**EXP, "holdout": 0.1}, "never includes the long-term holdout's units"),
    ({**EXP, "surface": "feed"}, "unknown surface 'feed'"),
    ({**EXP, "surface": "search"}, "cannot change the retriever"),
    ({**EXP, "variants": {"a": {}, "b": {"ranker": "popularity"}}}, "one called 'control'"),
    ({**EXP, "name": "a/b"}, "experiment.0.name"),
])
def test_bad_experiments_name_the_file_and_problem(exp: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) \
            as err:
        spec(experiment=[exp])
    assert "x.toml" in str(err.value)


def test_overlapping_experiments_in_one_layer_are_refused() -> None:
    other = {**EXP, "name": "ab2", "start_day": 10, "end_day": 14}
    with pytest.raises(ConfigError, match="same time in layer 'l'"):
        spec(experiment=[{**EXP, "layer": "l"}, {**other, "layer": "l"}])
    # disjoint traffic, or disjoint days, or another layer: allowed
    spec(experiment=[{**EXP, "layer": "l", "traffic": [0, 0.5]},
                     {**other, "layer": "l", "traffic": [0.5, 1]}])
    spec(experiment=[{**EXP, "layer": "l"}, {**other, "layer": "l", "start_day": 12}])
    spec(experiment=[EXP, other])


@pytest.mark.parametrize("holdout", [{"share": 0.2, "salt": "s"},
                                     {"surfaces": {"home_feed": 0.3}, "salt": "s"}])
def test_experiment_is_orthogonal_to_the_holdout(holdout: dict[str, Any]) -> None:
    s = spec(holdout=holdout, experiment=[EXP, {**EXP, "name": "cd", "surface": "search",
                                                "variants": {"control": {}, "b": {
                                                    "ranker": "popularity"}}}])
    units = np.arange(40_000, dtype=np.int64)
    mask = holdout_masks(s.holdout, units)
    cells = experiment_cells(s, units)
    would_be = experiment_cells(s, units, with_holdout=False)
    held_home = (mask & 1) > 0
    # held-out units never enter an experiment on a surface they are held out of ...
    assert (cells[0][held_home] == -1).all() and (cells[0][~held_home] >= 0).all()
    # ... and one with no holdout on its surface takes everyone
    held_search = (mask & 4) > 0
    assert (cells[1][held_search] == -1).all() and (cells[1][~held_search] >= 0).all()
    # the realised cells are the would-be cells of the units not held out
    assert np.array_equal(cells, world_cells(s, would_be, mask))
    # the split does not depend on the holdout: treatment share in and out of it
    treat = would_be[0] == 1
    for group in (held_home, ~held_home):
        p = treat[group].mean()
        assert abs(p - 0.5) < 3.5 * np.sqrt(0.25 / group.sum()), p
    # nor do the two experiments' splits depend on each other (own layers and salts)
    both = ((would_be[0] == 1) & (would_be[1] == 1)).mean()
    assert abs(both - 0.25) < 3.5 * np.sqrt(0.25 * 0.75 / units.size)


@pytest.fixture(scope="module")
def run_ab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    out = tmp_path_factory.mktemp("lr-ab") / "out"
    aa = {**EXP, "name": "aa", "surface": "search", "start_day": 3, "end_day": 9,
          "variants": {"control": {}, "same": {}}}
    return run_long_run(spec(experiment=[EXP, aa]), out), out


def test_run_with_experiments_writes_their_folders(run_ab: tuple[Any, Path]) -> None:
    result, out = run_ab
    plan = json.loads((out / "launches.json").read_text())
    assert [x["name"] for x in plan["experiments"]] == ["ab", "aa"]
    holdout = pq.read_table(out / "assignments.parquet").to_pandas().set_index("unit_id")
    for x in result.experiments:
        folder = out / x["folder"]
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
            "assignments.parquet", "events.parquet", "metrics.toml", "truth.json"]
        a = pq.read_table(folder / "assignments.parquet")
        assert a.column_names == ["unit_id", "variant", "first_exposure_ts"]
        ids = a.column("unit_id").to_numpy()
        assert not holdout.loc[ids, "holdout"].any()  # nobody from the held-out share
        assert a.num_rows == x["n_units"] == sum(x["units_per_variant"].values())
        ev = pq.read_table(folder / "events.parquet")
        day = ev.column("day").to_numpy()
        assert day.max() < x["end_day"] and day.min() >= x["start_day"] - 7
        assert set(ev.column("unit_id").to_numpy()) <= set(ids)
        truth = GroundTruth.from_dict(json.loads((folder / "truth.json").read_text()))
        assert truth.cells[0] == "control" and truth.n_units == a.num_rows
    effects = {x["name"]: {(t["metric"], t["variant"]): t["effect"]
                           for t in x["true_effects"]} for x in result.experiments}
    # an A/A experiment's replays are identical: its true effects are exactly 0
    assert effects["aa"] and all(v == 0.0 for v in effects["aa"].values())
    assert effects["ab"][("clicks", "treatment")] != 0.0


def test_experiment_output_is_analysable_as_is(run_ab: tuple[Any, Path],
                                               tmp_path: Path) -> None:
    from recscope.experiments.analysis import analyze
    from recscope.experiments.metrics import load_metrics

    _, out = run_ab
    folder = out / "experiments" / "ab"
    card = analyze(str(folder / "assignments.parquet"), [str(folder / "events.parquet")],
                   load_metrics(folder / "metrics.toml"))
    rows = {e.metric: e for e in card.results}
    assert {"clicks", "saves", "ctr", "sessions", "active_days"} <= set(rows)
    assert all(e.extra["variant"] == "treatment" for e in card.results)
    assert card.srm["ok"]


def test_realised_run_is_the_truths_replays_unit_by_unit(run: tuple[Any, Path]) -> None:
    """Exposed units live the "every launch" replay and held-out units the "no launch"
    one, click for click: no state shared between users, so exposed − holdout estimates
    exactly what the truth computes (docs/long_run.md, validation)."""
    _, out = run
    s = spec()
    truth = build_world(s.world)
    env = Environment(truth, s.simulation, seed=s.seed)
    pols = _Policies(PolicyFactory(truth, seed=s.seed, train_data=lambda: world_log(s.world)),
                     s)
    n = truth.n_users
    warm = env.run([pols.incumbent], days=s.warmup_days, calibrate=True, names=["incumbent"])
    ev = pq.read_table(out / "events.parquet")
    day = ev.column("day").to_numpy()
    user = ev.column("unit_id").to_numpy()[day >= 0]
    surface = np.array(ev.column("surface").to_pylist(), dtype=object)[day >= 0]
    clicks = ev.column("clicks").to_numpy().astype(float)[day >= 0]
    a = pq.read_table(out / "assignments.parquet")
    units = a.column("unit_id").to_numpy()
    held = a.column("holdout").to_numpy(zero_copy_only=False).astype(bool)
    assert held.any() and (~held).any()
    replays = {}
    for name, m in (("all", 0), ("none", _ALL)):
        res = simulate_masks(env, pols, schedule(s), np.full(n, m, np.int64), warm.state)
        replays[name] = _columns(res, s.warmup_days)
    for i, surf in enumerate(SURFACES):
        real = np.bincount(user[surface == surf], clicks[surface == surf], minlength=n)
        rep = {}
        for name, c in replays.items():
            k = (c["day"] >= 0) & (c["surface"] == i)
            rep[name] = np.bincount(c["user"][k], c["clicks"][k], minlength=n)
        assert real[units].sum() > 0
        assert np.array_equal(real[units[~held]], rep["all"][units[~held]])
        assert np.array_equal(real[units[held]], rep["none"][units[held]])
