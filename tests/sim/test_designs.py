"""Designs in the simulator (recscope.sim.designs): assignment through the experiments'
functions, the logs they produce, bias against the truth, and bad designs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.assignment import Experiment
from recscope.experiments.designs import DesignConfig, assign_clusters
from recscope.sim.config import WorldConfig
from recscope.sim.designs import (
    compare_designs,
    design_tables,
    plan_design,
)
from recscope.sim.environment import Environment, Schedule, SimConfig
from recscope.sim.experiment_config import ExperimentSpec
from recscope.sim.stacks import StackPolicy, WorldIndex
from recscope.sim.world_model import WorldTruth, build_truth

_DAY = 86_400_000_000
EXP = Experiment("t", variants=("control", "treatment"), salt="test")


@pytest.fixture(scope="module")
def truth() -> WorldTruth:
    cfg = WorldConfig(seed=0, n_users=600, n_items=300, n_creators=40, n_impressions=1000)
    return build_truth(cfg, np.random.default_rng(0))


def _env(truth: WorldTruth, **sim: object) -> Environment:
    return Environment(truth, SimConfig.model_validate(sim), seed=3)


def test_a_cluster_shares_one_arm_assigned_by_the_one_hash(truth: WorldTruth) -> None:
    env = _env(truth, social={"enabled": True, "communities": 8, "in_community": 0.95})
    plan = plan_design(env, DesignConfig(kind="cluster", graph="social", n_clusters=8),
                       EXP, days=2, start_us=env.start_us)
    assert plan.cluster is not None and isinstance(plan.arm, np.ndarray)
    for c in np.unique(plan.cluster):
        assert np.unique(plan.arm[plan.cluster == c]).size == 1
    np.testing.assert_array_equal(plan.arm, assign_clusters(plan.cluster, EXP))
    assert 0 < plan.clustering["cut_fraction"] < 0.3  # planted communities are found
    # markets as clusters
    env = _env(truth, regions=6)
    plan = plan_design(env, DesignConfig(kind="cluster", graph="regions"), EXP, days=2,
                       start_us=env.start_us)
    np.testing.assert_array_equal(plan.cluster, env.region)
    # hierarchical: cluster-mode clusters share an arm; unit-mode users are split
    env = _env(truth, regions=16)
    plan = plan_design(env, DesignConfig(kind="hierarchical", graph="regions"), EXP, days=2,
                       start_us=env.start_us)
    assert plan.mode is not None and set(plan.mode) == {"cluster", "unit"}
    for c in np.unique(plan.cluster):
        arms = np.unique(plan.arm[plan.cluster == c])
        assert arms.size == (1 if plan.mode[plan.cluster == c][0] == "cluster" else 2)


def test_engagement_clusters_come_from_the_warm_ups_clicks(truth: WorldTruth) -> None:
    """graph = "engagement": the warm-up's user-creator clicks, clustered; a cluster
    shares one arm, and a design without the warm-up's clicks is refused."""
    from recscope.sim.designs import EngagementStats, design_label

    env = _env(truth)
    ic = np.asarray(env.item_creator, dtype=np.int64)
    stats = EngagementStats(ic, truth.n_users, env.n_creators)
    warm = env.run(_pols(truth)[:1], days=3, observe=stats)
    u, c, w = stats.edges()
    assert w.sum() == warm.columns["clicks"].sum() > 0  # every click, once
    assert np.unique(u * env.n_creators + c).size == u.size  # one row per pair
    for method in ("leiden", "metis"):
        d = DesignConfig(kind="cluster", graph="engagement", method=method, n_clusters=12)
        plan = plan_design(env, d, EXP, days=2, start_us=env.start_us, engagement=stats)
        assert plan.cluster is not None and isinstance(plan.arm, np.ndarray)
        for k in np.unique(plan.cluster):
            assert np.unique(plan.arm[plan.cluster == k]).size == 1
        assert plan.clustering["graph"] == "engagement"
        assert 0 < plan.clustering["cut_fraction"] < 1
        assert design_label(d) == ("cluster:engagement" + (":metis" if method == "metis"
                                                           else ""))
    with pytest.raises(ConfigError, match="EngagementStats"):
        plan_design(env, DesignConfig(kind="cluster", graph="engagement"), EXP, days=2,
                    start_us=env.start_us)
    with pytest.raises(ConfigError, match="no clicks in the warm-up"):
        plan_design(env, DesignConfig(kind="cluster", graph="engagement"), EXP, days=2,
                    start_us=env.start_us,
                    engagement=EngagementStats(ic, truth.n_users, env.n_creators))


def _pols(truth: WorldTruth) -> list[StackPolicy]:
    idx = WorldIndex(truth)
    return [StackPolicy(truth, "embedding", "affinity", index=idx, name="control"),
            StackPolicy(truth, "popular", "affinity", index=idx, name="treatment")]


def test_switchback_tables_follow_the_schedule(truth: WorldTruth) -> None:
    env = _env(truth, regions=4)
    pols = _pols(truth)
    state = env.warmup(pols[0], days=1)
    start = env.start_us + state.day * _DAY
    d = DesignConfig(kind="switchback", slice_hours=12, burn_in_hours=2, regions=4)
    plan = plan_design(env, d, EXP, days=2, start_us=start)
    assert isinstance(plan.arm, Schedule) and plan.schedule is not None
    assert plan.schedule.shape == (4, 4)
    res = env.run(pols, days=2, arm=plan.arm, state=state)
    sched, events, _ = design_tables(plan, res, env)
    assert sched.num_rows == 16 and set(sched.column_names) == {"region", "slice", "variant"}
    lut = {(r, s): v for r, s, v in zip(*(sched.column(c).to_pylist() for c in
                                          ("region", "slice", "variant")), strict=True)}
    served = ["control", "treatment"]
    for r, s, a in zip(*(events.column(c).to_pylist() for c in ("region", "slice", "arm")),
                       strict=True):
        assert lut[(r, s)] == served[a]
    with pytest.raises(ConfigError, match="slice_hours"):
        plan_design(env, DesignConfig(kind="switchback", slice_hours=72), EXP, days=2,
                    start_us=start)
    with pytest.raises(ConfigError, match="regions"):
        plan_design(env, DesignConfig(kind="switchback", slice_hours=12, regions=3), EXP,
                    days=2, start_us=start)


def _spec(**over: object) -> ExperimentSpec:
    return ExperimentSpec.model_validate({
        "name": "t", "seed": 11, "days": 6, "warmup_days": 2, "world": {"scale": 0.08},
        "simulation": {"regions": 8, "creator_supply": {
            "enabled": True, "weight": 1.5, "elasticity": 1.0, "rate": 0.5}},
        "policy": {"retriever": "embedding", "ranker": "affinity", "pool": 30},
        "experiment": [{"name": "r", "variants": {"control": {},
                                                   "treatment": {"retriever": "popular"}}}],
        **over})


def test_market_clusters_cut_the_bias_of_the_unit_design() -> None:
    """Strong creator-side supply in 8 markets: randomising whole markets is much closer
    to the global effect than randomising users (who share each market's supply)."""
    res = compare_designs(_spec(), [DesignConfig(kind="unit"),
                                    DesignConfig(kind="cluster", graph="regions")], reps=3)
    rows = {(r["design"], r["metric"]): r for r in res.rows_}
    unit, cl = rows[("unit", "ctr")], rows[("cluster:regions", "ctr")]
    assert abs(unit["bias"]) > 2.5 * unit["bias_se"]  # the naive test is visibly biased
    assert abs(cl["bias"]) < 0.5 * abs(unit["bias"])
    assert unit["truth"] == pytest.approx(cl["truth"])  # same estimand, same replays
    assert {"design", "metric", "estimate", "ci_low", "ci_high", "truth", "bias", "rmse",
            "coverage", "mde"} <= set(res.records()[0])
    assert res.to_html().count("plotly-graph-div") >= 1


def test_simulate_and_compare_an_engagement_cluster_design() -> None:
    """`simulate` assigns whole engagement clusters (from its own warm-up's clicks) and
    design-compare runs them beside the unit design against the same truth."""
    from recscope.sim import run_experiment

    d = DesignConfig(kind="cluster", graph="engagement", method="metis", n_clusters=12)
    sim = run_experiment(_spec(design=d.model_dump(), truth=False))
    assert sim.design is not None and sim.design["label"] == "cluster:engagement:metis"
    assert 0 < sim.design["cut_fraction"] < 1
    a = sim.assignments
    by_cluster: dict[int, set[str]] = {}
    for c, v in zip(a.column("cluster_id").to_pylist(), a.column("variant").to_pylist(),
                    strict=True):
        by_cluster.setdefault(c, set()).add(v)
    assert len(by_cluster) >= 8 and all(len(v) == 1 for v in by_cluster.values())
    res = compare_designs(_spec(), [DesignConfig(kind="unit"), d], reps=2)
    rows = {(r["design"], r["metric"]): r for r in res.rows_}
    ctr = rows[("cluster:engagement:metis", "ctr")]
    assert ctr["truth"] == pytest.approx(rows[("unit", "ctr")]["truth"])
    assert math.isfinite(ctr["estimate"]) and ctr["design_effect"] > 0


def test_bad_graph_files(tmp_path: Path, truth: WorldTruth) -> None:
    env = _env(truth, regions=6)
    n = truth.n_users
    edges = tmp_path / "edges.csv"
    pcsv.write_csv(pa.table({"src": [0, 1, n + 5], "dst": [1, 2, 3]}), edges)
    with pytest.raises(DataValidationError) as e:
        plan_design(env, DesignConfig(kind="cluster", graph=str(edges)), EXP, days=2,
                    start_us=0)
    assert "edges.csv" in str(e.value) and "src" in str(e.value) and "row 3" in str(e.value)
    two = tmp_path / "two.csv"
    pcsv.write_csv(pa.table({"unit_id": [*range(n), 0],
                             "cluster_id": [u % 10 for u in range(n)] + [7]}), two)
    with pytest.raises(DataValidationError, match="two clusters") as e:
        plan_design(env, DesignConfig(kind="cluster", graph=str(two)), EXP, days=2,
                    start_us=0)
    assert "two.csv" in str(e.value) and "cluster_id" in str(e.value)
    few = tmp_path / "few.csv"
    pcsv.write_csv(pa.table({"unit_id": list(range(n)), "cluster_id": [u % 2 for u in
                                                                       range(n)]}), few)
    with pytest.raises(DataValidationError, match="at least 2 clusters per arm"):
        plan_design(env, DesignConfig(kind="cluster", graph=str(few)), EXP, days=2,
                    start_us=0)
    ok = tmp_path / "ok.csv"
    pcsv.write_csv(pa.table({"unit_id": list(range(n)), "cluster_id": [u % 40 for u in
                                                                      range(n)]}), ok)
    plan = plan_design(env, DesignConfig(kind="cluster", graph=str(ok)), EXP, days=2,
                       start_us=0)
    assert plan.cluster is not None and np.unique(plan.cluster).size == 40
    with pytest.raises(ConfigError, match="social"):
        plan_design(env, DesignConfig(kind="cluster", graph="social"), EXP, days=2,
                    start_us=0)


def test_creator_split_serves_each_creator_by_its_arm(truth: WorldTruth) -> None:
    """A creator-side experiment: control creators' pins come from the control ranking,
    treatment creators' from the treatment ranking, in rank order, no pin twice."""
    from recscope.sim.designs import CreatorSplit
    from recscope.sim.stacks import SlateContext

    env = _env(truth)
    plan = plan_design(env, DesignConfig(kind="creator"), EXP, days=2, start_us=0)
    assert plan.creator_arm is not None and set(plan.creator_arm) == {0, 1}
    np.testing.assert_array_equal(plan.creator_arm,
                                  assign_clusters(np.arange(env.n_creators), EXP))
    pols = _pols(truth)
    item_arm = plan.creator_arm[env.item_creator]
    users = np.arange(50, dtype=np.int64)
    ctx = SlateContext(day=0, step=0, query_topic=np.full(50, -1), seed_item=np.full(50, -1),
                       keys=np.arange(50, dtype=np.uint64))
    out = CreatorSplit(pols[0], pols[1], item_arm)(users, "home", 10, ctx)
    a = np.asarray(pols[0](users, "home", 20, ctx))
    b = np.asarray(pols[1](users, "home", 20, ctx))
    for i in range(50):
        row = out[i][out[i] >= 0]
        assert len(set(row)) == row.size > 0
        for it in row:
            src = a[i] if item_arm[it] == 0 else b[i]
            assert it in src
        mine = [it for it in a[i] if item_arm[it] == 0]
        got = [it for it in row if item_arm[it] == 0]
        assert got == mine[:len(got)]  # control creators' pins keep the control order


def _slate(surface: str, session: int, key: int, items: list[int], click: int = -1,
           save: int = -1) -> object:
    """One observed slate of one request (every slot shown; a click and a save at the
    given positions)."""
    from recscope.sim.behaviour import SlateResponse
    from recscope.sim.environment import SlateObservation

    it = np.array([items], dtype=np.int64)
    k = it.shape[1]
    shown = np.ones((1, k), dtype=bool)
    clicked = np.zeros((1, k), dtype=bool)
    saved = np.zeros((1, k), dtype=bool)
    if click >= 0:
        clicked[0, click] = True
    if save >= 0:
        saved[0, save] = True
    one = np.array([1], dtype=np.int32)
    resp = SlateResponse(np.array([k], np.int32), one * clicked.sum(), one * 0,
                         one * saved.sum(), one * 0, np.zeros(1, bool),
                         np.array([items[click] if click >= 0 else -1]), shown, saved,
                         clicked, np.zeros((1, k), dtype=bool))
    return SlateObservation(0, 0, surface, np.zeros(1, np.int64), np.full(1, 2), it,
                            np.zeros(1, np.int64), np.array([session]),
                            np.array([key], dtype=np.uint64), resp)


def test_creator_stats_credit_related_slates_to_their_origin() -> None:
    """By origin, a related-pins slate counts for the creator whose pin started it: the
    last clicked pin's creator, else the previous top pin's, through chains of related
    slates; home-feed and search pins for their own creators. The totals are unchanged."""
    from recscope.sim.designs import CreatorSplit, CreatorStats

    item_creator = np.array([0, 0, 1, 1, 2, 2])
    split = CreatorSplit(None, None, np.zeros(6, dtype=np.int64))
    by_pin = CreatorStats(item_creator, 3)
    by_origin = CreatorStats(item_creator, 3, split=split)
    assert split.seeds == {}
    obs = [_slate("home_feed", 7, 1, [2, 4, 0], click=0),  # clicks creator 1's pin 2
           _slate("related", 7, 2, [0, 5, 3], click=1, save=1),  # seeded by pin 2
           _slate("related", 7, 3, [1, 4]),  # seeded by pin 5, clicked on a related slate
           _slate("search", 8, 4, [4, 1]),  # no click: its top pin 4 (creator 2) seeds
           _slate("related", 8, 5, [0, 2])]
    split.seeds.update({2: 2, 3: 5, 5: 4})
    for o in obs:
        by_pin(o)
        by_origin(o)
    np.testing.assert_array_equal(by_pin.impressions, [5, 3, 4])
    np.testing.assert_array_equal(by_origin.impressions, [2, 6, 4])
    np.testing.assert_array_equal(by_pin.clicks, [0, 1, 1])
    np.testing.assert_array_equal(by_origin.clicks, [0, 2, 0])
    np.testing.assert_array_equal(by_origin.saves, [0, 1, 0])
    assert by_origin.unseen_seeds == 0 and split.seeds == {}


def test_origin_credit_follows_the_environments_seeds(truth: WorldTruth) -> None:
    """In a simulated creator split every related slate's seed was shown earlier in its
    session (the credit mirrors how the environment picks seeds), and crediting by
    origin moves events between creators without changing their totals."""
    from recscope.sim.designs import CreatorSplit, CreatorStats

    env = _env(truth, novelty=0.0, satisfaction_effect=0.0)
    pols = _pols(truth)
    plan = plan_design(env, DesignConfig(kind="creator"), EXP, days=2, start_us=0)
    assert plan.creator_arm is not None
    ic = np.asarray(env.item_creator, dtype=np.int64)
    split = CreatorSplit(pols[0], pols[1], plan.creator_arm[ic])
    by_pin = CreatorStats(ic, env.n_creators)
    by_origin = CreatorStats(ic, env.n_creators, split=split)
    related = [0]

    def both(o: object) -> None:
        by_pin(o)
        by_origin(o)
        related[0] += o.surface == "related"  # type: ignore[attr-defined]

    env.run([*pols, split], days=10, arm=plan.arm, novel=[False, True, False],
            observe=both)
    assert related[0] > 50 and split.seeds == {} and by_origin.unseen_seeds == 0
    for a, b in ((by_pin.impressions, by_origin.impressions),
                 (by_pin.clicks, by_origin.clicks), (by_pin.saves, by_origin.saves)):
        assert a.sum() == b.sum()
    assert np.abs(by_pin.impressions - by_origin.impressions).sum() > 0.01 * \
        by_pin.impressions.sum()


def test_default_designs_follow_the_interference_channels() -> None:
    from recscope.sim.designs import default_designs, design_label

    social = SimConfig.model_validate({"social": {"enabled": True}})
    assert [design_label(d) for d in default_designs(social, 10, 800)] == [
        "unit", "cluster:social", "hierarchical:social", "switchback:48h/24h"]
    assert default_designs(social, 10, 800)[1].n_clusters == 20
    markets = SimConfig(regions=20)
    assert [design_label(d) for d in default_designs(markets, 14, 5000)] == [
        "unit", "cluster:regions", "hierarchical:regions", "switchback:72h/48hx20"]


def test_cautions_name_carry_over_and_the_creator_estimand() -> None:
    from recscope.sim.designs import design_cautions

    sb = DesignConfig(kind="switchback", slice_hours=48, burn_in_hours=24, regions=4)
    designs = [DesignConfig(kind="unit"), sb, DesignConfig(kind="creator")]
    out = design_cautions(SimConfig(regions=4), designs)
    assert len(out) == 2
    assert out[0].startswith("switchback:48h/24hx4") and "memory 0.7" in out[0]
    assert "6.5 days" in out[0] and "novelty" in out[0] and "supply" not in out[0]
    # the burn-in the carry-over implies: the novelty 95% worn off, 4 x ln 20 sessions at
    # 0.4 a day = 30 days; without novelty, satisfaction 95% gone (8.4 days)
    assert "at least 719 h" in out[0] and "this design's is 24 h" in out[0]
    assert "this design's" not in design_cautions(SimConfig(regions=4), [
        DesignConfig(kind="switchback", slice_hours=1008, burn_in_hours=720, regions=4)])[0]
    assert "at least 202 h" in design_cautions(SimConfig(regions=4, novelty=0.0), [sb])[0]
    assert out[1].startswith("creator:") and "Related-pins slates count" in out[1]
    assert "novelty" in out[1] and "not its global effect" in out[1]
    # no carry-over in the platform: nothing to say about the switchback
    quiet = SimConfig(regions=4, satisfaction_effect=0.0, novelty=0.0)
    assert design_cautions(quiet, designs) == []  # nor about the creator design
    supply = SimConfig(regions=4, satisfaction_effect=0.0, novelty=0.0,
                       creator_supply={"enabled": True, "rate": 0.5})
    assert "rate 0.5" in design_cautions(supply, [sb])[0]
    assert "supply" in design_cautions(supply, [DesignConfig(kind="creator")])[0]
    assert "at least 104 h" in design_cautions(supply, [sb])[0]  # (1 - 0.5)^4.3 = 5%


def test_cuped_days_read_the_warm_up_as_pre_period(truth: WorldTruth) -> None:
    """With ``cuped_days`` the warm-up's events are the units' pre-period: the unit and
    cluster designs' analyses adjust for it (smaller standard errors on the same run,
    the same truth)."""
    import tomllib

    from recscope.experiments.metrics import parse_metrics
    from recscope.sim.designs import run_rep

    text = """unit = "unit_id"
variant = "variant"
control = "control"
[metrics.ctr]
kind = "ratio"
numerator = "clicks"
denominator = "impressions"
[metrics.clicks]
kind = "mean"
column = "clicks"
"""
    cuped = text.replace('denominator = "impressions"\n',
                         'denominator = "impressions"\ncuped_days = 30\n') + "cuped_days = 30\n"
    designs = [DesignConfig(kind="unit"), DesignConfig(kind="cluster", graph="regions")]
    base = {"retriever": "embedding", "ranker": "affinity", "pool": 30}
    out = [run_rep(truth, SimConfig(regions=8), designs,
                   [base, {**base, "retriever": "popular"}],
                   parse_metrics(tomllib.loads(t)), seed=5, salt="s", days=4, warmup_days=4)
           for t in (text, cuped)]
    for d in ("unit", "cluster:regions"):
        for m in ("ctr", "clicks"):
            raw, adj = out[0]["designs"][d][m], out[1]["designs"][d][m]
            assert adj["truth"] == raw["truth"]
            assert adj["se"] < 0.95 * raw["se"], (d, m, raw["se"], adj["se"])
            assert adj["estimate"] != raw["estimate"]


def test_creator_design_rows_use_the_jackknife_with_its_df(truth: WorldTruth) -> None:
    """The creator design's rows come from analyze_design with every creator its own
    cluster: CR3 with its Satterthwaite df (a few creators hold much of an arm's
    impressions, so the CTR has far fewer effective clusters than creators), CR1 kept."""
    from scipy import stats

    from recscope.experiments.metrics import parse_metrics
    from recscope.sim.designs import run_rep, summarise

    cfg = parse_metrics({"metrics": {"clicks": {"kind": "mean", "column": "clicks"}}})
    policy = {"retriever": "embedding", "ranker": "affinity", "pool": 30}
    sim = SimConfig.model_validate({"novelty": 0.0, "satisfaction_effect": 0.0})
    rec = run_rep(truth, sim, [DesignConfig(kind="creator")], [policy, policy], cfg,
                  seed=5, salt="creator-test", days=2, warmup_days=1)
    rows = rec["designs"]["creator"]
    ctr, exposure = rows["ctr"], rows["exposure"]
    assert ctr["truth"] == 0.0  # an A/A change
    assert ctr["effective_clusters"] < 0.8 * 40  # the fixture's 40 creators
    assert ctr["df"] < ctr["effective_clusters"] - 1
    crit = stats.t.ppf(0.975, ctr["df"])
    assert ctr["ci_high"] - ctr["estimate"] == pytest.approx(crit * ctr["se"], rel=1e-9)
    assert ctr["se"] > ctr["se_cr1"]
    # equal weights (a mean per creator): every creator counts
    assert exposure["effective_clusters"] == pytest.approx(40, rel=1e-9)
    row = summarise([rec], ["creator"], ["ctr"])[0]
    assert row["effective_clusters"] == pytest.approx(ctr["effective_clusters"])
    assert row["df"] == pytest.approx(ctr["df"])
