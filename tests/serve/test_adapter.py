"""From the service's logs to the experiment tables and to OPE's logged feedback."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recscope.data.interactions import Interactions
from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.analysis import analyze
from recscope.experiments.metrics import parse_metrics
from recscope.ope import LoggedFeedback
from recscope.serve.adapter import METRICS_TOML, experiment_tables, logged_interactions
from recscope.serve.app import Settings, create_app
from recscope.serve.config import ArmConfig
from recscope.serve.logs import LogWriter
from recscope.serve.models import load_model, register_resolver
from tests.serve.conftest import ab_config


def _serve(settings: Settings, users: range, clicks_every: int = 3) -> dict[str, int]:
    """Requests for ``users`` and a click on the first item of every third one."""
    counts = {"requests": 0, "items": 0, "clicks": 0}
    with TestClient(create_app(settings)) as c:
        for i, u in enumerate(users):
            b = c.post("/recommend", json={"user_id": u, "k": 4}).json()
            counts["requests"] += 1
            counts["items"] += len(b["items"])
            if i % clicks_every == 0:
                c.post("/feedback", json={"request_id": b["request_id"],
                                          "item_id": b["items"][0], "event": "click"})
                counts["clicks"] += 1
    return counts


def test_experiment_tables_and_analysis(ab_settings: Settings) -> None:
    counts = _serve(ab_settings, range(100, 160))
    assignments, events = experiment_tables(ab_settings.log_dir)
    assert assignments.column_names == ["unit_id", "variant", "first_exposure_ts"]
    assert assignments.num_rows == 60 and assignments.column("unit_id").type == "int64"
    assert events.num_rows == counts["requests"]
    assert sum(events.column("impressions").to_pylist()) == counts["items"]
    assert sum(events.column("clicks").to_pylist()) == counts["clicks"]
    card = analyze(assignments, events, parse_metrics(tomllib.loads(METRICS_TOML)))
    assert {e.metric for e in card.effects()} >= {"ctr", "clicks", "requests"}


def test_export_cli_writes_tables_and_ope_interactions(model_dirs: dict[str, Path],
                                                       tmp_path: Path) -> None:
    cfg = ab_config(control=ArmConfig(exploration=0.3, pool=8),
                    treatment=ArmConfig(exploration=0.3, pool=8,
                                        model=str(model_dirs["itemknn"])))
    s = Settings(model=str(model_dirs["popularity"]), log_dir=str(tmp_path / "logs"),
                 experiment=cfg)
    counts = _serve(s, range(100, 150))
    from recscope.cli.serve import app

    r = CliRunner().invoke(app, ["export", s.log_dir, "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"assignments.parquet", "events.parquet", "metrics.toml",
            "interactions.parquet"} <= names
    table = pq.read_table(tmp_path / "out" / "interactions.parquet")
    assert table.num_rows == counts["items"]
    assert sum(table.column("value").to_pylist()) == counts["clicks"]
    fb = LoggedFeedback.from_interactions(Interactions.from_table(table, duplicates="keep"))
    assert fb.n_rounds == counts["items"] and fb.is_slate
    assert np.all((fb.pscore > 0) & (fb.pscore <= 1))


def test_deterministic_arms_are_refused_for_ope(ab_settings: Settings) -> None:
    _serve(ab_settings, range(100, 110))
    with pytest.raises(DataValidationError, match="served deterministic slates"):
        logged_interactions(ab_settings.log_dir)


def test_a_unit_in_two_arms_is_named(tmp_path: Path) -> None:
    w = LogWriter(tmp_path)
    for i, arm in enumerate(("control", "treatment")):
        w.append("exposures", (i, f"r{i}", "u7", "e", arm, "v", "home_feed", 1, ["1"], [1.0],
                               None, False, False))
    w.close()
    with pytest.raises(DataValidationError, match="unit 'u7' was served under arms"):
        experiment_tables(tmp_path)


def test_registry_uris_resolve_through_a_registered_resolver(
        model_dirs: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="no resolver for model URI scheme 'fake'"):
        load_model("fake:/ranker@champion")
    register_resolver("fake", lambda uri: model_dirs["itemknn"])
    served = load_model("fake:/ranker@champion", max_k=5)
    assert served.path == model_dirs["itemknn"] and served.cached


def test_a_log_of_two_experiments_needs_a_name(tmp_path: Path) -> None:
    w = LogWriter(tmp_path)
    for i, name in enumerate(("exp-a", "exp-b")):
        w.append("exposures", (i, f"r{i}", f"u{i}", name, "control", "v", "home_feed", 1,
                               ["1"], [1.0], None, False, False))
    w.close()
    with pytest.raises(DataValidationError, match=r"holds experiments \['exp-a', 'exp-b'\]"):
        experiment_tables(tmp_path)
    assignments, _ = experiment_tables(tmp_path, experiment="exp-b", unit_type="string")
    assert assignments.column("unit_id").to_pylist() == ["u1"]
    with pytest.raises(DataValidationError, match="no experiment 'exp-c'"):
        experiment_tables(tmp_path, experiment="exp-c")
