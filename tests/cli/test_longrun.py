"""``recscope longrun fit`` and ``experiment analyze --long-run`` end to end on small
hand-made histories, and their bad inputs: one line naming the file, exit 2, nothing
written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.cli.inputs import invoke

T0 = pd.Timestamp("2026-01-01", tz="UTC")
SHORT = """unit = "unit_id"
[metrics.clicks]
kind = "mean"
column = "clicks"
[metrics.saves]
kind = "mean"
column = "saves"
"""


def _assignments(path: Path, treated: np.ndarray) -> None:
    """Two-arm assignments of units 0 … n − 1, all first exposed at ``T0``."""
    n = treated.size
    pd.DataFrame({"unit_id": np.arange(n), "variant": np.where(treated, "treatment",
                                                               "control"),
                  "first_exposure_ts": [T0] * n}).to_parquet(path)


def _write(d: Path, seed: int, lift: float, outcome: bool = True, n: int = 400) -> None:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    t = rng.integers(0, 2, n)
    _assignments(d / "assignments.parquet", t)
    q = rng.normal(0, 1, n) + lift * t
    saves = np.maximum(np.round(2 + q + rng.normal(0, 0.3, n)), 0)
    clicks = rng.poisson(5 + 3 * t * rng.random(), n)
    pd.DataFrame({"unit_id": np.arange(n), "ts": [T0 + pd.Timedelta(hours=2)] * n,
                  "clicks": clicks, "saves": saves}).to_parquet(d / "events.parquet")
    if outcome:
        pd.DataFrame({"unit_id": np.arange(n), "days_long": 4 + 2 * saves
                      + rng.normal(0, 1, n)}).to_parquet(d / "outcomes.parquet")


@pytest.fixture()
def hist(tmp_path: Path) -> Path:
    for k in range(5):
        _write(tmp_path / "hist" / f"h{k}", k, 0.3 * (k - 2))
    _write(tmp_path / "new", 9, 0.5, outcome=False)
    (tmp_path / "short.toml").write_text(SHORT)
    return tmp_path


def _snapshot(p: Path) -> set[str]:
    return {str(x.relative_to(p)) for x in p.rglob("*")}


def _fit(hist: Path, *extra: str) -> None:
    code, _out, err = invoke(["longrun", "fit", "--history", "hist", "--short", "short.toml",
                             "--long", "days_long", "--metric", "saves", "--out", "model",
                             *extra], hist)
    assert code == 0, err
    assert (hist / "model" / "model.json").is_file()


def _analyze(hist: Path, folder: str, metrics: str = "short.toml") -> tuple[int, str, str]:
    return invoke(["experiment", "analyze", "--assignments", f"{folder}/assignments.parquet",
                   "--events", f"{folder}/events.parquet", "--metrics", metrics,
                   "--long-run", "model", "--json", "card.json", "--tracking", "track"],
                  hist)


def test_fit_then_analyze_with_long_run(hist: Path) -> None:
    _fit(hist)
    code, _out, err = _analyze(hist, "new")
    assert code == 0, err
    card = json.loads((hist / "card.json").read_text())
    row = next(r for r in card["results"] if r["metric"] == "saves")
    lr = row["long_run"]
    assert set(lr) >= {"estimate", "ci_low", "ci_high", "method"}
    assert lr["ci_low"] < lr["estimate"] < lr["ci_high"]
    assert lr["ci_low"] <= 2 * 0.5 <= lr["ci_high"]  # planted: outcome = 2·saves, lift 0.5
    assert lr["extrapolation"] is False and lr["distance"] < lr["history_max_distance"]
    assert "long_run" not in next(r for r in card["results"] if r["metric"] == "clicks")


def test_change_unlike_the_history_is_flagged(hist: Path) -> None:
    _fit(hist)
    _write(hist / "odd", 11, 4.0, outcome=False)  # saves lift 4: history's are 0.6 at most
    code, out, err = _analyze(hist, "odd")
    assert code == 0, err
    card = json.loads((hist / "card.json").read_text())
    lr = next(r for r in card["results"] if r["metric"] == "saves")["long_run"]
    assert lr["extrapolation"] is True and lr["distance"] > lr["history_max_distance"]
    assert card["long_run"][0]["extrapolation"] is True
    assert "is an extrapolation" in " ".join((out + err).split())
    from recscope.experiments.surrogate import LongRunScorecard

    banner = [n for n in LongRunScorecard.from_dict(card).notes() if "extrapolation" in n]
    assert len(banner) == 1 and banner[0].endswith("(interval widened with d²).")
    assert json.loads((hist / "model" / "model.json").read_text())["widen"] is True
    # --no-widen: the same flag, the constant surrogacy error, and a banner saying so
    _fit(hist, "--no-widen", "--force")
    assert json.loads((hist / "model" / "model.json").read_text())["widen"] is False
    code, out, err = _analyze(hist, "odd")
    assert code == 0, err
    plain = json.loads((hist / "card.json").read_text())["long_run"][0]
    assert plain["extrapolation"] is True and plain["widened"] is False
    assert plain["estimate"] == pytest.approx(card["long_run"][0]["estimate"])
    assert plain["surrogacy_sd"] <= card["long_run"][0]["surrogacy_sd"]
    assert "interval not widened" in " ".join(LongRunScorecard.from_dict(json.loads(
        (hist / "card.json").read_text())).notes())


def test_history_without_outcome_is_refused(hist: Path) -> None:
    (hist / "hist" / "h3" / "outcomes.parquet").unlink()
    before = _snapshot(hist)
    code, _out, err = invoke(["longrun", "fit", "--history", "hist/h0", "--history",
                             "hist/h3", "--history", "hist/h1", "--short", "short.toml",
                             "--long", "days_long", "--out", "model"], hist)
    assert code == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "h3/outcomes.parquet" in lines[0] and "long-run" in lines[0]
    assert _snapshot(hist) == before
    code, _out, err = invoke(["longrun", "fit", "--history", "hist", "--short", "short.toml",
                             "--long", "nope", "--out", "model"], hist)
    assert code == 2 and "'nope'" in err and "outcomes.parquet" in err
    assert _snapshot(hist) == before


def test_surrogate_missing_in_new_experiment_is_refused(hist: Path) -> None:
    _fit(hist)
    ev = pd.read_parquet(hist / "new" / "events.parquet").drop(columns=["saves"])
    ev.to_parquet(hist / "new" / "events.parquet")
    (hist / "clicks.toml").write_text(SHORT.split("[metrics.saves]")[0])
    before = _snapshot(hist)
    code, _out, err = _analyze(hist, "new", "clicks.toml")
    assert code == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "new/events.parquet" in lines[0] and "saves" in lines[0]
    assert _snapshot(hist) == before


def test_simulate_history_then_fit(tmp_path: Path) -> None:
    code, _out, err = invoke(["longrun", "simulate-history", "--out", "hist", "--scale",
                              "0.02", "--experiments", "4", "--held-out", "1", "--horizon", "21"],
                             tmp_path)
    assert code == 0, err
    hist = tmp_path / "hist"
    assert sorted(p.name for p in hist.iterdir() if p.is_dir()) == [
        "h000", "h001", "h002", "h003", "x000"]
    truth = json.loads((hist / "x000" / "truth.json").read_text())["truth"]
    assert set(truth["effects"]) >= {"active_days_long", "ctr_settled"}
    assert not (hist / "x000" / "outcomes.parquet").exists()
    code, _out, err = invoke(["longrun", "fit", "--history", "hist", "--short",
                              "hist/surrogates.toml", "--long", "active_days_long",
                              "--out", "model"], tmp_path)
    assert code == 0, err
    model = json.loads((tmp_path / "model" / "model.json").read_text())
    assert len(model["experiments"]) == 4 and "active_days.pre" in model["features"]
    code, _out, err = invoke(["longrun", "simulate-history", "--out", "hist", "--scale",
                              "0.02", "--experiments", "4", "--held-out", "1"], tmp_path)
    assert code == 2 and "--force" in err


def test_novelty_by_session(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 600
    t = rng.integers(0, 2, n)
    _assignments(tmp_path / "a.parquet", t)
    u = np.repeat(np.arange(n), 8)
    k = np.tile(np.arange(8), n)
    imp = rng.poisson(20, u.size) + 1
    ctr = 0.1 + t[u] * (0.01 + 0.05 * np.exp(-k / 2))
    pd.DataFrame({"unit_id": u, "ts": T0 + pd.to_timedelta(k * 7200 + 60, unit="s"),
                  "session_id": np.arange(u.size), "impressions": imp,
                  "clicks": rng.binomial(imp, ctr)}).to_parquet(tmp_path / "e.parquet")
    code, _out, err = invoke(["longrun", "novelty", "--assignments", "a.parquet", "--events",
                              "e.parquet", "--by", "session", "--json", "n.json"], tmp_path)
    assert code == 0, err
    res = json.loads((tmp_path / "n.json").read_text())
    assert res["by"] == "session" and res["daily"][0]["session"] == 0
    code, _out, err = invoke(["longrun", "novelty", "--assignments", "a.parquet", "--events",
                              "e.parquet", "--by", "week"], tmp_path)
    assert code == 2 and "--by" in err and len(err.strip().splitlines()) == 1
    # the factor learnt from past runs (here: misses of up to 3 half-widths above)
    from recscope.experiments.novelty import interval_scale

    past = pd.DataFrame({"settled": np.zeros(25), "ci_low": -np.ones(25),
                         "ci_high": np.ones(25), "truth": np.linspace(0, 3, 25)})
    past.to_csv(tmp_path / "past.csv", index=False)
    code, _out, err = invoke(["longrun", "novelty", "--assignments", "a.parquet", "--events",
                              "e.parquet", "--by", "session", "--interval-scale",
                              "past.csv", "--json", "s.json"], tmp_path)
    assert code == 0, err
    scaled = json.loads((tmp_path / "s.json").read_text())["settled"]
    factor = interval_scale(*(past[c] for c in past.columns))
    assert factor > 2.5 and scaled["interval_scale"] == pytest.approx(factor)
    plain = res["settled"]
    assert scaled["ci_high"] - scaled["estimate"] == pytest.approx(
        factor * (plain["ci_high"] - plain["estimate"]))


@pytest.mark.parametrize(("change", "args", "message"), [
    ("drop session", ["--by", "session"], "'session_id'"),
    ("null session", ["--by", "session"], "without a session"),
    ("", ["--interval-scale", "0.5"], "--interval-scale"),
    ("", ["--interval-scale", "nan"], "--interval-scale"),
    ("few runs", ["--interval-scale", "past.csv"], "at least 19 runs"),
    ("null truth", ["--interval-scale", "past.csv"], "row 3"),
    ("", ["--interval-scale", "none.csv"], "none.csv"),
])
def test_novelty_bad_inputs(tmp_path: Path, change: str, args: list[str],
                            message: str) -> None:
    rng = np.random.default_rng(4)
    n = 200
    t = rng.integers(0, 2, n)
    _assignments(tmp_path / "a.parquet", t)
    u = np.repeat(np.arange(n), 6)
    ev = pd.DataFrame({"unit_id": u, "ts": T0 + pd.to_timedelta(
        np.tile(np.arange(6), n) * 86400 + 60, unit="s"), "session_id": np.arange(u.size),
        "impressions": 10, "clicks": rng.binomial(10, 0.1, u.size)})
    if change == "drop session":
        ev = ev.drop(columns=["session_id"])
    if change == "null session":
        ev["session_id"] = ev["session_id"].astype("Int64").mask(ev.index == 7)
    ev.to_parquet(tmp_path / "e.parquet")
    runs = 10 if change == "few runs" else 25
    past = pd.DataFrame({"settled": np.zeros(runs), "ci_low": -np.ones(runs),
                         "ci_high": np.ones(runs), "truth": np.linspace(0, 2, runs)})
    if change == "null truth":
        past.loc[3, "truth"] = np.nan
    past.to_csv(tmp_path / "past.csv", index=False)
    code, _out, err = invoke(["longrun", "novelty", "--assignments", "a.parquet", "--events",
                              "e.parquet", *args, "--json", "n.json"], tmp_path)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "past.csv" in lines[0] or "past" not in args[-1]
    assert not (tmp_path / "n.json").exists()
