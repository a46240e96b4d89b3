"""Search spaces in the pipeline TOML: extraction, checks, bad input through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from recscope.errors import ConfigError
from recscope.orchestration.space import extract, load_space
from tests.orchestration.helpers import ALS_SPACE, cli, one_error_line, snapshot


def _write(tmp_path: Path, text: str, name: str = "space.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_extract_finds_specs_and_fills_defaults(tmp_path: Path) -> None:
    space = load_space(_write(tmp_path, ALS_SPACE))
    assert [p.name for p in space.params] == ["retrievers.0.params.factors",
                                               "retrievers.0.params.regularization"]
    default = space.default_config()
    params = default.retrievers[0].params
    assert params["factors"] == 8            # the spec's default
    assert "regularization" not in params    # no default: the component's own applies
    assert params["iterations"] == 4
    tuned = space.config({"retrievers.0.params.factors": 20,
                          "retrievers.0.params.regularization": 0.3})
    assert tuned.retrievers[0].params == {"factors": 20, "regularization": 0.3,
                                          "iterations": 4}
    assert space.fingerprint() == load_space(_write(tmp_path, ALS_SPACE, "b.toml")).fingerprint()


def test_categorical_and_suggest() -> None:
    import optuna

    data = {"name": "x", "retrievers": [{"component": "bpr", "params": {
        "backend": {"tune": "categorical", "choices": ["native", "implicit"]},
        "learning_rate": {"tune": "float", "low": 0.001, "high": 0.1, "step": 0.001}}}]}
    space = extract(data)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    values = {p.name: p.suggest(trial) for p in space.params}
    assert values["retrievers.0.params.backend"] in ("native", "implicit")
    assert 0.001 <= values["retrievers.0.params.learning_rate"] <= 0.1


@pytest.mark.parametrize(("spec", "key", "words"), [
    ('factors = {tune = "int", low = 128, high = 16}', "retrievers.0.params.factors",
     "greater than high"),
    ('factorz = {tune = "int", low = 16, high = 128}', "retrievers.0.params.factorz", ""),
    ('factors = {tune = "integer", low = 16, high = 128}', "retrievers.0.params.factors.tune",
     ""),
    ('factors = {tune = "int", low = 0, high = 8}', "retrievers.0.params.factors", ""),
    ('factors = {tune = "int", low = 4, high = 8, default = 9}',
     "retrievers.0.params.factors.default", "outside"),
    ('regularization = {tune = "float", low = 0.0, high = 1.0, log = true}',
     "retrievers.0.params.regularization", "low > 0"),
])
def test_bad_specs_name_key_and_file(tmp_path: Path, spec: str, key: str, words: str) -> None:
    text = f'name = "x"\n\n[[retrievers]]\ncomponent = "als"\n[retrievers.params]\n{spec}\n'
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_space(path)
    msg = str(exc.value)
    assert key in msg and str(path) in msg, msg
    assert words in msg


def test_spec_outside_params_refused() -> None:
    with pytest.raises(ConfigError, match="quota"):
        extract({"name": "x", "retrievers": [{"component": "als",
                                              "quota": {"tune": "int", "low": 1, "high": 9}}]})


@pytest.mark.parametrize(("args", "needle"), [
    (["--objective", "ndcg@ten"], "objective"),
    (["--objective", "precisionx@10"], "objective"),
    (["--pruner", "sometimes"], "pruner"),
])
def test_cli_bad_settings_exit_2_and_write_nothing(tmp_path: Path, args: list[str],
                                                   needle: str) -> None:
    cfg = _write(tmp_path, ALS_SPACE)
    before = snapshot(tmp_path)
    rc, _out, err = cli("tune", cfg, "--data", tmp_path / "nodata", "--trials", "2",
                        "--out", tmp_path / "out", *args)
    assert rc == 2
    assert needle in one_error_line(err)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists()


def test_cli_low_above_high_exit_2(tmp_path: Path) -> None:
    cfg = _write(tmp_path, ALS_SPACE.replace("low = 4, high = 32", "low = 40, high = 32"))
    rc, _out, err = cli("tune", cfg, "--data", tmp_path / "nodata", "--trials", "2",
                        "--out", tmp_path / "out")
    line = one_error_line(err)
    assert rc == 2 and "retrievers.0.params.factors" in line and "space.toml" in line
    assert not (tmp_path / "out").exists()
