"""Experiment design: power formulas against statsmodels, simulated power at the MDE,
CUPED's sqrt(1 - rho^2), engine moments against numpy, and the CLI contract."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from typer.testing import CliRunner

from recscope.errors import ConfigError
from recscope.experiments import moments
from recscope.experiments.analysis import compare_moments
from recscope.experiments.design import (
    ExperimentDesign,
    PowerAnalysis,
    min_detectable_effect,
    power_analysis,
    two_sample_power,
    units_per_arm,
)
from recscope.experiments.metrics import parse_metrics
from tests.experiments._data import TOML, hillstrom_parquet, make_experiment

RHO = 0.6
SLOPE, NOISE_SHAPE, NOISE_SCALE = math.sqrt(4.5), 2.0, 2.0  # y = 10 + 2.12 x + Gamma(2, 2)
P_CONV = 0.1


def _draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Covariate x, skewed metric y with corr(x, y) = RHO, and a 10% conversion."""
    x = rng.normal(0.0, 1.0, n)
    y = 10.0 + SLOPE * x + rng.gamma(NOISE_SHAPE, NOISE_SCALE, n)
    return x, y, (rng.random(n) < P_CONV).astype(float)


def test_generator_has_the_stated_correlation() -> None:
    var_noise = NOISE_SHAPE * NOISE_SCALE**2
    assert SLOPE / math.sqrt(SLOPE**2 + var_noise) == pytest.approx(RHO)


HISTORY_TOML = """
unit = "user_id"

[metrics.value]
kind = "mean"
column = "y"
covariates = ["x"]

[metrics.conversion]
kind = "proportion"
column = "conv"
"""


@pytest.fixture(scope="module")
def history() -> tuple[pd.DataFrame, pd.DataFrame]:
    """60,000 historical units; each unit's value is split over two raw event rows."""
    rng = np.random.default_rng(7)
    n = 60_000
    x, y, conv = _draw(n, rng)
    units = pd.DataFrame({"user_id": np.arange(n), "x": x})
    share = rng.random(n)
    events = pd.DataFrame({"user_id": np.tile(np.arange(n), 2),
                           "y": np.concatenate([y * share, y * (1 - share)]),
                           "conv": np.concatenate([conv, np.zeros(n)])})
    return units, events


@pytest.fixture(scope="module")
def planned(history: tuple[pd.DataFrame, pd.DataFrame]) -> PowerAnalysis:
    units, events = history
    design = ExperimentDesign(units_per_day=500, days=(2.0,), mde=(0.05, 0.2))
    return power_analysis(units, events, parse_metrics(tomllib.loads(HISTORY_TOML)), design)


# -- (a) formulas against statsmodels ---------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.05, 0.01])
@pytest.mark.parametrize("ratio", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("n1", [12, 150, 5000])
def test_power_mde_and_sample_size_equal_statsmodels(alpha: float, ratio: float,
                                                     n1: int) -> None:
    """Power equals statsmodels' to 1e-9; the MDE and the sample size are roots of
    statsmodels' power function to 1e-9 (its own ``solve_power`` stops near 3e-5, so it
    is compared at 1e-4)."""
    var = 2.7
    sd = math.sqrt(var)
    for test, peer in (("z", NormalIndPower()), ("t", TTestIndPower())):
        d = 0.9 / math.sqrt(n1)
        want = peer.power(effect_size=d, nobs1=n1, alpha=alpha, ratio=ratio)
        assert two_sample_power(d * sd, var, n1, n1 * ratio, alpha=alpha, test=test) == pytest.approx(
            want, abs=1e-9)
        e = min_detectable_effect(var, n1, n1 * ratio, alpha=alpha, target=0.8, test=test)
        assert peer.power(effect_size=e / sd, nobs1=n1, alpha=alpha, ratio=ratio
                          ) == pytest.approx(0.8, abs=1e-9)
        assert e / sd == pytest.approx(peer.solve_power(
            effect_size=None, nobs1=n1, alpha=alpha, power=0.8, ratio=ratio), rel=1e-4)
        n = units_per_arm(e, var, ratio=ratio, alpha=alpha, target=0.8, test=test)
        assert n == pytest.approx(n1, rel=1e-8)  # the MDE's sample size comes back
        effect = 0.25 * sd
        n = units_per_arm(effect, var, ratio=ratio, alpha=alpha, target=0.8, test=test)
        assert peer.power(effect_size=0.25, nobs1=n, alpha=alpha, ratio=ratio
                          ) == pytest.approx(0.8, abs=1e-9)
        assert n == pytest.approx(peer.solve_power(
            effect_size=0.25, nobs1=None, alpha=alpha, power=0.8, ratio=ratio), rel=1e-4)


@pytest.mark.parametrize("p, n1, ratio", [(0.1, 500, 1.0), (0.02, 20_000, 0.25),
                                           (0.7, 90, 2.0)])
def test_proportion_power_uses_the_shifted_rate_like_statsmodels(p: float, n1: int,
                                                                 ratio: float) -> None:
    """Unpooled (Welch-like) z power with the treatment's Bernoulli variance at p + d."""
    from statsmodels.stats.power import normal_power_het

    var = p * (1 - p)
    e = min_detectable_effect(var, n1, n1 * ratio, proportion=p)
    assert 0 < e < 1 - p
    s = math.sqrt(var + (p + e) * (1 - p - e) / ratio)
    assert normal_power_het(e, n1, 0.05, std_null=s, std_alternative=s) == pytest.approx(
        0.8, abs=1e-9)
    n = units_per_arm(e, var, ratio=ratio, proportion=p)
    assert n == pytest.approx(n1, rel=1e-8)
    # the treatment's Bernoulli variance is larger than the control's below 0.5
    assert (e > min_detectable_effect(var, n1, n1 * ratio)) == (p < 0.5)
    # a rate that cannot be reached: no MDE, no sample size; no variance: no MDE
    assert math.isnan(units_per_arm(0.18, 0.09, proportion=0.9, test="t"))
    assert math.isnan(units_per_arm(-0.15, 0.09, proportion=0.1))
    assert math.isnan(min_detectable_effect(0.0, 100, 100))
    # the t power's far lower tail, where scipy's nctdtr gives NaN, counts as 0
    assert two_sample_power(0.0925, 0.9075 * 0.0925, 400, 400, alpha=0.05 / 6, test="t",
                 proportion=0.9075) == pytest.approx(1.0, abs=1e-3)
    assert math.isnan(min_detectable_effect(0.01 * 0.99, 3, 3, proportion=0.99, test="t"))


def test_z_formulas_equal_the_analysis_stats_module() -> None:
    assert min_detectable_effect(4.0, 300, 500, alpha=0.05, target=0.9) == pytest.approx(
        moments.mde(4.0, 300, 4.0, 500, alpha=0.05, power_target=0.9), rel=1e-9)
    sm_n = NormalIndPower().solve_power(effect_size=0.3 / 2.0, ratio=2.0, alpha=0.05,
                                        power=0.8)
    assert units_per_arm(0.3, 4.0, ratio=2.0) == pytest.approx(sm_n, rel=1e-4)


# -- (b) simulated power at the MDE ---------------------------------------------------------

def test_simulated_power_at_the_planned_mde_is_the_target(planned: PowerAnalysis) -> None:
    row = {r["metric"]: r for r in planned.mde if r["horizon"] == "2 days"}
    value, conv = row["value"], row["conversion"]
    n = value["n_control"]
    assert n == value["n_treatment"] == 500
    alpha = planned.settings["alpha_per_comparison"]  # the level analyze's Holm reaches
    assert alpha == pytest.approx(0.05 / 2)
    cfg = parse_metrics({"metrics": {"m": {"kind": "mean", "column": "y"}}})
    rng = np.random.default_rng(11)
    sims = 1000
    hits = {"raw": 0, "cuped": 0, "conversion": 0}
    for _ in range(sims):
        xc, yc, cc = _draw(n, rng)
        xt, yt, ct = _draw(n, rng)
        for key, shift in (("raw", value["estimate"]), ("cuped", value["mde_cuped"])):
            covs = [(1, None)] if key == "cuped" else []
            r = compare_moments("m", "t", moments.Moments.from_data(np.c_[yc, xc]),
                                moments.Moments.from_data(np.c_[yt + shift, xt]),
                                (0, None), covs, cfg, "t")
            hits[key] += r["p_value"] < alpha
        # the proportion: the planted effect raises the conversion probability
        ct = (rng.random(n) < P_CONV + conv["estimate"]).astype(float)
        c = moments.compare_variants(moments.variant_estimate(moments.Moments.from_data(cc), (0, None)),
                          moments.variant_estimate(moments.Moments.from_data(ct), (0, None)))
        hits["conversion"] += c.p_value < alpha
    print({k: h / sims for k, h in hits.items()})
    for key, h in hits.items():
        assert 0.75 <= h / sims <= 0.85, (key, h / sims)
    # and half the MDE is clearly underpowered (the test can fail)
    half = two_sample_power(value["estimate"] / 2, planned.metrics[0]["var"], n, n, alpha=alpha, test="t")
    assert half < 0.3


# -- (c) CUPED shrinks the MDE by sqrt(1 - rho^2) -----------------------------------------------

def test_cuped_mde_shrinks_by_sqrt_one_minus_rho_squared(
        planned: PowerAnalysis, history: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    units, events = history
    y = events.groupby("user_id")["y"].sum().reindex(units.user_id).to_numpy()
    r = np.corrcoef(units.x.to_numpy(), y)[0, 1]
    m = planned.metrics[0]
    assert m["variance_reduction"] == pytest.approx(r**2, rel=1e-9)
    assert m["var"] == pytest.approx(np.var(y, ddof=1), rel=1e-9)
    for row in (r for r in planned.mde if r["metric"] == "value"):
        factor = row["mde_cuped"] / row["estimate"]
        assert factor == pytest.approx(math.sqrt(1 - r**2), rel=1e-9)
        assert abs(factor - math.sqrt(1 - RHO**2)) < 0.01  # truth, within sampling error
    conv = next(r for r in planned.mde if r["metric"] == "conversion")
    assert conv["mde_cuped"] == conv["estimate"]  # no covariate, no change
    for s in planned.sample_size:
        if s["metric"] == "value":
            assert s["n_control_cuped"] < s["n_control"] * (1 - r**2) * 1.01 + 2


def test_sample_sizes_reach_the_power_and_days_follow_traffic(
        planned: PowerAnalysis) -> None:
    var = {m["metric"]: (m["var"], m["var_cuped"], m["baseline"]) for m in planned.metrics}
    alpha = planned.settings["alpha_per_comparison"]
    assert len(planned.sample_size) == 4
    for s in planned.sample_size:
        v, vc, base = var[s["metric"]]
        prop = base if s["metric"] == "conversion" else None
        assert s["effect"] == pytest.approx(s["rel_effect"] * base)
        for suffix, vv in (("", v), ("_cuped", vc)):
            n = s[f"n_control{suffix}"]
            assert two_sample_power(s["effect"], vv, n, n, alpha=alpha, test="t",
                         proportion=prop) >= 0.8
            assert two_sample_power(s["effect"], vv, n - 1, n - 1, alpha=alpha, test="t",
                         proportion=prop) < 0.8
            assert s[f"units{suffix}"] == 2 * n or s[f"units{suffix}"] == 2 * n - 1
            assert s[f"days{suffix}"] == math.ceil(s[f"units{suffix}"] / 500)


def test_several_arms_split_alpha_and_unequal_allocation(
        history: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    units, events = history
    cfg = parse_metrics(tomllib.loads(HISTORY_TOML))
    res = power_analysis(units, events, cfg, ExperimentDesign(arms=3, treatment_share=0.6, mde=(0.1,)))
    # analyze corrects (Holm) across 2 metrics x 2 treatment arms
    assert res.settings["alpha_per_comparison"] == pytest.approx(0.05 / 4)
    assert res.settings["control_share"] == pytest.approx(0.4)
    assert res.settings["treatment_share_per_arm"] == pytest.approx(0.3)
    assert any("Bonferroni" in n for n in res.remarks)
    m = res.metrics[0]
    row = res.mde[0]
    assert (row["n_control"], row["n_treatment"]) == (24_000, 18_000)
    assert row["estimate"] == pytest.approx(min_detectable_effect(
        m["var"], 24_000, 18_000, alpha=0.0125, test="t"), rel=1e-12)
    s = res.sample_size[0]
    assert abs(s["n_treatment"] - 0.75 * s["n_control"]) <= 1
    assert two_sample_power(s["effect"], m["var"], s["n_control"], s["n_treatment"], alpha=0.0125,
                 test="t") >= 0.8
    assert two_sample_power(s["effect"], m["var"], s["n_control"] - 1, s["n_treatment"] - 1,
                 alpha=0.0125, test="t") < 0.8
    assert s["days"] is None  # no traffic given
    no_correction = cfg.replace(correction="none")
    res = power_analysis(units, events, no_correction, ExperimentDesign(arms=3, mde=(0.1,)))
    assert res.settings["alpha_per_comparison"] == pytest.approx(0.05)


# -- engine moments: windows, filters, ratio, pre-period CUPED against numpy -----------------------

def test_history_moments_equal_numpy_with_windows_and_ratio_cuped() -> None:
    assign, events = make_experiment(n_units=800, seed=3)
    units = assign.drop(columns=["variant"])  # a history has no variant
    cfg = parse_metrics(tomllib.loads(TOML))
    res = power_analysis(units, events, cfg)
    got = {m["metric"]: m for m in res.metrics}
    assert set(got) == {"revenue_7d", "ctr_home", "buyers", "items", "revenue_adj"}
    assert any("revenue_p50" in n and "quantile" in n for n in res.remarks)
    e = events.merge(units[["user_id", "first_exposure_ts"]], on="user_id")
    days = (e.ts - e.first_exposure_ts).dt.total_seconds() / 86400
    home = e.surface == "home"

    def per_unit(mask: pd.Series, column: str) -> np.ndarray:
        return (e[mask].groupby("user_id")[column].sum()
                .reindex(units.user_id, fill_value=0).to_numpy(float))

    clicks, impr = per_unit((days >= 0) & home, "clicks"), per_unit((days >= 0) & home,
                                                                      "impressions")
    cpre = per_unit((days >= -14) & (days < 0) & home, "clicks")
    ipre = per_unit((days >= -14) & (days < 0) & home, "impressions")
    ratio = clicks.mean() / impr.mean()
    lin = (clicks - ratio * impr) / impr.mean()  # the ratio's linearisation
    lin_pre = (cpre - cpre.mean() / ipre.mean() * ipre) / ipre.mean()
    theta = np.cov(lin, lin_pre)[0, 1] / np.var(lin_pre, ddof=1)
    ctr = got["ctr_home"]
    assert ctr["baseline"] == pytest.approx(ratio, rel=1e-9)
    assert ctr["var"] == pytest.approx(np.var(lin, ddof=1), rel=1e-9)
    assert ctr["var_cuped"] == pytest.approx(np.var(lin - theta * lin_pre, ddof=1), rel=1e-9)
    assert ctr["test"] == "z" and ctr["covariates"] == ["14-day pre-period"]
    rev7 = per_unit((days >= 0) & (days < 7), "revenue")
    assert got["revenue_7d"]["var"] == pytest.approx(np.var(rev7, ddof=1), rel=1e-9)
    assert got["revenue_7d"]["n"] == 800


# -- errors, CLI and the result contract ------------------------------------------------------------

@pytest.mark.parametrize("kwargs, key", [
    ({"alpha": 1.5}, "alpha"), ({"alpha": 0.0}, "alpha"), ({"power": 1.0}, "power"),
    ({"arms": 1}, "variants"), ({"treatment_share": 1.0}, "treatment_share"),
    ({"days": (7.0,)}, "days"), ({"units_per_day": 10.0, "days": (-1.0,)}, "days"),
    ({"mde": (0.0,)}, "mde"), ({"alpha": 0.5, "power": 0.4}, "power"),
])
def test_bad_design_settings_name_the_option(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExperimentDesign(**kwargs)
    assert info.value.key == key


def test_history_variant_selects_units_and_checks_the_column(
        history: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    units, events = history
    units = units.assign(variant=np.where(units.user_id % 3 == 0, "control", "old"))
    cfg = parse_metrics(tomllib.loads(HISTORY_TOML))
    res = power_analysis(units, events, cfg, only_variant="control")
    assert res.settings["history_units"] == 20_000
    assert not any("every unit is history" in n for n in res.remarks)
    everyone = power_analysis(units, events, cfg)
    assert everyone.settings["history_units"] == 60_000
    assert any("every unit is history" in n for n in everyone.remarks)
    with pytest.raises(ConfigError, match="not found"):
        power_analysis(units.drop(columns=["variant"]), events, cfg, only_variant="control")


SMALL = """
unit = "user_id"

[metrics.rounds]
kind = "mean"
column = "sum_gamerounds"
covariates = ["pre_rounds"]

[metrics.ctr]
kind = "ratio"
numerator = "clicks"
denominator = "impressions"
"""


def _write_history(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(1)
    n = 4000
    pre = rng.poisson(40, n)
    pd.DataFrame({"user_id": np.arange(n), "pre_rounds": pre}).to_csv(tmp_path / "u.csv",
                                                                      index=False)
    pd.DataFrame({"user_id": np.arange(n), "sum_gamerounds": pre + rng.poisson(10, n),
                  "clicks": rng.poisson(2, n), "impressions": rng.poisson(20, n) + 1}
                 ).to_parquet(tmp_path / "e.parquet")
    (tmp_path / "m.toml").write_text(SMALL)
    return ["experiment", "power", "--units", str(tmp_path / "u.csv"), "--events",
            str(tmp_path / "e.parquet"), "--metrics", str(tmp_path / "m.toml"),
            "--tracking", str(tmp_path)]


def test_cli_contract_json_html_and_round_trip(tmp_path: Path) -> None:
    from recscope.cli import _register, app

    args = [
        *_write_history(tmp_path), "--units-per-day", "1000", "--days", "7", "--days", "14", "--mde", "0.05",
        "--mde", "0.1", "--variants", "3", "--json", str(tmp_path / "p.json"),
        "--html", str(tmp_path / "p.html"), "--show-sql"]
    _register()
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "COVAR_SAMP" in res.output and "Bonferroni" in res.output
    out = json.loads((tmp_path / "p.json").read_text())
    assert set(out) == {"kind", "settings", "metrics", "mde", "sample_size", "remarks",
                        "config", "sql"}
    assert out["kind"] == "experiment_power" and out["settings"]["arms"] == 3
    assert {"metric", "kind", "test", "n", "baseline", "sd", "sd_cuped", "var", "var_cuped",
            "variance_reduction", "covariates"} <= set(out["metrics"][0])
    assert {"metric", "estimate", "n", "horizon", "days", "n_control", "n_treatment",
            "mde_rel", "mde_cuped", "mde_rel_cuped"} <= set(out["mde"][0])
    assert {"metric", "rel_effect", "effect", "n_control", "n_treatment", "units", "days",
            "n_control_cuped", "n_treatment_cuped", "units_cuped", "days_cuped"
            } <= set(out["sample_size"][0])
    assert [r["horizon"] for r in out["mde"]] == ["history", "7 days", "14 days"] * 2
    assert len(out["sample_size"]) == 4
    assert out["metrics"][0]["variance_reduction"] > 0.5  # pre_rounds predicts rounds
    back = PowerAnalysis.load(tmp_path / "p.json")
    assert back.to_dict() == PowerAnalysis.from_dict(out).to_dict()
    assert "Minimum detectable effect" in (tmp_path / "p.html").read_text()


@pytest.mark.parametrize("extra, toml, needle", [
    (["--alpha", "1.5"], SMALL, "alpha must be in (0, 1)"),
    (["--days", "7"], SMALL, "units per day"),
    ([], SMALL.replace('["pre_rounds"]', '["nope"]'), "column 'nope' not found"),
    (["--history-variant", "control"], SMALL, "column 'variant'"),
])
def test_cli_errors_are_one_line_and_exit_code_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        extra: list[str], toml: str, needle: str) -> None:
    from recscope.cli import main

    args = _write_history(tmp_path) + extra
    (tmp_path / "m.toml").write_text(toml)
    monkeypatch.setattr("sys.argv", ["recscope", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1


# -- real data ----------------------------------------------------------------------------------

@pytest.mark.data
def test_hillstrom_variance_reduction_is_the_squared_correlation(tmp_path: Path) -> None:
    h, path = hillstrom_parquet(tmp_path)
    cfg = parse_metrics({"unit": "uid", "variant": "segment", "control": "No E-Mail",
                        "metrics": {k: {"kind": "proportion" if k != "spend" else "mean",
                                        "column": k, "covariates": ["history"]}
                                    for k in ("visit", "conversion", "spend")}})
    res = power_analysis(str(path), str(path), cfg, only_variant="No E-Mail")
    ctl = h[h.segment == "No E-Mail"]
    assert res.settings["history_units"] == len(ctl) == 21_306
    for m in res.metrics:
        r = np.corrcoef(ctl[m["metric"]], ctl["history"])[0, 1]
        assert m["variance_reduction"] == pytest.approx(r**2, rel=1e-9)
        assert m["baseline"] == pytest.approx(ctl[m["metric"]].mean(), rel=1e-12)
