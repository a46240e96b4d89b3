"""Pipelines from TOML: validation errors, stage traces, versions, examples, CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recscope.data import Interactions
from recscope.errors import ConfigError
from recscope.models import Component
from recscope.pipeline import Pipeline, load_config
from tests.models.conftest import small_log

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
name = "small"

[[retrievers]]
component = "popularity"
quota = 8

[[retrievers]]
component = "itemknn"
quota = 8
params = { neighbors = 10 }

[ranker]
component = "lambdamart"
params = { n_estimators = 10, min_data_in_leaf = 5, num_threads = 1 }

[[rerankers]]
component = "mmr"
depth = 10
params = { lambda_ = 0.5, dim = 4 }

[[rerankers]]
component = "thompson"
params = { slots = [1], dim = 4, propensity_samples = 20 }
"""


@pytest.fixture(scope="module")
def train() -> Interactions:
    return small_log()


@pytest.fixture(scope="module")
def fitted(train: Interactions, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    path = tmp_path_factory.mktemp("cfg") / "p.toml"
    path.write_text(GOOD)
    return Pipeline.from_toml(path).fit(train)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,key,words", [
    (GOOD.replace('component = "itemknn"', 'component = "itemknnn"'),
     "retrievers.1.component", "unknown component"),
    (GOOD.replace("neighbors = 10", "neighbors = \"ten\""),
     "retrievers.1.params.neighbors", "integer"),
    (GOOD.replace("neighbors = 10", "neighbours = 10"),
     "retrievers.1.params.neighbours", "Extra inputs"),
    (GOOD.replace("quota = 8\n\n[[retrievers]]", "quota = -1\n\n[[retrievers]]"),
     "retrievers.0.quota", "greater than"),
    (GOOD.replace('component = "mmr"', 'component = "ease"'),
     "rerankers.0.component", "not a re-ranker"),
    (GOOD.replace('[ranker]\ncomponent = "lambdamart"', '[ranker]\ncomponent = "ease"'),
     "ranker.component", "not a ranker"),
    (GOOD.replace('name = "small"', 'name = "small"\ncolour = 3'), "colour", "Extra inputs"),
    ('name = "x"\n', "retrievers", "Field required"),
    (GOOD.replace('component = "popularity"\n', ""),
     "retrievers.0.component", "Field required"),
    (GOOD.replace("lambda_ = 0.5", "lambda_ = 7"), "rerankers.0.params.lambda_",
     "less than"),
])
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, key: str, words: str
                                       ) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key
    assert err.value.file == str(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "name = \n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_traces_form_a_funnel(fitted: Pipeline, train: Interactions) -> None:
    users = np.unique(train.user_index).astype(np.int32)
    rl = fitted.recommend(users, 5)
    assert list(rl.traces) == fitted.stage_names == [
        "retrieval", "ranking", "rerank.0.mmr", "rerank.1.thompson"]
    assert rl.traces["retrieval"].shape[1] == 16
    stages = [*list(rl.traces.values()), rl.items]
    for before, after in itertools.pairwise(stages):
        for a, b in zip(before, after, strict=True):
            assert np.isin(b[b >= 0], a).all()
    assert rl.traces["rerank.0.mmr"].shape[1] == 10
    assert fitted.last_slate is not None
    assert fitted.last_slate.propensities.shape == (len(users), 1)


def test_versions_change_with_one_component(fitted: Pipeline, train: Interactions,
                                            tmp_path: Path) -> None:
    v = fitted.versions()
    assert set(v) == {"pipeline", "retriever.popularity", "retriever.itemknn",
                      "ranker.lambdamart", "rerank.0.mmr", "rerank.1.thompson"}
    path = _write(tmp_path, GOOD.replace("lambda_ = 0.5", "lambda_ = 0.6"))
    other = Pipeline.from_toml(path).fit(train).versions()
    changed = {k for k in v if v[k] != other[k]}
    assert changed == {"pipeline", "rerank.0.mmr"}


def test_pipeline_without_ranker_and_events_filter(train: Interactions) -> None:
    pipe = Pipeline({"retrievers": [{"component": "popularity", "quota": 5},
                                    {"component": "itemknn", "quota": 5}],
                     "events": ["click"]}).fit(train)
    rl = pipe.recommend(np.arange(10), 4)
    assert rl.items.shape == (10, 4)
    np.testing.assert_array_equal(rl.items, rl.traces["ranking"][:, :4])
    with pytest.raises(ConfigError) as err:
        Pipeline({"retrievers": [{"component": "popularity"}], "events": ["buy"]}).fit(train)
    assert err.value.key == "events"


@pytest.mark.parametrize("name", ["ml100k.toml", "home_feed.toml"])
def test_examples_are_valid(name: str) -> None:
    cfg = load_config(ROOT / "examples" / name)
    assert cfg.retrievers


def test_cli_train_and_recommend(train: Interactions, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recscope.cli import _register, app

    _register()
    data = train.save(tmp_path / "data")
    cfg = _write(tmp_path, GOOD)
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(cfg), "--data", str(data),
                              "--out", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "model" / "train.json").exists()
    model = Component.load(tmp_path / "model" / "pipeline")
    assert isinstance(model, Pipeline)
    users = tmp_path / "users.csv"
    users.write_text("user_id\n3\n5\n999\n")
    out = tmp_path / "rankings.parquet"
    res = runner.invoke(app, ["recommend", str(tmp_path / "model"), "--users", str(users),
                              "--k", "5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 user(s) unknown" in res.output
    t = pq.read_table(out)
    assert t.column_names == ["user_id", "item_id", "score", "rank"]
    assert sorted(set(t.column("user_id").to_pylist())) == [3, 5, 999]
    assert set(t.column("rank").to_pylist()) == {1, 2, 3, 4, 5}
    # the rankings file is what `recscope evaluate` reads
    from recscope.offline.inputs import read_rankings

    assert read_rankings(out).num_rows == t.num_rows
    res = runner.invoke(app, ["recommend", str(tmp_path / "model"), "--k", "5",
                              "--out", str(out)])
    assert res.exit_code != 0


def test_cli_bad_config_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from recscope.cli import main

    cfg = _write(tmp_path, GOOD.replace("neighbors = 10", "neighbors = -3"))
    monkeypatch.setattr(sys, "argv", ["recscope", "train", str(cfg), "--data",
                                      str(tmp_path / "whatever")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "retrievers.1.params.neighbors" in err and str(cfg) in " ".join(err.split())
