"""Tuning: a real search on ML-100K, resuming from the study, pruning on curves, lineage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from recscope.data.loaders import load
from recscope.orchestration.space import load_space
from recscope.orchestration.tuning import TuneSettings, supports_epochs, tune
from tests.conftest import data_path
from tests.orchestration.helpers import ALS_SPACE, cli, one_error_line, snapshot


@pytest.fixture(scope="module")
def ml100k() -> Any:
    return load(data_path("ml-100k"))


def _space(tmp_path: Path, text: str = ALS_SPACE) -> Any:
    p = tmp_path / "space.toml"
    p.write_text(text)
    return load_space(p)


def test_search_saves_best_and_compares_on_test(tmp_path: Path, ml100k: Any) -> None:
    out = tmp_path / "tune"
    res = tune(_space(tmp_path), ml100k, TuneSettings(trials=3, pruner="none",
                                                      max_eval_users=300), out,
               store=str(tmp_path / "store"))
    assert len(res.trials) == 3 and all(t.state == "COMPLETE" for t in res.trials)
    assert res.best_value == max(t.value for t in res.trials)
    assert [(t.epochs, len(t.curve)) for t in res.trials] == [(4, 4)] * 3, res.trials
    # best vs default on the untouched test part: a paired test with an interval
    diff = next(e for e in res.test if e.extra.get("system") == "best - default")
    assert diff.ci_low <= diff.estimate <= diff.ci_high and 0 <= diff.p_value <= 1
    assert diff.extra["test"] == "paired t"
    assert res.info["n_test"] > 0 and res.info["test_fingerprint"] != res.info[
        "search_fingerprint"]
    # the best model is a normal model directory trained with the best parameters
    info = json.loads((out / "best" / "train.json").read_text())
    assert info["best_params"] == res.best_params
    assert info["config"]["retrievers"][0]["params"]["factors"] == res.best_params[
        "retrievers.0.params.factors"]
    saved = json.loads((out / "tune.json").read_text())
    assert saved["kind"] == "tuning" and len(saved["trials"]) == 3
    # every trial is a nested MLflow run under the tune run, with its curve
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = [r for r in runs if r.info.run_name == "tune"]
    trials = [r for r in runs if r.info.run_name.startswith("trial-")]
    assert len(parent) == 1 and len(trials) == 3
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in trials)
    hist = client.get_metric_history(trials[0].info.run_id, "val.ndcg_10")
    assert len(hist) >= 1


def test_study_resumes(tmp_path: Path, ml100k: Any) -> None:
    out = tmp_path / "tune"
    space = _space(tmp_path)
    s = TuneSettings(trials=2, pruner="none", max_eval_users=200)
    first = tune(space, ml100k, s, out, store=str(tmp_path / "store"))
    s.trials = 3
    second = tune(space, ml100k, s, tmp_path / "tune2", store=str(tmp_path / "store"))
    assert [t.number for t in second.trials] == [0, 1, 2]
    assert [t.params for t in second.trials[:2]] == [t.params for t in first.trials]
    assert second.info["storage"] == f"sqlite:///{tmp_path / 'store' / 'optuna.db'}"
    study = optuna.load_study(study_name=second.info["study"], storage=second.info["storage"])
    assert len(study.trials) == 3


def test_pruner_stops_trials_from_curves(tmp_path: Path, ml100k: Any) -> None:
    """ALS reports every iteration: the median pruner stops trials early, epochs counted."""
    from recscope.models.mf import ALS

    assert supports_epochs(ALS())
    s = TuneSettings(trials=8, pruner="median", startup_trials=2, eval_every=1,
                     max_eval_users=300, seed=3)
    res = tune(_space(tmp_path, ALS_SPACE.replace("iterations = 4", "iterations = 6")),
               ml100k, s, tmp_path / "tune", store=str(tmp_path / "st"))
    pruned = [t for t in res.trials if t.state == "PRUNED"]
    assert pruned, [(t.state, t.value) for t in res.trials]
    assert all(t.epochs < 6 and len(t.curve) == t.epochs for t in pruned)
    assert res.total_epochs < 8 * 6
    assert all(t.state == "COMPLETE" for t in res.trials[:2])  # startup trials run fully
    assert res.info["curves"] is True
    complete = [t for t in res.trials if t.state == "COMPLETE"]
    assert all([p[0] for p in t.curve] == [1, 2, 3, 4, 5, 6] for t in complete)


def test_cli_tune_and_no_partial_output_on_bad_data(tmp_path: Path) -> None:
    cfg = tmp_path / "space.toml"
    cfg.write_text(ALS_SPACE)
    before = snapshot(tmp_path)
    rc, _o, err = cli("tune", cfg, "--data", tmp_path / "missing", "--trials", "1",
                      "--out", tmp_path / "out")
    assert rc == 2 and "missing" in one_error_line(err)
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()
    rc, out, err = cli("tune", cfg, "--data", data_path("ml-100k"), "--trials", "2",
                       "--out", tmp_path / "out", "--pruner", "hyperband",
                       "--tracking", tmp_path / "store")
    assert rc == 0, err
    assert (tmp_path / "out" / "best" / "pipeline").is_dir()
    assert "best parameters" in out
