"""One config system: strict pydantic models whose every error is one ConfigError naming the
file and the dotted key (no coercion across types, unknown keys refused)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recscope.config import StrictModel, load, validate
from recscope.errors import ConfigError


class Metric(StrictModel):
    column: str
    alpha: float = 0.05


class Config(StrictModel):
    sequential: bool = False
    metrics: dict[str, Metric]


@pytest.mark.parametrize(("data", "key", "words"), [
    ({"metrics": {}, "sequential": "no"}, "sequential", "boolean"),
    ({"metrics": {"m": {"column": "x", "alpha": "0.01"}}}, "metrics.m.alpha", "'0.01'"),
    ({"metrics": {"m": {"column": "x", "alfa": 0.1}}}, "metrics.m.alfa", "unknown key"),
    ({}, "metrics", "required"),
])
def test_every_problem_names_the_key(data: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(Config, data, file="exp.toml")
    assert info.value.key == key and info.value.file == "exp.toml"
    assert words in str(info.value) and "\n" not in str(info.value)


def test_prefix_and_valid_values() -> None:
    with pytest.raises(ConfigError) as info:
        validate(Metric, {"column": 3}, prefix="metrics.clicks")
    assert info.value.key == "metrics.clicks.column"
    assert validate(Metric, {"column": "x"}).alpha == 0.05


def test_load_reads_toml_and_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "exp.toml"
    p.write_text('sequential = true\n[metrics.m]\ncolumn = "clicks"\n')
    assert load(Config, p).metrics["m"].column == "clicks"
    p.write_text('[metrics.m]\ncolumn = "clicks"\nalpha = "x"\n')
    with pytest.raises(ConfigError, match=r"exp\.toml") as info:
        load(Config, p)
    assert info.value.key == "metrics.m.alpha"
    with pytest.raises(ConfigError, match="not found"):
        load(Config, tmp_path / "none.toml")
