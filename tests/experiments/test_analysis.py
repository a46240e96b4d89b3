"""End-to-end analysis on DuckDB: per-unit SQL against pandas, errors, scorecard, CLI."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW
from typer.testing import CliRunner

from recscope.errors import ConfigError, DataValidationError
from recscope.experiments import moments
from recscope.experiments.analysis import RESULT_KEYS, Scorecard, analyze, compare_moments
from recscope.experiments.metrics import parse_metrics
from tests.experiments._data import TOML, hillstrom_parquet, make_experiment


@pytest.fixture(scope="module")
def experiment() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_experiment()


@pytest.fixture(scope="module")
def card(experiment: tuple[pd.DataFrame, pd.DataFrame]) -> Scorecard:
    assign, events = experiment
    return analyze(assign, events, parse_metrics(tomllib.loads(TOML)))


def _per_unit(assign: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """The per-unit variables computed independently in pandas."""
    e = events.merge(assign[["user_id", "first_exposure_ts"]], on="user_id")
    days = (e["ts"] - e["first_exposure_ts"]).dt.total_seconds() / 86400
    home = e["surface"] == "home"

    def agg(mask: pd.Series, col: str, how: str = "sum") -> pd.Series:
        g = e[mask].groupby("user_id")[col]
        s = g.nunique() if how == "nunique" else (g.max() if how == "max" else g.sum())
        return s.reindex(assign["user_id"], fill_value=0).astype(float).to_numpy()

    post = days >= 0
    return pd.DataFrame({
        "variant": assign["variant"].to_numpy(),
        "rev7": agg(post & (days < 7), "revenue"),
        "rev7_pre": agg((days >= -7) & (days < 0), "revenue"),
        "clicks": agg(post & home, "clicks"), "impr": agg(post & home, "impressions"),
        "clicks_pre": agg((days >= -14) & (days < 0) & home, "clicks"),
        "impr_pre": agg((days >= -14) & (days < 0) & home, "impressions"),
        "buyer": agg(post & (e["revenue"] > 0), "revenue", "max") > 0,
        "items": agg(post & (days < 14), "item_id", "nunique"),
        "revenue": agg(post, "revenue"),
        "pre_value": assign["pre_value"].to_numpy(),
    })


def test_engine_results_equal_an_independent_pandas_computation(
        experiment: tuple[pd.DataFrame, pd.DataFrame], card: Scorecard) -> None:
    assign, events = experiment
    u = _per_unit(assign, events)
    cfg = parse_metrics(tomllib.loads(TOML))
    specs = {
        "revenue_7d": (["rev7", "rev7_pre"], (0, None), [(1, None)], "t"),
        "ctr_home": (["clicks", "impr", "clicks_pre", "impr_pre"], (0, 1), [(2, 3)], "z"),
        "buyers": (["buyer"], (0, None), [], "t"),
        "items": (["items"], (0, None), [], "t"),
        "revenue_adj": (["revenue", "pre_value"], (0, None), [(1, None)], "t"),
    }
    got = {(r["metric"], r["variant"]): r for r in card.results}
    for name, (cols, term, covs, dist) in specs.items():
        mc = moments.Moments.from_data(u.loc[u.variant == "control", cols].to_numpy(float))
        for v in ("t1", "t2"):
            mt = moments.Moments.from_data(u.loc[u.variant == v, cols].to_numpy(float))
            want = compare_moments(name, v, mc, mt, term, covs, cfg, dist)
            for key in ("control_mean", "treatment_mean", "estimate", "ci_low", "ci_high",
                        "rel_ci_low", "p_value", "n_control", "n_treatment"):
                assert got[(name, v)][key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), \
                    (name, v, key)
    # quantile: the engine's mid-quantile equals numpy's Hazen median (data without ties
    # at the median)
    med = np.quantile(u.loc[u.variant == "control", "revenue"], 0.5, method="hazen")
    assert got[("revenue_p50", "t1")]["control_mean"] == pytest.approx(med, rel=1e-12)


def test_scorecard_contract_and_round_trip(card: Scorecard, tmp_path: Path) -> None:
    assert len(card.results) == 6 * 2
    for r in card.results:
        assert set(RESULT_KEYS) <= set(r.to_dict())
    assert card.results[0]["cuped"] and card.results[0]["variance_reduction"] > 0
    assert 0 <= card.srm["p_value"] <= 1
    # segments: 3 countries x 2 treatments x 5 non-quantile metrics, corrected jointly
    assert len(card.segment_results) == 3 * 2 * 5
    assert all(r["p_value_adjusted"] >= r["p_value"] for r in card.results)
    card.save(tmp_path / "card.json")
    again = Scorecard.load(tmp_path / "card.json")
    assert json.loads(again.to_json()) == json.loads(card.to_json())
    card.save(tmp_path / "card.html")
    assert "Experiment scorecard" in (tmp_path / "card.html").read_text()
    assert list(card.to_frame().columns[:4]) == ["metric", "estimate", "ci_low", "ci_high"]
    assert card.to_dict()["results"][0]["estimate"] == card.results[0].estimate


def test_unit_in_two_variants_is_reported_and_excluded(
        experiment: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    assign, events = experiment
    dup = assign.iloc[[0]].copy()
    dup["variant"] = "t1" if assign.iloc[0]["variant"] != "t1" else "t2"
    cfg = parse_metrics({"unit": "user_id", "metrics": {"r": {"kind": "mean",
                                                             "column": "revenue"}}})
    base = analyze(assign, events, cfg)
    card = analyze(pd.concat([assign, dup]), events, cfg)
    assert card.data_checks["units_in_several_variants"] == 1
    assert card.data_checks["example_unit"] == str(assign.iloc[0]["user_id"])
    total = sum(card.srm["observed"].values())
    assert total == sum(base.srm["observed"].values()) - 1
    assert any("more than one variant" in w for w in card.warnings())


def test_exposure_log_with_repeated_rows_equals_one_row_per_unit(
        experiment: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Several assignment rows per unit (an exposure log) take the GROUP BY path; one row
    per unit takes the plain scan. Both must give the same scorecard, to the last bit of
    the windows (first exposure = the earliest row)."""
    assign, events = experiment
    later = assign.sample(frac=0.5, random_state=1).assign(
        first_exposure_ts=lambda d: d.first_exposure_ts + pd.Timedelta(days=2))
    log = pd.concat([later, assign]).sample(frac=1.0, random_state=2)
    cfg = parse_metrics(tomllib.loads(TOML))
    scan, grouped = analyze(assign, events, cfg), analyze(log, events, cfg)
    assert "GROUP BY" not in scan.sql[1].split("e0 AS")[0]
    assert "GROUP BY" in grouped.sql[1].split("e0 AS")[0]
    assert grouped.data_checks == scan.data_checks
    for a, b in zip(scan.results + scan.segment_results,
                    grouped.results + grouped.segment_results, strict=True):
        for k in ("estimate", "ci_low", "ci_high", "p_value", "n_control", "n_treatment"):
            assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-12), k


def test_proportion_is_right_with_and_without_negative_values() -> None:
    """A proportion reuses the per-unit SUM only when its column has no negative value:
    a unit with events -5 and +1 has a positive value (MAX > 0), though its sum is < 0."""
    rng = np.random.default_rng(5)
    n = 400
    assign = pd.DataFrame({"user_id": np.arange(n), "variant": rng.choice(["control", "t"], n)})
    who = rng.integers(0, n, 3000)
    events = pd.DataFrame({"user_id": who, "clicks": rng.integers(0, 2, 3000),
                           "delta": rng.choice([-5.0, 0.0, 1.0], 3000)})
    cfg = parse_metrics({"unit": "user_id", "metrics": {
        "clickers": {"kind": "proportion", "column": "clicks"},
        "gainers": {"kind": "proportion", "column": "delta"}}})
    card = analyze(assign, events, cfg)
    unit_sql = card.sql[1].split("e0 AS")[1]
    assert 'SUM(CAST("e"."clicks"' in unit_sql and 'MAX(CAST("e"."delta"' in unit_sql
    per_unit = events.groupby("user_id").agg(c=("clicks", "max"), d=("delta", "max"))
    full = assign.join(per_unit, on="user_id").fillna(0.0)
    for metric, column in (("clickers", "c"), ("gainers", "d")):
        want = (full[column] > 0).groupby(full["variant"]).mean()
        row = next(r for r in card.results if r["metric"] == metric)
        assert row["control_mean"] == pytest.approx(want["control"], abs=1e-12)
        assert row["treatment_mean"] == pytest.approx(want["t"], abs=1e-12)


def test_srm_banner(experiment: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    assign, events = experiment
    skew = pd.concat([assign, assign[assign.variant == "t1"].assign(
        user_id=lambda d: d.user_id + 10_000)] * 1)
    cfg = parse_metrics({"unit": "user_id", "metrics": {"r": {"kind": "mean",
                                                             "column": "revenue"}}})
    card = analyze(skew, events, cfg)
    assert not card.srm["ok"]
    assert "Sample ratio mismatch" in card.to_html()


@pytest.mark.parametrize(("spec", "match"), [
    ({"kind": "mean", "column": "revnue"}, "column 'revnue' not found"),
    ({"kind": "ratio", "numerator": "clicks", "denominator": "nope"}, "'nope' not found"),
    ({"kind": "mean", "column": "revenue", "filter": {"surfce": "home"}}, "'surfce'"),
    ({"kind": "mean", "column": "revenue", "covariates": ["pre"]}, "'pre' not found"),
])
def test_unknown_columns_raise_config_errors(
        experiment: tuple[pd.DataFrame, pd.DataFrame], spec: dict, match: str) -> None:
    assign, events = experiment
    cfg = parse_metrics({"unit": "user_id", "metrics": {"m": spec}})
    with pytest.raises(ConfigError, match=match):
        analyze(assign, events, cfg)


def test_absent_variants_raise(experiment: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    assign, events = experiment
    metrics = {"r": {"kind": "mean", "column": "revenue"}}
    with pytest.raises(DataValidationError, match="control variant 'ctrl' not found"):
        analyze(assign, events, parse_metrics({"unit": "user_id", "control": "ctrl",
                                              "metrics": metrics}))
    with pytest.raises(DataValidationError, match="'t3' listed in the config is absent"):
        analyze(assign, events, parse_metrics({
            "unit": "user_id", "variants": ["control", "t1", "t2", "t3"], "metrics": metrics}))


@pytest.mark.parametrize(("data", "key"), [
    ({"metrics": {"m": {"kind": "mean"}}}, "metrics.m.column"),
    ({"metrics": {"m": {"kind": "median", "column": "x"}}}, "metrics.m.kind"),
    ({"metric": {}}, "metric"),
    ({"metrics": {"m": {"kind": "mean", "column": "x", "windw": [0, 1]}}}, "metrics.m.windw"),
    ({"metrics": {"m": {"kind": "mean", "column": "x", "window": [3, 1]}}}, "metrics.m.window"),
])
def test_bad_config_names_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_metrics(data, source="m.toml")
    assert err.value.key == key and err.value.file == "m.toml"


SMALLEST = """
unit = "user_id"        # unit column, in assignments and events
variant = "variant"     # variant column, in assignments
control = "control"     # the control variant's value

[metrics.retention_7]
kind = "proportion"
column = "retention_7"

[metrics.rounds]
kind = "mean"
column = "sum_gamerounds"

[metrics.ctr]
kind = "ratio"
numerator = "clicks"
denominator = "impressions"
"""


def test_cli_contract_with_the_smallest_metrics_file(tmp_path: Path) -> None:
    from recscope.cli import _register, app

    rng = np.random.default_rng(1)
    n = 3000
    pd.DataFrame({"user_id": np.arange(n), "variant": rng.choice(["control", "test"], n)}
                 ).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"user_id": np.arange(n), "retention_7": rng.random(n) < 0.2,
                  "sum_gamerounds": rng.poisson(50, n), "clicks": rng.poisson(2, n),
                  "impressions": rng.poisson(20, n) + 1}).to_parquet(tmp_path / "e.parquet")
    (tmp_path / "m.toml").write_text(SMALLEST)
    _register()
    args = ["experiment", "analyze", "--assignments", str(tmp_path / "a.csv"), "--events",
            str(tmp_path / "e.parquet"), "--metrics", str(tmp_path / "m.toml"), "--json",
            str(tmp_path / "out.json"), "--html", str(tmp_path / "out.html"), "--show-sql",
            "--tracking", str(tmp_path)]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "COVAR_SAMP" in res.output and "GROUP BY" in res.output
    out = json.loads((tmp_path / "out.json").read_text())
    assert "p_value" in out["srm"]
    assert [r["metric"] for r in out["results"]] == ["retention_7", "rounds", "ctr"]
    for r in out["results"]:
        assert set(RESULT_KEYS) <= set(r) and r["variant"] == "test"
    assert (tmp_path / "out.html").exists()


def test_cli_error_is_one_line_and_exit_code_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from recscope.cli import main

    pd.DataFrame({"user_id": [1, 2], "variant": ["control", "t"]}).to_csv(
        tmp_path / "a.csv", index=False)
    (tmp_path / "m.toml").write_text('[metrics.x]\nkind = "mean"\ncolumn = "nope"\n')
    monkeypatch.setattr("sys.argv", [
        "recscope", "experiment", "analyze", "--assignments", str(tmp_path / "a.csv"),
        "--events", str(tmp_path / "a.csv"), "--metrics", str(tmp_path / "m.toml"),
        "--tracking", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "column 'nope' not found" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.data
def test_hillstrom_end_to_end_matches_statsmodels(tmp_path: Path) -> None:
    h, path = hillstrom_parquet(tmp_path)
    cfg = parse_metrics({"unit": "uid", "variant": "segment", "control": "No E-Mail",
                        "metrics": {"spend": {"kind": "mean", "column": "spend"},
                                    "visit": {"kind": "proportion", "column": "visit",
                                              "covariates": ["history", "recency"]}}})
    card = analyze(str(path), str(path), cfg)
    row = next(r for r in card.results if r["metric"] == "spend"
               and r["variant"] == "Mens E-Mail")
    cm = CompareMeans(DescrStatsW(h.loc[h.segment == "Mens E-Mail", "spend"].to_numpy()),
                      DescrStatsW(h.loc[h.segment == "No E-Mail", "spend"].to_numpy()))
    _, p, _ = cm.ttest_ind(usevar="unequal")
    lo, hi = cm.tconfint_diff(usevar="unequal")
    assert row["p_value"] == pytest.approx(p, abs=1e-6)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), abs=1e-6)
    assert {r["variant"] for r in card.results} == {"Mens E-Mail", "Womens E-Mail"}


def test_sequential_intervals_are_wider_and_valid(
        experiment: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    assign, events = experiment
    cfg = parse_metrics({"unit": "user_id", "sequential": True, "metrics": {
        "r": {"kind": "mean", "column": "revenue"}}})
    for r in analyze(assign, events, cfg).results:
        assert r["seq_ci_low"] < r["ci_low"] < r["estimate"] < r["ci_high"] < r["seq_ci_high"]
        assert r["seq_p_value"] >= r["p_value"]


def test_duckdb_database_tables(experiment: tuple[pd.DataFrame, pd.DataFrame],
                                tmp_path: Path) -> None:
    import duckdb

    from recscope.experiments.engines import DuckDBEngine

    assign, events = experiment
    db = tmp_path / "exp.duckdb"
    con = duckdb.connect(str(db))
    con.register("a_df", assign)
    con.register("e_df", events)
    con.execute("CREATE TABLE assignments AS SELECT * FROM a_df")
    con.execute('CREATE TABLE "my events" AS SELECT * FROM e_df')
    con.close()
    cfg = parse_metrics({"unit": "user_id", "metrics": {
        "ctr": {"kind": "ratio", "numerator": "clicks", "denominator": "impressions"}}})
    from_db = analyze("table:assignments", "table:my events", cfg, engine=DuckDBEngine(db))
    from_df = analyze(assign, events, cfg)
    assert from_db.results[0].estimate == pytest.approx(from_df.results[0].estimate,
                                                        rel=1e-12)
    with pytest.raises(DataValidationError, match="cannot read table"):
        analyze("table:nope", "table:my events", cfg, engine=DuckDBEngine(db))


def test_ratio_with_zero_denominator_is_not_computable() -> None:
    """A statistic that cannot be computed is reported as such, with its reason, and is
    left out of the correction family: it never becomes p = 0."""
    a = pd.DataFrame({"user_id": [1, 2, 3, 4, 5, 6], "variant": [0, 1, 0, 1, 0, 1]})
    e = pd.DataFrame({"user_id": [1, 2, 3, 4, 5, 6], "x": [1.0, 2.0, 3.0, 4.0, 5, 7],
                      "d": 0.0})
    cfg = parse_metrics({"unit": "user_id", "control": "0", "metrics": {
        "r": {"kind": "ratio", "numerator": "x", "denominator": "d"},
        "m": {"kind": "mean", "column": "x"}}})
    card = analyze(a, e, cfg)
    r, m = card.results
    assert "denominator sums to zero" in r["not_computable"]
    assert np.isnan(r.p_value) and np.isnan(r["p_value_adjusted"])
    # the family has one test: Holm leaves the mean's p-value unchanged
    assert m["p_value_adjusted"] == pytest.approx(m.p_value)
    assert card.data_checks["not_computable"] == 1
    assert any("could not be computed" in n for n in card.notes())
