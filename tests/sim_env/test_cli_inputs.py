"""Bad inputs to ``simulate``, ``world generate`` and ``demo``: exit 2, one line naming
the problem, checked before any work, nothing written or deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from recscope.cli import run
from tests.sim_env.test_experiment import AB


def _run(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = run([str(a) for a in args])
    cap = capsys.readouterr()
    return code, " ".join((cap.out + cap.err).split())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}


@pytest.fixture
def exp(tmp_path: Path) -> Path:
    p = tmp_path / "exp.toml"
    p.write_text(AB, encoding="utf-8")
    return p


@pytest.mark.parametrize("extra,words", [
    (["--days", "0"], ["--days", "between 1 and 365", "got 0"]),
    (["--days", "-3"], ["--days", "got -3"]),
    (["--days", "400"], ["--days", "got 400"]),
    (["--seed", "-1"], ["--seed", "0 or more"]),
    (["--days", "two"], ["--days", "integer"]),
])
def test_simulate_out_of_range_options(exp: Path, tmp_path: Path, extra: list[str],
                                       words: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _run(["simulate", exp, "--out", tmp_path / "out", *extra], capsys)
    assert code == 2 and all(w in text for w in words), text
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / ".recscope").exists()  # no tracking run opened


@pytest.mark.parametrize("make,words", [
    (lambda p: None, ["exp.toml", "not found"]),
    (lambda p: p.mkdir(), ["exp.toml", "folder"]),
    (lambda p: p.write_bytes(b""), ["exp.toml", "experiment"]),
    (lambda p: p.write_bytes(b'name = "caf\\xe9"\n'), ["exp.toml"]),
    (lambda p: p.write_text("name = \n"), ["exp.toml", "TOML"]),
    (lambda p: p.write_text(AB.replace("days = 4", 'days = "4"')), ["exp.toml", "days"]),
    (lambda p: p.write_text(AB + "\nbogus = 1\n"), ["exp.toml", "bogus", "unknown key"]),
    (lambda p: p.write_text(AB.replace("traffic", "x").replace(
        "[experiment.variants.control]\n", "[experiment.variants.base]\n")),
     ["exp.toml", "control"]),
])
def test_simulate_bad_experiment_file(tmp_path: Path, make: object, words: list[str],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.toml"
    make(path)  # type: ignore[operator]
    code, text = _run(["simulate", path, "--out", tmp_path / "out"], capsys)
    assert code == 2 and all(w in text for w in words), text
    assert not (tmp_path / "out").exists()


def test_simulate_out_folder_rules(exp: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A non-empty --out needs --force; a file as --out is refused; with --force only the
    files recscope wrote are replaced and the user's own file is kept."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    before = _snapshot(out)
    code, text = _run(["simulate", exp, "--out", out, "--days", "1", "--no-truth"], capsys)
    assert code == 2 and "--force" in text and str(out) in text, text
    assert _snapshot(out) == before
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    code, text = _run(["simulate", exp, "--out", afile, "--days", "1"], capsys)
    assert code == 2 and "file.txt" in text, text
    assert afile.read_text() == "x"
    code, text = _run(["simulate", exp, "--out", afile / "sub", "--days", "1"], capsys)
    assert code == 2 and "file.txt" in text, text
    (out / "events.parquet").write_text("not mine to replace")
    code, text = _run(["simulate", exp, "--out", out, "--days", "1", "--no-truth",
                       "--force"], capsys)
    assert code == 2 and "events.parquet" in text, text  # a user's file with our name
    (out / "events.parquet").unlink()
    code, text = _run(["simulate", exp, "--out", out, "--days", "1", "--no-truth",
                       "--force"], capsys)
    assert code == 0, text
    assert (out / "mine.txt").read_text() == "keep me"
    assert (out / "events.parquet").exists() and (out / "summary.json").exists()


def test_world_generate_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w"
    code, text = _run(["world", "generate", "--seed", "-1", "--out", out], capsys)
    assert code == 2 and "--seed" in text, text
    code, text = _run(["world", "generate", "--config", tmp_path / "nope.toml", "--out", out],
                      capsys)
    assert code == 2 and "nope.toml" in text, text
    code, text = _run(["world", "generate", "--config", tmp_path, "--out", out], capsys)
    assert code == 2 and "folder" in text, text
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, text = _run(["world", "generate", "--out", out], capsys)
    assert code == 2 and "--force" in text, text
    assert _snapshot(out) == {"mine.txt": b"keep me"}


@pytest.mark.parametrize("args,words", [
    (["--scale", "huge"], ["--scale", "huge", "small"]),
    (["--seed", "-2"], ["--seed", "0 or more"]),
])
def test_demo_bad_options(tmp_path: Path, args: list[str], words: list[str],
                          capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _run(["demo", "--out", tmp_path / "d", *args], capsys)
    assert code == 2 and all(w in text for w in words), text
    assert not (tmp_path / "d").exists()


def test_demo_refuses_a_non_empty_out_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    out.mkdir()
    (out / "report.html").write_text("my own report")
    code, text = _run(["demo", "--scale", "small", "--out", out], capsys)
    assert code == 2 and "--force" in text, text
    assert _snapshot(out) == {"report.html": b"my own report"}
    afile = tmp_path / "f"
    afile.write_text("x")
    code, text = _run(["demo", "--scale", "small", "--out", afile], capsys)
    assert code == 2 and "is a file" in text, text
