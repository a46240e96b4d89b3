"""World configuration: TOML files, unknown keys and bad values name the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from recscope.errors import ConfigError
from recscope.sim import WorldConfig, load_world_config, parse_world_config


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "world.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_meet_the_issue() -> None:
    cfg = WorldConfig()
    assert cfg.n_users >= 20_000 and cfg.n_items >= 10_000 and cfg.n_impressions >= 1_000_000
    assert 20 <= cfg.n_topics <= 30


def test_toml_overrides_and_partial_surface(tmp_path: Path) -> None:
    path = _toml(tmp_path, "n_users = 50\nseed = 4\n[surfaces.search]\nslate_size = 5\n"
                           "[preferences]\nlatent_dim = 8\n")
    cfg = load_world_config(path, seed=9)
    assert cfg.n_users == 50 and cfg.seed == 9
    assert cfg.surfaces.search.slate_size == 5
    assert cfg.surfaces.search.position_decay == WorldConfig().surfaces.search.position_decay
    assert cfg.preferences.latent_dim == 8


@pytest.mark.parametrize(("text", "key", "words"), [
    ("n_user = 5\n", "n_user", "unknown key"),
    ("[surfaces.home_feed]\nslate_sise = 3\n", "surfaces.home_feed.slate_sise", "unknown key"),
    ("[surfaces.inbox]\nslate_size = 3\n", "surfaces.inbox", "unknown key"),
    ("n_users = 0\n", "n_users", "greater than or equal"),
    ("[logging_policy]\ntemperature = -1.0\n", "logging_policy.temperature", "greater than"),
    ("start = 2025-01-01T00:00:00\n", None, "time zone"),
    ("text_topic_share = 0.95\n", None, "text_topic_share"),
])
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, key: str | None,
                                       words: str) -> None:
    path = _toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_world_config(path)
    assert info.value.file == str(path)
    assert str(path) in str(info.value)
    if key is not None:
        assert info.value.key == key
        assert repr(key) in str(info.value)
    assert words in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_world_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_world_config(_toml(tmp_path, "n_users = = 3\n"))


def test_scaled_and_round_trip() -> None:
    cfg = WorldConfig().scaled(0.01)
    assert (cfg.n_users, cfg.n_items, cfg.n_impressions) == (200, 100, 10_000)
    assert parse_world_config(cfg.model_dump(mode="json")) == cfg
    with pytest.raises(ConfigError):
        WorldConfig().scaled(0)
