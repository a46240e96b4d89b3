"""Outputs: atomic, never replacing a file recscope did not write, refused up front when the
place cannot be written; several files all or none; TOML read errors name the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from recscope.errors import ConfigError, OutputError
from recscope.io import (
    atomic_dir,
    check_out_dir,
    check_out_file,
    did_you_mean,
    read_toml,
    write_all,
    write_text,
)


def test_write_all_is_all_or_none(tmp_path: Path) -> None:
    (tmp_path / "mine.html").write_text("the user's page")
    with pytest.raises(OutputError, match=r"mine\.html"):
        write_all({tmp_path / "r.json": "{}", tmp_path / "mine.html": "<html>"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.html"]
    with pytest.raises(OutputError, match="two outputs"):
        write_all({tmp_path / "a.json": "1", str(tmp_path / "a.json"): "2"})
    write_all({tmp_path / "r.json": "{}", tmp_path / "r.html": b"<html>"})
    assert (tmp_path / "r.json").read_text() == "{}" and (tmp_path / "r.html").exists()
    write_all({tmp_path / "r.json": "[]"})  # recscope's own file is replaced
    assert (tmp_path / "r.json").read_text() == "[]"


def test_read_only_places_are_refused_before_work(read_only_dir: Path) -> None:
    with pytest.raises(OutputError, match="cannot write"):
        check_out_file(read_only_dir / "r.json")
    with pytest.raises(OutputError, match="cannot write"):
        check_out_file(read_only_dir / "new" / "deeper" / "r.json")
    with pytest.raises(OutputError, match="cannot write"):
        check_out_dir(read_only_dir / "out", force=False)
    assert list(read_only_dir.iterdir()) == []


def test_user_files_survive_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(OutputError, match="--force"):
        check_out_dir(out, force=False)
    with atomic_dir(out, force=True) as tmp:
        (tmp / "a.parquet").write_text("x")
    with atomic_dir(out, force=True) as tmp:
        (tmp / "b.parquet").write_text("y")
    names = sorted(p.name for p in out.iterdir())
    assert names == [".recscope-manifest.json", "b.parquet", "mine.txt"]
    assert (out / "mine.txt").read_text() == "keep"


def test_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "half.parquet").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    write_text(tmp_path / "r.txt", "old")
    from recscope.io import atomic_path

    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "r.txt") as t:
        t.write_text("new, half")
        raise KeyboardInterrupt
    assert (tmp_path / "r.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".recscope-manifest.json", "r.txt"]


@pytest.mark.parametrize(("content", "words"), [
    (None, "not found"), ("dir", "is a folder"), (b"a = 'caf\xe9'", "not UTF-8"),
    (b"a = = 1", "not valid TOML")])
def test_read_toml_names_the_file(tmp_path: Path, content: bytes | str | None,
                                  words: str) -> None:
    p = tmp_path / "metrics.toml"
    if content == "dir":
        p.mkdir()
    elif isinstance(content, bytes):
        p.write_bytes(content)
    with pytest.raises(ConfigError, match=words) as info:
        read_toml(p, "metrics")
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_missing_paths_suggest_what_exists(tmp_path: Path) -> None:
    (tmp_path / "split" / "train").mkdir(parents=True)
    (tmp_path / "split" / "test").mkdir()
    (tmp_path / "rankings.parquet").write_text("x")
    assert did_you_mean(tmp_path / "split" / "train.parquet") == (
        f" (did you mean {tmp_path / 'split' / 'train'}/?)")
    assert "rankings.parquet" in did_you_mean(tmp_path / "ranking.parquet")
    assert did_you_mean(tmp_path / "zzz.csv") == ""
    assert did_you_mean(tmp_path / "nowhere" / "deep" / "x") == ""
