"""Predictor, conformal intervals, triage, priors and shortcuts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats as sps

from recscope.cli import run
from recscope.errors import DataValidationError
from recscope.history.predict import conformal_quantile, triage, validate
from recscope.history.priors import (
    NormalPrior,
    apply_prior,
    fit_family_model,
    fit_metric_prior,
    fit_normal_prior,
    fit_priors,
    sure_weight,
    validate_asos,
)
from recscope.history.shortcuts import (
    Series,
    analyse,
    asos_to_series,
    conditional_power,
    earliest_agreement,
    stop,
)
from tests.conftest import data_path


def _synthetic_history(n: int = 300, seed: int = 0) -> pa.Table:
    """Candidates whose truth is a noisy function of replay and OPE, in 30 families."""
    rng = np.random.default_rng(seed)
    fam_effect = rng.normal(0, 0.05, 30)
    fam = rng.integers(0, 30, n)
    truth = fam_effect[fam] + rng.normal(0, 0.05, n)
    se = np.full(n, 0.02)
    return pa.table({
        "candidate_id": [f"c{i}" for i in range(n)], "family": [f"f{f}" for f in fam],
        "split_fingerprint": ["s"] * n, "decision": ["launch"] * n,
        "offline_ndcg_estimate": truth * 0.1 + rng.normal(0, 0.02, n),
        "offline_recall_estimate": rng.normal(0, 1, n),
        "ope_estimate": truth + rng.normal(0, 0.05, n),
        "replay_estimate": truth + rng.normal(0, 0.02, n),
        "online_clicks_estimate": truth + rng.normal(0, 0.02, n), "online_clicks_se": se,
        "online_clicks_mde": 2.8 * se, "true_clicks": truth})


def test_conformal_quantile() -> None:
    r = np.arange(1, 20, dtype=float)  # n = 19: ceil(0.9 * 20) = 18th smallest
    assert conformal_quantile(r, 0.1) == 18.0
    assert conformal_quantile(-r, 0.1) == 18.0
    assert math.isinf(conformal_quantile(np.arange(3.0), 0.1))  # too few points


@pytest.mark.parametrize("kind", ["ridge", "gbm"])
def test_validation_on_a_known_relation(kind: str) -> None:
    """Replay carries most of the signal: the learned model ranks well, covers ~90%."""
    v = validate(_synthetic_history(), kind=kind)  # type: ignore[arg-type]
    sp = v["spearman"]
    assert sp["learned"] > 0.9
    assert sp["replay"] > sp["offline NDCG delta"]
    assert 0.84 <= v["coverage"] <= 0.96
    assert v["directional_accuracy"] > 0.9
    assert v["n"] == 300 and v["families"] == 30


def test_triage() -> None:
    assert triage(-0.2, 0.05, 0.1, 0.05, 0.01)["recommendation"] == "skip"
    big = triage(0.2, 0.05, 0.1, 0.05, 0.01)
    assert big["recommendation"] == "run" and big["p_positive"] > 0.99
    small = triage(0.02, 0.05, 0.1, 0.05, 0.001)
    assert small["recommendation"] == "run with more traffic"
    assert small["traffic"] == pytest.approx(min(4.0, (0.05 / 0.02) ** 2))
    # EV(run) = E[max(effect, 0)] - cost under N(pred, sd^2)
    sd = 0.05 / sps.norm.ppf(0.95)
    ev = 0.02 * sps.norm.cdf(0.02 / sd) + sd * sps.norm.pdf(0.02 / sd) - 0.001
    assert small["ev_run"] == pytest.approx(ev)


def test_predict_cli(tiny_corpus: Path, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.json"
    assert run(["history", "predict", str(tiny_corpus / "candidates" / "c00-0002.json"),
                "--history", str(tiny_corpus / "history.parquet"), "--model", "ridge",
                "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["candidate_id"] == "c00-0002" and res["model"] == "ridge"
    assert res["ci_low"] < res["estimate"] < res["ci_high"]
    assert res["triage"]["recommendation"] in ("run", "skip", "run with more traffic")


def test_normal_prior_recovers_mu_tau() -> None:
    rng = np.random.default_rng(1)
    theta = rng.normal(0.01, 0.03, 4000)
    se = rng.uniform(0.01, 0.04, theta.size)
    p = fit_normal_prior(theta + se * rng.standard_normal(theta.size), se, "clicks")
    assert p.mean == pytest.approx(0.01, abs=0.003)
    assert p.sd == pytest.approx(0.03, abs=0.003)
    m, s, pp = p.posterior(0.05, 0.03)
    w = 1 / 0.03**2 + 1 / p.sd**2
    assert float(m) == pytest.approx((0.05 / 0.03**2 + p.mean / p.sd**2) / w)
    assert float(s) == pytest.approx(w**-0.5)
    assert float(pp) == pytest.approx(sps.norm.sf(0, float(m), float(s)))


def test_posterior_reliability_in_simulation() -> None:
    """Among readouts given P(effect > 0) ~ 0.8, about 80% are truly positive."""
    rng = np.random.default_rng(2)
    theta = rng.normal(0.0, 0.02, 20000)
    se = np.full(theta.size, 0.02)
    est = theta + se * rng.standard_normal(theta.size)
    _, _, p = NormalPrior("m", 0.0, 0.02, 0).posterior(est, se)
    sel = (p > 0.7) & (p < 0.9)
    assert np.mean(theta[sel] > 0) == pytest.approx(np.mean(p[sel]), abs=0.03)


def test_sure_weight_one_for_a_right_prior_near_zero_for_a_wrong_one() -> None:
    """The shrinkage weight needs no truth: ~1 when readouts scatter as the prior says,
    ~0 when the prior claims far less spread than the readouts show."""
    rng = np.random.default_rng(3)
    theta = rng.normal(0.0, 0.05, 20000)
    s = rng.uniform(0.02, 0.06, theta.size)
    y = theta + s * rng.standard_normal(theta.size)
    mu = np.zeros_like(y)
    assert sure_weight(y, s, mu, np.full_like(y, 0.05)) == pytest.approx(1.0, abs=0.05)
    # a prior centred 0.5 away from every readout with a small spread: no shrinkage
    assert sure_weight(y, s, mu + 0.5, np.full_like(y, 0.05)) < 0.05


def test_family_model_and_log_scale_prior() -> None:
    """Three levels recover the between- and within-family spreads; family centres and
    the log scale; shrink=0 leaves a readout as it is."""
    rng = np.random.default_rng(4)
    fam = np.repeat(np.arange(60), 20)
    theta = rng.normal(0.1, 0.3, 60)[fam] + rng.normal(0, 0.1, fam.size)
    s = np.full(fam.size, 0.05)
    mu, tb, tw = fit_family_model(theta + s * rng.standard_normal(fam.size), s, fam)
    assert (mu, tb, tw) == pytest.approx((0.1, 0.3, 0.1), abs=0.08)
    est = np.expm1(theta + s * rng.standard_normal(fam.size))  # relative effects
    se = s * (1 + est)  # the SE of a relative effect grows with it
    p = fit_metric_prior(est, se, "clicks", families=fam.astype(str))
    assert p.scale == "log" and len(p.families) == 60
    assert 0.5 < p.family_shrink <= 1 and 0 <= p.shrink <= 1
    m_f, sd_f = p.centre("7")
    assert m_f == pytest.approx(np.log1p(est[fam == 7]).mean(), abs=0.03)
    assert sd_f == pytest.approx(0.1, abs=0.03)
    assert p.centre("unknown") == (p.mean, p.sd)
    keep = NormalPrior("m", 0.0, 0.1, 10, scale="log", shrink=0.0)
    m, _, _ = keep.posterior(0.3, 0.05)
    lo, hi = keep.interval(0.3, 0.05)
    assert float(m) == pytest.approx(0.3)
    assert float(lo) == pytest.approx(np.expm1(np.log1p(0.3) - 1.959964 * 0.05 / 1.3))
    assert float(lo) < 0.3 < float(hi)
    assert "barely helps" in NormalPrior("m", 0.0, 0.1, 10, shrink=0.1).describe()


def test_apply_prior_and_wrong_metric(tiny_corpus: Path) -> None:
    import pyarrow.parquet as pq

    priors = fit_priors(pq.read_table(tiny_corpus / "history.parquet"), source="h.parquet")
    card = {"results": [{"metric": "clicks", "variant": "treatment", "rel_effect": 0.1,
                         "rel_ci_low": 0.0, "rel_ci_high": 0.2, "p_value": 0.05}]}
    res = apply_prior(card, priors)
    row = res.rows_[0]
    assert row["estimate"] == 0.1
    m, _, p = priors["clicks"].posterior(0.1, 0.1 / 1.959963984540054)
    assert row["shrunken"] == pytest.approx(float(m))
    assert row["p_positive"] == pytest.approx(float(p))
    assert row["shrunken_ci_low"] < row["shrunken"] < row["shrunken_ci_high"]
    fam = sorted(priors["clicks"].families)[0]  # a known family: its own centre
    m_f, _, _ = priors["clicks"].posterior(0.1, 0.1 / 1.959963984540054, fam)
    assert apply_prior(card, priors, family=fam).rows_[0]["shrunken"] == pytest.approx(
        float(m_f))
    bad = {"results": [{**card["results"][0], "metric": "ctr"}]}
    with pytest.raises(DataValidationError, match=r"h\.parquet.*fitted on metric.*'ctr'"):
        apply_prior(bad, priors, file="h.parquet")


def test_asos_priors_reduce_error() -> None:
    import pandas as pd

    frame = pd.read_parquet(data_path("asos-digital-experiments",
                                      "asos_digital_experiments_dataset.parquet"))
    rows = [r for r in validate_asos(frame) if r["prior"] == "normal (log, SURE)"]
    assert len(rows) == 4
    assert all(r["mse_reduction"] > 0.2 and r["shrink"] > 0.5 for r in rows)
    series = asos_to_series(frame)
    a = analyse(series, max_disagreement=0.10)
    assert 0 < a["always_valid"]["days_saved_share"] < 1
    if a["calibrated"]["futility"] is not None:
        assert a["always_valid_and_futility"]["disagreement_rate"] <= 0.10 + 1e-12


def _series(effect: list[float], se: list[float], seq_p: list[float]) -> Series:
    e, s = np.array(effect), np.array(se)
    t = np.arange(1, len(e) + 1, dtype=float)
    return Series("x", t, e, s, 2 * sps.norm.sf(np.abs(e / s)), np.array(seq_p), t / t[-1])


def test_earliest_agreement_and_stop() -> None:
    s = _series([0.0, 3.0, 0.5, 3.0, 3.0], [1, 1, 1, 1, 1], [1, 1, 1, 0.01, 0.001])
    assert earliest_agreement(s) == pytest.approx(4 / 5)
    assert stop(s) == (3, "launch")
    # futility: a flat series stops at the first look past min_fraction with low power
    flat = _series([0.0] * 10, [1.0] * 10, [1.0] * 10)
    i, dec = stop(flat, futility=0.1, min_fraction=0.3)
    assert (i, dec) == (2, "none")
    assert stop(flat, futility=None)[0] == 9


def test_conditional_power_formula() -> None:
    z, f = np.array([2.0]), np.array([0.5])
    cp = conditional_power(z, f, 0.05)
    expected = sps.norm.sf((1.959963984540054 - 2.0 / math.sqrt(0.5)) / math.sqrt(0.5))
    assert float(cp[0]) == pytest.approx(expected)


def test_validate_cli(tiny_corpus: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v.json"
    assert run(["history", "validate", str(tiny_corpus / "history.parquet"),
                "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["predictor"]) == {"gbm", "ridge"}
    assert res["predictor"]["ridge"]["n"] == 12
    assert {r["metric"] for r in res["priors"]} == {"clicks", "saves", "sessions"}
    assert res["shortcuts"]["simulated corpus"]["series"] == 36


def test_validate_needs_truth(tiny_corpus: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow.parquet as pq

    t = pq.read_table(tiny_corpus / "history.parquet")
    bad = tmp_path / "real.parquet"
    pq.write_table(t.select([c for c in t.column_names if not c.startswith("true_")]), bad)
    out = tmp_path / "v.json"
    assert run(["history", "validate", str(bad), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "real.parquet" in err and "true effects" in err
    assert not out.exists()


def test_experiment_analyze_with_prior(tiny_corpus: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`recscope experiment analyze --prior`: shrunken effects beside the scorecard; a
    metric without a prior is listed, not shrunk; a prior on other metrics only: exit 2."""
    import pyarrow.parquet as pq

    from recscope.cli.common import console

    monkeypatch.setattr(console, "_width", 400)  # the notes checked below stay on one line

    rng = np.random.default_rng(0)
    n = 4000
    variant = np.where(np.arange(n) % 2 == 0, "control", "treatment")
    clicks = rng.poisson(np.where(variant == "treatment", 2.2, 2.0))
    pq.write_table(pa.table({"unit_id": np.arange(n), "variant": variant}),
                   tmp_path / "a.parquet")
    pq.write_table(pa.table({"unit_id": np.arange(n), "clicks": clicks,
                             "hides": rng.poisson(1.0, n)}), tmp_path / "e.parquet")
    metrics = tmp_path / "m.toml"
    metrics.write_text('unit = "unit_id"\nvariant = "variant"\ncontrol = "control"\n'
                       '[metrics.clicks]\nkind = "mean"\ncolumn = "clicks"\n'
                       '[metrics.hides]\nkind = "mean"\ncolumn = "hides"\n')
    args = ["experiment", "analyze", "--assignments", str(tmp_path / "a.parquet"),
            "--events", str(tmp_path / "e.parquet"), "--tracking", str(tmp_path / "ml")]
    hist = str(tiny_corpus / "history.parquet")
    assert run([*args, "--metrics", str(metrics), "--prior", hist]) == 0
    out = capsys.readouterr().out
    assert "Readout with informed priors" in out and "prior for clicks: N(" in out
    assert "no prior in the history for hides" in out
    assert "shrinkage weight" in out and "on log(1 + effect)" in out
    assert run([*args, "--metrics", str(metrics), "--prior", hist,
                "--prior-family", "no/such/family"]) == 0
    assert "not in the history; the metric-level prior is used" in capsys.readouterr().out
    only_hides = tmp_path / "h.toml"
    only_hides.write_text('unit = "unit_id"\nvariant = "variant"\ncontrol = "control"\n'
                          '[metrics.hides]\nkind = "mean"\ncolumn = "hides"\n')
    card = tmp_path / "card.json"
    assert run([*args, "--metrics", str(only_hides), "--prior", hist,
                "--json", str(card)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "history.parquet" in err and "'hides'" in err
    assert not card.exists()


def test_grid_prior_fits_a_two_point_distribution() -> None:
    """Effects at -0.3 or +0.1: the grid prior's posterior beats the normal prior's."""
    from recscope.history.priors import fit_grid_prior

    rng = np.random.default_rng(3)
    theta = np.where(rng.random(600) < 0.3, -0.3, 0.1)
    se = np.full(theta.size, 0.1)
    est = theta + se * rng.standard_normal(theta.size)
    grid = fit_grid_prior(est, se, "m")
    normal = fit_normal_prior(est, se, "m")
    assert sum(grid.weights) == pytest.approx(1.0)
    assert grid.mean == pytest.approx(0.3 * -0.3 + 0.7 * 0.1, abs=0.02)
    mse = {name: float(np.mean((p.posterior(est, se)[0] - theta) ** 2))
           for name, p in (("grid", grid), ("normal", normal))}
    assert mse["grid"] < mse["normal"] < float(np.mean((est - theta) ** 2))
