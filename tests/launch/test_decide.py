"""Decision rules on planted effects, the simulator hook and the portfolio's arithmetic."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from recscope.errors import ConfigError
from recscope.launch import (
    SIM_LAUNCH,
    SIM_METRICS,
    LaunchConfig,
    LaunchDecision,
    decide,
    decide_simulated,
    load_experiment,
    portfolio,
)
from recscope.launch.decide import check_guardrail, check_primary, combine
from recscope.launch.inputs import Experiment
from recscope.results import Effect
from tests.launch._data import ROOT, experiment_dir


def row(metric: str, est: float, se: float) -> Effect:
    return Effect(metric, est, se=se, extra={"variant": "treatment"})


@pytest.mark.parametrize(("est", "se", "min_effect", "status", "outcome"), [
    (0.05, 0.01, 0.01, "win", "ship"),
    (0.005, 0.001, 0.01, "below practical", "stop"),   # upper bound < minimum effect
    (0.012, 0.004, 0.01, "win", "ship"),
    (0.008, 0.003, 0.01, "small win", "iterate"),      # significant, below practical
    (-0.05, 0.01, 0.0, "loss", "stop"),
    (0.01, 0.02, 0.0, "inconclusive", "iterate"),
    (math.nan, 0.01, 0.0, "not computable", "iterate"),
])
def test_primary_rules(est: float, se: float, min_effect: float, status: str,
                       outcome: str) -> None:
    c = check_primary("m", row("m", est, se), "increase", min_effect, 0.05, "x")
    assert (c.extra["status"], c.extra["outcome"]) == (status, outcome)
    # the same numbers with the good direction reversed
    d = check_primary("m", row("m", -est, se), "decrease", min_effect, 0.05, "x")
    assert d.extra["status"] == status
    if status == "win":
        z = 1.6448536269514722
        assert c.extra["value"] == pytest.approx(est - z * se)
        assert c.ci_low == pytest.approx(est - z * se) and d.ci_high == pytest.approx(
            -est + z * se)


@pytest.mark.parametrize(("harm", "se", "status"), [
    (0.0, 0.005, "pass"), (0.05, 0.005, "breach"), (0.015, 0.01, "inconclusive")])
def test_guardrail_rules(harm: float, se: float, status: str) -> None:
    c = check_guardrail("h", row("h", harm, se), "decrease", 0.02, 0.05, "x")
    assert c.extra["status"] == status
    # p-value of the non-inferiority test is below alpha exactly when it passes
    assert (c.p_value < 0.05) == (status == "pass")
    d = check_guardrail("h", row("h", -harm, se), "increase", 0.02, 0.05, "x")
    assert d.extra["status"] == status


def test_combination() -> None:
    win = check_primary("p", row("p", 0.05, 0.01), "increase", 0.0, 0.05, "x")
    flat = check_primary("q", row("q", 0.0, 0.01), "increase", 0.0, 0.05, "x")
    ok = check_guardrail("g", row("g", 0.0, 0.001), "decrease", 0.02, 0.05, "x")
    bad = check_guardrail("g", row("g", 0.1, 0.001), "decrease", 0.02, 0.05, "x")
    assert combine([win, ok]) == "ship"
    assert combine([win, flat, ok]) == "iterate"
    assert combine([win, flat, ok], require="any") == "ship"
    assert combine([win, bad]) == "stop"


def test_bonferroni_levels() -> None:
    cfg = LaunchConfig.model_validate({
        "name": "x", "primary": {"a": {}, "b": {}},
        "guardrails": {"g": {"direction": "decrease", "margin": 0.1},
                       "h": {"direction": "decrease", "margin": 0.1},
                       "i": {"direction": "increase", "margin": 0.1}}})
    assert cfg.alpha_primary() == pytest.approx(0.025)
    assert cfg.alpha_guardrail() == pytest.approx(0.05 / 3)
    none = cfg.model_copy(update={"correction": "none"})
    assert none.alpha_primary() == 0.05 == none.alpha_guardrail()


def test_sim_metrics_is_the_example_file() -> None:
    assert (ROOT / "examples" / "launch_metrics.toml").read_text() == SIM_METRICS


def test_decide_simulated_in_memory_and_from_folder(tmp_path: Path) -> None:
    folder = experiment_dir(tmp_path / "exp", n=20000, saves_lift=1.15, hides_lift=0.8)
    import json

    truth = json.loads((folder / "truth.json").read_text())
    run = SimpleNamespace(assignments=pq.read_table(folder / "assignments.parquet"),
                          events=pq.read_table(folder / "events.parquet"), truth=truth,
                          name="planted")
    mem = decide_simulated(SIM_LAUNCH, run, variant="treatment",
                           attribution={"metrics": {"saves": {
                               "total": {"effect": 0.2}, "components": {
                                   "ranker": {"effect": 0.15, "se": 0.02,
                                              "effect_ci_low": 0.11, "effect_ci_high": 0.19,
                                              "share": 0.75, "ci_low": 0.6, "ci_high": 0.9},
                                   "retriever": {"effect": 0.05, "se": 0.02,
                                                 "effect_ci_low": 0.01,
                                                 "effect_ci_high": 0.09, "share": 0.25,
                                                 "ci_low": 0.1, "ci_high": 0.4}}}}})
    disk = decide_simulated(SIM_LAUNCH, folder, variant="treatment")
    assert mem.decision == disk.decision == "ship" and mem.truth_verdict == "good"
    assert [c.extra["value"] for c in mem.checks] == pytest.approx(
        [c.extra["value"] for c in disk.checks], rel=1e-9)
    assert [a.extra["component"] for a in mem.attribution] == ["ranker", "retriever"]
    again = LaunchDecision.from_dict(mem.to_dict())
    assert again.decision == "ship" and len(again.tree) == len(mem.tree) > 0
    html = mem.to_html()
    assert "Which component earned it" in html and "Ground truth" in html
    # portfolio by component splits the log effect by the Shapley shares
    pf = portfolio([mem])
    comps = {e.extra["name"]: e for e in pf.impacts if e.extra["group"] == "component"}
    r = next(e for e in mem.experiment if e.metric == "saves").estimate
    assert comps["ranker"].estimate == pytest.approx(math.expm1(0.75 * math.log1p(r)))
    assert comps["retriever"].estimate == pytest.approx(math.expm1(0.25 * math.log1p(r)))


def test_launch_tree_must_exist(tmp_path: Path) -> None:
    folder = experiment_dir(tmp_path / "exp", n=2000)
    cfg = SIM_LAUNCH.model_copy(update={"tree": "clicks", "variant": "treatment"})
    with pytest.raises(ConfigError, match=r"key tree|tree") as exc:
        decide(cfg, load_experiment(folder, trees=cfg.tree))
    assert "'clicks'" in str(exc.value) and "SIM_LAUNCH" in str(exc.value)


def test_several_treatments_need_a_variant() -> None:
    effects = [Effect("saves", 0.1, se=0.01, extra={"variant": v}) for v in ("a", "b")]
    exp = Experiment(effects, "control", {}, "x")
    cfg = LaunchConfig.model_validate({"name": "x", "primary": {"saves": {}},
                                       "source": "l.toml"})
    with pytest.raises(ConfigError, match="variant"):
        decide(cfg, exp)
    assert decide(cfg.model_copy(update={"variant": "b"}), exp).variant == "b"


def test_attribution_result_json(tmp_path: Path) -> None:
    from recscope.attribution.analysis import AttributionResult
    from recscope.launch.inputs import attribution_effects

    nan = math.nan
    rows = [Effect("saves", 0.2, 0.1, 0.3, 0.05, 0.001, 100, {
                "term": "total", "role": "total", "share": 1.0, "share_ci_low": nan,
                "share_ci_high": nan, "share_note": None}),
            Effect("saves", 0.15, 0.08, 0.22, 0.03, nan, 100, {
                "term": "ranker", "role": "shapley", "share": 0.75, "share_ci_low": 0.5,
                "share_ci_high": 0.9, "share_note": None}),
            Effect("saves", 0.01, -0.05, 0.07, 0.03, 0.7, 100, {
                "term": "retriever×ranker", "role": "interaction", "share": nan,
                "share_ci_low": nan, "share_ci_high": nan, "share_note": None})]
    path = tmp_path / "attribution.json"
    AttributionResult(components=["retriever", "ranker"], estimates=rows).save(path)
    got = attribution_effects(path)
    assert [(e.extra["component"], e.estimate, e.extra["share"], e.extra["total"])
            for e in got] == [("ranker", 0.15, 0.75, 0.2)]


def test_decide_simulated_on_the_built_in_simulator() -> None:
    """The demo's hook on a real (tiny) run_experiment result: truth beside the decision."""
    import tomllib

    from recscope.sim import parse_experiment, run_experiment

    spec = parse_experiment(tomllib.loads("""
name = "tiny"
seed = 3
days = 3
warmup_days = 1
[world]
scale = 0.05
[policy]
retriever = "embedding"
ranker = "affinity"
[[experiment]]
name = "ranker"
[experiment.variants.control]
[experiment.variants.treatment]
ranker = "affinity_quality"
"""))
    res = run_experiment(spec)
    d = decide_simulated(SIM_LAUNCH, res, variant="treatment")
    assert d.decision in ("ship", "iterate", "stop")
    assert d.truth_verdict in ("good", "bad", "marginal")
    assert set(d.truth) >= {"saves", "hides", "sessions"}
    parent = next(r for r in d.tree if r.extra["level"] == "parent")
    kids = [r for r in d.tree if r.extra["level"] == "child"]
    assert abs(sum(k.estimate for k in kids) - parent.extra["direct_rel_effect"]) < 1e-9
    saves = next(e for e in d.experiment if e.metric == "saves")
    assert parent.estimate == pytest.approx(saves.estimate, rel=1e-9)
