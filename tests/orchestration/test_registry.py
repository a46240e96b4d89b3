"""Registry: champion/challenger, the significance gate, lineage, pyfunc, bad gates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recscope.data.loaders import load
from recscope.data.splits import random_holdout
from recscope.errors import ConfigError
from recscope.orchestration import registry as reg
from recscope.orchestration.model_dir import save_model_dir
from recscope.pipeline import Pipeline
from recscope.pipeline.config import parse_config
from tests.conftest import data_path
from tests.orchestration.helpers import cli, one_error_line


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("registry")
    data = load(data_path("ml-100k"))
    split = random_holdout(data, 0.2, seed=0)
    split.test.save(root / "test")
    dirs = {}
    for name, cfg in (("pop", {"name": "pop", "retrievers": [{"component": "popularity"}]}),
                      ("als", {"name": "als", "retrievers": [{"component": "als", "params": {
                          "factors": 32, "iterations": 8}}]})):
        pipe = Pipeline(parse_config(cfg)).fit(split.train)
        dirs[name] = save_model_dir(root / name, pipe, split.train, {})
    return {"root": root, "test": split.test, "dirs": dirs,
            "uri": f"sqlite:///{root / 'store' / 'mlflow.db'}", "store": root / "store"}


def _gate(s: dict[str, Any], candidate: str, name: str) -> reg.Gate:
    champ = reg.champion(s["uri"], name)
    assert champ is not None
    base = reg.load_registered(f"models:/{name}@champion", store=s["uri"])
    return reg.make_gate(s["dirs"][candidate], s["test"], baseline_dir=base.path,
                         baseline={"label": f"{name}/{champ.version}",
                                   "model_fingerprint": dict(champ.tags)[
                                       "recscope.model_fingerprint"]})


def test_champion_challenger_and_gate(setup: dict[str, Any]) -> None:
    s = setup
    (s["store"]).mkdir(exist_ok=True)
    first = reg.register(s["dirs"]["pop"], "m", uri=s["uri"])
    assert first.promoted and first.aliases == ["challenger", "champion"]
    # ALS beats popularity clearly on ML-100K: significant, promoted
    g = _gate(s, "als", "m")
    assert g.passed and g.ci_low > 0 and g.p_value < 0.05
    second = reg.register(s["dirs"]["als"], "m", uri=s["uri"], gate=g)
    assert second.promoted and second.version == "2"
    assert "significant improvement" in second.reason
    # popularity again against the ALS champion: refused, stays challenger
    g3 = _gate(s, "pop", "m")
    assert not g3.passed
    third = reg.register(s["dirs"]["pop"], "m", uri=s["uri"], gate=g3)
    assert not third.promoted and third.aliases == ["challenger"]
    rows = reg.versions(s["uri"], "m")
    assert [r["aliases"] for r in rows] == [[], ["champion"], ["challenger"]]
    # lineage: data fingerprint, model hash, config, the gate and later uses
    info = json.loads((s["dirs"]["als"] / "train.json").read_text())
    assert rows[1]["data_fingerprint"] == info["data_fingerprint"]
    assert "significant" in rows[1]["tags"]["recscope.gate"]
    assert json.loads(rows[1]["tags"]["recscope.config"])["name"] == "als"
    reg.record_use(s["uri"], "m", "2", "simulation", "run-123")
    assert reg.versions(s["uri"], "m")[1]["tags"]["recscope.used_by.simulation"] == "run-123"
    # MLflow serves it too
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(s["uri"])
    model = mlflow.pyfunc.load_model("models:/m@champion")
    users = load_ids(s["dirs"]["als"])[:3]
    pred = model.predict(pd.DataFrame({"user_id": users}), params={"k": 5})
    assert list(pred.columns) == ["user_id", "item_id", "score", "rank"]
    assert len(pred) == 15 and set(pred["user_id"]) == set(users)
    md = reg.load_registered("models:/m@champion", store=s["uri"], used_by="serve")
    assert md.info["name"] == "als"
    assert md.info["registry"] == {"uri": "models:/m@champion", "name": "m", "version": "2"}
    assert "recscope.used_by.serve" in reg.versions(s["uri"], "m")[1]["tags"]
    assert reg.resolve_version("models:/m/3", store=s["uri"]) == ("m", "3")
    ranked = md.model.recommend([0, 1], 5)
    assert ranked.items.shape == (2, 5)


def load_ids(model_dir: Path) -> list[Any]:
    import pyarrow.parquet as pq

    return pq.read_table(model_dir / "users.parquet").column("user_id").to_pylist()


def test_bad_gates_register_nothing(setup: dict[str, Any], tmp_path: Path) -> None:
    s = setup
    reg.register(s["dirs"]["pop"], "g", uri=s["uri"])
    good = _gate(s, "als", "g").to_dict()
    n_before = len(reg.versions(s["uri"], "g"))
    cases = {
        "other-data": ({**good, "candidate": {**good["candidate"],
                                              "data_fingerprint": "0123456789abcdef"}},
                       "candidate.data_fingerprint"),
        "other-champion": ({**good, "baseline": {**good["baseline"],
                                                 "model_fingerprint": "feedbeef"}},
                           "baseline.model_fingerprint"),
        "not-a-gate": ({"metric": "ndcg@10"}, "kind"),
        "no-margin": ({k: v for k, v in good.items() if k != "margin"}, "margin"),
    }
    for label, (doc, key) in cases.items():
        f = tmp_path / f"{label}.json"
        f.write_text(json.dumps(doc))
        rc, _o, err = cli("registry", "register", s["dirs"]["als"], "--name", "g",
                          "--gate", f, "--tracking", s["store"])
        line = one_error_line(err)
        assert rc == 2 and key in line and f.name in line, (label, line)
    assert len(reg.versions(s["uri"], "g")) == n_before
    # without a gate a new version stays challenger; promoting it over a champion needs one
    plain = reg.register(s["dirs"]["als"], "g", uri=s["uri"])
    assert not plain.promoted and "no gate" in plain.reason
    with pytest.raises(ConfigError, match="--gate"):
        reg.promote(s["uri"], "g", plain.version)
    rc, _o, err = cli("registry", "register", s["dirs"]["als"], "--name", "bad name!",
                      "--tracking", s["store"])
    assert rc == 2 and "--name" in one_error_line(err)


def test_cli_gate_register_list_show_promote(setup: dict[str, Any]) -> None:
    s = setup
    root = s["root"]
    rc, _o, err = cli("registry", "register", s["dirs"]["pop"], "--name", "c",
                      "--tracking", s["store"])
    assert rc == 0, err
    rc, out, err = cli("registry", "gate", s["dirs"]["als"], "--name", "c", "--test",
                       root / "test", "--out", root / "gate-c.json", "--tracking", s["store"])
    assert rc == 0, err
    assert "significant improvement" in out
    rc, out, err = cli("registry", "register", s["dirs"]["als"], "--name", "c", "--gate",
                       root / "gate-c.json", "--tracking", s["store"])
    assert rc == 0 and "promoted to champion" in out, err
    rc, out, _e = cli("registry", "list", "--name", "c", "--json", "--tracking", s["store"])
    rows = json.loads(out)
    assert [r["aliases"] for r in rows] == [[], ["challenger", "champion"]]
    assert rows[0]["tags"]["recscope.used_by.gate"].endswith("gate-c.json")
    rc, out, _e = cli("registry", "show", "c@champion", "--tracking", s["store"])
    assert rc == 0 and "data_fingerprint" in out and "version 2" in out
    rc, out, err = cli("registry", "promote", "c", "1", "--force", "--tracking", s["store"])
    assert rc == 0 and "forced" in out, err
    assert str(reg.champion(s["uri"], "c").version) == "1"


def test_registering_leaves_the_tracking_environment_alone(setup: dict[str, Any]) -> None:
    """MLflow exports URIs to os.environ; recscope's run store must not follow the registry."""
    import os

    from recscope.tracking import tracking_uri

    before = (os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI"),
              tracking_uri(None))
    reg.register(setup["dirs"]["pop"], "env-check", uri=setup["uri"])
    reg.load_registered("models:/env-check@champion", store=setup["uri"])
    after = (os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI"),
             tracking_uri(None))
    assert after == before
