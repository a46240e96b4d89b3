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
     "retrievers.1.params.neighbours", "unknown key"),
    (GOOD.replace("quota = 8\n\n[[retrievers]]", "quota = -1\n\n[[retrievers]]"),
     "retrievers.0.quota", "greater than"),
    (GOOD.replace('component = "mmr"', 'component = "ease"'),
     "rerankers.0.component", "not a re-ranker"),
    (GOOD.replace('[ranker]\ncomponent = "lambdamart"', '[ranker]\ncomponent = "ease"'),
     "ranker.component", "not a ranker"),
    (GOOD.replace('name = "small"', 'name = "small"\ncolour = 3'), "colour", "unknown key"),
    ('name = "x"\n', "retrievers", "Field required"),
    (GOOD.replace('component = "popularity"\n', ""),
     "retrievers.0.component", "Field required"),
    (GOOD.replace("lambda_ = 0.5", "lambda_ = 7"), "rerankers.0.params.lambda_",
     "less than"),
    # strict: text is not a number, a number is not a flag
    (GOOD.replace("lambda_ = 0.5", 'lambda_ = "0.5"'), "rerankers.0.params.lambda_",
     "valid number"),
    (GOOD.replace('name = "small"', 'name = "small"\nrrf_k = true'), "rrf_k", "valid number"),
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


def test_fit_reports_every_stage(train: Interactions) -> None:
    """The pipeline fit reports each stage as it starts and ends (the CLI's bars)."""
    ticks: list[tuple[str, float, float]] = []
    Pipeline.from_toml(_write_text(GOOD)).fit(train, progress=lambda *a: ticks.append(a))
    stages = [t[0] for t in ticks]
    assert stages == ["fit ranker lambdamart (with its retrievers)"] * 2 + \
        ["fit rerank.0.mmr"] * 2 + ["fit rerank.1.thompson"] * 2
    assert [t[1] for t in ticks] == [0.0, 1.0] * 3


def _write_text(text: str) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "p.toml"
    path.write_text(text)
    return path


def test_on_epoch_reaches_the_ranker_and_can_stop_it(train: Interactions,
                                                     fitted: Pipeline) -> None:
    """Tuning's hook: called after every boosting round with a pipeline that can already
    recommend; True stops the boosting there. A hook that never stops changes nothing."""
    seen: list[int] = []
    users = np.arange(5, dtype=np.int32)

    def stop_at_three(epoch: int, metrics: dict[str, float]) -> bool:
        seen.append(epoch)
        assert pipe.recommend(users, 3).items.shape == (5, 3)
        return epoch == 3

    pipe = Pipeline.from_toml(_write_text(GOOD))
    pipe.fit(train, on_epoch=stop_at_three)
    assert seen == [1, 2, 3]
    assert pipe.ranker is not None and pipe.ranker.booster.current_iteration() == 3
    never = Pipeline.from_toml(_write_text(GOOD)).fit(train, on_epoch=lambda e, m: False)
    np.testing.assert_array_equal(never.recommend(users, 5).items,
                                  fitted.recommend(users, 5).items)


def test_lambdamart_names_a_feature_the_data_lacks(train: Interactions) -> None:
    """Topic affinity without an item topic column is an error naming the feature, unless
    the config says to ignore it."""
    no_topics = Interactions(train.table, train.users, train.items, name="no-topics")
    assert train.item_features is not None and no_topics.item_features is None
    text = GOOD.split("[[rerankers]]")[0]
    with pytest.raises(ConfigError, match=r"user_topic_affinity.*topic") as err:
        Pipeline.from_toml(_write_text(text)).fit(no_topics)
    assert err.value.key == "features"
    ok = text.replace("num_threads = 1", 'num_threads = 1, missing_features = "ignore"')
    assert Pipeline.from_toml(_write_text(ok)).fit(no_topics).recommend(
        np.arange(3), 2).items.shape == (3, 2)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``recscope ARGS`` as the script does: exit code and everything printed."""
    from recscope.cli import run

    code = run([str(a) for a in args])
    cap = capsys.readouterr()
    return code, " ".join((cap.out + cap.err).split())


def test_cli_single_model_serves_its_own_scores(train: Interactions, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A config that names just a model trains that model; its own scores are served."""
    from recscope.models.base import get_component

    data = train.save(tmp_path / "data")
    cfg = tmp_path / "ease.toml"
    cfg.write_text('name = "ease-only"\ncomponent = "ease"\nparams = { l2 = 50.0 }\n')
    code, text = _run(["train", cfg, "--data", data, "--out", tmp_path / "model"], capsys)
    assert code == 0, text
    out = tmp_path / "r.parquet"
    code, text = _run(["recommend", tmp_path / "model", "--all", "--k", "4", "--out", out],
                      capsys)
    assert code == 0, text
    direct = get_component("ease")({"l2": 50.0}).fit(train)
    want = direct.recommend(np.arange(train.n_users, dtype=np.int32), 4)
    t = pq.read_table(out)
    first = t.filter(pq.read_table(out).column("user_id").to_numpy() == train.users.ids[0]
                     .as_py())
    items = train.items.index(first.column("item_id"))
    np.testing.assert_array_equal(items, want.items[0][want.items[0] >= 0])
    np.testing.assert_allclose(first.column("score").to_numpy(),
                               want.scores[0][want.items[0] >= 0], rtol=1e-6)


def test_cli_recommend_k_above_the_pipeline_is_an_error(
        train: Interactions, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = train.save(tmp_path / "data")
    cfg = _write(tmp_path, GOOD.split("[ranker]")[0])  # two retrievers, 16 candidates
    assert _run(["train", cfg, "--data", data, "--out", tmp_path / "m"], capsys)[0] == 0
    out = tmp_path / "r.parquet"
    code, text = _run(["recommend", tmp_path / "m", "--all", "--k", "17", "--out", out],
                      capsys)
    assert code == 2 and "--k" in text and "at most 16" in text, text
    assert not out.exists()
    code, text = _run(["recommend", tmp_path / "m", "--all", "--k", "16", "--out", out],
                      capsys)
    assert code == 0, text


def test_cli_train_refuses_a_non_empty_out_before_fitting(
        train: Interactions, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = train.save(tmp_path / "data")
    cfg = _write(tmp_path, GOOD)
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, text = _run(["train", cfg, "--data", data, "--out", out], capsys)
    assert code == 2 and "--force" in text and str(out) in text, text
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    code, text = _run(["train", cfg, "--data", data, "--out", out, "--force"], capsys)
    assert code == 0, text
    assert (out / "notes.txt").read_text() == "mine" and (out / "train.json").exists()


PARITY = """
name = "parity"
[[retrievers]]
component = "popularity"
quota = 30
[[retrievers]]
component = "itemknn"
quota = 30
params = { neighbors = 30 }
[ranker]
component = "lambdamart"
params = { n_estimators = 15, num_threads = 1, features = ["n_retrieved",
  "user_activity_pct", "user_topic_affinity"] }
"""


def test_cli_on_a_split_folder_gives_the_python_model(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """`train --data SPLIT` and `--data SPLIT/train` train on the split's train part with
    its side tables (topics, full vocabulary): the same top-10 lists as the Python API."""
    from recscope.data import random_holdout
    from recscope.data.loaders import load
    from tests.conftest import data_path

    data = load(data_path("ml-100k"))
    split = random_holdout(data, test_fraction=0.25, seed=0)
    split.save(tmp_path / "split")
    cfg = _write(tmp_path, PARITY)
    python = Pipeline(load_config(cfg)).fit(split.train)
    users = np.arange(split.train.n_users, dtype=np.int32)
    want = python.recommend(users, 10)
    for i, source in enumerate([tmp_path / "split", tmp_path / "split" / "train"]):
        model, ranks = tmp_path / f"m{i}", tmp_path / f"r{i}.parquet"
        code, text = _run(["train", cfg, "--data", source, "--out", model], capsys)
        assert code == 0, text
        code, text = _run(["recommend", model, "--all", "--k", "10", "--out", ranks], capsys)
        assert code == 0, text
        t = pq.read_table(ranks)
        assert t.num_rows == int((want.items >= 0).sum())
        got_users = split.train.users.index(t.column("user_id"))
        got_items = split.train.items.index(t.column("item_id"))
        order = np.lexsort((t.column("rank").to_numpy(), got_users))
        np.testing.assert_array_equal(got_users[order],
                                      np.repeat(users, (want.items >= 0).sum(axis=1)))
        np.testing.assert_array_equal(got_items[order], want.items[want.items >= 0])


def test_cli_train_and_recommend_bad_inputs(train: Interactions, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """One line naming the problem, exit 2, nothing written: for train before any fit,
    for recommend before any ranking."""
    data = train.save(tmp_path / "data")
    cfg = _write(tmp_path, GOOD.split("[ranker]")[0])
    cases = [
        (["train", tmp_path / "none.toml", "--data", data], ["none.toml", "not found"]),
        (["train", tmp_path, "--data", data], ["folder"]),
        (["train", cfg, "--data", tmp_path / "nothing"], ["nothing", "not found"]),
        (["train", cfg, "--data", data, "--out", cfg], [str(cfg), "file"]),
        (["train", cfg, "--data", data, "--format", "xml"], ["format", "xml"]),
    ]
    for args, words in cases:
        code, text = _run([*args, "--out", tmp_path / "m"] if "--out" not in args else args,
                          capsys)
        assert code == 2 and all(w in text for w in words), (args, text)
        assert not (tmp_path / "m").exists()
    assert _run(["train", cfg, "--data", data, "--out", tmp_path / "m"], capsys)[0] == 0
    out = tmp_path / "r.parquet"
    users = tmp_path / "users.csv"
    users.write_text("user_id\n1\n")
    cases = [
        (["--all", "--k", "0"], ["--k", "got 0"]),
        (["--all", "--batch-size", "0"], ["--batch-size"]),
        (["--users", users, "--all"], ["--users"]),
        (["--users", tmp_path / "who.csv"], ["who.csv", "not found"]),
        (["--users", tmp_path], ["folder"]),
    ]
    for extra, words in cases:
        code, text = _run(["recommend", tmp_path / "m", "--out", out, *extra], capsys)
        assert code == 2 and all(w in text for w in words), (extra, text)
        assert not out.exists()
    code, text = _run(["recommend", data, "--all", "--out", out], capsys)
    assert code == 2 and "not a model directory" in text, text
    code, text = _run(["recommend", tmp_path / "m", "--all", "--out", tmp_path], capsys)
    assert code == 2 and str(tmp_path) in text, text


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.toml")),
                         ids=lambda p: p.name)
def test_every_train_example_parses(path: Path) -> None:
    """Every pipeline or single-model example is valid for `recscope train`."""
    from recscope.io import read_toml
    from recscope.pipeline import load_train_config

    data = read_toml(path)
    if ("retrievers" not in data and "component" not in data) or \
            path.name.startswith("tune_"):
        pytest.skip("not a training config (a simulator, tuning or world file)")
    assert load_train_config(path) is not None
